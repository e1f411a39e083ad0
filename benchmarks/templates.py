"""MagFace+ (paper Table 2): does weighting a template's images by their magnitude beat plain averaging?

An IJB-format release is written from the built-in data's evaluation images (harness.data.ijb_writer: loose crops
under random similarity transforms with their five landmarks; each unseen identity's images split at random (seeded)
into two templates of media of one to three images; every template pair a 1:1 pair) and each head of the quality
benchmark (trained first when missing) is evaluated on it by the suite's IJB protocol (harness.measures.ijb:
alignment to the network's input size, then the template pooling of named modes). Weightings, as modes: plain mean of
unit features
N0D0F0; magnitude-weighted MagFace+ (N1D0F0: sum_i a_i u_i; for the baselines their own norm); ground-truth-quality
weighted N0D1F0 (the writer puts the ground-truth quality in the detector-score column: the ideal). TAR@FAR (the
conservative rule: largest FPR <= target) with 95 % intervals over identity resamples; each weighting paired with
the plain mean on the same resamples.

    python benchmarks/templates.py              # on results/quality_vs_magnitude (run that benchmark first)
    python benchmarks/templates.py --quick      # on results/quality_vs_magnitude_quick
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
    dry_run,
    output_dir,
    publish_output,
)
from harness.bench_cli import load_rows as cli_load_rows
from harness.checkpoint_io import load_checkpoint
from harness.data.ijb import IJBRelease, read_release
from harness.data.ijb_writer import write_ijb
from harness.evaluation import ijb_eval
from harness.files import atomic_json
from harness.measures import ijb, metrics
from harness.measures.stats import interval_verdict
from harness.plots import PALETTE, publish_figure
from harness.source import synthetic_faces
from harness.sweeps.tables import write_csv

WEIGHTINGS = {"mean": "N0D0F0", "magnitude": "MagFace+", "ground_truth": "N0D1F0"}   # weighting -> IJB mode
FARS = (1e-3, 1e-2)


def write_release(run: str, out: str) -> IJBRelease:
    """The IJB-format release of a run's evaluation images (the same for every head of one data set)."""
    cfg = load_checkpoint(os.path.join(run, "checkpoints", "final.pt"))["config_obj"]
    faces = synthetic_faces(cfg)
    folder = os.path.join(out, f"ijb-{cfg.data.synthetic.key()}")   # one release per data set: never a stale one
    if not os.path.isdir(os.path.join(folder, "IJBC")):
        quality = np.clip(faces.eval.quality, 1e-3, 1)   # the detector-score column: the ideal weighting (D1)
        write_ijb(folder, faces.eval.images, faces.eval.identity, quality)
    return read_release(folder)


def check_one_data_set(folders: dict) -> None:
    """Every head must have been evaluated on the same built-in data (one release serves them all)."""
    keys = {head: load_checkpoint(os.path.join(f, "checkpoints", "final.pt"))["config_obj"].data.synthetic.key()
            for head, f in folders.items()}
    if len(set(keys.values())) > 1:
        raise SystemExit(f"error: the quality runs use different data sets ({keys}); one release needs one")


def score_head(release: IJBRelease, plain: np.ndarray, flipped: np.ndarray) -> list:
    """One row per weighting: TAR@FAR with identity intervals, and its difference to the plain mean."""
    grouping = ijb.Grouping.of(release.templates, release.medias)
    left = ijb.template_rows(grouping.template_ids, release.pairs[:, 0], "pairs")
    right = ijb.template_rows(grouping.template_ids, release.pairs[:, 1], "pairs")
    issame = release.labels
    pair_ids = ijb_eval.pair_subjects(release, release.pairs)
    scores = {}
    for w, mode in WEIGHTINGS.items():
        pooled = ijb.pool_templates(plain, flipped, release.detector, ijb.Mode.parse(mode), grouping)
        scores[w] = ijb.pair_scores(pooled, left, right).astype(np.float64)
    rows = []
    for w, mode in WEIGHTINGS.items():
        row = {"weighting": w, "mode": ijb.Mode.parse(mode).name, "far_rule": "conservative",
               "templates": int(len(grouping.template_ids)), "genuine_pairs": int(issame.sum()),
               "impostor_pairs": int((~issame).sum())}
        for far in FARS:
            key = f"tar_far_{far:g}"
            tar = lambda s, i, far=far: metrics.tar_at_far(s[i], issame[i], fars=(far,))[far]  # noqa: E731
            row[key] = tar(scores[w], slice(None))
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = metrics.identity_bootstrap(
                pair_ids, lambda i, tar=tar, w=w: tar(scores[w], i))
            if w != "mean":
                def paired(i, tar=tar, w=w):
                    return tar(scores[w], i) - tar(scores["mean"], i)
                low, high = metrics.identity_bootstrap(pair_ids, paired)
                row.update({f"{key}_diff_vs_mean": row[key] - tar(scores["mean"], slice(None)),
                            f"{key}_diff_ci_low": low, f"{key}_diff_ci_high": high,
                            f"{key}_verdict": interval_verdict(low, high, "better than plain averaging",
                                                               "worse than plain averaging")})
        rows.append(row)
    return rows


def print_table(rows: list) -> None:
    k = "tar_far_0.001"
    num = lambda v, f=".4f": "n/a" if v is None or v != v else f"{v:{f}}"  # noqa: E731   (too few impostor pairs)
    print(f"{'head':<10}{'weighting':<14}{'TAR@FAR=1e-3 [95% CI]':>28}{'minus mean [95% CI]':>30}  verdict")
    for r in rows:
        diff = (f"{num(r[k + '_diff_vs_mean'], '+.4f')} [{num(r[k + '_diff_ci_low'], '+.4f')}, "
                f"{num(r[k + '_diff_ci_high'], '+.4f')}]" if k + "_diff_vs_mean" in r else "")
        print(f"{r['head']:<10}{r['weighting']:<14}{num(r[k]):>10} [{num(r[k + '_ci_low'])}, {num(r[k + '_ci_high'])}]"
              f"{diff:>32}  {r.get(k + '_verdict', '')}")


def load_rows(out: str) -> list:
    return cli_load_rows(out, "templates.json", "python benchmarks/templates.py")


# --- figures ---------------------------------------------------------------------------------------------------
def templates_figure(rows: list, far: float = 1e-3):
    """TAR at one FAR per head for each template weighting, with 95 % intervals over identity resamples."""
    key = f"tar_far_{far:g}"
    heads = list(dict.fromkeys(r["head"] for r in rows))
    weightings = list(dict.fromkeys(r["weighting"] for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.3), constrained_layout=True)
    width = 0.8 / len(weightings)
    for i, w in enumerate(weightings):
        by_head = {r["head"]: r for r in rows if r["weighting"] == w}
        x = np.arange(len(heads)) + (i - (len(weightings) - 1) / 2) * width
        tar = np.array([by_head[h][key] for h in heads], float)
        low = np.array([by_head[h][f"{key}_ci_low"] for h in heads], float)
        high = np.array([by_head[h][f"{key}_ci_high"] for h in heads], float)
        ax.bar(x, tar, width, yerr=[tar - low, high - tar], capsize=3, color=PALETTE[i % len(PALETTE)],
               label={"mean": "plain mean", "magnitude": "magnitude-weighted (MagFace+)",
                      "ground_truth": "ground-truth-quality-weighted"}.get(w, w))
    ax.set_xticks(np.arange(len(heads)), heads)
    ax.set_xlabel("head")
    ax.set_ylabel(f"TAR @ FAR = {far:g} (95 % CI over identities)")
    ax.set_title("Template aggregation on unseen identities (two templates per identity)", fontsize=10)
    ax.set_ylim(max(0.0, float(np.nanmin([r[f"{key}_ci_low"] or 0 for r in rows])) - 0.05), 1.0)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=len(weightings), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    quality.add_runs_args(ap)
    add_output_args(ap, "templates")
    add_publish_args(ap)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if args.publish and args.quick:
        raise SystemExit("error: --publish publishes the full benchmark, not its --quick variant")
    if dry_run(args):
        print(quality.runs_plan(args))
        return
    runs, folders = quality.finished_runs(args)
    out = output_dir(args, "templates")
    release = write_release(next(iter(folders.values())), out)
    check_one_data_set(folders)
    rows = []
    for head, folder in folders.items():
        plain, flipped, _ = ijb_eval.features(release, folder, "run", None, os.path.join(out, "features", head), "cpu")
        rows += [{"head": head, **r} for r in score_head(release, plain, flipped)]
    atomic_json(os.path.join(out, "templates.json"), {"runs": runs, "rows": rows})
    write_csv(os.path.join(out, "templates.csv"), rows)
    print_table(rows)
    publish_figure(templates_figure(rows), out, "templates.png", args.figures, args.quick)
    print(f"wrote {out}/templates.json, templates.csv, templates.png")
    publish_output(args, out)


if __name__ == "__main__":
    main()
