"""The IJB-B / IJB-C release in insightface's layout, read and checked before any embedding.

    ROOT/IJBC/loose_crop/<image>                       the loose face crops (any size; each is aligned on its own)
    ROOT/IJBC/meta/ijbc_face_tid_mid.txt               "image template media" per line
    ROOT/IJBC/meta/ijbc_template_pair_label.txt        "template1 template2 label" (1 genuine, 0 impostor)
    ROOT/IJBC/meta/ijbc_name_5pts_score.txt            "image x1 y1 ... x5 y5 detector_score"
    ROOT/IJBC/meta/ijbc_1N_gallery_G1.csv, _G2.csv,    1:N (optional): a header line, then TEMPLATE_ID,SUBJECT_ID,...
               ijbc_1N_probe_mixed.csv                 (IJB-B: ijbb_1N_gallery_S1.csv, _S2.csv, ijbb_1N_probe_mixed)

ROOT may also be the IJBC folder itself. Space-separated, no header (as insightface's `eval_ijbc.py` reads them).
Every inconsistency is an error naming the file and line: a malformed line, a detector score outside [0, 1],
degenerate landmarks, an image without landmarks or missing on disk, a pair naming a template without images, a
1:N template unknown to the image list.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

from .align import check_landmarks

SETS = {"IJBB": ("ijbb", ("S1", "S2")), "IJBC": ("ijbc", ("G1", "G2"))}


@dataclass
class IJBRelease:
    name: str                  # IJBB | IJBC
    folder: str                # the set's folder (holds loose_crop/ and meta/)
    images: list               # image file names, in the order of the face list
    templates: np.ndarray      # template id of each image
    medias: np.ndarray         # media id of each image
    landmarks: np.ndarray      # [N, 5, 2] in loose-crop pixels
    detector: np.ndarray       # detector score of each image, in [0, 1]
    pairs: np.ndarray          # [P, 2] template ids
    labels: np.ndarray         # bool [P], genuine
    landmark_lines: list = field(default_factory=list)   # "file:line" each image's landmarks came from
    galleries: dict = field(default_factory=dict)   # name -> (template ids, subject ids)
    probes: tuple | None = None                     # (template ids, subject ids)

    def image_path(self, i: int) -> str:
        return os.path.join(self.folder, "loose_crop", self.images[i])

    def subjects(self) -> dict:
        """template id -> subject id, from the 1:N lists (empty without them)."""
        out = {}
        for tids, sids in [*self.galleries.values(), *([self.probes] if self.probes else [])]:
            out.update(zip(tids.tolist(), sids.tolist(), strict=True))
        return out


def set_folder(root: str, name: str) -> str:
    if name not in SETS:
        raise ValueError(f"--ijb-set {name!r}: expected one of {', '.join(SETS)}")
    for folder in (os.path.join(root, name), root):
        if os.path.isdir(os.path.join(folder, "meta")):
            return folder
    raise ValueError(f"{root}: no {name}/meta folder (nor meta/ here); expected insightface's IJB layout "
                     f"ROOT/{name}/loose_crop and ROOT/{name}/meta (see harness/data/ijb.py)")


def read_release(root: str, name: str = "IJBC") -> IJBRelease:
    """The release's image list, landmarks, detector scores, 1:1 pairs and (when present) 1:N lists, checked."""
    folder = set_folder(root, name)
    prefix, galleries = SETS[name]
    meta = os.path.join(folder, "meta")
    faces = _rows(os.path.join(meta, f"{prefix}_face_tid_mid.txt"), 3, "image template media")
    images = [r[0] for _, r in faces]
    templates = _ints(faces, 1, os.path.join(meta, f"{prefix}_face_tid_mid.txt"))
    medias = _ints(faces, 2, os.path.join(meta, f"{prefix}_face_tid_mid.txt"))
    landmarks, detector, lines = _landmarks(os.path.join(meta, f"{prefix}_name_5pts_score.txt"), images)
    _check_images(folder, images, os.path.join(meta, f"{prefix}_face_tid_mid.txt"))
    pairs_path = os.path.join(meta, f"{prefix}_template_pair_label.txt")
    pair_rows = _rows(pairs_path, 3, "template1 template2 label")
    pairs = np.stack([_ints(pair_rows, 0, pairs_path), _ints(pair_rows, 1, pairs_path)], axis=1)
    labels = _ints(pair_rows, 2, pairs_path)
    _check_known(pairs, templates, pairs_path, pair_rows)
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise ValueError(f"{pairs_path}:{pair_rows[bad[0]][0]}: label {labels[bad[0]]}; expected 1 (genuine) or 0")
    release = IJBRelease(name, folder, images, templates, medias, landmarks, detector, pairs, labels == 1, lines)
    _read_one_to_n(release, meta, prefix, galleries)
    return release


