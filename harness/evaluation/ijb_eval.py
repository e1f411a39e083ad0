"""Evaluate a network on an IJB-B/C release: align, embed (cached), then the protocol in every asked mode.

    python -m harness evaluate --ijb ROOT --ijb-set IJBC --checkpoint PATH --format magface|insightface|run \
        [--backbone iresnet100] [--modes N1D1F1,N0D1F1,MagFace+] [--qmagface] [--device cuda] --out OUT

Each loose crop is aligned to the network's own input size with its five landmarks (harness.data.align) and
preprocessed with the checkpoint's convention; the plain and flipped features of every image are cached in
OUT/features-<key>.npz (key: the checkpoint file, the face list, the preprocessing), so a rerun with other modes
embeds nothing. OUT/<set>.json holds, per mode, its definition, 1:1 (TAR at FAR 1e-6 .. 1e-1 under both FAR rules,
AUC, 95 % intervals over resampled subjects when the 1:N lists name them) and 1:N per gallery; OUT/<set>_roc.npz
the ROC of each mode (thinned to at most 2,000 points, log-spaced in FPR).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from harness.data import file_sha256
from harness.data.align import align, check_landmarks
from harness.data.ijb import IJBRelease, check_crops, check_detector_scores, read_release
from harness.data.preprocess import image_to_rgb
from harness.evaluation.networks import load_network, network_input
from harness.files import atomic_json, read_json, read_npz
from harness.locks import temporary_name
from harness.measures import ijb, roc

DEFAULT_MODES = ("N1D1F1", "N0D1F1", "MagFace+")
NO_SUBJECTS = ("unavailable: the release has no 1:N lists naming every compared template's subject (insightface's "
               "IJB release may lack them); intervals resample subjects")
ROC_POINTS = 2000


class CropDataset(torch.utils.data.Dataset):
    """Aligned network inputs of a release's loose crops (decoded and warped in DataLoader workers)."""

    def __init__(self, release: IJBRelease, prep: dict):
        self.release, self.prep = release, prep

    def __len__(self):
        return len(self.release.images)

    def __getitem__(self, i):
        path = self.release.image_path(i)
        try:
            with Image.open(path) as im:
                rgb = image_to_rgb(im, path)
        except OSError as exc:
            raise ValueError(f"cannot decode {path}: {exc}") from None
        points = check_landmarks(self.release.landmarks[i], (rgb.shape[1], rgb.shape[0]),
                                 f"{self.release.landmark_lines[i]} (image {self.release.images[i]})")
        crop = align(rgb, points, self.prep["size"])
        return torch.from_numpy(network_input(crop[None], self.prep)[0])


def embed_release(release: IJBRelease, model, prep: dict, device: str, batch_size: int = 128, workers: int = 0):
    """(plain, flipped) features [N, d] float32 of every image of the release."""
    loader = torch.utils.data.DataLoader(CropDataset(release, prep), batch_size=batch_size, num_workers=workers)
    plain, flipped = [], []
    model.to(device).eval()
    with torch.no_grad():
        for x in tqdm(loader, desc=f"embedding {release.name}", unit="batch"):
            x = x.to(device)
            plain.append(model(x).float().cpu().numpy())
            flipped.append(model(x.flip(-1)).float().cpu().numpy())
    return np.concatenate(plain), np.concatenate(flipped)


