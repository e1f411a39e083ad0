"""Experiments as data: a sweep spec (TOML) expands to runs, and one runner trains, reuses, resumes and tabulates
them. Nothing computed is deleted: a run lives in a folder named after its configuration fingerprint, so runs of
other configurations sit beside it untouched; only an explicit prune removes the runs a spec no longer names.

A spec (configs/sweeps/*.toml):

    name = "ablation"                      # table names; default output results/<name> (--quick: <name>_quick)
    base = "../cpu_synthetic_ablation.toml"   # the harness config of every run, relative to the spec
    columns = ["head.params.lambda_g"]     # config values recorded as table columns (head params: resolved)
    reference = "magface"                  # optional: <name>_comparison.csv pairs every head with this one
    replicates = "data"                    # optional: a seed also draws its own synthetic data set (new training
                                           #   images, new evaluation identities); default "training": train.seed
    [verdicts]                             # with a reference, declared before the runs: the compared metrics
    metrics = ["accuracy"]                 #   (default: the summary's) and equivalence margins per metric, in
    margins = { accuracy = 0.01 }          #   the metric's units (a metric without one: no equivalence test)
    [set]                                  # dotted config keys applied to every run
    "train.epochs" = 3
    [axes]                                 # the grid, in this order: a dotted config key, or
    "head.params.l_m" = [0.35, 0.40]       #   seed (train.seed), head (a [heads] label or a head name),
    seed = [0, 1, 2]                       #   condition (a [conditions] label)
    [heads.arcface]                        # name (default: the label) and params (omitted: the base config's
    params = { s = 32.0 }                  #   params when it is the same head, else the head's defaults)
    [conditions.noisy]                     # dotted config keys of a data condition
    "data.synthetic.label_noise" = 0.1
    [[overrides]]                          # per-run overrides for the runs whose axis values match
    match = { head = "softmax" }
    set = { "optim.lr" = 0.05 }
    [tune]                                 # optional: the equal-budget search per head (harness.sweeps.tune reads it)
    [quick]                                # the --quick variant: base, set (merged), axes (per axis) and tune
    base = "../cpu_synthetic_quick.toml"   #   (per key) replaced

A run's config is: base file <- [set] <- the caller's overrides (--set, real-data flags) <- condition <- head <-
the other axes <- matching [[overrides]].
"""
from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm import tqdm

from harness.checkpoint_io import load_data
from harness.config import (
    HeadConfig,
    RunConfig,
    apply_overrides,
    apply_values,
    eval_settings,
    load_toml,
    resolved_head,
    set_value,
    switch_head,
    validate,
)
from harness.evaluation.evaluate import EVAL_VERSION, evaluate_run
from harness.files import DamagedFile, atomic_json, read_json
from harness.locks import RunBusy, SweepsBusy, run_lock, sweep_sharing, sweeps_exclusive, tables_lock, temporary_name
from harness.measures.stats import family_verdicts, mean_ci, paired_test
from harness.source import synthetic_faces
from harness.sweeps.rows import metric_columns
from harness.sweeps.workers import FAILED_FILE, META_FILE, RESULT_FILE, Job, record_failure, run_all, worker_threads
from losses import HEADS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SPEC_KEYS = ("name", "description", "base", "columns", "set", "axes", "heads", "conditions", "overrides", "reference",
             "verdicts", "replicates", "quick", "tune")
REPLICATES = ("training", "data")   # what a seed replicate varies: train.seed only, or the data instance too
VERDICT_KEYS = ("metrics", "margins")
QUICK_KEYS = ("base", "set", "axes", "tune")
SPECIAL_AXES = {"seed": "seed", "head": "head", "condition": "condition"}
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=\[\]-]*")   # a label that becomes a file or folder name


