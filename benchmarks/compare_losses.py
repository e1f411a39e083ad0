"""Loss comparison: Softmax, SphereFace, CosFace, ArcFace, MagFace and AdaFace on one harness, one data set, one
budget and the same seeds, trained on clean data and on data with label noise and garbage images.

The grid (conditions x heads x seeds, each head's parameters) is the sweep spec configs/sweeps/compare_losses.toml,
run by harness.sweep: every run is a harness run in OUT/runs/, reused when finished, resumed when killed, never
deleted by a run of another configuration. Tables: OUT/compare_losses.csv (one row per run),
OUT/compare_losses_summary.csv (mean, std and 95 % t interval over seeds per condition and head),
OUT/compare_losses_comparison.csv (every head minus MagFace, paired by seed, with CI and verdict),
OUT/noise_robustness.csv (accuracy lost to noise, and that loss minus MagFace's), OUT/compare_losses.json;
figure: OUT/compare_losses.png (and a copy in figures/).

    python benchmarks/compare_losses.py              # 6 heads x 5 seeds x {clean, noisy}, CPU, about 55 minutes
    python benchmarks/compare_losses.py --quick      # 1 seed, 2 epochs, a few minutes
    python benchmarks/compare_losses.py --data /data/faces_emore --eval-bins /data/faces_emore/lfw.bin \\
        --backbone iresnet50 --device cuda --epochs 25 --seeds 0,1,2 --conditions clean
"""
from __future__ import annotations

import argparse
import json
import os
import time

from harness.cli import (add_output_args, add_sweep_args, benchmark_spec, comma_list, publish_result,
                         run_benchmark_sweep)
from harness.plots import loss_comparison, publish_figure
from harness.stats import mean_ci, paired_difference
from harness.sweep import write_csv

SPEC = "configs/sweeps/compare_losses.toml"
TAR_KEY = "tar_far_0.01"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heads", type=comma_list(str), help="subset of the spec's heads (default: all six)")
    ap.add_argument("--conditions", type=comma_list(str),
                    help="clean and/or noisy (10%% wrong labels + 5%% garbage images in the training set)")
    add_sweep_args(ap, SPEC)
    add_output_args(ap, "compare_losses")
    args = ap.parse_args(argv)

    spec = benchmark_spec(args, SPEC, {"head": args.heads, "condition": args.conditions})
    t0 = time.perf_counter()
    result = run_benchmark_sweep(args, spec, describe=lambda r: f"{r['condition']}/{r['head']}/seed{r['seed']} "
                                                                f"acc {r['accuracy']:.3f}")
    if result is None:   # --dry-run or --prune
        return
    print_summary(result.summary)
    print_comparison(result.comparison)
    robustness = noise_robustness(result.rows)
    if robustness:
        write_csv(os.path.join(result.out, "noise_robustness.csv"), robustness)
        print_robustness(robustness)
    stored = load_results(result.out)
    publish_figure(comparison_figure(stored["runs"], stored["title"]), result.out, "compare_losses.png", args.figures,
                   args.quick)
    print(f"wrote {result.out}/compare_losses.csv, compare_losses_summary.csv, compare_losses.png "
          f"({time.perf_counter() - t0:.0f} s for {result.trained} new run(s))")
    publish_result(args, result)


def load_results(out) -> dict:
    """The stored tables of a finished run of this benchmark in `out`: runs, summary and the figure title."""
    with open(f"{out}/compare_losses.json") as f:
        stored = json.load(f)
    s = stored["setup"]
    return {**stored, "title": f"Loss comparison on {s['data']} data, {s['backbone']}, {s['epochs']} epochs, "
                               f"{len(stored['axes']['seed'])} seed(s) each"}


def comparison_figure(table, title):
    return loss_comparison(table, [("accuracy", "verification accuracy"), (TAR_KEY, "TAR @ FAR = 1e-2")], title)


