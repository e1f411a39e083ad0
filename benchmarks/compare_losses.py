"""Loss comparison: Softmax, SphereFace, CosFace, ArcFace, MagFace and AdaFace on one harness, one data set, one
budget and the same seeds, trained on clean data and on data with label noise and garbage images.

The grid (conditions x heads x seeds, each head's parameters) is the sweep spec configs/sweeps/compare_losses.toml,
run by harness.sweep: every run is a harness run in OUT/runs/, reused when finished, resumed when killed, never
deleted by a run of another configuration. Tables: OUT/compare_losses.csv (one row per run),
OUT/compare_losses_summary.csv (mean and std over seeds per condition and head), OUT/compare_losses.json (both);
figure: OUT/compare_losses.png (and a copy in figures/).

    python benchmarks/compare_losses.py              # 6 heads x 3 seeds x {clean, noisy}, CPU, about 32 minutes
    python benchmarks/compare_losses.py --quick      # 1 seed, 2 epochs, a few minutes
    python benchmarks/compare_losses.py --data /data/faces_emore --eval-bins /data/faces_emore/lfw.bin \\
        --backbone iresnet50 --device cuda --epochs 25 --seeds 0,1,2 --conditions clean
"""
from __future__ import annotations

import argparse
import json
import time

from harness.cli import add_output_args, add_sweep_args, benchmark_spec, comma_list, run_benchmark_sweep
from harness.plots import loss_comparison, publish_figure

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
    stored = load_results(result.out)
    publish_figure(comparison_figure(stored["runs"], stored["title"]), result.out, "compare_losses.png", args.figures,
                   args.quick)
    print(f"wrote {result.out}/compare_losses.csv, compare_losses_summary.csv, compare_losses.png "
          f"({time.perf_counter() - t0:.0f} s for {result.trained} new run(s))")


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
    print(f"{'condition':<10}{'head':<12}{'seeds':>6}{'accuracy (%)':>18}{'TAR@FAR=1e-2 (%)':>20}{'rho(|f|,q)':>16}")
    for s in summary:
        def pm(key, scale=100):
            mean, std = s[f"{key}_mean"], s[f"{key}_std"]
            if mean is None:
                return "n/a"
            return f"{scale * mean:.2f} ± {scale * std:.2f}" if std is not None else f"{scale * mean:.2f}"
        print(f"{s['condition']:<10}{s['head']:<12}{s['seeds']:>6}{pm('accuracy'):>18}{pm(TAR_KEY):>20}"
              f"{pm('spearman_rho', 1):>16}")


if __name__ == "__main__":
    main()
