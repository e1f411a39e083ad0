"""The ROC of a verification score set, exact with tied scores, and TAR at a FAR under a named rule.

Tied scores form one operating point (a threshold accepts all of them or none), so the curve has one point per
distinct score and no collinear point is dropped (scikit-learn's `roc_curve` drops them by default, which reads a
lower TAR off a tied curve). Two rules read TAR at a target FAR, and papers use both under one name:
- "conservative": the point with the largest FPR <= target (never a FAR above the one reported; this suite's
  default for its own tables);
- "nearest": the point whose FPR is nearest the target, the highest TPR among equally near ones (the rule of
  insightface's IJB script, `eval_ijbc.py`, and of the IJB numbers most papers print), on the exact curve;
- "insightface": the same rule on the curve that script reads, scikit-learn's `roc_curve` with its collinear points
  dropped (`drop_intermediate`), for numbers comparable digit by digit with it (it can be lower than "nearest" by
  about 1e-4 at FAR 1e-4 on IJB-C-sized sets, where a dropped point was the nearest).
Either way a FAR below 1 / (number of impostor pairs) cannot be measured and gives NaN.

Scores are sorted once (`SortedScores`); a resample of the pairs is a weight per pair, so a bootstrap over
15.7M IJB-C pairs costs a few cumulative sums per resample, not a sort.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAR_RULES = ("conservative", "nearest", "insightface")


@dataclass
class SortedScores:
    """Pairs sorted by descending score, with where each block of tied scores ends."""
    order: np.ndarray        # pair indices, highest score first
    genuine: np.ndarray      # bool, in that order
    block_ends: np.ndarray   # index (in that order) of the last pair of each distinct score
    thresholds: np.ndarray   # the distinct scores, descending

    @classmethod
    def of(cls, scores, issame) -> SortedScores:
        scores, issame = np.asarray(scores), np.asarray(issame, bool)
        if scores.shape != issame.shape or scores.ndim != 1:
            raise ValueError(f"scores {scores.shape} and issame {issame.shape} must be two vectors of one length")
        order = np.argsort(-scores, kind="stable")
        ranked = scores[order]
        ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
        return cls(order, issame[order], ends, ranked[ends])

    def curve(self, weights=None) -> tuple[np.ndarray, np.ndarray, int]:
        """(fpr, tpr, impostor weight) at every distinct threshold, starting at (0, 0); weights: per pair (in the
        original order), e.g. a bootstrap's multiplicities. NaN curves when a class has no weight."""
        w = np.ones(len(self.order)) if weights is None else np.asarray(weights, float)[self.order]
        tp = np.cumsum(np.where(self.genuine, w, 0.0))[self.block_ends]
        fp = np.cumsum(np.where(self.genuine, 0.0, w))[self.block_ends]
        positives, negatives = (tp[-1], fp[-1]) if len(tp) else (0.0, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            fpr = np.concatenate([[0.0], fp / negatives])
            tpr = np.concatenate([[0.0], tp / positives])
        return fpr, tpr, negatives


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, impostors: float, fars, rule: str = "conservative") -> dict:
    """{far: TAR} read off a curve from SortedScores.curve (NaN where far * impostors < 1)."""
    if rule not in FAR_RULES:
        raise ValueError(f"FAR rule {rule!r}: expected one of {FAR_RULES}")
    out = {}
    for far in fars:
        if not impostors or far * impostors < 1 or not np.isfinite(tpr[-1]):
            out[far] = float("nan")
        elif rule == "conservative":
            out[far] = float(tpr[np.searchsorted(fpr, far, side="right") - 1])
        else:
            f, t = (fpr, tpr) if rule == "nearest" else _scikit_learn_points(fpr, tpr)
            gap = np.abs(f - far)
            out[far] = float(t[gap == gap.min()].max())
    return out


def _scikit_learn_points(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points `sklearn.metrics.roc_curve` keeps by default: (0, 0), then every point where the curve bends (a
    non-zero second difference of FPR or TPR), and the last one."""
    f, t = fpr[1:], tpr[1:]
    tol = 1e-12
    bends = np.abs(np.diff(f, 2)) > tol
    bends |= np.abs(np.diff(t, 2)) > tol
    keep = np.r_[True, bends, True] if len(f) > 1 else np.ones(len(f), bool)
    return np.r_[0.0, f[keep]], np.r_[0.0, t[keep]]


def tar_at_far_of_scores(scores, issame, fars, rule: str = "conservative") -> dict:
    """TAR at each FAR of one score set (exact with ties), under `rule`."""
    issame = np.asarray(issame, bool)
    if issame.all() or not issame.any():   # no ROC (e.g. a bootstrap resample of one identity)
        return {far: float("nan") for far in fars}
    return tar_at_far(*SortedScores.of(scores, issame).curve(), fars, rule)


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC (trapezoids between the distinct thresholds: ties count half, as the Mann-Whitney U)."""
    return float(np.trapezoid(tpr, fpr))