def features(release: IJBRelease, checkpoint: str, fmt: str, backbone: str | None, out: str, device: str,
             batch_size: int = 128, workers: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The release's features, from OUT's cache when this checkpoint, face list and preprocessing made them."""
    model, prep = load_network(checkpoint, fmt, backbone)
    key = cache_key(release, checkpoint, prep)
    path = os.path.join(out, f"features-{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as z:
            if list(z["images"]) == release.images:
                print(f"features of {len(release.images):,} images reused from {path}")
                return z["plain"], z["flipped"], prep
    check_crops(release)   # every landmark inside its image, before the first batch
    plain, flipped = embed_release(release, model, prep, device, batch_size, workers)
    os.makedirs(out, exist_ok=True)
    tmp = temporary_name(path, ".npz")
    np.savez(tmp, plain=plain, flipped=flipped, images=np.array(release.images))
    os.replace(tmp, path)
    return plain, flipped, prep


def cache_key(release: IJBRelease, checkpoint: str, prep: dict) -> str:
    """What the features depend on: the checkpoint's bytes, the face list, each crop's size and modification time,
    the landmarks, the preprocessing."""
    h = hashlib.sha256()
    ckpt = os.path.join(checkpoint, "checkpoints", "final.pt") if os.path.isdir(checkpoint) else checkpoint
    h.update(file_sha256(ckpt).encode())
    h.update("\n".join(release.images).encode())
    for i in range(len(release.images)):   # a crop replaced on disk changes its size or modification time
        info = os.stat(release.image_path(i))
        h.update(f"{info.st_size}:{info.st_mtime_ns};".encode())
    h.update(np.ascontiguousarray(release.landmarks).tobytes())
    h.update(json.dumps(prep, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass
class _Protocol:
    """What every mode of one evaluation shares: the release, its grouping, the pairs' template rows and subjects."""
    release: IJBRelease
    grouping: ijb.Grouping
    left: np.ndarray
    right: np.ndarray
    subjects: np.ndarray | None
    n_boot: int
    seed: int

    def intervals(self, scores: np.ndarray, keep=slice(None)):
        if not self.n_boot:
            return None
        if self.subjects is None:
            return NO_SUBJECTS
        return subject_intervals(scores[keep], self.release.labels[keep], self.subjects[keep], self.n_boot,
                                 seed=self.seed)


def evaluate_modes(release: IJBRelease, plain: np.ndarray, flipped: np.ndarray, modes, n_boot: int = 200,
                   qmagface: bool = False, seed: int = 0, qmagface_fit: bool = False) -> tuple[dict, dict]:
    """({mode name: metrics}, {mode name: ROC arrays}) of the release's protocol; optionally QMagFace."""
    grouping = ijb.Grouping.of(release.templates, release.medias)
    p = _Protocol(release, grouping, ijb.template_rows(grouping.template_ids, release.pairs[:, 0], "pair list"),
                  ijb.template_rows(grouping.template_ids, release.pairs[:, 1], "pair list"),
                  pair_subjects(release, release.pairs), n_boot, seed)
    results, curves = {}, {}
    for text in modes:
        mode = ijb.Mode.parse(text)
        pooled = ijb.pool_templates(plain, flipped, release.detector, mode, grouping)
        results[text], curves[text] = _one_mode(p, mode, pooled)
    if qmagface:
        results["QMagFace"], curves["QMagFace"] = _qmagface(p, plain, qmagface_fit)
    return results, curves


def _one_mode(p: _Protocol, mode: ijb.Mode, pooled: np.ndarray) -> tuple[dict, dict]:
    scores = ijb.pair_scores(pooled, p.left, p.right)
    metrics, curve = ijb.verification(scores, p.release.labels)
    out = {"mode": mode.name, "definition": describe(mode), "verification": metrics}
    if p.n_boot:
        out["intervals"] = p.intervals(scores)
    if p.release.probes is not None:
        out["identification"] = one_to_n(p.release, pooled, p.grouping, p.n_boot, p.seed)
    return out, thin(curve)


def _qmagface(p: _Protocol, plain: np.ndarray, fit: bool) -> tuple[dict, dict]:
    """QMagFace with its own IJB fusion (harness.measures.ijb.qmagface_templates: no flip, no detector score).
    Parameters:
    QMagFace's published alpha and beta, or (fit) fitted by its own procedure on the pairs of a random half of the
    subjects and reported, with the plain cosine of the same templates, on the pairs of the other half."""
    pooled, quality = ijb.qmagface_templates(plain, p.grouping)
    cosines = ijb.pair_scores(pooled, p.left, p.right)
    q_l, q_r, labels = quality[p.left], quality[p.right], p.release.labels
    keep = np.ones(len(cosines), bool)
    params = {**ijb.QMAGFACE_PUBLISHED, "source": "published (QMagFace README)"}
    if fit:
        if p.subjects is None:
            raise ValueError("--qmagface-fit splits the subjects into validation and test halves: the release needs "
                             "its 1:N lists (they name each template's subject)")
        half = np.random.default_rng(p.seed).permutation(np.unique(p.subjects))[::2]
        validation = np.isin(p.subjects, half).all(1)
        keep = np.isin(p.subjects, np.unique(p.subjects[validation])).sum(1) == 0
        fitted = ijb.fit_qmagface(cosines[validation], labels[validation], q_l[validation], q_r[validation])
        params = {**fitted, "source": f"fitted by QMagFace's procedure on {int(validation.sum()):,} pairs of half "
                                      f"the subjects; reported on {int(keep.sum()):,} pairs of the other half"}
    scores = ijb.qmagface_scores(cosines, q_l, q_r, params["alpha"], params["beta"])
    metrics, curve = ijb.verification(scores[keep], labels[keep])
    out = {"mode": "QMagFace", "parameters": params, "verification": metrics,
           "definition": "QMagFace's fusion (combine_weighted_f_q within media, then across media); s + min(0, beta "
                         "s - alpha) min(q1, q2), q a template's fused magnitude sum(a^2) / sum(a)"}
    if fit:
        out["baseline_same_pairs"] = ijb.verification(cosines[keep], labels[keep])[0]
    if p.n_boot:
        out["intervals"] = p.intervals(scores, keep)
    return out, thin(curve)


def describe(mode: ijb.Mode) -> str:
    return (f"{'flip-summed' if mode.flip else 'plain'} image features, "
            f"{'norms kept' if mode.norm else 'each normalised'}, "
            f"{'times the detector score' if mode.detector else 'no detector score'}; mean per media"
            f"{' (normalised)' if mode.media_norm else ''}, summed over media, template normalised; cosine")


def pair_subjects(release: IJBRelease, pairs: np.ndarray) -> np.ndarray | None:
    """[P, 2] subject ids of the pairs' templates, or None when the 1:N lists do not name every one."""
    known = release.subjects()
    if not known:
        return None
    try:
        return np.vectorize(known.__getitem__, otypes=[np.int64])(pairs)
    except KeyError:
        return None


def subject_intervals(scores, issame, subjects, n_boot: int, level: float = 0.95, seed: int = 0) -> dict:
    """95 % percentile intervals of TAR at each FAR (both rules) by resampling subjects: a subject drawn m times
    weighs its genuine pairs m, an impostor pair of subjects drawn m_i and m_j times m_i m_j (as
    harness.measures.metrics.identity_bootstrap); one sort, a weighted cumulative sum per resample."""
    sorted_scores = roc.SortedScores.of(scores, issame)
    unique, codes = np.unique(subjects, return_inverse=True)
    codes = codes.reshape(subjects.shape)
    same = codes[:, 0] == codes[:, 1]
    rng = np.random.default_rng(seed)
    draws = {rule: [] for rule in roc.FAR_RULES}
    for _ in range(n_boot):
        m = np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique)).astype(float)
        weights = m[codes[:, 0]] * np.where(same, 1.0, m[codes[:, 1]])
        fpr, tpr, impostors = sorted_scores.curve(weights)
        for rule in roc.FAR_RULES:
            draws[rule].append(list(roc.tar_at_far(fpr, tpr, impostors, ijb.IJB_FARS, rule).values()))
    tail = 100 * (1 - level) / 2
    out = {"unit": "subjects", "resamples": n_boot, "level": level, "subjects": int(len(unique))}
    for rule, values in draws.items():
        with warnings.catch_warnings():   # a FAR too small to measure is NaN in every resample: its interval too
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanpercentile(np.array(values, float), [tail, 100 - tail], axis=0)
        out[f"tar_at_far_{rule}"] = {f"{far:g}": [float(lo), float(hi)] for far, lo, hi in
                                     zip(ijb.IJB_FARS, low, high, strict=True)}
    return out


