"""Evaluation functions against hand-computed cases and brute-force references."""
import os

import numpy as np
import pytest

from harness.evaluation.evaluate import paired_accuracy_difference
from harness.measures import metrics


def test_known_roc_and_tar_at_far():
    # 10 impostors with scores 0..0.9, 4 genuine pairs
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.65, 0.05])
    issame = np.array([False] * 10 + [True] * 4)
    tar = metrics.tar_at_far(scores, issame, fars=(0.1, 0.2, 0.5, 1e-3))
    assert tar[0.1] == 0.5        # accept >= 0.85: impostor 0.9 only (FAR 0.1); genuine 0.95 and 0.85
    assert tar[0.2] == 0.5        # accept > 0.8 ... 0.95 and 0.85
    assert tar[0.5] == 0.75       # accept >= 0.5: 0.95, 0.85, 0.65
    assert np.isnan(tar[1e-3])    # 10 impostors cannot measure FAR 1e-3


def test_threshold_at_fmr_and_brute_force_erc():
    rng = np.random.default_rng(0)
    n = 400
    issame = rng.random(n) < 0.5
    quality = rng.random(n)
    scores = np.where(issame, 0.3 + 0.5 * quality + 0.2 * rng.standard_normal(n), 0.2 * rng.standard_normal(n))
    thr = metrics.threshold_at_fmr(scores, issame, 0.05)
    assert np.mean(scores[~issame] > thr) <= 0.05
    assert np.mean(scores[~issame] >= thr) > 0.05 - 1e-12  # the next lower threshold would exceed the FMR
    erc = metrics.error_versus_discard(scores, issame, quality, fmr=0.05, threshold="fixed")
    mated = np.sort(quality[issame])   # the fixed-threshold (ISO) curve discards mated comparisons
    for r, fnmr in zip(erc["fractions"], erc["fnmr"], strict=True):
        cut = mated[int(r * len(mated))]
        keep = quality >= cut
        expected = np.mean(scores[keep & issame] <= thr)
        assert fnmr == pytest.approx(expected)
    assert erc["fnmr"][-1] < erc["fnmr"][0]  # informative quality: rejecting low quality helps
    random_q = metrics.error_versus_discard(scores, issame, rng.random(n), fmr=0.05, threshold="fixed")
    assert erc["area"] < random_q["area"]


def test_ten_fold_accuracy_on_a_separable_and_a_hand_case():
    scores = np.concatenate([np.linspace(0.6, 1, 50), np.linspace(-1, 0.4, 50)])
    issame = np.array([True] * 50 + [False] * 50)
    folds = np.tile(np.arange(10), 10)
    assert metrics.verification_accuracy(scores, issame, folds)["accuracy"] == 1.0
    # one genuine pair far below every impostor: misclassified in its own fold only
    scores2 = scores.copy()
    scores2[0] = -2.0
    res = metrics.verification_accuracy(scores2, issame, folds)
    assert res["accuracy"] == pytest.approx(0.99)
    assert sorted(res["fold_accuracy"])[0] == pytest.approx(0.9)
    assert metrics.verification_accuracy(scores, issame)["accuracy"] == pytest.approx(
        metrics.verification_accuracy(scores, issame, np.repeat(np.arange(10), 10))["accuracy"])


def test_quality_agreement_spearman_and_bins():
    q = np.linspace(0, 1, 100)
    res = metrics.quality_agreement(10 + 5 * q ** 2, q, bins=4)
    assert res["spearman_rho"] == pytest.approx(1.0)
    assert np.all(np.diff(res["bin_mean_magnitude"]) > 0) and len(res["bin_mean_magnitude"]) == 4
    assert metrics.quality_agreement(-q, q)["spearman_rho"] == pytest.approx(-1.0)


def official_erc(scores, issame, quality, fmr_exponent=3):
    """The official eval_quality loop re-derived from its description, in its own terms: arccos distances,
    impostor distances ascending, index n-1 divided by 10 (integer) once per decade of FMR, a genuine pair
    matching when its distance is strictly below the threshold; no entry when the index reaches 0 too early."""
    dist = np.arccos(np.clip(scores, -1, 1)) / np.pi
    order = np.argsort(quality, kind="stable")
    out = []
    for rate in np.arange(0, 0.98, 0.05):
        kept = order[int(rate * len(scores)):]
        pos, neg = np.sort(dist[kept][issame[kept]]), np.sort(dist[kept][~issame[kept]])
        idx, value = len(neg) - 1, np.nan
        for decade in range(fmr_exponent + 1):
            if decade == fmr_exponent:
                value = (len(pos) - np.sum(pos < neg[idx])) / len(pos)
            if idx == 0:
                break
            idx //= 10
        out.append(value)
    return np.array(out)


