"""The built-in data set: procedurally rendered identities with a ground-truth quality for every image.

Training identities and evaluation identities are disjoint (open set, like MS1MV2 -> LFW). Evaluation comes
as LFW-protocol verification pairs: `folds` folds, each with equal numbers of genuine and impostor pairs drawn
from the fold's own identities. Optional label noise (images given another identity's label) and garbage images
(no face at all, quality 0) make the paper's robustness claim testable. Everything is deterministic from the
seed and cached on disk under a key hashed from the configuration and the generator version.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .degrade import DEGRADATIONS, degrade, draw_severities, quality_from_severity
from .preprocess import PREPROCESSING, batch_to_tensor
from .render import EXPRESSIONS, compose, draw_identities, draw_nuisance, render_canonical

GENERATOR_VERSION = 2   # bump when rendering or pairing changes, so stale caches are not reused (2: distinct pairs)
CHUNK = 512             # images per rendering chunk (fixed: part of the random stream layout)


@dataclass(frozen=True)
class SyntheticConfig:
    size: int = 64
    train_identities: int = 500
    train_images_per_identity: int = 40
    eval_identities: int = 200
    eval_images_per_identity: int = 10
    folds: int = 10
    pairs_per_fold: int = 600               # half genuine, half impostor (LFW: 300 + 300)
    degradation_probability: dict = field(default_factory=lambda: {
        "blur": 0.35, "noise": 0.35, "occlusion": 0.25, "lowres": 0.35, "jpeg": 0.0})
    pose: float = 1.0
    light: float = 1.0
    expression: float = 1.0
    label_noise: float = 0.0                # fraction of training images labelled as another identity
    garbage: float = 0.0                    # fraction of training images that contain no face
    seed: int = 0

    def __post_init__(self):
        self._check_counts()
        self._check_pairs()
        self._check_strengths()

    def _bad(self, name, why):
        raise ValueError(f"SyntheticConfig.{name}={getattr(self, name)!r}: {why}")

    def _check_counts(self):
        if not isinstance(self.size, int) or not 16 <= self.size <= 256:
            self._bad("size", "expected an integer in [16, 256] (32, 64 and 112 are the usual sizes)")
        for name in ("train_identities", "eval_identities", "folds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                self._bad(name, "expected an integer >= 2")
        for name in ("train_images_per_identity", "eval_images_per_identity"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                self._bad(name, "expected an integer >= 2 (genuine pairs need two images)")

    def _check_pairs(self):
        """Enough identities per fold, and enough distinct pairs for pairs_per_fold (every pair is drawn once)."""
        if self.eval_identities < 2 * self.folds:
            self._bad("eval_identities", f"need at least 2 identities per fold ({2 * self.folds} for {self.folds} "
                      "folds)")
        if not isinstance(self.pairs_per_fold, int) or self.pairs_per_fold < 2 or self.pairs_per_fold % 2:
            self._bad("pairs_per_fold", "expected an even integer >= 2 (half genuine, half impostor)")
        smallest_fold = self.eval_identities // self.folds
        n = self.eval_images_per_identity
        genuine = smallest_fold * math.comb(n, 2)
        impostor = math.comb(smallest_fold * n, 2) - genuine
        if self.pairs_per_fold // 2 > min(genuine, impostor):
            self._bad("pairs_per_fold", f"needs {self.pairs_per_fold // 2} distinct genuine and impostor pairs per "
                      f"fold, but a fold of {smallest_fold} identities x {n} images has only {genuine} genuine and "
                      f"{impostor} impostor pairs; lower pairs_per_fold or raise eval_identities / "
                      "eval_images_per_identity")

    def _check_strengths(self):
        unknown = set(self.degradation_probability) - set(DEGRADATIONS)
        if unknown:
            self._bad("degradation_probability", f"unknown degradations {sorted(unknown)}; valid: {DEGRADATIONS}")
        for name, p in self.degradation_probability.items():
            if not 0 <= p <= 1:
                self._bad("degradation_probability", f"probability of {name} must be in [0, 1], got {p}")
        for name in ("label_noise", "garbage"):
            if not 0 <= getattr(self, name) < 1:
                self._bad(name, "expected a fraction in [0, 1)")
        for name in ("pose", "light", "expression"):
            if not 0 <= getattr(self, name) <= 3:
                self._bad(name, "expected a strength in [0, 3]")

    def key(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Split:
    images: np.ndarray       # uint8 [N, S, S, 3] RGB
    labels: np.ndarray       # int64 [N] label used for training (may be noisy)
    identity: np.ndarray     # int64 [N] true identity (global id; eval ids follow the train ids)
    quality: np.ndarray      # float64 [N] ground truth in [0, 1]
    severity: np.ndarray     # float32 [N, len(DEGRADATIONS)]
    garbage: np.ndarray      # bool [N]
    noisy_label: np.ndarray  # bool [N]

    def __len__(self):
        return len(self.labels)


@dataclass
class Pairs:
    left: np.ndarray         # int64 [M] index into the eval split
    right: np.ndarray
    issame: np.ndarray       # bool [M]
    fold: np.ndarray         # int64 [M]


@dataclass
class SyntheticFaces:
    config: SyntheticConfig
    train: Split
    eval: Split
    pairs: Pairs
    num_classes: int
    preprocessing: dict = field(default_factory=lambda: dict(PREPROCESSING))


def _render_split(identity_traits, identity_of_image, cfg, gen, garbage_mask=None):
    """Render every image of a split in fixed-size chunks; returns (images, severities)."""
    n = len(identity_of_image)
    S = cfg.size
    bank = torch.stack([render_canonical(identity_traits, e, S) for e in range(len(EXPRESSIONS))], dim=1)
    nuisance = draw_nuisance(n, gen, cfg.pose, cfg.light, cfg.expression)
    severity = draw_severities(n, gen, cfg.degradation_probability)
    images = np.empty((n, S, S, 3), dtype=np.uint8)
    applied = torch.zeros_like(severity)
    ident = torch.as_tensor(identity_of_image)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        chunk_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        canon = bank[ident[sl], nuisance["expression"][sl]]
        img = compose(canon, {k: v[sl] for k, v in nuisance.items()})
        if garbage_mask is not None and garbage_mask[sl].any():
            g = torch.as_tensor(garbage_mask[sl])
            img[g] = _garbage(int(g.sum()), S, chunk_gen)
        images[sl], applied[sl] = degrade(img, severity[sl], chunk_gen)
    return images, applied.numpy()


def _garbage(n, size, gen):
    """Smooth random colour fields: images without a face."""
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _make_pairs(cfg, eval_identity, gen_np):
    """LFW protocol: identities split into folds; per fold equal numbers of genuine and impostor pairs, each pair
    drawn once (without replacement), so no comparison counts twice in an accuracy or a bootstrap."""
    ids = np.unique(eval_identity)
    by_id = {i: np.flatnonzero(eval_identity == i) for i in ids}
    fold_of = {i: k % cfg.folds for k, i in enumerate(gen_np.permutation(ids))}
    left, right, same, fold = [], [], [], []
    half = cfg.pairs_per_fold // 2
    for f in range(cfg.folds):
        members = np.array([i for i in ids if fold_of[i] == f])
        genuine = np.array([(a, b) for i in members for a, b in itertools.combinations(by_id[i], 2)])
        for a, b in genuine[gen_np.choice(len(genuine), half, replace=False)]:
            left.append(a), right.append(b), same.append(True), fold.append(f)
        images = np.concatenate([by_id[i] for i in members])
        drawn = set()
        while len(drawn) < half:     # impostor pairs far outnumber `half`: rejection of repeats ends quickly
            a, b = gen_np.choice(images, 2, replace=False)
            if eval_identity[a] != eval_identity[b] and (min(a, b), max(a, b)) not in drawn:
                drawn.add((min(a, b), max(a, b)))
                left.append(a), right.append(b), same.append(False), fold.append(f)
    return Pairs(np.array(left), np.array(right), np.array(same), np.array(fold))


def generate(cfg: SyntheticConfig) -> SyntheticFaces:
    """Render the whole data set in memory (no cache)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    gen_np = np.random.default_rng(cfg.seed)
    n_ids = cfg.train_identities + cfg.eval_identities
    traits = draw_identities(n_ids, gen)
    train_ident = np.repeat(np.arange(cfg.train_identities), cfg.train_images_per_identity)
    eval_ident = cfg.train_identities + np.repeat(np.arange(cfg.eval_identities), cfg.eval_images_per_identity)
    n_train = len(train_ident)
    garbage = gen_np.random(n_train) < cfg.garbage
    noisy = (gen_np.random(n_train) < cfg.label_noise) & ~garbage
    labels = train_ident.copy()
    shift = gen_np.integers(1, cfg.train_identities, n_train)          # any identity but the true one
    labels[noisy] = (train_ident[noisy] + shift[noisy]) % cfg.train_identities
    labels[garbage] = gen_np.integers(0, cfg.train_identities, int(garbage.sum()))
    train_traits = {k: v[: cfg.train_identities] for k, v in traits.items()}
    eval_traits = {k: v[cfg.train_identities:] for k, v in traits.items()}
    t_img, t_sev = _render_split(train_traits, train_ident, cfg, gen, garbage)
    e_img, e_sev = _render_split(eval_traits, eval_ident - cfg.train_identities, cfg, gen)
    t_quality = np.where(garbage, 0.0, quality_from_severity(t_sev))
    train = Split(t_img, labels, train_ident, t_quality, t_sev, garbage, noisy)
    evaluation = Split(e_img, eval_ident.copy(), eval_ident, quality_from_severity(e_sev), e_sev,
                       np.zeros(len(eval_ident), bool), np.zeros(len(eval_ident), bool))
    return SyntheticFaces(cfg, train, evaluation, _make_pairs(cfg, eval_ident, gen_np), cfg.train_identities)


