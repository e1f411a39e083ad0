"""MagFace+ (paper Table 2): does weighting a template's images by their magnitude beat plain averaging?

IJB-style templates from the built-in data: each evaluation identity's images are split at random into two templates
of mixed quality (seeded); genuine pairs are the two templates of an identity, impostor pairs every two templates
of different identities. A template's feature is the mean of its unit embeddings (baseline), the magnitude-weighted
mean (MagFace+: sum of a_i * u_i) or the ground-truth-quality-weighted mean (the ideal); scores are cosines. Each head
of the quality benchmark (no training here), TAR@FAR with 95 % intervals over identity resamples, and each weighting
minus plain averaging on the same resamples.

    python benchmarks/templates.py              # on results/quality_vs_magnitude (run that benchmark first)
    python benchmarks/templates.py --quick      # on results/quality_vs_magnitude_quick
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from harness import metrics
from harness.evaluate import run_embeddings
from harness.cli import (add_dry_run, add_output_args, add_publish_args, add_quality_runs_args, dry_run, output_dir,
                         publish_output, quality_runs)
from harness.cli import load_rows as cli_load_rows
from harness.plots import publish_figure, templates_figure
from harness.runstate import atomic_json
from harness.stats import interval_verdict
from harness.sweep import write_csv

WEIGHTINGS = ("mean", "magnitude", "ground_truth")
FARS = (1e-3, 1e-2)


def split_templates(identity: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(template id per image, identity per template): each identity's images halved at random into two templates."""
    ids = np.unique(identity)
    rng = np.random.default_rng(seed)
    template = np.empty(len(identity), dtype=np.int64)
    for k, i in enumerate(ids):
        members = rng.permutation(np.flatnonzero(identity == i))
        if len(members) < 4:
            raise ValueError(f"identity {i} has {len(members)} images; two templates need at least 2 images each")
        half = len(members) // 2
        template[members[:half]], template[members[half:]] = 2 * k, 2 * k + 1
    return template, np.repeat(ids, 2)


def aggregate(embeddings: np.ndarray, template: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per template: the weighted sum of its unit embeddings, normalised (the weights' scale does not matter)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    out = np.zeros((template.max() + 1, embeddings.shape[1]))
    np.add.at(out, template, unit * weights[:, None])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def template_pairs(owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, issame) over all template pairs."""
    left, right = np.triu_indices(len(owner), k=1)
    return left, right, owner[left] == owner[right]


def score_head(d: dict, quality: np.ndarray) -> list:
    template, owner = split_templates(d["identity"])
    left, right, issame = template_pairs(owner)
    pair_ids = np.stack([owner[left], owner[right]], axis=1)
    weights = {"mean": np.ones(len(template)), "magnitude": np.linalg.norm(d["embeddings"], axis=1),
               "ground_truth": quality}
    scores = {}
    for w in WEIGHTINGS:
        feats = aggregate(d["embeddings"], template, weights[w])
        scores[w] = np.sum(feats[left] * feats[right], axis=1)
    rows = []
    for w in WEIGHTINGS:
        row = {"weighting": w, "templates": int(template.max() + 1), "genuine_pairs": int(issame.sum()),
               "impostor_pairs": int((~issame).sum())}
        for far in FARS:
            key = f"tar_far_{far:g}"
            tar = lambda s, i: metrics.tar_at_far(s[i], issame[i], fars=(far,))[far]  # noqa: E731
            row[key] = tar(scores[w], slice(None))
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = metrics.identity_bootstrap(
                pair_ids, lambda i: tar(scores[w], i))
            if w != "mean":
                low, high = metrics.identity_bootstrap(pair_ids, lambda i: tar(scores[w], i) - tar(scores["mean"], i))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_quality_runs_args(ap)
    add_output_args(ap, "templates")
    add_publish_args(ap)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if args.publish and args.quick:
        raise SystemExit("error: --publish publishes the full benchmark, not its --quick variant")
    if dry_run(args):
        return
    runs, folders = quality_runs(args)
    rows = []
    for head, folder in folders.items():
        d = run_embeddings(folder)
        rows += [{"head": head, **r} for r in score_head(d, d["quality"])]
    out = output_dir(args, "templates")
    atomic_json(os.path.join(out, "templates.json"), {"runs": runs, "rows": rows})
    write_csv(os.path.join(out, "templates.csv"), rows)
    print_table(rows)
    publish_figure(templates_figure(rows), out, "templates.png", args.figures, args.quick)
    print(f"wrote {out}/templates.json, templates.csv, templates.png")
    publish_output(args, out)


if __name__ == "__main__":
    main()
