"""Code run inside the spawned ranks of tests/losses/test_distributed_heads.py and
tests/harness/training/test_distributed_train.py (a module, so spawned processes can import it)."""
import datetime
import os

import torch
import torch.distributed as dist

from losses import HEADS, build_head

C, D, B = 11, 16, 12      # 11 classes: uneven shards over 2 ranks (6 + 5)
NAMES = sorted(HEADS)     # every registered head, with its defaults unless listed here
HEAD_PARAMS = {"softmax": {"bias": True}}   # the bias shards too


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g) * 6.0          # norms around 24: inside MagFace's [10, 110]
    labels = torch.randint(0, C, (B,), generator=g)
    return x, labels


def make_head(name, seed=1, **extra):
    torch.manual_seed(seed)
    head = build_head(name, C, D, **HEAD_PARAMS.get(name, {}), **extra)
    head.weight.data.normal_(0, 1.0)
    return head


def loss_bias_grad(head):
    """UniFace's learnt bias b: its gradient (replicated on every rank, so each must hold the complete one)."""
    bias = getattr(head, "loss_bias", None)
    return None if bias is None else bias.grad.clone()


def reference(name, steps=2):
    """Single process, global batch: per step the loss, per-sample loss, accuracy and gradients."""
    head = make_head(name)
    out = []
    for step in range(steps):
        x, labels = batch(step)
        x.requires_grad_(True)
        o = head(x, labels)
        o.loss.backward()
        out.append({"loss": o.loss.detach(), "per_sample": o.per_sample_loss.detach(), "accuracy": o.accuracy(),
                    "cos": o.cos_target.detach(), "grad_x": x.grad, "grad_w": head.weight.grad.clone(),
                    "grad_b": None if getattr(head, "bias", None) is None else head.bias.grad.clone(),
                    "grad_loss_bias": loss_bias_grad(head),
                    "stats": head.log_stats(o.norms.detach(), o.cos_target.detach()),
                    "startup": head.startup_check()})
        head.zero_grad()
    return out


def init(rank, world, store_path, timeout_s=60):
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))


def rank_main(rank, world, store_path, out_dir, heads, shard, steps=2):
    from losses.distributed import DistributedHead
    init(rank, world, store_path)
    torch.set_num_threads(1)
    results = {}
    for name in heads:
        head = DistributedHead(make_head(name), shard=shard)
        per_step = []
        for step in range(steps):
            x, labels = batch(step)
            rows = slice(rank * B // world, (rank + 1) * B // world)
            mine = x[rows].clone().requires_grad_(True)
            o = head(mine, labels[rows])
            o.loss.backward()
            w = head.weight if shard else head.inner.weight
            b = head.bias if shard else getattr(head.inner, "bias", None)
            per_step.append({"loss": o.loss.detach(), "per_sample": o.per_sample_loss.detach(),
                             "accuracy": o.accuracy(), "cos": o.cos_target.detach(), "grad_x": mine.grad,
                             "grad_w": w.grad.clone(), "grad_b": None if b is None else b.grad.clone(),
                             "grad_loss_bias": loss_bias_grad(head.inner),
                             "bounds": (head.start, head.end),
                             "stats": head.log_stats(o.norms.detach(), o.cos_target.detach()),
                             "startup": head.startup_check()})
            head.zero_grad()
        results[name] = per_step
        full = head.full_state_dict()
        results[name + "/full_weight"] = full["weight"]
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def partial_fc_main(rank, world, store_path, out_dir):
    """Sample rate 0.5 on a 40-class head: record the sampled centres of each shard and the global labels."""
    from losses.distributed import DistributedHead
    init(rank, world, store_path)
    torch.manual_seed(3)
    head = DistributedHead(build_head("magface", 40, D, sample_rate=0.5), shard=True)
    x = torch.randn(B, D) * 6.0
    labels = torch.randint(0, 40, (B,))
    rows = slice(rank * B // world, (rank + 1) * B // world)
    o = head(x[rows].clone().requires_grad_(True), labels[rows])
    o.loss.backward()
    torch.save({"bounds": (head.start, head.end), "classes": o.classes, "labels": labels, "loss": o.loss.detach(),
                "grad_w_rows": int((head.weight.grad.abs().sum(1) > 0).sum())},
               os.path.join(out_dir, f"pfc{rank}.pt"))
    dist.destroy_process_group()


def record_error(fn, rank, out_dir):
    """Run fn on this rank and write the ValueError it raised (or "no error") to out_dir/error<rank>.txt."""
    try:
        fn()
        message = "no error"
    except ValueError as exc:
        message = str(exc)
    with open(os.path.join(out_dir, f"error{rank}.txt"), "w") as f:
        f.write(message)
    dist.destroy_process_group()


def config_mismatch_main(rank, world, store_path, out_dir):
    """Rank 1 has another learning rate: check_same_config must raise on both ranks."""
    from harness.config import load_config
    from harness.training.distributed import DistContext, check_same_config
    init(rank, world, store_path)
    cfg = load_config(None, [f"optim.lr={0.1 if rank == 0 else 0.2}"])
    record_error(lambda: check_same_config(cfg, DistContext(rank, world, rank, torch.device("cpu"))), rank, out_dir)


def too_many_ranks_main(rank, world, store_path, out_dir, classes):
    from losses.distributed import DistributedHead
    init(rank, world, store_path)
    record_error(lambda: DistributedHead(build_head("arcface", classes, D)), rank, out_dir)


def clip_main(rank, world, store_path, out_dir, max_norm):
    """Global gradient clipping with sharded centres: a stand-in backbone gradient (equal on every rank, as after
    DDP's all-reduce) plus this rank's MagFace centre-shard gradient of step 0. Then replicated centres' gradients
    shared from rank 0."""
    from harness.training.distributed import DistContext, clip_gradients, share_replicated_gradients, sync_replicas
    from losses.distributed import DistributedHead
    init(rank, world, store_path)
    head = DistributedHead(make_head("magface"), shard=True)
    x, labels = batch(0)
    rows = slice(rank * B // world, (rank + 1) * B // world)
    head(x[rows].clone().requires_grad_(True), labels[rows]).loss.backward()
    backbone = torch.nn.Parameter(torch.zeros(5))
    backbone.grad = torch.arange(5.0)
    total = clip_gradients([backbone], list(head.parameters()), max_norm, head_sharded=True)
    replica = torch.nn.Parameter(torch.zeros(3))       # replicated centres whose gradients came out differently
    replica.grad = torch.full((3,), float(rank + 1))
    share_replicated_gradients([replica])
    drifted = torch.nn.BatchNorm1d(3)                  # a replicated head whose copies drifted apart
    with torch.no_grad():
        drifted.weight.fill_(rank + 1.0)
        drifted.running_mean.fill_(rank + 5.0)
    ctx = DistContext(rank, world, rank, torch.device("cpu"))
    synced = [sync_replicas(ctx, drifted), sync_replicas(ctx, drifted)]
    torch.save({"total": total, "backbone": backbone.grad, "weight": head.weight.grad, "replica": replica.grad,
                "drifted": drifted.state_dict(), "synced": synced},
               os.path.join(out_dir, f"clip{rank}.pt"))
    dist.destroy_process_group()
