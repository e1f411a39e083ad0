"""benchmarks/compare_losses.py at a tiny size: every head on clean and noisy data, tables and figure, reuse."""
import csv
import subprocess
import sys

import pytest
from support import ROOT
from tiny import TINY

from benchmarks.compare_losses import main

pytestmark = pytest.mark.slow   # trains runs or starts processes: deselect with -m "not slow"


def run(tmp_path, *extra, ok=True):
    args = [sys.executable, "benchmarks/compare_losses.py", "--out", str(tmp_path / "cmp"), "--figures",
            str(tmp_path / "fig"),
            *[a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"'] for a in ("--set", s)],
            *extra]
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert (res.returncode == 0) == ok, res.stderr[-3000:]
    return res


def test_the_papers_heads_on_clean_and_noisy_data_then_reuse(tmp_path):
    """The paper's six heads (the spec's other eight train in tests/harness/training/test_harness_train.py; here the
    script's tables, figure and reuse are what is tested)."""
    heads = ["softmax", "sphereface", "cosface", "arcface", "magface", "adaface"]
    out = run(tmp_path, "--quick", "--heads", ",".join(heads)).stdout
    with open(tmp_path / "cmp" / "compare_losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["condition"], r["head"], r["seed"]) for r in rows] == [(c, h, "0") for c in ("clean", "noisy")
                                                                      for h in heads]
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert "noisy" in out and (tmp_path / "fig" / "compare_losses_quick.png").stat().st_size > 20_000
    with open(tmp_path / "cmp" / "compare_losses_comparison.csv") as f:
        comparison = list(csv.DictReader(f))
    assert {c["head"] for c in comparison} == set(heads) - {"magface"}
    assert all(c["verdict"].startswith("not computable: ") for c in comparison)   # one seed: no interval
    with open(tmp_path / "cmp" / "compare_losses_vs_arcface.csv") as f:             # the newer papers' baseline
        assert {c["head"] for c in csv.DictReader(f)} == set(heads) - {"arcface"}
    with open(tmp_path / "cmp" / "noise_robustness.csv") as f:
        assert [r["head"] for r in csv.DictReader(f)] == heads
    # a second seed for one head: seed 0 is reused on both conditions, seed 1 is trained
    again = run(tmp_path, "--quick", "--heads", "magface", "--seeds", "0,1").stdout
    assert "2 run(s) reused" in again and "2 new run(s)" in again and "95 % t interval" in again
    assert len(list((tmp_path / "cmp" / "runs").iterdir())) == 14   # the other heads' runs are still there
    with open(tmp_path / "cmp" / "compare_losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["condition"], r["seed"]) for r in rows] == [("clean", "0"), ("clean", "1"), ("noisy", "0"),
                                                           ("noisy", "1")]
    assert rows[0]["accuracy"] != rows[1]["accuracy"] or rows[0]["spearman_rho"] != rows[1]["spearman_rho"]
    with open(tmp_path / "cmp" / "compare_losses_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(s["condition"], s["seeds"]) for s in summary] == [("clean", "2"), ("noisy", "2")]
    accs = [float(r["accuracy"]) for r in rows[:2]]
    assert abs(float(summary[0]["accuracy_mean"]) - (accs[0] + accs[1]) / 2) < 1e-12
    assert float(summary[0]["accuracy_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    half = 12.706 * abs(accs[0] - accs[1]) / 2   # t(0.975, 1 df) * sd / sqrt(2)
    assert float(summary[0]["accuracy_ci_high"]) == pytest.approx(float(summary[0]["accuracy_mean"]) + half, rel=1e-3)


def test_bad_arguments_are_refused(tmp_path, refused):
    err = refused(main, "--heads", "softmax,nosuchloss", "--out", tmp_path)
    assert "['nosuchloss'] are neither [heads] labels" in err and "magface" in err
    assert "repeated values ['0']" in refused(main, "--seeds", "0,0")
    err = refused(main, "--conditions", "dirty", "--out", tmp_path)
    assert "condition' values ['dirty'] are not [conditions] labels (clean, noisy)" in err
    (tmp_path / "rec").mkdir()
    (tmp_path / "lfw.bin").write_bytes(b"")
    err = refused(main, "--data", tmp_path / "rec", "--eval-bins", tmp_path / "lfw.bin", "--out", tmp_path)
    assert "condition 'noisy' changes the built-in synthetic data" in err
    assert "--eval-bins" in refused(main, "--data", tmp_path / "rec", "--out", tmp_path)
