"""The IJB-B/C template protocol on image features: every choice a named mode, as the field's scripts make it.

Modes (named as insightface's `eval_ijbc.py` names them; its PR #1364 table swaps the meaning of N):
- F1 fuses the features of an image and its horizontal flip by summing them (F0: the image's alone);
- N1 keeps each image feature's norm into the pooling (N0 normalises image features first);
- D1 multiplies an image's feature by its detector score (D0: not).
Pooling: the mean of the images of one media (a video's frames, or one still), then the sum over the template's
media, then the template normalised; a pair's score is the cosine of its two templates. MagFace and MagFace+ are the
official MagFace IJB evaluation (no flip, no detector score): MagFace normalises each media's mean feature, MagFace+
(magqlt=1, the paper's Table 2) keeps it, i.e. N1D0F0, so the pooled sum is sum_i a_i u_i: each unit feature u_i
weighted by its magnitude a_i. QMagFace (Terhoerst et al., 2023) scores MagFace+ templates as s' = s + min(0,
beta * s - alpha) * min(q1, q2), q a template's magnitude-weighted mean magnitude; alpha and beta are QMagFace's
published values or fitted on validation pairs by its own procedure (`fit_qmagface`).

1:1 reads TAR at FAR off the exact ROC under both FAR rules (harness.measures.roc); 1:N gives open-set TPIR at FPIR
and rank-k accuracy of the mated probes per gallery (`identification`, insightface's `ijb_evals.py` rule). Everything is
batched: no [T, T] score matrix, so IJB-C's 15.7M pairs fit in bounded memory.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_curve

from harness.measures import roc

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS = (0.01, 0.1)
RANKS = (1, 5)


@dataclass(frozen=True)
class Mode:
    """One combination of the protocol's switches. norm, detector, flip: insightface's N, D, F (named as in
    `eval_ijbc.py`, whose N1 keeps the norms; its notebook calls the flip sum "F2", PR #1364 swaps the N). media_norm:
    each media's mean feature normalised before the template mean (the official MagFace script without magqlt);
    off in every insightface mode."""
    norm: bool = True
    detector: bool = True
    flip: bool = True
    media_norm: bool = False

    @property
    def name(self) -> str:
        return f"N{int(self.norm)}D{int(self.detector)}F{int(self.flip)}" + ("M1" if self.media_norm else "")

    @classmethod
    def parse(cls, text: str) -> Mode:
        if text in PRESETS:
            return PRESETS[text]
        match = re.fullmatch(r"N([01])D([01])F([01])(M1)?", text.strip())
        if not match:
            raise ValueError(f"IJB mode {text!r}: expected N<0|1>D<0|1>F<0|1> (e.g. N1D1F1: norms kept, detector "
                             f"score weighting, flip fusion; N0D1F0), optionally M1 (media normalised), or one of "
                             f"{', '.join(PRESETS)}")
        return cls(*(g == "1" for g in match.groups()[:3]), media_norm=bool(match.group(4)))


# The official MagFace IJB evaluation (eval/eval_recognition/eval_ijb.py): no flip, no detector score, image
# features never normalised; per media the mean; magqlt=0 normalises each media feature ("MagFace"), magqlt=1 keeps
# it ("MagFace+": magnitude-weighted templates, the paper's Table 2). The final template normalisation and MagFace's
# score 1 - acos(cos)/pi (monotone in the cosine) leave the ROC as computed here.
PRESETS = {"MagFace": Mode(norm=True, detector=False, flip=False, media_norm=True),
           "MagFace+": Mode(norm=True, detector=False, flip=False, media_norm=False)}


def image_scales(plain: np.ndarray, flipped: np.ndarray | None, detector_scores: np.ndarray, mode: Mode,
                 rows: int = 65536) -> np.ndarray:
    """The factor each image's (flip-summed) feature is multiplied by before pooling: 1 / its norm under N0, times
    its detector score under D1 (rows at a time: no copy of the [N, d] features)."""
    if mode.flip and flipped is None:
        raise ValueError(f"mode {mode.name} fuses flipped features, but none were computed")
    scale = np.ones(len(plain), np.float32)
    if not mode.norm:
        for lo in range(0, len(plain), rows):
            f = plain[lo:lo + rows] + flipped[lo:lo + rows] if mode.flip else plain[lo:lo + rows]
            scale[lo:lo + rows] = 1 / np.maximum(np.sqrt(np.einsum("ij,ij->i", f, f)), 1e-12)
    if mode.detector:
        scale *= detector_scores.astype(np.float32)
    return scale


@dataclass
class Grouping:
    """Images grouped into media and templates once (sorted segments), reused by every mode."""
    order: np.ndarray            # image indices sorted by (template, media)
    media_starts: np.ndarray     # start of each media in that order
    media_template: np.ndarray   # template row of each media
    template_ids: np.ndarray     # sorted template ids (rows of the pooled features)

    @classmethod
    def of(cls, templates: np.ndarray, medias: np.ndarray) -> Grouping:
        order = np.lexsort((medias, templates))
        t, m = templates[order], medias[order]
        new_media = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])
        template_ids, media_template = np.unique(t[new_media], return_inverse=True)
        return cls(order, new_media, media_template.reshape(-1), template_ids)

    def media_means(self, values: np.ndarray, scale=None, plus=None, columns: int = 64) -> np.ndarray:
        """Per media: the mean of its images' rows of `values` (+ `plus`, times `scale` per image), for [N] or
        [N, d] arrays in image order; `columns` feature columns at a time (a sorted copy of 64 columns, never of
        the whole [N, d] array: bounded memory)."""
        counts = np.diff(np.r_[self.media_starts, len(self.order)])
        if values.ndim == 1:
            return np.add.reduceat(values[self.order], self.media_starts) / counts
        weights = None if scale is None else scale[self.order][:, None]
        out = np.empty((len(counts), values.shape[1]), np.float32)
        for c in range(0, values.shape[1], columns):
            part = values[self.order, c:c + columns]
            if plus is not None:
                part += plus[self.order, c:c + columns]
            if weights is not None:
                part *= weights
            out[:, c:c + columns] = np.add.reduceat(part, self.media_starts, axis=0) / counts[:, None]
        return out

    def template_sums(self, media_values: np.ndarray) -> np.ndarray:
        """Per template: the sum of its media's rows."""
        starts = np.flatnonzero(np.r_[True, self.media_template[1:] != self.media_template[:-1]])
        return np.add.reduceat(media_values, starts, axis=0)


def pool_templates(plain: np.ndarray, flipped: np.ndarray | None, detector_scores: np.ndarray, mode: Mode,
                   grouping: Grouping) -> np.ndarray:
    """Unit template features [T, d] (rows in grouping.template_ids order) of a mode: each image's feature (the
    flip sum under F1, normalised under N0, times its detector score under D1), the mean over each media's images
    (each media normalised if media_norm), the sum over the template's media, normalised."""
    scale = image_scales(plain, flipped, detector_scores, mode)
    media = grouping.media_means(plain, scale=scale, plus=flipped if mode.flip else None)
    if mode.media_norm:
        media /= np.maximum(np.linalg.norm(media, axis=1, keepdims=True), 1e-12)
    pooled = grouping.template_sums(media)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"template {grouping.template_ids[np.flatnonzero(norms[:, 0] == 0)[0]]} pools to a zero "
                         "feature (all its detector scores are 0?): it has no direction to compare")
    return (pooled / norms).astype(np.float32)


