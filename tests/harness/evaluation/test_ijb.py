"""IJB-B/C on an IJB-format folder written from the built-in data: alignment gives the originals back, every mode of
the protocol equals an independent re-derivation from its description, the exact ROC and both FAR rules, 1:N
against brute force, the command end to end with its feature cache, and bad releases refused naming file and line."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from tiny import TINY

from harness.__main__ import main as harness_main
from harness.config import load_config
from harness.data.align import align, check_landmarks, five_from_68, template
from harness.data.ijb import read_release
from harness.data.ijb_writer import write_ijb
from harness.evaluation import ijb_eval
from harness.measures import ijb, roc
from harness.source import synthetic_faces
from harness.sweeps.rows import metric_columns
from harness.training.trainer import train

SIZE_32 = ["data.synthetic.size=32", "data.synthetic.eval_identities=20", "data.synthetic.eval_images_per_identity=6"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny trained run (32 px) and an IJB folder written from its evaluation images."""
    root = tmp_path_factory.mktemp("ijb")
    cfg = load_config(None, TINY + SIZE_32 + [f'out="{root / "run"}"', f'data.cache_dir="{root / "cache"}"',
                                              "train.epochs=2", "eval.bootstrap=0"])
    train(cfg, quiet=True, evaluate=False)
    faces = synthetic_faces(cfg)
    written = write_ijb(str(root / "rel"), faces.eval.images, faces.eval.identity, faces.eval.quality)
    return {"root": root, "faces": faces, "written": written, "run": str(root / "run")}


def test_alignment_gives_the_original_crops_back(release):
    rel, faces = read_release(str(release["root"] / "rel")), release["faces"]
    errors = []
    for i in range(len(rel.images)):
        loose = np.asarray(Image.open(rel.image_path(i)).convert("RGB"))
        assert loose.shape[0] > 32     # a larger loose crop, of its own size
        errors.append(np.abs(align(loose, rel.landmarks[i], 32).astype(float) - faces.eval.images[i]).mean())
    assert np.mean(errors) < 3 and np.max(errors) < 12, (np.mean(errors), np.max(errors))
    shuffled = align(loose, rel.landmarks[0], 32).astype(float)      # another image's landmarks: not the original
    assert np.abs(shuffled - faces.eval.images[-1]).mean() > 3 * np.mean(errors)


def test_landmark_checks_and_68_point_reduction():
    points = template(112)
    assert np.allclose(check_landmarks(points, (112, 112), "x"), points)
    with pytest.raises(ValueError, match="x: landmark 2 at .* lies outside the 60x60 image"):
        check_landmarks(points, (60, 60), "x")
    with pytest.raises(ValueError, match="two landmarks coincide"):
        check_landmarks(np.r_[points[:4], points[:1]], None, "x")
    with pytest.raises(ValueError, match="collinear"):
        check_landmarks(np.stack([np.arange(5.0) * 10, np.arange(5.0) * 10], 1), None, "x")
    ibug = np.zeros((68, 2))
    ibug[36:42], ibug[42:48], ibug[30], ibug[48], ibug[54] = [1, 2], [3, 4], [5, 6], [7, 8], [9, 10]
    np.testing.assert_array_equal(five_from_68(ibug), [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])


def naive_scores(rel, plain, flipped, mode: ijb.Mode) -> np.ndarray:
    """The protocol re-derived from its description, one template at a time (no shared code with
    harness.measures.ijb)."""
    feats = {}
    for t in np.unique(rel.templates):
        media_feats = []
        for m in np.unique(rel.medias[rel.templates == t]):
            rows = np.flatnonzero((rel.templates == t) & (rel.medias == m))
            f = [plain[i] + (flipped[i] if mode.flip else 0) for i in rows]
            f = [x / np.linalg.norm(x) if not mode.norm else x for x in f]
            f = [x * rel.detector[i] if mode.detector else x for x, i in zip(f, rows, strict=True)]
            mean = np.mean(f, axis=0)
            media_feats.append(mean / np.linalg.norm(mean) if mode.media_norm else mean)
        total = np.sum(media_feats, axis=0)
        feats[t] = total / np.linalg.norm(total)
    return np.array([feats[a] @ feats[b] for a, b in rel.pairs])


