"""benchmarks/quality_vs_magnitude.py at a tiny size: four heads trained, tables and five figures written."""
import csv
import subprocess
import sys

import numpy as np
import pytest
from support import ROOT
from tiny import TINY as BASE_TINY

pytestmark = pytest.mark.slow   # trains runs or starts processes: deselect with -m "not slow"

TINY = BASE_TINY + ["train.epochs=2"]


def test_quality_benchmark_runs_and_reuses(tmp_path):
    args = [sys.executable, "benchmarks/quality_vs_magnitude.py", "--quick", "--out", str(tmp_path / "q"),
            "--figures", str(tmp_path / "fig"),
            *[a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"'] for a in ("--set", s)]]
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(tmp_path / "q" / "quality_vs_magnitude.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["head"] for r in rows] == ["magface", "arcface", "adaface", "softmax"]
    with open(tmp_path / "q" / "erc.csv") as f:
        erc = list(csv.DictReader(f))
    names = [r["quality estimate"] for r in erc]
    assert names[:4] == ["MagFace magnitude", "ArcFace norm", "AdaFace norm", "Softmax norm"]
    assert names[4].startswith("SER-FIQ (MagFace network") and names[5].startswith("sharpness")
    assert names[6] == "ground-truth quality (ideal)"
    with np.load(tmp_path / "q" / "quality_estimates.npz") as z:   # per evaluation image, and not constant
        assert z["serfiq"].shape == z["sharpness"].shape and z["serfiq"].std() > 0 and z["sharpness"].std() > 0
        assert z["untrained_norm"].shape == z["serfiq"].shape and z["untrained_norm"].std() > 0
    with open(tmp_path / "q" / "magnitude_vs_quality.csv") as f:   # the heads, then the untrained control
        assert [r["head"] for r in csv.DictReader(f)] == ["magface", "arcface", "adaface", "softmax", "untrained"]
    assert all(0 <= float(r["edc_area_iso"]) <= 1 and 0 <= float(r["edc_pauc_20"]) <= 0.2 for r in erc)
    assert all(0 <= float(r["edc_ref_pauc_20_best"]) <= float(r["edc_ref_pauc_20"]) <= 0.2 for r in erc)
    paired = [r for r in erc if r["family_size"]]     # every estimate but MagFace's magnitude: one family of 7
    assert len(paired) == 7 and {r["family_size"] for r in paired} == {"7"}
    assert float(paired[0]["paired_level"]) == pytest.approx(1 - 0.05 / 7)
    for name in ("magnitude_vs_quality", "magface_histograms", "images_by_magnitude", "magnitude_vs_cosine", "erc"):
        assert (tmp_path / "fig" / f"qvm_{name}_quick.png").stat().st_size > 15_000, name
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "4 run(s) reused" in again.stdout and "0 new run(s)" in again.stdout
