"""An equal tuning budget per head (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020): every
head gets the same number of trials of a seeded TPE search (optuna) over its own declared space, each trial a harness
run scored on validation identities only; the best configuration per head is then retrained with the final seeds
and reported on the test identities (harness.evaluation.evaluate.identity_splits keeps the two apart).

The search is data, in the sweep spec's [tune] table (see configs/sweeps/compare_losses.toml):

    [tune]
    objective = "val_map_at_r"        # a validation column (maximised)
    trials = 8                        # per head; --tune N replaces it
    trials_per_round = 2              # trials asked of each head's sampler before their scores are told: fixed
                                      #   here, so the trials do not depend on --jobs
    startup_trials = 4                # TPE's random start
    sampler_seed = 0                  # each head's sampler: this + a hash of its label (a --heads subset is the same)
    trial_seed = 100                  # training seed of every trial; never one of the final seeds
    condition = "clean"               # the [conditions] label tuned and reported
    [tune.space.cosface]              # per head label: dotted config key -> range or choices
    "optim.lr" = { low = 0.02, high = 0.4, log = true }
    "head.params.m" = { low = 0.1, high = 0.5 }
    [tune.space.magface]
    "head.params.auto_quantiles" = { choices = [[0.05, 0.95], [0.15, 0.85]] }

Trials are ordinary sweep runs (folders named by fingerprint): a second call replays the same seeded search, finds
every finished trial and trains nothing; a killed search resumes where it stopped.
"""
from __future__ import annotations

import inspect
import json
import math
import warnings
import zlib
from dataclasses import dataclass, replace

from harness.sweeps.expand import expand
from harness.sweeps.runner import execute
from harness.sweeps.spec import SweepSpec, check_key, column_name
from harness.sweeps.tables import load_row
from losses import HEADS

TEST_COLUMNS = ("test_accuracy", "test_tar_far_0.01", "map_at_r", "precision_at_1")   # what a tuned head reports
OBJECTIVES = ("val_map_at_r", "val_precision_at_1", "val_accuracy", "val_tar_far_0.01")
RETRIEVAL = ("val_map_at_r", "val_precision_at_1")
PLAN_KEYS = ("objective", "trials", "trials_per_round", "startup_trials", "sampler_seed", "trial_seed", "condition",
             "space")
PARAM_KEYS = ("low", "high", "log", "choices")


@dataclass(frozen=True)
class Param:
    """One searched value: a float range (log-uniform with log = true) or a list of choices."""
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    @property
    def column(self) -> str:
        return column_name(self.key)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.column} in {json.dumps(list(self.choices))}"
        return f"{self.column} in [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"

    def suggest(self, trial):
        if self.choices is not None:   # optuna's categorical takes scalars: it picks an index
            return self.choices[trial.suggest_categorical(self.key, list(range(len(self.choices))))]
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


@dataclass
class TunePlan:
    objective: str
    trials: int
    per_round: int
    startup: int
    sampler_seed: int
    trial_seed: int
    condition: str | None
    spaces: dict          # head label -> [Param]


def _tuned_condition(spec: SweepSpec, condition, where: str):
    """The data condition the search runs on: the one [tune] names, else the condition axis's first (or none)."""
    if condition and "condition" not in spec.axes:
        raise ValueError(f"{where}: condition = {condition!r}, but the spec has no condition axis")
    if "condition" in spec.axes:
        condition = condition or spec.axes["condition"][0]
        if condition not in spec.conditions:
            raise ValueError(f"{where}: condition {condition!r} is not a [conditions] label "
                             f"({', '.join(spec.conditions)})")
    return condition


def load_plan(spec: SweepSpec, trials: int | None = None) -> TunePlan:
    """The spec's [tune] table for the heads on its head axis, checked before any training: every mistake is a
    ValueError naming the head, the key and the value."""
    where = f"sweep spec {spec.path or spec.name} [tune]"
    t = spec.tune
    if not t:
        raise ValueError(f"sweep spec {spec.path or spec.name} has no [tune] table: nothing says what to search")
    unknown = sorted(set(t) - set(PLAN_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(PLAN_KEYS)}")
    n = t.get("trials", 8) if trials is None else trials
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"--tune {n!r}: expected a number of trials per head >= 1")
    objective = t.get("objective", "val_map_at_r")
    if objective not in OBJECTIVES:
        raise ValueError(f"{where}: objective {objective!r} is not one of {OBJECTIVES} (validation columns only: a "
                         "test number never chooses a configuration)")
    ints = {k: t.get(k, d) for k, d in (("trials_per_round", 2), ("startup_trials", 4), ("sampler_seed", 0),
                                         ("trial_seed", 100))}
    for k, v in ints.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if k == "trials_per_round" else 0):
            raise ValueError(f"{where}: {k} = {v!r}: expected an integer >= {1 if k == 'trials_per_round' else 0}")
    condition = _tuned_condition(spec, t.get("condition"), where)
    if ints["trial_seed"] in spec.axes.get("seed", []):
        raise ValueError(f"{where}: trial_seed {ints['trial_seed']} is one of the final seeds {spec.axes['seed']}: "
                         "the selected trial would be reported; pick a trial seed outside them")
    spaces = t.get("space", {})
    labels = spec.axes.get("head", [])
    if not labels:
        raise ValueError(f"{where}: the spec has no head axis to tune")
    unknown = sorted(set(spaces) - set(spec.heads) - set(HEADS))
    if unknown:
        raise ValueError(f"{where}: [tune.space] names {unknown}, which are neither [heads] labels "
                         f"({', '.join(spec.heads)}) nor head names")
    plan_spaces = {label: _space(spec, label, spaces.get(label), where) for label in labels}
    return TunePlan(objective, n, ints["trials_per_round"], ints["startup_trials"], ints["sampler_seed"],
                    ints["trial_seed"], condition, plan_spaces)


