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


def ablation_heatmaps(rows, metrics, marks=None, title=""):
    """One seaborn heatmap per metric over the (l_m, u_m) grid; `marks` outlines named cells (e.g. the paper's)."""
    import seaborn as sns
    l_ms = sorted({r["l_m"] for r in rows})
    u_ms = sorted({r["u_m"] for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics), 3.9), constrained_layout=True)
    for ax, (key, label) in zip(np.atleast_1d(axes), metrics):
        grid = np.full((len(l_ms), len(u_ms)), np.nan)
        for r in rows:
            grid[l_ms.index(r["l_m"]), u_ms.index(r["u_m"])] = r.get(key, np.nan)
        sns.heatmap(grid, ax=ax, annot=True, fmt=".3f", cmap="cividis", cbar=True, square=True,
                    xticklabels=[f"{u:g}" for u in u_ms], yticklabels=[f"{m:g}" for m in l_ms],
                    annot_kws={"fontsize": 9})
        ax.set_xlabel("u_m (margin at u_a, rad)")
        ax.set_ylabel("l_m (margin at l_a, rad)")
        ax.set_title(label, fontsize=10)
        for (name, (lm, um)), style in zip((marks or {}).items(), ("-", "--")):
            if lm in l_ms and um in u_ms:
                ax.add_patch(plt.Rectangle((u_ms.index(um), l_ms.index(lm)), 1, 1, fill=False, lw=2.5,
                                           ls=style, edgecolor="#D55E00", label=name))
        handles = [h for h in ax.patches if h.get_label() and not h.get_label().startswith("_")]
        if handles:
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, ncol=2,
                      frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig
