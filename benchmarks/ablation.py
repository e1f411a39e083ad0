"""The (l_m, u_m) ablation: train MagFace for every cell of a margin grid on the shared harness and compare.

Each cell is a full harness run in OUT/cells/; a cell whose stored config hash matches is reused, a killed cell
resumes from its checkpoint, and a cell left by a different configuration is recomputed with a message. The
results go to OUT/ablation.csv and OUT/ablation.json (one row per cell) and heatmaps to OUT and figures/.

    python benchmarks/ablation.py                 # CPU default: 3 x 3 grid on the built-in synthetic faces
    python benchmarks/ablation.py --quick         # 2 x 2 grid on a smaller data set, a few minutes
    python benchmarks/ablation.py --data /data/faces_emore --eval-bins /data/faces_emore/lfw.bin \\
        --backbone iresnet50 --device cuda --set train.amp=\\"bf16\\" --epochs 25
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from harness.config import load_config
from harness.runstate import atomic_json
from harness.sweep import (add_real_data_args, config_hash, metric_columns, real_data_overrides, run_sweep,
                           write_csv)

DEFAULT_LM = (0.35, 0.40, 0.45)
DEFAULT_UM = (0.70, 0.80, 0.90)
QUICK_LM, QUICK_UM = (0.40, 0.45), (0.70, 0.80)
DEFAULT_CONFIG = "configs/cpu_synthetic_ablation.toml"   # 9 cells in 15 minutes on 2 cores
QUICK_CONFIG = "configs/cpu_synthetic_quick.toml"
PAPER_CELL, CODE_CELL = (0.40, 0.80), (0.45, 0.80)
METRICS = [("accuracy", "verification accuracy (10-fold)"), ("tar_far_0.01", "TAR @ FAR = 1e-2"),
           ("spearman_rho", "Spearman ρ(magnitude, quality)"), ("erc_area", "ERC area (lower is better)")]


def cell_config(base_args, l_m, u_m, out_dir):
    cfg = load_config(base_args.config, base_args.overrides)
    cfg.head.name = "magface"
    cfg.head.params = {**cfg.head.params, "l_m": l_m, "u_m": u_m, **base_args.fixed}
    cfg.out = os.path.join(out_dir, "cells", f"lm{l_m:g}_um{u_m:g}")
    return cfg


def row_from_metrics(cfg, metrics, seconds):
    p = cfg.head.params
    return {"l_m": p["l_m"], "u_m": p["u_m"], "lambda_g": p.get("lambda_g"), "l_a": p.get("l_a"), "u_a": p.get("u_a"),
            "s": p.get("s"), **metric_columns(metrics), "seconds": seconds, "config_hash": config_hash(cfg)}


def parse_grid(text, name):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"error: --{name} must be comma-separated numbers, got {text!r}")
    return values


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help=f"harness config of one cell (default {DEFAULT_CONFIG}; --quick: {QUICK_CONFIG})")
    ap.add_argument("--l-m", help=f"comma-separated l_m values (default {','.join(map(str, DEFAULT_LM))})")
    ap.add_argument("--u-m", help=f"comma-separated u_m values (default {','.join(map(str, DEFAULT_UM))})")
    ap.add_argument("--lambda-g", type=float, help="fixed lambda_g (default: the config's)")
    ap.add_argument("--l-a", type=float, help="fixed l_a (default: the config's)")
    ap.add_argument("--u-a", type=float, help="fixed u_a (default: the config's)")
    ap.add_argument("--s", type=float, help="fixed scale s (default: the config's)")
    ap.add_argument("--quick", action="store_true", help="2 x 2 grid on a smaller data set and model")
    add_real_data_args(ap)
    ap.add_argument("--out", default="results/ablation", help="results folder (cells, CSV, JSON, figures)")
    ap.add_argument("--figures", default="figures", help="also copy the heatmap PNG here ('' to skip)")
    ap.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes")
    args = ap.parse_args(argv)

    l_ms = parse_grid(args.l_m, "l-m") if args.l_m else (QUICK_LM if args.quick else DEFAULT_LM)
    u_ms = parse_grid(args.u_m, "u-m") if args.u_m else (QUICK_UM if args.quick else DEFAULT_UM)
    bad = [(a, b) for a in l_ms for b in u_ms if a > b]
    if bad:
        raise SystemExit(f"error: grid cells with l_m > u_m are not valid MagFace settings: {bad}")
    if args.config is None:
        args.config = QUICK_CONFIG if args.quick else DEFAULT_CONFIG
    args.overrides = real_data_overrides(args)
    args.fixed = {k: v for k, v in (("lambda_g", args.lambda_g), ("l_a", args.l_a), ("u_a", args.u_a),
                                    ("s", args.s)) if v is not None}
    try:
        cells = [cell_config(args, lm, um, args.out) for lm in l_ms for um in u_ms]
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    os.makedirs(args.out, exist_ok=True)
    p = cells[0].head.params
    print(f"(l_m, u_m) ablation: {len(l_ms)} x {len(u_ms)} cells, lambda_g={p.get('lambda_g')}, "
          f"l_a={p.get('l_a')}, u_a={p.get('u_a')}, s={p.get('s')}; {cells[0].model.backbone}, "
          f"{cells[0].train.epochs} epochs, data {cells[0].data.source}; results in {args.out}", flush=True)
    if cells[0].data.source == "synthetic":   # generate the data once, before workers need it
        from harness.data_source import synthetic_faces
        synthetic_faces(cells[0])

    t0 = time.perf_counter()
    table, trained = run_sweep(cells, "cell.json", row_from_metrics, jobs=args.jobs, unit="cell",
                               where=f"{args.out}/cells",
                               describe=lambda r: f"({r['l_m']:g},{r['u_m']:g}) acc {r['accuracy']:.3f}")
    write_table(args.out, table)
    print_table(table)
    from harness.plots import publish_figure
    publish_figure(heatmap_figure(table), args.out, "ablation_heatmaps.png", args.figures, args.quick)
    print(f"wrote {args.out}/ablation.csv, ablation.json, ablation_heatmaps.png "
          f"({time.perf_counter() - t0:.0f} s for {trained} new cell(s))")


def heatmap_figure(table):
    """Heatmaps of every metric that has values, the paper's and the official code's cells outlined."""
    from harness.plots import ablation_heatmaps
    p = table[0]
    shown = [(k, label) for k, label in METRICS if np.isfinite([r.get(k, np.nan) for r in table]).any()]
    return ablation_heatmaps(table, shown, marks={"paper (0.40, 0.80)": PAPER_CELL, "code (0.45, 0.80)": CODE_CELL},
                             title=f"MagFace (l_m, u_m) ablation, λ_g={p['lambda_g']}, [l_a, u_a]=[{p['l_a']}, "
                                   f"{p['u_a']}], s={p['s']}")


def write_table(out, table):
    write_csv(os.path.join(out, "ablation.csv"), table)
    atomic_json(os.path.join(out, "ablation.json"), table)


def print_table(table):
    print(f"{'l_m':>6}{'u_m':>6}{'accuracy':>11}{'TAR@1e-2':>10}{'rho(mag,q)':>12}{'ERC area':>10}{'seconds':>9}")
    for r in table:
        print(f"{r['l_m']:>6.2f}{r['u_m']:>6.2f}{100 * r['accuracy']:>10.2f}%{100 * r.get('tar_far_0.01', np.nan):>9.2f}%"
              f"{r['spearman_rho']:>+12.3f}{r['erc_area']:>10.4f}{r['seconds']:>9.0f}")


if __name__ == "__main__":
    main()
