"""What an elementwise branch costs on this machine: torch.where, masked_fill_ and bool masks against the float
arithmetic of losses/branchfree.py, on one row chunk of the fused classifier (13 x 20000 floats by default).

Why it exists: the heads that reshape their negatives run several branches per chunk, and the choice of
losses/branchfree.py rests on these ratios. Cases are interleaved in a shuffled order each round; medians. The
last row is a caution: two fresh temporaries of a chunk's size alive at once cost more than any branch here (on
glibc a freed block of this size goes back to the system, so the next one page-faults), so the head_speed
benchmark, not this table, is the measure of a head.

    python benchmarks/branch_cost.py                  # 13 x 20000, float32, the CPU
    python benchmarks/branch_cost.py --rows 64 --columns 85742
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from harness.bench_cli import add_dry_run, dry_run
from losses.branchfree import above


def cases(rows: int, columns: int) -> dict:
    """Each case writes into preallocated buffers where it can, so the table shows the arithmetic; the last case
    shows what fresh temporaries of this size cost on top (the allocator's page faults, not the arithmetic)."""
    gen = torch.Generator().manual_seed(0)
    c = torch.rand(rows, columns, generator=gen) * 2 - 1
    other = torch.rand(rows, columns, generator=gen)
    bound = torch.rand(rows, 1, generator=gen) - 0.5
    mask_bool = c > bound
    mask_float = above(c, bound)
    out, tmp, flags = torch.empty_like(c), torch.empty_like(c), torch.empty_like(mask_bool)

    def select_into():   # branchfree.select's arithmetic: b * (1 - mask) + mask * a
        torch.mul(other, torch.sub(1.0, mask_float, out=tmp), out=out)
        return out.addcmul_(mask_float, c)

    def above_into():    # branchfree.above's arithmetic: sign(x - bound) clamped at 0
        return torch.sub(c, bound, out=out).sign_().clamp_(min=0.0)
    return {
        "multiply (the unit)": lambda: torch.mul(c, 2.0, out=out),
        "comparison into bool (c > b)": lambda: torch.gt(c, bound, out=flags),
        "bool mask -> float": lambda: out.copy_(mask_bool),
        "torch.where(mask, a, b)": lambda: torch.where(mask_bool, c, other, out=out),
        "masked_fill_": lambda: out.copy_(other).masked_fill_(mask_bool, 1.0),
        "branchfree.above": above_into,
        "branchfree.select": select_into,
        "two fresh temporaries alive": lambda: (c * 2.0) * (other * 2.0),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=13, help="rows of the chunk (fused.chunk_rows gives 13 at C = 20000)")
    p.add_argument("--columns", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=15, help="timed rounds (median reported)")
    p.add_argument("--calls", type=int, default=50, help="calls of a case per round")
    add_dry_run(p)
    args = p.parse_args(argv)
    if args.rows < 1 or args.columns < 1 or args.repeats < 1 or args.calls < 1:
        p.error("--rows, --columns, --repeats and --calls must be positive integers")
    if dry_run(args):
        return
    table = cases(args.rows, args.columns)
    times = {name: [] for name in table}
    order = list(table)
    rng = random.Random(0)
    for _ in range(2):                        # warm-up
        for f in table.values():
            f()
    for _ in range(args.repeats):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            for _ in range(args.calls):
                table[name]()
            times[name].append((time.perf_counter() - t0) / args.calls)
    unit = statistics.median(times["multiply (the unit)"])
    print(f"{args.rows} x {args.columns} float32, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.repeats} rounds, medians")
    print(f"{'case':<34}{'us':>10}{'x multiply':>12}")
    for name in table:
        med = statistics.median(times[name])
        print(f"{name:<34}{1e6 * med:>10.1f}{med / unit:>12.1f}")


if __name__ == "__main__":
    main()
