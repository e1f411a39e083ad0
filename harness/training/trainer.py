"""One trainer for every head: same backbone, data, schedule and preprocessing, so heads are comparable.

Resume is exact: a checkpoint holds backbone, head (with AdaFace's running statistics), optimizer, grad scaler,
the position in the data order and every RNG state; the batch order and flips are functions of (seed, epoch,
step) and the learning rate is closed-form, so a killed and resumed run ends bitwise where an uninterrupted one
does (on the CPU). A non-finite loss stops the run and names the last good checkpoint, which stays intact.

Under torchrun (WORLD_SIZE > 1) the backbone is wrapped in DDP, the head in losses.distributed.DistributedHead
(class centres sharded over the ranks unless train.shard_centres is false), each rank trains on its rows of the
single-process global batch, and each rank writes its own checkpoint (see harness/training/checkpoints.py); final.pt
holds the gathered head and opens in a single process.

Shape: `train` builds a `_Run` (the session's state) and passes it through short steps: _setup, _restore,
_train_epochs -> _train_epoch -> _step, _checkpoint / _final_checkpoint, then evaluation. Head-specific logging
comes from the head (log_stats, startup_check), so nothing here knows one head from another."""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist  # already loaded by `import torch`; no process group is started here
from torch.nn.parallel import DistributedDataParallel

from harness.checkpoint_io import load_checkpoint, save_checkpoint
from harness.config import RunConfig, validate
from harness.data import check_verification_bin
from harness.devices import pick_device
from harness.evaluation.evaluate import evaluate_run, summary_line
from harness.files import atomic_json, read_json
from harness.locks import run_lock
from harness.models.build import build_model
from harness.provenance import environment
from harness.source import TrainSource, synthetic_faces
from harness.training.checkpoints import CheckpointStore
from harness.training.determinism import determinism
from harness.training.log import Progress
from harness.training.rng import rng_state, set_rng_state
from harness.training.schedule import learning_rate
from losses.checks import NonFiniteInput


class TrainingDiverged(RuntimeError):
    pass


def feasibility_line(head) -> str | None:
    """The line printed at the start of training: the head's own check (MagFace's lambda_g bound), if it has one."""
    return head.startup_check()


def _torchrun():
    """(harness.training.distributed, losses.distributed), imported here and not at the top only because a single
    process must never load the project's torch.distributed code (tests/harness/training/test_distributed_train.py
    checks that)."""
    import losses.distributed as sharded_heads  # lazy on purpose: see the docstring
    from harness.training import distributed  # lazy on purpose: see the docstring
    return distributed, sharded_heads


def _autocast(device, amp):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class _Run:
    """What one training session works on. The position (epoch, step_in_epoch, global_step) is what a checkpoint
    records and a resume restores; last_good is the newest checkpoint on disk, named if the run diverges."""
    cfg: RunConfig
    ctx: object                 # harness.training.distributed.DistContext under torchrun, else None
    device: torch.device
    faces: object               # the synthetic data set (also evaluated), or None for real data
    source: TrainSource
    backbone: torch.nn.Module
    head: torch.nn.Module       # a MarginHead, or a DistributedHead wrapping one
    model: torch.nn.Module      # the backbone as called: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    store: CheckpointStore
    steps_per_epoch: int
    total_steps: int
    verbose: bool
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    last_good: tuple = (0, None)

    @property
    def main(self) -> bool:
        return self.ctx is None or self.ctx.is_main

    @property
    def world(self) -> int:
        return self.ctx.world_size if self.ctx else 1

    @property
    def rank(self) -> int:
        return self.ctx.rank if self.ctx else 0

    @property
    def calibrate_step(self) -> int:
        """The step at which an "auto" magnitude band is measured (train.calibrate_at_epoch, at least one step)."""
        return max(1, round(self.cfg.train.calibrate_at_epoch * self.steps_per_epoch))

    def say(self, text: str) -> None:
        if self.verbose and self.main:
            print(text, flush=True)


def train(cfg: RunConfig, resume: bool = True, faces=None, quiet: bool = False, evaluate: bool = True) -> dict:
    """Train (or resume) the run in cfg.out; returns {'run_dir', 'steps', 'metrics' (if evaluated)}."""
    validate(cfg)
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1   # rank 0 must not wait: the others would time out
    lock = run_lock(cfg.out, wait=not torchrun, say=None if quiet else print) if _is_main_process() \
        else contextlib.nullcontext()
    with lock, determinism(cfg.train.deterministic, pick_device(cfg.train.device)):
        return _train(cfg, resume, faces, quiet, evaluate)