def _rows(path: str, width: int, what: str) -> list:
    """[(line number, fields)] of a space-separated file; a line of another width is an error naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found (an IJB release's meta/ folder holds it)")
    out = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != width:
                raise ValueError(f"{path}:{number}: expected {width} fields ({what}), got {line.strip()[:120]!r}")
            out.append((number, fields))
    if not out:
        raise ValueError(f"{path} is empty")
    return out


def _ints(rows: list, column: int, path: str) -> np.ndarray:
    try:
        return np.array([int(fields[column]) for _, fields in rows], np.int64)
    except ValueError:
        for number, fields in rows:
            if not fields[column].lstrip("-").isdigit():
                raise ValueError(f"{path}:{number}: field {column + 1} {fields[column]!r} is not an integer") \
                    from None
        raise


def _landmarks(path: str, images: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Landmarks [N, 5, 2], detector scores and "file:line" of the listed images, by name."""
    by_name = {}
    for number, fields in _rows(path, 12, "image x1 y1 ... x5 y5 score"):
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError:
            raise ValueError(f"{path}:{number}: landmarks and score must be numbers, got {fields[1:]}") from None
        points = check_landmarks(values[:10].reshape(5, 2), None, f"{path}:{number}")
        if not 0 <= values[10] <= 1:
            raise ValueError(f"{path}:{number}: detector score {values[10]} outside [0, 1]")
        if fields[0] in by_name:
            raise ValueError(f"{path}:{number}: image {fields[0]} already has landmarks at {by_name[fields[0]][2]}")
        by_name[fields[0]] = (points, values[10], f"{path}:{number}")
    missing = [name for name in images if name not in by_name]
    if missing:
        raise ValueError(f"{path}: no landmarks for {len(missing)} listed image(s), e.g. {missing[:3]}")
    return (np.stack([by_name[n][0] for n in images]), np.array([by_name[n][1] for n in images]),
            [by_name[n][2] for n in images])


def check_crops(release: IJBRelease, progress: bool = True) -> None:
    """Every loose crop's header read (not its pixels) and its landmarks checked inside it, before any embedding:
    an error names the landmarks' file and line."""
    for i in tqdm(range(len(release.images)), desc=f"checking {release.name} crops", unit="image",
                  disable=not progress or len(release.images) < 10_000):
        path = release.image_path(i)
        try:
            with Image.open(path) as im:
                size = im.size
        except Exception as exc:  # PIL raises several types for bad data
            raise ValueError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
        check_landmarks(release.landmarks[i], size, f"{release.landmark_lines[i]} (image {release.images[i]})")


def check_detector_scores(release: IJBRelease) -> None:
    """A mode weighting by the detector score (D1) cannot pool a template whose images all score 0: an error naming
    the template and its images' landmark lines, before any embedding."""
    totals = {}
    for t, score in zip(release.templates.tolist(), release.detector.tolist(), strict=True):
        totals[t] = totals.get(t, 0.0) + score
    zero = [t for t, total in totals.items() if total <= 0]
    if zero:
        lines = [release.landmark_lines[i] for i in np.flatnonzero(release.templates == zero[0])[:3]]
        raise ValueError(f"template {zero[0]} (and {len(zero) - 1} more): every image's detector score is 0 "
                         f"({', '.join(lines)}), so a D1 mode gives it no feature; use a D0 mode or fix the scores")


def _check_images(folder: str, images: list, listed_in: str) -> None:
    crops = os.path.join(folder, "loose_crop")
    if not os.path.isdir(crops):
        raise ValueError(f"{crops} not found (the release's loose crops)")
    on_disk = set(os.listdir(crops))
    missing = [n for n in images if n not in on_disk]
    if missing:
        raise ValueError(f"{listed_in} lists {len(missing)} image(s) missing from {crops}, e.g. {missing[:3]}")


def _check_known(pairs: np.ndarray, templates: np.ndarray, path: str, rows: list) -> None:
    known = np.isin(pairs, np.unique(templates))
    if not known.all():
        i = int(np.flatnonzero(~known.all(axis=1))[0])
        t = pairs[i][~known[i]][0]
        raise ValueError(f"{path}:{rows[i][0]}: template {t} has no images in the face list (a template without "
                         "images cannot be compared)")


def _read_one_to_n(release: IJBRelease, meta: str, prefix: str, galleries: tuple) -> None:
    paths = {g: os.path.join(meta, f"{prefix}_1N_gallery_{g}.csv") for g in galleries}
    probe = os.path.join(meta, f"{prefix}_1N_probe_mixed.csv")
    present = [p for p in (*paths.values(), probe) if os.path.isfile(p)]
    if not present:
        return
    if len(present) != len(paths) + 1:
        absent = [p for p in (*paths.values(), probe) if not os.path.isfile(p)]
        raise ValueError(f"1:N needs every list; missing {absent}")
    known = set(np.unique(release.templates).tolist())
    for g, path in paths.items():
        release.galleries[g] = _template_subjects(path, known)
    release.probes = _template_subjects(probe, known)


def _template_subjects(path: str, known: set) -> tuple[np.ndarray, np.ndarray]:
    """(template ids, subject ids) of a 1:N list: an optional header line, then TEMPLATE_ID,SUBJECT_ID,... per image."""
    with open(path) as f:
        lines = f.read().splitlines()
    first = lines[0].split(",")[0].strip() if lines else ""
    start = 0 if first.lstrip("-").isdigit() else 1          # a header line (TEMPLATE_ID,SUBJECT_ID,...) when present
    by_template = {}
    for number, line in enumerate(lines[start:], start + 1):
        fields = line.split(",")
        if not line.strip():
            continue
        try:
            template, subject = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{number}: expected TEMPLATE_ID,SUBJECT_ID,... got {line[:120]!r}") from None
        if by_template.setdefault(template, subject) != subject:
            raise ValueError(f"{path}:{number}: template {template} listed with subjects {by_template[template]} and "
                             f"{subject}")
        if template not in known:
            raise ValueError(f"{path}:{number}: template {template} has no images in the face list")
    if not by_template:
        raise ValueError(f"{path} lists no templates")
    tids = np.array(sorted(by_template), np.int64)
    return tids, np.array([by_template[t] for t in tids], np.int64)
