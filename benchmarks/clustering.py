"""Do MagFace's features cluster identities better than the baselines', and does discarding low-magnitude images help?
(paper Table 3; its learned L-GCN clustering is not reproduced.)

Takes the finished runs of the quality benchmark (MagFace, ArcFace, AdaFace, Softmax on the CPU default; trained
first through the sweep runner when the folder holds none), embeds the evaluation images (unseen identities) with
each, and clusters the unit embeddings with k-means and average-linkage agglomerative clustering (k = the number of
identities) and DBSCAN (eps: the cosine distance within which 0.1 % of all impostor image pairs of the clustered set
fall, the FAR 1e-3 operating point; at 1 % it chains every identity together). Scores: BCubed precision / recall / F
and NMI; a 95 % interval for F by resampling identities (the clustering fixed), and each head's F minus MagFace's on
the same resamples. Then k-means again after discarding each head's lowest-magnitude images, and after discarding as
many images at random (the control: a smaller set is easier), with the difference of the two and its interval on the
same identity resamples.

    python benchmarks/clustering.py             # on results/quality_vs_magnitude (run that benchmark first)
    python benchmarks/clustering.py --quick     # on results/quality_vs_magnitude_quick
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # run as a script: the repo root, for the benchmarks package
import matplotlib.pyplot as plt

from benchmarks import quality_vs_magnitude as quality  # its runs are the ones analysed here
from harness.bench_cli import (
    add_dry_run,
    add_output_args,
    add_publish_args,
    comma_list,
    dry_run,
    output_dir,
    publish_output,
)
from harness.bench_cli import load_rows as cli_load_rows
from harness.evaluation.evaluate import run_embeddings
from harness.files import atomic_json
from harness.measures.clustering import METHODS, bcubed, bcubed_items, cluster, nmi
from harness.measures.stats import interval_verdict
from harness.plots import PALETTE, publish_figure
from harness.sweeps.tables import write_csv

N_BOOT = 200
IMPOSTOR_SHARE = 1e-3   # DBSCAN's eps: the cosine distance within which this share of impostor pairs falls


def dbscan_eps(unit: np.ndarray, identity: np.ndarray) -> float:
    """The cosine distance within which IMPOSTOR_SHARE of all impostor image pairs of the set fall (all pairs, not
    the few thousand evaluation pairs: at 0.1 % those would put eps on a handful of order statistics)."""
    left, right = np.triu_indices(len(unit), k=1)
    impostor = identity[left] != identity[right]
    distance = 1 - np.sum(unit[left[impostor]] * unit[right[impostor]], axis=1)
    return float(np.quantile(distance, IMPOSTOR_SHARE))


def identity_resamples(identity: np.ndarray, n_boot: int, seed: int = 0) -> list:
    """Image index sets of identity resamples (identities drawn with replacement, all their images kept)."""
    ids = np.unique(identity)
    members = {i: np.flatnonzero(identity == i) for i in ids}
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[i] for i in rng.choice(ids, len(ids))]) for _ in range(n_boot)]


def score_heads(data: dict, fractions, n_boot: int = N_BOOT) -> list:
    """Rows (head, method, discarded share) with BCubed, NMI, the F interval and F minus MagFace's, paired."""
    identity = data["magface"]["identity"]
    different = [h for h, d in data.items() if not np.array_equal(d["identity"], identity)]
    if different:
        raise ValueError(f"runs {different} were evaluated on other images than MagFace's; cluster the same set")
    resamples = identity_resamples(identity, n_boot)
    rows, f_boot = [], {}
    for head, d in data.items():
        norms = np.linalg.norm(d["embeddings"], axis=1)
        unit = d["embeddings"] / norms[:, None]
        eps = dbscan_eps(unit, identity)
        for method in METHODS:
            pred = cluster(unit, method, len(np.unique(identity)), eps)
            boot = np.array([bcubed(identity, pred, items)["f"] for items in resamples])
            f_boot[head, method] = boot
            rows.append({"head": head, "method": method, "discard": 0.0, "discard_by": "none",
                         **_scores(identity, pred), "eps": eps,
                         "bcubed_f_ci_low": float(np.quantile(boot, 0.025)),
                         "bcubed_f_ci_high": float(np.quantile(boot, 0.975))})
        rng = np.random.default_rng(0)
        for share in (f for f in fractions if f > 0):
            lowest = norms <= np.quantile(norms, share)
            at_random = np.zeros(len(norms), bool)
            at_random[rng.choice(len(norms), int(lowest.sum()), replace=False)] = True
            clusterings = {}
            for by, dropped in (("magnitude", lowest), ("random", at_random)):
                kept_ids = identity[~dropped]
                pred = cluster(unit[~dropped], "kmeans", len(np.unique(kept_ids)))
                clusterings[by] = (dropped, pred)
                rows.append({"head": head, "method": "kmeans", "discard": float(share), "discard_by": by,
                             **_scores(kept_ids, pred)})
            rows[-2].update(discard_gain(identity, clusterings, resamples))
    for r in rows:
        if r["discard"] == 0 and r["head"] != "magface":
            diff = f_boot[r["head"], r["method"]] - f_boot["magface", r["method"]]
            low, high = (float(np.quantile(diff, q)) for q in (0.025, 0.975))
            r.update(f_diff_vs_magface=r["bcubed_f"] - next(x["bcubed_f"] for x in rows if x["head"] == "magface"
                                                             and x["method"] == r["method"] and x["discard"] == 0),
                     f_diff_ci_low=low, f_diff_ci_high=high,
                     f_verdict=interval_verdict(low, high, "better than MagFace", "worse than MagFace"))
    return rows


