"""Did the mechanism under test operate, and does training reach the theory's optimum? Read from a run's training
log and per-sample dumps (no model): whether the loss has flattened, where the target cosines sit, how much of
[l_m, u_m] MagFace's realised margin spans, and, for every dumped sample, the theory's optimal magnitude
a*(cos theta_y, lse_neg) under the run's own s, lambda_g, band, margins and theta policy, against the magnitude the
network produced."""
from __future__ import annotations

import os
import re

import numpy as np
from scipy import stats

import theory
from harness.config import RunConfig, resolved_head
from harness.files import read_json, read_jsonl, read_npz

DUMP_NAME = re.compile(r"step_\d{8}\.npz")   # the trainer's dumps (not the temporary files of an unfinished write)

MAGNITUDE_HEADS = {"magface": "arc", "mag_cosface": "cos"}


def training_diagnostics(run_dir: str, cfg: RunConfig) -> dict:
    """Scalars for the run's table row (train_*, margin_*, theory_*) plus `theory_by_step`, one entry per dump."""
    rows = _log_rows(run_dir)
    out = _loss_flattening(rows)
    hp = resolved_head(cfg).hparams
    calibrated = _calibration(run_dir) if hp.get("l_a") == "auto" else {}
    hp = {**hp, **{k: v for k, v in calibrated.items() if k != "step"}}
    out.update({f"calibrated_{k}": v for k, v in calibrated.items() if k != "step"})
    dumps = _dumps(run_dir)
    if dumps:
        cos = dumps[-1][1]["cos_target"]
        out.update(train_cos_median=float(np.median(cos)), train_cos_nonpositive_share=float(np.mean(cos <= 0)))
    if not dumps and rows and "margin_p5" in rows[-1] and hp["u_m"] > hp["l_m"]:   # train.dump_every = 0: the
        last = rows[-1]                                       # log's last batch, counted as the head logs it
        out.update(margin_p5=last["margin_p5"], margin_p50=last["margin_p50"], margin_p95=last["margin_p95"],
                   margin_span_share=(last["margin_p95"] - last["margin_p5"]) / (hp["u_m"] - hp["l_m"]))
    if cfg.head.name in MAGNITUDE_HEADS and dumps and not isinstance(hp["l_a"], str):   # (an uncalibrated "auto")
        out.update(realised_margin(dumps[-1][1], hp))
        # dump step k holds batch k - 1; an "auto" band is set before batch `since`, so dumps after it saw the band
        since = calibrated.get("step", -1)
        by_step = [dict(step=step, **theory_agreement(d, hp, MAGNITUDE_HEADS[cfg.head.name]))
                   for step, d in dumps if step > since]
        if by_step:
            out.update({k: v for k, v in by_step[-1].items() if k != "step"})
            out["theory_by_step"] = by_step
            out["theory_margin_span_widest"] = widest_span(dumps[-1][1], hp, MAGNITUDE_HEADS[cfg.head.name])
    return out


def margin_applies(cos, hp: dict):
    """The samples whose target logit carries MagFace's margin: under "easy" those with cos theta_y > 0."""
    return cos > 0 if hp.get("theta_policy", "none") == "easy" else np.ones(len(cos), dtype=bool)


def realised_margin(dump, hp: dict) -> dict:
    """The margin m(a) the last dumped batch carried, over the samples that carry it (as the head logs it):
    margin_p5/p50/p95 and margin_span_share = (p95 - p5) / (u_m - l_m); margin_span_share_all counts every
    sample, also those a theta policy leaves without a margin (the span tables reported before evaluation
    version 4); margin_applied_share is the share that carries one. NaN where no sample does."""
    if not hp["u_m"] > hp["l_m"]:
        return {}
    a, cos = dump["norms"].astype(float), dump["cos_target"].astype(float)
    band = dict(l_a=hp["l_a"], u_a=hp["u_a"], l_m=hp["l_m"], u_m=hp["u_m"])
    applied = margin_applies(cos, hp)
    out = {"margin_applied_share": float(np.mean(applied)),
           "margin_span_share_all": theory.margin_span_share(a, **band)}
    if not applied.any():
        return {**out, "margin_p5": float("nan"), "margin_p50": float("nan"), "margin_p95": float("nan"),
                "margin_span_share": float("nan")}
    p5, p50, p95 = theory.margin(np.quantile(np.clip(a[applied], hp["l_a"], hp["u_a"]), [0.05, 0.5, 0.95]), **band)
    return {**out, "margin_p5": float(p5), "margin_p50": float(p50), "margin_p95": float(p95),
            "margin_span_share": theory.margin_span_share(a[applied], **band)}


