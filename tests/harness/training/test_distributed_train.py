"""torchrun end to end on the CPU (gloo, 2 ranks): training with MagFace's "auto" band (calibrated at step 5 of 20,
so kills land before and after it), a kill and exact resume, and the errors for a checkpoint of another world size
and for ranks started with different configs (no hang: collective timeouts)."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed_worker as w
import numpy as np
import psutil
import pytest
import torch
import torch.multiprocessing as mp
from support import ROOT
from tiny import TINY

from harness.training.checkpoints import CheckpointStore

pytestmark = pytest.mark.slow   # trains runs or starts processes: deselect with -m "not slow"

# gloo on the loopback interface: by default it binds to the address the host name resolves to, which in sandboxed CI
# may be an interface the ranks cannot reach each other through.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MAGFACE_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1",
       "GLOO_SOCKET_IFNAME": "lo"}
# What a failure of the transport (not of the harness) prints: gloo's TCP pairs, the rendezvous, the c10d store.
TRANSPORT_ERRORS = ("gloo/transport", "connectFullMesh", "Connection reset by peer", "Connection closed by peer",
                    "Connection refused", "RendezvousError", "RendezvousTimeoutError", "TCPStore")


def cmd(out, tmp_path, nproc=2, *extra):
    base = TINY + [f'data.cache_dir="{tmp_path / "cache"}"', "train.epochs=4", "train.checkpoint_every=1",
                   "train.calibrate_at_epoch=1.0",
                   'head.params={s = 16.0, l_a = "auto", u_a = "auto", lambda_g = "auto", lambda_g_ratio = 2.0}',
                   *extra]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc
              else [sys.executable])
    return [*launch, "-m", "harness", "train", "--no-eval", "--out", str(out), *[a for s in base for a in ("--set", s)]]


def run_ok(command, timeout=90, fresh=False):
    """Run a launch that must succeed; a failure shows its output. One retry only when the transport failed (known
    gloo/rendezvous flakiness on loaded machines: an error of the transport, or a launch that hangs, seen twice in
    about 20 launches on the 2-core machine) and the harness raised none of its own errors. A run takes about 8 s,
    so `timeout` only catches a hang. fresh: the retry starts from an empty output folder, so a reference run is
    never a resumed one."""
    out = command[command.index("--out") + 1]
    for attempt in (1, 2):  # noqa: B007 - read after the loop, in the failure message
        res, output = _launch(command, timeout)
        if res is not None and res.returncode == 0:
            return res
        hung = res is None
        transport = hung or any(e in output for e in TRANSPORT_ERRORS)
        if not transport or any(e in output for e in ("ValueError", "TrainingDiverged", "AssertionError")):
            break
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
    raise AssertionError(f"{'hung' if res is None else f'exit {res.returncode}'} after {attempt} attempt(s): "
                         f"{' '.join(command[-4:])}\n{output[-6000:]}")


def _launch(command, timeout):
    """(CompletedProcess, output), or (None, output) when the launch hung: then the launcher and its ranks are
    killed, so nothing of it outlives the attempt (nor holds the pipes open)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_launch(proc)
        stdout, stderr = proc.communicate()
        return None, f"hung for {timeout} s\n{stdout}{stderr}"
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), stdout + stderr


