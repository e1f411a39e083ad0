"""A sweep's tables: one row per run, summaries over seeds, paired comparisons with family-corrected verdicts."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from harness.files import DamagedFile, atomic_json, read_json
from harness.locks import temporary_name
from harness.measures.stats import family_verdicts, mean_ci, paired_test
from harness.sweeps.expand import Run
from harness.sweeps.rows import metric_columns
from harness.sweeps.spec import SUMMARY_METRICS, SweepSpec, column_name
from harness.sweeps.workers import FAILED_FILE, RESULT_FILE


def result_row(run: Run, metrics: dict, seconds: float) -> dict:
    """The table row of a finished run: axis values, head, seed, recorded config values, metrics, time. What is
    stored as RUN/result.json is this row; the metric columns are always read again from RUN/eval/metrics.json
    (load_row), so a re-evaluated run shows its new evaluation."""
    row = describe_run(run)
    row.update(metric_columns(metrics))
    row.update(seconds=seconds, fingerprint=run.fingerprint, run=run.folder)
    return row


def describe_run(run: Run) -> dict:
    """The columns that say which run a row is: axis values, head, seed, recorded config values, head params."""
    cfg = run.cfg
    row = {column_name(a): v for a, v in run.axes.items()}
    row.setdefault("head", cfg.head.name)
    row.setdefault("seed", cfg.train.seed)
    row.update(run.columns)
    row.update(head_name=cfg.head.name, head_params=json.dumps(cfg.head.params, sort_keys=True))
    return row


def load_row(run: Run) -> dict:
    """A finished run's row: its stored description and time, with the metric columns of its current evaluation;
    a failed run's row: its description and the error in `failed`, no metrics."""
    failed = os.path.join(run.folder, FAILED_FILE)
    if os.path.isfile(failed):
        try:
            stored = read_json(failed, "failure record")
        except DamagedFile as exc:
            stored = {"error": str(exc), "seconds": None}
        return {**describe_run(run), "failed": stored.get("error"), "seconds": stored.get("seconds"),
                "fingerprint": run.fingerprint, "run": run.folder}
    stored = read_json(os.path.join(run.folder, RESULT_FILE), "result row")
    metrics = read_json(os.path.join(run.folder, "eval", "metrics.json"), "evaluation")
    return result_row(run, metrics, stored["seconds"])


LOWER_IS_BETTER = {"erc_area_magface", "edc_pauc_20"}


