"""Typed run configuration: dataclasses, loaded from TOML with `key=value` overrides; unknown keys are errors.

A config file may name a `base` file (relative to itself) whose values it overrides, so experiments are small
override files on top of one base. Every value is type-checked against the dataclass field types.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class DataConfig:
    source: str = "synthetic"          # synthetic | recordio | folder | list
    path: str = ""                     # root (recordio, folder) or list file; unused for synthetic
    eval_bins: list = field(default_factory=list)   # verification packs (.bin) for real data
    size: int = 32                     # synthetic image size (real data: 112)
    train_identities: int = 500
    train_images_per_identity: int = 40
    eval_identities: int = 200
    eval_images_per_identity: int = 10
    label_noise: float = 0.0
    garbage: float = 0.0
    seed: int = 0
    cache_dir: str = ""                # synthetic cache; empty: MAGFACE_BENCH_CACHE or ~/.cache/magface-bench
    workers: int = 0                   # DataLoader workers for files on disk


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


@dataclass
class EvalConfig:
    flip: bool = True                  # fuse the embedding of the flipped image (cosine scores only)
    fmr: float = 1e-3                  # ERC: FNMR at this false match rate
    batch_size: int = 256


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
    def from_dict(cls, values: dict) -> "RunConfig":
        """The inverse of to_dict (e.g. a run folder's config.json), type-checked and validated."""
        cfg = cls()
        _apply(cfg, values)
        validate(cfg)
        return cfg


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


def _apply(obj, values: dict, prefix: str = ""):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {where!r}; valid keys{' in [' + prefix[:-1] + ']' if prefix else ''}:"
                             f" {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where}: expected a table of keys, got {value!r}")
            _apply(current, value, f"{where}.")
        else:
            setattr(obj, key, _coerce(where, value, hints[key]))


def _load_toml(path: str, seen=()) -> dict:
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
    merged = _load_toml(base_path, seen + (os.path.abspath(path),))
    _merge(merged, values)
    return merged


def _merge(into: dict, update: dict):
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def parse_override(text: str) -> dict:
    """'train.epochs=3' -> {'train': {'epochs': 3}}; the value is parsed as TOML (strings may be bare)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | None = None, overrides=()) -> RunConfig:
    """Defaults <- config file (and its bases) <- overrides; then validated."""
    values = _load_toml(path) if path else {}
    for text in overrides:
        _merge(values, parse_override(text))
    cfg = RunConfig()
    _apply(cfg, values)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Impossible values fail here, before any data is touched, naming the key."""
    for (section, key), options in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in options:
            raise ValueError(f"config key {section}.{key}={value!r} is not one of {options}")
    positive = [("train", "epochs"), ("train", "batch_size"), ("model", "embedding_size"), ("data", "size"),
                ("eval", "batch_size"), ("train", "log_every"), ("train", "checkpoint_every")]
    for section, key in positive:
        if getattr(getattr(cfg, section), key) < 1:
            raise ValueError(f"config key {section}.{key}={getattr(getattr(cfg, section), key)} must be >= 1")
    if cfg.optim.lr <= 0:
        raise ValueError(f"config key optim.lr={cfg.optim.lr} must be > 0")
    if not 0 < cfg.eval.fmr < 1:
        raise ValueError(f"config key eval.fmr={cfg.eval.fmr} must be in (0, 1)")
    if cfg.data.source != "synthetic" and not os.path.exists(cfg.data.path):
        raise ValueError(f"config key data.path={cfg.data.path!r}: not found (needed for source "
                         f"{cfg.data.source!r})")
    for p in cfg.data.eval_bins:
        if not os.path.isfile(p):
            raise ValueError(f"config key data.eval_bins: {p!r} not found")
    if cfg.data.source != "synthetic" and not cfg.data.eval_bins:
        raise ValueError("config key data.eval_bins: real training data needs verification packs (.bin) to "
                         "evaluate on")
    if sorted(cfg.optim.milestones) != list(cfg.optim.milestones):
        raise ValueError(f"config key optim.milestones={cfg.optim.milestones} must be increasing")
    from losses import build_head  # validates the head name and its parameters now, not mid-run
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_head(cfg.head.name, 2, cfg.model.embedding_size, **cfg.head.params)