def kill_launch(proc):
    """SIGKILL a launch: the launcher's process group and every process under it. torchrun starts each rank in a
    session of its own, so killing the launcher's group alone leaves the ranks running: they keep writing into the
    run folder and hold the launcher's pipes open (communicate() then waits for them; a hung rank is an endless
    wait, the CI hang of 2026-12-04)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    _, alive = psutil.wait_procs(family, timeout=30)
    proc.wait()
    assert not alive, f"ranks outlived the kill: {[p.pid for p in alive]}"


def state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    weights = {**{"b." + k: v for k, v in ckpt["backbone"].items()}, **{"h." + k: v for k, v in ckpt["head"].items()}}
    return ckpt, weights


def test_torchrun_kill_and_resume_is_exact(tmp_path):
    straight = tmp_path / "straight"
    run_ok(cmd(straight, tmp_path), fresh=True)
    ckpt, a = state(straight / "checkpoints" / "final.pt")
    assert ckpt["world_size"] == 2 and ckpt["head"]["weight"].shape == (8, 16)   # the gathered centres
    assert json.loads(Path(straight / "environment.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == [
        "final.pt", "last.json", "step00000020.rank0.pt", "step00000020.rank1.pt"]
    band = json.loads(Path(straight / "calibration.json").read_text())
    assert band["step"] == 5 and band["samples"] == 5 * 16        # the global batches: every rank saw all of them
    assert ckpt["head"]["band"].tolist() == pytest.approx([band["l_a"], band["u_a"], band["lambda_g"]])
    ranks = [torch.load(straight / "checkpoints" / f"step00000020.rank{r}.pt", map_location="cpu",
                        weights_only=False)["head"]["inner.band"] for r in range(2)]
    assert torch.equal(ranks[0], ranks[1]), "the ranks calibrated different bands"

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed, tmp_path), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pointer = killed / "checkpoints" / "last.json"
    target = int(np.random.default_rng().integers(2, 12))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(Path(pointer).read_text())["global_step"] >= target:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    kill_launch(proc)   # the launcher and both ranks at once
    stopped_at = json.loads(Path(pointer).read_text())["global_step"]
    assert stopped_at < 20, "the run finished before it could be killed"
    run_ok(cmd(killed, tmp_path))
    _, b = state(killed / "checkpoints" / "final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming from step {stopped_at}"
    rows = [json.loads(line)["step"] for line in Path(killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 21))

    one = subprocess.run(cmd(killed, tmp_path, 0), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert one.returncode != 0 and "torchrun checkpoint of 2 ranks" in one.stderr
    class FourRanks:   # what every rank of a 4-rank torchrun would see (without starting 4 processes)
        world_size, rank = 4, 0

        def agree(self, value):
            return [value] * 4
    with pytest.raises(ValueError, match="written by 2 ranks, this run has 4.*--nproc_per_node 2"):
        CheckpointStore(str(killed / "checkpoints"), FourRanks()).latest()


def test_torchrun_with_replicated_centres_keeps_one_head(tmp_path):
    """train.shard_centres = false: rank 0's head gradient is broadcast each step and the copies are compared at
    every checkpoint; both ranks' last checkpoints and final.pt hold the same full head."""
    out = tmp_path / "replicated"
    run_ok(cmd(out, tmp_path, 2, "train.shard_centres=false", "train.max_steps=6"), fresh=True)
    heads = [torch.load(out / "checkpoints" / f"step00000006.rank{r}.pt", map_location="cpu")["head"]
             for r in range(2)]
    assert heads[0]["inner.weight"].shape == (8, 16)
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert torch.equal(torch.load(out / "checkpoints" / "final.pt")["head"]["weight"], heads[0]["inner.weight"])


def test_torchrun_refuses_a_batch_that_does_not_split_and_fp16(monkeypatch):
    """Checked from torchrun's variables before any process group starts (so every rank refuses at once)."""
    from harness.config import load_config  # only this test builds a config
    from harness.training.distributed import from_environment  # imports torch.distributed code
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="must be divisible by the world size 2"):
        from_environment(load_config(None, TINY + ["train.batch_size=15"]))
    with pytest.raises(ValueError, match="fp16.*use 'bf16'"):
        from_environment(load_config(None, TINY + ['train.amp="fp16"']))


def test_ranks_with_different_configs_fail_together(tmp_path):
    t0 = time.perf_counter()
    mp.start_processes(w.config_mismatch_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        message = (tmp_path / f"error{rank}.txt").read_text()
        assert "different configs" in message
    assert time.perf_counter() - t0 < 50, "should fail at once, not at the collective timeout"


def test_world_size_larger_than_the_classes_is_refused(tmp_path):
    mp.start_processes(w.too_many_ranks_main, args=(2, str(tmp_path / "store"), str(tmp_path), 1), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        assert "world size 2 is larger than the number of classes 1" in (tmp_path / f"error{rank}.txt").read_text()


def test_single_process_never_starts_torch_distributed(tmp_path):
    overrides = TINY + [f'data.cache_dir="{tmp_path / "cache"}"', "train.max_steps=2", f'out="{tmp_path / "run"}"']
    code = f"""
import sys
import torch.distributed as dist
from harness.config import load_config
from harness.training.trainer import train
train(load_config(None, {overrides!r}), quiet=True, evaluate=False)
assert not dist.is_initialized()
assert "losses.distributed" not in sys.modules and "harness.training.distributed" not in sys.modules
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in ENV.items() if k not in ("WORLD_SIZE", "RANK")})
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
