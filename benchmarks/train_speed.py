"""Training throughput of the harness against a bare hand-written PyTorch loop over the same model, head and
in-memory data. The two alternate (harness, bare, harness, bare, ...) so machine noise hits both; the table
reports medians of images/s over the steady-state steps and the harness overhead. Beside them: the FLOPs of one
training step (torch.utils.flop_counter: forward and backward of backbone and head) and the machine's GEMM peak
for the dtype the run computes in (a large matmul timed between the rounds), so the achieved FLOP/s and its share of
that peak say how far the step is from the machine's limit.

    python benchmarks/train_speed.py                          # CPU default model on 32-px synthetic faces
    python benchmarks/train_speed.py --device cuda --set train.amp=\\"bf16\\" --set model.backbone=\\"iresnet50\\" \\
        --set data.synthetic.size=112
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.bench_cli import add_dry_run, add_output_args, comma_list, dry_run, output_dir
from harness.config import load_config
from harness.data import batch_to_tensor, random_hflip
from harness.devices import pick_device
from harness.files import atomic_json
from harness.models.build import build_model
from harness.source import synthetic_faces
from harness.training.determinism import determinism
from harness.training.trainer import train

WARMUP = 5      # steps left out of the medians
LOG_EVERY = 5   # the harness's metrics interval here


def bare_loop(cfg, faces, steps: int, device) -> list[float]:
    """The minimal loop with the same settings as the harness run (autocast dtype with fp16's loss scaler,
    channels_last, torch.compile, gradient clipping): batch -> backbone -> head -> backward -> SGD step. The uint8
    pixels go to the device first and are converted there, as a careful hand-written loop would. Seconds per step."""
    torch.manual_seed(0)
    backbone, head = build_model(cfg, faces.num_classes, faces.config.size)
    backbone.to(device).train()
    head.to(device).train()
    t = cfg.train
    if t.channels_last:
        backbone.to(memory_format=torch.channels_last)
    model = torch.compile(backbone) if t.compile else backbone
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    dtype = torch.float16 if t.amp == "fp16" else torch.bfloat16
    images, labels = torch.from_numpy(faces.train.images), torch.as_tensor(faces.train.labels)
    B = t.batch_size
    order = torch.randperm(len(labels))
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        start = (step % (len(labels) // B)) * B    # wraps around like epochs when steps * B > N
        idx = order[start:start + B]
        x = random_hflip(batch_to_tensor(images[idx].to(device, non_blocking=True)))
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=t.amp != "none"):
            emb = model(x)
        loss = head(emb, y).loss
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(list(backbone.parameters()) + (list(head.parameters()) if
                                           cfg.optim.clip_head else []), cfg.optim.grad_clip)
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


PEAK_N = 1536   # the side of the square matmuls that measure the GEMM peak (2 * PEAK_N^3 FLOPs each)


def step_flops(cfg, faces, device) -> int:
    """FLOPs of one training step of the bare loop's model (forward and backward of backbone and head on one
    batch, under the run's autocast), as torch.utils.flop_counter counts them (matmuls and convolutions)."""
    torch.manual_seed(0)
    backbone, head = build_model(cfg, faces.num_classes, faces.config.size)
    backbone.to(device).train()
    head.to(device).train()
    B = cfg.train.batch_size
    x = batch_to_tensor(torch.from_numpy(faces.train.images[:B]).to(device))
    y = torch.as_tensor(faces.train.labels[:B]).to(device)
    dtype = torch.float16 if cfg.train.amp == "fp16" else torch.bfloat16
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=cfg.train.amp != "none"):
            emb = backbone(x)
        head(emb, y).loss.backward()
    return counter.get_total_flops()


def gemm_seconds(dtype: torch.dtype, device, repeats: int = 5) -> float:
    """Median seconds of a PEAK_N x PEAK_N matmul in `dtype` on `device` (after one warm-up)."""
    a = torch.randn(PEAK_N, PEAK_N, device=device).to(dtype)
    b = torch.randn(PEAK_N, PEAK_N, device=device).to(dtype)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


GEMM_DTYPES = {"none": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}   # train.amp -> GEMM dtype
SWITCHES = {"bf16": 'train.amp="bf16"', "channels_last": "train.channels_last=true", "compile": "train.compile=true"}


def variant_sets(name: str) -> list:
    """The overrides of a --variants entry: "fp32" (none) or switches joined by "+" (e.g. bf16+compile)."""
    if name == "fp32":
        return []
    parts = name.split("+")
    unknown = [p for p in parts if p not in SWITCHES]
    if unknown:
        raise ValueError(f"--variants: unknown switch(es) {unknown} in {name!r}; expected fp32 or switches joined by "
                         f"'+' from {sorted(SWITCHES)}")
    return [SWITCHES[p] for p in parts]


