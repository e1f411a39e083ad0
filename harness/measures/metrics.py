"""Verification and quality metrics on stored scores: 10-fold accuracy, TAR@FAR, error-versus-discard curves
under both named protocols, magnitude-vs-quality statistics, and bootstrap CIs over identities. Pure
NumPy/SciPy/scikit-learn on arrays, so figures re-draw without a model."""
from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.integrate import trapezoid
from sklearn.model_selection import KFold

from harness.measures import roc

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _best_threshold(scores, issame):
    """Similarity threshold maximising accuracy (accept when score > threshold) over the candidate midpoints
    between distinct scores (and one below, one above all), the first best one; O(n log n) with cumulative counts,
    so a bootstrap can call it hundreds of times."""
    s, inverse = np.unique(scores, return_inverse=True)
    genuine = np.bincount(inverse, weights=issame.astype(float), minlength=len(s))
    impostor = np.bincount(inverse, minlength=len(s)) - genuine
    # candidate c (0..len(s)) accepts the distinct scores s[c:]: correct = genuine at or above c + impostors below
    correct = (np.concatenate([[0.0], np.cumsum(impostor)]) +
               np.concatenate([np.cumsum(genuine[::-1])[::-1], [0.0]]))
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    return candidates[int(np.argmax(correct))]


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


def tar_at_far(scores, issame, fars=FARS, rule: str = "conservative") -> dict:
    """TAR at each FAR read off the exact ROC (tied scores are one operating point, harness.measures.roc) under the
    named FAR rule ("conservative": largest FPR <= far, this suite's default; "nearest": the IJB scripts' rule); NaN
    where there are too few impostor pairs to measure that FAR."""
    return roc.tar_at_far_of_scores(scores, issame, fars, rule)


def threshold_at_fmr(scores, issame, fmr: float) -> float:
    """Smallest threshold with at most fmr of the impostor scores strictly above it (NaN without impostors)."""
    impostor = np.sort(np.asarray(scores, float)[~np.asarray(issame, bool)])[::-1]
    if len(impostor) == 0:
        return float("nan")
    k = int(np.floor(fmr * len(impostor)))
    if k >= len(impostor):
        return float(impostor[-1])
    return float(impostor[k])


DISCARD_FRACTIONS = np.arange(0, 0.98, 0.05)   # 0, 0.05, ..., 0.95: the official MagFace eval_quality grid
PAUC_LIMITS = (0.2,)                             # discard limits of the stored pAUC values


def error_versus_discard(scores, issame, pair_quality, *, fmr: float, threshold: str = "recomputed",
                         fractions=DISCARD_FRACTIONS) -> dict:
    """FNMR against the fraction discarded, lowest pair quality (min of the two images) first: the first
    int(fraction * n) of the quality order go. Two protocols, both in use, named by `threshold`:

    - "recomputed", the official MagFace eval_quality script: n counts all pairs, and at every fraction the
      threshold is set again on the kept impostor pairs, at the k-th highest kept impostor score with
      k = floor((m - 1) * fmr) for m kept impostors (the script's repeated integer division of m - 1 by 10 for
      fmr = 10^-j); a genuine pair matches when its score is strictly above it. Where the script prints nothing
      (m <= 1 / (10 fmr)) the FNMR is NaN.
    - "fixed", the ISO/IEC 29794-1 FNMR Error-versus-Discard Characteristic: one threshold at the starting error
      (FMR = fmr on all pairs), kept while discarding; n counts the mated (genuine) comparisons, the only ones that
      enter the FNMR at a fixed threshold.

    Returns fractions, fnmr, thresholds, `area` (trapezoid over all fractions divided by their range; NaN when
    the curve is undefined anywhere, so areas of different runs always cover the same range), `defined_up_to`
    (the last fraction before the first undefined one: the official script's figure stops there) and `pauc`
    {limit: area under the curve from 0 to the discard limit} (Schlett et al. 2023's pAUC, unnormalised)."""
    if threshold not in ("recomputed", "fixed"):
        raise ValueError(f"threshold={threshold!r}: expected 'recomputed' (official MagFace script) or 'fixed' "
                         f"(ISO/IEC 29794-1 EDC)")
    scores, issame = np.asarray(scores, float), np.asarray(issame, bool)
    fractions = np.asarray(fractions, float)
    order = np.argsort(np.asarray(pair_quality, float), kind="stable")   # lowest quality first
    start = threshold_at_fmr(scores, issame, fmr)
    if threshold == "fixed":
        order = order[issame[order]]                                     # the mated comparisons, in quality order
    fnmr, thresholds = [], []
    for r in fractions:
        kept = order[int(r * len(order)):]
        genuine, impostor = scores[kept][issame[kept]], scores[kept][~issame[kept]]
        t = start if threshold == "fixed" else _official_threshold(impostor, fmr)
        thresholds.append(t)
        fnmr.append(float(np.mean(genuine <= t)) if len(genuine) and np.isfinite(t) else float("nan"))
    fnmr, thresholds = np.array(fnmr), np.array(thresholds)
    defined = int(np.argmin(np.isfinite(fnmr))) if not np.all(np.isfinite(fnmr)) else len(fnmr)
    area = float(trapezoid(fnmr, fractions) / (fractions[-1] - fractions[0]))
    return {"fractions": fractions, "fnmr": fnmr, "thresholds": thresholds, "threshold_protocol": threshold,
            "fmr": fmr, "area": area, "defined_up_to": float(fractions[defined - 1]) if defined else float("nan"),
            "pauc": {limit: partial_area(fractions, fnmr, limit) for limit in PAUC_LIMITS}}