@pytest.mark.parametrize("n,exponent", [(6000, 3), (6000, 2), (900, 3), (150, 3)])
def test_recomputed_threshold_equals_the_official_script(n, exponent):
    rng = np.random.default_rng(n + exponent)
    issame = rng.random(n) < 0.5
    quality = rng.random(n)
    scores = np.clip(np.where(issame, 0.2 + 0.6 * quality, 0.0) + 0.25 * rng.standard_normal(n), -1, 1)
    ours = metrics.error_versus_discard(scores, issame, quality, fmr=10.0 ** -exponent, threshold="recomputed")
    np.testing.assert_array_equal(np.isnan(ours["fnmr"]), np.isnan(official_erc(scores, issame, quality, exponent)))
    np.testing.assert_allclose(ours["fnmr"], official_erc(scores, issame, quality, exponent), equal_nan=True)
    assert ours["threshold_protocol"] == "recomputed" and len(ours["fractions"]) == 20


def test_fixed_and_recomputed_thresholds_differ_as_the_protocols_say():
    """A toy case: discarding low-quality pairs removes impostors too, so the recomputed threshold (official) drops
    and accepts more genuine pairs, while the fixed one (ISO EDC) keeps the starting error's threshold."""
    rng = np.random.default_rng(3)
    n = 20000
    issame = rng.random(n) < 0.5
    quality = rng.random(n)
    scores = np.where(issame, 0.45 + 0.4 * quality, 0.0) + 0.15 * rng.standard_normal(n)
    fixed = metrics.error_versus_discard(scores, issame, quality, fmr=1e-2, threshold="fixed")
    recomputed = metrics.error_versus_discard(scores, issame, quality, fmr=1e-2, threshold="recomputed")
    assert np.all(fixed["thresholds"] == fixed["thresholds"][0])
    assert recomputed["thresholds"][-1] != recomputed["thresholds"][0]
    assert fixed["fnmr"][0] == pytest.approx(recomputed["fnmr"][0], abs=2e-3)   # same starting error
    realised = [np.mean(scores[~issame & (quality >= np.quantile(quality, 0.45))] > t) for t in
                (fixed["thresholds"][9], recomputed["thresholds"][9])]
    assert realised[1] == pytest.approx(1e-2, abs=1e-3) and realised[0] != pytest.approx(1e-2, abs=1e-3)
    assert fixed["pauc"][0.2] == pytest.approx(metrics.partial_area(fixed["fractions"], fixed["fnmr"], 0.2))
    # the area up to 0.2 of a constant curve c is 0.2 c
    assert metrics.partial_area([0, 0.1, 0.5], [0.3, 0.3, 0.3], 0.2) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="threshold='iso'"):
        metrics.error_versus_discard(scores, issame, quality, fmr=1e-2, threshold="iso")


def test_fast_best_threshold_equals_the_brute_force_search():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 300))
        issame = rng.random(n) < 0.5
        scores = np.round(rng.standard_normal(n) + issame * rng.random(), int(rng.integers(1, 4)))   # with ties
        s = np.unique(scores)
        candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
        brute = candidates[int(np.argmax([np.mean((scores > t) == issame) for t in candidates]))]
        assert metrics._best_threshold(scores, issame) == brute


def test_identity_bootstrap_covers_the_truth_and_resamples_identities():
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(60), 5)
    effect = rng.standard_normal(60)[ids]        # identity-level variation: images of one identity correlate
    values = effect + 0.1 * rng.standard_normal(len(ids))
    low, high = metrics.identity_bootstrap(ids, lambda idx: values[idx].mean(), n_boot=400)
    assert low < values.mean() < high
    # resampling images as if independent would understate the spread five-fold here
    naive = metrics.identity_bootstrap(np.arange(len(ids)), lambda idx: values[idx].mean(), n_boot=400)
    assert (high - low) > 1.5 * (naive[1] - naive[0])
    # pairs: a genuine pair counts m times, an impostor pair m_i * m_j times
    seen = []

    def record(idx):
        seen.append(np.bincount(idx, minlength=3))
        return 0.0
    metrics.identity_bootstrap(np.array([[0, 0], [0, 1], [1, 1]]), record, n_boot=50)
    for counts in seen:
        assert counts[1] == counts[0] * counts[2]
    assert metrics.identity_bootstrap(np.zeros(5, int), lambda idx: 1.0) == (None, None)


