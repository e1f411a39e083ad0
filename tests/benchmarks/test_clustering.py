"""harness.measures.clustering: BCubed on hand-made clusterings (noise as singletons), the methods' refusals, and the
clustering benchmark end to end on the quality benchmark's quick runs (tiny data)."""
import json
from pathlib import Path

import numpy as np
import pytest

from harness.measures.clustering import bcubed, bcubed_items, cluster, nmi


def test_bcubed_by_hand():
    true = np.array([0, 0, 0, 1, 1])
    assert bcubed(true, np.array([5, 5, 5, 7, 7])) == {"precision": 1.0, "recall": 1.0, "f": 1.0}
    one = bcubed(true, np.zeros(5, dtype=int))                   # everything in one cluster
    assert one["recall"] == 1.0 and one["precision"] == pytest.approx((3 * 3 / 5 + 2 * 2 / 5) / 5)
    prec, rec = bcubed_items(true, np.array([-1, -1, 0, 1, 1]))  # noise: singletons
    np.testing.assert_allclose(prec, [1, 1, 1, 1, 1])
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 1 / 3, 1, 1])
    assert bcubed(true, np.array([0, 0, 1, 1, 1]), items=np.array([3, 3, 4]))["precision"] == pytest.approx(2 / 3)
    assert nmi(true, true) == pytest.approx(1.0)


def test_methods_refuse_bad_input():
    x = np.eye(4)
    with pytest.raises(ValueError, match="at least 2 identities"):
        cluster(x, "kmeans", 1)
    with pytest.raises(ValueError, match="positive cosine distance"):
        cluster(x, "dbscan", 2)
    with pytest.raises(ValueError, match="expected one of"):
        cluster(x, "spectral", 2)
    with pytest.raises(ValueError, match="two equal 1-d arrays"):
        bcubed_items(np.zeros(3), np.zeros(4))


@pytest.mark.slow
def test_clustering_benchmark_on_quick_runs(tmp_path, qvm_quick_runs):
    from benchmarks import clustering  # heavy imports: only this test
    clustering.main(["--runs", str(qvm_quick_runs), "--out", str(tmp_path / "clu"), "--figures", "",
                     "--fractions", "0,0.25"])
    rows = json.loads(Path(tmp_path / "clu" / "clustering.json").read_text())["rows"]
    heads = {r["head"] for r in rows}
    assert heads == {"magface", "arcface", "adaface", "softmax"}
    assert len(rows) == 4 * (3 + 2)   # three methods, and k-means after one discard share: by magnitude, at random
    for r in rows:
        assert 0 <= r["bcubed_f"] <= 1 and 0 <= r["nmi"] <= 1
        if r["discard"] == 0:
            assert r["bcubed_f_ci_low"] <= r["bcubed_f"] <= r["bcubed_f_ci_high"]
    assert all("f_verdict" in r for r in rows if r["discard"] == 0 and r["head"] != "magface")
    for r in (r for r in rows if r["discard_by"] == "magnitude"):   # the discard's gain over the random control
        random = next(x for x in rows if x["head"] == r["head"] and x["discard_by"] == "random")
        assert r["gain_vs_random"] == pytest.approx(r["bcubed_f"] - random["bcubed_f"])
        assert r["gain_ci_low"] <= r["gain_ci_high"] and r["gain_verdict"]
    assert (tmp_path / "clu" / "clustering.png").stat().st_size > 10_000


def test_discard_gain_pairs_the_two_clusterings_on_the_same_identities():
    from benchmarks.clustering import discard_gain, identity_resamples  # sklearn: only here
    identity = np.repeat([0, 1, 2, 3], 3)
    drop_last = np.zeros(12, bool)
    drop_last[[2, 5]] = True
    kept = identity[~drop_last]
    resamples = identity_resamples(identity, 50)
    same = discard_gain(identity, {"magnitude": (drop_last, kept), "random": (drop_last, kept)}, resamples)
    assert same["gain_vs_random"] == 0 and same["gain_ci_low"] == same["gain_ci_high"] == 0
    worse = kept.copy()
    worse[:4] = 0                                                    # identities 0 and 1 merged in the control
    gain = discard_gain(identity, {"magnitude": (drop_last, kept), "random": (drop_last, worse)}, resamples)
    assert gain["gain_vs_random"] == pytest.approx(1 - bcubed(kept, worse)["f"])
    assert gain["gain_ci_high"] > 0 and gain["gain_ci_low"] >= 0
