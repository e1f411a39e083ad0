"""Hostile or mistaken input refused before any work, naming the file, record or label (the reliability campaign of
2026-12-03, one test per reproduction): labels that would escape OUT, image folders, verification packs, RecordIO
labels."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from support import write_spec

from harness.config import load_config
from harness.data import RecordIODataset, decode_image, encode_image, image_folder
from harness.data.recordio import frame_record, pack_record
from harness.data.verification import check_verification_bin, read_verification_bin, write_verification_bin
from harness.models import build_backbone
from harness.sweeps.expand import expand
from harness.sweeps.spec import load_spec
from harness.training.trainer import train


# --- names that become paths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ('[axes]\nhead = ["../../../../escaped_head"]\n[heads."../../../../escaped_head"]\nname = "arcface"\n',
     "[heads] label '../../../../escaped_head' cannot name a file or folder"),
    ('[axes]\nhead = ["/tmp/abs"]\n[heads."/tmp/abs"]\nname = "arcface"\n', "[heads] label '/tmp/abs' cannot name"),
    ('[axes]\ncondition = [".."]\n[conditions.".."]\n"data.synthetic.label_noise" = 0.1\n',
     "[conditions] label '..' cannot name a file or folder"),
])
def test_labels_that_would_escape_out_are_refused(tmp_path, text, message):
    with pytest.raises(ValueError) as err:
        load_spec(write_spec(tmp_path, text))
    assert message in str(err.value)


def test_a_spec_name_that_would_escape_out_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "../../escaped_table"\nbase = "{tmp_path}/b.toml"\n[axes]\nseed = [0]\n')
    (tmp_path / "b.toml").write_text("")
    with pytest.raises(ValueError, match="name '../../escaped_table' cannot name a file or folder"):
        load_spec(str(path))


def test_run_folders_stay_under_out_for_any_axis_value(tmp_path):
    spec = load_spec(write_spec(tmp_path, '[axes]\n"data.path" = ["/etc/../x", "a/b"]\n'))
    runs = expand(spec, str(tmp_path / "o"))
    assert all(os.path.dirname(r.folder) == str(tmp_path / "o" / "runs") for r in runs)


# --- image folders ----------------------------------------------------------------------------------------------------
def folder(tmp_path, sizes=(16,) * 4):
    root = tmp_path / "faces"
    for i, size in enumerate(sizes):
        (root / f"id{i // 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), (40 * i) % 256, np.uint8)).save(root / f"id{i // 2}" / f"{i}.png")
    return root


def test_an_image_of_another_size_is_named_before_training(tmp_path):
    root = folder(tmp_path, (16, 16, 16, 20))
    with pytest.raises(ValueError, match=r"id1/3.png is 20x20 px, but .*id0/0.png \(the first\) is 16x16"):
        image_folder(str(root))


def test_a_one_pixel_image_is_refused_by_the_backbone_naming_its_size(tmp_path):
    ds = image_folder(str(folder(tmp_path, (1,) * 4)))
    with pytest.raises(ValueError, match="input_size=1 px is too small for small_cnn"):
        build_backbone("small_cnn", 16, ds.image_size)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    grey = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)      # 0 .. 65535
    path = tmp_path / "g16.png"
    Image.fromarray(grey).save(path)
    rgb = decode_image(path.read_bytes(), str(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.arange(256).reshape(16, 16))
    with pytest.raises(ValueError, match="pixel mode 'F'"):
        decode_image(_tiff(tmp_path, np.zeros((16, 16), np.float32)), "f.tif")


def _tiff(tmp_path, array):
    Image.fromarray(array).save(tmp_path / "f.tif")
    return (tmp_path / "f.tif").read_bytes()


def test_fifos_and_links_to_devices_are_refused_without_reading(tmp_path):
    root = folder(tmp_path)
    os.mkfifo(root / "id0" / "zz.png")
    with pytest.raises(ValueError, match="zz.png is not a regular file"):
        image_folder(str(root))
    os.remove(root / "id0" / "zz.png")
    os.symlink("/dev/zero", root / "id1" / "zero.png")
    with pytest.raises(ValueError, match="zero.png is not a regular file"):
        image_folder(str(root))


# --- verification packs -----------------------------------------------------------------------------------------------
def pack(path, size=16, issame=(True, False)):
    images = np.random.default_rng(0).integers(0, 256, (2 * len(issame), size, size, 3), dtype=np.uint8)
    write_verification_bin(str(path), images, list(issame))
    return str(path)


def test_two_packs_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = pack(tmp_path / "a" / "val32.bin"), pack(tmp_path / "b" / "val32.bin")
    with pytest.raises(ValueError, match="share the name 'val32'"):
        load_config(None, [f"data.eval_bins={[first, second]}"])


def test_issame_must_be_booleans(tmp_path):
    path = tmp_path / "s.bin"
    images = [encode_image(np.zeros((16, 16, 3), np.uint8), "png")] * 4
    path.write_bytes(pickle.dumps((images, [True, "False"])))
    with pytest.raises(ValueError, match=r"issame\[1\] = 'False' \(str\); .* must be booleans"):
        read_verification_bin(str(path))
    path.write_bytes(pickle.dumps((images, [1, 0])))     # the integers 1/0 of some packs: accepted
    assert read_verification_bin(str(path))[1].tolist() == [True, False]


def test_packs_are_read_and_sized_before_training(tmp_path):
    assert check_verification_bin(pack(tmp_path / "ok.bin", 16, (True, False) * 5), 16) == 10
    with pytest.raises(ValueError, match="2 pairs; the 10-fold verification accuracy needs at least 10"):
        check_verification_bin(pack(tmp_path / "few.bin"), 16)
    with pytest.raises(ValueError, match="its images are 40x40 px, the run trains on 16x16"):
        check_verification_bin(pack(tmp_path / "big.bin", 40, (True, False) * 5), 16)
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(b"\x80\x04not a pack")
    cfg = load_config(None, ['train.device="cpu"', 'data.source="folder"', f'data.path="{folder(tmp_path)}"',
                             f'data.eval_bins=["{corrupt}"]', f'out="{tmp_path / "run"}"', "train.batch_size=2",
                             "model.width=8", "model.embedding_size=16"])
    with pytest.raises(ValueError, match="corrupt.bin: not a readable verification pack"):
        train(cfg, quiet=True)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# --- RecordIO labels --------------------------------------------------------------------------------------------------
def rewrite_labels(tmp_path, labels, num_classes=3):
    """A set whose records carry the given raw labels (the writer itself refuses bad ones)."""
    image = encode_image(np.zeros((8, 8, 3), np.uint8), "png")
    offsets, rec = [], bytearray()
    for key, label in enumerate(labels, start=1):
        offsets.append((key, len(rec)))
        rec += frame_record(pack_record(label, image))
    (tmp_path / "train.rec").write_bytes(bytes(rec))
    (tmp_path / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in offsets))
    (tmp_path / "property").write_text(f"{num_classes},8,8")
    return RecordIODataset(str(tmp_path))


@pytest.mark.parametrize("label,message", [
    (5.0, "has label 5.0; labels must be whole numbers >= 0 and below num_classes=3"),
    (float("nan"), "has label nan"),
    (2.7, "has label 2.7"),
    (-1.0, "has label -1.0"),
])
def test_recordio_labels_must_be_whole_finite_and_in_range(tmp_path, label, message):
    ds = rewrite_labels(tmp_path, [0.0, label])
    with pytest.raises(ValueError, match=f"train.rec: record key 2 \\(image 1\\) {message}".replace(".", r"\.")):
        ds.check_labels()


def test_a_garbage_property_file_is_named(tmp_path):
    rewrite_labels(tmp_path, [0.0, 1.0])
    (tmp_path / "property").write_text("garbage\n")
    with pytest.raises(ValueError, match="property: expected 'num_classes,height,width'"):
        RecordIODataset(str(tmp_path))