def _space(spec: SweepSpec, label: str, table, where: str) -> list:
    name = spec.heads.get(label, {}).get("name", label)
    here = f"{where} head {label!r}"
    if not table:
        raise ValueError(f"{here}: empty or missing search space ([tune.space.{label}]); every head needs at least "
                         "one searched value (e.g. \"optim.lr\")")
    takes = [p for p in inspect.signature(HEADS[name].__init__).parameters
             if p not in ("self", "num_classes", "embedding_size")]
    params = []
    for key, p in table.items():
        if not isinstance(p, dict):
            raise ValueError(f"{here}: {key!r} = {p!r}: expected {{ low = .., high = .. }} or {{ choices = [..] }}")
        unknown = sorted(set(p) - set(PARAM_KEYS))
        if unknown:
            raise ValueError(f"{here}: {key!r} has unknown key(s) {unknown}; valid: {', '.join(PARAM_KEYS)}")
        if key.startswith("head.params."):
            if key[len("head.params."):] not in takes:
                raise ValueError(f"{here}: the space names {key[len('head.params.'):]!r}, which head {name} does not "
                                 f"take (it takes {', '.join(takes)})")
        elif key.startswith("optim."):
            check_key(key, here)
        else:
            raise ValueError(f"{here}: {key!r} cannot be searched: only optim.* and head.params.* can; the data, the "
                             "validation/test split, the budget (epochs, batch) and the seed are the protocol, the "
                             "same for every head")
        if "choices" in p:
            choices = p["choices"]
            if set(p) - {"choices"} or not isinstance(choices, list) or len(choices) < 2 or \
                    len({json.dumps(c) for c in choices}) < len(choices):
                raise ValueError(f"{here}: {key!r} choices {choices!r}: expected a list of at least 2 distinct values "
                                 "(and no low/high)")
            params.append(Param(key, choices=tuple(choices)))
            continue
        low, high, log = p.get("low"), p.get("high"), p.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (low, high))
        if not numbers or not low < high or (log and low <= 0) or not isinstance(log, bool):
            raise ValueError(f"{here}: {key!r} range low={low!r}, high={high!r}, log={log!r}: expected finite numbers "
                             "with low < high (and low > 0 for log = true)")
        params.append(Param(key, float(low), float(high), log))
    columns = [p.column for p in params]
    if len(set(columns)) < len(columns):
        raise ValueError(f"{here}: two searched keys share a column name ({columns}); tuning.csv could not tell them "
                         "apart")
    return params


def check_validation(runs: list, objective: str) -> None:
    """The validation split exists, holds at least 2 identities, and can give the objective."""
    cfg = runs[0].cfg
    if cfg.data.source == "synthetic":
        per_fold = cfg.data.synthetic.eval_identities // cfg.data.synthetic.folds
        identities = cfg.eval.validation_folds * per_fold
        if identities < 2:
            raise ValueError(f"the validation split has {identities} identities (eval.validation_folds = "
                             f"{cfg.eval.validation_folds} folds of about {per_fold}); tuning needs at least 2: set "
                             "eval.validation_folds >= 2")
    else:
        if not cfg.eval.validation_bins:
            raise ValueError("tuning on real data needs a validation pack: --set 'eval.validation_bins=[\"NAME\"]' "
                             "names one of --eval-bins (the others are the test packs)")
        if objective in RETRIEVAL:
            raise ValueError(f"objective {objective!r} needs identity labels, which verification packs lack; "
                             "use val_accuracy or val_tar_far_0.01 on real data")


def trial_run(spec: SweepSpec, plan: TunePlan, label: str, values: dict, out: str, overrides=()):
    """The harness run of one trial: the head's spec config on the tuned condition, the trial seed, the values."""
    axes = {"condition": [plan.condition]} if plan.condition else {}
    trial = replace(spec, axes={**axes, "head": [label], "seed": [plan.trial_seed]},
                    overrides=[*spec.overrides, {"match": {}, "set": values}])
    return expand(trial, out, overrides)[0]


