"""The prepared GPU check: what the suite needs to know about a GPU, measured in one run of a few minutes.

    CUBLAS_WORKSPACE_CONFIG=:4096:8 python benchmarks/gpu_check.py --out results/gpu_check     # on one GPU
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu_check                   # same code, seconds

GPU time is scarce (a lent machine, minutes in all), so one command measures everything and a phase that fails is
recorded with its error while the others still run. Phases, in order:
1. data: the synthetic faces (112 px; 16 px with --tiny) generated or read from the cache before CUDA starts;
2. environment: card, torch, CUDA and cuDNN versions;
3. head speed (benchmarks/head_speed.py): MagFace, ArcFace and CosFace forward+backward at C = 85,742 (MS1MV2)
   against the bare matmuls, with float32 and with bfloat16 embeddings (target: <= 1.15x the bare bf16 matmuls);
4. training (benchmarks/train_speed.py): iResNet50 + MagFace, bf16 autocast, channels_last: harness against a bare
   loop with the same settings, images/s and peak memory (target: within 5 %);
5. resume: deterministic mode (train.deterministic), a run that dies right after a checkpoint (a child process that
   exits without cleanup, as a kill would) and is resumed, against an uninterrupted run: bitwise equal or not;
6. evaluation: one evaluation pass of that run;
7. training with torch.compile, timed separately (last: the slowest and least certain phase).
Writes OUT/gpu_check.json after every phase (so a run cut short keeps what it measured; each phase's own JSON in
OUT/<phase>/; the resume checkpoints in a temporary folder) and prints one table. Phases that would start after
--budget seconds are skipped. Carry a generated data cache (`--cache DIR`, 39 MB at 112 px) to spend no GPU-machine
time on generating it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # run as a script: the repo root, for the benchmarks package
from benchmarks import head_speed, train_speed  # noqa: E402 - the two measurements this check runs
from harness.bench_cli import add_dry_run, dry_run  # noqa: E402
from harness.checkpoint_io import load_checkpoint  # noqa: E402
from harness.config import RunConfig, load_config  # noqa: E402
from harness.evaluation.evaluate import evaluate_run  # noqa: E402
from harness.files import atomic_json  # noqa: E402
from harness.source import synthetic_faces  # noqa: E402
from harness.training import trainer  # noqa: E402
from harness.training.determinism import CUBLAS_ENV, CUBLAS_VALUES  # noqa: E402

CONFIG = "configs/cpu_synthetic_magface.toml"   # its MagFace head ("auto" band), on other data and backbones
DATA = {"gpu": ["data.synthetic.size=112", "data.synthetic.train_identities=100",
                "data.synthetic.train_images_per_identity=10"],
        "tiny": ["data.synthetic.size=16", "data.synthetic.train_identities=8",
                 "data.synthetic.train_images_per_identity=10"]}
EVAL_DATA = ["data.synthetic.eval_identities=20", "data.synthetic.eval_images_per_identity=4",
             "data.synthetic.pairs_per_fold=20"]
RUN = ["train.epochs=100", "train.log_every=1", "train.dump_every=0", "train.calibrate_at_epoch=0.5"]
MODEL = {"gpu": ["model.backbone=\"iresnet50\"", "model.embedding_size=512", "train.batch_size=128",
                 "train.amp=\"bf16\"", "train.channels_last=true"],
         "tiny": ["model.width=8", "model.embedding_size=16", "train.batch_size=16", "train.amp=\"bf16\""]}
RESUME_MODEL = {"gpu": ["model.backbone=\"iresnet18\"", "model.embedding_size=512", "train.batch_size=64"],
                "tiny": ["model.width=8", "model.embedding_size=16", "train.batch_size=16"]}
RESUME_STEPS, CRASH_AFTER = 10, 4     # checkpoints every 2 steps; the child dies right after the one at step 4
HEAD = {"gpu": ["--batch", "256", "--dim", "512", "--classes", "85742", "--repeats", "10",
                "--heads", "magface,arcface,cosface"],
        "tiny": ["--batch", "16", "--dim", "32", "--classes", "500", "--repeats", "2", "--warmup", "1",
                 "--heads", "magface,arcface"]}
TRAIN_STEPS = {"gpu": ("30", "2"), "tiny": ("10", "1")}   # steps per run (5 warm-up), rounds
CRASH_CODE = 17


def overrides(args, *groups) -> list[str]:
    size = "tiny" if args.tiny else "gpu"
    sets = [f'train.device="{args.device}"', f'data.cache_dir="{args.cache}"'] if args.cache else \
        [f'train.device="{args.device}"']
    for group in groups:
        sets += group[size] if isinstance(group, dict) else group
    return sets


def phase_data(args) -> dict:
    cfg = load_config(CONFIG, overrides(args, DATA, EVAL_DATA, MODEL, RUN))
    faces = synthetic_faces(cfg)
    return {"train_images": len(faces.train.labels), "size": faces.config.size}


def phase_environment(args) -> dict:
    device = torch.device(args.device)
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_GiB=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(name=f"CPU x{torch.get_num_threads()} threads", cudnn=None)
    return info


def phase_head(args, out, dtype) -> dict:
    size = "tiny" if args.tiny else "gpu"
    rows = head_speed.main([*HEAD[size], "--device", args.device, "--dtype", dtype,
                            "--out", os.path.join(out, f"head_{dtype}")])
    return {"rows": rows}


def phase_train(args, out, compile_: bool) -> dict:
    size = "tiny" if args.tiny else "gpu"
    steps, rounds = TRAIN_STEPS[size]
    sets = overrides(args, DATA, EVAL_DATA, MODEL, RUN) + ([f"train.compile={str(compile_).lower()}"])
    name = "train_compile" if compile_ else "train"
    return train_speed.main(["--config", CONFIG, "--steps", steps, "--rounds", "1" if compile_ else rounds,
                             "--out", os.path.join(out, name), *[a for s in sets for a in ("--set", s)]])


def resume_config(args, out, name) -> RunConfig:
    sets = overrides(args, DATA, EVAL_DATA, RESUME_MODEL, RUN) + [
        "train.deterministic=true", f"train.max_steps={RESUME_STEPS}", "train.checkpoint_every=2",
        f'out="{os.path.join(out, "resume", name)}"']
    return load_config(CONFIG, sets)


def _die_after_checkpoint(config: dict, step: int) -> None:
    """Child process: train, and exit without any cleanup right after the checkpoint at `step` (as a kill would)."""
    original = trainer._checkpoint

    def checkpoint_then_die(run):
        path = original(run)
        if run.global_step >= step:
            os._exit(CRASH_CODE)
        return path
    trainer._checkpoint = checkpoint_then_die
    trainer.train(RunConfig.from_dict(config), resume=False, quiet=True, evaluate=False)


def phase_resume(args, out) -> dict:
    straight, crashed = resume_config(args, out, "straight"), resume_config(args, out, "crashed")
    trainer.train(straight, resume=False, quiet=True, evaluate=False)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from benchmarks.gpu_check import "
            "_die_after_checkpoint; _die_after_checkpoint(json.loads(sys.argv[2]), int(sys.argv[3]))")
    child = subprocess.run([sys.executable, "-c", code, ROOT, json.dumps(crashed.to_dict()), str(CRASH_AFTER)],
                           cwd=ROOT, capture_output=True, text=True)
    if child.returncode != CRASH_CODE:
        raise RuntimeError(f"the child run was to die after step {CRASH_AFTER} with code {CRASH_CODE}, it exited "
                           f"with {child.returncode}: {child.stderr[-2000:]}")
    died_at = load_checkpoint(os.path.join(crashed.out, "checkpoints", "last.pt"))["global_step"]
    trainer.train(crashed, resume=True, quiet=True, evaluate=False)
    a, b = (load_checkpoint(os.path.join(c.out, "checkpoints", "final.pt")) for c in (straight, crashed))
    pairs = [(a[part][k], b[part][k]) for part in ("backbone", "head") for k in a[part]]
    differ = [k for part in ("backbone", "head") for k in a[part] if not torch.equal(a[part][k], b[part][k])]
    largest = max(float((x.double() - y.double()).abs().max()) for x, y in pairs if x.numel())
    return {"steps": RESUME_STEPS, "died_after_step": died_at, "bitwise_equal": not differ,
            "tensors_differing": len(differ), "largest_difference": largest, "run": straight.out}


def phase_evaluation(args, run_dir) -> dict:
    t0 = time.perf_counter()
    metrics = evaluate_run(run_dir, device=args.device)
    m = metrics["sets"]["synthetic"]
    return {"seconds_eval": time.perf_counter() - t0, "accuracy": m["accuracy"]}


class Check:
    """The phases run so far; gpu_check.json is rewritten after each, so a run cut short keeps what it measured."""

    def __init__(self, args, argv):
        self.args, self.results, self.t0 = args, {}, time.perf_counter()
        self.command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def run(self, name, fn) -> dict:
        """Time one phase; an exception (SystemExit too) is recorded with the end of its traceback, not raised. A
        phase that would start after --budget seconds is skipped."""
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.args.budget:
            return self.record(name, {"ok": True, "skipped": f"time budget ({elapsed:.0f} s > {self.args.budget} s)",
                                      "seconds": 0.0})
        print(f"--- {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = {"ok": True, **fn()}
        except (Exception, SystemExit) as exc:   # one failing phase must not cost the others
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc().splitlines()[-8:]}
        result["seconds"] = time.perf_counter() - t0
        return self.record(name, result)

    def record(self, name, result) -> dict:
        self.results[name] = result
        text = f"skipped ({result['skipped']})" if result.get("skipped") else summary(name, result)
        print(f"{name}: {text} [{result['seconds']:.1f} s]", flush=True)
        atomic_json(os.path.join(self.args.out, "gpu_check.json"), self.report())
        return result

    def report(self) -> dict:
        return {"device": self.results.get("environment", {}).get("name"), "command": self.command,
                "total_seconds": time.perf_counter() - self.t0, "phases": self.results}


def summary(name, r, gpu: bool = True) -> str:
    """One line per phase; the GPU targets are named only on a GPU (a CPU run checks the code path)."""
    if not r["ok"]:
        return f"FAILED: {r['error'][:90]}"
    if name == "data":
        return f"{r['train_images']} training images of {r['size']} px"
    if name == "environment":
        return f"{r['name']}, torch {r['torch']}, CUDA {r['cuda']}, cuDNN {r['cudnn']}"
    if name.startswith("head"):
        rows = {row["case"]: row for row in r["rows"]}
        key = next((k for k in rows["magface"] if k.startswith("time_ratio_")), "time_ratio")
        against = "bare fp32" if key == "time_ratio" else f"bare {key[len('time_ratio_'):]}"
        target = " (target <= 1.15x)" if key != "time_ratio" and gpu else ""
        return ", ".join(f"{h} {rows[h][key]:.2f}x" for h in rows if not h.startswith(("bare", "textbook"))) + \
            f" of {against}{target}; memory {rows['magface']['memory_ratio']:.2f}x"
    if name.startswith("train"):
        peak = f", peak {r['harness_peak_MiB']:.0f} MiB" if r.get("harness_peak_MiB") else ""
        target = ", target <= 5 %" if gpu else ""
        return (f"harness {r['harness_images_per_s']:.0f} img/s, bare {r['bare_images_per_s']:.0f} img/s "
                f"(overhead {100 * r['overhead']:+.1f} %{target}){peak}")
    if name == "resume":
        verdict = "bitwise equal" if r["bitwise_equal"] else (f"{r['tensors_differing']} tensors differ, largest "
                                                               f"{r['largest_difference']:.2e}")
        return f"died after step {r['died_after_step']} of {r['steps']}, resumed: {verdict} (deterministic)"
    if name == "evaluation":
        return f"accuracy {100 * r['accuracy']:.2f} %"
    return ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for gpu_check.json and each phase's JSON")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (the first visible GPU: pick one with CUDA_VISIBLE_DEVICES) or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the test suite's CPU run of the same code)")
    ap.add_argument("--cache", default="", help="synthetic data cache folder (default: the harness's)")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile training phase")
    ap.add_argument("--budget", type=float, default=420, help="seconds after which the remaining phases are skipped "
                                                              "(default 420: the check fits an 8-minute slot)")
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if dry_run(args):
        return None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {args.device}, but torch.cuda.is_available() is False (a CPU build of torch, or "
                 "no GPU visible); use --device cpu --tiny to check the code path")
    if device.type == "cuda" and os.environ.get(CUBLAS_ENV) not in CUBLAS_VALUES:
        os.environ[CUBLAS_ENV] = CUBLAS_VALUES[0]   # before CUDA starts in this process; children inherit it
    os.makedirs(args.out, exist_ok=True)
    check = Check(args, argv)
    check.run("data", lambda: phase_data(args))
    check.run("environment", lambda: phase_environment(args))
    check.run("head_float32", lambda: phase_head(args, args.out, "float32"))
    check.run("head_bfloat16", lambda: phase_head(args, args.out, "bfloat16"))
    check.run("train", lambda: phase_train(args, args.out, compile_=False))
    with tempfile.TemporaryDirectory() as scratch:   # the checkpoints stay out of OUT: it keeps JSON only
        resume = check.run("resume", lambda: phase_resume(args, scratch))
        if resume["ok"] and not resume.get("skipped"):
            check.run("evaluation", lambda: phase_evaluation(args, resume["run"]))
    if args.tiny or args.skip_compile:   # last: the slowest and least certain phase
        check.record("train_compile", {"ok": True, "skipped": "--tiny" if args.tiny else "--skip-compile",
                                       "seconds": 0.0})
    else:
        check.run("train_compile", lambda: phase_train(args, args.out, compile_=True))
    report = check.report()
    print(f"\nGPU check on {report['device']}: {report['total_seconds']:.0f} s in all")
    print(f"{'phase':<15}{'seconds':>9}  result")
    for name, r in check.results.items():
        text = f"skipped ({r['skipped']})" if r.get("skipped") else summary(name, r, device.type == "cuda")
        print(f"{name:<15}{r['seconds']:>9.1f}  {text}")
    if device.type != "cuda":
        print("on the CPU this checks the code path only: the GPU targets (heads <= 1.15x the bare bf16 matmuls, "
              "training within 5 % of a bare loop) do not apply to these numbers")
    print(f"wrote {os.path.join(args.out, 'gpu_check.json')}")
    failed = [name for name, r in check.results.items() if not r["ok"]]
    if failed:
        raise SystemExit(f"failed phases: {', '.join(failed)} (errors and tracebacks in gpu_check.json)")
    return report


if __name__ == "__main__":
    main()