def _is_main_process() -> bool:
    """Rank 0 under torchrun (it alone holds the run folder's lock: the ranks are one writer), or a single process.
    Read from torchrun's RANK before the process group exists (harness.training.distributed reads the same variable)."""
    return int(os.environ.get("RANK", "0")) == 0


def _train(cfg: RunConfig, resume: bool, faces, quiet: bool, evaluate: bool) -> dict:
    run = _setup(cfg, faces, verbose=not quiet)
    run.say(f"run folder: {cfg.out}")
    if getattr(run.head, "auto_band", False) and run.calibrate_step >= run.total_steps:
        halfway = run.total_steps / 2 / run.steps_per_epoch
        raise ValueError(f"train.calibrate_at_epoch={cfg.train.calibrate_at_epoch} puts the calibration of the 'auto' "
                         f"magnitude band at step {run.calibrate_step}, but the run has only {run.total_steps} steps; "
                         f"for a run this short add --set train.calibrate_at_epoch={halfway:g} (any point before the "
                         "last step: the head trains as ArcFace until then), or train longer")
    _restore(run, resume)
    _write_run_info(run)
    _train_epochs(run)
    _checkpoint(run)
    _final_checkpoint(run)
    result = {"run_dir": cfg.out, "steps": run.global_step}
    if run.ctx:   # evaluation needs only the backbone: rank 0 alone, after every rank has written its checkpoint
        dist.barrier()
        dist.destroy_process_group()
        if not run.main:
            return result
    if evaluate:
        result["metrics"] = evaluate_run(cfg.out, faces=run.faces, device=str(run.device))
        run.say(summary_line(result["metrics"]))
    run.say(WROTE.format(out=cfg.out, classes=run.source.num_classes) if evaluate else
            f"wrote the run to {cfg.out}/ (not evaluated: python -m harness evaluate --run {cfg.out})")
    return result


WROTE = """wrote the run to {out}/: config.json (resolved), metrics.csv (the training log), checkpoints/final.pt,
  eval/metrics.json (evaluation). Two accuracies: 'acc' in the progress bar is top-1 identity classification of
  the training batch among the {classes} training identities, without the margin (chance 1/{classes}); the
  verification accuracy above is same-or-different on pairs of unseen identities (chance 50 %)."""


