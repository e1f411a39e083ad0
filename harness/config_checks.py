"""The range and consistency checks of a run config's values (called by harness.config.validate before any data is
touched): every error names the key, the value and what was expected."""
from __future__ import annotations

import math
import os

from harness.measures.ijb import Mode as IJBMode


def pack_name(path: str) -> str:
    """The name a verification pack's metrics go under: its file name without extension (lfw.bin -> lfw)."""
    return os.path.splitext(os.path.basename(path))[0]


def check_split(cfg) -> None:
    k, folds = cfg.eval.validation_folds, cfg.data.synthetic.folds
    if not isinstance(k, int) or isinstance(k, bool) or k < 0 or k == 1:
        raise ValueError(f"config key eval.validation_folds={k!r}: expected 0 (no validation split) or an integer "
                         ">= 2 (accuracy on a split chooses each fold's threshold on its other folds)")
    if cfg.data.source == "synthetic" and k and k > folds - 2:
        raise ValueError(f"config key eval.validation_folds={k} leaves {folds - k} of data.synthetic.folds={folds} "
                         "folds for the test split; it needs at least 2")
    names = {pack_name(p): p for p in cfg.data.eval_bins}
    unknown = [v for v in cfg.eval.validation_bins if v not in names and v not in names.values()]
    if unknown:
        raise ValueError(f"config key eval.validation_bins={cfg.eval.validation_bins}: {unknown} are not among "
                         f"data.eval_bins (names {sorted(names)})")
    validation = {pack_name(v) for v in cfg.eval.validation_bins}
    if cfg.data.eval_bins and validation and not set(names) - validation:
        raise ValueError(f"config key eval.validation_bins={cfg.eval.validation_bins} makes every verification pack "
                         "a validation pack; leave at least one for the test numbers")


# (section, key): (lowest, highest, lowest included, highest included, what the range means). Every value must be a
# finite number in its range; the errors name key, value and range.
RANGES = {
    ("train", "epochs"): (1, math.inf, True, False, ""), ("train", "batch_size"): (1, math.inf, True, False, ""),
    ("train", "log_every"): (1, math.inf, True, False, ""),
    ("train", "checkpoint_every"): (1, math.inf, True, False, ""),
    ("train", "dump_every"): (0, math.inf, True, False, " (0 disables dumps)"),
    ("train", "max_steps"): (0, math.inf, True, False, " (0: run all epochs)"),
    ("train", "seed"): (0, 2**63 - 1, True, True, ""),
    ("train", "calibrate_at_epoch"): (0, math.inf, False, False, " (epochs before MagFace's 'auto' band is measured)"),
    ("model", "embedding_size"): (1, math.inf, True, False, ""), ("model", "width"): (1, math.inf, True, False, ""),
    ("model", "dropout"): (0, 1, True, False, ""), ("data", "workers"): (0, math.inf, True, False, ""),
    ("optim", "lr"): (0, math.inf, False, False, ""), ("optim", "momentum"): (0, 1, True, False, ""),
    ("optim", "weight_decay"): (0, math.inf, True, False, ""), ("optim", "gamma"): (0, math.inf, False, False, ""),
    ("optim", "warmup_epochs"): (0, math.inf, True, False, ""), ("optim", "power"): (0, math.inf, False, False, ""),
    ("optim", "grad_clip"): (0, math.inf, True, False, " (0 disables clipping)"),
    ("eval", "batch_size"): (1, math.inf, True, False, ""),
}


def check_ranges(cfg) -> None:
    for (section, key), (low, high, low_in, high_in, note) in RANGES.items():
        value = getattr(getattr(cfg, section), key)
        inside = (low <= value if low_in else low < value) and (value <= high if high_in else value < high)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and inside):
            bound = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:g}".replace("inf", "infinity")  # noqa: E731
            span = f"{'[' if low_in else '('}{bound(low)}, {bound(high)}{']' if high_in else ')'}"
            raise ValueError(f"config key {section}.{key}={value!r} must be a finite number in {span}{note}")
    if not cfg.out or not str(cfg.out).strip():
        raise ValueError("config key out='': give the run folder (--out DIR or --set out=\"DIR\")")


def check_ijb(e) -> None:
    if not e.ijb:
        return
    if e.ijb_set not in ("IJBB", "IJBC"):
        raise ValueError(f"config key eval.ijb_set={e.ijb_set!r} is not one of ('IJBB', 'IJBC')")
    if not os.path.isdir(e.ijb):
        raise ValueError(f"config key eval.ijb={e.ijb!r}: not found (an IJB release folder, insightface's layout)")
    for mode in e.ijb_modes:
        IJBMode.parse(mode)


def check_milestones(milestones: list) -> None:
    bad = [m for m in milestones if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m)
           or m < 0]
    if bad:
        raise ValueError(f"config key optim.milestones={milestones!r}: expected epochs (numbers >= 0), got {bad}")
    if sorted(milestones) != list(milestones):
        raise ValueError(f"config key optim.milestones={milestones} must be increasing")
