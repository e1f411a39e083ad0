"""Image folders and list files."""
import numpy as np
import pytest
from PIL import Image

from harness.data import image_folder, list_file


def write_image(path, value):
    Image.fromarray(np.full((6, 6, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_labels_sorted_identities(tmp_path):
    for k, name in enumerate(["bob", "alice", "carol"]):
        (tmp_path / name).mkdir()
        for j in range(2):
            write_image(tmp_path / name / f"{j}.png", 10 * k + j)
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    ds = image_folder(str(tmp_path))
    assert ds.class_names == ["alice", "bob", "carol"] and ds.num_classes == 3 and len(ds) == 6
    image, label = ds[0]
    assert label == 0 and image.shape == (3, 6, 6)
    assert image[0, 0, 0].item() == pytest.approx((10 / 255 - 0.5) / 0.5)


def test_empty_folders_fail(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        image_folder(str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_image(tmp_path / "a" / "x.png", 1)
    with pytest.raises(ValueError, match=r"identity folder\(s\) without images: \['b'\]"):
        image_folder(str(tmp_path))
    with pytest.raises(ValueError, match="not found"):
        image_folder(str(tmp_path / "missing"))


def test_list_file_remaps_non_contiguous_labels_with_a_note(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", i)
    (tmp_path / "train.list").write_text("0.png 5\n1.png 9\n\n2.png 5\n")
    with pytest.warns(UserWarning, match="labels are not contiguous"):
        ds = list_file(str(tmp_path / "train.list"))
    assert ds.labels.tolist() == [0, 1, 0] and ds.label_map == {5: 0, 9: 1} and ds.num_classes == 2


def test_list_file_bad_line(tmp_path):
    (tmp_path / "bad.list").write_text("a.png 0\nb.png zero\n")
    with pytest.raises(ValueError, match=r"bad.list:2: expected 'image_path label', got 'b.png zero'"):
        list_file(str(tmp_path / "bad.list"))
