"""Checkpoints are data, not code: the suite's own checkpoints are plain data (they load with weights_only=True and
no allow-list), and a checkpoint whose pickle would run a command is refused by resume and by evaluate --run, with
a clear error and nothing run."""
import os
import subprocess
import sys

import pytest
import torch
from support import ROOT
from tiny import TINY

from harness.checkpoint_io import load_checkpoint
from harness.config import load_config
from harness.models.pretrained import load_pretrained
from harness.training.trainer import train

pytestmark = pytest.mark.slow   # trains a tiny run


class Payload:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    cfg = load_config(None, TINY + [f'data.cache_dir="{root / "cache"}"', "train.max_steps=4",
                                    "train.checkpoint_every=2", f'out="{root / "run"}"'])
    train(cfg, quiet=True, evaluate=False)
    return root / "run", cfg


def poison(path, marker):
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["config"] = {"payload": Payload(marker)}
    torch.save(state, path)


def test_own_checkpoints_are_plain_data(tiny_run):
    run, _ = tiny_run
    ckpt = torch.load(run / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)   # no allow-list
    assert ckpt["global_step"] == 4 and isinstance(ckpt["rng"]["numpy"]["keys"], torch.Tensor)


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(tiny_run, tmp_path):
    run, cfg = tiny_run
    marker = tmp_path / "ran"
    final = run / "checkpoints" / "final.pt"
    poison(final, marker)
    with pytest.raises(ValueError, match="holds more than plain data.*could run code"):
        load_checkpoint(str(final))
    res = subprocess.run([sys.executable, "-m", "harness", "evaluate", "--run", str(run)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "holds more than plain data" in res.stderr
    poison(run / "checkpoints" / "last.pt", marker)
    os.remove(final)                                   # resume now goes to the (poisoned) last checkpoint
    with pytest.raises(ValueError, match="holds more than plain data"):
        train(cfg, quiet=True, evaluate=False)
    assert not marker.exists(), "a checkpoint ran a command"


def test_a_released_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Payload(marker)}, path)
    with pytest.raises(ValueError, match="pretrained checkpoint .* holds more than plain data"):
        load_pretrained(str(path), "insightface", "iresnet18")
    assert not marker.exists()


def test_cpu_run_state_never_touches_cuda(monkeypatch):
    """A CPU run on a GPU machine saves no CUDA generator and starts no CUDA context (GPUs shown as present)."""
    from harness.provenance import environment
    from harness.training.rng import rng_state, set_rng_state

    def cuda_touched(*args, **kwargs):
        raise AssertionError("CUDA was touched by a CPU run")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all", "get_device_name",
                 "current_device"):
        monkeypatch.setattr(torch.cuda, name, cuda_touched)
    state = rng_state(torch.device("cpu"))
    assert not any(k.startswith("cuda") for k in state)
    set_rng_state({**state, "cuda": [torch.zeros(8, dtype=torch.uint8)]}, torch.device("cpu"))
    assert environment(torch.device("cpu"))["cuda"] is None


def test_gpu_rng_state_is_the_run_devices_own(monkeypatch):
    """On a GPU the run's own device's generator is saved and restored; an older checkpoint (one state per visible
    GPU) restores the state of the run's device, and one without it says how to resume."""
    from harness.training.rng import rng_state, set_rng_state
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((4,), device.index, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((int(s[0]), device.index)))
    state = rng_state(torch.device("cuda", 1))
    assert state["cuda_device"].tolist() == [1] * 4
    set_rng_state(state, torch.device("cuda", 1))
    old = {**state, "cuda": [torch.full((4,), 7, dtype=torch.uint8), torch.full((4,), 9, dtype=torch.uint8)]}
    del old["cuda_device"]
    set_rng_state(old, torch.device("cuda", 1))
    assert restored == [(1, 1), (9, 1)]
    with pytest.raises(ValueError, match="CUDA RNG states for 2 GPU.*none for cuda:3.*CUDA_VISIBLE_DEVICES"):
        set_rng_state(old, torch.device("cuda", 3))
