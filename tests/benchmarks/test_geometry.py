"""benchmarks/geometry.py (paper Figs. 1-2): the per-image geometry and its measures, the seed summary, and the
benchmark end to end at a tiny size."""
import json
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY

from benchmarks.geometry import feature_geometry, print_tables, run_measures, summarise, trained_seeds


def test_geometry_measures_angles_to_the_own_centre_and_their_ranks():
    centres = np.array([[2.0, 0.0], [0.0, 3.0]])                   # raw centres: only their directions matter
    x = np.array([[4.0, 0.0], [1.0, 1.0], [0.0, 0.5], [1.0, 0.2]])
    g = feature_geometry({"embeddings": x, "labels": np.array([0, 0, 1, 1]), "centres": centres,
                          "quality": np.array([0.9, 0.5, 0.3, 0.1])})
    np.testing.assert_allclose(g["magnitude"], [4.0, 2 ** 0.5, 0.5, np.hypot(1.0, 0.2)])
    np.testing.assert_allclose(g["cos"], [1.0, 2 ** -0.5, 1.0, 0.2 / np.hypot(1.0, 0.2)])
    assert g["nearest_own"].tolist() == [True, True, True, False]
    row = run_measures(g)
    assert row["angular_train_accuracy"] == 0.75 and row["rho_quality_magnitude"] == pytest.approx(0.8)


def test_summary_pairs_seeds_and_says_when_it_cannot_tell(capsys):
    rows = [{"head": h, "seed": s, "rho_quality_magnitude": v, "rho_quality_cos": 0.1, "rho_cos_magnitude": -v,
             "angular_train_accuracy": 0.5 if (h, s) == ("arcface", 2) else 1.0}
            for h, vals in (("magface", [0.5, 0.6, 0.55]), ("arcface", [0.0, 0.1, 0.02]), ("softmax", [0.3]))
            for s, v in enumerate(vals)]
    out = summarise(rows)
    summary = {(r["head"], r["measure"]): r for r in out if r["selection"] == "all"}
    trained = [r for r in out if r["selection"] == "trained"]          # seed 0 only: softmax has no seed 1
    assert {r["seed_list"] for r in trained} == {"0"} and all(r["seeds"] == 1 for r in trained)
    assert summary["magface", "rho_quality_magnitude"]["sign"] == "positive"
    assert summary["magface", "rho_cos_magnitude"]["sign"] == "negative"
    assert summary["arcface", "rho_quality_magnitude"]["sign"] == "not distinguishable from 0"
    arc = summary["arcface", "rho_quality_magnitude"]
    assert arc["diff_vs_magface"] == pytest.approx(-0.51) and arc["diff_verdict"] == "lower than under MagFace"
    one = summary["softmax", "rho_quality_magnitude"]                  # one seed: no interval, no verdict
    assert one["sign"] == "not computable" and one["diff_verdict"].startswith("not computable")
    rows = [r for r in rows if r["head"] != "softmax"]
    assert trained_seeds(rows) == [0, 1] and trained_seeds(rows, threshold=1.01) == []
    none_trained = [{**r, "angular_train_accuracy": 0.2, "magnitude_median": 5.0, "margin_span_share": None}
                    for r in rows]
    print_tables(none_trained, summarise(none_trained))               # no trained seed: printed as n/a, no crash
    assert "n/a (no seed)" in capsys.readouterr().out


@pytest.mark.slow
def test_geometry_benchmark_end_to_end(tmp_path):
    from benchmarks import geometry  # trains: only this test
    sets = [s for s in TINY if not s.startswith("model.embedding_size")] + [   # 6 classes: not the 8-D's 8
        "data.synthetic.train_identities=6", "train.epochs=2", "train.calibrate_at_epoch=0.5",
        f'data.cache_dir="{tmp_path / "cache"}"']
    geometry.main(["--quick", "--seeds", "0", "--out", str(tmp_path / "g"), "--figures", "",
                   *[a for s in sets for a in ("--set", s)]])
    stored = json.loads(Path(tmp_path / "g" / "geometry_quality.json").read_text())
    assert sorted((r["head"], r["seed"]) for r in stored["runs"]) == [("arcface", 0), ("magface", 0)]
    assert all(-1 <= r["rho_quality_magnitude"] <= 1 and r["images"] == 60 for r in stored["runs"])
    assert {(s["head"], s["measure"]) for s in stored["summary"]} == {
        (h, m) for h in ("arcface", "magface") for m in ("rho_quality_magnitude", "rho_quality_cos",
                                                         "rho_cos_magnitude")}
    with np.load(tmp_path / "g" / "geometry_features.npz") as z:
        assert z["magface_seed0_embeddings"].shape == (60, 8) and z["arcface_seed0_centres"].shape == (6, 8)
    assert (tmp_path / "g" / "geometry.png").stat().st_size > 20_000
    with pytest.raises(SystemExit, match="ground-truth quality"):
        geometry.main(["--data", str(tmp_path), "--out", str(tmp_path / "x")])