def qmagface_templates(plain: np.ndarray, grouping: Grouping) -> tuple[np.ndarray, np.ndarray]:
    """(unit template features, template qualities) by QMagFace's own fusion (`combine_weighted_f_q`, within each
    media and then across the template's media): the direction of sum_i a_i f_i (raw features f_i of magnitude a_i,
    so unit features weighted by a_i^2), the magnitude sum(a^2) / sum(a)."""
    magnitudes = np.sqrt(np.einsum("ij,ij->i", plain, plain))
    media = grouping.media_means(plain, scale=magnitudes)
    media /= np.maximum(np.linalg.norm(media, axis=1, keepdims=True), 1e-12)
    media_q = grouping.media_means(magnitudes ** 2) / grouping.media_means(magnitudes)
    pooled = grouping.template_sums(media * (media_q ** 2)[:, None])
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32), template_quality(magnitudes, grouping)


def template_quality(magnitudes: np.ndarray, grouping: Grouping) -> np.ndarray:
    """QMagFace's template quality: within each media, then across the template's media, the magnitude-weighted
    mean magnitude sum(a^2) / sum(a) (QMagFace `combine_weighted_f_q`)."""
    media = grouping.media_means(magnitudes ** 2) / grouping.media_means(magnitudes)
    return grouping.template_sums(media ** 2) / grouping.template_sums(media)


def template_rows(template_ids: np.ndarray, wanted: np.ndarray, where: str) -> np.ndarray:
    """Row of each wanted template id in the pooled features; an unknown id is an error naming it."""
    rows = np.searchsorted(template_ids, wanted)
    rows = np.minimum(rows, len(template_ids) - 1)
    missing = template_ids[rows] != wanted
    if missing.any():
        raise ValueError(f"{where}: template {wanted[missing][0]} has no images ({int(missing.sum())} pair entries "
                         "name templates without images)")
    return rows


