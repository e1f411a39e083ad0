"""Is the feature magnitude a quality score? Train MagFace and the baselines on the same harness and data,
then draw the paper's quality figures from the stored arrays.

Figures (in OUT and figures/): magnitude vs ground-truth quality per head; MagFace magnitude histograms per
quality quartile; evaluation images ordered by MagFace magnitude; magnitude vs target cosine in the last
training batch (Fig. 3); error-versus-reject curves on MagFace's scores with pairs ranked by MagFace's
magnitude, ArcFace's and AdaFace's norms, the ground-truth quality (the ideal) and at random.

    python benchmarks/quality_vs_magnitude.py            # 4 heads on the CPU default, about 10 minutes
    python benchmarks/quality_vs_magnitude.py --quick    # smaller data and model, about 3 minutes
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from harness import metrics
from harness.config import load_config
from harness.evaluate import load_eval, load_metrics
from harness.plots import (erc_curves, magnitude_histograms, magnitude_vs_cosine, magnitude_vs_quality, publish_figure,
                           sorted_image_grid)
from harness.runstate import atomic_json
from harness.sweep import prepare_run, write_csv

HEADS = {"magface": {}, "arcface": {"s": 32.0}, "adaface": {"s": 32.0}, "softmax": None}
ERC_FMR = 1e-2   # 1e-3 leaves only a handful of impostor pairs above the threshold on the built-in pairs


def head_config(args, head, params):
    cfg = load_config(args.config, list(args.set))
    if head != "magface":
        cfg.head.name = head
        cfg.head.params = dict(params or {})
    cfg.out = os.path.join(args.out, "runs", head)
    return cfg


def load_results(out):
    """Everything the figures need, from the stored run folders under OUT/runs: per head the evaluation arrays,
    accuracy, rho and last training-batch dump; ERC curves on MagFace's scores; the result rows."""
    runs = {h: os.path.join(out, "runs", h) for h in HEADS}
    missing = [d for d in runs.values() if not os.path.isfile(os.path.join(d, "eval", "metrics.json"))]
    if missing:
        raise FileNotFoundError(f"no finished runs in {missing}; run benchmarks/quality_vs_magnitude.py first")
    ev = {h: load_eval(d) for h, d in runs.items()}
    quality = ev["magface"]["quality"]
    rows, per_head, dumps = [], {}, {}
    for head, run in runs.items():
        agreement = metrics.quality_agreement(ev[head]["norms"], quality)
        acc = load_metrics(run)["sets"]["synthetic"]["accuracy"]
        per_head[head] = (ev[head]["norms"], quality, agreement["spearman_rho"])
        rows.append({"head": head, "accuracy": acc, "spearman_rho": agreement["spearman_rho"],
                     "mean_norm": float(ev[head]["norms"].mean())})
        last = sorted(os.listdir(os.path.join(run, "dumps")))[-1]
        with np.load(os.path.join(run, "dumps", last)) as z:
            dumps[head] = (z["norms"], z["cos_target"], z["per_sample_loss"])
    mag = ev["magface"]
    scores, issame = mag["scores"], mag["issame"]
    pair_q = lambda n: np.minimum(n[mag["left"]], n[mag["right"]])  # noqa: E731
    estimates = {"MagFace magnitude": pair_q(mag["norms"]), "ArcFace norm": pair_q(ev["arcface"]["norms"]),
                 "AdaFace norm": pair_q(ev["adaface"]["norms"]), "ground-truth quality (ideal)": mag["pair_quality_gt"],
                 "random": np.random.default_rng(0).random(len(scores))}
    curves = {}
    for name, q in estimates.items():
        erc = metrics.error_versus_reject(scores, issame, q, fmr=ERC_FMR)
        curves[name] = (erc["fractions"], erc["fnmr"])
        rows.append({"head": f"ERC on MagFace scores: {name}", "erc_area": erc["area"]})
    return {"per_head": per_head, "magface_norms": mag["norms"], "quality": quality, "dumps": dumps,
            "erc_curves": curves, "rows": rows, "config": os.path.join(runs["magface"], "config.json")}


def erc_figure(res):
    return erc_curves(res["erc_curves"], ERC_FMR, "Error-versus-reject on MagFace's scores, built-in pairs")


def quality_figures(res, faces):
    """The five figures, by file name; faces: the synthetic data set (its evaluation images)."""
    order_title = "Evaluation images ordered by MagFace magnitude (low, top left, to high); titles: magnitude"
    return {"qvm_magnitude_vs_quality.png": magnitude_vs_quality(res["per_head"]),
            "qvm_magface_histograms.png": magnitude_histograms(res["magface_norms"], res["quality"], "MagFace"),
            "qvm_images_by_magnitude.png": sorted_image_grid(faces.eval.images, res["magface_norms"],
                                                             title=order_title),
            "qvm_magnitude_vs_cosine.png": magnitude_vs_cosine(res["dumps"]),
            "qvm_erc.png": erc_figure(res)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="harness config (default configs/cpu_synthetic_magface.toml; --quick: "
                                      "configs/cpu_synthetic_quick.toml)")
    ap.add_argument("--set", action="append", default=[], help="harness override for every head")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="results/quality_vs_magnitude")
    ap.add_argument("--figures", default="figures", help="copy the PNGs here ('' to skip)")
    args = ap.parse_args(argv)
    from harness.data_source import synthetic_faces
    from harness.trainer import train
    if args.config is None:
        args.config = "configs/cpu_synthetic_quick.toml" if args.quick else "configs/cpu_synthetic_magface.toml"
    try:
        cfgs = {h: head_config(args, h, p) for h, p in HEADS.items()}
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    if cfgs["magface"].data.source != "synthetic":
        raise SystemExit("error: this benchmark needs ground-truth quality, i.e. the built-in synthetic data")
    faces = synthetic_faces(cfgs["magface"])
    for head, cfg in cfgs.items():
        if prepare_run(cfg, "eval/metrics.json") == "done":
            print(f"{head}: reusing {cfg.out}", flush=True)
        else:
            print(f"{head}: training ({cfg.train.epochs} epochs)", flush=True)
            train(cfg, faces=faces, quiet=not sys.stdout.isatty())
    res = load_results(args.out)
    os.makedirs(args.out, exist_ok=True)
    figs = quality_figures(res, faces)
    for name, fig in figs.items():
        publish_figure(fig, args.out, name, args.figures, args.quick)
    rows = res["rows"]
    write_csv(os.path.join(args.out, "quality_vs_magnitude.csv"), rows)
    atomic_json(os.path.join(args.out, "quality_vs_magnitude.json"), rows)
    print(f"{'head':<10}{'accuracy':>10}{'rho(|f|, quality)':>20}{'mean |f|':>10}")
    for r in rows[:len(HEADS)]:
        print(f"{r['head']:<10}{100 * r['accuracy']:>9.2f}%{r['spearman_rho']:>+20.3f}{r['mean_norm']:>10.2f}")
    print(f"ERC area at FMR={ERC_FMR:g} (MagFace scores; lower is better):")
    for r in rows[len(HEADS):]:
        print(f"  {r['head'].split(': ')[1]:<32}{r['erc_area']:.4f}")
    print(f"figures and tables in {args.out}")


if __name__ == "__main__":
    main()
