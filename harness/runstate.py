"""Run state on disk: atomic writes, checkpoints with everything needed to resume exactly, model building."""
from __future__ import annotations

import json
import math
import os
import pickle
import platform
import random
import subprocess
import sys
import zipfile
from importlib.metadata import version

import numpy as np
import torch

from .config import RunConfig, _apply, resolved_head
from .data import PREPROCESSING
from .locks import temporary_name
from .models import build_backbone


class DamagedFile(ValueError):
    """A run file that exists but cannot be read (empty, truncated, not JSON): the message names it and what to do."""


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
    tmp = temporary_name(path)
    with open(tmp, "w") as f:
        json.dump(json_safe(obj), f, indent=1, default=str, allow_nan=False)
    os.replace(tmp, path)


def atomic_npz(path: str, **arrays) -> None:
    """np.savez to a temporary file, then rename."""
    tmp = temporary_name(path, ".npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_json(path: str, what: str = "run file", fix: str = "") -> dict:
    """A JSON file of a run, checked: missing is a ValueError, unreadable (empty, torn by a crash or a full disk)
    a DamagedFile, both naming the file and (`fix`) what to do about it."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{what} {path} is damaged (not valid JSON: {exc}){'; ' + fix if fix else ''}") from None


def read_jsonl(path: str) -> list:
    """The rows of a training log. A torn last line (no newline, not JSON) is dropped with a note on stderr; a
    damaged line before it is a DamagedFile naming the file and line, since rows a checkpoint covers would be lost."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if number == len(lines):   # the last line, without its newline: written when the process died
                print(f"note: {path}: dropped a torn last line ({len(line)} bytes, {exc}); the run resumes from its "
                      "last checkpoint, before that row", file=sys.stderr)
                continue
            raise DamagedFile(f"{path}:{number}: damaged training log line ({exc}); remove that line and resume, "
                              "or start the run over (python -m harness train ... --no-resume)") from None
    return rows


def read_npz(path: str, what: str = "evaluation arrays") -> dict:
    """Every array of an .npz file of a run, as a dict; a damaged file is a DamagedFile naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} not found")
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedFile(f"{what} {path} is damaged ({type(exc).__name__}: {exc}); evaluate the run again "
                          "(python -m harness evaluate --run RUN)") from None


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


def run_backbone(run_dir: str, checkpoint: str = "final.pt"):
    """(backbone with its trained weights, the checkpoint) of a run folder of this suite."""
    ckpt = load_checkpoint(os.path.join(run_dir, "checkpoints", checkpoint))
    backbone, _ = build_model(ckpt["config_obj"], ckpt["num_classes"], ckpt["image_size"])
    backbone.load_state_dict(ckpt["backbone"])
    return backbone, ckpt


def rng_state(device: torch.device) -> dict:
    """Every generator the run draws from, as plain data (numpy's as a tensor), so checkpoints load with
    weights_only=True. On a GPU only the run's own device's generator: a rank saves its GPU, and a resume may see
    fewer GPUs than the run that wrote the checkpoint. A CPU run never touches CUDA (no context initialised)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    else:                           # checkpoints written before: numpy's own tuple (loaded through NUMPY_RNG_GLOBALS)
        np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state:           # written by an earlier suite version: one state per GPU visible then
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(state["cuda"]):
            raise ValueError(f"the checkpoint holds CUDA RNG states for {len(state['cuda'])} GPU(s), none for "
                             f"{device}; resume with the same visible GPUs (CUDA_VISIBLE_DEVICES)")
        torch.cuda.set_rng_state(state["cuda"][index], device)


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
