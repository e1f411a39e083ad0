"""train.deterministic: the switches that make a GPU run repeat bitwise, set for one training session and restored.

Why a switch and not always on: deterministic algorithms cost speed on a GPU (cuDNN's autotuner is off, some
kernels run slower), and the CPU is deterministic without them. With it, a killed and resumed run on one GPU ends
bitwise where an uninterrupted one does (as on the CPU); without it, cuDNN autotunes (`cudnn.benchmark`) and a
resumed GPU run agrees with the uninterrupted one only to rounding. cuBLAS reads its workspace setting when it
starts (the process's first CUDA matrix product), so the trainer does not set it behind the user's back: a missing
setting is an error naming the fix.
"""
from __future__ import annotations

import contextlib
import os

import torch

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_VALUES = (":4096:8", ":16:8")   # the values under which cuBLAS is deterministic (CUDA >= 10.2)


def check_cublas(deterministic: bool, device: torch.device) -> None:
    if deterministic and device.type == "cuda" and os.environ.get(CUBLAS_ENV) not in CUBLAS_VALUES:
        raise ValueError(f"train.deterministic = true on {device} needs {CUBLAS_ENV}=:4096:8 (or :16:8) in the "
                         f"environment before the first CUDA call (now {os.environ.get(CUBLAS_ENV)!r}); run "
                         f"`{CUBLAS_ENV}=:4096:8 python -m harness train ...`")


@contextlib.contextmanager
def determinism(deterministic: bool, device: torch.device):
    """Deterministic algorithms and cuDNN settings for the block; cuDNN autotuning on a GPU otherwise."""
    check_cublas(deterministic, device)
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)
    torch.use_deterministic_algorithms(deterministic)
    cudnn.deterministic = deterministic
    cudnn.benchmark = device.type == "cuda" and not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]
