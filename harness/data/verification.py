"""insightface verification packs (lfw.bin, cfp_fp.bin, agedb_30.bin, ...): read, write, fingerprint.

A pack is a pickle of (list of 2N encoded images, list of N same/different flags). Packs made by Python 2
or by older insightface hold the images as str / numpy byte arrays; all are accepted. Pickles can run code, so
loading goes through an unpickler that only admits the few globals such a pack needs and refuses the rest.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle

import numpy as np

from .preprocess import decode_image, encode_image

ALLOWED_GLOBALS = {
    ("_codecs", "encode"),                       # protocol-2 pickles of Python 3 bytes
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "bytearray"), ("__builtin__", "bytearray"),
}


class ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _PackUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise ForbiddenGlobal(f"{self.path}: refused to load global {module}.{name}: a verification pack only "
                              "needs bytes and numpy arrays, so this pickle may be malicious")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_verification_bin(path: str):
    """-> (images uint8 [2N, H, W, 3] RGB, issame bool [N])."""
    if not os.path.isfile(path):
        raise ValueError(f"verification pack {path} not found")
    with open(path, "rb") as f:
        try:
            obj = _PackUnpickler(f, path).load()
        except ForbiddenGlobal as exc:
            raise ValueError(str(exc)) from None
        except Exception as exc:
            raise ValueError(f"{path}: not a readable verification pack ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(obj).__name__}")
    bins, issame = obj
    issame = _flags(issame, path)
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs; a pack needs exactly 2 per pair")
    images = [decode_image(_as_bytes(b), f"{i} of {path}") for i, b in enumerate(bins)]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"{path}: images differ in size: {sorted(shapes)[:3]}")
    return np.stack(images), issame


def _flags(issame, path: str) -> np.ndarray:
    """The same/different flags as bool [N]; anything but booleans or the integers 0/1 (e.g. the strings "False",
    which numpy would read as True) is refused, naming the first such entry."""
    flags = list(issame) if isinstance(issame, (list, tuple, np.ndarray)) else None
    if flags is None:
        raise ValueError(f"{path}: issame must be a list of booleans, got {type(issame).__name__}")
    ok = lambda f: isinstance(f, (bool, np.bool_)) or (isinstance(f, (int, np.integer)) and f in (0, 1))  # noqa: E731
    bad = next(((i, f) for i, f in enumerate(flags) if not ok(f)), None)
    if bad is not None:
        raise ValueError(f"{path}: issame[{bad[0]}] = {bad[1]!r} ({type(bad[1]).__name__}); a pack's same/different "
                         "flags must be booleans (True/False, or the integers 1/0)")
    return np.asarray(flags, dtype=bool).reshape(-1)


def check_verification_bin(path: str, image_size: int) -> int:
    """Read a pack fully before training (so a damaged one is found now, not after it) and check its images have
    the run's size; returns its number of pairs."""
    images, issame = read_verification_bin(path)
    if len(issame) < 10:
        raise ValueError(f"{path}: {len(issame)} pairs; the 10-fold verification accuracy needs at least 10")
    if images.shape[1] != image_size or images.shape[2] != image_size:
        raise ValueError(f"{path}: its images are {images.shape[2]}x{images.shape[1]} px, the run trains on "
                         f"{image_size}x{image_size}; a pack is evaluated at the training size (align/resize it, or "
                         "evaluate with a run of that size)")
    return len(issame)


def _as_bytes(item) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray):
        return item.tobytes()
    if isinstance(item, str):  # a Python 2 str unpickled without encoding='bytes'
        return item.encode("latin1")
    raise ValueError(f"unexpected image entry of type {type(item).__name__} in a verification pack")


def write_verification_bin(path: str, images, issame, fmt: str = "png", quality: int = 95) -> str:
    """Write a pack from uint8 [2N, H, W, 3] RGB images (or encoded bytes); returns its SHA-256.

    PNG by default so a round trip is lossless; fmt="jpeg" writes what insightface's packs hold.
    """
    issame = [bool(x) for x in np.asarray(issame).reshape(-1)]
    if len(images) != 2 * len(issame):
        raise ValueError(f"{len(images)} images for {len(issame)} pairs; a pack needs exactly 2 per pair")
    bins = [bytes(im) if isinstance(im, (bytes, bytearray)) else encode_image(np.asarray(im), fmt, quality)
            for im in images]
    buf = io.BytesIO()
    pickle.dump((bins, issame), buf, protocol=4)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)
    return file_sha256(path)
