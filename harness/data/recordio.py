"""insightface training sets (train.rec + train.idx + property) without mxnet.

Framing (dmlc RecordIO): each chunk is uint32 magic 0xced7230a, uint32 lrec (upper 3 bits: continuation flag,
lower 29: length), then the data padded to 4 bytes. A record whose data contains the magic at a 4-aligned
offset is split there: flag 1 starts it, 2 continues it, 3 ends it, and the reader puts the magic back between
the parts. Flag 0 is a whole record. Payload: IRHeader struct 'IfQQ' (flag, label, id, id2); flag > 0 means a
float32 label array of that length follows the header. Record 0 of an insightface set carries the label
(first identity record, end of identity records); records 1 .. label[0]-1 are images; the identity records
carry (first image, end image) of each identity. `train.idx` lists "key<TAB>byte offset" per line;
`property` is "num_classes,height,width".
"""
from __future__ import annotations

import math
import os
import struct
import sys
import warnings

import numpy as np
import torch
from tqdm import tqdm

from .preprocess import PREPROCESSING, decode_image, to_tensor

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")


def pack_record(label, data: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """IRHeader + optional float32 label array + data (mx.recordio.pack)."""
    label = np.asarray(label, dtype=np.float32)
    if label.ndim == 0:
        return _HEADER.pack(0, float(label), id_, id2) + data
    return _HEADER.pack(label.size, 0.0, id_, id2) + label.tobytes() + data


def unpack_record(payload: bytes):
    """-> (flag, label as float or float32 array, id, id2, data)."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"record of {len(payload)} bytes is shorter than the {_HEADER.size}-byte IRHeader")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    data = payload[_HEADER.size:]
    if flag > 0:
        if len(data) < 4 * flag:
            raise ValueError(f"IRHeader announces {flag} labels but only {len(data)} bytes follow")
        label = np.frombuffer(data[:4 * flag], dtype=np.float32).copy()
        data = data[4 * flag:]
    return flag, label, id_, id2, data


def frame_record(payload: bytes) -> bytes:
    """dmlc framing of one record, splitting at 4-aligned occurrences of the magic number."""
    chunks, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            chunks.append((1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    chunks.append((3 if chunks else 0, payload[start:]))
    out = bytearray()
    for flag, part in chunks:
        out += struct.pack("<II", MAGIC, (flag << 29) | len(part)) + part
    out += b"\0" * (-len(out) % 4)
    return bytes(out)


def read_framed(f, offset: int, path: str, file_size: int) -> bytes:
    """Read the (possibly split) record starting at byte `offset` of an open .rec file."""
    parts, pos = [], offset
    while True:
        if pos + 8 > file_size:
            raise ValueError(f"{path}: truncated record header at byte offset {pos} (file has {file_size} bytes)")
        f.seek(pos)
        magic, lrec = struct.unpack("<II", f.read(8))
        if magic != MAGIC:
            raise ValueError(f"{path}: corrupt record at byte offset {pos}: magic {magic:#010x}, "
                             f"expected {MAGIC:#010x}")
        flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if flag > 3 or (flag in (2, 3) and not parts) or (flag in (0, 1) and parts):
            raise ValueError(f"{path}: corrupt record at byte offset {pos}: continuation flag {flag} out of order")
        if pos + 8 + length > file_size:
            raise ValueError(f"{path}: truncated record at byte offset {pos}: needs {length} bytes, "
                             f"{file_size - pos - 8} left")
        parts.append(f.read(length))
        pos += 8 + length + (-length % 4)
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def write_recordio(root: str, samples, image_size=(112, 112), num_classes: int | None = None):
    """Write train.rec/train.idx/property in insightface's layout from (label, encoded image bytes) pairs.

    Records are grouped by label (stable sort), as the identity index of the format requires; returns the
    order used (positions in `samples` of records 1..N), so callers can map back. Files are written to
    temporary names and renamed, so a crash leaves no half-written set.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("write_recordio needs at least one (label, image bytes) sample")
    labels = np.array([int(lab) for lab, _ in samples])
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    order = np.argsort(labels, kind="stable")
    n = len(samples)
    classes = np.unique(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    os.makedirs(root, exist_ok=True)
    rec_path, idx_path = os.path.join(root, "train.rec"), os.path.join(root, "train.idx")
    tmp = f".tmp-{os.getpid()}"
    offsets = []
    with open(rec_path + tmp, "wb") as rec:
        def put(key, payload):
            offsets.append((key, rec.tell()))
            rec.write(frame_record(payload))
        id_start = n + 1
        put(0, pack_record([id_start, id_start + len(classes)], b""))
        for key, i in enumerate(order, start=1):
            put(key, pack_record(float(labels[i]), bytes(samples[i][1])))
        sorted_labels = labels[order]
        for j, c in enumerate(classes):
            first = int(np.searchsorted(sorted_labels, c, "left")) + 1
            last = int(np.searchsorted(sorted_labels, c, "right")) + 1
            put(id_start + j, pack_record([first, last], b""))
    with open(idx_path + tmp, "w") as idx:
        idx.writelines(f"{key}\t{off}\n" for key, off in offsets)
    with open(os.path.join(root, "property") + tmp, "w") as prop:
        prop.write(f"{num_classes},{image_size[0]},{image_size[1]}")
    for name in ("train.rec", "train.idx", "property"):
        os.replace(os.path.join(root, name) + tmp, os.path.join(root, name))
    return order


class RecordIODataset(torch.utils.data.Dataset):
    """A torch Dataset over an insightface .rec/.idx pair; ds[i] -> (float [3, H, W] in [-1, 1], label).

    File handles are opened lazily per process, so DataLoader workers each get their own.
    """

    preprocessing = PREPROCESSING

    def __init__(self, root: str, transform=None):
        self.root = root
        self.rec_path = os.path.join(root, "train.rec")
        self.idx_path = os.path.join(root, "train.idx")
        for p in (self.rec_path, self.idx_path):
            if not os.path.isfile(p):
                raise ValueError(f"{p} not found: an insightface set needs train.rec and train.idx in {root}")
        self.transform = transform
        self.file_size = os.path.getsize(self.rec_path)
        self.offsets = self._read_index()
        self._handle, self._pid, self.size = None, None, None
        flag, label, *_ = unpack_record(self._read(0)) if 0 in self.offsets else (0, 0.0)
        if flag > 0:
            self.keys = list(range(1, int(label[0])))
            missing = [k for k in self.keys if k not in self.offsets]
            if missing:
                raise ValueError(f"{self.idx_path}: header says images are records 1..{int(label[0]) - 1}, "
                                 f"but {len(missing)} keys are missing (first {missing[0]})")
        else:
            self.keys = sorted(self.offsets)
        self.num_classes = self._num_classes()

    def _read_index(self) -> dict:
        offsets = {}
        with open(self.idx_path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    key, off = line.split("\t")
                    key, off = int(key), int(off)
                except ValueError:
                    raise ValueError(f"{self.idx_path}:{lineno}: expected 'key<TAB>offset', got {line!r}") from None
                if not 0 <= off < self.file_size:
                    raise ValueError(f"{self.idx_path}:{lineno}: offset {off} of key {key} points past the end "
                                     f"of {self.rec_path} ({self.file_size} bytes)")
                offsets[key] = off
        return offsets

    def _num_classes(self) -> int:
        prop = os.path.join(self.root, "property")
        if os.path.isfile(prop):
            with open(prop, errors="replace") as f:
                text = f.read().strip()
            fields = text.split(",")
            if len(fields) != 3 or not all(x.strip().isdigit() and int(x) > 0 for x in fields):
                raise ValueError(f"{prop}: expected 'num_classes,height,width' (three positive integers), got "
                                 f"{text[:80]!r}")
            self.size = (int(fields[1]), int(fields[2]))
            return int(fields[0])
        warnings.warn(f"{prop} missing: counting classes from the labels (reads every record header)", stacklevel=2)
        return max(self._label(i, None) for i in range(len(self))) + 1

    def _label(self, i: int, num_classes: int | None, label=None) -> int:
        """Record i's label as an int: whole, finite, >= 0 and below num_classes, or an error naming the record."""
        if label is None:
            label = self._header_label(self.keys[i])
        value = float(label[0]) if isinstance(label, np.ndarray) else float(label)
        if not (math.isfinite(value) and value == int(value) and value >= 0 and
                (num_classes is None or value < num_classes)):
            bound = f" and below num_classes={num_classes} (property)" if num_classes is not None else ""
            raise ValueError(f"{self.rec_path}: record key {self.keys[i]} (image {i}) has label {value!r}; labels "
                             f"must be whole numbers >= 0{bound}")
        return int(value)

    def check_labels(self) -> None:
        """Every image's label checked before training (a bad one would otherwise stop the run when it is read).
        Reads each record's header only; on a set of millions of records this is about one pass over the file."""
        for i in tqdm(range(len(self)), desc=f"checking labels of {self.rec_path}", unit="record", file=sys.stdout,
                      disable=len(self) < 100_000):
            self._label(i, self.num_classes)

    def _header_label(self, key: int):
        """The label of record `key` from its IRHeader alone (the image bytes are not read)."""
        if self._handle is None or self._pid != os.getpid():
            # one handle per process, open as long as the dataset lives (a DataLoader worker opens its own)
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()  # noqa: SIM115
        offset = self.offsets[key]
        self._handle.seek(offset)
        head = self._handle.read(8 + _HEADER.size)
        if len(head) < 8 + _HEADER.size or struct.unpack_from("<I", head)[0] != MAGIC:
            return unpack_record(self._read(key))[1]   # short or damaged: the full reader names the problem
        length = struct.unpack_from("<I", head, 4)[0] & ((1 << 29) - 1)
        flag, label = _HEADER.unpack_from(head, 8)[:2]
        if flag == 0:
            return label
        if length < _HEADER.size + 4 * flag:
            return unpack_record(self._read(key))[1]   # a header split by the framing: read the whole record
        return np.frombuffer(self._handle.read(4 * flag), dtype=np.float32).copy()

    def _read(self, key: int) -> bytes:
        if self._handle is None or self._pid != os.getpid():
            # one handle per process, open as long as the dataset lives (a DataLoader worker opens its own)
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()  # noqa: SIM115
        return read_framed(self._handle, self.offsets[key], self.rec_path, self.file_size)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = state["_pid"] = None
        return state

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, i: int):
        """(label int, encoded image bytes) of image i."""
        _, label, _, _, data = unpack_record(self._read(self.keys[i]))
        return self._label(i, self.num_classes, label), data

    def __getitem__(self, i: int):
        label, data = self.raw(i)
        image = decode_image(data, f"{i} (record key {self.keys[i]}) in {self.rec_path}")
        if self.size is not None and image.shape[:2] != self.size:
            raise ValueError(f"{self.rec_path}: record key {self.keys[i]} (image {i}) is {image.shape[1]}x"
                             f"{image.shape[0]} px; property says {self.size[1]}x{self.size[0]}")
        if self.transform is not None:
            image = self.transform(image)
        return to_tensor(image), label