def discard_gain(identity: np.ndarray, clusterings: dict, resamples: list) -> dict:
    """k-means BCubed F after discarding the lowest-magnitude images minus after discarding as many at random, with
    a 95 % interval from the identity resamples (each clustering fixed, scored on the resampled identities' kept
    images). The random discard is one seeded draw: its own draw-to-draw spread is not in the interval."""
    per_image = {}
    for by, (dropped, pred) in clusterings.items():
        position = np.cumsum(~dropped) - 1            # image index -> index among the kept images
        per_image[by] = (dropped, position, *bcubed_items(identity[~dropped], pred))

    def f(by, items):
        dropped, position, prec, rec = per_image[by]
        kept = position[items[~dropped[items]]]
        p, r = prec[kept].mean(), rec[kept].mean()
        return 2 * p * r / (p + r) if p + r else 0.0
    everything = np.arange(len(identity))
    boot = np.array([f("magnitude", items) - f("random", items) for items in resamples])
    low, high = (float(np.quantile(boot, q)) for q in (0.025, 0.975))
    return {"gain_vs_random": float(f("magnitude", everything) - f("random", everything)), "gain_ci_low": low,
            "gain_ci_high": high, "gain_verdict": interval_verdict(low, high, "better than a random discard",
                                                                   "worse than a random discard")}


def _scores(identity, pred) -> dict:
    b = bcubed(identity, pred)
    return {"bcubed_precision": b["precision"], "bcubed_recall": b["recall"], "bcubed_f": b["f"],
            "nmi": nmi(identity, pred), "clusters": int(len(np.unique(pred[pred >= 0]))) + int(np.sum(pred < 0)),
            "images": int(len(pred))}


def print_table(rows: list) -> None:
    print(f"{'head':<10}{'method':<15}{'discard':>8}{'by':>10}{'BCubed P':>10}{'R':>7}{'F [95% CI]':>24}{'NMI':>7}"
          f"{'F - MagFace [95% CI]':>34}")
    for r in rows:
        ci = f" [{r['bcubed_f_ci_low']:.3f}, {r['bcubed_f_ci_high']:.3f}]" if "bcubed_f_ci_low" in r else ""
        diff = (f"{r['f_diff_vs_magface']:+.3f} [{r['f_diff_ci_low']:+.3f}, {r['f_diff_ci_high']:+.3f}] "
                f"{r['f_verdict']}" if "f_verdict" in r else
                f"minus random: {r['gain_vs_random']:+.3f} [{r['gain_ci_low']:+.3f}, {r['gain_ci_high']:+.3f}] "
                f"{r['gain_verdict']}" if "gain_verdict" in r else "")
        print(f"{r['head']:<10}{r['method']:<15}{r['discard']:>8.0%}{r['discard_by']:>10}{r['bcubed_precision']:>10.3f}"
              f"{r['bcubed_recall']:>7.3f}{r['bcubed_f']:>8.3f}{ci:<16}{r['nmi']:>7.3f}  {diff}")


def load_rows(out: str) -> list:
    return cli_load_rows(out, "clustering.json", "python benchmarks/clustering.py")


# --- figures ---------------------------------------------------------------------------------------------------
def clustering_figure(rows: list):
    """BCubed F per head and clustering method with its interval (left); k-means BCubed F after discarding each
    head's lowest-magnitude images (right)."""
    heads = list(dict.fromkeys(r["head"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["discard"] == 0))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.0), constrained_layout=True)
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
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)   # off the bars
    right.set_xlabel("images discarded (%): lowest magnitudes (solid) or at random (dotted)")
    right.set_ylabel("BCubed F, k-means")
    right.set_title("Discarding low-magnitude images before clustering", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)   # off the curves
    return fig



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    quality.add_runs_args(ap)
    ap.add_argument("--fractions", type=comma_list(float), default=[0.0, 0.1, 0.2, 0.3],
                    help="shares of lowest-magnitude images discarded before k-means")
    add_output_args(ap, "clustering")
    add_publish_args(ap)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if any(not 0 <= f < 1 for f in args.fractions):
        raise SystemExit(f"error: --fractions {args.fractions}: each must be in [0, 1)")
    if args.publish and args.quick:
        raise SystemExit("error: --publish publishes the full benchmark, not its --quick variant")
    if dry_run(args):
        print(quality.runs_plan(args))
        return
    runs, folders = quality.finished_runs(args)
    data = {head: run_embeddings(folder) for head, folder in folders.items()}
    rows = score_heads(data, args.fractions)
    out = output_dir(args, "clustering")
    atomic_json(os.path.join(out, "clustering.json"), {"runs": runs, "fractions": args.fractions, "rows": rows})
    write_csv(os.path.join(out, "clustering.csv"), rows)
    print_table(rows)
    publish_figure(clustering_figure(rows), out, "clustering.png", args.figures, args.quick)
    print(f"wrote {out}/clustering.json, clustering.csv, clustering.png")
    publish_output(args, out)


if __name__ == "__main__":
    main()
