"""Typed run configuration: dataclasses, loaded from TOML with `key=value` overrides; unknown keys are errors.

A config file may name a `base` file (relative to itself) whose values it overrides, so experiments are small
override files on top of one base. Every value is type-checked against the dataclass field types; defaults are
defined here once (configs/base.toml only restates them). Override rules a user can predict:
- `--set head.params.l_m=0.4` (a dotted key) sets one value and keeps the rest of the table;
- `--set head.params={l_m=0.4}` (an inline table) replaces the whole table;
- a new `head.name` drops the old head's parameters (with a printed note); parameters given with it apply to the
  new head. A file that overrides its base's head name without giving params behaves the same way.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import sys
import typing
import warnings
from dataclasses import dataclass, field

from harness.config_checks import check_ijb, check_milestones, check_ranges, check_split, pack_name
from losses import HEADS, build_head

from .data.synthetic import SyntheticConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class DataConfig:
    source: str = "synthetic"          # synthetic | recordio | folder | list
    path: str = ""                     # root (recordio, folder) or list file; unused for synthetic
    eval_bins: list = field(default_factory=list)   # verification packs (.bin) for real data
    cache_dir: str = ""                # synthetic cache; empty: MAGFACE_BENCH_CACHE or ~/.cache/magface-bench
    workers: int = 0                   # DataLoader workers for files on disk
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)   # the built-in generator's own config


@dataclass
class ModelConfig:
    backbone: str = "small_cnn"        # small_cnn | iresnet18 | iresnet34 | iresnet50 | iresnet100
    embedding_size: int = 128
    width: int = 32                    # small_cnn only
    dropout: float = 0.0


@dataclass
class HeadConfig:
    name: str = "magface"
    params: dict = field(default_factory=dict)   # passed to losses.build_head, e.g. {l_m = 0.4}


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"             # step | poly
    milestones: list = field(default_factory=lambda: [10, 18, 22])   # epochs (step schedule); paper: of 25
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    power: float = 2.0                 # poly schedule exponent
    grad_clip: float = 0.0             # max global grad norm; 0 disables
    clip_head: bool = False            # clip head and backbone together (else the backbone only, as insightface)


@dataclass
class TrainConfig:
    epochs: int = 25
    batch_size: int = 512
    device: str = "auto"               # auto (cuda when present) | cpu | cuda
    amp: str = "none"                  # none | bf16 | fp16 (backbone only; the head stays fp32)
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    log_every: int = 20                # steps between metric rows
    dump_every: int = 200              # steps between (magnitude, cos, probability) dumps; 0 disables
    checkpoint_every: int = 500        # steps between checkpoints (and one at the end of every epoch)
    max_steps: int = 0                 # stop early after this many steps in total (0: run all epochs)
    shard_centres: bool = True         # under torchrun: split the class centres over the ranks (else replicate)
    calibrate_at_epoch: float = 1.0    # MagFace with l_a = u_a = "auto": when the band is measured (see losses/magface)
    # GPU: deterministic algorithms, bitwise exact resume (harness/training/determinism.py)
    deterministic: bool = False


@dataclass
class EvalConfig:
    flip: bool = True                  # fuse the embedding of the flipped image into verification scores
    flip_for_quality: bool = False     # ERC/EDC scores from flip-fused features too (official MagFace: no flip)
    fmr: float = 1e-3                  # ERC/EDC: FNMR at this false match rate
    bootstrap: int = 200               # resamples of the evaluation identities for 95 % CIs (0: no CIs)
    ci_level: float = 0.95
    batch_size: int = 256
    # Identity-disjoint validation/test split (for tuning; validation numbers are never reported): the built-in data's
    # first `validation_folds` folds of evaluation identities are validation, the rest test (0: no split); real
    # data names its validation packs (paths or names of data.eval_bins), the other packs are test.
    validation_folds: int = 3
    validation_bins: list = field(default_factory=list)
    # An IJB-B/C release (insightface's layout, harness/data/ijb.py) evaluated after the sets above ("": none), in
    # these protocol modes (harness/measures/ijb.py): results in RUN/eval/ijb/ and the ijb_* table columns.
    ijb: str = ""
    ijb_set: str = "IJBC"
    ijb_modes: list = field(default_factory=lambda: ["N1D1F1", "N0D1F1", "MagFace+"])


@dataclass
class RunConfig:
    out: str = "results/run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """The inverse of to_dict (e.g. a run folder's config.json), type-checked and validated."""
        cfg = apply_values(cls(), values)
        validate(cfg)
        return cfg

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained model: the config without the output folder, the data cache
        location, the loader's worker count, the verification packs and the evaluation settings (a run is evaluated
        again, not retrained, when only those change), with the synthetic generator's version and the head's
        resolved hyper-parameters (so a changed generator or library default is a new run, never a stale reuse)."""
        d = self.to_dict()
        d.pop("out")
        d.pop("eval")
        for key in ("cache_dir", "workers", "eval_bins"):   # where data lives, how it loads, what is evaluated
            d["data"].pop(key)
        d["data"]["synthetic_key"] = self.data.synthetic.key()   # includes the generator's version
        d["head"]["params"] = resolved_head(self).hparams
        for section, key in LATER_KEYS:   # at their default, keys added later leave stored runs' hashes unchanged
            if d[section][key] == getattr(type(getattr(self, section))(), key):
                d[section].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Keys added after runs were stored: they enter the fingerprint only when set away from their default.
LATER_KEYS = (("train", "deterministic"),)
# Evaluation keys added after runs were evaluated: a stored evaluation without them is current while they are at
# their default (harness.sweeps.status.evaluation_of), so adding them re-evaluates nothing.
LATER_EVAL_KEYS = ("ijb", "ijb_set", "ijb_modes")


def eval_settings(values: dict) -> dict:
    """The evaluation settings that make an evaluation (the later keys only where set away from their default)."""
    defaults = dataclasses.asdict(EvalConfig())
    return {k: v for k, v in values.items() if not (k in LATER_EVAL_KEYS and v == defaults[k])}

CHOICES = {("data", "source"): ("synthetic", "recordio", "folder", "list"),
           ("optim", "schedule"): ("step", "poly"), ("train", "amp"): ("none", "bf16", "fp16"),
           ("train", "device"): ("auto", "cpu", "cuda")}


def _coerce(where: str, value, typ):
    origin = typing.get_origin(typ) or typ
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (int, float, str, bool, list, dict) and not (isinstance(value, origin) and
                                                              not (origin is int and isinstance(value, bool))):
        raise ValueError(f"config key {where}: expected {origin.__name__}, got {value!r} ({type(value).__name__})")
    return value


def apply_values(obj, values: dict, prefix: str = ""):
    """obj with `values` applied (a new instance for a frozen dataclass such as SyntheticConfig). A dict field
    keeps the default entries a value does not name (e.g. the degradation probabilities)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {where!r}; valid keys{' in [' + prefix[:-1] + ']' if prefix else ''}:"
                             f" {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}: expected a table of keys, got {value!r}")
            changes[key] = apply_values(current, value, f"{where}.")
        else:
            value = _coerce(where, value, hints[key])
            default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
            changes[key] = {**default, **value} if isinstance(value, dict) and default else value
    if not obj.__dataclass_params__.frozen:
        for key, value in changes.items():
            setattr(obj, key, value)
        return obj
    try:
        return dataclasses.replace(obj, **changes)
    except ValueError as exc:
        raise ValueError(f"config key {prefix[:-1]}: {exc}") from None