def iso_edc(scores, issame, pair_quality, *, starting_fnmr: float | None = None, starting_fmr: float | None = None,
            threshold: float | None = None, pauc_limits=(0.2,)) -> dict:
    """The FNMR Error-versus-Discard Characteristic with the conventions of Schlett et al. 2023's reference code
    (dasec/quality-assessment-evaluation, `edc.py`): the mated comparisons only, ordered by pair quality (the min of
    the two), the threshold fixed by exactly one of a starting FNMR (the `starting_fnmr` quantile of the mated
    scores, numpy's linear rule), a starting FMR (the 1 - `starting_fmr` quantile of the non-mated scores) or a
    given `threshold`; a comparison is a false non-match when its score is below it. The curve has a point at every
    discard count where the quality changes (a block of tied qualities goes at once), and (1, 0) closes it; pAUC is
    the stepwise area up to each limit, `pauc_theoretical_best` the area under the best possible curve
    max(0, FNMR_0 - discarded) up to that limit (commonly subtracted from the pAUC)."""
    given = [v is not None for v in (starting_fnmr, starting_fmr, threshold)]
    if sum(given) != 1:
        raise ValueError("iso_edc: give exactly one of starting_fnmr, starting_fmr and threshold")
    for name, value in (("starting_fnmr", starting_fnmr), ("starting_fmr", starting_fmr)):
        if value is not None and not 0 < value < 1:
            raise ValueError(f"iso_edc: {name}={value} must be in (0, 1)")
    for limit in pauc_limits:
        if not 0 <= limit <= 1:
            raise ValueError(f"iso_edc: pAUC limit {limit} must be in [0, 1]")
    scores, issame = np.asarray(scores, float), np.asarray(issame, bool)
    mated, quality = scores[issame], np.asarray(pair_quality, float)[issame]
    if not len(mated):
        raise ValueError("iso_edc: no mated comparisons")
    if starting_fnmr is not None:
        threshold = float(np.quantile(mated, starting_fnmr))
    elif starting_fmr is not None:
        if issame.all():
            raise ValueError("iso_edc: a starting FMR needs non-mated comparisons")
        threshold = float(np.quantile(scores[~issame], 1 - starting_fmr))
    order = np.argsort(quality, kind="stable")
    quality, errors = quality[order], (mated[order] < threshold).astype(np.int64)
    remaining_errors = np.cumsum(errors[::-1])[::-1]       # errors among the comparisons from index k on
    n = len(errors)
    counts = np.concatenate([[0], np.flatnonzero(quality[:-1] != quality[1:]) + 1])
    fnmr = remaining_errors[counts] / (n - counts)
    discarded = counts / n
    if discarded[-1] != 1:
        discarded, fnmr = np.append(discarded, 1.0), np.append(fnmr, 0.0)
    start = float(fnmr[0])
    return {"discard_fractions": discarded, "fnmr": fnmr, "threshold": float(threshold), "starting_fnmr": start,
            "pauc": {limit: _stepwise_area(discarded, fnmr, limit) for limit in pauc_limits},
            "pauc_theoretical_best": {limit: start ** 2 / 2 - (max(start - limit, 0.0) ** 2) / 2
                                      for limit in pauc_limits}}


def _stepwise_area(discarded: np.ndarray, fnmr: np.ndarray, limit: float) -> float:
    """Area under a step curve (each FNMR held until the next discard fraction) from 0 to `limit`."""
    right = np.minimum(np.append(discarded[1:], limit), limit)
    widths = np.clip(right - discarded, 0, None)
    return float(np.sum(fnmr * widths))


