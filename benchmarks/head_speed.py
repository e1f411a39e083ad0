"""Forward+backward time and peak memory of every head, as ratios to the bare class-centre matmuls.

The bare cost is what any classifier over C centres must pay: logits = x @ W^T, then grad_x = G @ W and
grad_W = G^T @ x. Cases are interleaved in a shuffled order each round so machine noise hits all alike;
the table reports medians. Each head is held to its family's target: a head that only changes the target logit
<= 1.10x the bare matmuls, one that reshapes the negatives (several elementwise passes per logit) <= 1.35x, one with
K centres per class <= 1.10x the bare matmuls over K*C centres; every head's peak memory <= 1.10x its baseline's.
A textbook (unfused) ArcFace is timed beside them as a reference point, under the same
autocast dtype as the heads. With --dtype bfloat16/float16 the embeddings arrive in that dtype and the heads compute
in float32 (their numerics contract), so the bare matmuls are timed in both precisions and both ratios are printed.

    python benchmarks/head_speed.py                          # CPU, B=256, d=512, C=20000, float32
    python benchmarks/head_speed.py --device cuda --dtype bfloat16
    python benchmarks/head_speed.py --heads magface,arcface --classes 85742 --out results/head_speed_ms1mv2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from harness.bench_cli import (
    add_dry_run,
    add_output_args,
    add_publish_args,
    comma_list,
    dry_run,
    output_dir,
    publish_output,
)
from harness.files import atomic_json
from losses import HEADS, build_head


def bare_step(x, weight, labels):
    """Forward and backward matmuls of a plain linear classifier (x and W as given: no graph, no gradients kept)."""
    logits = torch.mm(x, weight.t())
    grad = torch.empty_like(logits).fill_(1.0 / x.shape[0])
    return torch.mm(grad, weight), torch.mm(grad.t(), x)


def textbook_arcface(x, weight, labels, s=64.0, m=0.5):
    """The common unfused way: normalise both, one-hot mask, margin on a [B, C] copy, cross-entropy."""
    cos = F.linear(F.normalize(x), F.normalize(weight)).clamp(-1 + 1e-7, 1 - 1e-7)
    sin = torch.sqrt(1.0 - cos * cos)
    phi = cos * math.cos(m) - sin * math.sin(m)
    phi = torch.where(cos > math.cos(math.pi - m), phi, cos - m * math.sin(m))
    one_hot = torch.zeros_like(cos).scatter_(1, labels[:, None], 1.0)
    logits = s * (one_hot * phi + (1.0 - one_hot) * cos)
    return F.cross_entropy(logits, labels)


class Case:
    """One timed case: `reset` (drop the previous call's gradients) runs outside the timed and measured region,
    so each call is charged for the gradient it creates and never credited with freeing the last one."""

    def __init__(self, run, grads_of=()):
        self.run, self.grads_of = run, grads_of

    def reset(self):
        for t in self.grads_of:
            t.grad = None


def make_cases(args, device):
    B, d, C = args.batch, args.dim, args.classes
    gen = torch.Generator().manual_seed(0)
    x32 = (torch.randn(B, d, generator=gen) * 20).to(device)
    labels = torch.randint(0, C, (B,), generator=gen).to(device)
    emb_dtype = getattr(torch, args.dtype)
    low_precision = emb_dtype != torch.float32
    weight = torch.randn(C, d, generator=gen).to(device).requires_grad_()
    cases = {"bare 3 matmuls": Case(lambda: bare_step(x32, weight.detach(), labels))}
    if low_precision:   # what a classifier costs when its matmuls run in the backbone's precision
        x_low, w_low = x32.to(emb_dtype), weight.detach().to(emb_dtype)
        cases[f"bare 3 matmuls {args.dtype}"] = Case(lambda: bare_step(x_low, w_low, labels))

    def textbook():
        x = x32.to(emb_dtype).requires_grad_()
        with torch.autocast(device_type=device.type, dtype=emb_dtype, enabled=low_precision):
            loss = textbook_arcface(x.float(), weight, labels)
        loss.backward()
    cases["textbook arcface (unfused)"] = Case(textbook, [weight])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in sorted({HEADS[n](3, 2).centres_per_class for n in args.heads} - {1}):   # the bare cost of K*C
            w_k = torch.randn(k * C, d, generator=gen).to(device)
            cases[f"bare 3 matmuls K={k}"] = Case(lambda w_k=w_k: bare_step(x32, w_k, labels))
        for name in args.heads:
            params = {"sample_rate": args.sample_rate} if args.sample_rate < 1 else {}
            head = build_head(name, C, d, **params).to(device).train()

            def run(head=head):
                x = x32.to(emb_dtype).requires_grad_()
                with torch.autocast(device_type=device.type, dtype=emb_dtype, enabled=low_precision):
                    out = head(x, labels)
                out.loss.backward()
            cases[name] = Case(run, list(head.parameters()))
    return cases


def target_of(name: str) -> tuple[str, float]:
    """(the baseline case, the time-ratio target) of a head's family (see the module docstring)."""
    head = HEADS[name](3, 2)
    if head.centres_per_class > 1:
        return f"bare 3 matmuls K={head.centres_per_class}", 1.10
    return "bare 3 matmuls", 1.35 if head.negative_logit is not None else 1.10


MEMORY_TARGET = 1.10


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(case: Case, device) -> int:
    """Peak bytes allocated while the case runs, above what was allocated before it (after its reset)."""
    case.reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        case.run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        case.run()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    if not totals:
        return 0
    first = next(e["args"] for e in events if e.get("name") == "[memory]")
    start = first["Total Allocated"] - first["Bytes"]
    return int(max(totals) - start)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the incoming embeddings (autocast on); heads compute in float32")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=15, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sample-rate", type=float, default=1.0, help="Partial FC sample rate for the heads")
    p.add_argument("--heads", type=comma_list(str), default=list(HEADS), help=f"subset of {','.join(HEADS)}")
    add_output_args(p, "head_speed", figures=False)
    add_publish_args(p)
    add_dry_run(p)
    args = p.parse_args(argv)
    unknown = [h for h in args.heads if h not in HEADS]
    if unknown:
        p.error(f"--heads: unknown {unknown}; valid heads: {', '.join(HEADS)}")
    return args


