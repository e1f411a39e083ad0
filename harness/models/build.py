"""The networks a run config names (backbone and head), and a finished run's trained backbone."""
from __future__ import annotations

import os

from harness.checkpoint_io import load_checkpoint
from harness.config import RunConfig, resolved_head
from harness.models import build_backbone


def build_model(cfg: RunConfig, num_classes: int, image_size: int):
    backbone = build_backbone(cfg.model.backbone, cfg.model.embedding_size, image_size, cfg.model.dropout,
                              cfg.model.width)
    head = resolved_head(cfg, num_classes)   # quietly: the feasibility check is printed by the trainer instead
    return backbone, head


def run_backbone(run_dir: str, checkpoint: str = "final.pt"):
    """(backbone with its trained weights, the checkpoint) of a run folder of this suite; a missing run or checkpoint
    is an error naming the command that makes it."""
    path = os.path.join(run_dir, "checkpoints", checkpoint)
    if not os.path.isdir(run_dir):
        raise ValueError(f"run folder {run_dir} not found: train it first (python -m harness train --config "
                         f"configs/cpu_synthetic_magface.toml --out {run_dir})")
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found: the run in {run_dir} has not finished; rerun its training command "
                         f"(python -m harness train ... --out {run_dir}: it resumes)")
    ckpt = load_checkpoint(path)
    backbone, _ = build_model(ckpt["config_obj"], ckpt["num_classes"], ckpt["image_size"])
    backbone.load_state_dict(ckpt["backbone"])
    return backbone, ckpt