def one_to_n(release: IJBRelease, pooled: np.ndarray, grouping: ijb.Grouping, n_boot: int = 0, seed: int = 0) -> dict:
    """Open-set 1:N against each gallery (harness.measures.ijb.identification), with intervals over probe subjects."""
    probe_t, probe_s = release.probes
    probes = pooled[ijb.template_rows(grouping.template_ids, probe_t, "1:N probe list")]
    out = {}
    for name, (gallery_t, gallery_s) in release.galleries.items():
        gallery = pooled[ijb.template_rows(grouping.template_ids, gallery_t, f"1:N gallery {name}")]
        out[name] = ijb.identification(gallery, gallery_s, probes, probe_s, n_boot=n_boot, seed=seed)
    return out


def thin(curve: dict, points: int = ROC_POINTS) -> dict:
    """The ROC at the thresholds nearest `points` log-spaced FPRs (and its two ends): enough for figures."""
    fpr = curve["fpr"]
    targets = np.logspace(-7, 0, points)
    keep = np.unique(np.r_[0, np.searchsorted(fpr, targets, side="right") - 1, len(fpr) - 1])   # steps' tops
    return {k: v[keep] for k, v in curve.items()}


@dataclass
class Request:
    """One IJB evaluation: which release, which network, which modes and where to write (the command's flags)."""
    root: str
    name: str
    checkpoint: str
    fmt: str
    out: str
    backbone: str | None = None
    modes: tuple = DEFAULT_MODES
    qmagface: bool = False
    qmagface_fit: bool = False
    device: str = "cpu"
    n_boot: int = 200
    batch_size: int = 128
    workers: int = 0


FAR_RULE_TEXT = {"nearest": "FPR nearest the target, the highest TPR among equally near, exact ROC",
                 "insightface": "the nearest rule on scikit-learn's roc_curve with collinear points dropped, as "
                                "insightface's eval_ijbc.py reads it",
                 "conservative": "largest FPR <= target"}
