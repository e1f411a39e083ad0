"""The built-in synthetic identities: deterministic, open-set, balanced pairs, and quality labels that mean it."""
import dataclasses
import os

import numpy as np
import pytest
import torch

from harness.data import SplitDataset, SyntheticConfig, generate, load_or_generate
from harness.data.degrade import DEGRADATIONS, degrade, quality_from_severity
from harness.data.render import compose, draw_identities, draw_nuisance, render_canonical

SMALL = SyntheticConfig(size=32, train_identities=12, train_images_per_identity=6, eval_identities=20,
                        eval_images_per_identity=4, folds=10, pairs_per_fold=8, seed=3)


@pytest.fixture(scope="module")
def faces():
    return generate(SMALL)


def test_same_seed_same_bytes_other_seed_differs(faces):
    again = generate(SMALL)
    assert np.array_equal(faces.train.images, again.train.images)
    assert np.array_equal(faces.eval.images, again.eval.images)
    assert np.array_equal(faces.pairs.left, again.pairs.left)
    other = generate(dataclasses.replace(SMALL, seed=4))
    assert not np.array_equal(faces.train.images, other.train.images)


def test_shapes_and_sizes():
    for size in (32, 64, 112):
        f = generate(dataclasses.replace(SMALL, size=size, train_identities=2, train_images_per_identity=2))
        assert f.train.images.shape == (4, size, size, 3) and f.train.images.dtype == np.uint8
    ds = SplitDataset(generate(SMALL).train)
    x, y = ds[5]
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1 and isinstance(y, int)


def test_open_set_split_and_balanced_folds(faces):
    assert not set(faces.train.identity) & set(faces.eval.identity)
    p = faces.pairs
    assert len(p.issame) == SMALL.folds * SMALL.pairs_per_fold
    for f in range(SMALL.folds):
        in_fold = p.fold == f
        assert p.issame[in_fold].sum() == SMALL.pairs_per_fold // 2
    ident = faces.eval.identity
    assert np.all((ident[p.left] == ident[p.right]) == p.issame)
    assert np.all(p.left[p.issame] != p.right[p.issame])
    drawn = {(min(a, b), max(a, b)) for a, b in zip(p.left, p.right, strict=True)}
    assert len(drawn) == len(p.issame), "a pair was drawn twice"
    fold_of_identity = {}
    for a, b, f in zip(ident[p.left], ident[p.right], p.fold, strict=True):
        for i in (a, b):
            assert fold_of_identity.setdefault(i, f) == f, "an identity appears in two folds"


def test_quality_is_one_minus_weighted_severity_product(faces):
    np.testing.assert_allclose(faces.train.quality[~faces.train.garbage],
                               quality_from_severity(faces.train.severity[~faces.train.garbage]))
    assert faces.eval.quality.min() >= 0 and faces.eval.quality.max() <= 1
    assert faces.train.severity.shape == (len(faces.train), len(DEGRADATIONS))


@pytest.mark.parametrize("name", ["blur", "noise", "occlusion", "lowres", "jpeg"])
def test_more_severe_degradation_destroys_more_of_the_image(name):
    gen = torch.Generator().manual_seed(0)
    traits = draw_identities(8, gen)
    nuisance = draw_nuisance(8, gen)
    clean = compose(render_canonical(traits, 2, 64), nuisance)
    k = DEGRADATIONS.index(name)
    errors, qualities = [], []
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        sev = torch.zeros(8, len(DEGRADATIONS))
        sev[:, k] = level
        out, applied = degrade(clean, sev, torch.Generator().manual_seed(1))
        reference = (clean.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()
        errors.append(np.abs(out.astype(float) - reference).mean())
        qualities.append(quality_from_severity(applied.numpy()).mean())
    assert errors[0] == 0.0
    assert all(np.diff(errors) > 0), errors
    assert all(np.diff(qualities) < 0), qualities


def test_label_noise_and_garbage_are_flagged():
    cfg = dataclasses.replace(SMALL, train_identities=20, train_images_per_identity=50, label_noise=0.2, garbage=0.1)
    f = generate(cfg)
    t = f.train
    assert 0.05 < t.garbage.mean() < 0.15 and 0.13 < t.noisy_label.mean() < 0.27
    assert np.all(t.labels[t.noisy_label] != t.identity[t.noisy_label])
    assert np.all(t.labels[~t.noisy_label & ~t.garbage] == t.identity[~t.noisy_label & ~t.garbage])
    assert np.all(t.quality[t.garbage] == 0)
    assert not (t.garbage & t.noisy_label).any()


def test_cache_round_trip_and_keying(tmp_path):
    first = load_or_generate(SMALL, cache_dir=str(tmp_path))
    folders = os.listdir(tmp_path)
    assert folders == [f"synthetic-{SMALL.key()}"]
    second = load_or_generate(SMALL, cache_dir=str(tmp_path))
    assert np.array_equal(first.train.images, second.train.images)
    assert np.array_equal(first.pairs.issame, second.pairs.issame)
    assert second.preprocessing["mean"] == 0.5
    load_or_generate(dataclasses.replace(SMALL, seed=9), cache_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2
    assert not [d for d in os.listdir(tmp_path) if ".tmp-" in d]


@pytest.mark.parametrize("change,message", [
    ({"size": 8}, "size=8"), ({"eval_identities": 5}, "eval_identities=5"),
    ({"pairs_per_fold": 7}, "pairs_per_fold=7"), ({"label_noise": 1.0}, "label_noise=1.0"),
    ({"degradation_probability": {"fog": 0.5}}, "unknown degradations ['fog']"),
    ({"degradation_probability": {"blur": 1.5}}, "probability of blur must be in [0, 1]"),
    ({"train_images_per_identity": 1}, "train_images_per_identity=1"),
    ({"pairs_per_fold": 26}, "needs 13 distinct genuine and impostor pairs per fold, but a fold of 2 identities x 4 "
                             "images has only 12 genuine and 16 impostor pairs"),
])
def test_bad_config(change, message):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(SMALL, **change)
    assert message in str(err.value)


def test_export_to_insightface_formats_reads_back(tmp_path, faces):
    from harness.data import RecordIODataset, export_insightface, read_verification_bin
    info = export_insightface(faces, str(tmp_path))
    ds = RecordIODataset(str(tmp_path))
    assert len(ds) == len(faces.train) and ds.num_classes == SMALL.train_identities
    assert sorted(ds.raw(i)[0] for i in range(len(ds))) == sorted(faces.train.labels.tolist())
    images, issame = read_verification_bin(str(tmp_path / "synthetic_pairs.bin"))
    assert np.array_equal(images[0::2], faces.eval.images[faces.pairs.left])
    assert np.array_equal(issame, faces.pairs.issame) and info["pairs"] == len(issame)
