"""The (l_m, u_m) ablation: train MagFace for every cell of a margin grid on the shared harness and compare.

The grid is the sweep spec configs/sweeps/ablation.toml, run by harness.sweeps: each cell is a harness run in
OUT/runs/<cell>-<fingerprint>/, reused when finished, resumed when killed, and never deleted by a run of another
configuration (that one gets its own folder). Tables: OUT/ablation.csv and OUT/ablation.json (one row per cell);
heatmaps: OUT/ablation_heatmaps.png and a copy in figures/.

    python benchmarks/ablation.py                 # CPU default: 3 x 3 grid on the built-in synthetic faces
    python benchmarks/ablation.py --quick         # 2 x 2 grid on a smaller data set, under 2 minutes
    python benchmarks/ablation.py --data /data/faces_emore --eval-bins /data/faces_emore/lfw.bin \\
        --backbone iresnet50 --device cuda --set train.amp=\\"bf16\\" --epochs 25
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from harness.bench_cli import (
    add_output_args,
    add_sweep_args,
    benchmark_spec,
    comma_list,
    publish_result,
    run_benchmark_sweep,
)
from harness.evaluation.evaluate import paired_accuracy_difference
from harness.plots import publish_figure
from harness.sweeps.tables import write_csv

SPEC = "configs/sweeps/ablation.toml"
L_M, U_M = "head.params.l_m", "head.params.u_m"
PAPER_CELL, CODE_CELL = (0.40, 0.80), (0.45, 0.80)
METRICS = [("accuracy", "verification accuracy (10-fold)"), ("tar_far_0.01", "TAR @ FAR = 1e-2"),
           ("spearman_rho", "Spearman ρ(magnitude, quality)"),
           ("erc_area_magface", "ERC area, official MagFace protocol\n(threshold recomputed; lower is better)")]


# --- figures ---------------------------------------------------------------------------------------------------
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
        vmin, vmax = colour_range(rows, key, grid)
        sns.heatmap(grid, ax=ax, annot=text, fmt="", cmap="cividis_r" if key.startswith(LOWER_IS_BETTER) else "cividis",
                    cbar=True, square=True, vmin=vmin, vmax=vmax, xticklabels=[f"{u:g}" for u in u_ms],
                    yticklabels=[f"{m:g}" for m in l_ms], annot_kws={"fontsize": 8})
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
    fig.suptitle("\n".join(textwrap.wrap(title.rstrip(".") + ". Yellow is better in every panel.", 170)), fontsize=11)
    return fig


LOWER_IS_BETTER = ("erc_", "edc_")   # metrics where a smaller value is better: their colour scale is reversed


def colour_range(rows, key, grid) -> tuple:
    """(vmin, vmax) of a panel: the cells' range, widened to at least the median width of their 95 % intervals, so
    differences well inside the evaluation noise do not span the whole colour scale."""
    values = grid[np.isfinite(grid)]
    if not values.size:
        return None, None
    widths = [r[f"{key}_ci_high"] - r[f"{key}_ci_low"] for r in rows
              if r.get(f"{key}_ci_low") is not None and r.get(f"{key}_ci_high") is not None]
    low, high = float(values.min()), float(values.max())
    spread = max(high - low, float(np.median(widths)) if widths else 0.0)
    if spread == 0:   # one value and no interval: the colour scale's own default
        return None, None
    centre = (low + high) / 2
    return centre - spread / 2, centre + spread / 2



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--l-m", type=comma_list(float), help="l_m values (default: the spec's, 0.35,0.40,0.45)")
    ap.add_argument("--u-m", type=comma_list(float), help="u_m values (default: the spec's, 0.70,0.80,0.90)")
    ap.add_argument("--lambda-g", type=float, help="lambda_g of every cell (default: the config's)")
    ap.add_argument("--l-a", type=float, help="l_a of every cell (default: the config's)")
    ap.add_argument("--u-a", type=float, help="u_a of every cell (default: the config's)")
    ap.add_argument("--s", type=float, help="scale s of every cell (default: the config's)")
    add_sweep_args(ap, SPEC)
    add_output_args(ap, "ablation")
    args = ap.parse_args(argv)

    spec = benchmark_spec(args, SPEC, {L_M: args.l_m, U_M: args.u_m})
    bad = [(a, b) for a in spec.axes[L_M] for b in spec.axes[U_M] if a > b]
    if bad:
        raise SystemExit(f"error: grid cells with l_m > u_m are not valid MagFace settings: {bad}")
    args.set += [f"head.params.{k}={v}" for k, v in (("lambda_g", args.lambda_g), ("l_a", args.l_a),
                                                    ("u_a", args.u_a), ("s", args.s)) if v is not None]
    t0 = time.perf_counter()
    result = run_benchmark_sweep(args, spec, describe=lambda r: f"({r['l_m']:g},{r['u_m']:g}) acc {r['accuracy']:.3f}")
    if result is None:   # --dry-run or --prune
        return
    versus = versus_paper_cell(result.rows)
    versus_csv = os.path.join(result.out, "ablation_vs_paper.csv")
    if versus:
        write_csv(versus_csv, versus)
    elif os.path.isfile(versus_csv):   # a table of an earlier grid that had the paper's cell: stale now
        os.remove(versus_csv)
    print_table(result.rows, versus)
    publish_figure(heatmap_figure(result.rows, versus), result.out, "ablation_heatmaps.png", args.figures, args.quick)
    print(f"wrote {result.out}/ablation.csv, ablation.json, ablation_vs_paper.csv, ablation_heatmaps.png "
          f"({time.perf_counter() - t0:.0f} s for {result.trained} new cell(s))")
    publish_result(args, result)


def load_table(out) -> list:
    """The cell rows stored by a finished run of this benchmark in `out`."""
    with open(f"{out}/ablation.json") as f:
        return json.load(f)["runs"]


def load_versus(out) -> list:
    """The paired differences to the paper's cell stored by a finished run in `out` ([] when it had no such cell)."""
    path = os.path.join(out, "ablation_vs_paper.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    number = ("l_m", "u_m", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "diff_vs_paper_cell", "diff_ci_low",
              "diff_ci_high")
    return [{k: (float(v) if k in number and v != "" else None if v == "" else v) for k, v in r.items()} for r in rows]


