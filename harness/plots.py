"""Plot functions shared by benchmarks/ and the notebooks in figures/."""
from __future__ import annotations

import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import spearmanr

from harness.measures.stats import mean_ci

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


def ablation_heatmaps(rows, metrics, marks=None, title="", stars=None):
    """One seaborn heatmap per metric over the (l_m, u_m) grid, each cell annotated with its value and, where the
    row has <metric>_ci_low/_high, its CI; `marks` outlines named cells (e.g. the paper's); stars[metric] maps a
    cell (l_m, u_m) to a symbol appended to its annotation (e.g. a significant difference)."""
    l_ms = sorted({r["l_m"] for r in rows})
    u_ms = sorted({r["u_m"] for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics), 3.9), constrained_layout=True)
    for ax, (key, label) in zip(np.atleast_1d(axes), metrics, strict=True):
        grid = np.full((len(l_ms), len(u_ms)), np.nan)
        text = np.full(grid.shape, "", dtype=object)
        for r in rows:
            i, j = l_ms.index(r["l_m"]), u_ms.index(r["u_m"])
            grid[i, j] = np.nan if r.get(key) is None else r[key]
            low, high = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
            text[i, j] = ("n/a" if r.get(key) is None else f"{r[key]:.3f}"
                          + (stars or {}).get(key, {}).get((r["l_m"], r["u_m"]), "")
                          + ("" if low is None or high is None else f"\n[{low:.3f}, {high:.3f}]"))
        sns.heatmap(grid, ax=ax, annot=text, fmt="", cmap="cividis", cbar=True, square=True,
                    xticklabels=[f"{u:g}" for u in u_ms], yticklabels=[f"{m:g}" for m in l_ms],
                    annot_kws={"fontsize": 8})
        ax.set_xlabel("u_m (margin at u_a, rad)")
        ax.set_ylabel("l_m (margin at l_a, rad)")
        ax.set_title(label, fontsize=10)
        for (name, (lm, um)), style in zip((marks or {}).items(), ("-", "--"), strict=False):   # up to two marks
            if lm in l_ms and um in u_ms:
                ax.add_patch(plt.Rectangle((u_ms.index(um), l_ms.index(lm)), 1, 1, fill=False, lw=2.5,
                                           ls=style, edgecolor="#D55E00", label=name))
        handles = [h for h in ax.patches if h.get_label() and not h.get_label().startswith("_")]
        if handles:
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, ncol=2,
                      frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000"]  # Okabe-Ito


def magnitude_vs_quality(per_head: dict, bins: int = 10):
    """One panel per head: feature magnitude against ground-truth quality, with binned means and Spearman rho.
    per_head: name -> (magnitude [N], quality [N], rho)."""
    fig, axes = plt.subplots(1, len(per_head), figsize=(3.8 * len(per_head), 3.6), constrained_layout=True,
                             squeeze=False)
    for ax, (name, (mag, q, rho)), colour in zip(axes[0], per_head.items(), PALETTE, strict=False):   # PALETTE: longer
        ax.scatter(q, mag, s=4, alpha=0.25, color=colour, rasterized=True)
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(q, edges) - 1, 0, bins - 1)
        centres = [(edges[b] + edges[b + 1]) / 2 for b in range(bins) if np.any(which == b)]
        means = [mag[which == b].mean() for b in range(bins) if np.any(which == b)]
        ax.plot(centres, means, "o-", color="k", lw=1.5, ms=4, label="binned mean")
        ax.set_title(f"{name}: Spearman ρ = {rho:+.3f}", fontsize=10)
        ax.set_xlabel("ground-truth quality")
        ax.set_ylabel("feature magnitude ‖f‖")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Feature magnitude vs ground-truth image quality (evaluation images)", fontsize=11)
    return fig


