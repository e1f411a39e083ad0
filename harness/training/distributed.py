"""torchrun support: the process group from the variables torchrun sets, checks that keep ranks from hanging on
a mistake, and global gradient clipping. Only imported when WORLD_SIZE > 1: a single process never touches
torch.distributed (no NCCL or gloo initialisation for one device)."""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.devices import pick_device

TIMEOUT_ENV = "MAGFACE_DIST_TIMEOUT"   # seconds a collective may wait before failing (default 600)


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def agree(self, value) -> list:
        """The list of every rank's `value` (a small picklable object), on every rank."""
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        dist.barrier()


def from_environment(cfg) -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL on GPUs,
    gloo on CPU; then refuse to continue unless every rank has the same config."""
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    check_world(cfg, world)   # before any process group: every rank refuses at once, nothing to hang on
    device = pick_device(cfg.train.device)
    if device.type == "cuda":
        device = rank_gpu(local_rank, torch.cuda.device_count(), cfg.train.device)
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    ctx = DistContext(rank, world, local_rank, device)
    check_same_config(cfg, ctx)
    return ctx


def check_world(cfg, world: int) -> None:
    """What a config must satisfy to run on `world` ranks."""
    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is the global batch and must be divisible by "
                         f"the world size {world}")
    if cfg.train.amp == "fp16":
        raise ValueError("train.amp='fp16' under torchrun is not supported (the loss scaler's overflow check is "
                         "per rank, so ranks could skip different steps); use 'bf16'")


def rank_gpu(local_rank: int, gpus: int, asked: str) -> torch.device:
    """The GPU of this rank: NCCL needs one GPU per rank on a node, so a rank beyond the visible GPUs is an error
    that names both ways out (instead of CUDA's "invalid device ordinal" or NCCL's duplicate-GPU failure)."""
    if local_rank >= gpus:
        raise ValueError(f"LOCAL_RANK={local_rank} needs a GPU of its own, but this node has {gpus} visible "
                         f"(train.device={asked!r}, NCCL: one GPU per rank); start at most --nproc-per-node={gpus} "
                         f"ranks, or train as CPU processes over gloo with --set train.device='\"cpu\"'")
    return torch.device("cuda", local_rank)


def check_same_config(cfg, ctx: DistContext) -> None:
    """Every rank gathers every rank's config hash, so a mismatch raises on all ranks at once (no hang)."""
    hashes = ctx.agree(cfg.fingerprint())
    if len(set(hashes)) > 1:
        raise ValueError(f"the ranks were started with different configs (hash per rank: {hashes}); start every "
                         f"rank with the same --config and --set values")


def share_replicated_gradients(params) -> None:
    """Replicated class centres (train.shard_centres = false): every rank computes the head's gradient from the
    same gathered batch, but GPU kernels need not add in the same order on every rank, so the copies would drift
    apart step by step. Rank 0's gradient is used everywhere: one broadcast of the head per step (the all-reduce
    DDP would spend on it), bitwise the single-process gradient on the CPU."""
    for p in params:
        if p.grad is not None:
            dist.broadcast(p.grad, src=0)


def sync_replicas(ctx: DistContext, module: torch.nn.Module) -> bool:
    """Replicated centres, at every checkpoint: compare every rank's head (parameters and buffers: AdaFace's and
    MagFace's statistics are computed on each rank from the gathered batch) by digest; if the copies differ, make
    rank 0's everyone's, so the checkpoints and final.pt hold one head. Returns whether they differed."""
    tensors = list(module.state_dict().values())
    digest = hashlib.sha256(b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors)).hexdigest()
    if len(set(ctx.agree(digest))) == 1:
        return False
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t, src=0)
    return True


def clip_gradients(backbone_params, head_params, max_norm: float, head_sharded: bool) -> torch.Tensor:
    """Clip by the global gradient norm: backbone gradients are already equal on every rank, head shards are
    not, so their squares are summed over ranks. Same rule as torch.nn.utils.clip_grad_norm_. Returns the norm as
    a tensor on the gradients' device (no host sync); a rank whose head shard has no gradient contributes a zero
    created on that device, since NCCL all-reduces device tensors only."""
    params = list(backbone_params) + list(head_params)
    device = params[0].device if params else torch.device("cpu")

    def sq(group):
        grads = [p.grad for p in group if p.grad is not None]
        return (torch.stack([g.float().pow(2).sum() for g in grads]).sum() if grads
                else torch.zeros((), device=device))
    head_sq = sq(head_params)
    if head_sharded:
        dist.all_reduce(head_sq)
    total = (sq(backbone_params) + head_sq).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.device))
    return total