def naive_tar(scores, issame, far, rule):
    """TAR at FAR by trying every threshold (accept s >= t); "insightface": eval_ijbc.py's own reading of
    scikit-learn's roc_curve (flipped arrays, the first of the nearest FPRs)."""
    if rule == "insightface":
        fpr, tpr, _ = roc_curve(issame, scores)
        _, index = min(zip(np.abs(np.flipud(fpr) - far), range(len(fpr)), strict=True))
        return np.flipud(tpr)[index]
    best, best_gap = 0.0, np.inf
    impostor, genuine = scores[~issame], scores[issame]
    for t in np.r_[np.inf, np.unique(scores)[::-1]]:
        fpr, tpr = np.mean(impostor >= t), np.mean(genuine >= t)
        if rule == "conservative" and fpr <= far:
            best = max(best, tpr)
        if rule == "nearest" and (abs(fpr - far) < best_gap - 1e-15 or abs(abs(fpr - far) - best_gap) < 1e-15
                                  and tpr > best):
            best, best_gap = tpr, abs(fpr - far)
    return best


@pytest.mark.parametrize("mode", ["N1D1F1", "N0D1F1", "N1D0F0", "N0D0F0", "MagFace", "MagFace+"])
def test_every_mode_equals_an_independent_re_derivation(release, mode):
    rel = read_release(str(release["root"] / "rel"))
    rng = np.random.default_rng(1)
    plain = rng.normal(size=(len(rel.images), 8)).astype(np.float32) * rng.uniform(0.5, 3, (len(rel.images), 1))
    flipped = (plain + rng.normal(scale=0.3, size=plain.shape)).astype(np.float32)
    results, _ = ijb_eval.evaluate_modes(rel, plain, flipped, [mode], n_boot=0)
    expected = naive_scores(rel, plain, flipped, ijb.Mode.parse(mode))
    got = results[mode]["verification"]
    assert got["auc"] == pytest.approx(roc_auc_score(rel.labels, expected), abs=1e-6)
    impostors = int((~rel.labels).sum())
    for rule in roc.FAR_RULES:
        for far in (1e-3, 1e-2, 1e-1):   # 1e-3 of 760 impostor pairs is not measurable: NaN
            want = naive_tar(expected, rel.labels, far, rule) if far * impostors >= 1 else float("nan")
            assert got[f"tar_at_far_{rule}"][f"{far:g}"] == pytest.approx(want, abs=1e-9, nan_ok=True), (rule, far)


def test_exact_roc_with_ties_and_both_far_rules():
    scores, issame = np.array([3, 3, 2, 2, 1, 1.0]), np.array([1, 0, 1, 0, 1, 0], bool)
    assert roc.tar_at_far_of_scores(scores, issame, (0.7,))[0.7] == pytest.approx(2 / 3)   # s >= 2: FAR 2/3
    assert roc.tar_at_far_of_scores(scores, issame, (0.5,), "conservative")[0.5] == pytest.approx(1 / 3)
    assert roc.tar_at_far_of_scores(scores, issame, (0.4,), "nearest")[0.4] == pytest.approx(1 / 3)
    assert roc.tar_at_far_of_scores(scores, issame, (0.6,), "nearest")[0.6] == pytest.approx(2 / 3)   # above 0.6
    assert roc.tar_at_far_of_scores(scores, issame, (0.6,), "conservative")[0.6] == pytest.approx(1 / 3)
    steps, same = np.array([5, 4, 3, 2.0]), np.array([1, 1, 0, 0], bool)     # one FPR, several TPRs: the highest
    assert roc.tar_at_far_of_scores(steps, same, (0.5,), "nearest")[0.5] == 1.0
    assert np.isnan(roc.tar_at_far_of_scores(scores, issame, (0.1,))[0.1])     # below 1 / 3 impostors
    with pytest.raises(ValueError, match="FAR rule 'closest'"):
        roc.tar_at_far_of_scores(scores, issame, (0.5,), "closest")