def magnitude_histograms(mag, quality, name: str, bins: int = 4):
    """Histograms of the magnitude, one per quality quartile (the paper's magnitude-distribution figure)."""
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    edges = np.quantile(quality, np.linspace(0, 1, bins + 1))
    for b in range(bins):
        sel = (quality >= edges[b]) & ((quality <= edges[b + 1]) if b == bins - 1 else (quality < edges[b + 1]))
        if sel.any():
            ax.hist(mag[sel], bins=40, histtype="step", lw=1.6, color=PALETTE[b], density=True,
                    label=f"quality {edges[b]:.2f}–{edges[b + 1]:.2f} (n={sel.sum()})")
    ax.set_xlabel("feature magnitude ‖f‖")
    ax.set_ylabel("density")
    ax.set_title(f"{name}: magnitude distribution per ground-truth quality quartile", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def magnitude_vs_cosine(per_head: dict):
    """Paper Fig. 3: magnitude against the cosine to the own class centre for the last training batch (Softmax too:
    the cosine to its linear class centre). per_head: name -> (magnitude [B], cos_target [B], optimum), optimum
    None or (cos grid, a*): the theory's optimal magnitude at the batch's median lse_neg, drawn as a line."""
    fig, axes = plt.subplots(1, len(per_head), figsize=(3.8 * len(per_head), 3.6), constrained_layout=True,
                             squeeze=False)
    # PALETTE holds more colours than there are heads
    for ax, (name, (mag, cos, optimum)), colour in zip(axes[0], per_head.items(), PALETTE, strict=False):
        ax.scatter(cos, mag, s=8, color=colour, alpha=0.7, label="training samples")
        if optimum is not None:
            ax.plot(*optimum, color="black", lw=1.5, label="theory a*(cos θ_y), median lse_neg")
            ax.legend(fontsize=7, loc="best")
        ax.set_title(f"{name}: Spearman ρ = {spearmanr(cos, mag)[0]:+.3f}", fontsize=10)
        ax.set_xlabel("cos θ_y to own class centre  (hard → easy)")
        ax.set_ylabel("feature magnitude ‖f‖")
    fig.suptitle("Magnitude vs difficulty in the last training batch (the paper's Fig. 3)", fontsize=11)
    return fig


def erc_curves(panels: dict, fmr: float, title: str):
    """Error-versus-discard curves: one panel per protocol ({panel title: {estimate: (fractions, fnmr)}}), FNMR
    against the fraction of pairs discarded, one line per quality estimate."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for i, (name, (fractions, fnmr)) in enumerate(curves.items()):
            ls = "--" if "ideal" in name else ":" if name == "random" else "-"
            ax.plot(100 * np.asarray(fractions), fnmr, ls, color=PALETTE[i % len(PALETTE)], lw=1.8, label=name)
        ax.set_xlabel("share discarded, lowest quality first (%)")
        ax.set_ylabel(f"FNMR at FMR = {fmr:g}")
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


def loss_comparison(rows, metrics, title=""):
    """One panel per metric: bars of the mean over seeds per head, one colour per training condition, error bars
    of one standard deviation and each seed as a dot. rows: dicts with head, condition, seed and the metrics."""
    df = pd.DataFrame(rows)
    conditions = list(dict.fromkeys(df["condition"]))
    heads = list(dict.fromkeys(df["head"]))
    many = len(heads) > 8   # many heads: one panel per row, wide enough for every name
    shape, size = ((len(metrics), 1), (max(8.0, 0.75 * len(heads) + 1.5), 3.4 * len(metrics))) if many else \
        ((1, len(metrics)), (5.2 * len(metrics), 4.0))
    fig, axes = plt.subplots(*shape, figsize=size, constrained_layout=True, squeeze=False)
    for ax, (key, label) in zip(axes.flat, metrics, strict=True):
        d = df.assign(value=100 * df[key])
        common = dict(data=d, x="head", y="value", hue="condition", order=heads, hue_order=conditions, ax=ax,
                      palette=PALETTE[:len(conditions)])
        sns.barplot(**common, errorbar="sd", capsize=0.15, alpha=0.55, err_kws={"linewidth": 1.2})
        state = np.random.get_state()   # seaborn jitters with numpy's global generator: fixed, so redraws match
        np.random.seed(0)
        try:
            sns.stripplot(**common, dodge=True, size=4, edgecolor="k", linewidth=0.5, legend=False)
        finally:
            np.random.set_state(state)
        low = d["value"].min()
        ax.set_ylim(max(0.0, low - 0.15 * (100 - low) - 2), 100)
        ax.set_xlabel("head")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(f"{label}: mean ± std over seeds, dots = seeds", fontsize=10)
        if many:
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
        else:
            ax.tick_params(axis="x", labelrotation=20)
        ax.get_legend().remove()
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="training set", loc="outside lower center", ncol=len(conditions), fontsize=9,
               title_fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def clustering_figure(rows: list):
    """BCubed F per head and clustering method with its interval (left); k-means BCubed F after discarding each
    head's lowest-magnitude images (right)."""
    heads = list(dict.fromkeys(r["head"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["discard"] == 0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    width = 0.8 / len(heads)
    for i, head in enumerate(heads):
        base = {r["method"]: r for r in rows if r["head"] == head and r["discard"] == 0}
        x = np.arange(len(methods)) + (i - (len(heads) - 1) / 2) * width
        f = np.array([base[m]["bcubed_f"] for m in methods])
        err = np.array([[f[j] - base[m]["bcubed_f_ci_low"], base[m]["bcubed_f_ci_high"] - f[j]]
                        for j, m in enumerate(methods)]).T
        left.bar(x, f, width, yerr=err, capsize=3, color=PALETTE[i % len(PALETTE)], label=head)
        for by, style in (("magnitude", "o-"), ("random", "x:")):
            curve = sorted((r["discard"], r["bcubed_f"]) for r in rows if r["head"] == head and r["method"] == "kmeans"
                           and r.get("discard_by") in (by, "none"))
            right.plot([100 * d for d, _ in curve], [v for _, v in curve], style, color=PALETTE[i % len(PALETTE)],
                       label=f"{head}, {'lowest magnitudes' if by == 'magnitude' else 'at random'}")
    left.set_xticks(np.arange(len(methods)), methods)
    left.set_xlabel("clustering method")
    left.set_ylabel("BCubed F (95 % CI over identities)")
    left.set_title("Clustering unseen identities", fontsize=10)
    left.legend(fontsize=8)
    right.set_xlabel("images discarded (%): lowest magnitudes (solid) or at random (dotted)")
    right.set_ylabel("BCubed F, k-means")
    right.set_title("Discarding low-magnitude images before clustering", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=7, ncol=2)
    return fig


def templates_figure(rows: list, far: float = 1e-3):
    """TAR at one FAR per head for each template weighting, with 95 % intervals over identity resamples."""
    key = f"tar_far_{far:g}"
    heads = list(dict.fromkeys(r["head"] for r in rows))
    weightings = list(dict.fromkeys(r["weighting"] for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.3), constrained_layout=True)
    width = 0.8 / len(weightings)
    for i, w in enumerate(weightings):
        by_head = {r["head"]: r for r in rows if r["weighting"] == w}
        x = np.arange(len(heads)) + (i - (len(weightings) - 1) / 2) * width
        tar = np.array([by_head[h][key] for h in heads], float)
        low = np.array([by_head[h][f"{key}_ci_low"] for h in heads], float)
        high = np.array([by_head[h][f"{key}_ci_high"] for h in heads], float)
        ax.bar(x, tar, width, yerr=[tar - low, high - tar], capsize=3, color=PALETTE[i % len(PALETTE)],
               label={"mean": "plain mean", "magnitude": "magnitude-weighted (MagFace+)",
                      "ground_truth": "ground-truth-quality-weighted"}.get(w, w))
    ax.set_xticks(np.arange(len(heads)), heads)
    ax.set_xlabel("head")
    ax.set_ylabel(f"TAR @ FAR = {far:g} (95 % CI over identities)")
    ax.set_title("Template aggregation on unseen identities (two templates per identity)", fontsize=10)
    ax.set_ylim(max(0.0, float(np.nanmin([r[f"{key}_ci_low"] or 0 for r in rows])) - 0.05), 1.0)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=len(weightings), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def tuning_figure(trials: list, objective: str, tuned: list, untuned: list, *metrics, title: str = ""):
    """Left: each head's validation objective per trial (dots) and best so far (line): a curve still rising at the
    last trial says the budget had not saturated. Then one panel per test metric: untuned (hatched) and tuned bars,
    mean over seeds with its 95 % t interval, each seed a dot. metrics: (column, label) pairs."""
    heads = list(dict.fromkeys(r["head"] for r in trials))
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5.0 * (1 + len(metrics)), 4.2), constrained_layout=True)
    ax = axes[0]
    for i, head in enumerate(heads):
        mine = [r for r in trials if r["head"] == head]
        x = np.array([r["trial"] for r in mine])
        v = np.array([np.nan if r["value"] is None else r["value"] for r in mine], float)
        best = np.array([np.nan if r["best_so_far"] is None else r["best_so_far"] for r in mine], float)
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(x, v, "o", color=colour, alpha=0.5, markersize=4)
        ax.step(x, best, where="post", color=colour, label=head)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel(f"{objective} (validation identities)")
    ax.set_title("search: trials (dots), best so far (line)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for ax, (key, label) in zip(axes[1:], metrics, strict=True):
        for j, (rows, name) in enumerate(((untuned, "untuned"), (tuned, "tuned"))):
            for i, head in enumerate(heads):
                values = [100 * r[key] for r in rows if r["head"] == head and r.get(key) is not None]
                if not values:
                    continue
                mean, low, high = mean_ci(values)
                x = i + (j - 0.5) * 0.38
                err = None if low is None else [[mean - low], [high - mean]]
                ax.bar(x, mean, 0.36, yerr=err, capsize=3, color=PALETTE[i % len(PALETTE)], alpha=0.35 + 0.4 * j,
                       hatch="//" if j == 0 else None, edgecolor="k", linewidth=0.5,
                       label=name if i == 0 else None)
                ax.plot(np.full(len(values), x), values, "k.", markersize=4)
        ax.set_xticks(np.arange(len(heads)), heads, rotation=20)
        ax.set_xlabel("head")
        ax.set_ylabel(f"{label} (%), test identities")
        ax.set_title(f"{label}: untuned vs tuned, mean and 95 % CI over seeds", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        values = [100 * r[key] for r in untuned + tuned if r.get(key) is not None]
        if values:
            ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 3))
    fig.suptitle(title, fontsize=11)
    return fig


def geometry_figure(panels: dict, title: str = ""):
    """Paper Figs. 1-2 on a trained feature space, one column per head. Top, the cone view of the paper's schematics:
    every training image at (a sin θ, a cos θ), a its magnitude and θ its angle to its own class centre (all classes
    folded onto one vertical centre line), coloured by ground-truth quality. Bottom: magnitude against quality.
    MagFace's calibrated band [l_a, u_a]: dotted arcs (top), dashed lines (bottom).
    panels: head -> {quality [N], cos [N], magnitude [N], band}."""
    fig, axes = plt.subplots(2, len(panels), figsize=(5.2 * len(panels), 9.4), constrained_layout=True,
                             squeeze=False)
    reach = 1.05 * max(float(np.max(p["magnitude"])) for p in panels.values())
    for col, (head, p) in enumerate(panels.items()):
        top, bottom = axes[0, col], axes[1, col]
        q, a = p["quality"], p["magnitude"]
        theta = np.arccos(np.clip(p["cos"], -1, 1))
        order = np.argsort(q)                                   # high quality drawn last (on top)
        points = top.scatter((a * np.sin(theta))[order], (a * np.cos(theta))[order], c=q[order], cmap="viridis",
                             s=7, vmin=0, vmax=1, alpha=0.8)
        top.plot([0, 0], [0, reach], "k--", lw=1)
        top.plot(0, reach, marker="*", ms=14, color="crimson", mec="black", mew=0.6, label="own class centre")
        for level in p.get("band") or []:
            arc = np.linspace(0, np.pi, 100)
            top.plot(level * np.sin(arc), level * np.cos(arc), color="grey", ls=":", lw=1)
        top.set_xlim(0, 0.75 * reach)
        top.set_ylim(min(0.0, float(np.min(a * np.cos(theta)))) - 0.3, 1.04 * reach)
        top.set_aspect("equal")
        top.set_xlabel("a · sin θ  (away from the centre line)")
        top.set_ylabel("a · cos θ  (along the own class centre)")
        top.legend(loc="lower right", fontsize=8)
        rho_c = spearmanr(p["cos"], a)[0]
        top.set_title(f"{head}: cone view, θ = angle to own centre; ρ(cos θ, a) = {rho_c:+.2f}", fontsize=9)
        bottom.scatter(q, a, c=q, cmap="viridis", s=6, vmin=0, vmax=1, alpha=0.6)
        for level in p.get("band") or []:
            bottom.axhline(level, color="grey", ls="--", lw=1)
        bottom.set_title(f"{head}: ρ(quality, a) = {spearmanr(q, a)[0]:+.2f}, ρ(quality, cos θ) = "
                         f"{spearmanr(q, p['cos'])[0]:+.2f}", fontsize=9)
        bottom.set_xlabel("ground-truth quality")
        bottom.set_ylabel("feature magnitude a = ‖f‖" + ("  (dashed: calibrated band)" if p.get("band") else ""))
        bottom.grid(alpha=0.3)
    fig.colorbar(points, ax=axes[0, :].tolist(), label="ground-truth quality", shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