PAIRED_RESAMPLES = 2000   # identity resamples per paired difference: about 12 in each Bonferroni tail at 0.05 / 8


def versus_paper_cell(table) -> list:
    """Each cell's accuracy minus the paper's (0.40, 0.80) cell on the same evaluation pairs, with an interval over
    evaluation identities and a verdict (one seed per cell: the interval holds evaluation noise, not seed noise).
    The cells compared with the paper's are one family: their intervals are simultaneous (Bonferroni, level
    1 - 0.05 / m) and the verdicts are read off them. Empty when the grid has no paper cell."""
    ref = {r["seed"]: r for r in table if (r["l_m"], r["u_m"]) == PAPER_CELL and not r.get("failed")}
    compared = [r for r in table if not r.get("failed") and r["seed"] in ref and r is not ref[r["seed"]]]
    m = len(compared)
    level = 1 - 0.05 / max(m, 1)
    family = f"ablation: accuracy minus the paper's cell, {m} cell(s) (Bonferroni)"
    rows = []
    for r in compared:
        d = paired_accuracy_difference(r["run"], ref[r["seed"]]["run"], n_boot=PAIRED_RESAMPLES, level=level)
        rows.append({"l_m": r["l_m"], "u_m": r["u_m"], "seed": r["seed"], "accuracy": r["accuracy"],
                     "accuracy_ci_low": r.get("accuracy_ci_low"), "accuracy_ci_high": r.get("accuracy_ci_high"),
                     "diff_vs_paper_cell": d["diff"], "diff_ci_low": d["diff_ci_low"],
                     "diff_ci_high": d["diff_ci_high"], "verdict": d["verdict"], "family": family,
                     "family_size": m, "paired_level": level,
                     "noise_in_ci": "evaluation identities (one seed per cell: seed noise not included)"})
    return rows


def heatmap_figure(table, versus=()):
    """Heatmaps of every metric that has values with each cell's 95 % CI, the paper's and the official code's cells
    outlined; on accuracy, ▲/▼ marks a cell whose paired difference to the paper's cell excludes 0."""
    p = table[0]
    shown = [(k, label) for k, label in METRICS if any(r.get(k) is not None for r in table)]
    stars = {(v["l_m"], v["u_m"]): "▲" if v["verdict"] == "better" else "▼" for v in versus
             if v["verdict"] in ("better", "worse")}
    lam = (f"λ_g {p['lambda_g']:g}" if p["lambda_g"] != "auto"
           else f"λ_g {p.get('lambda_g_ratio', 1):.2f}× its bound")
    q = p.get("auto_quantiles") or (0.05, 0.95)
    q = q if isinstance(q, (list, tuple)) else str(q).strip("()[]").split(",")
    band = (f"[l_a, u_a]=[{p['l_a']}, {p['u_a']}], {lam}" if p["l_a"] != "auto"
            else f"band measured (magnitude quantiles {float(q[0]):g}–{float(q[1]):g}), {lam}")
    return ablation_heatmaps(table, shown, marks={"paper (0.40, 0.80)": PAPER_CELL, "code (0.45, 0.80)": CODE_CELL},
                             stars={"accuracy": stars},
                             title=f"MagFace (l_m, u_m) ablation, {band}, s={p['s']}, one seed per cell; "
                                   "▲▼: accuracy differs from the paper's cell (simultaneous 95 % intervals over the "
                                   "cells, evaluation identities)")


def print_table(table, versus=()):
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    by_cell = {(v["l_m"], v["u_m"], str(v["seed"])): v for v in versus}
    print(f"{'l_m':>6}{'u_m':>6}{'accuracy [95% CI]':>24}{'vs (0.40,0.80) [95% CI]':>26}  {'verdict':<25}"
          f"{'TAR@1e-2':>9}{'rho(mag,q)':>11}{'ERC (MagFace)':>14}{'EDC pAUC20':>11}{'m span':>8}{'train s':>9}")
    for r in table:
        tar, v = r.get("tar_far_0.01"), by_cell.get((r["l_m"], r["u_m"], str(r["seed"])))
        ci = lambda lo, hi: "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"  # noqa: E731
        acc = f"{100 * r['accuracy']:.2f}{ci(r.get('accuracy_ci_low'), r.get('accuracy_ci_high'))}"
        diff = ("reference" if v is None
                else f"{100 * v['diff_vs_paper_cell']:+.2f}{ci(v['diff_ci_low'], v['diff_ci_high'])}")
        verdict = "" if v is None else v["verdict"].split(" (")[0]
        print(f"{r['l_m']:>6.2f}{r['u_m']:>6.2f}{acc:>24}{diff:>26}  {verdict:<25}{fmt(tar and 100 * tar, '.2f'):>8}%"
              f"{fmt(r['spearman_rho'], '+.3f'):>11}{fmt(r['erc_area_magface'], '.4f'):>14}"
              f"{fmt(r['edc_pauc_20'], '.4f'):>11}{fmt(r.get('margin_span_share'), '.0%'):>8}{r['seconds']:>9.0f}")


if __name__ == "__main__":
    main()
