"""Evaluation functions against hand-computed cases and brute-force references."""
import numpy as np
import pytest

from harness import metrics


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
    erc = metrics.error_versus_reject(scores, issame, quality, fmr=0.05)
    for r, fnmr in zip(erc["fractions"], erc["fnmr"]):
        cut = np.sort(quality)[int(round(r * n))] if int(round(r * n)) < n else np.inf
        keep = quality >= cut
        expected = np.mean(scores[keep & issame] <= thr)
        assert fnmr == pytest.approx(expected)
    assert erc["fnmr"][-1] < erc["fnmr"][0]  # informative quality: rejecting low quality helps
    random_q = metrics.error_versus_reject(scores, issame, rng.random(n), fmr=0.05)
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