def test_the_insightface_rule_reads_scikit_learns_thinned_curve_as_eval_ijbc_does():
    rng = np.random.default_rng(0)
    differs = 0
    for _ in range(100):
        n = int(rng.integers(50, 3000))
        issame = rng.random(n) < 0.3
        scores = np.round(rng.normal(size=n) + issame, int(rng.integers(1, 4)))     # many ties
        for far in (1e-2, 1e-1, 0.3):
            if far * (~issame).sum() < 1:
                continue
            got = roc.tar_at_far_of_scores(scores, issame, (far,), "insightface")[far]
            assert got == naive_tar(scores, issame, far, "insightface")
            differs += got != roc.tar_at_far_of_scores(scores, issame, (far,), "nearest")[far]
    assert differs > 0   # the thinned curve is not the exact one: the two rules are worth naming apart


def test_identification_equals_brute_force():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    gallery, gallery_s = unit(rng.normal(size=(30, 6))), np.arange(30)
    probe_s = rng.integers(0, 60, 400)
    probes = unit(np.where((probe_s < 30)[:, None], gallery[np.minimum(probe_s, 29)], 0)
                  + rng.normal(scale=0.8, size=(400, 6)))
    got = ijb.identification(gallery, gallery_s, probes, probe_s, fpirs=(0.1,), ranks=(1, 5))
    s = probes @ gallery.T
    mated = probe_s < 30
    ranks = [(np.delete(s[i], probe_s[i]) >= s[i, probe_s[i]]).sum() + 1 for i in np.flatnonzero(mated)]
    non_mated_top = np.sort(s[~mated].max(axis=1))[::-1]
    threshold = non_mated_top[int(len(non_mated_top) * 0.1) - 1]
    tpir = np.mean([r == 1 and s[i, probe_s[i]] > threshold for r, i in zip(ranks, np.flatnonzero(mated),
                                                                             strict=True)])
    assert got["rank"]["1"] == pytest.approx(np.mean(np.array(ranks) == 1))
    assert got["rank"]["5"] == pytest.approx(np.mean(np.array(ranks) <= 5))
    assert got["tpir_at_fpir"]["0.1"] == pytest.approx(tpir)
    boot = ijb.identification(gallery, gallery_s, probes, probe_s, fpirs=(0.1,), ranks=(1, 5), n_boot=100)
    low, high = boot["intervals"]["rank"]["1"]
    assert low < got["rank"]["1"] < high and boot["intervals"]["unit"] == "probe subjects"
    low, high = boot["intervals"]["tpir_at_fpir"]["0.1"]
    assert low <= tpir <= high


def test_the_command_end_to_end_with_its_feature_cache(release, capsys):
    out = release["root"] / "out"
    argv = ["evaluate", "--ijb", str(release["root"] / "rel"), "--checkpoint", release["run"], "--format", "run",
            "--out", str(out), "--modes", "N1D1F1,N0D0F0,MagFace+", "--qmagface", "--bootstrap", "50"]
    harness_main(argv)
    printed = capsys.readouterr().out
    assert "IJBC 1:1, TAR at FAR (nearest rule), 780 pairs" in printed and "N1D1F1 1:N G1: rank-1" in printed
    summary = json.loads(Path(out / "ijbc.json").read_text())
    assert set(summary["modes"]) == {"N1D1F1", "N0D0F0", "MagFace+", "QMagFace"}
    assert summary["preprocessing"]["size"] == 32 and summary["images"] == 120
    low, high = summary["modes"]["N1D1F1"]["intervals"]["tar_at_far_nearest"]["0.1"]
    assert low <= summary["modes"]["N1D1F1"]["verification"]["tar_at_far_nearest"]["0.1"] <= high
    with np.load(out / "ijbc_roc.npz") as z:
        assert {"N1D1F1/fpr", "QMagFace/tpr"} <= set(z.files)
    harness_main(argv[:-5] + ["--modes", "N0D1F1", "--bootstrap", "0"])   # another mode: no embedding again
    assert "features of 120 images reused" in capsys.readouterr().out