def check_name(text, what: str) -> str:
    """A label that becomes part of a path (spec name, head or condition label, a run's folder name) must be one
    plain file-name component: no separators, no '..', not absolute, not hidden. Returns it."""
    if not isinstance(text, str) or not SAFE_NAME.fullmatch(text) or len(text) > 200:
        raise ValueError(f"{what} {text!r} cannot name a file or folder: use letters, digits and _ . , + = - [ ] only "
                         "(a plain name, starting with a letter, digit or _; no path separators or '..')")
    return text


@dataclass
class SweepSpec:
    name: str
    base: str
    path: str = ""
    description: str = ""
    columns: list = field(default_factory=list)
    set: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)
    heads: dict = field(default_factory=dict)
    conditions: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    reference: str = ""        # the head label the comparison table pairs every other head with
    quick: bool = False
    tune: dict = field(default_factory=dict)   # the equal-budget search of the heads (harness.sweeps.tune reads it)
    summary_metrics: tuple = ()   # metrics of the summary and comparison tables (empty: SUMMARY_METRICS)
    verdicts: dict = field(default_factory=lambda: {"metrics": None, "margins": {}})   # [verdicts], see above
    replicates: str = "training"   # "data": the seed axis sets data.synthetic.seed too (new images and identities)

    def with_axis(self, axis: str, values) -> "SweepSpec":
        """A copy with one axis's values replaced (e.g. from a benchmark flag), checked like the file's."""
        axes = dict(self.axes)
        axes[axis] = list(values)
        spec = replace(self, axes=axes)
        _check_axes(spec)
        return spec

    def with_base(self, base: str) -> "SweepSpec":
        if not os.path.isfile(base):
            raise ValueError(f"sweep {self.name}: base config {base!r} not found")
        return replace(self, base=base)

    def default_out(self) -> str:
        return os.path.join("results", f"{self.name}_quick" if self.quick else self.name)


@dataclass
class Run:
    cfg: RunConfig
    axes: dict          # axis -> value (the label for head and condition)
    name: str           # readable part of the folder name
    fingerprint: str
    columns: dict = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return self.cfg.out


# --- the spec ----------------------------------------------------------------------------------------------------
def load_spec(path: str, quick: bool = False) -> SweepSpec:
    """Read and check a spec; every mistake is an error naming the key or value, before any training."""
    if not os.path.isfile(path):
        raise ValueError(f"sweep spec {path} not found")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    where = f"sweep spec {path}"
    _no_unknown(raw, SPEC_KEYS, where)
    for key in ("name", "base", "axes"):
        if key not in raw:
            raise ValueError(f"{where}: missing key {key!r}")
    check_name(raw["name"], f"{where}: name")
    spec = SweepSpec(name=raw["name"], base=os.path.join(os.path.dirname(path), raw["base"]), path=path,
                     description=raw.get("description", ""), columns=list(raw.get("columns", [])),
                     set=dict(raw.get("set", {})), axes=dict(raw["axes"]), heads=dict(raw.get("heads", {})),
                     conditions=dict(raw.get("conditions", {})), overrides=list(raw.get("overrides", [])),
                     reference=raw.get("reference", ""), tune=dict(raw.get("tune", {})),
                     verdicts=_verdicts(raw.get("verdicts", {}), where),
                     replicates=raw.get("replicates", "training"))
    if raw.get("verdicts") and not spec.reference:
        raise ValueError(f"{where}: [verdicts] needs a reference head to compare with (reference = ...)")
    if spec.replicates not in REPLICATES:
        raise ValueError(f"{where}: replicates = {spec.replicates!r}; expected one of {list(REPLICATES)} "
                         "(\"data\": every seed draws its own synthetic data set)")
    if quick:
        q = raw.get("quick", {})
        _no_unknown(q, QUICK_KEYS, f"{where} [quick]")
        spec.quick = True
        if "base" in q:
            spec.base = os.path.join(os.path.dirname(path), q["base"])
        spec.set = {**spec.set, **q.get("set", {})}
        spec.axes = {**spec.axes, **q.get("axes", {})}
        spec.tune = {**spec.tune, **q.get("tune", {})}
    if not os.path.isfile(spec.base):
        raise ValueError(f"{where}: base config {spec.base!r} not found")
    for label, h in spec.heads.items():
        check_name(label, f"{where}: [heads] label")
        _no_unknown(h, ("name", "params"), f"{where} [heads.{label}]")
        name = h.get("name", label)
        if name not in HEADS:
            raise ValueError(f"{where} [heads.{label}]: unknown head {name!r}; valid heads: {', '.join(sorted(HEADS))}")
    for label, c in spec.conditions.items():
        check_name(label, f"{where}: [conditions] label")
        for key in c:
            check_key(key, f"{where} [conditions.{label}]")
    for key in list(spec.set) + spec.columns:
        check_key(key, f"{where} [set]/columns")
    for i, o in enumerate(spec.overrides):
        _no_unknown(o, ("match", "set"), f"{where} [[overrides]] #{i + 1}")
        for key in o.get("set", {}):
            check_key(key, f"{where} [[overrides]] #{i + 1}")
    _check_axes(spec)
    return spec


