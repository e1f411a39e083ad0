"""One trainer for every head: same backbone, data, schedule and preprocessing, so heads are comparable.

Resume is exact: a checkpoint holds backbone, head (with AdaFace's running statistics), optimizer, grad scaler,
the position in the data order and every RNG state; the batch order and flips are functions of (seed, epoch,
step) and the learning rate is closed-form, so a killed and resumed run ends bitwise where an uninterrupted one
does (on the CPU). A non-finite loss stops the run and names the last good checkpoint, which stays intact.

Under torchrun (WORLD_SIZE > 1) the backbone is wrapped in DDP, the head in losses.distributed.DistributedHead
(class centres sharded over the ranks unless train.shard_centres is false), each rank trains on its rows of the
single-process global batch, and each rank writes its own checkpoint (see harness/checkpoints.py); final.pt
holds the gathered head and opens in a single process.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from .checkpoints import CheckpointStore
from .config import RunConfig, validate
from .data_source import TrainSource, synthetic_faces
from .runstate import (atomic_json, build_model, environment, load_checkpoint, pick_device, rng_state,
                       save_checkpoint, set_rng_state)
from .schedule import learning_rate


class TrainingDiverged(RuntimeError):
    pass


def feasibility_line(head) -> str | None:
    """MagFace's start-up check (as the official trainer prints), with the actual s."""
    if not hasattr(head, "lambda_g_min"):
        return None
    ok = head.lambda_g >= head.lambda_g_min
    return (f"lambda_g check: bound s*k*u_a^2*l_a^2/(u_a^2-l_a^2) = {head.lambda_g_min:.4f} for s={head.s:g}; "
            f"lambda_g = {head.lambda_g:g} -> {'OK' if ok else 'BELOW THE BOUND: the convergence theorem does not hold'}")


def _autocast(device, amp):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _target_probability(out) -> torch.Tensor:
    """Softmax probability of the own class (with the margin): exp(-cross-entropy)."""
    return torch.exp(-out.per_sample_loss.detach())


