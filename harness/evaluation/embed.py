"""Embed a folder of aligned face images with a released checkpoint or a run of this suite: the embeddings and their
magnitudes (MagFace's quality score), in sorted path order; and evaluate a release on verification packs.

    python -m harness embed --checkpoint model.pth --format magface --backbone iresnet100 --images DIR --out OUT
    python -m harness embed --checkpoint results/run --format run --images DIR --out OUT

Every file under DIR (recursively) must be an image of the network's input size (112 px for a release, the run's
size for a run): other files or sizes are errors naming them, never a silent skip or resize. Each image is
preprocessed with the checkpoint's own convention (channel order, scale, mean, std).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from harness.data import file_sha256, read_verification_bin
from harness.data.folders import IMAGE_EXTENSIONS, scan_images
from harness.data.preprocess import image_to_rgb
from harness.evaluation.evaluate import set_metrics
from harness.evaluation.networks import load_network, network_input
from harness.evaluation.sets import Protocol, evaluation_set, stored_arrays
from harness.files import atomic_json, atomic_npz


def image_paths(root: str) -> list:
    """Every file under root, sorted; a file that is not an image by its extension is an error naming it."""
    if not os.path.isdir(root):
        raise ValueError(f"--images {root}: no such folder")
    paths = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)
    other = [p for p in paths if not p.lower().endswith(IMAGE_EXTENSIONS)]
    if other:
        raise ValueError(f"{root}: files that are not images ({', '.join(IMAGE_EXTENSIONS)}): {other[:5]}")
    if not paths:
        raise ValueError(f"{root}: no images")
    scan_images(paths, root)   # regular files of one size and a known pixel mode, before the network is loaded
    return paths


def to_input(path: str, prep: dict) -> np.ndarray:
    """One image as the network's input [3, H, W] float32; another size is an error naming the file."""
    with Image.open(path) as img:
        rgb = image_to_rgb(img, path)
    if rgb.shape[:2] != (prep["size"], prep["size"]):
        raise ValueError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px; this network takes aligned "
                         f"{prep['size']}x{prep['size']} faces (no resize is done here)")
    return network_input(rgb[None], prep)[0]


def embed_folder(checkpoint: str, format: str, images: str, out: str, backbone: str | None = None,
                 batch_size: int = 64, device: str = "cpu") -> dict:
    """Write OUT/embeddings.npy (one row per image) and OUT/magnitudes.csv (path relative to IMAGES, magnitude), both
    in sorted path order; returns the counts."""
    paths = image_paths(images)
    model, prep = load_network(checkpoint, format, backbone)
    model.to(device)
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(paths), batch_size), desc="embedding", unit="batch"):
            batch = np.stack([to_input(p, prep) for p in paths[start:start + batch_size]])
            chunks.append(model(torch.from_numpy(batch).to(device)).float().cpu().numpy())
    embeddings = np.concatenate(chunks)
    magnitudes = np.linalg.norm(embeddings, axis=1)
    os.makedirs(out, exist_ok=True)
    rel = [os.path.relpath(p, images) for p in paths]
    tmp = os.path.join(out, f"embeddings.tmp-{os.getpid()}.npy")
    np.save(tmp, embeddings)
    os.replace(tmp, os.path.join(out, "embeddings.npy"))
    tmp = os.path.join(out, f"magnitudes.csv.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "magnitude"])
        w.writerows((p, f"{m:.6f}") for p, m in zip(rel, magnitudes, strict=True))
    os.replace(tmp, os.path.join(out, "magnitudes.csv"))
    return {"images": len(paths), "dimension": embeddings.shape[1], "preprocessing": prep}


@dataclass(frozen=True)
class Release:
    """A released network: its checkpoint file, its layout ("magface", "insightface"; "run": a run folder of this
    suite) and, for a release, its iResNet depth."""
    checkpoint: str
    format: str
    backbone: str | None = None


@torch.no_grad()
def _embed_pack(model, prep: dict, images, batch_size: int, device, flip: bool):
    """(plain, flip-fused) float32 embeddings of a pack's images under the network's own preprocessing."""
    plain, fused = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(network_input(images[start:start + batch_size], prep)).to(device)
        e = model(x).float()
        plain.append(e.cpu().numpy())
        fused.append((e + model(x.flip(-1)).float()).cpu().numpy() if flip else e.cpu().numpy())
    return np.concatenate(plain), np.concatenate(fused)


def evaluate_release(release: Release, bins, out: str, fmr: float = 1e-2, flip: bool = True, batch_size: int = 64,
                     device: str = "cpu") -> dict:
    """A released network on verification packs (.bin): the suite's metrics (accuracy, TAR@FAR, ERC/EDC with its
    magnitude as the quality score, identity-free CIs over pairs) in OUT/metrics.json and per-pack arrays."""
    if not bins:
        raise ValueError("--eval-bins: at least one verification pack (.bin) is needed to evaluate a release")
    model, prep = load_network(release.checkpoint, release.format, release.backbone)
    model.to(device)
    result = {"checkpoint": release.checkpoint, "format": release.format, "backbone": release.backbone,
              "preprocessing": prep, "flip": flip, "sets": {}}
    os.makedirs(out, exist_ok=True)
    for path in bins:
        images, issame = read_verification_bin(path)
        if images.shape[1:3] != (prep["size"], prep["size"]):
            raise ValueError(f"{path}: {images.shape[2]}x{images.shape[1]} px images; this network takes "
                             f"{prep['size']}x{prep['size']}")
        plain, fused = _embed_pack(model, prep, images, batch_size, device, flip)
        pairs, norms = evaluation_set(plain, fused, np.arange(0, len(images), 2), np.arange(1, len(images), 2),
                                      issame, flip_for_quality=False)
        name = os.path.splitext(os.path.basename(path))[0]
        atomic_npz(os.path.join(out, f"{name}.npz"), **stored_arrays(pairs, norms))
        result["sets"][name] = set_metrics(pairs, Protocol(fmr))
        result["sets"][name]["sha256"] = file_sha256(path)
    atomic_json(os.path.join(out, "metrics.json"), result)
    return result