def compare_variants(args, faces, device, flops: int) -> list:
    """The harness's images/s for every --variants entry, interleaved round by round in this one run (machine
    noise hits all of them), each as a ratio to the first entry and as its share of its dtype's GEMM peak (timed
    before each of its runs)."""
    times, gemm = {n: [] for n in args.variants}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in args.variants:
                cfg = load_config(args.config, args.set + variant_sets(name))
                gemm.setdefault(cfg.train.amp, []).append(gemm_seconds(GEMM_DTYPES[cfg.train.amp], device))
                times[name] += harness_run(cfg, faces, args.steps, f"{tmp}/{name}-{r}", device)[0]
    B = load_config(args.config, args.set).train.batch_size
    base = B / statistics.median(times[args.variants[0]])
    rows = []
    for name in args.variants:
        amp = load_config(args.config, args.set + variant_sets(name)).train.amp
        ips = B / statistics.median(times[name])
        peak = 2 * PEAK_N**3 / statistics.median(gemm[amp])
        rows.append({"variant": name, "images_per_s": ips, "ratio": ips / base,
                     "gemm_dtype": str(GEMM_DTYPES[amp]).split(".")[-1], "gemm_peak_flops": peak,
                     "share_of_gemm_peak": flops * ips / B / peak})
    print(f"\nvariants, side by side ({args.rounds} interleaved rounds; ratio to {args.variants[0]}):")
    print(f"{'variant':<24}{'images/s':>10}{'ratio':>8}{'share of its GEMM peak':>25}")
    for r in rows:
        print(f"{r['variant']:<24}{r['images_per_s']:>10.1f}{r['ratio']:>8.2f}"
              f"{100 * r['share_of_gemm_peak']:>16.0f} % ({r['gemm_dtype']})")
    return rows


def harness_run(cfg, faces, steps: int, out: str, device) -> tuple[list[float], int | None]:
    """(seconds per step after the warm-up, peak GPU bytes of the run or None on the CPU) of a harness training
    run. Logged every LOG_EVERY steps, as a real run logs (each row's images/s averages its interval): logging every
    step would charge the harness a metrics row per step that no run pays."""
    cfg.out = out
    cfg.train.max_steps = steps
    steps_per_epoch = len(faces.train.labels) // cfg.train.batch_size   # an "auto" band is measured in the warm-up
    cfg.train.calibrate_at_epoch = min(cfg.train.calibrate_at_epoch, WARMUP / steps_per_epoch)
    cfg.train.log_every = LOG_EVERY
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train(cfg, resume=False, faces=faces, quiet=True, evaluate=False)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [cfg.train.batch_size / r["images_per_s"] for r in rows if r["step"] > WARMUP], peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/cpu_synthetic_magface.toml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any harness override")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where both loops train (train.device)")
    ap.add_argument("--steps", type=int, default=40, help=f"steps per run (the first {WARMUP} are warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", type=comma_list(str), default=[],
                    help="also compare training switches side by side, e.g. fp32,bf16,channels_last,bf16+compile "
                         f"(switches: {', '.join(SWITCHES)})")
    add_output_args(ap, "train_speed", figures=False)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if args.steps <= WARMUP:
        raise SystemExit(f"error: --steps {args.steps}: need more than the {WARMUP} warm-up steps")
    if args.device:
        args.set.append(f'train.device="{args.device}"')
    try:
        cfg = load_config(args.config, args.set)
        for name in args.variants:
            variant_sets(name)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if dry_run(args):
        return
    device = pick_device(cfg.train.device)
    faces = synthetic_faces(cfg)
    harness_t, bare_t, peaks, gemm_t = [], [], [], []
    gemm_dtype = GEMM_DTYPES[cfg.train.amp]
    flops = step_flops(cfg, faces, device)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            gemm_t.append(gemm_seconds(gemm_dtype, device))
            times, peak = harness_run(load_config(args.config, args.set), faces, args.steps, f"{tmp}/run{r}", device)
            harness_t += times
            peaks.append(peak)
            with determinism(cfg.train.deterministic, device):   # the harness's cuDNN settings for the bare loop too
                bare_t += bare_loop(cfg, faces, args.steps, device)[WARMUP:]
    B = cfg.train.batch_size
    h, b = B / statistics.median(harness_t), B / statistics.median(bare_t)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    t = cfg.train
    print(f"training throughput: {cfg.model.backbone} + {cfg.head.name}, batch {B}, {faces.config.size}-px "
          f"synthetic, amp={t.amp}, channels_last={t.channels_last}, compile={t.compile}, {args.rounds} "
          f"alternating rounds x {args.steps - WARMUP} steady steps, {where}, torch {torch.__version__}")
    print(f"{'loop':<10}{'images/s (median)':>20}")
    print(f"{'bare':<10}{b:>20.1f}")
    print(f"{'harness':<10}{h:>20.1f}")
    print(f"harness overhead: {100 * (b / h - 1):+.1f}% (target <= 5%)")
    peak_flops = 2 * PEAK_N**3 / statistics.median(gemm_t)
    achieved = flops * h / B
    print(f"one step: {flops / 1e9:.2f} GFLOP ({flops / B / 1e6:.0f} MFLOP per image); harness {achieved / 1e9:.1f} "
          f"GFLOP/s = {100 * achieved / peak_flops:.0f} % of the {str(gemm_dtype).split('.')[-1]} GEMM peak "
          f"({peak_flops / 1e9:.0f} GFLOP/s, {PEAK_N}x{PEAK_N} matmuls timed between the rounds)")
    peak = max(peaks) if peaks[0] is not None else None
    if peak is not None:
        print(f"harness peak GPU memory: {peak / 2**20:.0f} MiB")
    out = output_dir(args, "train_speed")
    result = {"args": vars(args), "device": where, "bare_images_per_s": b, "harness_images_per_s": h,
              "overhead": b / h - 1, "harness_peak_MiB": None if peak is None else peak / 2**20,
              "step_flops": flops, "gemm_dtype": str(gemm_dtype).split(".")[-1], "gemm_peak_flops": peak_flops,
              "harness_flops": achieved, "share_of_gemm_peak": achieved / peak_flops}
    if args.variants:
        result["variants"] = compare_variants(args, faces, device, flops)
    atomic_json(os.path.join(out, "train_speed.json"), result)
    print(f"wrote {out}/train_speed.json")
    return result


if __name__ == "__main__":
    main()