def theory_agreement(dump, hp: dict, form: str) -> dict:
    """Spearman rho between the produced magnitudes a and the optimum a*, the median |a - a*| / (u_a - l_a), the
    share of [l_m, u_m] that m(a*) spans over the samples that carry the margin (p5-p95: what the margin would
    span at the optimum), and the share of
    samples inside the theorem's assumption theta_y + u_m <= pi/2. NaN where the dump has no lse_neg (torchrun) or
    the head's theta policy has no derived optimum ("threshold")."""
    a, cos, lse = dump["norms"].astype(float), dump["cos_target"].astype(float), dump.get("lse_neg")
    share = float(np.mean(theory.assumption_holds(np.clip(cos, -1, 1), u_m=hp["u_m"], form=form)))
    policy = hp.get("theta_policy", "none")
    if lse is None or not np.all(np.isfinite(lse)) or policy not in ("none", "easy"):
        return {"theory_rho_a_astar": float("nan"), "theory_gap_median": float("nan"),
                "theory_margin_span_share": float("nan"), "theory_assumption_share": share}
    a_star = theory.optimal_magnitude(np.clip(cos, -1, 1), lse, s=hp["s"], lambda_g=hp["lambda_g"], l_a=hp["l_a"],
                                      u_a=hp["u_a"], l_m=hp["l_m"], u_m=hp["u_m"], form=form, theta_policy=policy)
    rho = stats.spearmanr(a, a_star)[0] if np.ptp(a_star) > 0 and np.ptp(a) > 0 else float("nan")
    return {"theory_rho_a_astar": float(rho),
            "theory_gap_median": float(np.median(np.abs(a - a_star)) / (hp["u_a"] - hp["l_a"])),
            "theory_margin_span_share": _applied_span(a_star, cos, hp),
            "theory_assumption_share": share}


def _applied_span(a_star, cos, hp: dict) -> float:
    applied = margin_applies(cos, hp)
    if not hp["u_m"] > hp["l_m"] or not applied.any():
        return float("nan")
    return theory.margin_span_share(a_star[applied], l_a=hp["l_a"], u_a=hp["u_a"], l_m=hp["l_m"], u_m=hp["u_m"])


def widest_span(dump, hp: dict, form: str) -> float:
    """The largest share of [l_m, u_m] that m(a*) could span on this batch's margin-carrying samples under any band
    and any lambda_g >= the bound (theory.widest_margin_span): the ceiling a margin-span target meets on this
    batch. NaN as above, or where no sample carries the margin."""
    lse, policy = dump.get("lse_neg"), hp.get("theta_policy", "none")
    if lse is None or not np.all(np.isfinite(lse)) or policy not in ("none", "easy") or not hp["u_m"] > hp["l_m"]:
        return float("nan")
    cos = np.clip(dump["cos_target"].astype(float), -1, 1)
    applied = margin_applies(cos, hp)
    if not applied.any():
        return float("nan")
    return theory.widest_margin_span(cos[applied], lse[applied].astype(float), s=hp["s"], l_m=hp["l_m"],
                                     u_m=hp["u_m"], form=form, theta_policy=policy)["span"]


def optimum_curve(run_dir: str, cfg: RunConfig, dump: dict, points: int = 200):
    """The theory's a*(cos theta_y) at the dump's median lse_neg with the run's own parameters and theta policy, over
    the dump's range of cos theta_y: (cos grid, a*), or None for a head without a magnitude band or a dump without
    lse_neg. Drawn over the paper's Fig. 3 to show whether training reaches the theorem's optimum."""
    hp = resolved_head(cfg).hparams
    if hp.get("l_a") == "auto":
        hp = {**hp, **{k: v for k, v in _calibration(run_dir).items() if k != "step"}}
    lse = dump.get("lse_neg")
    policy = hp.get("theta_policy", "none")
    if (cfg.head.name not in MAGNITUDE_HEADS or isinstance(hp["l_a"], str) or lse is None
            or not np.all(np.isfinite(lse)) or policy not in ("none", "easy")):
        return None
    cos = np.clip(dump["cos_target"].astype(float), -1, 1)
    grid = np.linspace(cos.min(), cos.max(), points)
    a_star = theory.optimal_magnitude(grid, float(np.median(lse)), s=hp["s"], lambda_g=hp["lambda_g"], l_a=hp["l_a"],
                                      u_a=hp["u_a"], l_m=hp["l_m"], u_m=hp["u_m"], form=MAGNITUDE_HEADS[cfg.head.name],
                                      theta_policy=policy)
    return grid, a_star


def _calibration(run_dir: str) -> dict:
    """The band an "auto" MagFace run measured (calibration.json), to stand in for the "auto" of its config."""
    path = os.path.join(run_dir, "calibration.json")
    if not os.path.isfile(path):
        return {}
    info = read_json(path, "calibration record")
    return {k: info[k] for k in ("l_a", "u_a", "lambda_g", "step")}


def _log_rows(run_dir: str) -> list:
    path = os.path.join(run_dir, "metrics.jsonl")
    return read_jsonl(path) if os.path.isfile(path) else []


def _loss_flattening(rows: list) -> dict:
    """Mean training loss of the last epoch and its relative change from the epoch before (None with one epoch)."""
    by_epoch = {}
    for r in rows:
        by_epoch.setdefault(r["epoch"], []).append(r["loss"])
    means = [float(np.mean(v)) for _, v in sorted(by_epoch.items())]
    if not means:
        return {}
    change = (means[-1] - means[-2]) / abs(means[-2]) if len(means) > 1 and means[-2] else None
    return {"train_loss_last_epoch": means[-1], "train_loss_change_last_epoch": change}


def _dumps(run_dir: str) -> list:
    """[(step, {array name: array})] of the run's dumps, in step order."""
    folder = os.path.join(run_dir, "dumps")
    names = sorted(f for f in os.listdir(folder) if DUMP_NAME.fullmatch(f)) if os.path.isdir(folder) else []
    return [(int(name[5:13]), read_npz(os.path.join(folder, name), "training dump")) for name in names]