def search(spec: SweepSpec, plan: TunePlan, out: str, overrides=(), *, jobs: int = 1, retry_failed: bool = False,
           say=print) -> list:
    """Run the search; returns one row per trial (head, trial, every tuned value, objective, state, validation
    metrics, run folder), in the order the trials were asked."""
    import optuna  # loads in about a second (SQLAlchemy): only when a search runs, not on every benchmark start
    from optuna.trial import TrialState  # same reason
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_validation([trial_run(spec, plan, label, {}, out, overrides) for label in list(plan.spaces)[:1]],
                     plan.objective)
    studies = {}
    for label in plan.spaces:
        with warnings.catch_warnings():   # multivariate TPE is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=plan.sampler_seed + zlib.crc32(label.encode()) % 100_000,
                                                 n_startup_trials=plan.startup, multivariate=True)
        studies[label] = optuna.create_study(direction="maximize", sampler=sampler)
    rows, best = [], {}
    for round_ in range(math.ceil(plan.trials / plan.per_round)):
        batch = []
        for label, study in studies.items():
            for _ in range(min(plan.per_round, plan.trials - round_ * plan.per_round)):
                trial = study.ask()
                values = {p.key: p.suggest(trial) for p in plan.spaces[label]}
                try:
                    run = trial_run(spec, plan, label, values, out, overrides)
                except ValueError as exc:   # values the head refuses (e.g. l_m >= u_m): a failed trial, not a crash
                    run = str(exc)
                batch.append((label, trial, values, run))
        unique = list({run.folder: run for *_, run in batch if not isinstance(run, str)}.values())
        execute(unique, f"{spec.name}_tuning", out, jobs=jobs, retry_failed=retry_failed, say=None)
        for label, trial, values, run in batch:
            row = {"failed": f"refused before training: {run}"} if isinstance(run, str) else load_row(run)
            value = row.get(plan.objective)
            ok = not row.get("failed") and value is not None and math.isfinite(value)
            studies[label].tell(trial, value if ok else None, state=TrialState.COMPLETE if ok else TrialState.FAIL)
            if ok:
                best[label] = max(best.get(label, -math.inf), value)
            rows.append({"head": label, "trial": trial.number + 1, "round": round_ + 1,
                         **{p.column: json.dumps(values[p.key]) if p.choices else values[p.key]
                            for p in plan.spaces[label]},
                         "objective": plan.objective, "value": value if ok else None,
                         "best_so_far": best.get(label), "state": "complete" if ok else "failed",
                         "error": row.get("failed") or ("" if ok else f"no {plan.objective} in the run's evaluation"),
                         **{k: row.get(k) for k in OBJECTIVES if k != plan.objective},
                         "seconds": row.get("seconds"), "run": None if isinstance(run, str) else run.folder})
        say(f"round {round_ + 1}: " + ", ".join(f"{label} best {best[label]:.4f}" if label in best else
                                                  f"{label} none yet" for label in studies))
    return rows


def best_values(plan: TunePlan, rows: list) -> dict:
    """Per head: the values of its best completed trial (the first one on ties) and that trial's row; heads whose
    every trial failed are absent."""
    out = {}
    for label, params in plan.spaces.items():
        done = [r for r in rows if r["head"] == label and r["state"] == "complete"]
        if not done:
            continue
        top = max(done, key=lambda r: (r["value"], -r["trial"]))
        values = {p.key: json.loads(top[p.column]) if p.choices else top[p.column] for p in params}
        out[label] = {"values": values, "row": top}
    return out


def best_table(plan: TunePlan, rows: list, best: dict) -> list:
    """One row per head: search space, trials run and failed, best values, validation score and the trial that
    reached it (a late one says the budget had not saturated)."""
    table = []
    for label, params in plan.spaces.items():
        mine = [r for r in rows if r["head"] == label]
        b = best.get(label)
        table.append({"head": label, "space": "; ".join(p.describe() for p in params), "trials": len(mine),
                      "failed": sum(r["state"] == "failed" for r in mine), "objective": plan.objective,
                      "best_value": b["row"]["value"] if b else None,
                      "best_trial": b["row"]["trial"] if b else None,
                      "best_values": json.dumps({column_name(k): v for k, v in b["values"].items()}) if b else None,
                      "best_values_text": ", ".join(f"{column_name(k)} {_short(v)}" for k, v in b["values"].items())
                      if b else None})
    return table


def _short(value) -> str:
    """A tuned value for reading: 3 significant digits (lists element-wise)."""
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def tuned_spec(spec: SweepSpec, plan: TunePlan, best: dict) -> SweepSpec:
    """The final sweep: each head's best values, the spec's seeds, the tuned condition; named <name>_tuned."""
    axes = {"condition": [plan.condition]} if plan.condition else {}
    overrides = [*spec.overrides, *({"match": {"head": label}, "set": b["values"]} for label, b in best.items())]
    if not best:
        raise ValueError("every trial of every head failed (tuning.csv has their errors): nothing to retrain")
    return replace(spec, name=f"{spec.name}_tuned", axes={**axes, "head": list(best), "seed": spec.axes["seed"]},
                   overrides=overrides, reference=spec.reference if spec.reference in best else "",
                   summary_metrics=TEST_COLUMNS)
