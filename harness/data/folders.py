"""Image folders (one sub-folder per identity) and list files ('path label' per line, as MagFace uses)."""
from __future__ import annotations

import os
import stat
import warnings

import numpy as np
import torch
from PIL import Image

from .preprocess import PREPROCESSING, check_mode, decode_image, to_tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_IMAGE_BYTES = 64 << 20    # a face crop is kilobytes; a larger "image" is a mistake (or a device behind a link)


class LabelledFiles(torch.utils.data.Dataset):
    """Image files with integer labels; ds[i] -> (float [3, H, W] in [-1, 1], label)."""

    preprocessing = PREPROCESSING

    def __init__(self, paths, labels, source: str, transform=None):
        if not paths:
            raise ValueError(f"{source}: no images found")
        self.paths, self.source, self.transform = list(paths), source, transform
        labels = np.asarray(labels, dtype=np.int64)
        classes = np.unique(labels)
        self.label_map = None
        if classes[0] != 0 or classes[-1] != len(classes) - 1:
            self.label_map = {int(c): i for i, c in enumerate(classes)}
            warnings.warn(f"{source}: labels are not contiguous 0..{len(classes) - 1} ({len(classes)} classes "
                          f"between {classes[0]} and {classes[-1]}); remapped in sorted order, see .label_map",
                          stacklevel=2)
            labels = np.searchsorted(classes, labels)
        self.labels = labels
        self.num_classes = len(classes)
        self.image_size = scan_images(self.paths, source)

    def __len__(self):
        return len(self.paths)

    def raw(self, i):
        with open(self.paths[i], "rb") as f:
            return int(self.labels[i]), f.read(MAX_IMAGE_BYTES + 1)

    def __getitem__(self, i):
        label, data = self.raw(i)
        image = decode_image(data, f"{i} ({self.paths[i]})")
        if self.transform is not None:
            image = self.transform(image)
        return to_tensor(image), label


def scan_images(paths: list, source: str) -> int:
    """Check every image before any training (a bad file would otherwise stop a run hours in): a regular file (not
    a FIFO or a device behind a link) of at most MAX_IMAGE_BYTES, a readable header, a pixel mode that maps to RGB,
    square, and the same size as the first (the backbone then checks the size is one it takes). Returns the side."""
    expected = None
    for path in paths:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise ValueError(f"{source}: cannot read image {path}: {exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{source}: {path} is not a regular file (a FIFO, device or folder); image folders hold "
                             "image files only")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ValueError(f"{source}: {path} has {info.st_size:,} bytes, more than an image of a face crop "
                             f"({MAX_IMAGE_BYTES:,} at most)")
        try:
            with Image.open(path) as im:
                size, mode, fmt = im.size, im.mode, im.format
        except Exception as exc:  # PIL raises several types for bad data
            raise ValueError(f"{source}: cannot decode image {path}: {type(exc).__name__}: {exc}") from None
        check_mode(mode, fmt, path)
        if expected is None:
            expected = size
            if size[0] != size[1]:
                raise ValueError(f"{source}: image {path} is {size[0]}x{size[1]} px; training images must be square "
                                 "(aligned face crops, e.g. 112x112)")
        elif size != expected:
            raise ValueError(f"{source}: image {path} is {size[0]}x{size[1]} px, but {paths[0]} (the first) is "
                             f"{expected[0]}x{expected[1]}: every image of a set must have one size (align them to "
                             "one template first)")
    return expected[0]


def image_folder(root: str, transform=None) -> LabelledFiles:
    """root/<identity>/<image>: identities sorted by name get labels 0..C-1 (kept in .class_names)."""
    if not os.path.isdir(root):
        raise ValueError(f"image folder {root} not found")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, name in enumerate(names):
        for f in sorted(os.listdir(os.path.join(root, name))):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(root, name, f))
                labels.append(label)
    used = sorted(set(labels))
    if len(used) != len(names):
        empty = [n for i, n in enumerate(names) if i not in set(used)]
        raise ValueError(f"{root}: identity folder(s) without images: {empty[:5]}")
    ds = LabelledFiles(paths, labels, root, transform)
    ds.class_names = names
    return ds


def list_file(path: str, root: str | None = None, transform=None) -> LabelledFiles:
    """Lines 'image_path label'; relative paths are taken from `root` (default: the list file's folder)."""
    if not os.path.isfile(path):
        raise ValueError(f"list file {path} not found")
    root = os.path.dirname(os.path.abspath(path)) if root is None else root
    paths, labels = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                if len(fields) != 2:
                    raise ValueError
                labels.append(int(fields[1]))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'image_path label', got {line.strip()!r}") from None
            paths.append(fields[0] if os.path.isabs(fields[0]) else os.path.join(root, fields[0]))
    return LabelledFiles(paths, labels, path, transform)