def _verdicts(table: dict, where: str) -> dict:
    """[verdicts]: `metrics` (a list of metric names) and `margins` ({metric: a number > 0}), each margin's metric
    among the compared ones."""
    _no_unknown(table, VERDICT_KEYS, f"{where} [verdicts]")
    metrics = table.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics)):
        raise ValueError(f"{where} [verdicts]: metrics must be a list of metric names, got {metrics!r}")
    known = [m for m in metrics or SUMMARY_METRICS if m in SUMMARY_METRICS or m.startswith("ijb_")]
    unknown = sorted(set(metrics or []) - set(known))
    if unknown:
        raise ValueError(f"{where} [verdicts] metrics: {unknown} are not compared metrics; valid: "
                         f"{', '.join(SUMMARY_METRICS)} (and ijb_* columns)")
    margins = table.get("margins", {})
    for metric, margin in margins.items():
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and
                                                                                    margin > 0):
            raise ValueError(f"{where} [verdicts] margins.{metric} = {margin!r}: expected a number > 0 (the "
                             "equivalence margin, in the metric's units)")
        if metric not in known:
            raise ValueError(f"{where} [verdicts] margins.{metric}: {metric!r} is not among the compared metrics "
                             f"{known}")
    return {"metrics": None if metrics is None else list(metrics), "margins": dict(margins)}


