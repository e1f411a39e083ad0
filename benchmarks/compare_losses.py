"""Loss comparison: Softmax, SphereFace, CosFace, ArcFace, MagFace and AdaFace on one harness, one data set, one
budget and the same seeds, trained on clean data and on data with label noise and garbage images.

Every (condition, head, seed) is a full harness run in OUT/runs/, reused when its stored config matches (a killed
run resumes). Results: OUT/compare_losses.csv (one row per run), OUT/compare_losses_summary.csv (mean and std over
seeds per condition and head), OUT/compare_losses.png (and a copy in figures/).

    python benchmarks/compare_losses.py              # 6 heads x 3 seeds x {clean, noisy}, CPU, about 35 minutes
    python benchmarks/compare_losses.py --quick      # 1 seed, 2 epochs, a few minutes
    python benchmarks/compare_losses.py --data /data/faces_emore --eval-bins /data/faces_emore/lfw.bin \\
        --backbone iresnet50 --device cuda --epochs 25 --seeds 0,1,2 --conditions clean
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from harness.config import load_config
from harness.runstate import atomic_json
from harness.sweep import (add_real_data_args, config_hash, metric_columns, real_data_overrides, run_sweep,
                           write_csv)

DEFAULT_CONFIG = "configs/cpu_synthetic_ablation.toml"   # 36 runs of about a minute on 2 cores
QUICK_CONFIG = "configs/cpu_synthetic_quick.toml"
# One scale for every normalised head (the CPU default's MagFace s); margins are each paper's. ArcFace takes
# MagFace's theta policy ("easy"), so the two differ only by MagFace's magnitude-aware margin and regulariser.
HEADS = {"softmax": {}, "sphereface": {"s": 32.0}, "cosface": {"s": 32.0},
         "arcface": {"s": 32.0, "theta_policy": "easy"}, "magface": None, "adaface": {"s": 32.0}}
CONDITIONS = {"clean": {"label_noise": 0.0, "garbage": 0.0}, "noisy": {"label_noise": 0.1, "garbage": 0.05}}
TAR_KEY = "tar_far_0.01"


def run_config(args, condition, head, seed):
    cfg = load_config(args.config, args.overrides)
    if HEADS[head] is not None:   # None: the config's own (MagFace) head parameters
        cfg.head.name, cfg.head.params = head, dict(HEADS[head])
    elif cfg.head.name != "magface":
        raise ValueError(f"the config's head must be magface (its parameters are MagFace's), got {cfg.head.name!r}")
    if cfg.data.source == "synthetic":
        for key, value in CONDITIONS[condition].items():
            setattr(cfg.data, key, value)
    elif condition != "clean":
        raise ValueError(f"condition {condition!r} adds label noise to the built-in synthetic data; "
                         f"with real data use --conditions clean")
    cfg.train.seed = seed
    cfg.out = os.path.join(args.out, "runs", condition, head, f"seed{seed}")
    return cfg


def result_row(cfg, metrics, seconds):
    condition = cfg.out.rstrip("/").split(os.sep)[-3]
    return {"condition": condition, "head": cfg.head.name, "seed": cfg.train.seed, **metric_columns(metrics),
            "seconds": seconds, "head_params": json.dumps(cfg.head.params, sort_keys=True),
            "config_hash": config_hash(cfg)}


def summarise(rows):
    """Mean and sample std over seeds for each (condition, head), in the order rows arrive."""
    groups = {}
    for r in rows:
        groups.setdefault((r["condition"], r["head"]), []).append(r)
    out = []
    for (condition, head), rs in groups.items():
        s = {"condition": condition, "head": head, "seeds": len(rs)}
        for key in ("accuracy", TAR_KEY, "spearman_rho"):
            v = np.array([r.get(key, np.nan) for r in rs], dtype=float)
            s[f"{key}_mean"] = float(v.mean())
            s[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        out.append(s)
    return out


def comparison_figure(table, title):
    from harness.plots import loss_comparison
    return loss_comparison(table, [("accuracy", "verification accuracy"), (TAR_KEY, "TAR @ FAR = 1e-2")], title)


def print_summary(summary):
    print(f"{'condition':<10}{'head':<12}{'seeds':>6}{'accuracy (%)':>18}{'TAR@FAR=1e-2 (%)':>20}{'rho(|f|,q)':>16}")
    for s in summary:
        pm = lambda k, scale=100: (f"{scale * s[k + '_mean']:.2f} ± {scale * s[k + '_std']:.2f}"  # noqa: E731
                                   if np.isfinite(s[k + "_std"]) else f"{scale * s[k + '_mean']:.2f}")
        print(f"{s['condition']:<10}{s['head']:<12}{s['seeds']:>6}{pm('accuracy'):>18}{pm(TAR_KEY):>20}"
              f"{pm('spearman_rho', 1):>16}")


def parse_list(text, name, kind):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --{name} must be a comma-separated list of {kind.__name__}, got {text!r}")
    if not values:
        raise SystemExit(f"error: --{name} is empty")
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help=f"harness config with the MagFace head (default {DEFAULT_CONFIG})")
    ap.add_argument("--heads", default=",".join(HEADS), help="comma-separated subset of " + ", ".join(HEADS))
    ap.add_argument("--seeds", help="comma-separated training seeds (default 0,1,2; --quick: 0)")
    ap.add_argument("--conditions", default="clean,noisy",
                    help="clean and/or noisy (10%% wrong labels + 5%% garbage images in the training set)")
    ap.add_argument("--quick", action="store_true", help=f"one seed, two epochs, {QUICK_CONFIG}")
    add_real_data_args(ap)
    ap.add_argument("--out", default="results/compare_losses", help="results folder (runs, CSV, figure)")
    ap.add_argument("--figures", default="figures", help="also copy the PNG here ('' to skip)")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    args = ap.parse_args(argv)

    heads = parse_list(args.heads, "heads", str)
    conditions = parse_list(args.conditions, "conditions", str)
    seeds = parse_list(args.seeds, "seeds", int) if args.seeds else ([0] if args.quick else [0, 1, 2])
    for name, values, valid in (("heads", heads, HEADS), ("conditions", conditions, CONDITIONS)):
        unknown = [v for v in values if v not in valid]
        if unknown:
            raise SystemExit(f"error: unknown --{name} {unknown}; expected some of {list(valid)}")
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds has repeats: {seeds}")
    args.config = args.config or (QUICK_CONFIG if args.quick else DEFAULT_CONFIG)
    if args.quick and not args.epochs:
        args.epochs = 2
    args.overrides = real_data_overrides(args)
    try:
        runs = [run_config(args, c, h, s) for c in conditions for h in heads for s in seeds]
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    os.makedirs(args.out, exist_ok=True)
    print(f"loss comparison: heads {heads}, seeds {seeds}, conditions {conditions}; {runs[0].model.backbone}, "
          f"{runs[0].train.epochs} epochs, data {runs[0].data.source}; results in {args.out}", flush=True)
    if runs[0].data.source == "synthetic":   # generate each condition's data once, before workers need it
        from harness.data_source import synthetic_faces
        for c in conditions:
            synthetic_faces(next(r for r in runs if r.out.split(os.sep)[-3] == c))

    t0 = time.perf_counter()
    table, trained = run_sweep(runs, "result.json", result_row, jobs=args.jobs, unit="run", where=f"{args.out}/runs",
                               describe=lambda r: f"{r['condition']}/{r['head']}/seed{r['seed']} acc {r['accuracy']:.3f}")
    summary = summarise(table)
    write_csv(os.path.join(args.out, "compare_losses.csv"), table)
    write_csv(os.path.join(args.out, "compare_losses_summary.csv"), summary)
    title = (f"Loss comparison on {runs[0].data.source} data, {runs[0].model.backbone}, {runs[0].train.epochs} "
             f"epochs, {len(seeds)} seed(s) each")
    atomic_json(os.path.join(args.out, "compare_losses.json"), {"title": title, "runs": table, "summary": summary})
    print_summary(summary)
    from harness.plots import publish_figure
    publish_figure(comparison_figure(table, title), args.out, "compare_losses.png", args.figures, args.quick)
    print(f"wrote {args.out}/compare_losses.csv, compare_losses_summary.csv, compare_losses.png "
          f"({time.perf_counter() - t0:.0f} s for {trained} new run(s))")


if __name__ == "__main__":
    main()
