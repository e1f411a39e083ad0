"""Verification packs: round trip, old pickle flavours, and refusal of malicious pickles."""
import pickle

import numpy as np
import pytest

from harness.data import encode_image, file_sha256, read_verification_bin, write_verification_bin


def pack_images(n_pairs=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (2 * n_pairs, 10, 10, 3), dtype=np.uint8), np.array([True, False, True])


def test_round_trip_is_lossless_with_png(tmp_path):
    images, issame = pack_images()
    path = str(tmp_path / "lfw.bin")
    digest = write_verification_bin(path, images, issame)
    assert digest == file_sha256(path) and len(digest) == 64
    got, same = read_verification_bin(path)
    assert np.array_equal(got, images) and same.dtype == bool and same.tolist() == issame.tolist()


def test_numpy_byte_elements_and_protocol_2(tmp_path):
    images, issame = pack_images()
    bins = [np.frombuffer(encode_image(im, "png"), dtype=np.uint8) for im in images]
    path = tmp_path / "old.bin"
    path.write_bytes(pickle.dumps((bins, list(issame)), protocol=2))
    got, _ = read_verification_bin(str(path))
    assert np.array_equal(got, images)
    path.write_bytes(pickle.dumps(([encode_image(im, "png") for im in images], list(issame)), protocol=2))
    assert np.array_equal(read_verification_bin(str(path))[0], images)


def test_python2_style_str_pickle(tmp_path):
    images, _ = pack_images(n_pairs=1)
    blobs = [encode_image(im, "png") for im in images]
    # a Python 2 pickle of ([str, str], [True]): SHORT_BINSTRING / BINSTRING opcodes, no globals
    body = b"".join((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + len(b).to_bytes(4, "little")) + b
                    for b in blobs)
    raw = b"\x80\x02]q\x00(" + body + b"e]q\x01\x88a\x86q\x02."
    path = tmp_path / "py2.bin"
    path.write_bytes(raw)
    got, same = read_verification_bin(str(path))
    assert np.array_equal(got, images) and same.tolist() == [True]


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Evil(), b"x"], [True])))
    with pytest.raises(ValueError, match=r"refused to load global (posix|os)\.system"):
        read_verification_bin(str(path))
    assert not marker.exists()


def test_count_mismatch_undecodable_and_missing(tmp_path):
    images, issame = pack_images()
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([encode_image(im, "png") for im in images[:5]], list(issame))))
    with pytest.raises(ValueError, match="5 images for 3 pairs; a pack needs exactly 2 per pair"):
        read_verification_bin(str(path))
    blobs = [encode_image(im, "png") for im in images]
    blobs[4] = b"garbage"
    path.write_bytes(pickle.dumps((blobs, list(issame))))
    with pytest.raises(ValueError, match="cannot decode image 4 of"):
        read_verification_bin(str(path))
    with pytest.raises(ValueError, match="not found"):
        read_verification_bin(str(tmp_path / "nope.bin"))
    with pytest.raises(ValueError, match="6 images for 2 pairs"):
        write_verification_bin(str(tmp_path / "w.bin"), images, [True, False])