def _no_unknown(table: dict, valid, where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")


def check_key(key: str, where: str) -> None:
    """A dotted config key must name a config value (any key below a dict-valued one such as head.params)."""
    node = RunConfig().to_dict()
    parts = key.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            if isinstance(node, dict) and i > 0 and parts[i - 1] in ("params", "degradation_probability"):
                return
            raise ValueError(f"{where}: {key!r} is not a config key (no {p!r} in "
                             f"{'.'.join(parts[:i]) or 'the top level'})")
        node = node[p]


def _check_axes(spec: SweepSpec) -> None:
    where = f"sweep {spec.name}"
    if not spec.axes:
        raise ValueError(f"{where}: [axes] is empty; name at least one axis (e.g. seed = [0])")
    columns = {}
    for axis, values in spec.axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: axis {axis!r} must be a non-empty list of values, got {values!r}")
        repeats = sorted({json.dumps(v) for v in values if sum(json.dumps(w) == json.dumps(v) for w in values) > 1})
        if repeats:
            raise ValueError(f"{where}: axis {axis!r} has duplicate values {repeats}")
        if axis == "seed" and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{where}: axis 'seed' takes integers, got {values}")
        elif axis == "head":
            bad = [v for v in values if v not in spec.heads and v not in HEADS]
            if bad:
                raise ValueError(f"{where}: axis 'head' values {bad} are neither [heads] labels "
                                 f"({', '.join(spec.heads) or 'none'}) nor head names ({', '.join(sorted(HEADS))})")
        elif axis == "condition":
            bad = [v for v in values if v not in spec.conditions]
            if bad:
                raise ValueError(f"{where}: axis 'condition' values {bad} are not [conditions] labels "
                                 f"({', '.join(spec.conditions) or 'none'})")
        elif axis not in SPECIAL_AXES:
            check_key(axis, f"{where}: axis")
        col = column_name(axis)
        if col in columns:
            raise ValueError(f"{where}: axes {columns[col]!r} and {axis!r} would share the column {col!r}")
        columns[col] = axis
    if spec.reference and "head" not in spec.axes:
        raise ValueError(f"{where}: reference = {spec.reference!r} needs a 'head' axis to compare heads on")
    for i, o in enumerate(spec.overrides):
        unknown = sorted(set(o.get("match", {})) - set(spec.axes))
        if unknown:
            raise ValueError(f"{where}: [[overrides]] #{i + 1} matches on {unknown}, which are not axes "
                             f"({', '.join(spec.axes)})")


def column_name(key: str) -> str:
    """Table column of an axis or recorded config key: its last dotted part (head.params.l_m -> l_m)."""
    return SPECIAL_AXES.get(key, key.split(".")[-1])


# --- runs --------------------------------------------------------------------------------------------------------
def expand(spec: SweepSpec, out: str, overrides=()) -> list[Run]:
    """Every run of the spec, in axis order (the first axis varies slowest), with its resolved config."""
    base = load_toml(spec.base)
    _set_all(base, spec.set)
    apply_overrides(base, overrides)
    runs, defaults = [], RunConfig().to_dict()
    for combo in itertools.product(*spec.axes.values()):
        axes = dict(zip(spec.axes, combo))
        values = copy.deepcopy(base)
        updates = {}
        if "condition" in axes:
            cond = spec.conditions[axes["condition"]]
            changed = [k for k, v in cond.items() if k.startswith("data.synthetic.") and v != _lookup(defaults, k)]
            if values.get("data", {}).get("source", "synthetic") != "synthetic" and changed:
                raise ValueError(f"condition {axes['condition']!r} changes the built-in synthetic data "
                                 f"({', '.join(changed)}), which real data does not use; leave it out (e.g. "
                                 f"--conditions clean)")
            updates.update(cond)
        if "head" in axes:
            updates["head"] = _head_table(spec, axes["head"], values.get("head", {}))
        for axis, value in axes.items():
            if axis not in SPECIAL_AXES or axis == "seed":
                updates["train.seed" if axis == "seed" else axis] = value
        if "seed" in axes and spec.replicates == "data":
            if values.get("data", {}).get("source", "synthetic") != "synthetic":
                raise ValueError(f"sweep {spec.name}: replicates = \"data\" draws a new built-in synthetic data "
                                 "set per seed, which real data does not use; use replicates = \"training\"")
            updates["data.synthetic.seed"] = axes["seed"]
        for o in spec.overrides:
            if all(axes.get(k) == v for k, v in o.get("match", {}).items()):
                updates.update(o.get("set", {}))
        _set_all(values, updates)
        try:
            cfg = apply_values(RunConfig(), values)
            validate(cfg)
        except ValueError as exc:
            raise ValueError(f"sweep {spec.name}, run {axes}: {exc}") from None
        fp = cfg.fingerprint()
        name = check_name("_".join(_short(a, v) for a, v in axes.items()),
                          f"sweep {spec.name}, run {axes}: folder name")
        cfg.out = os.path.join(out, "runs", f"{name}-{fp[:10]}")
        resolved = {**cfg.to_dict(), "head": {"name": cfg.head.name, "params": resolved_head(cfg).hparams}}
        columns = {column_name(k): _lookup(resolved, k) for k in spec.columns}
        runs.append(Run(cfg, axes, name, fp, columns))
    return runs


def _set_all(values: dict, updates: dict) -> None:
    """Dotted keys into a values dict, with --set's rule that a new head.name drops the old head's params."""
    if "head.name" in updates and "head.params" not in updates:
        switch_head(values, updates["head.name"], "sweep sets head.name")
    for key, value in updates.items():
        set_value(values, key.split("."), value)


def _head_table(spec: SweepSpec, label: str, base_head: dict) -> dict:
    """The [head] table of a head-axis value: its [heads] entry, else the base config's params for the same head."""
    entry = spec.heads.get(label, {})
    name = entry.get("name", label)
    if "params" in entry:
        return {"name": name, "params": dict(entry["params"])}
    same = base_head.get("name", HeadConfig.name) == name
    return {"name": name, "params": dict(base_head.get("params", {})) if same else {}}


def _short(axis: str, value) -> str:
    if axis in ("head", "condition"):
        return str(value)
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{column_name(axis)}{text}".replace(os.sep, "-").replace(" ", "")


def _lookup(d: dict, key: str):
    for p in key.split("."):
        d = d.get(p) if isinstance(d, dict) else None
    return d


def run_status(run: Run) -> str:
    """'done' (its result row is stored, evaluated by this version with these eval settings), 're-evaluate' (trained,
    but evaluated by an older version or with other eval settings, or its stored evaluation is damaged: the
    checkpoint is evaluated again, nothing is retrained), 'failed', 'resume' (training started) or 'new'.
    A folder whose stored fingerprint differs (a hash-prefix collision, or a folder copied by hand) is an error: it is
    never overwritten. A damaged run file is a DamagedFile naming it (execute records the run as failed)."""
    meta = os.path.join(run.folder, META_FILE)
    if os.path.isfile(meta):
        stored = read_json(meta, "sweep run record", "--retry-failed writes it again").get("fingerprint")
        if stored != run.fingerprint:
            raise ValueError(f"{run.folder} holds a run of fingerprint {stored}, not {run.fingerprint}; move it away")
    if os.path.isfile(os.path.join(run.folder, FAILED_FILE)):
        return "failed"
    if os.path.isfile(os.path.join(run.folder, RESULT_FILE)):
        read_json(os.path.join(run.folder, RESULT_FILE), "result row", "--retry-failed rebuilds it from the run")
        try:
            current = stored_evaluation(run.folder) == evaluation_of(run.cfg)
        except DamagedFile:
            current = False   # derived from the checkpoint in seconds: evaluated again, nothing is lost
        return "done" if current else "re-evaluate"
    return "resume" if os.path.isfile(os.path.join(run.folder, "config.json")) else "new"


def evaluation_of(cfg: RunConfig) -> tuple:
    """What a current evaluation of this run is: suite version, settings, verification packs, final checkpoint."""
    return EVAL_VERSION, eval_settings(asdict(cfg.eval)), list(cfg.data.eval_bins), "final.pt"


def stored_evaluation(folder: str) -> tuple:
    """The same tuple for the evaluation stored in the run's eval/metrics.json."""
    path = os.path.join(folder, "eval", "metrics.json")
    if not os.path.isfile(path):
        return ()
    m = read_json(path, "evaluation")
    settings = m.get("eval_config")
    return (m.get("eval_version", 1), eval_settings(settings) if isinstance(settings, dict) else settings,
            m.get("eval_bins"), m.get("checkpoint"))


def statuses(runs: list) -> tuple[dict, dict]:
    """({folder: status}, {folder: why it is damaged}) of every run; a damaged run's status is 'failed'."""
    status, damage = {}, {}
    for r in runs:
        try:
            status[r.folder] = run_status(r)
        except DamagedFile as exc:
            status[r.folder], damage[r.folder] = "failed", str(exc)
    return status, damage


# --- training ----------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    spec: SweepSpec
    out: str
    runs: list
    rows: list
    trained: int
    summary: list = field(default_factory=list)
    comparison: list = field(default_factory=list)


def run_spec(spec: SweepSpec, out: str | None = None, overrides=(), *, jobs: int = 1, dry_run: bool = False,
             prune: bool = False, retry_failed: bool = False, describe=None, quiet: bool = False):
    """Train what is missing of the spec, reuse what is done, write the tables; returns a SweepResult (rows in
    spec order). A run that fails is recorded (RUN/failed.json, a `failed` column) and the others go on; it is
    tried again only with retry_failed. dry_run: print the plan and return None. prune: remove the run folders
    under OUT/runs that this spec (with these overrides) does not name, listing them, and return None (refused
    while another sweep runs on OUT). Every sweep holds OUT's shared lock while it runs."""
    check_name(spec.name, "sweep name")
    out = out or spec.default_out()
    if dry_run and prune:
        raise ValueError("--dry-run and --prune exclude each other")
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: expected a number of processes >= 1")
    runs = expand(spec, out, overrides)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if prune:
        try:
            with sweeps_exclusive(out):
                prune_runs(out, runs, say)
        except SweepsBusy as exc:
            raise ValueError(str(exc)) from None
        return None
    with sweep_sharing(out):
        return _run_spec(spec, out, runs, jobs, dry_run, retry_failed, describe, say, quiet)


def _run_spec(spec, out, runs, jobs, dry_run, retry_failed, describe, say, quiet):
    status, damage = statuses(runs)
    c = runs[0].cfg
    say(f"sweep {spec.name}{' (quick)' if spec.quick else ''}: {len(runs)} run(s) over "
        f"{', '.join(f'{a} ({len(v)})' for a, v in spec.axes.items())}; {c.model.backbone}, {c.train.epochs} "
        f"epochs, data {c.data.source}; results in {out}")
    if dry_run:
        for r in runs:
            say(f"  {status[r.folder]:<7}{r.name:<40}{r.folder}" + (f"\n    {damage[r.folder]}" if r.folder in damage
                                                                   else ""))
        return None
    t0 = time.perf_counter()
    trained = execute(runs, spec.name, out, status, jobs=jobs, retry_failed=retry_failed, describe=describe,
                      say=say, quiet=quiet, damage=damage)
    rows = [load_row(r) for r in runs]
    ijb = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("ijb_") and k.endswith("0.0001")]
    metrics = (*(spec.summary_metrics or SUMMARY_METRICS), *ijb)   # IJB TAR@FAR=1e-4 when runs were evaluated on it
    declared = spec.verdicts["metrics"]
    compared = metrics if declared is None else [m for m in metrics if m in declared]
    result = SweepResult(spec, out, runs, rows, trained, summarise(rows, list(spec.axes), metrics),
                         compare(rows, list(spec.axes), spec.reference, compared, spec.verdicts["margins"],
                                 spec.name, replicate_variance(runs)) if spec.reference else [])
    with tables_lock(out):
        write_tables(result)
    say(f"{trained} new run(s) in {time.perf_counter() - t0:.0f} s; tables {out}/{spec.name}.csv"
        f"{f', {spec.name}_summary.csv' if result.summary else ''}, {spec.name}.json")
    return result


