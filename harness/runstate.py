"""Run state on disk: atomic writes, checkpoints with everything needed to resume exactly, model building."""
from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
from importlib.metadata import version

import numpy as np
import torch

from .config import RunConfig, _apply, resolved_head
from .data import PREPROCESSING
from .models import build_backbone


def json_safe(obj):
    """obj with every non-finite float replaced by None: JSON has no NaN or Infinity (jq and browsers refuse
    them), and a metric that cannot be computed is stored as null."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def atomic_json(path: str, obj) -> None:
    """Write valid JSON (non-finite floats as null) to a temporary file, then rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(json_safe(obj), f, indent=1, default=str, allow_nan=False)
    os.replace(tmp, path)


def atomic_npz(path: str, **arrays) -> None:
    """np.savez to a temporary file, then rename."""
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but torch.cuda.is_available() is False")
    return torch.device(name)


def build_model(cfg: RunConfig, num_classes: int, image_size: int):
    backbone = build_backbone(cfg.model.backbone, cfg.model.embedding_size, image_size, cfg.model.dropout,
                              cfg.model.width)
    head = resolved_head(cfg, num_classes)   # quietly: the feasibility check is printed by the trainer instead
    return backbone, head


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, **state) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt["config_obj"] = _apply(RunConfig(), ckpt["config"])
    return ckpt


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


def environment() -> dict:
    """Package versions, git commit and machine: written next to every run's resolved config."""
    commit, changed = git_state()
    dirty = bool(changed) if commit else None
    commit = commit or "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": version("scipy"), "sklearn": version("scikit-learn"), "git_commit": commit, "git_dirty": dirty,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "preprocessing": PREPROCESSING}
