"""benchmarks/ablation.py at a tiny size: results written, figure non-empty, reuse, resume, and no result deleted
by a run of another configuration."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from support import ROOT
from tiny import TINY as BASE_TINY

from benchmarks.ablation import colour_range, main

pytestmark = pytest.mark.slow   # trains runs or starts processes: deselect with -m "not slow"

TINY = BASE_TINY + ["train.epochs=2"]


def arguments(tmp_path, *extra):
    return ["--quick", "--out", str(tmp_path / "abl"), "--figures", str(tmp_path / "fig"),
            *[a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"'] for a in ("--set", s)], *extra]


def run(tmp_path, *extra):
    """The script as a user starts it."""
    res = subprocess.run([sys.executable, "benchmarks/ablation.py", *arguments(tmp_path, *extra)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture
def run_here(tmp_path, capsys, monkeypatch):
    """The same in this process (no interpreter start-up), for the repeated calls."""
    monkeypatch.chdir(ROOT)

    def call(*extra):
        main(arguments(tmp_path, *extra))
        return capsys.readouterr().out
    return call


def rows(tmp_path):
    with open(tmp_path / "abl" / "ablation.csv") as f:
        return list(csv.DictReader(f))


def test_quick_sweep_writes_tables_reuses_resumes_and_keeps_other_configs(tmp_path, run_here):
    run(tmp_path)
    first = rows(tmp_path)
    assert [(float(r["l_m"]), float(r["u_m"])) for r in first] == [(0.4, 0.7), (0.4, 0.8), (0.45, 0.7), (0.45, 0.8)]
    for r in first:
        assert 0 <= float(r["accuracy"]) <= 1 and r["edc_pauc_20"] and r["fingerprint"] and r["lambda_g"] == "auto"
        assert "tar_far_1e-06: fewer than 1/1e-06 impostor pairs" in r["not_computable"]
        assert float(r["accuracy_ci_low"]) <= float(r["accuracy"]) <= float(r["accuracy_ci_high"])
        assert float(r["calibrated_l_a"]) < float(r["calibrated_u_a"])
    with open(tmp_path / "abl" / "ablation_vs_paper.csv") as f:
        versus = list(csv.DictReader(f))
    assert [(float(v["l_m"]), float(v["u_m"])) for v in versus] == [(0.4, 0.7), (0.45, 0.7), (0.45, 0.8)]
    for v in versus:
        assert float(v["diff_ci_low"]) <= float(v["diff_ci_high"]) and v["verdict"] in (
            "better", "worse", "no detectable difference (evaluation noise)")
    assert (tmp_path / "abl" / "ablation.json").stat().st_size > 100
    assert (tmp_path / "abl" / "ablation_heatmaps.png").stat().st_size > 20_000
    assert (tmp_path / "fig" / "ablation_heatmaps_quick.png").is_file()
    again = run_here()
    assert "4 run(s) reused" in again and "0 new cell(s)" in again
    os.remove(os.path.join(first[1]["run"], "result.json"))   # as if killed after training started
    resumed = run_here()
    assert f"{os.path.basename(first[1]['run']).split('-')[0]}: resuming an unfinished run" in resumed
    assert "1 new cell(s)" in resumed
    # another configuration: its own folders; the first runs stay, and the first command reuses them again
    changed = run_here("--lambda-g", "6.0")
    assert "4 new cell(s)" in changed and all(float(r["lambda_g"]) == 6.0 for r in rows(tmp_path))
    assert all(os.path.isfile(os.path.join(r["run"], "result.json")) for r in first)
    back = run_here()
    assert "4 run(s) reused" in back and [r["fingerprint"] for r in rows(tmp_path)] == [r["fingerprint"] for r in first]
    # pruning is explicit and lists what it removes: the lambda_g=6 runs go, the current spec's stay
    pruned = run_here("--prune")
    assert "pruned 4 run folder(s)" in pruned and pruned.count("removed ") == 4
    assert sorted(os.listdir(tmp_path / "abl" / "runs")) == sorted(os.path.basename(r["run"]) for r in first)


def test_bad_grid_is_refused(tmp_path, refused):
    err = refused(main, "--l-m", "0.5,0.9", "--u-m", "0.8", "--out", tmp_path)
    assert "l_m > u_m" in err and "(0.9, 0.8)" in err
    assert "not found" in refused(main, "--data", tmp_path / "nope", "--out", tmp_path)
    assert "repeated values ['0.4']" in refused(main, "--l-m", "0.4,0.4")
    assert "exclude each other" in refused(main, "--quick", "--dry-run", "--prune", "--out", tmp_path)


def test_a_panels_colour_range_is_at_least_its_typical_interval():
    """Differences inside the evaluation noise do not span the whole colour scale; one value alone keeps the
    scale's default."""
    rows = [{"accuracy": 0.90, "accuracy_ci_low": 0.80, "accuracy_ci_high": 1.00}, {"accuracy": 0.91}]
    assert colour_range(rows, "accuracy", np.array([[0.90, 0.91]])) == pytest.approx((0.805, 1.005))
    wide = [{"accuracy": 0.5, "accuracy_ci_low": 0.49, "accuracy_ci_high": 0.51}, {"accuracy": 0.9}]
    assert colour_range(wide, "accuracy", np.array([[0.5, 0.9]])) == pytest.approx((0.5, 0.9))
    assert colour_range([{"accuracy": 0.9}], "accuracy", np.array([[0.9]])) == (None, None)