def load_toml(path: str, seen=()) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"config file {path} not found")
    with open(path, "rb") as f:
        values = tomllib.load(f)
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = os.path.join(os.path.dirname(path), base)
    if os.path.abspath(base_path) in seen:
        raise ValueError(f"config {path}: circular base {base}")
    merged = load_toml(base_path, seen + (os.path.abspath(path),))
    head = values.get("head", {})
    if "name" in head and "params" not in head:
        switch_head(merged, head["name"], f"{path} sets head.name")
    _merge(merged, values)
    return merged


def _merge(into: dict, update: dict):
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def switch_head(values: dict, name: str, why: str) -> None:
    """A new head name: the old head's parameters do not carry over."""
    head = values.setdefault("head", {})
    old = head.get("name", HeadConfig.name)
    if name != old and head.get("params"):
        print(f"note: {why}={name!r} (was {old!r}): dropping {old}'s parameters {head['params']}", file=sys.stderr)
        head["params"] = {}
    head["name"] = name


def parse_override(text: str) -> tuple[list, object]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); the value is parsed as TOML (strings may be bare)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r}: empty key part in {key!r}")
    return parts, value


def apply_overrides(values: dict, overrides) -> dict:
    """Apply `section.key=value` texts to a values dict: a dotted key sets one value, an inline table replaces the
    table it names. A head.name that changes the head is applied first and drops the old head's parameters, so
    the parameters given beside it (in any order) are the new head's."""
    parsed = [parse_override(t) for t in overrides]
    for parts, value in parsed:
        if parts == ["head", "name"]:
            switch_head(values, value, "--set head.name")
    for parts, value in parsed:
        set_value(values, parts, value)
    return values