def timed_rounds(cases: dict, repeats: int, warmup: int, device) -> dict:
    """{case: [seconds per round]}: every case once per round, in a shuffled (seeded) order, after warm-up rounds."""
    for _ in range(warmup):
        for case in cases.values():
            case.reset()
            case.run()
    times = {name: [] for name in cases}
    order = list(cases)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            cases[name].reset()
            sync(device)
            t0 = time.perf_counter()
            cases[name].run()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def table_rows(cases, times, peaks, dtype) -> list:
    """One row per case: median time and peak memory, as ratios to the bare matmuls and, for a head, to its
    family's baseline with its target."""
    base_t = statistics.median(times["bare 3 matmuls"])
    base_m = peaks["bare 3 matmuls"]
    low = f"bare 3 matmuls {dtype}"
    rows = []
    for name in cases:
        med = statistics.median(times[name])
        row = {"case": name, "median_ms": 1e3 * med, "time_ratio": med / base_t,
               "peak_MiB": peaks[name] / 2**20, "memory_ratio": peaks[name] / base_m}
        if name in HEADS:
            baseline, target = target_of(name)
            ratio = med / statistics.median(times[baseline])
            memory = peaks[name] / peaks[baseline]
            row.update(baseline=baseline, family_ratio=ratio, time_target=target, family_memory_ratio=memory,
                       met=bool(ratio <= target and memory <= MEMORY_TARGET))
        if low in times:
            row[f"time_ratio_{dtype}"] = med / statistics.median(times[low])
        rows.append(row)
    return rows


def print_table(args, rows, where, extra: bool) -> None:
    print(f"head forward+backward vs bare matmuls: B={args.batch} d={args.dim} C={args.classes} "
          f"embeddings {args.dtype}, sample_rate {args.sample_rate}, {args.repeats} rounds, {where}, "
          f"torch {torch.__version__}")
    label = f"vs {args.dtype}" if extra else ""
    print(f"{'case':<30}{'median ms':>11}{'time ratio':>12}{label:>18}{'peak MiB':>10}{'mem ratio':>11}"
          f"   vs its baseline (time, memory; targets)")
    for r in rows:
        vs_low = f"{r[f'time_ratio_{args.dtype}']:.2f}" if extra else ""
        family = ""
        if "baseline" in r:
            family = (f"   {r['family_ratio']:.2f} <= {r['time_target']:.2f}?, {r['family_memory_ratio']:.2f} <= "
                      f"{MEMORY_TARGET:.2f}? {'met' if r['met'] else 'MISSED'}"
                      + (f" (vs {r['baseline']})" if r["baseline"] != "bare 3 matmuls" else ""))
        print(f"{r['case']:<30}{r['median_ms']:>11.1f}{r['time_ratio']:>12.2f}{vs_low:>18}{r['peak_MiB']:>10.1f}"
              f"{r['memory_ratio']:>11.2f}{family}")


def main(argv=None):
    args = parse_args(argv)
    if dry_run(args):
        return []
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device} asked for, but torch.cuda.is_available() is False")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        sys.exit(f"--device {args.device}: only {torch.cuda.device_count()} GPU(s) visible")
    torch.manual_seed(0)
    cases = make_cases(args, device)
    times = timed_rounds(cases, args.repeats, args.warmup, device)
    peaks = {name: peak_bytes(case, device) for name, case in cases.items()}
    rows = table_rows(cases, times, peaks, args.dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print_table(args, rows, where, f"bare 3 matmuls {args.dtype}" in times)
    out = output_dir(args, "head_speed")
    atomic_json(os.path.join(out, "head_speed.json"), {"args": vars(args), "device": where, "rows": rows})
    print(f"wrote {out}/head_speed.json")
    publish_output(args, out)
    return rows


if __name__ == "__main__":
    main()
