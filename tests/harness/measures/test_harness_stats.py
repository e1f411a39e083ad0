"""Across-seed inference: t intervals, paired differences with verdicts and detectable effects, and the sweep's
comparison table (direction-aware for lower-is-better metrics)."""
import numpy as np
import pytest
from scipy import stats as sps

from harness.measures.stats import mean_ci, paired_difference
from harness.sweeps.tables import compare, summarise


def test_mean_ci_is_the_student_t_interval():
    v = [0.91, 0.88, 0.93, 0.90, 0.86]
    mean, low, high = mean_ci(v)
    ref = sps.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=sps.sem(v))
    assert mean == pytest.approx(np.mean(v)) and (low, high) == pytest.approx(ref)
    assert mean_ci([0.5]) == (0.5, None, None) and mean_ci([None, float("nan")]) == (None, None, None)


def test_paired_difference_verdicts_and_detectable_effect():
    base = np.array([0.80, 0.85, 0.83, 0.90, 0.78])
    better = paired_difference(base + 0.05 + np.array([0.01, -0.01, 0.0, 0.005, -0.005]), base)
    assert better["verdict"] == "better" and better["diff_ci_low"] > 0 and better["seeds"] == 5
    worse = paired_difference(base - 0.05, base + np.array([0, 0.001, -0.001, 0, 0.002]))
    assert worse["verdict"] == "worse"
    noisy = paired_difference(base + np.array([0.02, -0.03, 0.01, -0.02, 0.03]), base)
    assert noisy["verdict"].startswith("no detectable difference at 5 seeds")
    d = np.array([0.02, -0.03, 0.01, -0.02, 0.03])
    expected = (sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * d.std(ddof=1) / np.sqrt(5)
    assert noisy["detectable"] == pytest.approx(expected) and noisy["diff_ci_low"] < 0 < noisy["diff_ci_high"]
    assert paired_difference([0.9], [0.8])["verdict"].startswith("not computable")


def test_comparison_table_pairs_by_seed_and_knows_lower_is_better():
    rows = []
    for seed in range(4):
        for head, acc, erc in (("magface", 0.80, 0.40), ("arcface", 0.85, 0.30)):
            jitter = 0.001 * seed
            rows.append({"condition": "clean", "head": head, "seed": seed, "accuracy": acc + jitter,
                         "tar_far_0.01": None, "spearman_rho": 0.1, "erc_area_magface": erc + jitter,
                         "edc_pauc_20": 0.05})
    table = {c["metric"]: c for c in compare(rows, ["condition", "head", "seed"], "magface")}
    assert table["accuracy"]["diff_vs_magface"] == pytest.approx(0.05) and table["accuracy"]["verdict"] == "better"
    erc = table["erc_area_magface"]
    assert erc["diff_vs_magface"] == pytest.approx(-0.10) and erc["verdict"] == "better"   # lower area is better
    assert erc["diff_ci_low"] == pytest.approx(-0.10) and erc["diff_ci_high"] == pytest.approx(-0.10)   # no spread
    assert table["tar_far_0.01"]["verdict"].startswith("not computable")
    summary = summarise(rows, ["condition", "head", "seed"])
    assert [s["head"] for s in summary] == ["magface", "arcface"] and summary[0]["seeds"] == 4
    assert summary[0]["accuracy_ci_low"] < summary[0]["accuracy_mean"] < summary[0]["accuracy_ci_high"]


def test_holm_and_benjamini_hochberg_adjust_one_family():
    from harness.measures.stats import benjamini_hochberg, holm
    p = [0.01, 0.04, 0.03, None, 0.005]
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, 1 x 0.04, made monotone
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    bh = benjamini_hochberg(p)
    np.testing.assert_allclose([bh[i] for i in (0, 1, 2, 4)],
                               sps.false_discovery_control([0.01, 0.04, 0.03, 0.005], method="bh"))
    assert bh[3] is None


def test_paired_test_p_values_equal_scipys_and_the_detectable_effect_is_exact():
    from harness.measures.stats import detectable_effect, paired_test
    a, b = np.array([0.81, 0.86, 0.83, 0.92, 0.79]), np.array([0.80, 0.85, 0.84, 0.90, 0.78])
    t = paired_test(a, b, margin=0.02)
    d = a - b
    assert t["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    tost = max(sps.ttest_1samp(d, -0.02, alternative="greater").pvalue,
               sps.ttest_1samp(d, 0.02, alternative="less").pvalue)
    assert t["p_equivalence"] == pytest.approx(tost)
    se, crit = d.std(ddof=1) / np.sqrt(5), sps.t.ppf(0.975, 4)
    nc = t["detectable"] / se   # the exact power of the two-sided test at that effect is 80 %
    assert sps.nct.sf(crit, 4, nc) + sps.nct.cdf(-crit, 4, nc) == pytest.approx(0.8, abs=1e-6)
    approx = (sps.t.ppf(0.975, 2) + sps.t.ppf(0.8, 2)) * 0.01
    assert detectable_effect(0.01, 3) / approx == pytest.approx(1.054, abs=0.002)   # the approximation: 5 % short
    with pytest.raises(ValueError, match="equivalence margin 0"):
        paired_test(a, b, margin=0)


def test_family_verdicts_on_adjusted_p_values():
    from harness.measures.stats import family_verdicts, paired_test
    base = np.array([0.80, 0.85, 0.83, 0.90, 0.78])
    tests = [paired_test(base + 0.05 + np.array([0.01, -0.01, 0, 0.005, -0.005]), base, 0.01),   # clearly better
             paired_test(base + np.array([0.001, -0.001, 0.0005, -0.0005, 0]), base, 0.01),       # within 0.01
             paired_test(base + np.array([0.02, -0.03, 0.01, -0.02, 0.03]), base, 0.01),          # too noisy
             paired_test([0.9], [0.8], 0.01)]
    out = family_verdicts(tests, "clean accuracy, 4 heads vs MagFace")
    assert [o["verdict"].split(" (")[0] for o in out] == ["better", "equivalent within ±0.01", "inconclusive",
                                                         "not computable: 1 paired replicate(s), need 2"]
    assert out[2]["verdict"].startswith("inconclusive (80 % power for |diff| >= ")
    assert all(o["family_size"] == 4 and o["family"].startswith("clean accuracy") for o in out)
    assert out[0]["p_holm"] == pytest.approx(min(1, 3 * out[0]["p"]))   # the smallest of 3 finite p-values
    alone = family_verdicts(tests[:1], "one")[0]
    assert alone["family_size"] == 1 and alone["p_holm"] == alone["p"] and alone["p_bh"] == pytest.approx(alone["p"])
    with pytest.raises(ValueError, match="has no member"):
        family_verdicts([], "none")


def test_the_detectable_effect_at_a_strict_family_level_is_finite():
    """At alpha / m for a family of 14 and 5 replicates scipy's non-central t lower tail underflows to NaN for the
    large non-centralities the bracket search tries; the effect is still found (and exceeds the one at alpha)."""
    from harness.measures.stats import detectable_effect
    strict = detectable_effect(0.01, 5, level=1 - 0.05 / 14)
    assert np.isfinite(strict) and strict > detectable_effect(0.01, 5)