def damaged_copy(release, tmp_path, meta_file, edit):
    root = tmp_path / "bad"
    shutil.copytree(release["root"] / "rel", root)
    path = root / "IJBC" / "meta" / meta_file
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))
    return str(root), str(path)


@pytest.mark.parametrize("meta_file,edit,message", [
    ("ijbc_template_pair_label.txt", lambda ls: ls[:2] + ["1 999999 0\n"] + ls[2:],
     ":3: template 999999 has no images"),
    ("ijbc_template_pair_label.txt", lambda ls: ["1 2\n"] + ls, ":1: expected 3 fields"),
    ("ijbc_name_5pts_score.txt", lambda ls: [ls[0].rsplit(" ", 1)[0] + " 1.5\n"] + ls[1:],
     ":1: detector score 1.5 outside [0, 1]"),
    ("ijbc_name_5pts_score.txt", lambda ls: [ls[0].split()[0] + " 1 1" * 5 + " 0.9\n"] + ls[1:],
     ":1: two landmarks coincide"),
    ("ijbc_name_5pts_score.txt", lambda ls: ls[1:], "no landmarks for 1 listed image"),
    ("ijbc_face_tid_mid.txt", lambda ls: ls + ["nope.png x 1\n"], "field 2 'x' is not an integer"),
    ("ijbc_name_5pts_score.txt", lambda ls: ls + ls[:1], "image 1.png already has landmarks at"),
])
def test_a_damaged_release_is_refused_naming_file_and_line(release, tmp_path, meta_file, edit, message):
    root, path = damaged_copy(release, tmp_path, meta_file, edit)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_release(root)


def test_a_listed_image_missing_on_disk_is_named(release, tmp_path):
    root, _ = damaged_copy(release, tmp_path, "ijbc_face_tid_mid.txt", lambda ls: ls)
    os.remove(os.path.join(root, "IJBC", "loose_crop", "7.png"))
    with pytest.raises(ValueError, match=r"ijbc_face_tid_mid.txt lists 1 image\(s\) missing from .*loose_crop.*7.png"):
        read_release(root)


def test_a_landmark_outside_its_image_is_named_before_any_embedding(release, tmp_path):
    root, path = damaged_copy(release, tmp_path, "ijbc_name_5pts_score.txt",
                              lambda ls: [ls[0].split()[0] + " 5000 10 5010 10 5005 20 5001 30 5009 30 0.9\n"] + ls[1:])
    rel = read_release(root)
    message = f"{path}:1 (image 1.png): landmark 1 at [5000.0, 10.0] lies outside"
    with pytest.raises(ValueError, match=re.escape(message)):
        ijb_eval.features(rel, release["run"], "run", None, str(tmp_path / "out"), "cpu")
    assert not (tmp_path / "out").exists()


def test_modes_are_named_and_checked():
    assert ijb.Mode.parse("N1D0F1") == ijb.Mode(norm=True, detector=False, flip=True)
    assert ijb.Mode.parse("MagFace+").name == "N1D0F0" and ijb.Mode.parse("MagFace").name == "N1D0F0M1"
    with pytest.raises(ValueError, match="IJB mode 'N2D1F1'"):
        ijb.Mode.parse("N2D1F1")


