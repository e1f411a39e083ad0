"""A spec expanded into its runs: each run's config, axis values and folder (named by its fingerprint)."""
from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field

from harness.config import (
    HeadConfig,
    RunConfig,
    apply_overrides,
    apply_values,
    load_toml,
    resolved_head,
    set_value,
    switch_head,
    validate,
)
from harness.sweeps.spec import SPECIAL_AXES, SweepSpec, check_name, column_name


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


# --- runs --------------------------------------------------------------------------------------------------------
def expand(spec: SweepSpec, out: str, overrides=()) -> list[Run]:
    """Every run of the spec, in axis order (the first axis varies slowest), with its resolved config."""
    base = load_toml(spec.base)
    _set_all(base, spec.set)
    apply_overrides(base, overrides)
    runs, defaults = [], RunConfig().to_dict()
    for combo in itertools.product(*spec.axes.values()):
        axes = dict(zip(spec.axes, combo, strict=True))
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
