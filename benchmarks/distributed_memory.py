"""Memory of the class-centre part per rank with the centres sharded over N ranks (gloo, CPU processes).

For N = 1 (the plain single-process head), 2 and 4 ranks, each rank runs a few forward/backward steps of a MagFace
head on a global batch and reports the bytes of the tensors that dominate face recognition: its centre shard, the
centres' gradient (SGD's momentum buffer is the same size again) and its logit block [B, C/N]; plus the median
step time. Then the same arithmetic at the sizes of MS1MV2 and Glint360K on 8 GPUs.

    python benchmarks/distributed_memory.py                     # C = 85,742 (MS1MV2), B = 256, d = 512
    python benchmarks/distributed_memory.py --classes 20000 --ranks 1,2
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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
from losses import build_head
from losses.distributed import DistributedHead

MB = 2 ** 20


def rank_main(rank, world, store, out_dir, classes, batch, dim, steps):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(0)
    head = build_head("magface", classes, dim, s=64.0)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=300))
        head = DistributedHead(head, shard=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, dim, generator=g) * 20.0
    labels = torch.randint(0, classes, (batch,), generator=g)
    b = batch // world
    mine = x[rank * b:(rank + 1) * b]
    times = []
    for _ in range(steps):
        emb = mine.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = head(emb, labels[rank * b:(rank + 1) * b])
        out.loss.backward()
        times.append(time.perf_counter() - t0)
        logits_bytes = out.logits.numel() * out.logits.element_size()
        head.zero_grad(set_to_none=False)
    w = head.weight
    row = {"rank": rank, "world": world, "centres": w.shape[0], "weight_bytes": w.numel() * w.element_size(),
           "grad_bytes": w.grad.numel() * w.grad.element_size(), "logits_bytes": logits_bytes,
           "step_s": statistics.median(times[1:] or times), "loss": out.loss.item()}
    with open(os.path.join(out_dir, f"r{world}_{rank}.json"), "w") as f:
        json.dump(row, f)
    if world > 1:
        dist.destroy_process_group()


def expected(classes, global_batch, world, dim=512, bytes_per=4):
    """Bytes per GPU of centres + gradient + momentum, and of the logits and their gradient (fp32)."""
    shard = -(-classes // world)
    return 3 * shard * dim * bytes_per, 2 * global_batch * shard * bytes_per


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=85742)
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--ranks", type=comma_list(int), default=[1, 2, 4], help="process counts (default 1,2,4)")
    ap.add_argument("--steps", type=int, default=4)
    add_output_args(ap, "distributed_memory", figures=False)
    add_publish_args(ap)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    ranks = args.ranks
    bad = [n for n in ranks if n < 1 or args.batch % n or n > args.classes]
    if bad:
        raise SystemExit(f"error: rank counts {bad} must be >= 1, divide --batch {args.batch} and not exceed "
                         f"--classes {args.classes}")
    if dry_run(args):
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in ranks:
            mp.start_processes(rank_main, args=(n, os.path.join(tmp, f"store{n}"), tmp, args.classes, args.batch,
                                                args.dim, args.steps), nprocs=n, start_method="spawn")
            per_rank = [json.loads(Path(os.path.join(tmp, f"r{n}_{r}.json")).read_text()) for r in range(n)]
            worst = max(per_rank, key=lambda r: r["weight_bytes"] + r["logits_bytes"])
            reference = (rows[0] if rows else per_rank[0])["loss"]
            rows.append({**worst, "ranks": n, "max_loss_gap": max(abs(r["loss"] - reference)
                                                                   for r in per_rank)})
    base = rows[0]
    print(f"MagFace head, C={args.classes:,} classes, d={args.dim}, global batch {args.batch}, fp32; per rank "
          f"(the largest shard), {args.steps} steps, gloo on {os.cpu_count()} CPU cores")
    print(f"{'ranks':>5}{'centres':>9}{'weight MB':>11}{'grad MB':>9}{'logits MB':>11}{'x N=1':>8}"
          f"{'step ms':>9}{'|loss - loss(N=1)|':>20}")
    for r in rows:
        part = r["weight_bytes"] + r["grad_bytes"] + r["logits_bytes"]
        ratio = part / (base["weight_bytes"] + base["grad_bytes"] + base["logits_bytes"])
        r["ratio_to_one"] = ratio
        print(f"{r['ranks']:>5}{r['centres']:>9,}{r['weight_bytes'] / MB:>11.1f}{r['grad_bytes'] / MB:>9.1f}"
              f"{r['logits_bytes'] / MB:>11.1f}{ratio:>8.3f}{1000 * r['step_s']:>9.1f}{r['max_loss_gap']:>20.1e}")
    print("\nExpected per GPU at real sizes (fp32 centres + gradient + momentum; logits + their gradient), "
          "global batch 128 x 8:")
    print(f"{'data set':<12}{'classes':>9}{'GPUs':>6}{'centres MB':>12}{'logits MB':>11}")
    for name, c in (("MS1MV2", 85742), ("Glint360K", 360232)):
        for n in (1, 8):
            w_bytes, l_bytes = expected(c, 1024, n)
            print(f"{name:<12}{c:>9,}{n:>6}{w_bytes / MB:>12.0f}{l_bytes / MB:>11.0f}")
    out = output_dir(args, "distributed_memory")
    atomic_json(os.path.join(out, "distributed_memory.json"), {"args": vars(args), "rows": rows})
    print(f"\nwrote {out}/distributed_memory.json")
    publish_output(args, out)


if __name__ == "__main__":
    main()
