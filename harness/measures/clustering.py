"""Face clustering scores (the paper's Table 3 protocol family): BCubed precision, recall and F, and NMI.

BCubed scores every image: precision = the share of its cluster that is its identity, recall = the share of its
identity that is in its cluster; the set's precision and recall are the means over images, F their harmonic mean.
Noise points (label -1, DBSCAN) are singleton clusters: they keep full precision and lose recall.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import normalized_mutual_info_score

METHODS = ("kmeans", "agglomerative", "dbscan")
DBSCAN_MIN_SAMPLES = 5   # with 2 or 3 a few chance neighbours chain identities together (measured on the CPU default)


def _singletons(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred).copy()
    noise = pred < 0
    pred[noise] = pred.max(initial=-1) + 1 + np.arange(noise.sum())
    return pred


def bcubed_items(true, pred) -> tuple[np.ndarray, np.ndarray]:
    """Per-image BCubed (precision, recall)."""
    true, pred = np.asarray(true), _singletons(pred)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"labels of shape {true.shape} and {pred.shape}: expected two equal 1-d arrays")
    _, t = np.unique(true, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    joint = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(joint, (t, p), 1)
    both = joint[t, p]
    return both / joint.sum(axis=0)[p], both / joint.sum(axis=1)[t]


def bcubed(true, pred, items=None) -> dict:
    """{precision, recall, f} over the images (or over `items`, indices with repeats: a bootstrap resample)."""
    prec, rec = bcubed_items(true, pred)
    if items is not None:
        prec, rec = prec[items], rec[items]
    p, r = float(prec.mean()), float(rec.mean())
    return {"precision": p, "recall": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


def cluster(unit_embeddings: np.ndarray, method: str, n_clusters: int, eps: float | None = None,
            seed: int = 0) -> np.ndarray:
    """Cluster labels of unit-norm embeddings: k-means and average-linkage agglomerative (cosine) with the number
    of identities as k; DBSCAN (cosine) with the given eps and DBSCAN_MIN_SAMPLES."""
    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters}: clustering needs at least 2 identities")
    if method == "kmeans":
        return KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(unit_embeddings)
    if method == "agglomerative":
        return AgglomerativeClustering(n_clusters, metric="cosine", linkage="average").fit_predict(unit_embeddings)
    if method == "dbscan":
        if eps is None or not eps > 0:
            raise ValueError(f"eps={eps!r}: DBSCAN needs a positive cosine distance")
        return DBSCAN(eps=eps, min_samples=DBSCAN_MIN_SAMPLES, metric="cosine").fit_predict(unit_embeddings)
    raise ValueError(f"method={method!r}: expected one of {METHODS}")


def nmi(true, pred) -> float:
    return float(normalized_mutual_info_score(true, _singletons(pred)))