def default_cache_dir() -> str:
    return os.environ.get("MAGFACE_BENCH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "magface-bench"))


def load_or_generate(cfg: SyntheticConfig | None = None, cache_dir: str | None = None, verbose: bool = False):
    """The data set for `cfg`, from the cache when present (written atomically on first use)."""
    cfg = cfg or SyntheticConfig()
    folder = os.path.join(cache_dir or default_cache_dir(), f"synthetic-{cfg.key()}")
    if os.path.isfile(os.path.join(folder, "meta.json")):
        return _load(folder, cfg)
    t0 = time.perf_counter()
    faces = generate(cfg)
    if verbose:
        print(f"generated {len(faces.train) + len(faces.eval):,} synthetic images in "
              f"{time.perf_counter() - t0:.1f} s; caching in {folder}")
    _save(folder, faces)
    return faces


def _save(folder, faces):
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for split_name in ("train", "eval"):
        split = getattr(faces, split_name)
        for f in dataclasses.fields(Split):
            np.save(os.path.join(tmp, f"{split_name}_{f.name}.npy"), getattr(split, f.name))
    for f in dataclasses.fields(Pairs):
        np.save(os.path.join(tmp, f"pairs_{f.name}.npy"), getattr(faces.pairs, f.name))
    meta = {"config": dataclasses.asdict(faces.config), "key": faces.config.key(), "version": GENERATOR_VERSION,
            "num_classes": faces.num_classes, "degradations": DEGRADATIONS, "preprocessing": faces.preprocessing}
    with open(os.path.join(tmp, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder, cfg):
    with open(os.path.join(folder, "meta.json")) as fh:
        meta = json.load(fh)
    if meta["key"] != cfg.key():
        raise ValueError(f"cache {folder} holds key {meta['key']}, expected {cfg.key()}: remove the folder")
    load = lambda name: np.load(os.path.join(folder, f"{name}.npy"))  # noqa: E731
    splits = {s: Split(**{f.name: load(f"{s}_{f.name}") for f in dataclasses.fields(Split)}) for s in ("train", "eval")}
    pairs = Pairs(**{f.name: load(f"pairs_{f.name}") for f in dataclasses.fields(Pairs)})
    return SyntheticFaces(cfg, splits["train"], splits["eval"], pairs, meta["num_classes"], meta["preprocessing"])


class SplitDataset(torch.utils.data.Dataset):
    """A Split as a torch Dataset: ds[i] -> (float [3, S, S] in [-1, 1], label)."""

    preprocessing = PREPROCESSING

    def __init__(self, split: Split):
        self.split = split
        self.num_classes = int(split.labels.max()) + 1

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return batch_to_tensor(self.split.images[i:i + 1])[0], int(self.split.labels[i])
