"""The smaller benchmark scripts at tiny sizes: they run, print their table and write what they promise."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import ROOT
from tiny import TINY

pytestmark = pytest.mark.slow   # trains runs or starts processes: deselect with -m "not slow"


def run(*args, timeout=300):
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_head_speed(tmp_path):
    out = run("benchmarks/head_speed.py", "--batch", "16", "--dim", "32", "--classes", "500", "--repeats", "2",
              "--warmup", "1", "--heads", "magface,arcface", "--out", str(tmp_path / "speed"))
    rows = {r["case"]: r for r in json.loads(Path(tmp_path / "speed" / "head_speed.json").read_text())["rows"]}
    assert {"bare 3 matmuls", "magface", "arcface"} <= set(rows) and "magface" in out
    assert rows["bare 3 matmuls"]["time_ratio"] == 1.0
    assert all(r["median_ms"] > 0 and r["time_ratio"] > 0 for r in rows.values())
    own = (500 * 32 + 2 * 16 * 500) * 4   # each head call makes its centres' gradient and two [B, C] buffers
    assert all(rows[h]["peak_MiB"] * 2**20 >= own for h in ("magface", "arcface"))


def test_head_speed_charges_each_call_on_the_asked_gpu(monkeypatch):
    """The CUDA accounting, with torch.cuda faked: every call names the asked device (cuda:1), and the previous
    call's gradients are dropped before the baseline is read, so freeing them never hides the new ones."""
    from benchmarks.head_speed import Case, peak_bytes
    events = []
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.ones(3)

    def fake(name):
        return lambda device=None: events.append((name, device)) or 0
    for name in ("synchronize", "reset_peak_memory_stats", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, fake(name))
    case = Case(lambda: events.append(("run", param.grad)), [param])
    peak_bytes(case, torch.device("cuda", 1))
    names = [n for n, _ in events]
    assert names.index("memory_allocated") < names.index("run") and ("run", None) in events
    assert all(d == torch.device("cuda", 1) for n, d in events if n != "run")


def test_synthetic_data(tmp_path):
    out = run("benchmarks/synthetic_data.py", "--images", "400", "--size", "32", "--out", str(tmp_path / "s"),
              "--figures", str(tmp_path / "fig"))
    assert (tmp_path / "fig" / "synthetic_quality_grid.png").stat().st_size > 10_000 and "train quality: median" in out
    assert json.loads(Path(tmp_path / "s" / "synthetic_data.json").read_text())["images"] == 400


def test_train_speed(tmp_path):
    out = run("benchmarks/train_speed.py", "--steps", "7", "--rounds", "1", "--out", str(tmp_path / "t"),
              "--variants", "fp32,channels_last",
              *[a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"'] for a in ("--set", s)])
    assert "bare" in out and "harness" in out and "overhead" in out.lower()
    stored = json.loads(Path(tmp_path / "t" / "train_speed.json").read_text())
    assert stored["bare_images_per_s"] > 0 and stored["harness_images_per_s"] > 0
    # the step's FLOPs against the machine's GEMM peak for the run's dtype, measured in the same run
    assert stored["step_flops"] > 0 and stored["gemm_dtype"] == "float32" and stored["gemm_peak_flops"] > 1e8
    assert stored["share_of_gemm_peak"] == stored["harness_flops"] / stored["gemm_peak_flops"] > 0
    assert "MFLOP per image" in out and "% of the float32 GEMM peak" in out
    variants = stored["variants"]   # the switches side by side in the same run, as ratios to the first
    assert [v["variant"] for v in variants] == ["fp32", "channels_last"] and variants[0]["ratio"] == 1.0
    assert all(v["images_per_s"] > 0 and v["share_of_gemm_peak"] > 0 for v in variants) and "side by side" in out


def test_distributed_memory_falls_with_the_ranks(tmp_path):
    out = run("benchmarks/distributed_memory.py", "--classes", "400", "--batch", "16", "--dim", "32", "--ranks",
              "1,2", "--steps", "2", "--out", str(tmp_path / "mem"))
    rows = json.loads(Path(tmp_path / "mem" / "distributed_memory.json").read_text())["rows"]
    assert [r["centres"] for r in rows] == [400, 200]
    assert rows[1]["weight_bytes"] * 2 == rows[0]["weight_bytes"]
    assert rows[1]["logits_bytes"] * 2 == rows[0]["logits_bytes"]
    assert all(r["max_loss_gap"] < 1e-4 for r in rows) and "Glint360K" in out


def test_gpu_check_runs_its_code_path_on_the_cpu(tmp_path):
    """The prepared GPU check at tiny sizes: every phase runs, the crashed-and-resumed deterministic run equals the
    uninterrupted one bitwise, and one JSON holds it all; asking for CUDA without it names the way out."""
    out = run("benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(tmp_path / "g"),
              "--cache", str(tmp_path / "cache"))
    report = json.loads(Path(tmp_path / "g" / "gpu_check.json").read_text())
    phases = report["phases"]
    assert all(p["ok"] for p in phases.values()) and phases["train_compile"]["skipped"] == "--tiny"
    assert phases["resume"]["bitwise_equal"] and phases["resume"]["died_after_step"] == 4
    assert {"bare 3 matmuls bfloat16", "magface"} <= {r["case"] for r in phases["head_bfloat16"]["rows"]}
    assert phases["train"]["harness_images_per_s"] > 0 and 0 <= phases["evaluation"]["accuracy"] <= 1
    assert "bitwise equal" in out and (tmp_path / "g" / "head_float32" / "head_speed.json").exists()
    assert not list((tmp_path / "g").rglob("*.pt")), "the resume runs' checkpoints belong in a temporary folder"
    if not torch.cuda.is_available():
        from benchmarks import gpu_check  # in-process: no second interpreter start-up
        with pytest.raises(SystemExit, match="--device cuda, but torch.cuda.is_available\\(\\) is False"):
            gpu_check.main(["--out", str(tmp_path / "x")])


def test_train_speed_refuses_an_unknown_switch_before_any_work(refused):
    from benchmarks import train_speed  # in-process: only this test
    assert "unknown switch(es) ['bf17'] in 'bf16+bf17'" in refused(train_speed.main, "--variants", "fp32,bf16+bf17")