def test_official_area_is_undefined_unless_the_whole_curve_is_and_where_the_curve_stops():
    fr = np.arange(0, 0.98, 0.05)
    rng = np.random.default_rng(5)
    n = 2400
    issame = rng.random(n) < 0.5
    quality = rng.random(n) + 2.0 * issame          # impostors crowd the low-quality end: late steps lose them
    scores = np.where(issame, 0.6, 0.0) + 0.2 * rng.standard_normal(n)
    erc = metrics.error_versus_discard(scores, issame, quality, fmr=1e-2, threshold="recomputed")
    defined = np.isfinite(erc["fnmr"])
    k = int(np.argmin(defined))
    assert 2 <= k < len(fr) and not defined[k:].any()
    assert erc["defined_up_to"] == pytest.approx(fr[k - 1]) and np.isnan(erc["area"])


def test_fixed_protocol_discards_mated_comparisons_and_no_impostors_is_nan_not_a_crash():
    rng = np.random.default_rng(6)
    n = 1000
    issame = rng.random(n) < 0.3
    quality = rng.random(n)
    scores = np.where(issame, 0.5, 0.0) + 0.2 * rng.standard_normal(n)
    edc = metrics.error_versus_discard(scores, issame, quality, fmr=1e-2, threshold="fixed")
    mated = np.sort(quality[issame])
    t = metrics.threshold_at_fmr(scores, issame, 1e-2)
    cut = mated[int(0.5 * len(mated))]
    assert edc["fnmr"][10] == pytest.approx(np.mean(scores[issame & (quality >= cut)] <= t))   # 50 % of mated gone
    only_genuine = metrics.error_versus_discard(scores[issame], issame[issame], quality[issame], fmr=1e-2,
                                                threshold="fixed")
    assert np.all(np.isnan(only_genuine["fnmr"])) and np.isnan(metrics.threshold_at_fmr([0.1, 0.2], [True, True], 0.1))


def _fake_eval(folder, scores, pairs=None):
    """A run folder with eval/synthetic.npz as harness.evaluation.evaluate writes it (only what a paired difference
    reads)."""
    rng = np.random.default_rng(0)
    n_images = 40
    identity = np.repeat(np.arange(20), 2)
    left, right = pairs if pairs is not None else (np.arange(0, 40, 2), np.arange(1, 40, 2))
    issame = identity[left] == identity[right]
    os.makedirs(folder / "eval")
    np.savez(folder / "eval" / "synthetic.npz", scores=scores, issame=issame, fold=np.arange(len(left)) % 2,
             identity=identity, left=left, right=right, norms=rng.random(n_images))
    return str(folder)


def test_paired_accuracy_difference_on_the_same_pairs(tmp_path):
    rng = np.random.default_rng(1)
    left = np.r_[np.arange(0, 40, 2), np.arange(0, 38, 2)]
    right = np.r_[np.arange(1, 40, 2), np.arange(2, 40, 2)]
    same = np.r_[np.ones(20, bool), np.zeros(19, bool)]
    good = np.where(same, 0.8, 0.2) + 0.05 * rng.standard_normal(39)
    poor = np.where(same, 0.6, 0.4) + 0.3 * rng.standard_normal(39)
    a = _fake_eval(tmp_path / "a", good, (left, right))
    b = _fake_eval(tmp_path / "b", poor, (left, right))
    d = paired_accuracy_difference(a, b, n_boot=100)
    assert d["diff"] > 0 and d["diff_ci_low"] > 0 and d["verdict"] == "better"
    itself = paired_accuracy_difference(a, a, n_boot=50)
    assert itself["diff"] == 0 and itself["diff_ci_low"] == itself["diff_ci_high"] == 0
    assert itself["verdict"] == "no detectable difference (evaluation noise)"
    other = _fake_eval(tmp_path / "c", good, (right, left))
    with pytest.raises(ValueError, match="different pairs \\(left differs\\)"):
        paired_accuracy_difference(a, other)


def test_map_at_r_and_precision_at_1_by_hand():
    # identity 0: images 0, 1, 2; identity 1: images 3, 4; identity 2: image 5 (no other image: not a query)
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.95, 0.05], [0.1, 0.9], [-1.0, 0.0]])
    r = metrics.retrieval_per_query(x, np.array([0, 0, 0, 1, 1, 2]))
    assert r["query"].tolist() == [0, 1, 2, 3, 4]
    # query 0 (R = 2): neighbours by cosine 3 (id 1), 1 (id 0): precision at rank 2 is 1/2, relevant there -> AP 1/4
    # query 2 (R = 2): 4 (id 1), then 1 (id 0) -> 1/4; query 3 (R = 1): 0 (id 0) -> 0; query 4 (R = 1): 2 -> 0
    # query 1 (R = 2): 3 (id 1), 0 (id 0) -> 1/4
    assert r["ap_at_r"].tolist() == pytest.approx([0.25, 0.25, 0.25, 0.0, 0.0])
    assert r["hit_at_1"].tolist() == [0, 0, 0, 0, 0]
    perfect = metrics.retrieval_per_query(np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1]]), np.array([5, 5, 7, 7]))
    assert perfect["ap_at_r"].tolist() == [1, 1, 1, 1] and perfect["hit_at_1"].tolist() == [1, 1, 1, 1]


