"""Run files on disk: JSON and arrays written atomically (temporary file, then rename), read back with a clear
error for a file that is missing or damaged (empty, torn by a crash or a full disk)."""
from __future__ import annotations

import json
import math
import os
import sys
import zipfile

import numpy as np

from harness.locks import temporary_name


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
