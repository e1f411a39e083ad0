"""Training diagnostics from a run folder: loss flattening, margin spread, target cosines, and the theory's a*
against the produced magnitudes, on hand-made logs and dumps."""
import json

import numpy as np
import pytest

import theory
from harness.config import load_config
from harness.evaluation.diagnostics import training_diagnostics

HP = dict(s=32.0, l_a=1.0, u_a=51.0, l_m=0.45, u_m=0.8, lambda_g=5.0)


def make_run(tmp_path, norms, cos, lse, rows):
    (tmp_path / "dumps").mkdir()
    np.savez(tmp_path / "dumps" / "step_00000010.npz", norms=norms, cos_target=cos, lse_neg=lse)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_config(None, [f"head.params={{{', '.join(f'{k} = {v}' for k, v in HP.items())}}}"])


def test_magnitudes_at_the_optimum_agree_perfectly(tmp_path):
    rng = np.random.default_rng(0)
    cos = rng.uniform(-0.6, 0.95, 64)   # cos <= 0: no margin under the head's "easy" policy, so a* = u_a there
    lse = rng.uniform(3, 12, 64)
    a_star = theory.optimal_magnitude(cos, lse, **HP, theta_policy="easy")
    assert np.all(a_star[cos <= 0] == HP["u_a"]) and (cos <= 0).any()
    rows = [{"epoch": 0, "loss": 4.0}, {"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 2.7},
            {"epoch": 1, "loss": 2.7, "margin_p5": 0.5, "margin_p50": 0.6, "margin_p95": 0.675}]
    d = training_diagnostics(str(tmp_path), make_run(tmp_path, a_star, cos, lse, rows))
    assert d["theory_rho_a_astar"] == pytest.approx(1.0) and d["theory_gap_median"] == pytest.approx(0.0, abs=1e-9)
    assert d["theory_assumption_share"] == pytest.approx(np.mean(np.arccos(cos) + 0.8 <= np.pi / 2))
    assert d["train_loss_last_epoch"] == 2.7 and d["train_loss_change_last_epoch"] == pytest.approx(-0.1)
    assert d["train_cos_median"] == pytest.approx(np.median(cos))
    # the realised margin counts the samples that carry one (cos > 0 under "easy"); m is linear in a on the band
    lo, hi = np.quantile(a_star[cos > 0], [0.05, 0.95])
    assert d["margin_span_share"] == pytest.approx((hi - lo) / (HP["u_a"] - HP["l_a"]))
    assert d["margin_applied_share"] == pytest.approx(np.mean(cos > 0))
    lo_all, hi_all = np.quantile(a_star, [0.05, 0.95])
    assert d["margin_span_share_all"] == pytest.approx((hi_all - lo_all) / (HP["u_a"] - HP["l_a"]))
    assert d["margin_span_share_all"] > d["margin_span_share"]   # the margin-less samples sit at u_a
    assert d["theory_margin_span_share"] == pytest.approx(d["margin_span_share"])   # a = a* here
    applied = cos > 0   # the ceiling is searched on the margin-carrying samples of the last dump
    assert d["theory_margin_span_widest"] == pytest.approx(theory.widest_margin_span(
        cos[applied], lse[applied], s=HP["s"], l_m=HP["l_m"], u_m=HP["u_m"], theta_policy="easy")["span"])
    assert [s["step"] for s in d["theory_by_step"]] == [10]


def test_no_lse_neg_or_no_optimum_gives_nan_not_a_number_made_up(tmp_path):
    cos = np.array([0.2, -0.3, 0.7])
    d = training_diagnostics(str(tmp_path), make_run(tmp_path, np.array([5.0, 9.0, 20.0]), cos,
                                                     np.full(3, np.nan), [{"epoch": 0, "loss": 1.0}]))
    assert np.isnan(d["theory_rho_a_astar"]) and d["train_loss_change_last_epoch"] is None
    assert d["train_cos_nonpositive_share"] == pytest.approx(1 / 3)


def test_a_policy_without_a_derived_optimum_reports_nan(tmp_path):
    cos = np.array([0.2, 0.5, 0.7])
    cfg = make_run(tmp_path, np.array([5.0, 9.0, 20.0]), cos, np.array([3.0, 4.0, 5.0]), [{"epoch": 0, "loss": 1.0}])
    cfg.head.params = {**cfg.head.params, "theta_policy": "threshold"}
    d = training_diagnostics(str(tmp_path), cfg)
    assert np.isnan(d["theory_rho_a_astar"]) and np.isnan(d["theory_gap_median"])
    assert d["theory_assumption_share"] == pytest.approx(np.mean(np.arccos(cos) + 0.8 <= np.pi / 2))
