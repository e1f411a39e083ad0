"""Evaluate a run: embed the evaluation images, store per-image norms and per-pair scores, compute metrics.

Everything a figure needs is written under RUN/eval/ as arrays (norms, quality, scores, issame, fold, pair
quality), so plots re-draw in seconds without a model.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from . import metrics
from .data import batch_to_tensor, file_sha256, read_verification_bin
from .data_source import synthetic_faces
from .runstate import atomic_json, build_model, load_checkpoint, pick_device


@torch.no_grad()
def embed(backbone, images_uint8: np.ndarray, batch_size: int, device, flip: bool, channels_last=False):
    """-> (plain embeddings [N, d], fused embeddings [N, d]) in float32 on the CPU. The fused one adds the
    embedding of the horizontally flipped image (used for cosine scores); the plain one gives the magnitude."""
    backbone.eval()
    plain, fused = [], []
    for start in range(0, len(images_uint8), batch_size):
        x = batch_to_tensor(images_uint8[start:start + batch_size]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        e = backbone(x).float()
        plain.append(e.cpu())
        fused.append((e + backbone(x.flip(-1)).float()).cpu() if flip else e.cpu())
    return torch.cat(plain).numpy(), torch.cat(fused).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def pair_metrics(scores, issame, folds, pair_quality, fmr) -> dict:
    out = metrics.verification_accuracy(scores, issame, folds)
    out["tar_at_far"] = {f"{k:g}": v for k, v in metrics.tar_at_far(scores, issame).items()}
    if pair_quality is not None:
        erc = metrics.error_versus_reject(scores, issame, pair_quality, fmr)
        out["erc"] = {"fmr": fmr, "threshold": erc["threshold"], "area": erc["area"],
                      "fractions": erc["fractions"].tolist(), "fnmr": erc["fnmr"].tolist()}
    return out


def evaluate_run(run_dir: str, checkpoint: str = "final.pt", faces=None, device: str = "auto") -> dict:
    """Evaluate the checkpoint of a run on its evaluation data; writes RUN/eval/ and returns the metrics."""
    ckpt = load_checkpoint(os.path.join(run_dir, "checkpoints", checkpoint))
    cfg = ckpt["config_obj"]
    dev = pick_device(device if device != "auto" else cfg.train.device)
    backbone, _ = build_model(cfg, ckpt["num_classes"], ckpt["image_size"])
    backbone.load_state_dict(ckpt["backbone"])
    backbone.to(dev)
    out_dir = os.path.join(run_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    result = {"checkpoint": checkpoint, "step": ckpt["global_step"], "sets": {}}
    if cfg.data.source == "synthetic":
        faces = faces or synthetic_faces(cfg)
        plain, fused = embed(backbone, faces.eval.images, cfg.eval.batch_size, dev, cfg.eval.flip)
        norms = np.linalg.norm(plain, axis=1)
        p = faces.pairs
        scores = cosine(fused[p.left], fused[p.right])
        quality = faces.eval.quality
        pair_gt = np.minimum(quality[p.left], quality[p.right])
        pair_mag = np.minimum(norms[p.left], norms[p.right])
        arrays = {"norms": norms, "quality": quality, "identity": faces.eval.identity, "scores": scores,
                  "issame": p.issame, "fold": p.fold, "left": p.left, "right": p.right,
                  "pair_quality_gt": pair_gt, "pair_quality_norm": pair_mag}
        _save_arrays(out_dir, "synthetic", arrays)
        m = pair_metrics(scores, p.issame, p.fold, pair_mag, cfg.eval.fmr)
        m["erc_ground_truth"] = pair_metrics(scores, p.issame, p.fold, pair_gt, cfg.eval.fmr)["erc"]
        m["magnitude_vs_quality"] = metrics.quality_agreement(norms, quality)
        m["mean_norm"] = float(norms.mean())
        result["sets"]["synthetic"] = m
    for path in cfg.data.eval_bins:
        name = os.path.splitext(os.path.basename(path))[0]
        images, issame = read_verification_bin(path)
        plain, fused = embed(backbone, images, cfg.eval.batch_size, dev, cfg.eval.flip)
        norms = np.linalg.norm(plain, axis=1)
        scores = cosine(fused[0::2], fused[1::2])
        pair_mag = np.minimum(norms[0::2], norms[1::2])
        _save_arrays(out_dir, name, {"norms": norms, "scores": scores, "issame": issame, "pair_quality_norm": pair_mag})
        m = pair_metrics(scores, issame, None, pair_mag, cfg.eval.fmr)
        m["sha256"] = file_sha256(path)
        result["sets"][name] = m
    atomic_json(os.path.join(out_dir, "metrics.json"), result)
    return result


def _save_arrays(out_dir, name, arrays):
    path = os.path.join(out_dir, f"{name}.npz")
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def summary_line(result: dict) -> str:
    parts = []
    for name, m in result["sets"].items():
        text = f"{name}: accuracy {100 * m['accuracy']:.2f}% ± {100 * m['accuracy_std']:.2f}"
        tar = {k: v for k, v in m["tar_at_far"].items() if v is not None and v == v}   # NaN live, None stored
        if tar:
            far = min(tar, key=float)
            text += f", TAR@FAR={far} {100 * tar[far]:.2f}%"
        if "magnitude_vs_quality" in m:
            text += f", magnitude-quality Spearman {m['magnitude_vs_quality']['spearman_rho']:+.3f}"
        if "erc" in m:
            text += f", ERC area {m['erc']['area']:.4f}"
        parts.append(text)
    return "; ".join(parts)


def load_eval(run_dir: str, name: str = "synthetic") -> dict:
    with np.load(os.path.join(run_dir, "eval", f"{name}.npz")) as z:
        return {k: z[k] for k in z.files}


def load_metrics(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "eval", "metrics.json")) as f:
        return json.load(f)
