"""The torch device a run asks for ("auto", "cpu", "cuda"), refused with a clear error when it is not there."""
from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but torch.cuda.is_available() is False")
    return torch.device(name)
