"""Tiny end-to-end runs on the CPU: every head trains, resume after a kill is exact, divergence stops cleanly."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support import ROOT, tiny
from tiny import TINY

from harness.checkpoint_io import load_checkpoint
from harness.config import RunConfig, load_config
from harness.evaluation.evaluate import evaluate_run, load_eval, load_metrics
from harness.source import synthetic_faces
from harness.training.trainer import TrainingDiverged, clip_gradients, train
from losses import HEADS


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return synthetic_faces(load_config(None, TINY + [f'data.cache_dir="{tmp_path_factory.mktemp("c")}"']))


HEAD_PARAMS = {"magface": "{s = 16.0, l_a = 'auto', u_a = 'auto', lambda_g = 'auto'}",
               "mag_cosface": "{s = 16.0, l_a = 'auto', u_a = 'auto', lambda_g = 'auto', lambda_g_ratio = 1.55}",
               "circleloss": "{gamma = 32.0}", "adacos": "{}", "softmax": "{}"}   # no s: their own scale


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_trains_and_its_loss_falls(tmp_path, faces, head):
    params = HEAD_PARAMS.get(head, "{s = 16.0}")
    cfg = tiny(tmp_path, f'head.name="{head}"', f"head.params={params}", "train.epochs=12")
    result = train(cfg, faces=faces, quiet=True, evaluate=False)
    rows = [json.loads(line) for line in Path(tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["identity_loss"] for r in rows]
    assert result["steps"] == 12 * 5 and len(rows) == 60
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), (head, losses[:5], losses[-10:])
    assert all(np.isfinite(losses))


def test_run_directory_contents_and_evaluation(tmp_path, faces):
    cfg = tiny(tmp_path, "train.epochs=2")
    result = train(cfg, faces=faces, quiet=True)
    run = tmp_path / "run"
    for name in ("config.json", "environment.json", "metrics.jsonl", "metrics.csv", "checkpoints/final.pt",
                 "checkpoints/last.pt", "eval/metrics.json", "eval/synthetic.npz"):
        assert (run / name).is_file(), name
    env = json.loads(Path(run / "environment.json").read_text())
    assert env["head_hparams"]["head"] == "magface" and env["preprocessing"]["mean"] == 0.5 and env["seed"] == 0
    with open(run / "metrics.jsonl") as f:
        last = json.loads(f.readlines()[-1])
    assert {"mag_g", "margin_mean", "margin_p5", "margin_p95", "g_mean", "in_band_share"} <= last.keys()
    assert 0.0 <= last["in_band_share"] <= 1.0 and last["margin_min"] <= last["margin_p50"] <= last["margin_max"]
    dumps = sorted(os.listdir(run / "dumps"))
    with np.load(run / "dumps" / dumps[-1]) as z:
        assert z["norms"].shape == (16,) and np.all((z["probability"] > 0) & (z["probability"] <= 1))
        assert np.all(np.isfinite(z["lse_neg"])) and z["lse_neg"].shape == (16,)
    training = result["metrics"]["training"]
    assert {"theory_rho_a_astar", "theory_gap_median", "margin_span_share", "train_cos_median"} <= set(training)
    m = result["metrics"]["sets"]["synthetic"]
    assert 0 <= m["accuracy"] <= 1 and len(m["erc"]["fnmr"]) == 20 and m["edc"]["protocol"] == "fixed"
    assert "spearman_rho" in m["magnitude_vs_quality"]
    arrays = load_eval(str(run))
    assert arrays["norms"].shape == (80,) and arrays["scores"].shape == arrays["issame"].shape
    again = evaluate_run(str(run), faces=faces)
    stored = load_metrics(str(run))["sets"]["synthetic"]["accuracy"]
    assert again["sets"]["synthetic"]["accuracy"] == m["accuracy"] == stored
    ckpt = load_checkpoint(str(run / "checkpoints" / "final.pt"))
    assert ckpt["preprocessing"]["channels"] == "RGB" and not any(k.startswith("module.") for k in ckpt["backbone"])


def _state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    head = {}
    for k, v in ckpt["head"].items():   # a head's extra state (ElasticFace's generator) is a dict of tensors
        head.update({f"h.{k}.{name}": t for name, t in v.items()} if isinstance(v, dict) else {"h." + k: v})
    return {**{"b." + k: v for k, v in ckpt["backbone"].items()}, **head}


# the stateful heads: AdaFace's running norm statistics in buffers (as CurricularFace's t), AdaCos's scale (a buffer
# mirrored in a plain attribute), ElasticFace's draws (its generator's state in the state dict's extra state)
@pytest.mark.parametrize("head", ["magface", "adaface", "adacos", "elasticface_arc"])
def test_kill_and_resume_is_bitwise_identical(tmp_path, head):
    base = TINY + [f'data.cache_dir="{tmp_path / "cache"}"', "train.epochs=12", "train.checkpoint_every=1",
                   f'head.name="{head}"', "model.dropout=0.2", "data.synthetic.label_noise=0.1"]
    if head == "magface":
        # the band is measured at step 20: a kill before it resumes the collection, a kill after it the band
        base += ["head.params={s = 16.0, l_a = 'auto', u_a = 'auto', lambda_g = 'auto', sample_rate = 0.5}",
                 "train.calibrate_at_epoch=4"]
    cmd = lambda out: [sys.executable, "-m", "harness", "train", "--no-eval", "--out", str(out),  # noqa: E731
                       *[a for s in base for a in ("--set", s)]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(cmd(tmp_path / "straight"), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "last.pt"
    target = int(np.random.default_rng().integers(2, 40))   # a random step to kill at
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["global_step"] >= target:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(ckpt, weights_only=False)["global_step"]
    assert stopped_at < 60, "the run finished before it could be killed"
    subprocess.run(cmd(killed), cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    a, b = _state(tmp_path / "straight" / "checkpoints" / "final.pt"), _state(killed / "checkpoints" / "final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming from step {stopped_at}"
    rows = [json.loads(line)["step"] for line in Path(killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 61))


@pytest.mark.parametrize("poison", ["embeddings", "loss"])
def test_non_finite_values_stop_the_run_and_keep_the_last_checkpoint(tmp_path, faces, monkeypatch, poison):
    import harness.training.trainer as trainer_module
    real_build = trainer_module.build_model

    def poisoned(cfg, num_classes, image_size):
        backbone, head = real_build(cfg, num_classes, image_size)
        calls = {"n": 0}
        original = head.forward

        def forward(x, y):
            calls["n"] += 1
            if calls["n"] == 8 and poison == "loss":
                out = original(x, y)
                out.loss = out.loss * float("nan")
                return out
            return original(x, y)
        head.forward = forward
        if poison == "embeddings":
            real_forward = backbone.forward
            count = {"n": 0}

            def bad_backbone(x):
                count["n"] += 1
                return real_forward(x) * (float("inf") if count["n"] == 8 else 1.0)
            backbone.forward = bad_backbone
        return backbone, head

    monkeypatch.setattr(trainer_module, "build_model", poisoned)
    cfg = tiny(tmp_path, "train.epochs=3", "head.name=\"cosface\"", "head.params={s = 16.0}")
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, faces=faces, quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"non-finite {poison}" in str(err.value) and "at step 7" in str(err.value)
    assert f"last good checkpoint {last} (step 5)" in str(err.value)
    ckpt = load_checkpoint(str(last))
    assert ckpt["global_step"] == 5 and not (tmp_path / "run" / "checkpoints" / "final.pt").exists()


def test_resume_with_a_different_config_is_refused(tmp_path, faces):
    train(tiny(tmp_path, "train.max_steps=3"), faces=faces, quiet=True, evaluate=False)
    with pytest.raises(ValueError, match="different config"):
        train(tiny(tmp_path, "train.max_steps=3", "optim.lr=0.01"), faces=faces, quiet=True, evaluate=False)


def test_cli_reports_bad_keys(tmp_path):
    res = subprocess.run([sys.executable, "-m", "harness", "train", "--set", "train.epoch=2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "unknown config key 'train.epoch'" in res.stderr


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path, faces):
    cfg = tiny(tmp_path, "train.amp=\"bf16\"", "train.channels_last=true", "train.max_steps=4",
               "optim.grad_clip=1.0")
    result = train(cfg, faces=faces, quiet=True, evaluate=False)
    rows = [json.loads(line) for line in Path(tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result["steps"] == 4 and all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet50", "iresnet100"])
def test_iresnet_family_shapes(name):
    from harness.models import build_backbone
    from harness.models.iresnet import LAYERS
    net = build_backbone(name, 64, 32).eval()
    blocks = sum(1 for m in net.modules() if type(m).__name__ == "IBasicBlock")
    assert blocks == sum(LAYERS[name])
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert net.features.weight.requires_grad  # the final BN's scale is free: the magnitude can move
    with pytest.raises(ValueError, match="multiple of 16"):
        build_backbone(name, 64, 40)


@pytest.mark.parametrize("clip_head", [False, True])
def test_gradient_clipping_covers_the_backbone_or_both(clip_head):
    backbone, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    for p in [*backbone.parameters(), *head.parameters()]:
        p.grad = torch.full_like(p, 3.0)
    cfg = SimpleNamespace(optim=SimpleNamespace(grad_clip=1.0, clip_head=clip_head))
    run = SimpleNamespace(cfg=cfg, ctx=None, backbone=backbone, head=head, optimizer=None,
                          scaler=torch.amp.GradScaler("cpu", enabled=False))
    clip_gradients(run)
    norm = lambda m: float(torch.cat([p.grad.flatten() for p in m.parameters()]).norm())  # noqa: E731
    if clip_head:
        assert (norm(backbone) ** 2 + norm(head) ** 2) ** 0.5 == pytest.approx(1.0, rel=1e-4)
    else:
        assert norm(backbone) == pytest.approx(1.0, rel=1e-4) and norm(head) == pytest.approx(3.0 * 20 ** 0.5)


def test_fixed_band_magface_trains_without_calibration(tmp_path, faces):
    cfg = tiny(tmp_path, "head.params={s = 16.0, l_a = 1.0, u_a = 20.0, lambda_g = 5.0}", "train.epochs=12")
    train(cfg, faces=faces, quiet=True, evaluate=False)
    log = Path(tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["identity_loss"] for line in log]
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) and all(np.isfinite(losses))
    assert not (tmp_path / "run" / "calibration.json").exists()


def test_deterministic_mode_trains_the_same_run_and_restores_the_switches(tmp_path, faces):
    """On the CPU deterministic mode changes nothing (bitwise); the process-wide switches are restored afterwards;
    it is recorded in the fingerprint only when on (stored runs keep their folders)."""
    plain = tiny(tmp_path / "a", "train.max_steps=6")
    strict = tiny(tmp_path / "b", "train.max_steps=6", "train.deterministic=true")
    for cfg in (plain, strict):
        train(cfg, faces=faces, quiet=True, evaluate=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    a, b = (load_checkpoint(os.path.join(c.out, "checkpoints", "final.pt")) for c in (plain, strict))
    assert all(torch.equal(a["backbone"][k], b["backbone"][k]) for k in a["backbone"])
    assert torch.equal(a["head"]["weight"], b["head"]["weight"])
    assert plain.fingerprint() != strict.fingerprint()
    stored = os.path.join(ROOT, "results", "published", "compare_losses", "runs", "clean_magface_seed0-9fb87feaad")
    config = json.loads(Path(os.path.join(stored, "config.json")).read_text())
    assert "deterministic" not in config["train"]
    record = json.loads(Path(os.path.join(stored, "sweep_run.json")).read_text())
    assert RunConfig.from_dict(config).fingerprint() == record["fingerprint"]


def test_deterministic_mode_on_a_gpu_needs_the_cublas_setting(monkeypatch):
    from harness.training.determinism import determinism
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs CUBLAS_WORKSPACE_CONFIG=:4096:8.*before the first CUDA call"), \
            determinism(True, torch.device("cuda", 0)):
        pass
    assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with determinism(True, torch.device("cuda", 0)):
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    with determinism(False, torch.device("cuda", 0)):
        assert torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
