"""An evaluation set as data: its comparisons (one row per pair), its images, and the protocol settings its metrics
use. The synthetic set and a verification pack take one path from embeddings to these, so the metrics, their
intervals and the stored arrays are computed the same way for both."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


@dataclass(frozen=True)
class Images:
    """The set's images: plain-feature magnitudes, and (synthetic data only) ground-truth quality and identity."""
    norms: np.ndarray
    quality: np.ndarray | None = None
    identities: np.ndarray | None = None


@dataclass(frozen=True)
class Pairs:
    """The set's comparisons. scores: verification scores (flip-fused when eval.flip); quality_scores: the scores
    the quality protocols use (plain features unless eval.flip_for_quality); pair_quality: the smaller of the two
    magnitudes; identities [P, 2]: the bootstrap unit where the set has identity labels (else pairs are);
    ground_truth: the smaller of the two ground-truth qualities (synthetic data only)."""
    left: np.ndarray
    right: np.ndarray
    issame: np.ndarray
    scores: np.ndarray
    quality_scores: np.ndarray
    pair_quality: np.ndarray
    folds: np.ndarray | None = None
    identities: np.ndarray | None = None
    ground_truth: np.ndarray | None = None


@dataclass(frozen=True)
class Protocol:
    """How the metrics are computed: the FMR of the quality protocols and the identity bootstrap's size and level."""
    fmr: float
    n_boot: int = 200
    level: float = 0.95


def evaluation_set(plain, fused, left, right, issame, flip_for_quality: bool, images: Images | None = None,
                   folds=None) -> tuple[Pairs, Images]:
    """(pairs, images) from the set's embeddings (plain and flip-fused) and its pair list; identity labels and
    ground-truth quality come from `images` when the set has them."""
    images = Images(np.linalg.norm(plain, axis=1), images.quality, images.identities) if images else \
        Images(np.linalg.norm(plain, axis=1))
    q_feats = fused if flip_for_quality else plain
    ids = images.identities
    truth = None if images.quality is None else np.minimum(images.quality[left], images.quality[right])
    pairs = Pairs(left, right, issame, cosine(fused[left], fused[right]), cosine(q_feats[left], q_feats[right]),
                  np.minimum(images.norms[left], images.norms[right]), folds,
                  None if ids is None else np.stack([ids[left], ids[right]], 1), truth)
    return pairs, images


def stored_arrays(pairs: Pairs, images: Images) -> dict:
    """The arrays RUN/eval/<set>.npz holds (what figures and notebooks redraw from); the synthetic set adds its
    ground truth, identities, folds and pair indices."""
    arrays = {"norms": images.norms, "scores": pairs.scores, "quality_scores": pairs.quality_scores,
              "issame": pairs.issame, "pair_quality_norm": pairs.pair_quality}
    if images.quality is not None:
        arrays.update(quality=images.quality, identity=images.identities, fold=pairs.folds, left=pairs.left,
                      right=pairs.right, pair_quality_gt=pairs.ground_truth)
    return arrays