def set_value(values: dict, parts: list, value) -> None:
    """values[parts[0]][parts[1]]... = value, creating the tables on the way (a table value replaces the table)."""
    node = values
    for p in parts[:-1]:
        if not isinstance(node.setdefault(p, {}), dict):
            raise ValueError(f"config key {'.'.join(parts)}: {p!r} is a value, not a table")
        node = node[p]
    node[parts[-1]] = copy.deepcopy(value)


def load_config(path: str | None = None, overrides=()) -> RunConfig:
    """Defaults <- config file (and its bases) <- overrides; then validated."""
    values = apply_overrides(load_toml(path) if path else {}, overrides)
    cfg = apply_values(RunConfig(), values)
    validate(cfg)
    return cfg


def resolved_head(cfg: RunConfig, num_classes: int = 2):
    """The head the config describes (on `num_classes` classes, or the fewest the head accepts), built quietly: its
    `hparams` hold every value, defaults included. The feasibility warning is the trainer's to print."""
    head_class = HEADS.get(cfg.head.name)
    num_classes = max(num_classes, head_class.min_classes if head_class else 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_head(cfg.head.name, num_classes, cfg.model.embedding_size, **cfg.head.params)


def validate(cfg: RunConfig) -> None:
    """Impossible values fail here, before any data is touched, naming the key."""
    for (section, key), options in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in options:
            raise ValueError(f"config key {section}.{key}={value!r} is not one of {options}")
    check_ranges(cfg)
    if not 0 < cfg.eval.fmr < 1:
        raise ValueError(f"config key eval.fmr={cfg.eval.fmr} must be in (0, 1)")
    if not 0 < cfg.eval.ci_level < 1:
        raise ValueError(f"config key eval.ci_level={cfg.eval.ci_level} must be in (0, 1)")
    if cfg.eval.bootstrap < 0 or 0 < cfg.eval.bootstrap < 20:
        raise ValueError(f"config key eval.bootstrap={cfg.eval.bootstrap}: expected 0 (no CIs) or at least 20 "
                         "resamples")
    if cfg.data.source != "synthetic" and not os.path.exists(cfg.data.path):
        raise ValueError(f"config key data.path={cfg.data.path!r}: not found (needed for source "
                         f"{cfg.data.source!r})")
    for p in cfg.data.eval_bins:
        if not os.path.isfile(p):
            raise ValueError(f"config key data.eval_bins: {p!r} not found")
    by_name = {}
    for p in cfg.data.eval_bins:
        if pack_name(p) in by_name:
            raise ValueError(f"config key data.eval_bins: {by_name[pack_name(p)]!r} and {p!r} share the name "
                             f"{pack_name(p)!r}, under which their results and arrays are stored; rename one file")
        by_name[pack_name(p)] = p
    if cfg.data.source != "synthetic" and not cfg.data.eval_bins:
        raise ValueError("config key data.eval_bins: real training data needs verification packs (.bin) to "
                         "evaluate on")
    check_split(cfg)
    check_ijb(cfg.eval)
    check_milestones(cfg.optim.milestones)
    resolved_head(cfg)   # the head name and its parameters are checked now, not mid-run
