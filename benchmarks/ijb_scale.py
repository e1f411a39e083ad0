"""IJB-C-sized scoring from cached features: pooling, 1:1 scores of every pair, the exact ROC and TAR at FAR under
both rules, on random features of the release's size (469,375 images, 23,124 templates, 15,658,489 pairs, 512-d).
Prints the time of each step and the memory the protocol needed beyond the cached features (tracemalloc's peak:
numpy's arrays are traced), and the process's peak resident memory; no embedding (that is the network's cost).

    python benchmarks/ijb_scale.py                 # full IJB-C size (target: < 60 s and < 2 GB on 2 cores)
    python benchmarks/ijb_scale.py --scale 0.01    # a smoke test
    python benchmarks/ijb_scale.py --publish       # results/published/ijb_scale (README's numbers)
"""
from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

from harness.bench_cli import add_dry_run, add_output_args, add_publish_args, dry_run, output_dir, publish_output
from harness.files import atomic_json
from harness.measures import ijb

IJBC = {"images": 469_375, "templates": 23_124, "pairs": 15_658_489, "genuine": 19_557, "dim": 512}


def random_release(scale: float, seed: int = 0) -> dict:
    """Random unit-ish features with IJB-C's counts (times `scale`): images spread over templates, media of 1-10
    images, pairs drawn at random with IJB-C's share of genuine ones."""
    rng = np.random.default_rng(seed)
    n, t, p = (max(10, int(IJBC[k] * scale)) for k in ("images", "templates", "pairs"))
    templates = rng.integers(0, t, n)
    medias = templates * 100 + rng.integers(0, 10, n)
    features = rng.standard_normal((n, IJBC["dim"]), dtype=np.float32)
    pairs = rng.integers(0, t, (p, 2))
    labels = np.zeros(p, bool)
    labels[rng.choice(p, max(1, int(IJBC["genuine"] * scale)), replace=False)] = True
    return {"features": features, "templates": templates, "medias": medias, "pairs": pairs, "labels": labels,
            "detector": rng.uniform(0.5, 1, n).astype(np.float32)}


def protocol(r: dict, mode: ijb.Mode) -> dict:
    """The timed protocol of one mode: {step: seconds} and the 1:1 metrics."""
    times, t0 = {}, time.perf_counter()
    grouping = ijb.Grouping.of(r["templates"], r["medias"])
    pooled = ijb.pool_templates(r["features"], None, r["detector"], mode, grouping)
    times["pool"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    left = ijb.template_rows(grouping.template_ids, r["pairs"][:, 0], "pairs")
    right = ijb.template_rows(grouping.template_ids, r["pairs"][:, 1], "pairs")
    scores = ijb.pair_scores(pooled, left, right)
    times["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics, _ = ijb.verification(scores, r["labels"])
    times["roc"] = time.perf_counter() - t0
    return {"seconds": times, "metrics": metrics}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C's size (default 1: full size)")
    ap.add_argument("--mode", default="N0D1F0", help="protocol mode (default N0D1F0: every normalisation step)")
    add_output_args(ap, "ijb_scale", figures=False)
    add_publish_args(ap)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if not 0 < args.scale <= 1:
        raise SystemExit(f"error: --scale {args.scale}: expected a fraction in (0, 1]")
    if args.scale != 1 and args.publish:
        raise SystemExit("error: --publish publishes the full-size measurement, not --scale < 1")
    try:
        mode = ijb.Mode.parse(args.mode)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if dry_run(args):
        return None
    release = random_release(args.scale)
    inputs = sum(v.nbytes for v in release.values())
    tracemalloc.start()
    result = protocol(release, mode)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    s = result["seconds"]
    total = sum(s.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux -> GiB
    print(f"IJB-C x {args.scale:g}: {len(release['templates']):,} images, {release['pairs'].shape[0]:,} pairs, "
          f"mode {mode.name}")
    print(f"pooling {s['pool']:.1f} s, scoring {s['score']:.1f} s, ROC + TAR@FAR {s['roc']:.1f} s: {total:.1f} s "
          f"in all (target < 60 s at full size)")
    print(f"memory beyond the {inputs / 2**30:.2f} GiB of cached features: peak {peak / 2**30:.2f} GiB "
          f"(target < 2 GB); process peak resident {rss:.2f} GiB")
    tar = result["metrics"]["tar_at_far_nearest"]
    print("random features (chance level): TAR@FAR 1e-4 " + f"{tar['0.0001']:.4f}, AUC {result['metrics']['auc']:.3f}")
    rows = [{"step": k, "seconds": v} for k, v in s.items()]
    rows.append({"step": "total", "seconds": total, "peak_bytes": peak, "rss_bytes": rss * 2**30,
                 "images": len(release["templates"]), "pairs": int(release["pairs"].shape[0]),
                 "templates": int(len(np.unique(release["templates"]))), "cpus": os.cpu_count()})
    out = output_dir(args, "ijb_scale")
    atomic_json(os.path.join(out, "ijb_scale.json"), {"args": vars(args), "mode": mode.name, "rows": rows})
    print(f"wrote {out}/ijb_scale.json")
    publish_output(args, out)
    return {"seconds": s, "total": total, "peak_gib": peak / 2**30, "rss_gib": rss}


if __name__ == "__main__":
    main()