def test_the_align_command_on_a_detectors_output(release, tmp_path, capsys, refused):
    rel = release["root"] / "rel" / "IJBC"
    harness_main(["align", "--images", str(rel / "loose_crop"), "--landmarks", str(rel / "meta" /
                  "ijbc_name_5pts_score.txt"), "--out", str(tmp_path / "aligned"), "--size", "32"])
    assert "aligned 120 image(s)" in capsys.readouterr().out
    crop = np.asarray(Image.open(tmp_path / "aligned" / "1.png"))
    assert np.abs(crop.astype(float) - release["faces"].eval.images[0]).mean() < 6
    bad = tmp_path / "bad.txt"
    bad.write_text("1.png 1 2 3\n")
    assert f"{bad}:1: expected an image name and 10 (five points) or 136 (68 points) numbers, got 3" in refused(
        harness_main, "align", "--images", rel / "loose_crop", "--landmarks", bad, "--out", tmp_path / "x")


def test_qmagface_published_and_fitted_on_half_the_subjects(release):
    rel = read_release(str(release["root"] / "rel"))
    rng = np.random.default_rng(2)
    subject = {t: s for t, s in rel.subjects().items()}
    centres = rng.normal(size=(max(subject.values()) + 1, 8))
    unit = centres[[subject[t] for t in rel.templates]] + rng.normal(scale=0.9, size=(len(rel.images), 8))
    plain = (unit * rng.uniform(5, 30, (len(rel.images), 1))).astype(np.float32)
    published, _ = ijb_eval.evaluate_modes(rel, plain, None, [], n_boot=0, qmagface=True)
    assert published["QMagFace"]["parameters"]["alpha"] == ijb.QMAGFACE_PUBLISHED["alpha"]
    fitted, _ = ijb_eval.evaluate_modes(rel, plain, None, [], n_boot=0, qmagface=True, qmagface_fit=True)
    q = fitted["QMagFace"]
    assert np.isfinite([q["parameters"]["alpha"], q["parameters"]["beta"]]).all()
    assert "half the subjects" in q["parameters"]["source"]
    assert q["verification"]["pairs"] == q["baseline_same_pairs"]["pairs"] < len(rel.labels) / 2
    s = np.array([0.9, 0.2, -0.1])
    np.testing.assert_allclose(ijb.qmagface_scores(s, np.array([10, 10, 1]), np.array([20, 5, 1]), 0.1, 0.5),
                               [0.9, 0.2, -0.1 + (0.5 * -0.1 - 0.1) * 1])


def test_qmagface_fit_follows_its_reference_procedure_on_many_pairs():
    rng = np.random.default_rng(0)
    issame = rng.random(20000) < 0.05
    q1, q2 = rng.uniform(10, 30, 20000), rng.uniform(10, 30, 20000)
    q = np.minimum(q1, q2)
    s = np.where(issame, rng.normal(0.45 + 0.01 * (q - 20), 0.1), rng.normal(0.0, 0.08 + 0.004 * (30 - q)))
    fit = ijb.fit_qmagface(s, issame, q1, q2)
    assert fit["fmrs"] == 50 and np.isfinite([fit["alpha"], fit["beta"]]).all()
    with pytest.raises(ValueError, match="too few distinct thresholds"):
        ijb.fit_qmagface(s[:40], issame[:40], q1[:40], q2[:40])


def test_a_run_config_evaluates_on_an_ijb_release(release, tmp_path):
    root = release["root"]
    cfg = load_config(None, TINY + SIZE_32 + [f'out="{tmp_path / "run"}"', f'data.cache_dir="{root / "cache"}"',
                                              "train.epochs=1", "eval.bootstrap=0", f'eval.ijb="{root / "rel"}"',
                                              'eval.ijb_modes=["MagFace+"]'])
    metrics = train(cfg, quiet=True)["metrics"]
    assert set(metrics["ijb"]["modes"]) == {"MagFace+"} and metrics["ijb"]["pairs"] == 780
    row = metric_columns(metrics)
    assert 0 <= row["ijb_MagFace+_auc"] <= 1 and "ijb_MagFace+_tar_far_0.0001" in row
    with pytest.raises(ValueError, match="IJB mode 'N9'"):
        load_config(None, [f'eval.ijb="{release["root"] / "rel"}"', 'eval.ijb_modes=["N9"]'])


