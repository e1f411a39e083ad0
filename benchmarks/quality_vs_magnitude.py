"""Is the feature magnitude a quality score? Train MagFace and the baselines on the same harness and data,
then draw the paper's quality figures from the stored arrays.

Figures (in OUT and figures/): magnitude vs ground-truth quality per head; MagFace magnitude histograms per
quality quartile; evaluation images ordered by MagFace magnitude; magnitude vs target cosine in the last
training batch (Fig. 3); error-versus-reject curves on MagFace's scores with pairs ranked by MagFace's
magnitude, ArcFace's and AdaFace's norms, the ground-truth quality (the ideal) and at random.
The four runs are the sweep spec configs/sweeps/quality_vs_magnitude.toml (harness.sweep: reused when finished,
never deleted by another configuration). Tables: OUT/quality_vs_magnitude.csv (one row per run) and OUT/erc.csv.

    python benchmarks/quality_vs_magnitude.py            # 4 heads on the CPU default, about 10 minutes
    python benchmarks/quality_vs_magnitude.py --quick    # smaller data and model, about 3 minutes
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from harness import metrics
from harness.cli import add_output_args, add_sweep_args, benchmark_spec, run_benchmark_sweep
from harness.config import RunConfig
from harness.data_source import synthetic_faces
from harness.diagnostics import optimum_curve
from harness.evaluate import load_eval
from harness.plots import (erc_curves, magnitude_histograms, magnitude_vs_cosine, magnitude_vs_quality, publish_figure,
                           sorted_image_grid)
from harness.runstate import atomic_json
from harness.sweep import write_csv

SPEC = "configs/sweeps/quality_vs_magnitude.toml"
ERC_FMR = 1e-2   # 1e-3 leaves only a handful of impostor pairs above the threshold on the built-in pairs
PROTOCOLS = {"recomputed": "official MagFace ERC: threshold recomputed after each discard step",
             "fixed": "ISO/IEC 29794-1 EDC: threshold fixed, mated pairs discarded"}


def load_results(out):
    """Everything the figures need, from the runs stored under OUT (the first seed of each head): per head the
    evaluation arrays, accuracy, rho and last training-batch dump; ERC curves on MagFace's scores; the rows."""
    path = os.path.join(out, "quality_vs_magnitude.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results in {out}; run python benchmarks/quality_vs_magnitude.py first")
    with open(path) as f:
        stored = json.load(f)["runs"]
    runs = {}
    for r in stored:
        runs.setdefault(r["head"], r)
    ev = {h: load_eval(r["run"]) for h, r in runs.items()}
    quality = ev["magface"]["quality"]
    rows, per_head, dumps = [], {}, {}
    for head, r in runs.items():
        agreement = metrics.quality_agreement(ev[head]["norms"], quality)
        per_head[head] = (ev[head]["norms"], quality, agreement["spearman_rho"])
        rows.append({"head": head, "seed": r["seed"], "accuracy": r["accuracy"],
                     "spearman_rho": agreement["spearman_rho"], "mean_norm": float(ev[head]["norms"].mean())})
        last = sorted(os.listdir(os.path.join(r["run"], "dumps")))[-1]
        with np.load(os.path.join(r["run"], "dumps", last)) as z:
            dump = {k: z[k] for k in z.files}
        with open(os.path.join(r["run"], "config.json")) as f:
            cfg = RunConfig.from_dict(json.load(f))
        dumps[head] = (dump["norms"], dump["cos_target"], optimum_curve(r["run"], cfg, dump))
    mag = ev["magface"]
    scores, issame = mag.get("quality_scores", mag["scores"]), mag["issame"]   # unflipped unless eval.flip_for_quality
    pair_q = lambda n: np.minimum(n[mag["left"]], n[mag["right"]])  # noqa: E731
    estimates = {"MagFace magnitude": pair_q(mag["norms"]), "ArcFace norm": pair_q(ev["arcface"]["norms"]),
                 "AdaFace norm": pair_q(ev["adaface"]["norms"]), "ground-truth quality (ideal)": mag["pair_quality_gt"],
                 "random": np.random.default_rng(0).random(len(scores))}
    curves, erc_rows = {title: {} for title in PROTOCOLS.values()}, []
    for name, q in estimates.items():
        row = {"quality estimate": name, "scores": "MagFace", "fmr": ERC_FMR}
        for protocol, title in PROTOCOLS.items():
            c = metrics.error_versus_discard(scores, issame, q, fmr=ERC_FMR, threshold=protocol)
            curves[title][name] = (c["fractions"], c["fnmr"])
            row["erc_area_magface" if protocol == "recomputed" else "edc_area_iso"] = c["area"]
            if protocol == "fixed":
                row["edc_pauc_20"] = c["pauc"][0.2]
        erc_rows.append(row)
    return {"per_head": per_head, "magface_norms": mag["norms"], "quality": quality, "dumps": dumps,
            "erc_curves": curves, "rows": rows, "erc_rows": erc_rows,
            "config": os.path.join(runs["magface"]["run"], "config.json")}


def faces_of(res):
    """The synthetic data set the runs were evaluated on (from the cache: seconds)."""
    with open(res["config"]) as f:
        return synthetic_faces(RunConfig.from_dict(json.load(f)))


def erc_figure(res):
    return erc_curves(res["erc_curves"], ERC_FMR, "Error versus discard on MagFace's scores (no flip), built-in pairs")


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
    add_sweep_args(ap, SPEC)
    add_output_args(ap, "quality_vs_magnitude")
    args = ap.parse_args(argv)
    if args.data:
        raise SystemExit("error: this benchmark needs ground-truth quality, i.e. the built-in synthetic data "
                         "(no --data)")
    spec = benchmark_spec(args, SPEC)
    result = run_benchmark_sweep(args, spec, describe=lambda r: f"{r['head']} acc {r['accuracy']:.3f}")
    if result is None:   # --dry-run or --prune
        return
    if result.runs[0].cfg.data.source != "synthetic":
        raise SystemExit("error: this benchmark needs ground-truth quality, i.e. the built-in synthetic data")
    res = load_results(result.out)
    for name, fig in quality_figures(res, faces_of(res)).items():
        publish_figure(fig, result.out, name, args.figures, args.quick)
    write_csv(os.path.join(result.out, "erc.csv"), res["erc_rows"])
    atomic_json(os.path.join(result.out, "erc.json"), res["erc_rows"])
    print_tables(res)
    print(f"figures and tables in {result.out}")


def print_tables(res):
    print(f"{'head':<10}{'accuracy':>10}{'rho(|f|, quality)':>20}{'mean |f|':>10}")
    for r in res["rows"]:
        print(f"{r['head']:<10}{100 * r['accuracy']:>9.2f}%{r['spearman_rho']:>+20.3f}{r['mean_norm']:>10.2f}")
    print(f"Error versus discard at FMR={ERC_FMR:g} on MagFace's scores (lower is better):")
    print(f"  {'quality estimate':<32}{'ERC area (MagFace)':>20}{'EDC area (ISO)':>16}{'EDC pAUC20 (ISO)':>18}")
    for r in res["erc_rows"]:
        fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"  # noqa: E731
        print(f"  {r['quality estimate']:<32}{fmt(r['erc_area_magface']):>20}{fmt(r['edc_area_iso']):>16}"
              f"{fmt(r['edc_pauc_20']):>18}")


if __name__ == "__main__":
    main()