# --- setup --------------------------------------------------------------------------------------------------------
def _setup(cfg: RunConfig, faces, verbose: bool) -> _Run:
    """Folders, process group (torchrun), seeds, data, model, optimizer: in this order, so every run and every
    resume of it draws the same initial weights."""
    os.makedirs(os.path.join(cfg.out, "checkpoints"), exist_ok=True)
    os.makedirs(os.path.join(cfg.out, "dumps"), exist_ok=True)
    ctx = _torchrun()[0].from_environment(cfg) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    device = ctx.device if ctx else pick_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    random.seed(cfg.train.seed)
    if cfg.data.source == "synthetic" and faces is None:
        faces = synthetic_faces(cfg)
    source = TrainSource(cfg, faces)
    for path in cfg.data.eval_bins if not ctx or ctx.is_main else ():   # read now: a damaged or mis-sized pack
        check_verification_bin(path, source.image_size)                    # is found before training, not after
    backbone, head = _build(cfg, source, ctx, device)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=cfg.optim.lr,
                                momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    steps_per_epoch = source.steps_per_epoch(cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    return _Run(cfg, ctx, device, faces, source, backbone, head, _wrap_backbone(cfg, backbone, ctx, device),
                optimizer, scaler, CheckpointStore(os.path.join(cfg.out, "checkpoints"), ctx), steps_per_epoch,
                total_steps, verbose)


def _build(cfg: RunConfig, source: TrainSource, ctx, device):
    """Backbone and head on the device; under torchrun the head is wrapped to span the ranks."""
    backbone, head = build_model(cfg, source.num_classes, source.image_size)
    if ctx:
        head = _torchrun()[1].DistributedHead(head, shard=cfg.train.shard_centres)
    backbone.to(device)
    head.to(device)
    if cfg.train.channels_last:
        backbone.to(memory_format=torch.channels_last)
    return backbone, head


def _wrap_backbone(cfg: RunConfig, backbone, ctx, device):
    """DDP under torchrun (gradients summed over ranks, see losses/distributed.py), then torch.compile if asked."""
    model = backbone
    if ctx:
        model = DistributedDataParallel(backbone, device_ids=[ctx.local_rank] if device.type == "cuda" else None)
        model.register_comm_hook(None, _torchrun()[1].sum_gradients_hook)
    return torch.compile(model) if cfg.train.compile else model


def _restore(run: _Run, resume: bool) -> None:
    """Continue from this run's latest checkpoint, if any: weights, optimizer, scaler, RNGs and position."""
    path = run.store.latest() if resume else None
    if path:
        ckpt = load_checkpoint(path)
        if ckpt["config_obj"].fingerprint() != run.cfg.fingerprint():
            raise ValueError(f"{path} was written with a different config (fingerprint "
                             f"{ckpt['config_obj'].fingerprint()}, this run {run.cfg.fingerprint()}); use another "
                             "out folder or --no-resume to start over")
        run.backbone.load_state_dict(ckpt["backbone"])
        run.head.load_state_dict(ckpt["head"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], run.device)
        run.epoch, run.step_in_epoch, run.global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
        run.say(f"resuming {run.cfg.out} at epoch {run.epoch}, step {run.global_step}")
    run.last_good = (run.global_step, path)


def _threads_seen(path: str, step: int) -> list:
    """Every thread count the run has trained with (a resume may use another; the weights depend on it in their
    last bits, and it is not in the fingerprint)."""
    seen = set()
    if step and os.path.isfile(path):
        try:
            seen = set(read_json(path).get("torch_threads_seen") or [])
        except ValueError:
            seen = set()   # an unreadable record of an earlier session: this session's count is what is known
    return sorted(seen | {torch.get_num_threads()})


def _write_run_info(run: _Run) -> None:
    """config.json and environment.json (rank 0), and the head's start-up check on the console."""
    if run.main:
        stale = os.path.join(run.cfg.out, "calibration.json")
        if run.global_step == 0 and os.path.exists(stale):   # an earlier run's band (a --no-resume restart)
            os.remove(stale)
        atomic_json(os.path.join(run.cfg.out, "config.json"), run.cfg.to_dict())
        path = os.path.join(run.cfg.out, "environment.json")
        atomic_json(path, {**environment(run.device), "seed": run.cfg.train.seed, "head_hparams": run.head.hparams,
                           "device": str(run.device), "world_size": run.world,
                           "torch_threads_seen": _threads_seen(path, run.global_step)})
    line = feasibility_line(run.head)
    if line:
        run.say(line)


# --- the loop -----------------------------------------------------------------------------------------------------
def _train_epochs(run: _Run) -> None:
    """Epochs from the current position to the end, with a checkpoint after every completed epoch."""
    progress = Progress(run)
    run.backbone.train()
    run.head.train()
    try:
        while run.epoch < run.cfg.train.epochs and run.global_step < run.total_steps:
            if not _train_epoch(run, progress):
                break
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
            run.last_good = (run.global_step, _checkpoint(run))
    finally:
        progress.close()
    if run.step_in_epoch >= run.steps_per_epoch:
        run.epoch, run.step_in_epoch = run.epoch + 1, 0


def _train_epoch(run: _Run, progress: Progress) -> bool:
    """The rest of the current epoch; False when the run reached total_steps before the epoch's end."""
    cfg = run.cfg
    for step, images, labels in run.source.batches(run.epoch, run.step_in_epoch, cfg.train.batch_size,
                                                   cfg.train.seed, run.rank, run.world, run.device):
        lr = _set_learning_rate(run)
        if getattr(run.head, "needs_calibration", False) and run.global_step >= run.calibrate_step:
            _calibrate(run)
        out = _step(run, images, labels)
        run.global_step += 1
        run.step_in_epoch = step + 1
        progress.update(run, out, lr, len(labels))
        if run.global_step % cfg.train.checkpoint_every == 0:
            run.last_good = (run.global_step, _checkpoint(run))
        if run.global_step >= run.total_steps:
            return False
    return True


def _calibrate(run: _Run) -> None:
    """Measure MagFace's "auto" band from the latest training magnitudes (every rank alike: the head saw the global
    batch) and record it in calibration.json; the head's buffers carry it into every later checkpoint."""
    info = {"step": run.global_step, "epoch": run.global_step / run.steps_per_epoch, **run.head.calibrate()}
    if run.main:
        atomic_json(os.path.join(run.cfg.out, "calibration.json"), info)
    run.say(f"calibrated the magnitude band at step {info['step']}: [l_a, u_a] = [{info['l_a']:.3g}, "
            f"{info['u_a']:.3g}] (quantiles {info['quantiles']} of {info['samples']} training magnitudes), "
            f"lambda_g = {info['lambda_g']:.4g} (bound {info['lambda_g_min']:.4g})")


def _set_learning_rate(run: _Run) -> float:
    lr = learning_rate(run.global_step, run.steps_per_epoch, run.total_steps, run.cfg.optim)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _step(run: _Run, images, labels):
    """One optimizer step on a batch; stops the run on a non-finite embedding or loss. Returns the HeadOutput."""
    cfg = run.cfg
    if cfg.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    elif run.device.type == "cuda":   # the uint8 NHWC pixels come out channels_last-strided; NCHW as the weights are
        images = images.contiguous()
    with _autocast(run.device, cfg.train.amp):
        embeddings = run.model(images)
    try:   # the head's batch check is the one sync that finds non-finite embeddings (on every rank at once)
        out = run.head(embeddings, labels)
    except NonFiniteInput:
        _diverged("embeddings", run)
    if not torch.isfinite(out.loss):   # the step's second and last host-device sync
        _diverged(f"loss {out.loss.item()}", run)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(out.loss).backward()
    if run.ctx and not run.head.shard:
        _torchrun()[0].share_replicated_gradients(run.head.parameters())
    if cfg.optim.grad_clip > 0:
        clip_gradients(run)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return out


def clip_gradients(run: _Run) -> None:
    """Clip by the global gradient norm of the backbone (insightface's rule), or of backbone and head together when
    optim.clip_head is set (under torchrun: over all shards of the head)."""
    run.scaler.unscale_(run.optimizer)
    backbone = list(run.backbone.parameters())
    head = list(run.head.parameters()) if run.cfg.optim.clip_head else []
    if run.ctx:
        _torchrun()[0].clip_gradients(backbone, head, run.cfg.optim.grad_clip, run.head.shard and bool(head))
    else:
        torch.nn.utils.clip_grad_norm_(backbone + head, run.cfg.optim.grad_clip)


def _diverged(what, run: _Run):
    step, path = run.last_good
    where = f"the last good checkpoint {path} (step {step}) is left intact" if path else "no checkpoint was written yet"
    raise TrainingDiverged(f"non-finite {what} at step {run.global_step} (epoch {run.epoch}); {where}")


# --- checkpoints --------------------------------------------------------------------------------------------------
def _state(run: _Run, head_state: dict) -> dict:
    """Everything a resume needs, plus what a reader of the checkpoint needs to use the model."""
    return {"backbone": run.backbone.state_dict(), "head": head_state, "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(), "rng": rng_state(run.device), "epoch": run.epoch,
            "step_in_epoch": run.step_in_epoch, "global_step": run.global_step, "config": run.cfg.to_dict(),
            "head_hparams": run.head.hparams, "num_classes": run.source.num_classes,
            "image_size": run.source.image_size, "preprocessing": run.source.preprocessing,
            "world_size": run.world, "rank": run.rank}


def _checkpoint(run: _Run) -> str:
    """The resumable checkpoint (one per rank under torchrun); returns its path."""
    _sync_replicas(run)
    return run.store.save(run.global_step, **_state(run, run.head.state_dict()))


def _sync_replicas(run: _Run) -> None:
    """Replicated centres: one head on every rank before it is saved (see
    harness.training.distributed.sync_replicas)."""
    if run.ctx and not run.head.shard and _torchrun()[0].sync_replicas(run.ctx, run.head):
        run.say(f"warning: the ranks' copies of the replicated head differed at step {run.global_step}; rank 0's "
                "copy now holds on every rank (GPU arithmetic that differs between ranks)")


def _final_checkpoint(run: _Run) -> None:
    """checkpoints/final.pt by rank 0, with the head gathered (a collective: every rank calls this)."""
    _sync_replicas(run)
    head_state = run.head.full_state_dict() if run.ctx else run.head.state_dict()
    state = _state(run, head_state)
    if run.main:
        save_checkpoint(os.path.join(run.cfg.out, "checkpoints", "final.pt"), **state)


__all__ = ["TrainingDiverged", "feasibility_line", "train"]