def pair_scores(features: np.ndarray, left: np.ndarray, right: np.ndarray, block: int = 2048) -> np.ndarray:
    """Cosines of the pairs (rows of unit features), in blocks of left templates: each block is one matrix
    product [block, T] from which its pairs are read, so memory stays bounded and IJB-C's 15.7M pairs take
    seconds."""
    order = np.argsort(left, kind="stable")
    scores = np.empty(len(left), np.float32)
    starts = np.searchsorted(left[order], np.arange(0, features.shape[0] + block, block))
    for b in range(len(starts) - 1):
        lo, hi = starts[b], starts[b + 1]
        if lo == hi:
            continue
        idx = order[lo:hi]
        first = b * block
        block_scores = features[first:first + block] @ features.T
        scores[idx] = block_scores[left[idx] - first, right[idx]]
    return scores


def verification(scores: np.ndarray, issame: np.ndarray, fars=IJB_FARS) -> dict:
    """1:1 metrics: TAR at each FAR under both rules, AUC, and the ROC at every distinct threshold."""
    curve = roc.SortedScores.of(scores, issame)
    fpr, tpr, impostors = curve.curve()
    out = {"pairs": int(len(scores)), "genuine": int(np.sum(issame)), "impostor": int(impostors),
           "auc": roc.auc(fpr, tpr)}
    for rule in roc.FAR_RULES:
        out[f"tar_at_far_{rule}"] = {f"{k:g}": v for k, v in roc.tar_at_far(fpr, tpr, impostors, fars, rule).items()}
    return out, {"fpr": fpr, "tpr": tpr, "thresholds": np.concatenate([[np.inf], curve.thresholds])}


def qmagface_scores(scores, q_left, q_right, alpha: float, beta: float) -> np.ndarray:
    """QMagFace's quality-aware score: s + min(0, beta * s - alpha) * min(q1, q2)."""
    return scores + np.minimum(0.0, beta * scores - alpha) * np.minimum(q_left, q_right)


QMAGFACE_PUBLISHED = {"alpha": 0.077428, "beta": 0.125926}   # QMagFace README (fitted on ColorFERET pairs)


QMAGFACE_FMRS = np.logspace(-5, -2, 50)   # the FMR grid QMagFace's fit averages over (its reference code's)


def fit_qmagface(scores, issame, q_left, q_right, omegas: int = 20, fmrs=QMAGFACE_FMRS,
                 procedure: str = "reference") -> dict:
    """QMagFace's fit (`similarity/qmagface.py`, `train`) on validation pairs: for each of `omegas` constant weights
    w in [-0.5, 0.5] / max q, the ROC (scikit-learn's `roc_curve`) of sigmoid(s + w * min(q1, q2)); at each FMR the
    first point of the lowest FNMR among those with FPR < FMR, and its threshold; the w of the lowest FNMR per FMR;
    then a least-squares line through (threshold, best w): beta its slope, alpha minus its intercept.
    procedure "reference" is that, verbatim (its thresholds are sigmoid values while beta then multiplies the raw
    score); "score" takes the thresholds on the score itself. The result names the procedure."""
    if procedure not in ("reference", "score"):
        raise ValueError(f"QMagFace fit procedure {procedure!r}: expected 'reference' or 'score'")
    q = np.minimum(q_left, q_right)
    top = float(np.max(q))
    if not np.isfinite(top) or top <= 0:
        raise ValueError("QMagFace needs positive template qualities (magnitudes) to fit on")
    best = {}   # fmr -> (fnmr, w, threshold)
    for w in np.linspace(-0.5 / top, 0.5 / top, omegas):
        fused = scores + w * q
        fpr, tpr, thresholds = roc_curve(issame, expit(fused) if procedure == "reference" else fused)
        for fmr in fmrs:
            kept = int(np.sum(fpr < fmr))   # a prefix: the FPR grows along the curve
            if not kept:
                continue
            i = int(np.argmin(1 - tpr[:kept]))
            if fmr not in best or 1 - tpr[i] < best[fmr][0]:
                best[fmr] = (1 - tpr[i], w, thresholds[i])
    points = np.array([(t, w) for _, w, t in best.values() if np.isfinite(t)])
    if len(points) < 2 or np.ptp(points[:, 0]) <= 1e-9 * max(1.0, np.abs(points[:, 0]).max()):
        raise ValueError(f"QMagFace fit: {len(scores):,} validation pairs give too few distinct thresholds at FMR "
                         "1e-5 .. 1e-2 to fit a line; use more pairs, or QMagFace's published alpha and beta")
    slope, intercept = np.polyfit(points[:, 0], points[:, 1], 1)
    return {"alpha": float(-intercept), "beta": float(slope), "pairs": int(len(scores)), "fmrs": int(len(points)),
            "procedure": procedure}


SEARCH_BLOCK = 1024        # probes scored against the gallery at once (memory: SEARCH_BLOCK x gallery floats)
SEARCH_LEVEL = 0.95        # the level of the 1:N intervals