def test_the_scale_benchmark_runs_small(tmp_path, capsys):
    from benchmarks import ijb_scale  # a benchmark script: only this test
    ijb_scale.main(["--scale", "0.002", "--out", str(tmp_path / "scale")])
    printed = capsys.readouterr().out
    assert "IJB-C x 0.002: 938 images, 31,316 pairs, mode N0D1F0" in printed and "peak" in printed
    rows = json.loads(Path(tmp_path / "scale" / "ijb_scale.json").read_text())["rows"]
    assert [r["step"] for r in rows] == ["pool", "score", "roc", "total"] and rows[-1]["pairs"] == 31_316


def combine_weighted_f_q(fs):
    """QMagFace's fusion of raw features (experiments/ijb_benchmarks.py), re-derived here."""
    qs = np.linalg.norm(fs, axis=1)
    f = np.sum(fs * qs[:, None], axis=0)
    return f / np.linalg.norm(f) * (np.sum(qs ** 2) / np.sum(qs))


def test_qmagface_templates_are_its_own_two_level_fusion(release):
    rel = read_release(str(release["root"] / "rel"))
    plain = np.random.default_rng(3).normal(size=(len(rel.images), 6)) * np.random.default_rng(4).uniform(
        5, 40, (len(rel.images), 1))
    grouping = ijb.Grouping.of(rel.templates, rel.medias)
    pooled, quality = ijb.qmagface_templates(plain.astype(np.float32), grouping)
    for row, t in enumerate(grouping.template_ids):
        media = [combine_weighted_f_q(plain[(rel.templates == t) & (rel.medias == m)])
                 for m in np.unique(rel.medias[rel.templates == t])]
        fused = combine_weighted_f_q(np.array(media))
        np.testing.assert_allclose(pooled[row], fused / np.linalg.norm(fused), atol=2e-5)
        assert quality[row] == pytest.approx(np.linalg.norm(fused), rel=1e-5)


def test_reruns_keep_earlier_modes_and_missing_subjects_are_said(release, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["evaluate", "--ijb", str(release["root"] / "rel"), "--checkpoint", release["run"], "--format", "run",
              "--out", str(out), "--bootstrap", "20"]
    harness_main(common + ["--modes", "N1D1F1"])
    harness_main(common + ["--modes", "N0D0F0"])
    assert set(json.loads(Path(out / "ijbc.json").read_text())["modes"]) == {"N1D1F1", "N0D0F0"}
    root, _ = damaged_copy(release, tmp_path, "ijbc_face_tid_mid.txt", lambda ls: ls)
    for f in os.listdir(os.path.join(root, "IJBC", "meta")):
        if "_1N_" in f:
            os.remove(os.path.join(root, "IJBC", "meta", f))
    capsys.readouterr()
    harness_main(common[:2] + [root] + common[3:-4] + ["--out", str(tmp_path / "o2"), "--bootstrap", "20",
                                                       "--modes", "N1D1F1"])
    assert "intervals unavailable: the release has no 1:N lists" in capsys.readouterr().out


def test_a_template_without_a_detector_score_is_refused_before_embedding(release, tmp_path):
    rel = read_release(str(release["root"] / "rel"))
    first = {rel.images[i] for i in np.flatnonzero(rel.templates == rel.templates[0])}

    def zero_first_template(lines):
        return [" ".join(line.split()[:-1]) + " 0\n" if line.split()[0] in first else line for line in lines]
    root, _ = damaged_copy(release, tmp_path, "ijbc_name_5pts_score.txt", zero_first_template)
    with pytest.raises(ValueError, match=f"template {rel.templates[0]} .*every image's detector score is 0"):
        ijb_eval.run(ijb_eval.Request(root, "IJBC", release["run"], "run", str(tmp_path / "o"), modes=("N1D1F1",)))
    assert not (tmp_path / "o").exists()
