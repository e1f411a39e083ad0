"""Checkpoint files: written atomically, read as data only (a checkpoint is a file someone sent, and a pickle can run
code), with the run's config rebuilt from the stored values."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import torch

from harness.config import RunConfig, apply_values
from harness.files import DamagedFile
from harness.locks import temporary_name


def save_checkpoint(path: str, **state) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = temporary_name(path)
    torch.save(state, tmp)
    os.replace(tmp, path)


# The only non-tensor types a checkpoint of an earlier suite version holds (numpy's RNG state): allowed by name.
_RECONSTRUCT = (getattr(np, "_core", None) or np.core).multiarray._reconstruct


NUMPY_RNG_GLOBALS = [np.dtype, np.ndarray, type(np.dtype(np.uint32)), _RECONSTRUCT,   # numpy 2's module path, and
                     (_RECONSTRUCT, "numpy.core.multiarray._reconstruct")]           # numpy 1's in older files


def load_data(path: str, what: str = "checkpoint") -> dict:
    """torch.load as data only (weights_only=True): a checkpoint is a file someone sent, and a pickle can run code.
    Anything beyond tensors, numbers, strings and containers (and numpy's RNG state of older suite checkpoints) is
    refused with a ValueError naming the file, and nothing in it runs."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} not found")
    try:
        with torch.serialization.safe_globals(NUMPY_RNG_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" not in str(exc) and "global" not in str(exc).lower():
            raise _damaged(path, what, exc) from None
        raise ValueError(f"{what} {path} holds more than plain data (tensors, numbers, strings, lists, dicts), so it "
                         f"is not loaded: unpickling it could run code ({reason})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, KeyError, IndexError, ValueError) as exc:
        # empty, truncated, or not a torch file at all (a text file, a cut legacy pickle)
        raise _damaged(path, what, exc) from None


def _damaged(path: str, what: str, exc: Exception) -> DamagedFile:
    reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:120] or "no data"
    return DamagedFile(f"{what} {path} is damaged ({os.path.getsize(path)} bytes; {type(exc).__name__}: {reason}): "
                       "cut short (a crash or a full disk while it was written or copied) or not a torch checkpoint. "
                       "Delete it, then resume (the run continues from its other checkpoint or starts over), or "
                       "start over with --no-resume (in a sweep: --retry-failed)")


def load_checkpoint(path: str) -> dict:
    ckpt = load_data(path)
    ckpt["config_obj"] = apply_values(RunConfig(), ckpt["config"])
    return ckpt
