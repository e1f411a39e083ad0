"""The paper's Softmax baseline (plain linear classifier) and NormFace (scaled cosine, no margin)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import NORM_EPS, MarginHead


class SoftmaxHead(MarginHead):
    """logits = x W^T (+ b) on the raw, unnormalised embedding; no scale (s is fixed at 1) and no margin.

    bias=False by default so that W_j stays a class centre comparable with the cosine heads; bias=True gives
    the textbook linear layer. Logits are not cosines here, so the feature magnitude is unconstrained.
    """

    name = "softmax"
    normalised = False

    def __init__(self, num_classes: int, embedding_size: int, *, bias: bool = False, sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=1.0, sample_rate=sample_rate, centre_init=centre_init)
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        self.bias = nn.Parameter(torch.zeros(self.num_classes)) if bias else None

    @property
    def hparams(self) -> dict:
        return {**super().hparams, "bias": self.bias is not None}

    def classify(self, x, norms, weight, labels, classes):
        bias = None if self.bias is None else (self.bias if classes is None else self.bias[classes])
        logits = F.linear(x, weight, bias)
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        with torch.no_grad():
            centre = weight.index_select(0, labels)
            cos_y = (x * centre).sum(1) / (norms * centre.norm(dim=1)).clamp_min(NORM_EPS)
            plain = logits.gather(1, labels[:, None]).squeeze(1)
        return per_sample, logits.detach(), cos_y, plain, None, 1.0


class NormFaceHead(MarginHead):
    """s * cos(theta_j) for every class, no margin (NormFace; equals ArcFace and CosFace with m = 0)."""

    name = "normface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)

    def target_logit(self, cos_y, norms):
        return self.s * cos_y

