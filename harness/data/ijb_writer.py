"""An IJB-format folder written from the built-in data, so alignment and the whole IJB protocol run without the
real release (which cannot be downloaded here): each evaluation image of the synthetic faces, an aligned crop, is
pasted into a larger loose crop of its own size under a random similarity transform (rotation, scale, shift) over a
noisy background, and the five template points, carried through that transform, are its landmarks. Aligning a
loose crop with them gives the original image back up to interpolation (a test checks it).

Each identity (a subject) has two templates of its images (mixed quality, as the data's degradations fall), each
of media of one to three images; 1:1 pairs are every pair of templates; 1:N: gallery G1 holds the first template
of the first half of the subjects, G2 the first template of the other half, the probes are every second template
(so a probe is mated in one gallery and non-mated in the other). The detector score is 0.5 + 0.5 x the image's
ground-truth quality.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from skimage.transform import SimilarityTransform, warp

from .align import template


def write_ijb(folder: str, images: np.ndarray, identity: np.ndarray, quality: np.ndarray, name: str = "IJBC",
              seed: int = 0) -> dict:
    """Write ROOT/<name>/{loose_crop,meta}; returns {"root", "landmarks", "templates", "medias"}."""
    prefix = name.lower()
    root = os.path.join(folder, name)
    os.makedirs(os.path.join(root, "loose_crop"), exist_ok=True)
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    rng = np.random.default_rng(seed)
    templates, medias, subjects = _templates(identity, rng)
    size = images.shape[1]
    lines, points = [], []
    for i, image in enumerate(images):
        loose, lmk = _loose_crop(image, size, rng)
        file = f"{i + 1}.png"
        Image.fromarray(loose).save(os.path.join(root, "loose_crop", file))
        score = 0.5 + 0.5 * float(np.clip(quality[i], 0, 1))
        lines.append(f"{file} " + " ".join(f"{v:.4f}" for v in lmk.reshape(-1)) + f" {score:.4f}\n")
        points.append(lmk)
    meta = os.path.join(root, "meta")
    _write(os.path.join(meta, f"{prefix}_name_5pts_score.txt"), lines)
    _write(os.path.join(meta, f"{prefix}_face_tid_mid.txt"),
           [f"{i + 1}.png {t} {m}\n" for i, (t, m) in enumerate(zip(templates, medias, strict=True))])
    _write_pairs(os.path.join(meta, f"{prefix}_template_pair_label.txt"), subjects)
    _write_one_to_n(meta, prefix, name, subjects, templates)
    return {"root": folder, "landmarks": np.stack(points), "templates": templates, "medias": medias}


def _templates(identity: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, dict]:
    """Template and media ids per image (two templates per identity, media of 1-3 images); {template: subject}."""
    templates = np.zeros(len(identity), np.int64)
    medias = np.zeros(len(identity), np.int64)
    subjects, media = {}, 0
    for k, subject in enumerate(np.unique(identity)):
        members = rng.permutation(np.flatnonzero(identity == subject))
        if len(members) < 2:
            raise ValueError(f"identity {subject} has {len(members)} image(s); two templates need at least 2")
        for half, part in enumerate(np.array_split(members, 2)):
            tid = 2 * k + half + 1
            subjects[tid] = int(subject)
            start = 0
            while start < len(part):
                step = int(rng.integers(1, 4))
                media += 1
                templates[part[start:start + step]], medias[part[start:start + step]] = tid, media
                start += step
    return templates, medias, subjects


def _loose_crop(image: np.ndarray, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """The aligned image pasted into a larger canvas under a random similarity; returns (canvas, landmarks)."""
    scale = rng.uniform(1.5, 2.5)
    angle = rng.uniform(-0.4, 0.4)
    canvas = int(np.ceil(size * scale * 1.6)) + int(rng.integers(0, size))
    centre = np.array([canvas / 2, canvas / 2]) + rng.uniform(-0.1, 0.1, 2) * canvas
    to_canvas = SimilarityTransform(scale=scale, rotation=angle)
    offset = centre - to_canvas(np.array([[size / 2, size / 2]]))[0]
    to_canvas = SimilarityTransform(scale=scale, rotation=angle, translation=offset)
    background = rng.integers(60, 200, (canvas, canvas, 3)).astype(np.float64)
    pasted = warp(image.astype(np.float64), to_canvas.inverse, output_shape=(canvas, canvas), order=3,
                  mode="edge", preserve_range=True)
    rows, cols = np.mgrid[:canvas, :canvas]
    source = to_canvas.inverse(np.stack([cols.ravel(), rows.ravel()], 1)).reshape(canvas, canvas, 2)
    inside = ((source > -2) & (source < size + 1)).all(axis=2)   # the face and a 2-px rim of its edge pixels
    out = np.where(inside[..., None], pasted, background)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), to_canvas(template(size))


def _write(path: str, lines: list) -> None:
    with open(path, "w") as f:
        f.writelines(lines)


def _write_pairs(path: str, subjects: dict) -> None:
    ids = sorted(subjects)
    _write(path, [f"{a} {b} {int(subjects[a] == subjects[b])}\n" for i, a in enumerate(ids) for b in ids[i + 1:]])


def _write_one_to_n(meta: str, prefix: str, name: str, subjects: dict, templates: np.ndarray) -> None:
    ids = sorted(subjects)
    people = sorted(set(subjects.values()))
    first_half = set(people[:len(people) // 2])
    galleries = ("S1", "S2") if name == "IJBB" else ("G1", "G2")
    lists = {galleries[0]: [t for t in ids if t % 2 == 1 and subjects[t] in first_half],
             galleries[1]: [t for t in ids if t % 2 == 1 and subjects[t] not in first_half],
             "probe_mixed": [t for t in ids if t % 2 == 0]}
    for part, tids in lists.items():
        file = f"{prefix}_1N_{'gallery_' + part if part != 'probe_mixed' else part}.csv"
        rows = [f"{t},{subjects[t]},{i + 1}.png\n" for t in tids for i in np.flatnonzero(templates == t)]
        _write(os.path.join(meta, file), ["TEMPLATE_ID,SUBJECT_ID,FILENAME\n", *rows])
