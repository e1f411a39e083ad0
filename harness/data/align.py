"""Five-point face alignment to the standard ArcFace 112x112 template, as the field's IJB and training scripts do.

The similarity transform (rotation, uniform scale, shift) that maps the five detected landmarks onto the template is
the least-squares (Umeyama) estimate of scikit-image's `SimilarityTransform` (what insightface's `eval_ijbc.py`
uses), and the crop is warped with it bilinearly, outside pixels black (insightface: cv2.warpAffine, borderValue
0). scikit-image rather than OpenCV: the estimate is the reference's own, it installs as a wheel with no system
libraries, and one library does both steps. A network of another input size S gets the template scaled by S/112.

Landmark order: left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right, as in the
template). 68-point (iBUG) landmarks reduce to these five as the field does: the centres of points 36-41 and 42-47
(the eyes), point 30 (nose tip), points 48 and 54 (mouth corners).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from skimage.transform import SimilarityTransform, warp

from .preprocess import image_to_rgb

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float64)
TEMPLATE_SIZE = 112


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The five template points for an aligned crop of size x size pixels."""
    return ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE)


def five_from_68(points: np.ndarray) -> np.ndarray:
    """[68, 2] iBUG landmarks -> the five alignment points."""
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) landmarks, got an array of shape {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def check_landmarks(points: np.ndarray, image_size: tuple[int, int] | None, where: str) -> np.ndarray:
    """Five finite, distinct, non-collinear points inside the image (width, height): else an error naming `where`."""
    points = np.asarray(points, np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"{where}: expected five finite (x, y) landmarks, got {points.tolist()}")
    if image_size is not None:
        w, h = image_size
        outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
        if outside.any():
            raise ValueError(f"{where}: landmark {int(np.flatnonzero(outside)[0]) + 1} at "
                             f"{points[outside][0].tolist()} lies outside the {w}x{h} image")
    span = np.ptp(points, axis=0).max()
    gaps = np.linalg.norm(points[:, None] - points[None], axis=2)[np.triu_indices(5, 1)]
    if span <= 0 or gaps.min() < 1e-3 * span:
        raise ValueError(f"{where}: two landmarks coincide ({points.tolist()}); alignment needs five distinct points")
    centred = points - points.mean(0)
    if np.linalg.svd(centred, compute_uv=False)[1] < 1e-3 * span:
        raise ValueError(f"{where}: the five landmarks are collinear ({points.tolist()}); no similarity transform "
                         "maps them onto the face template")
    return points


def alignment_transform(points: np.ndarray, size: int = TEMPLATE_SIZE) -> SimilarityTransform:
    """The similarity transform from image coordinates to the aligned crop's (least squares, Umeyama)."""
    if hasattr(SimilarityTransform, "from_estimate"):   # scikit-image >= 0.26 (a falsy result when it fails)
        tform = SimilarityTransform.from_estimate(points, template(size))
    else:
        tform = SimilarityTransform()
        tform = tform if tform.estimate(points, template(size)) else None
    if not tform:
        raise ValueError(f"no similarity transform fits the landmarks {np.asarray(points).tolist()}")
    return tform


def align(image: np.ndarray, points: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """uint8 [H, W, 3] image and its five landmarks -> the aligned uint8 [size, size, 3] crop."""
    tform = alignment_transform(points, size)
    crop = warp(image, tform.inverse, output_shape=(size, size), order=1, mode="constant", cval=0.0,
                preserve_range=True)
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8)


def read_landmarks(path: str) -> list:
    """[(line number, image name, [5, 2] points)] of a landmarks file: per line an image name (relative to the
    images folder) and 10 numbers (five points, optionally an 11th: a detector score, ignored) or 136 (68 iBUG
    points, optionally a 137th)."""
    if not os.path.isfile(path):
        raise ValueError(f"landmarks file {path} not found")
    out = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                values = np.array([float(v) for v in fields[1:]])
            except ValueError:
                raise ValueError(f"{path}:{number}: landmarks must be numbers, got {fields[1:12]}") from None
            if len(values) in (10, 11):
                points = values[:10].reshape(5, 2)
            elif len(values) in (136, 137):
                points = five_from_68(values[:136].reshape(68, 2))
            else:
                raise ValueError(f"{path}:{number}: expected an image name and 10 (five points) or 136 (68 points) "
                                 f"numbers, got {len(values)}")
            out.append((number, fields[0], points))
    if not out:
        raise ValueError(f"landmarks file {path} is empty")
    return out


def align_folder(images: str, landmarks: str, out: str, size: int = TEMPLATE_SIZE) -> int:
    """Aligned crops of every image the landmarks file names, written under OUT with the same relative names
    (python -m harness align; JPEG names at quality 95 without chroma subsampling); every landmark line is checked
    against its image before anything is written."""
    rows = read_landmarks(landmarks)
    for number, name, points in rows:   # every line checked against its image's header first (no pixels read)
        path = os.path.join(images, name)
        if not os.path.isfile(path):
            raise ValueError(f"{landmarks}:{number}: image {path} not found")
        try:
            with Image.open(path) as im:
                check_landmarks(points, im.size, f"{landmarks}:{number}")
        except OSError as exc:
            raise ValueError(f"{landmarks}:{number}: cannot read image {path}: {exc}") from None
    for _, name, points in rows:         # then one image at a time
        path, target = os.path.join(images, name), os.path.join(out, name)
        with Image.open(path) as im:
            crop = align(image_to_rgb(im, path), points, size)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        lossy = os.path.splitext(target)[1].lower() in (".jpg", ".jpeg")
        Image.fromarray(crop).save(target, **({"quality": 95, "subsampling": 0} if lossy else {}))
    return len(rows)
