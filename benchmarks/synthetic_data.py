"""Generate the built-in synthetic data set, time generation and cached loading, and draw a quality grid.

    python benchmarks/synthetic_data.py                       # 50,000 images at 64 px (the speed target)
    python benchmarks/synthetic_data.py --images 2000 --export /tmp/synth_insightface
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from harness.bench_cli import add_dry_run, add_output_args, dry_run, output_dir
from harness.data import SyntheticConfig, export_insightface, load_or_generate
from harness.files import atomic_json
from harness.plots import publish_figure, sorted_image_grid


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=50_000, help="total images (train + eval)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--export", metavar="DIR", help="also write insightface train.rec/.idx/property + pairs .bin here")
    add_output_args(ap, "synthetic_data")
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if dry_run(args):
        return
    per_id = 40
    eval_ids = max(20, args.images // 10 // 10)
    train_ids = max(2, (args.images - eval_ids * 10) // per_id)
    per_fold = eval_ids // 10                 # identities in the smallest of the 10 folds
    genuine = per_fold * math.comb(10, 2)
    distinct = min(genuine, math.comb(per_fold * 10, 2) - genuine)
    cfg = SyntheticConfig(size=args.size, train_identities=train_ids, train_images_per_identity=per_id,
                          eval_identities=eval_ids, eval_images_per_identity=10,
                          pairs_per_fold=min(600, 2 * distinct))   # small --images: as many distinct pairs as exist
    cache = tempfile.mkdtemp(prefix="synthetic-bench-")
    try:
        t0 = time.perf_counter()
        faces = load_or_generate(cfg, cache_dir=cache)
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_or_generate(cfg, cache_dir=cache)
        load_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    n = len(faces.train) + len(faces.eval)
    print(f"synthetic faces: {n:,} images at {cfg.size} px ({len(faces.train):,} train / {train_ids} identities, "
          f"{len(faces.eval):,} eval / {eval_ids} identities, {len(faces.pairs.issame):,} pairs), "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"{'step':<28}{'seconds':>9}{'images/s':>11}")
    print(f"{'generate + write cache':<28}{generate_s:>9.1f}{n / generate_s:>11.0f}")
    print(f"{'load from cache':<28}{load_s:>9.2f}{n / load_s:>11.0f}")
    q = faces.train.quality
    print(f"train quality: median {np.median(q):.2f}, {np.mean(q == 1):.0%} clean, {np.mean(q < 0.3):.0%} below 0.3")
    out = output_dir(args, "synthetic_data")
    atomic_json(os.path.join(out, "synthetic_data.json"), {
        "args": vars(args), "images": n, "size": cfg.size, "generate_s": generate_s, "load_s": load_s,
        "train_quality_median": float(np.median(q)), "clean_share": float(np.mean(q == 1))})
    grid = sorted_image_grid(faces.eval.images, faces.eval.quality, score_name="ground-truth quality",
                             title="Synthetic evaluation images ordered by ground-truth quality "
                                   "(low, top left, to high)")
    path = publish_figure(grid, out, "synthetic_quality_grid.png", args.figures)
    print(f"wrote {out}/synthetic_data.json, {path}{' (copied to ' + args.figures + ')' if args.figures else ''}")
    if args.export:
        info = export_insightface(faces, args.export)
        print(f"exported to {args.export}: {info}")


if __name__ == "__main__":
    main()