def _official_threshold(impostor_scores, fmr: float) -> float:
    """The official script's threshold on these impostor scores (NaN where it reports nothing)."""
    n = len(impostor_scores)
    if (n - 1) * fmr * 10 < 1 - 1e-9:
        return float("nan")
    k = int(np.floor((n - 1) * fmr + 1e-9))
    return float(np.sort(impostor_scores)[::-1][k])


def partial_area(fractions, fnmr, limit: float) -> float:
    """Area under an error-versus-discard curve from discard fraction 0 to `limit` (linear interpolation)."""
    fractions, fnmr = np.asarray(fractions, float), np.asarray(fnmr, float)
    if not fractions[0] <= limit <= fractions[-1]:
        raise ValueError(f"pAUC limit {limit} outside the discard fractions [{fractions[0]}, {fractions[-1]}]")
    inside = fractions <= limit + 1e-12
    x = np.append(fractions[inside], limit)
    y = np.append(fnmr[inside], np.interp(limit, fractions, fnmr))
    return float(trapezoid(y, x))


def retrieval_per_query(embeddings, labels, chunk: int = 1024) -> dict:
    """Exact cosine retrieval of every image against all the others (itself excluded), per query: the average
    precision at R of MAP@R (R = the other images of its identity; Musgrave, Belongie and Lim, ECCV 2020) and
    whether its nearest neighbour shares its identity (Precision@1). Queries whose identity has no other image
    (R = 0) are dropped: {"ap_at_r", "hit_at_1", "query"} (query: the kept images' indices)."""
    x = np.asarray(embeddings, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = counts[codes] - 1
    query = np.flatnonzero(r > 0)
    if len(query) == 0:
        raise ValueError(f"retrieval needs an identity with at least 2 images; got {len(labels)} images of "
                         f"{len(counts)} identities, one image each")
    depth = int(r.max())
    ap, hit = [], []
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk]
        sim = x[q] @ x.T
        sim[np.arange(len(q)), q] = -np.inf                           # never retrieve the query itself
        top = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
        relevant = codes[top] == codes[q][:, None]
        ranks = np.arange(1, depth + 1)
        within = ranks[None, :] <= r[q][:, None]
        precision = np.cumsum(relevant, axis=1) / ranks
        ap.append((precision * relevant * within).sum(axis=1) / r[q])
        hit.append(relevant[:, 0])
    return {"ap_at_r": np.concatenate(ap), "hit_at_1": np.concatenate(hit).astype(float), "query": query}


def identity_bootstrap(identities, statistic, *, n_boot: int = 200, level: float = 0.95, seed: int = 0):
    """Percentile confidence interval of statistic(index) by resampling evaluation identities, not pairs: pairs
    and images of one identity are not independent. identities: [n] (images) or [n, 2] (pairs: the identities
    of the two images). An identity drawn m times contributes its images and genuine pairs m times, and an
    impostor pair of identities drawn m_i and m_j times m_i * m_j times. statistic(index) gets the item indices
    of one resample (with repeats) and returns a float (NaN allowed). Returns (low, high), or (None, None) when
    there are fewer than 2 identities or more than half the resamples give NaN."""
    ids = np.asarray(identities)
    ids = ids[:, None] if ids.ndim == 1 else ids
    unique, codes = np.unique(ids, return_inverse=True)
    codes = codes.reshape(ids.shape)
    if len(unique) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    same = codes[:, 0] == codes[:, -1]
    values = []
    for _ in range(n_boot):
        m = np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique))
        mult = m[codes[:, 0]] * np.where(same, 1, m[codes[:, -1]])
        values.append(statistic(np.repeat(np.arange(len(ids)), mult)))
    values = np.asarray(values, float)
    if np.isnan(values).mean() > 0.5:
        return None, None
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def quality_agreement(magnitude, quality, bins: int = 10) -> dict:
    """Spearman rho between a predicted quality (e.g. the feature magnitude) and the ground truth, plus the
    mean magnitude in quantile bins of the ground truth."""
    magnitude, quality = np.asarray(magnitude, float), np.asarray(quality, float)
    rho, p = stats.spearmanr(magnitude, quality)
    edges = np.unique(np.quantile(quality, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, quality, side="right") - 1, 0, len(edges) - 2)
    means = [float(magnitude[which == b].mean()) for b in range(len(edges) - 1)]
    return {"spearman_rho": float(rho), "p_value": float(p), "bin_edges": edges.tolist(), "bin_mean_magnitude": means}
