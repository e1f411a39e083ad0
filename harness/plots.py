"""Plot functions shared by benchmarks/ and the notebooks in figures/."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np


def sorted_image_grid(images: np.ndarray, scores: np.ndarray, *, rows: int = 4, cols: int = 10,
                      score_name: str = "quality", title: str | None = None, seed: int = 0):
    """A grid of images sampled evenly across the score range, ordered low (top left) to high (bottom right),
    each labelled with its score: for ground-truth quality, or (later) the feature magnitude."""
    n = rows * cols
    if len(images) < n:
        raise ValueError(f"need at least {n} images for a {rows}x{cols} grid, got {len(images)}")
    order = np.argsort(scores, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, n).round().astype(int)]
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.6), constrained_layout=True)
    for ax, i in zip(axes.ravel(), pick):
        ax.imshow(images[i])
        ax.set_title(f"{scores[i]:.2f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title or f"Samples ordered by {score_name}, low (top left) to high (bottom right)", fontsize=11)
    return fig


def save_figure(fig, path: str, dpi: int = 130) -> str:
    """Write atomically (temp file + rename) and close the figure."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    plt.close(fig)
    return path
