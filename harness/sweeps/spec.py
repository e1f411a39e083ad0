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
the other axes <- matching [[overrides]]."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace

from harness.config import (
    RunConfig,
)
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

    def with_axis(self, axis: str, values) -> SweepSpec:
        """A copy with one axis's values replaced (e.g. from a benchmark flag), checked like the file's."""
        axes = dict(self.axes)
        axes[axis] = list(values)
        spec = replace(self, axes=axes)
        _check_axes(spec)
        return spec

    def with_base(self, base: str) -> SweepSpec:
        if not os.path.isfile(base):
            raise ValueError(f"sweep {self.name}: base config {base!r} not found")
        return replace(self, base=base)

    def default_out(self) -> str:
        return os.path.join("results", f"{self.name}_quick" if self.quick else self.name)


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
        _apply_quick(spec, raw.get("quick", {}), path, where)
    if not os.path.isfile(spec.base):
        raise ValueError(f"{where}: base config {spec.base!r} not found")
    _check_labels_and_keys(spec, where)
    _check_axes(spec)
    return spec


def _apply_quick(spec: SweepSpec, q: dict, path: str, where: str) -> None:
    """The [quick] variant: its base replaces the spec's, its set, axes and tune entries are merged in."""
    _no_unknown(q, QUICK_KEYS, f"{where} [quick]")
    spec.quick = True
    if "base" in q:
        spec.base = os.path.join(os.path.dirname(path), q["base"])
    spec.set = {**spec.set, **q.get("set", {})}
    spec.axes = {**spec.axes, **q.get("axes", {})}
    spec.tune = {**spec.tune, **q.get("tune", {})}


def _check_labels_and_keys(spec: SweepSpec, where: str) -> None:
    """[heads] and [conditions] labels are plain names, head names known, every dotted key a config key."""
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
        _check_axis_values(spec, axis, values, where)
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


def _check_axis_values(spec: SweepSpec, axis: str, values, where: str) -> None:
    """One axis: a non-empty list without repeats; seeds are integers, heads and conditions known labels, any
    other axis a config key."""
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: axis {axis!r} must be a non-empty list of values, got {values!r}")
    repeats = sorted({json.dumps(v) for v in values if sum(json.dumps(w) == json.dumps(v) for w in values) > 1})
    if repeats:
        raise ValueError(f"{where}: axis {axis!r} has duplicate values {repeats}")
    if axis == "seed" and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{where}: axis 'seed' takes integers, got {values}")
    if axis == "head":
        bad = [v for v in values if v not in spec.heads and v not in HEADS]
        if bad:
            raise ValueError(f"{where}: axis 'head' values {bad} are neither [heads] labels "
                             f"({', '.join(spec.heads) or 'none'}) nor head names ({', '.join(sorted(HEADS))})")
    if axis == "condition":
        bad = [v for v in values if v not in spec.conditions]
        if bad:
            raise ValueError(f"{where}: axis 'condition' values {bad} are not [conditions] labels "
                             f"({', '.join(spec.conditions) or 'none'})")
    if axis not in SPECIAL_AXES:
        check_key(axis, f"{where}: axis")


SUMMARY_METRICS = ("accuracy", "tar_far_0.01", "spearman_rho", "erc_area_magface", "edc_pauc_20", "test_accuracy",
                   "test_tar_far_0.01", "map_at_r", "precision_at_1")


def column_name(key: str) -> str:
    """Table column of an axis or recorded config key: its last dotted part (head.params.l_m -> l_m)."""
    return SPECIAL_AXES.get(key, key.split(".")[-1])
