"""Training throughput of the harness against a bare hand-written PyTorch loop over the same model, head and
in-memory data. The two alternate (harness, bare, harness, bare, ...) so machine noise hits both; the table
reports medians of images/s over the steady-state steps and the harness overhead.

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

from harness.cli import add_dry_run, dry_run, add_output_args, output_dir
from harness.config import load_config
from harness.data import batch_to_tensor, random_hflip
from harness.data_source import synthetic_faces
from harness.runstate import atomic_json, build_model, pick_device
from harness.trainer import train


def bare_loop(cfg, faces, steps: int, device) -> list[float]:
    """The minimal loop: batch -> backbone -> head -> backward -> SGD step. Returns seconds per step."""
    torch.manual_seed(0)
    backbone, head = build_model(cfg, faces.num_classes, faces.config.size)
    backbone.to(device).train()
    head.to(device).train()
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    images, labels = faces.train.images, torch.as_tensor(faces.train.labels)
    B = cfg.train.batch_size
    order = torch.randperm(len(labels))
    amp = cfg.train.amp
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        start = (step % (len(labels) // B)) * B    # wraps around like epochs when steps * B > N
        idx = order[start:start + B]
        x = random_hflip(batch_to_tensor(images[idx.numpy()])).to(device)
        y = labels[idx].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            emb = backbone(x)
        loss = head(emb, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def harness_run(cfg, faces, steps: int, out: str) -> list[float]:
    cfg.out = out
    cfg.train.max_steps = steps
    cfg.train.log_every = 1
    train(cfg, resume=False, faces=faces, quiet=True, evaluate=False)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [cfg.train.batch_size / r["images_per_s"] for r in rows]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/cpu_synthetic_magface.toml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any harness override")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where both loops train (train.device)")
    ap.add_argument("--steps", type=int, default=40, help="steps per run (the first 5 are warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    add_output_args(ap, "train_speed", figures=False)
    add_dry_run(ap)
    args = ap.parse_args(argv)
    if args.device:
        args.set.append(f'train.device="{args.device}"')
    try:
        cfg = load_config(args.config, args.set)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    if dry_run(args):
        return
    device = pick_device(cfg.train.device)
    faces = synthetic_faces(cfg)
    harness_t, bare_t = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            harness_t += harness_run(load_config(args.config, args.set), faces, args.steps, f"{tmp}/run{r}")[5:]
            bare_t += bare_loop(cfg, faces, args.steps, device)[5:]
    B = cfg.train.batch_size
    h, b = B / statistics.median(harness_t), B / statistics.median(bare_t)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"training throughput: {cfg.model.backbone} + {cfg.head.name}, batch {B}, {faces.config.size}-px "
          f"synthetic, amp={cfg.train.amp}, {args.rounds} alternating rounds x {args.steps - 5} steady steps, "
          f"{where}, torch {torch.__version__}")
    print(f"{'loop':<10}{'images/s (median)':>20}")
    print(f"{'bare':<10}{b:>20.1f}")
    print(f"{'harness':<10}{h:>20.1f}")
    print(f"harness overhead: {100 * (b / h - 1):+.1f}% (target <= 10%)")
    out = output_dir(args, "train_speed")
    atomic_json(os.path.join(out, "train_speed.json"), {"args": vars(args), "device": where, "bare_images_per_s": b,
                                                        "harness_images_per_s": h, "overhead": b / h - 1})
    print(f"wrote {out}/train_speed.json")


if __name__ == "__main__":
    main()
