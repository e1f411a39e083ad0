"""Parameter and input validation shared by every head: bad values fail loudly, naming the value and the range."""
from __future__ import annotations

import math
import numbers

import torch


def real(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """Return `value` as a float, or raise ValueError naming it and the valid interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
    bad = not math.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        raise ValueError(f"{name}={value!r} is outside the valid range {interval}")
    return value


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def choice(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name}={value!r} is not one of {sorted(options)}")
    return value


class NonFiniteInput(ValueError):
    """Embeddings holding NaN or inf: a ValueError a trainer can tell apart (it is divergence, not a wrong call)."""


def check_batch(embeddings, labels, embedding_size: int, num_classes: int) -> None:
    """Validate a (embeddings, labels) batch with a single device synchronisation on the good path."""
    if not isinstance(embeddings, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError("embeddings and labels must be torch tensors, "
                         f"got {type(embeddings).__name__} and {type(labels).__name__}")
    if embeddings.dim() != 2 or embeddings.shape[1] != embedding_size:
        raise ValueError(f"embeddings must have shape [B, {embedding_size}], got {list(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be a floating-point tensor, got dtype {embeddings.dtype}")
    if embeddings.shape[0] == 0:
        raise ValueError("the batch is empty (B=0); a head needs at least one sample")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (int64 class ids), got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels must have shape [{embeddings.shape[0]}] to match the embeddings, "
                         f"got {list(labels.shape)}")
    lo, hi, bad = torch.stack([labels.min().double(), labels.max().double(),
                               (~torch.isfinite(embeddings)).sum().double()]).tolist()
    if lo < 0 or hi >= num_classes:
        offending = int(lo if lo < 0 else hi)
        raise ValueError(f"label {offending} is outside the valid class range [0, {num_classes})")
    if bad:
        row = int(torch.nonzero(~torch.isfinite(embeddings).all(dim=1))[0, 0])
        raise NonFiniteInput(f"embeddings contain {int(bad)} non-finite value(s) (NaN or inf), first in row {row}")
