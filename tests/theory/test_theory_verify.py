"""Structured reports, validity maps and the CLI on the paper's setting."""
import math
import os

import numpy as np
import pytest

import theory
from theory.__main__ import main as theory_cli

PAPER = theory.MagParams()


def test_paper_setting_holds_inside_the_assumption():
    grid = theory.Grid.within_assumption(PAPER, 40)
    for check in (theory.check_convexity, theory.check_interior_optimum, theory.check_monotonicity):
        report = check(PAPER, grid)
        assert report.holds, str(report)
        assert report.counterexample is None and report.n_violations == 0
    assert theory.check_monotonicity(PAPER, grid).notes["unique_optimum"]


def test_full_angle_range_reports_real_counterexamples():
    grid = theory.Grid.full(PAPER, 40)
    conv = theory.check_convexity(PAPER, grid)
    assert not conv.holds and conv.worst < 0
    ce = conv.counterexample
    assert float(theory.magnitude_loss_d2(ce["a"], ce["cos_y"], ce["lse_neg"], **PAPER.kwargs())) == ce["d2L_da2"] < 0
    assert ce["theta"] + float(theory.margin(ce["a"], l_a=10, u_a=110, l_m=0.45, u_m=0.8)) > math.pi / 2
    mono = theory.check_monotonicity(PAPER, grid)
    assert not mono.holds
    ce = mono.counterexample
    assert ce["a_star_next"] < ce["a"] - 1e-6
    assert "counterexample" in str(mono) and "FAILS" in str(mono)


def test_lambda_g_below_bound_breaks_only_the_interior_optimum():
    low = PAPER.replace(lambda_g=20.0)
    report = theory.check_interior_optimum(low, theory.Grid.full(low, 60))
    assert not report.holds
    assert report.worst == pytest.approx(0.0256, abs=2e-4)  # PAPER.md 2.5: L'(l_a) = +0.0257 for the hardest
    assert abs(report.counterexample["cos_y"] - math.sin(0.45)) < 0.05  # worst case: theta + l_m = pi/2
    assert theory.check_interior_optimum(PAPER, theory.Grid.full(PAPER, 60)).holds


def test_mag_cosface_holds_for_every_angle():
    p = PAPER.replace(form="cos", l_m=0.35, lambda_g=150.0)
    grid = theory.Grid.full(p, 40)
    assert theory.check_convexity(p, grid).holds
    assert theory.check_monotonicity(p, grid).holds


def test_validity_map_agrees_with_the_bound_and_the_angle_condition():
    vm = theory.validity_map(PAPER, theta=np.linspace(0.05, 3.0, 60), axis_name="lambda_g",
                             axis=np.array([10.0, 20.0, 22.0, 23.0, 35.0, 60.0]))
    inside = vm.theta + PAPER.u_m <= math.pi / 2
    assert vm.convex[:, inside].all() and vm.monotone[:, inside].all()
    above = vm.axis >= PAPER.lambda_g_min
    hard = (vm.theta > 0.95) & (vm.theta < 2.3)  # theta + m(a) near pi/2 .. pi: the worst case for L'(l_a)
    assert vm.interior[np.ix_(above, hard)].all()
    assert not vm.interior[np.ix_(~above, hard)].all()
    assert vm.a_star.shape == (6, 60)
    with pytest.raises(ValueError, match="axis_name='lse' is not one of"):
        theory.validity_map(PAPER, axis_name="lse")


def test_grid_sizes_and_params_validation():
    assert theory.Grid.full(PAPER).size == 10**6
    with pytest.raises(ValueError, match="l_a=20.0 must be < u_a=10.0"):
        theory.MagParams(l_a=20.0, u_a=10.0)


def test_cli_prints_bound_verdicts_and_writes_figures(tmp_path, capsys):
    theory_cli(["--n", "25", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "(l_m, u_m) = (0.45, 0.80): 22.5867" in out and "(l_m, u_m) = (0.40, 0.80): 25.8133" in out
    assert "convexity first fails at theta_y" in out and "points in" in out
    for stem in ("theory_loss_curves", "theory_optimum_vs_cos", "theory_validity_map", "theory_target_gradient"):
        for ext in ("png", "pdf"):
            path = tmp_path / f"{stem}.{ext}"
            assert path.stat().st_size > 10_000, path
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