class MetricsLog:
    """metrics.jsonl (one row per log step), rewritten as metrics.csv at the end; rows past a resume point
    (left by a killed run) are dropped so the log matches the resumed state."""

    def __init__(self, run_dir: str, resume_step: int):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        rows = []
        if os.path.isfile(self.path):
            with open(self.path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            rows = [r for r in rows if r["step"] <= resume_step]
            with open(self.path + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            os.replace(self.path + ".tmp", self.path)
        self.file = open(self.path, "a")
        try:  # TensorBoard when installed (pip install tensorboard); the JSONL/CSV log is always written
            from torch.utils.tensorboard import SummaryWriter
            self.board = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            self.board = None

    def write(self, row: dict):
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(key, value, row["step"])

    def close(self):
        self.file.close()
        if self.board is not None:
            self.board.close()
        with open(self.path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            tmp = self.path.replace(".jsonl", ".csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, keys)
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, self.path.replace(".jsonl", ".csv"))


def train(cfg: RunConfig, resume: bool = True, faces=None, quiet: bool = False, evaluate: bool = True) -> dict:
    """Train (or resume) the run in cfg.out; returns {'run_dir', 'steps', 'metrics' (if evaluated)}."""
    validate(cfg)
    run_dir = cfg.out
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    os.makedirs(os.path.join(run_dir, "dumps"), exist_ok=True)
    ctx = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # torchrun; a single process never imports torch.distributed
        from . import distributed
        ctx = distributed.from_environment(cfg)
    main = ctx is None or ctx.is_main
    log = (lambda *a: None) if quiet or not main else (lambda *a: print(*a, flush=True))
    device = ctx.device if ctx else pick_device(cfg.train.device)

    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    random.seed(cfg.train.seed)
    if cfg.data.source == "synthetic" and faces is None:
        faces = synthetic_faces(cfg)
    source = TrainSource(cfg, faces)
    backbone, head = build_model(cfg, source.num_classes, source.image_size)
    if ctx:
        from losses.distributed import DistributedHead, sum_gradients_hook
        head = DistributedHead(head, shard=cfg.train.shard_centres)
    backbone.to(device)
    head.to(device)
    if cfg.train.channels_last:
        backbone.to(memory_format=torch.channels_last)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    model = backbone
    if ctx:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(backbone, device_ids=[ctx.local_rank] if device.type == "cuda" else None)
        model.register_comm_hook(None, sum_gradients_hook)
    model = torch.compile(model) if cfg.train.compile else model
    steps_per_epoch = source.steps_per_epoch(cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)

    epoch, step_in_epoch, global_step = 0, 0, 0
    world = ctx.world_size if ctx else 1
    store = CheckpointStore(ckpt_dir, ctx)
    last_ckpt = store.latest() if resume else None
    if last_ckpt:
        ckpt = load_checkpoint(last_ckpt)
        if ckpt["config"] != cfg.to_dict():
            raise ValueError(f"{last_ckpt} was written with a different config; use another out folder or "
                             "--no-resume to start over")
        backbone.load_state_dict(ckpt["backbone"])
        head.load_state_dict(ckpt["head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        epoch, step_in_epoch, global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
        log(f"resuming {run_dir} at epoch {epoch}, step {global_step}")
    if main:
        atomic_json(os.path.join(run_dir, "config.json"), cfg.to_dict())
        atomic_json(os.path.join(run_dir, "environment.json"), {**environment(), "seed": cfg.train.seed,
                                                                "head_hparams": head.hparams, "device": str(device),
                                                                "world_size": world})
    line = feasibility_line(head)
    if line:
        log(line)

    def checkpoint(final=False):
        """The resumable checkpoint (per rank under torchrun); final=True: final.pt by rank 0, head gathered."""
        head_state = head.full_state_dict() if final and ctx else head.state_dict()
        state = dict(backbone=backbone.state_dict(), head=head_state, optimizer=optimizer.state_dict(),
                     scaler=scaler.state_dict(), rng=rng_state(), epoch=epoch, step_in_epoch=step_in_epoch,
                     global_step=global_step, config=cfg.to_dict(), head_hparams=head.hparams,
                     num_classes=source.num_classes, image_size=source.image_size,
                     preprocessing=source.preprocessing, world_size=world, rank=ctx.rank if ctx else 0)
        if not final:
            return store.save(global_step, **state)
        if main:
            save_checkpoint(os.path.join(ckpt_dir, "final.pt"), **state)

    metrics_log = MetricsLog(run_dir, global_step) if main else None
    bar = tqdm(total=total_steps, initial=global_step, disable=quiet or not main, desc=f"{cfg.head.name}",
               unit="step", file=sys.stdout, dynamic_ncols=True)
    backbone.train()
    head.train()
    t_last, images_since = time.perf_counter(), 0
    last_good = (global_step, last_ckpt)
    try:
        while epoch < cfg.train.epochs and global_step < total_steps:
            for step, images, labels in source.batches(epoch, step_in_epoch, cfg.train.batch_size, cfg.train.seed,
                                                       ctx.rank if ctx else 0, world):
                lr = learning_rate(global_step, steps_per_epoch, cfg.train.epochs, lr=cfg.optim.lr,
                                   schedule=cfg.optim.schedule, milestones=cfg.optim.milestones,
                                   gamma=cfg.optim.gamma, warmup_epochs=cfg.optim.warmup_epochs,
                                   power=cfg.optim.power)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                if cfg.train.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with _autocast(device, cfg.train.amp):
                    embeddings = model(images)
                if ctx is None and not bool(torch.isfinite(embeddings).all()):   # (under torchrun: the global loss)
                    _diverged("embeddings", global_step, epoch, last_good)
                out = head(embeddings, labels)
                if not torch.isfinite(out.loss):
                    _diverged(f"loss {out.loss.item()}", global_step, epoch, last_good)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.loss).backward()
                if cfg.optim.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    if ctx:
                        distributed.clip_gradients(list(backbone.parameters()), list(head.parameters()),
                                                   cfg.optim.grad_clip, head.shard)
                    else:
                        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                step_in_epoch = step + 1
                images_since += len(labels) * world
                bar.update(1)
                if global_step % cfg.train.log_every == 0 or global_step == total_steps:
                    now = time.perf_counter()
                    row = _metrics_row(out, head, global_step, epoch, lr, images_since / (now - t_last))
                    t_last, images_since = now, 0
                    if main:
                        metrics_log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", g=f"{row.get('mag_g', 0):.3f}",
                                    mag=f"{row['norm_mean']:.1f}", acc=f"{row['accuracy']:.2f}",
                                    ips=f"{row['images_per_s']:.0f}")
                if main and cfg.train.dump_every and (global_step % cfg.train.dump_every == 0 or
                                                      global_step == total_steps):
                    _dump(run_dir, global_step, out)
                if global_step % cfg.train.checkpoint_every == 0:
                    last_good = (global_step, checkpoint())
                if global_step >= total_steps:
                    break
            else:
                epoch, step_in_epoch = epoch + 1, 0
                last_good = (global_step, checkpoint())
                continue
            break
    finally:
        bar.close()
        if metrics_log:
            metrics_log.close()
    if step_in_epoch >= steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0
    checkpoint()
    checkpoint(final=True)
    result = {"run_dir": run_dir, "steps": global_step}
    if ctx:   # evaluation needs only the backbone: rank 0 alone, after every rank has written its checkpoint
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
        if not main:
            return result
    if evaluate:
        from .evaluate import evaluate_run, summary_line
        result["metrics"] = evaluate_run(run_dir, faces=faces, device=str(device))
        log(summary_line(result["metrics"]))
    return result


def _diverged(what, step, epoch, last_good):
    where = f"checkpoint {last_good[1]} (step {last_good[0]})" if last_good[1] else "no checkpoint yet"
    raise TrainingDiverged(f"non-finite {what} at step {step} (epoch {epoch}); last good {where}, left intact")


def _metrics_row(out, head, step, epoch, lr, ips) -> dict:
    norms = out.norms.detach()
    row = {"step": step, "epoch": epoch, "lr": lr, "loss": out.loss.item(), "identity_loss": out.identity_loss.item(),
           **{k: v.item() for k, v in out.aux.items()}, "norm_mean": norms.mean().item(),
           "norm_min": norms.min().item(), "norm_max": norms.max().item(), "cos_mean": out.cos_target.mean().item(),
           "accuracy": out.accuracy(), "images_per_s": ips}
    if hasattr(head, "margin"):
        m = head.margin(head.clamped_magnitude(norms))
        row.update(margin_mean=m.mean().item(), margin_min=m.min().item(), margin_max=m.max().item())
    return row


def _dump(run_dir, step, out):
    """Per-sample (magnitude, target cosine, target probability) of this batch, for the paper's Fig. 3."""
    path = os.path.join(run_dir, "dumps", f"step_{step:08d}.npz")
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, norms=out.norms.detach().cpu().numpy(), cos_target=out.cos_target.detach().cpu().numpy(),
             probability=_target_probability(out).cpu().numpy(), labels=out.labels.cpu().numpy(),
             per_sample_loss=out.per_sample_loss.detach().cpu().numpy())
    os.replace(tmp, path)


__all__ = ["train", "TrainingDiverged", "feasibility_line"]