def identification(gallery: np.ndarray, gallery_subjects: np.ndarray, probes: np.ndarray,
                   probe_subjects: np.ndarray, fpirs=FPIRS, ranks=RANKS, n_boot: int = 0, seed: int = 0) -> dict:
    """Open-set 1:N of unit probe templates against one gallery's unit templates (insightface `ijb_evals.py`,
    `evaluation_1N`): a probe is mated when its subject has a gallery template (its score: the best over them);
    the threshold at an FPIR is the k-th highest of the non-mated probes' best gallery scores, k = max(int(n *
    FPIR), 1); TPIR counts the mated probes whose mate scores above it and above every non-mate (a tie with a
    non-mate is not rank 1). Rank-k: the share of mated probes with fewer than k non-mates scoring at least their
    mate. n_boot > 0: percentile intervals over resampled probe subjects."""
    block = SEARCH_BLOCK
    mate = np.full(len(probes), -np.inf, np.float32)
    best_other = np.full(len(probes), -np.inf, np.float32)
    for lo in range(0, len(probes), block):
        s = probes[lo:lo + block] @ gallery.T
        own = gallery_subjects[None, :] == probe_subjects[lo:lo + block, None]
        mate[lo:lo + block] = np.where(own, s, -np.inf).max(axis=1, initial=-np.inf)
        best_other[lo:lo + block] = np.where(own, -np.inf, s).max(axis=1, initial=-np.inf)
    rank = np.ones(len(probes), np.int64)
    for lo in range(0, len(probes), block):   # again, now that every mate score is known
        s = probes[lo:lo + block] @ gallery.T
        own = gallery_subjects[None, :] == probe_subjects[lo:lo + block, None]
        rank[lo:lo + block] += (np.where(own, -np.inf, s) >= mate[lo:lo + block, None]).sum(axis=1)   # ties lose
    mated = np.isfinite(mate)
    search = _Searches(mate, best_other, rank, mated)
    out = {"probes": int(len(probes)), "mated": int(mated.sum()), "non_mated": int((~mated).sum()),
           **search.stats(np.ones(len(probes)), fpirs, ranks)}
    if n_boot:
        out["intervals"] = search.intervals(probe_subjects, fpirs, ranks, n_boot, SEARCH_LEVEL, seed)
    return out


@dataclass
class _Searches:
    """The outcome of every probe's search (its mate's score and rank, its best non-mate score), from which the
    1:N statistics follow for any weighting of the probes (a bootstrap's multiplicities)."""
    mate: np.ndarray
    best_other: np.ndarray
    rank: np.ndarray
    mated: np.ndarray

    def __post_init__(self):
        self.top_order = np.argsort(-self.best_other[~self.mated], kind="stable")
        self.tops = self.best_other[~self.mated][self.top_order]

    def stats(self, weights: np.ndarray, fpirs, ranks) -> dict:
        w_mated, w_non = weights[self.mated], weights[~self.mated][self.top_order]
        total = w_mated.sum()
        out = {"rank": {f"{k}": float(w_mated @ (self.rank[self.mated] <= k) / total) if total else float("nan")
                        for k in ranks}, "tpir_at_fpir": {}}
        cumulative = np.cumsum(w_non)
        for fpir in fpirs:   # k = max(int(n * FPIR), 1), as the reference (its top score when n * FPIR < 1)
            if not total or not len(cumulative) or cumulative[-1] <= 0:
                out["tpir_at_fpir"][f"{fpir:g}"] = float("nan")
                continue
            k = max(int(cumulative[-1] * fpir), 1)
            threshold = self.tops[np.searchsorted(cumulative, k)]
            hit = (self.rank[self.mated] == 1) & (self.mate[self.mated] > threshold)
            out["tpir_at_fpir"][f"{fpir:g}"] = float(w_mated @ hit / total)
        return out

    def intervals(self, subjects: np.ndarray, fpirs, ranks, n_boot: int, level: float, seed: int) -> dict:
        unique, codes = np.unique(subjects, return_inverse=True)
        rng = np.random.default_rng(seed)
        draws = [self.stats(np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique))
                            [codes].astype(float), fpirs, ranks) for _ in range(n_boot)]
        tail = 100 * (1 - level) / 2

        def band(values):
            with warnings.catch_warnings():   # a statistic too small to measure is NaN in every resample
                warnings.simplefilter("ignore", RuntimeWarning)
                return [float(v) for v in np.nanpercentile(values, [tail, 100 - tail])]
        return {"unit": "probe subjects", "resamples": n_boot, "level": level,
                "rank": {k: band([d["rank"][k] for d in draws]) for k in draws[0]["rank"]},
                "tpir_at_fpir": {f: band([d["tpir_at_fpir"][f] for d in draws]) for f in draws[0]["tpir_at_fpir"]}}