def execute(runs: list, name: str, out: str, status: dict | None = None, *, jobs: int = 1,
            retry_failed: bool = False, describe=None, say=print, quiet: bool = False, damage=None) -> int:
    """Bring every run to 'done' or 'failed': re-evaluate the stale, reuse the finished, resume the started, train the
    rest (`jobs` at once), each result (RUN/result.json) or failure (RUN/failed.json) recorded by the process that
    holds the run's lock. A run another process holds is left for last, then waited for and reused. Returns the
    number of runs this process trained."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: expected a number of processes >= 1")
    with sweep_sharing(out):
        if status is None:
            status, damage = statuses(runs)
        for r in runs:
            status[r.folder] = settle(r, status[r.folder], (damage or {}).get(r.folder), retry_failed, say)
        failed = [r.name for r in runs if status[r.folder] == "failed"]
        if failed:
            say(f"{len(failed)} run(s) failed before and are not retried (--retry-failed): {', '.join(failed)}")
        todo = [r for r in runs if status[r.folder] not in ("done", "failed")]
        reused = [r for r in runs if status[r.folder] == "done"]
        if reused:
            say(f"{len(reused)} run(s) reused from {out}/runs")
            _note_thread_counts(reused, jobs, say)
        for r in todo:
            if status[r.folder] == "resume":
                say(f"{r.name}: resuming an unfinished run")
        for cfg in {json.dumps(r.cfg.data.synthetic.__dict__, sort_keys=True): r.cfg for r in todo
                    if r.cfg.data.source == "synthetic"}.values():
            synthetic_faces(cfg)   # each data set once, before the workers need it
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"{name} runs", unit="run", file=sys.stdout,
                   disable=quiet)
        try:
            return _train_jobs([_job(r, name) for r in todo], jobs, bar, describe)
        finally:
            bar.close()


def settle(run: Run, seen: str, damage: str | None, retry_failed: bool, say) -> str:
    """A run's state before training, acted on under its lock with the state read again there (another process
    may have changed it meanwhile): a damaged run recorded as failed (or prepared for a retry), a stale evaluation
    redone, a failed run prepared for --retry-failed."""
    if seen not in ("re-evaluate", "failed"):
        return seen
    with run_lock(run.folder, say=say):
        try:
            now, damage = run_status(run), None
        except DamagedFile as exc:
            now, damage = "failed", str(exc)
        if damage:
            say(f"{run.name}: {damage}" + ("; retrying it (--retry-failed)" if retry_failed else
                                           "; recorded as failed, the other runs go on (--retry-failed)"))
            if not retry_failed:
                record_failure(run.folder, damage)
        if now == "re-evaluate":
            now = _reevaluate(run, say)
        if now == "failed" and retry_failed:
            _prepare_retry(run, say)
            now = "resume"
        return now


def _job(run: Run, sweep: str) -> Job:
    meta = {"sweep": sweep, "axes": run.axes, "name": run.name, "fingerprint": run.fingerprint}
    return Job(run.cfg.to_dict(), meta, describe_run(run))


def _train_jobs(job_list: list, jobs: int, bar, describe) -> int:
    """Train the jobs; those another process holds are tried again after the rest, waiting for their lock (and
    then reused when that process finished them). Returns how many this process trained."""
    trained, busy = 0, []
    for wait in (False, True):
        for job, outcome in run_all(job_list, jobs):
            name = job.meta["name"]
            if outcome.state == "busy":
                busy.append(replace(job, wait=True))
                continue
            if outcome.state == "interrupted":
                bar.write(f"{name}: interrupted; it resumes from its last checkpoint next time")
                continue
            trained += outcome.state in ("trained", "failed", "died")
            if outcome.state in ("failed", "died", "failed_elsewhere"):
                bar.write(f"{name}: FAILED ({outcome.error}); recorded in {job.folder}/{FAILED_FILE}")
            elif outcome.state == "reused":
                bar.write(f"{name}: finished by another process meanwhile; reused")
            elif describe:
                bar.set_postfix(last=describe(read_json(os.path.join(job.folder, RESULT_FILE))))
            bar.update(1)
        if not busy or wait:
            break
        bar.write(f"{len(busy)} run(s) are in use by another process; waiting for them: "
                  f"{', '.join(j.meta['name'] for j in busy)}")
        job_list, busy = busy, []
    return trained


def _reevaluate(run: Run, say) -> str:
    """Evaluate a trained run's checkpoint again (the caller holds its lock); a damaged or missing checkpoint makes
    the run failed (recorded)."""
    say(f"{run.name}: evaluated by an older version, with other eval settings, or its evaluation is damaged; "
        "evaluating its checkpoint again")
    try:
        faces = synthetic_faces(run.cfg) if run.cfg.data.source == "synthetic" else None
        evaluate_run(run.folder, faces=faces, device=run.cfg.train.device, eval_cfg=run.cfg.eval,
                     eval_bins=run.cfg.data.eval_bins)
    except ValueError as exc:   # a damaged or missing final.pt: --retry-failed rebuilds it from last.pt
        record_failure(run.folder, f"{type(exc).__name__}: {exc}")
        say(f"{run.name}: FAILED ({exc}); recorded in {run.folder}/{FAILED_FILE}")
        return "failed"
    return "done"


def _prepare_retry(run: Run, say) -> None:
    """Before a failed run is trained again (the caller holds its lock): its failure record and derived files go
    (result row, evaluation: both rebuilt), a damaged checkpoint is kept aside as NAME.damaged (named), so training
    resumes from the last good one (or starts over when none is left)."""
    for path in (FAILED_FILE, RESULT_FILE, os.path.join("eval", "metrics.json")):
        if os.path.isfile(os.path.join(run.folder, path)):
            os.remove(os.path.join(run.folder, path))
    for name in ("final.pt", "last.pt"):
        path = os.path.join(run.folder, "checkpoints", name)
        if not os.path.isfile(path):
            continue
        try:
            load_data(path)
        except DamagedFile as exc:
            os.replace(path, f"{path}.damaged")
            say(f"{run.name}: {exc}\n  kept aside as {path}.damaged; training resumes without it")


def _note_thread_counts(reused: list, jobs: int, say) -> None:
    """The thread count changes the weights in their last bits but is not in the fingerprint: say so when a reused
    run was trained with another count than this sweep would use."""
    now, other = worker_threads(jobs), {}
    for r in reused:
        path = os.path.join(r.folder, "environment.json")
        try:
            seen = read_json(path).get("torch_threads_seen") if os.path.isfile(path) else None
        except DamagedFile:
            continue   # the note is a courtesy: a damaged environment record does not stop the sweep
        if seen and seen != [now]:
            other.setdefault(", ".join(map(str, seen)), []).append(r.name)
    for threads, names in other.items():
        say(f"note: {len(names)} reused run(s) were trained with {threads} thread(s), this sweep trains with {now} "
            f"(--jobs {jobs}); a retrain would differ in the last bits (not in the fingerprint): {', '.join(names)}")


def prune_runs(out: str, keep: list, say=print) -> list:
    """Remove the run folders under OUT/runs that are not among `keep`; returns (and lists) what went. A run another
    process is training or evaluating (its lock is held) is never removed: it is listed as kept. (run_spec holds
    OUT's exclusive sweep lock around this: no sweep is running on OUT meanwhile.)"""
    root = os.path.join(out, "runs")
    names = {os.path.basename(r.folder) for r in keep}
    candidates = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else []) if d not in names and
                        os.path.isdir(os.path.join(root, d)))
    gone, busy = [], []
    for d in candidates:
        try:
            with run_lock(os.path.join(root, d), wait=False):
                shutil.rmtree(os.path.join(root, d))
            gone.append(d)
        except RunBusy:
            busy.append(d)
    say(f"pruned {len(gone)} run folder(s) from {root} that this sweep does not name"
        + "".join(f"\n  removed {d}" for d in gone) + "".join(f"\n  kept {d}: in use by another process" for d in busy)
        + f"\nkept {len(names)} run folder name(s) of this sweep")
    return gone


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


SUMMARY_METRICS = ("accuracy", "tar_far_0.01", "spearman_rho", "erc_area_magface", "edc_pauc_20", "test_accuracy",
                   "test_tar_far_0.01", "map_at_r", "precision_at_1")
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
