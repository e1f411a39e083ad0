"""benchmarks/templates.py (MagFace+): template splits, weighted aggregation, pairs, refusals, and the benchmark end to
end on the quality benchmark's quick runs (tiny data)."""
import json

import numpy as np
import pytest

from benchmarks.templates import aggregate, split_templates, template_pairs


def test_templates_split_each_identity_in_two_and_pairs_cover_all():
    identity = np.repeat([3, 7, 9], 6)
    template, owner = split_templates(identity)
    assert sorted(np.bincount(template)) == [3] * 6 and list(owner) == [3, 3, 7, 7, 9, 9]
    assert all(len(set(identity[template == t])) == 1 for t in range(6))
    left, right, issame = template_pairs(owner)
    assert len(left) == 15 and issame.sum() == 3
    with pytest.raises(ValueError, match="identity 1 has 3 images"):
        split_templates(np.array([0, 0, 0, 0, 1, 1, 1]))


def test_aggregation_weights_unit_embeddings_and_ignores_their_scale():
    e = np.array([[3.0, 0.0], [0.0, 1.0]])
    template = np.array([0, 0])
    np.testing.assert_allclose(aggregate(e, template, np.ones(2)), [[2 ** -0.5, 2 ** -0.5]])
    by_magnitude = aggregate(e, template, np.linalg.norm(e, axis=1))      # MagFace+: the sum of the raw features
    np.testing.assert_allclose(by_magnitude, [e.sum(0) / np.linalg.norm(e.sum(0))])
    np.testing.assert_allclose(aggregate(e, template, 10 * np.array([3.0, 1.0])), by_magnitude)


@pytest.mark.slow
def test_templates_benchmark_on_quick_runs(tmp_path, qvm_quick_runs):
    from benchmarks import templates   # noqa: PLC0415  (heavy imports: only this test)
    templates.main(["--runs", str(qvm_quick_runs), "--out", str(tmp_path / "tpl"), "--figures", ""])
    rows = json.load(open(tmp_path / "tpl" / "templates.json"))["rows"]
    assert len(rows) == 4 * 3 and {r["weighting"] for r in rows} == {"mean", "magnitude", "ground_truth"}
    for r in rows:
        assert r["genuine_pairs"] == 20 and 0 <= r["tar_far_0.01"] <= 1
        assert ("tar_far_0.01_verdict" in r) == (r["weighting"] != "mean")
    assert (tmp_path / "tpl" / "templates.png").stat().st_size > 10_000