def print_summary(summary):
    print("mean over seeds [95 % t interval]")
    print(f"{'condition':<10}{'head':<12}{'seeds':>6}{'accuracy (%)':>24}{'TAR@FAR=1e-2 (%)':>24}"
          f"{'rho(|f|,q)':>24}")
    for s in summary:
        def ci(key, scale=100, digits=2):
            mean, low, high = s[f"{key}_mean"], s[f"{key}_ci_low"], s[f"{key}_ci_high"]
            if mean is None:
                return "n/a"
            text = f"{scale * mean:.{digits}f}"
            return text + (f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]" if low is not None else "")
        print(f"{s['condition']:<10}{s['head']:<12}{s['seeds']:>6}{ci('accuracy'):>24}{ci(TAR_KEY):>24}"
              f"{ci('spearman_rho', 1, 3):>24}")


def print_comparison(comparison):
    """Accuracy and TAR of every head minus MagFace's, paired by seed, with the verdict."""
    rows = [c for c in comparison if c["metric"] in ("accuracy", TAR_KEY)]
    if not rows:
        return
    print("\nhead - MagFace, paired by seed (points) [95 % t interval]: verdict")
    for c in rows:
        diff = c["diff_vs_magface"]
        ci = "" if c["diff_ci_low"] is None else f" [{100 * c['diff_ci_low']:+.2f}, {100 * c['diff_ci_high']:+.2f}]"
        print(f"  {c['condition']:<8}{c['head']:<12}{c['metric']:<14}"
              f"{'n/a' if diff is None else f'{100 * diff:+.2f}'}{ci}: {verdict_in_points(c)}")


def verdict_in_points(c) -> str:
    """The verdict with the detectable difference in points (the tables keep the metric's own units)."""
    if c["verdict"].startswith("no detectable") and c["detectable"] is not None:
        return f"no detectable difference at {c['seeds']} seeds (could detect {100 * c['detectable']:.1f} points)"
    return c["verdict"]


def noise_robustness(rows) -> list:
    """Accuracy lost to label noise per head (clean - noisy, per seed) and, as a difference in differences, that
    loss minus MagFace's, with CI and verdict ("better" = the head loses less than MagFace)."""
    acc = {(r["condition"], r["head"], r["seed"]): r["accuracy"] for r in rows}
    heads = list(dict.fromkeys(r["head"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    drop = {h: [acc[("clean", h, s)] - acc[("noisy", h, s)] if ("clean", h, s) in acc and ("noisy", h, s) in acc
                else None for s in seeds] for h in heads}
    if "magface" not in drop or all(v is None for v in drop["magface"]):
        return []
    out = []
    for h in heads:
        mean, low, high = mean_ci(drop[h])
        did = paired_difference([None if v is None else -v for v in drop[h]],
                                [None if v is None else -v for v in drop["magface"]])
        out.append({"head": h, "accuracy_drop": mean, "accuracy_drop_ci_low": low, "accuracy_drop_ci_high": high,
                    "drop_minus_magface": None if did["diff"] is None else -did["diff"],
                    "did_ci_low": None if did["diff_ci_high"] is None else -did["diff_ci_high"],
                    "did_ci_high": None if did["diff_ci_low"] is None else -did["diff_ci_low"],
                    "verdict": did["verdict"] if h != "magface" else "reference", "detectable": did["detectable"],
                    "seeds": did["seeds"]})
    return out


def print_robustness(rows):
    print("\naccuracy lost to noise (clean - noisy, points) and that loss minus MagFace's [95 % t interval]")
    for r in rows:
        drop = "n/a" if r["accuracy_drop"] is None else f"{100 * r['accuracy_drop']:+.2f}"
        did = ("" if r["did_ci_low"] is None or r["head"] == "magface" else
               f"  minus MagFace {100 * r['drop_minus_magface']:+.2f} [{100 * r['did_ci_low']:+.2f}, "
               f"{100 * r['did_ci_high']:+.2f}]: {verdict_in_points(r)}")
        print(f"  {r['head']:<12}{drop}{did}")


if __name__ == "__main__":
    main()
