"""insightface RecordIO: round trips, split records, and clear errors on damaged files."""
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import RecordIODataset, encode_image, write_recordio
from harness.data.recordio import MAGIC, frame_record, pack_record, read_framed, unpack_record

MAGIC_BYTES = struct.pack("<I", MAGIC)


def sample_set(n=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, n)
    return [(int(lab), encode_image(im, "png")) for lab, im in zip(labels, images, strict=True)], images, labels


def test_round_trip_bytes_and_labels_identical(tmp_path):
    samples, images, labels = sample_set()
    order = write_recordio(str(tmp_path), samples, image_size=(8, 8), num_classes=4)
    ds = RecordIODataset(str(tmp_path))
    assert len(ds) == 12 and ds.num_classes == 4
    for i, j in enumerate(order):
        label, data = ds.raw(i)
        assert label == labels[j] and data == samples[j][1]
        image, label2 = ds[i]
        assert label2 == labels[j] and image.shape == (3, 8, 8) and image.dtype == torch.float32
        expected = (torch.from_numpy(images[j]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
        torch.testing.assert_close(image, expected)
    assert list(labels[order]) == sorted(labels)
    assert Path(tmp_path / "property").read_text() == "4,8,8"


def test_record_containing_the_magic_is_split_and_read_back_whole(tmp_path):
    payload = pack_record(3.0, b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + b"xyz")
    framed = frame_record(payload)
    assert framed.count(MAGIC_BYTES) == 3  # three chunks: flags 1, 2, 3, each with its own header
    flags = [struct.unpack_from("<I", framed, off + 4)[0] >> 29 for off in (0, 8 + 28, 8 + 28 + 8 + 4)]
    assert flags == [1, 2, 3]
    path = tmp_path / "x.rec"
    path.write_bytes(framed)
    with open(path, "rb") as f:
        assert read_framed(f, 0, str(path), len(framed)) == payload
    # the magic at an unaligned offset is not a split point
    odd = pack_record(1.0, b"a" + MAGIC_BYTES)
    framed = frame_record(odd)
    assert struct.unpack_from("<I", framed, 4)[0] == len(odd)  # flag 0, one chunk holding the whole record


def test_hand_built_split_record(tmp_path):
    part_a, part_b = b"AAAAAAAA", b"BBBBB"
    raw = (struct.pack("<II", MAGIC, (1 << 29) | len(part_a)) + part_a
           + struct.pack("<II", MAGIC, (3 << 29) | len(part_b)) + part_b + b"\0\0\0")
    path = tmp_path / "h.rec"
    path.write_bytes(raw)
    with open(path, "rb") as f:
        assert read_framed(f, 0, str(path), len(raw)) == part_a + MAGIC_BYTES + part_b


def test_label_arrays_and_header_parsing():
    flag, label, _, _, data = unpack_record(pack_record([7.0, 1.5], b"img"))
    assert flag == 2 and label.tolist() == [7.0, 1.5] and data == b"img"
    flag, label, _, _, data = unpack_record(pack_record(5.0, b"img"))
    assert flag == 0 and label == 5.0


def test_truncated_and_corrupt_files_name_file_and_offset(tmp_path):
    samples, _, _ = sample_set()
    write_recordio(str(tmp_path), samples, image_size=(8, 8))
    rec = tmp_path / "train.rec"
    data = rec.read_bytes()
    lines = (tmp_path / "train.idx").read_text().splitlines()
    offsets = [int(line.split("\t")[1]) for line in lines]
    last_image_offset = offsets[len(samples)]
    rec.write_bytes(data[: last_image_offset + 20])    # cut inside the last image record
    (tmp_path / "train.idx").write_text("\n".join(lines[: len(samples) + 1]) + "\n")
    with pytest.raises(ValueError, match=rf"train.rec: truncated record at byte offset {last_image_offset}"):
        RecordIODataset(str(tmp_path)).raw(len(samples) - 1)
    broken = bytearray(data)
    broken[offsets[3]:offsets[3] + 4] = b"XXXX"
    rec.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=rf"corrupt record at byte offset {offsets[3]}: magic"):
        RecordIODataset(str(tmp_path)).raw(2)


def test_index_pointing_past_the_end(tmp_path):
    samples, _, _ = sample_set()
    write_recordio(str(tmp_path), samples, image_size=(8, 8))
    size = os.path.getsize(tmp_path / "train.rec")
    (tmp_path / "train.idx").write_text(f"0\t0\n1\t{size + 100}\n")
    with pytest.raises(ValueError, match=r"train.idx:2: offset .* points past the end"):
        RecordIODataset(str(tmp_path))


def test_missing_files_and_property(tmp_path):
    with pytest.raises(ValueError, match="train.rec not found"):
        RecordIODataset(str(tmp_path))
    samples, _, labels = sample_set()
    write_recordio(str(tmp_path), samples, image_size=(8, 8))
    os.remove(tmp_path / "property")
    with pytest.warns(UserWarning, match="property missing"):
        assert RecordIODataset(str(tmp_path)).num_classes == labels.max() + 1


def test_undecodable_image_names_its_index(tmp_path):
    write_recordio(str(tmp_path), [(0, b"not an image"), (1, b"neither")], image_size=(8, 8))
    with pytest.raises(ValueError, match=r"cannot decode image 1 \(record key 2\)"):
        RecordIODataset(str(tmp_path))[1]


def test_dataset_pickles_without_its_file_handle_and_loads_in_workers(tmp_path):
    samples, _, _ = sample_set()
    write_recordio(str(tmp_path), samples, image_size=(8, 8))
    ds = RecordIODataset(str(tmp_path))
    ds.raw(0)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handle is None and clone.raw(3) == ds.raw(3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == [ds.raw(i)[0] for i in range(len(ds))]
