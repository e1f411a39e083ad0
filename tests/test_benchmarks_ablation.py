"""benchmarks/ablation.py at a tiny size: results written, figure non-empty, cache reuse and recompute."""
import csv
import os
import subprocess
import sys


from tiny import TINY as BASE_TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = BASE_TINY + ["train.epochs=2"]


def run(tmp_path, *extra):
    args = [sys.executable, "benchmarks/ablation.py", "--quick", "--out", str(tmp_path / "abl"), "--figures",
            str(tmp_path / "fig"), *[a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"'] for a in ("--set", s)],
            *extra]
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_quick_sweep_writes_table_and_figure_then_reuses_cells(tmp_path):
    run(tmp_path)
    with open(tmp_path / "abl" / "ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["l_m"]), float(r["u_m"])) for r in rows] == [(0.4, 0.7), (0.4, 0.8), (0.45, 0.7), (0.45, 0.8)]
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and r["erc_area"] and r["config_hash"]
    assert (tmp_path / "abl" / "ablation.json").stat().st_size > 100
    assert (tmp_path / "abl" / "ablation_heatmaps.png").stat().st_size > 20_000
    assert (tmp_path / "fig" / "ablation_heatmaps_quick.png").is_file()
    again = run(tmp_path)
    assert "4 cell(s) reused" in again and "0 new cell(s)" in again
    os.remove(tmp_path / "abl" / "cells" / "lm0.4_um0.8" / "cell.json")   # as if killed before it was recorded
    resumed = run(tmp_path)
    assert "lm0.4_um0.8: resuming an unfinished run" in resumed and "1 new cell(s)" in resumed
    changed = run(tmp_path, "--lambda-g", "6.0")
    assert changed.count("from a different configuration") == 4 and "4 new cell(s)" in changed


def test_bad_grid_is_refused(tmp_path):
    res = subprocess.run([sys.executable, "benchmarks/ablation.py", "--l-m", "0.5,0.9", "--u-m", "0.8",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "l_m > u_m" in res.stderr and "(0.9, 0.8)" in res.stderr
    res = subprocess.run([sys.executable, "benchmarks/ablation.py", "--data", str(tmp_path / "nope"),
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "not found" in res.stderr
