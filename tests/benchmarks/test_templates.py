"""benchmarks/templates.py (MagFace+): template splits, weighted aggregation, pairs, refusals, and the benchmark end to
end on the quality benchmark's quick runs (tiny data)."""
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.templates import WEIGHTINGS
from harness.measures import ijb


def test_weightings_are_ijb_modes_that_weight_unit_features_as_described():
    """mean: unit features averaged; magnitude (MagFace+): the raw features summed, i.e. unit features weighted by
    their magnitude; ground truth: unit features weighted by the detector-score column (the quality)."""
    e = np.array([[3.0, 0.0], [0.0, 1.0]], np.float32)
    quality = np.array([0.2, 0.9], np.float32)
    grouping = ijb.Grouping.of(np.array([7, 7]), np.array([1, 2]))     # one template, one image per media
    pooled = {w: ijb.pool_templates(e, None, quality, ijb.Mode.parse(m), grouping)[0] for w, m in WEIGHTINGS.items()}
    np.testing.assert_allclose(pooled["mean"], [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    np.testing.assert_allclose(pooled["magnitude"], e.sum(0) / np.linalg.norm(e.sum(0)), rtol=1e-6)
    ideal = quality[0] * np.array([1, 0]) + quality[1] * np.array([0, 1])
    np.testing.assert_allclose(pooled["ground_truth"], ideal / np.linalg.norm(ideal), rtol=1e-6)


@pytest.mark.slow
def test_templates_benchmark_on_quick_runs(tmp_path, qvm_quick_runs):
    from benchmarks import templates  # heavy imports: only this test
    templates.main(["--runs", str(qvm_quick_runs), "--out", str(tmp_path / "tpl"), "--figures", ""])
    rows = json.loads(Path(tmp_path / "tpl" / "templates.json").read_text())["rows"]
    assert len(rows) == 4 * 3 and {r["weighting"] for r in rows} == {"mean", "magnitude", "ground_truth"}
    assert {r["mode"] for r in rows} == {"N0D0F0", "N1D0F0", "N0D1F0"}
    assert len(list((tmp_path / "tpl").glob("ijb-*/IJBC"))) == 1     # one release, named by its data set
    for r in rows:
        assert r["genuine_pairs"] == 20 and 0 <= r["tar_far_0.01"] <= 1
        assert ("tar_far_0.01_verdict" in r) == (r["weighting"] != "mean")
    assert (tmp_path / "tpl" / "templates.png").stat().st_size > 10_000