def test_map_at_r_matches_brute_force_and_needs_a_repeated_identity():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 12, 200)
    x = rng.standard_normal((200, 8)) + 1.5 * rng.standard_normal((12, 8))[labels]
    r = metrics.retrieval_per_query(x, labels, chunk=37)           # chunks must not change the result
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    for k, q in enumerate(r["query"]):
        sim = u @ u[q]
        sim[q] = -np.inf
        order = np.argsort(-sim, kind="stable")
        big_r = int((labels == labels[q]).sum()) - 1
        rel = labels[order[:big_r]] == labels[q]
        expected = sum(rel[:i + 1].sum() / (i + 1) for i in range(big_r) if rel[i]) / big_r
        assert r["ap_at_r"][k] == pytest.approx(expected)
        assert r["hit_at_1"][k] == rel[0]
    with pytest.raises(ValueError, match="at least 2 images"):
        metrics.retrieval_per_query(x[:3], np.array([0, 1, 2]))


def edc_by_definition(scores, quality, threshold, limit):
    """The reference EDC (Schlett et al. 2023, dasec/quality-assessment-evaluation) re-derived as a loop: discard
    whole blocks of tied quality, FNMR of the rest below the threshold, stepwise pAUC."""
    order = np.argsort(quality, kind="stable")
    q, s, n = quality[order], scores[order], len(scores)
    points, k = [], 0
    while k < n:
        points.append((k / n, np.mean(s[k:] < threshold)))
        k += int(np.sum(q == q[k]))
    if points[-1][0] != 1:
        points.append((1.0, 0.0))
    area = 0.0
    for i, (x, y) in enumerate(points):
        right = points[i + 1][0] if i + 1 < len(points) else 1.0
        area += y * (min(right, limit) - x)
        if right >= limit:
            break
    return points, area


def test_iso_edc_follows_the_reference_conventions_on_tied_qualities():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(5, 400))
        issame = rng.random(n) < 0.6
        if not issame.any() or issame.all():
            continue
        scores = rng.normal(size=n) + issame
        quality = rng.integers(0, rng.integers(2, 30), n).astype(float)      # many ties
        out = metrics.iso_edc(scores, issame, quality, starting_fnmr=0.05, pauc_limits=(0.2,))
        assert out["threshold"] == pytest.approx(np.quantile(scores[issame], 0.05))
        points, area = edc_by_definition(scores[issame], quality[issame], out["threshold"], 0.2)
        np.testing.assert_allclose(out["discard_fractions"], [p[0] for p in points])
        np.testing.assert_allclose(out["fnmr"], [p[1] for p in points])
        assert out["pauc"][0.2] == pytest.approx(area, abs=1e-12)
        start = out["fnmr"][0]
        assert out["pauc_theoretical_best"][0.2] == pytest.approx(start ** 2 / 2 - max(start - 0.2, 0) ** 2 / 2)
    fmr = metrics.iso_edc(scores, issame, quality, starting_fmr=0.01)
    assert fmr["threshold"] == pytest.approx(np.quantile(scores[~issame], 0.99))
    for kwargs, message in (({}, "exactly one"), ({"starting_fnmr": 0.05, "threshold": 0.1}, "exactly one"),
                            ({"starting_fnmr": 1.5}, r"starting_fnmr=1.5 must be in \(0, 1\)")):
        with pytest.raises(ValueError, match=message):
            metrics.iso_edc(scores, issame, quality, **kwargs)


def test_tar_at_far_is_exact_with_tied_scores():
    scores, issame = np.array([3, 3, 2, 2, 1, 1.0]), np.array([1, 0, 1, 0, 1, 0], bool)
    assert metrics.tar_at_far(scores, issame, fars=(0.7,))[0.7] == pytest.approx(2 / 3)   # accept s >= 2
    assert metrics.tar_at_far(scores, issame, fars=(0.6,), rule="nearest")[0.6] == pytest.approx(2 / 3)