def summarise(rows: list, axes: list, metrics=SUMMARY_METRICS) -> list:
    """Per combination of the other axes: mean, sample std and 95 % t interval over seeds (empty without a seed
    axis)."""
    if "seed" not in axes:
        return []
    out = []
    for key, rs in _groups(rows, [column_name(a) for a in axes if a != "seed"]).items():
        s = dict(key)
        s["seeds"] = len(rs)
        for metric in metrics:
            values = [r.get(metric) for r in rs]
            mean, low, high = mean_ci(values)
            finite = [v for v in values if v is not None and np.isfinite(v)]
            s.update({f"{metric}_mean": mean, f"{metric}_std": float(np.std(finite, ddof=1)) if len(finite) > 1
                      else None, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        out.append(s)
    return out


def compare(rows: list, axes: list, reference: str, metrics=SUMMARY_METRICS, margins=None, name: str = "",
            variance: str = "") -> list:
    """Paired by seed, every head against `reference` within each combination of the other axes: the difference
    (head - reference, in the metric's units) with its 95 % t interval, the two-sided p and, where the metric has
    an equivalence margin, the TOST p; then per family (one metric in one combination of the other axes: every
    head against the reference) Holm-adjusted p-values and the verdict on them (harness.measures.stats.family_verdicts:
    better / worse / equivalent within +-margin / inconclusive with the effect 80 % power needed). `variance`
    says which sources of variance the replicates, and so the intervals, include."""
    if "seed" not in axes or "head" not in axes:
        return []
    margins = margins or {}
    others = [column_name(a) for a in axes if a not in ("seed", "head")]
    out = []
    for key, rs in _groups(rows, others).items():
        by_head = {}
        for r in rs:
            by_head.setdefault(r["head"], {})[r["seed"]] = r
        ref = by_head.get(reference, {})
        heads = [h for h in by_head if h != reference]
        for metric in metrics:
            tests = [_paired(by_head[h], ref, metric, margins.get(metric)) for h in heads]
            if not tests:
                continue
            where = ", ".join(f"{k} = {v}" for k, v in key)
            family = f"{name}: {metric}{f' ({where})' if where else ''}, {len(tests)} head(s) vs {reference}"
            for head, t in zip(heads, family_verdicts(tests, family), strict=True):
                out.append({**dict(key), "head": head, "metric": metric, **_oriented(t, metric, reference),
                            "variance": variance})
    return out


def _paired(runs: dict, ref: dict, metric: str, margin) -> dict:
    """paired_test of one head against the reference on one metric, higher taken as better (lower-is-better
    metrics negated)."""
    seeds = sorted(set(runs) & set(ref))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    a = [None if runs[s].get(metric) is None else sign * runs[s][metric] for s in seeds]
    b = [None if ref[s].get(metric) is None else sign * ref[s][metric] for s in seeds]
    return paired_test(a, b, margin)


def _oriented(t: dict, metric: str, reference: str) -> dict:
    """The columns of one comparison, the difference and its interval back in the metric's own direction."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    low, high = t["diff_ci_low"], t["diff_ci_high"]
    if sign < 0 and low is not None:
        low, high = -high, -low
    return {f"diff_vs_{reference}": None if t["diff"] is None else sign * t["diff"], "diff_ci_low": low,
            "diff_ci_high": high, "p": t["p"], "p_holm": t["p_holm"], "p_bh": t["p_bh"],
            "equivalence_margin": t["margin"], "p_equivalence": t["p_equivalence"],
            "p_equivalence_holm": t["p_equivalence_holm"], "verdict": t["verdict"], "detectable": t["detectable"],
            "seeds": t["n"], "family": t["family"], "family_size": t["family_size"]}


def replicate_variance(runs: list) -> str:
    """Which sources of variance the seed replicates include: the training seed always; the data instance only
    when the runs' synthetic data seeds differ between seeds."""
    data_seeds = {r.cfg.data.synthetic.seed for r in runs if r.cfg.data.source == "synthetic"}
    if len(data_seeds) > 1:
        return "training seed and data instance"
    only = f" (data.synthetic.seed = {next(iter(data_seeds))})" if data_seeds else ""
    return f"training seed only: one data instance{only}"


def _groups(rows: list, keys: list) -> dict:
    """Rows grouped by their values of `keys`, in first-seen order: {((key, value), ...): [rows]}."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple((k, r[k]) for k in keys), []).append(r)
    return groups


def write_tables(result: SweepResult) -> None:
    """OUT/<name>.csv (one row per run), OUT/<name>_summary.csv (over seeds) and OUT/<name>.json (both, with the
    axes and the setup every run shares)."""
    out, name = result.out, result.spec.name
    os.makedirs(out, exist_ok=True)
    write_csv(os.path.join(out, f"{name}.csv"), result.rows)
    for suffix, table in (("summary", result.summary), ("comparison", result.comparison)):
        path = os.path.join(out, f"{name}_{suffix}.csv")
        if table:
            write_csv(path, table)
        elif os.path.isfile(path):
            os.remove(path)   # derived from runs of another spec; the current spec has no such table
    c = result.runs[0].cfg
    atomic_json(os.path.join(out, f"{name}.json"), {
        "sweep": name, "quick": result.spec.quick, "axes": result.spec.axes,
        "setup": {"data": c.data.source, "backbone": c.model.backbone, "epochs": c.train.epochs},
        "runs": result.rows, "summary": result.summary, "comparison": result.comparison})


def write_csv(path: str, rows: list) -> None:
    """A tidy table, one dict per row, written atomically (temp file + rename); None is an empty cell."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = temporary_name(path)
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows([{k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                      for k, v in r.items()} for r in rows])
    os.replace(tmp, path)


@dataclass
class SweepResult:
    spec: SweepSpec
    out: str
    runs: list
    rows: list
    trained: int
    summary: list = field(default_factory=list)
    comparison: list = field(default_factory=list)
