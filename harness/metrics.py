"""Verification and quality metrics on stored scores: 10-fold accuracy, TAR@FAR, error-versus-reject curves,
magnitude-vs-quality statistics. Pure NumPy/SciPy/scikit-learn on arrays, so figures re-draw without a model."""
from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.integrate import trapezoid
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
REJECT_FRACTIONS = np.round(np.arange(0.0, 0.96, 0.05), 2)   # 0%, 5%, ..., 95% as the paper's ERC script


def _best_threshold(scores, issame):
    """Similarity threshold maximising accuracy (accept when score > threshold) over candidate midpoints."""
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    acc = [np.mean((scores > t) == issame) for t in candidates]
    return candidates[int(np.argmax(acc))]


def verification_accuracy(scores, issame, folds=None, n_folds: int = 10) -> dict:
    """LFW protocol: for each fold, the threshold is chosen on the other folds and accuracy read on this one.
    `folds` gives each pair's fold (the synthetic protocol); without it, KFold(n_folds) in order, as insightface."""
    scores, issame = np.asarray(scores, float), np.asarray(issame, bool)
    if folds is None:
        splits = list(KFold(n_folds, shuffle=False).split(scores))
    else:
        folds = np.asarray(folds)
        splits = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in np.unique(folds)]
    accs, thresholds = [], []
    for train, test in splits:
        t = _best_threshold(scores[train], issame[train])
        thresholds.append(t)
        accs.append(np.mean((scores[test] > t) == issame[test]))
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "fold_accuracy": [float(a) for a in accs], "thresholds": [float(t) for t in thresholds]}


def tar_at_far(scores, issame, fars=FARS) -> dict:
    """TAR at each FAR read off the ROC; NaN where there are too few impostor pairs to measure that FAR."""
    issame = np.asarray(issame, bool)
    fpr, tpr, _ = roc_curve(issame, scores)
    n_impostor = int((~issame).sum())
    out = {}
    for far in fars:
        if far * n_impostor < 1:
            out[far] = float("nan")
        else:
            out[far] = float(tpr[np.searchsorted(fpr, far, side="right") - 1])
    return out


def threshold_at_fmr(scores, issame, fmr: float) -> float:
    """Smallest threshold with at most fmr of the impostor scores strictly above it."""
    impostor = np.sort(np.asarray(scores, float)[~np.asarray(issame, bool)])[::-1]
    k = int(np.floor(fmr * len(impostor)))
    if k >= len(impostor):
        return float(impostor[-1])
    return float(impostor[k])


def error_versus_reject(scores, issame, pair_quality, fmr: float = 1e-3, fractions=REJECT_FRACTIONS) -> dict:
    """FNMR at a fixed threshold (FMR = fmr on all pairs) after rejecting the lowest-quality fraction of pairs.
    Pair quality is min of the two images' qualities (the paper's protocol)."""
    scores, issame = np.asarray(scores, float), np.asarray(issame, bool)
    threshold = threshold_at_fmr(scores, issame, fmr)
    order = np.argsort(np.asarray(pair_quality, float), kind="stable")   # lowest quality first
    fnmr = []
    for r in fractions:
        keep = np.ones(len(scores), bool)
        keep[order[: int(round(r * len(scores)))]] = False
        genuine = scores[keep & issame]
        fnmr.append(float(np.mean(genuine <= threshold)) if len(genuine) else float("nan"))
    fnmr = np.array(fnmr)
    return {"fractions": np.asarray(fractions, float), "fnmr": fnmr, "threshold": threshold, "fmr": fmr,
            "area": float(trapezoid(fnmr, fractions) / (fractions[-1] - fractions[0]))}


def quality_agreement(magnitude, quality, bins: int = 10) -> dict:
    """Spearman rho between a predicted quality (e.g. the feature magnitude) and the ground truth, plus the
    mean magnitude in quantile bins of the ground truth."""
    magnitude, quality = np.asarray(magnitude, float), np.asarray(quality, float)
    rho, p = stats.spearmanr(magnitude, quality)
    edges = np.unique(np.quantile(quality, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, quality, side="right") - 1, 0, len(edges) - 2)
    means = [float(magnitude[which == b].mean()) for b in range(len(edges) - 1)]
    return {"spearman_rho": float(rho), "p_value": float(p), "bin_edges": edges.tolist(), "bin_mean_magnitude": means}
