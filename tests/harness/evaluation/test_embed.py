"""python -m harness embed: a folder of aligned faces -> embeddings.npy and magnitudes.csv, with a release's own
preprocessing (BGR in [0, 1] for MagFace) or a run of this suite; other files and sizes are errors naming them."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import ROOT
from tiny import TINY

from harness.config import load_config
from harness.data import write_verification_bin
from harness.evaluation.embed import embed_folder
from harness.models import iresnet
from harness.models.iresnet import LAYERS
from harness.models.pretrained import suite_key_to_release
from harness.training.trainer import train

pytestmark = pytest.mark.slow   # builds an iResNet-18 and trains a tiny run


def write_images(folder, size, n=3, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / ("b" if i % 2 else "a") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return sorted(paths)


def test_a_magface_release_embeds_with_its_own_preprocessing(tmp_path):
    torch.manual_seed(0)
    net = iresnet("iresnet18", 512).eval()
    state = {"features.module." + suite_key_to_release(k, LAYERS["iresnet18"]): v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "magface.pth")
    paths = write_images(tmp_path / "faces", 112)
    done = embed_folder(str(tmp_path / "magface.pth"), "magface", str(tmp_path / "faces"), str(tmp_path / "out"),
                        backbone="iresnet18")
    emb = np.load(tmp_path / "out" / "embeddings.npy")
    rows = list(csv.DictReader((tmp_path / "out" / "magnitudes.csv").read_text().splitlines()))
    assert done["images"] == 3 and emb.shape == (3, 512)
    assert [r["path"] for r in rows] == ["a/0.png", "a/2.png", "b/1.png"]
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.eps = 2e-5
    bgr = np.stack([np.asarray(Image.open(p).convert("RGB"))[..., ::-1] / 255.0 for p in paths]).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(bgr.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(emb, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose([float(r["magnitude"]) for r in rows], np.linalg.norm(want, axis=1), rtol=1e-5)


def test_a_run_of_this_suite_embeds_through_the_cli(tmp_path):
    cfg = load_config(None, TINY + [f'data.cache_dir="{tmp_path / "cache"}"', "train.max_steps=2",
                                    f'out="{tmp_path / "run"}"'])
    train(cfg, quiet=True, evaluate=False)
    write_images(tmp_path / "faces", 16, n=5)
    res = subprocess.run([sys.executable, "-m", "harness", "embed", "--checkpoint", str(tmp_path / "run"), "--format",
                          "run", "--images", str(tmp_path / "faces"), "--out", str(tmp_path / "out")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert np.load(tmp_path / "out" / "embeddings.npy").shape == (5, 16)


def test_bad_folders_and_arguments_are_named(tmp_path):
    write_images(tmp_path / "mixed", 112, n=1)
    (tmp_path / "mixed" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not images .*notes\.txt"):
        embed_folder("unused", "magface", str(tmp_path / "mixed"), str(tmp_path / "o"), backbone="iresnet18")
    write_images(tmp_path / "small", 96, n=1)
    torch.save({"state_dict": {}}, tmp_path / "m.pth")
    with pytest.raises(ValueError, match="needs --backbone"):
        embed_folder(str(tmp_path / "m.pth"), "magface", str(tmp_path / "small"), str(tmp_path / "o"))
    net = iresnet("iresnet18", 512).eval()
    state = {suite_key_to_release(k, LAYERS["iresnet18"]): v for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "insight.pth")
    with pytest.raises(ValueError, match=r"0\.png: 96x96 px; this network takes aligned 112x112"):
        embed_folder(str(tmp_path / "insight.pth"), "insightface", str(tmp_path / "small"), str(tmp_path / "o"),
                     backbone="iresnet18")


def test_a_release_is_evaluated_on_a_verification_pack(tmp_path):
    net = iresnet("iresnet18", 512).eval()
    torch.save({suite_key_to_release(k, LAYERS["iresnet18"]): v for k, v in net.state_dict().items()},
               tmp_path / "backbone.pth")
    rng = np.random.default_rng(1)
    write_verification_bin(str(tmp_path / "toy.bin"), rng.integers(0, 256, (40, 112, 112, 3), dtype=np.uint8),
                           np.arange(20) % 2 == 0)
    res = subprocess.run([sys.executable, "-m", "harness", "evaluate", "--checkpoint", str(tmp_path / "backbone.pth"),
                          "--format", "insightface", "--backbone", "iresnet18", "--eval-bins",
                          str(tmp_path / "toy.bin"), "--out", str(tmp_path / "eval")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads(Path(tmp_path / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["sets"]["toy"]["accuracy"] <= 1 and metrics["preprocessing"]["channels"] == "RGB"
    assert np.load(tmp_path / "eval" / "toy.npz")["norms"].shape == (40,)
    bad = subprocess.run([sys.executable, "-m", "harness", "evaluate", "--format", "magface", "--run", "x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not --run" in bad.stderr