ONE_TO_N_RULE = ("per gallery, open set (insightface ijb_evals.py): threshold the k-th highest best gallery score of "
                 "the non-mated probes, k = max(int(n FPIR), 1); TPIR: mated probes whose mate scores above it and "
                 "above every non-mate")


def run(r: Request) -> dict:
    """The whole command: read and check the release, embed (or reuse), evaluate, write OUT/<set>.json/_roc.npz."""
    parsed = [ijb.Mode.parse(text) for text in r.modes]   # a mistyped mode fails before any embedding
    release = read_release(r.root, r.name)
    if any(m.detector for m in parsed):
        check_detector_scores(release)
    plain, flipped, prep = features(release, r.checkpoint, r.fmt, r.backbone, r.out, r.device, r.batch_size,
                                    r.workers)
    results, curves = evaluate_modes(release, plain, flipped, r.modes, r.n_boot, r.qmagface or r.qmagface_fit,
                                     qmagface_fit=r.qmagface_fit)
    key = cache_key(release, r.checkpoint, prep)
    results, curves = _with_earlier_modes(r.out, r.name, key, results, curves)
    summary = {"set": r.name, "release": os.path.abspath(release.folder), "checkpoint": os.path.abspath(r.checkpoint),
               "features_key": key, "format": r.fmt, "preprocessing": prep, "images": len(release.images),
               "templates": int(len(np.unique(release.templates))), "pairs": int(len(release.labels)),
               "far_rules": FAR_RULE_TEXT, "one_to_n_rule": ONE_TO_N_RULE, "modes": results}
    stem = os.path.join(r.out, r.name.lower())
    atomic_json(f"{stem}.json", summary)
    tmp = temporary_name(f"{stem}_roc.npz", ".npz")
    np.savez(tmp, **{f"{m}/{k}": v for m, c in curves.items() for k, v in c.items()})
    os.replace(tmp, f"{stem}_roc.npz")
    return summary


def _with_earlier_modes(out: str, name: str, key: str, results: dict, curves: dict) -> tuple[dict, dict]:
    """An earlier evaluation in OUT of the same features keeps its other modes (a rerun adds modes, loses none)."""
    path = os.path.join(out, f"{name.lower()}.json")
    if not os.path.isfile(path):
        return results, curves
    earlier = read_json(path, "IJB results")
    if earlier.get("features_key") != key:
        return results, curves
    roc_path = os.path.join(out, f"{name.lower()}_roc.npz")
    old_curves = {}
    if os.path.isfile(roc_path):
        for k, v in read_npz(roc_path, "IJB ROC arrays").items():
            mode, field = k.rsplit("/", 1)
            old_curves.setdefault(mode, {})[field] = v
    keep = [m for m in earlier["modes"] if m not in results]
    return ({**{m: earlier["modes"][m] for m in keep}, **results},
            {**{m: old_curves[m] for m in keep if m in old_curves}, **curves})


def table(summary: dict, rule: str = "nearest") -> str:
    """The printed table: TAR at each FAR per mode (under `rule`), AUC, and 1:N when evaluated."""
    fars = [f"{f:g}" for f in ijb.IJB_FARS]
    lines = [f"{summary['set']} 1:1, TAR at FAR ({rule} rule), {summary['pairs']:,} pairs",
             f"{'mode':<10}" + "".join(f"{f:>9}" for f in fars) + f"{'AUC':>9}"]
    for name, m in summary["modes"].items():
        tar = m["verification"][f"tar_at_far_{rule}"]
        auc = _pct(m["verification"]["auc"])
        lines.append(f"{name:<10}" + "".join(f"{_pct(tar[f]):>9}" for f in fars) + f"{auc:>9}")
    for name, m in summary["modes"].items():
        band = (m.get("intervals") or {}) if isinstance(m.get("intervals"), dict) else {}
        if band:
            lo, hi = band[f"tar_at_far_{rule}"]["0.0001"]
            lines.append(f"{name}: TAR@FAR=1e-4 95 % interval over {band['subjects']} resampled subjects "
                         f"[{_pct(lo)}, {_pct(hi)}]")
        elif isinstance(m.get("intervals"), str):
            lines.append(f"{name}: intervals {m['intervals']}")
    for name, m in summary["modes"].items():
        for gallery, r in (m.get("identification") or {}).items():
            lines.append(f"{name} 1:N {gallery}: rank-1 {_pct(r['rank']['1'])}, rank-5 {_pct(r['rank']['5'])}, TPIR "
                         + ", ".join(f"@FPIR {k} {_pct(v)}" for k, v in r["tpir_at_fpir"].items()))
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"
