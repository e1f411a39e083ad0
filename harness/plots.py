"""What every figure shares: saving (atomically, at one resolution), the palette, the image grid. A benchmark's own
figures live in its script (benchmarks/<name>.py), beside its tables."""
from __future__ import annotations

import os
import shutil

import matplotlib.pyplot as plt
import numpy as np

GRID_SHAPE = (4, 10)


def grid_pick(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of n samples evenly across the score range, ordered low to high."""
    if len(scores) < n:
        raise ValueError(f"need at least {n} images for the grid, got {len(scores)}")
    order = np.argsort(scores, kind="stable")
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]


def sorted_image_grid(images: np.ndarray, scores: np.ndarray, *, rows: int = GRID_SHAPE[0], cols: int = GRID_SHAPE[1],
                      score_name: str = "quality", title: str | None = None):
    """A grid of images sampled evenly across the score range, ordered low (top left) to high (bottom right),
    each labelled with its score: for ground-truth quality, or the feature magnitude. Given exactly rows x cols
    images (a stored pick), it shows them all."""
    pick = grid_pick(scores, rows * cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.6), constrained_layout=True)
    for ax, i in zip(axes.ravel(), pick, strict=False):   # fewer images than cells: the rest stay empty
        ax.imshow(images[i])
        ax.set_title(f"{scores[i]:.2f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title or f"Samples ordered by {score_name}, low (top left) to high (bottom right)", fontsize=11)
    return fig


FIGURE_DPI = 130   # every published PNG (and the notebooks' copies of them)


def save_figure(fig, path: str, dpi: int = FIGURE_DPI) -> str:
    """Write atomically (temp file + rename) and close the figure."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    plt.close(fig)
    return path


def publish_figure(fig, out_dir: str, name: str, figures_dir: str = "", quick: bool = False) -> str:
    """Save to out_dir/name and, unless figures_dir is empty, copy to figures_dir (as *_quick.png for --quick
    runs, so a quick run never replaces the committed full-size figure)."""
    path = save_figure(fig, os.path.join(out_dir, name))
    if figures_dir:
        os.makedirs(figures_dir, exist_ok=True)
        shutil.copyfile(path, os.path.join(figures_dir, name.replace(".png", "_quick.png") if quick else name))
    return path


PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000"]  # Okabe-Ito


