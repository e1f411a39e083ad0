"""What made a result: the git state of the code and the machine's package versions, written beside every run."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version

import numpy as np
import torch

from harness.data import PREPROCESSING


def git_state(cwd: str | None = None) -> tuple[str | None, list]:
    """(commit, changed files) of the working tree of this repository (or cwd); (None, []) outside git."""
    cwd = cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd,
                                check=True, timeout=5).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True,
                                text=True, cwd=cwd, check=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None, []
    return commit, [line[3:] for line in status.splitlines() if line.strip()]


def environment(device: torch.device | None = None) -> dict:
    """Package versions, git commit and machine: written next to every run's resolved config. The GPU's name only
    for a run on one (reading it would start CUDA in a CPU run on a GPU machine)."""
    commit, changed = git_state()
    dirty = bool(changed) if commit else None
    commit = commit or "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": version("scipy"), "sklearn": version("scikit-learn"), "git_commit": commit, "git_dirty": dirty,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None,
            "preprocessing": PREPROCESSING}
