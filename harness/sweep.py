"""Reusing runs across benchmark invocations: a run folder is reused only when it was made by the same config."""
from __future__ import annotations

import hashlib
import json
import os
import shutil


def config_hash(cfg) -> str:
    """Hash of everything that changes results (not the output folder or the data cache location)."""
    d = cfg.to_dict()
    d.pop("out")
    d["data"].pop("cache_dir")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prepare_run(cfg, done_file: str) -> str:
    """'done' when cfg.out holds a finished run (done_file present) of this config; 'resume' for an unfinished
    one; 'fresh' otherwise. A folder left by another config is removed, with a message."""
    name = os.path.basename(cfg.out.rstrip("/"))
    config_path = os.path.join(cfg.out, "config.json")
    if not os.path.isfile(config_path):
        return "fresh"
    with open(config_path) as f:
        old = json.load(f)
    if old != cfg.to_dict():
        print(f"{name}: results are from a different configuration; recomputing", flush=True)
        shutil.rmtree(cfg.out)
        return "fresh"
    if os.path.isfile(os.path.join(cfg.out, done_file)):
        return "done"
    print(f"{name}: resuming an unfinished run", flush=True)
    return "resume"
