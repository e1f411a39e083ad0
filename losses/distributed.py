"""Any head over several processes: the batch is all-gathered, and the class centres are either split by class over
the ranks (model parallel, insightface's Partial FC layout) or replicated.

Why this shape: with sharded centres each rank holds C/N centres and a [B, C/N] logit block, so the memory that
dominates face recognition (85,742 identities in MS1MV2, 360,232 in Glint360K) falls as 1/N. The softmax over all
classes is a distributed log-sum-exp: all-reduce the row max, then the sum of exponentials. The margin is applied
with the globally known target cosine, so every rank computes the same loss; the one cross-rank gradient is the
embedding gradient, summed over the shards in the backward pass.

Gradient convention: every rank ends the head's backward with the *complete* gradient of the global loss with
respect to the gathered embeddings, so the gather's backward simply keeps this rank's rows. The backbone's
gradients must then be *summed* over ranks (not averaged): see `sum_gradients_hook`.

This module uses torch.distributed only when a DistributedHead is built; single-process training never imports it.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from .base import NORM_EPS, HeadOutput, MarginHead
from .checks import check_batch
from .fused import ROW_CHUNK


def shard_bounds(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """The contiguous class range [start, end) owned by `rank`; the first C mod N ranks get one class more."""
    if world_size > num_classes:
        raise ValueError(f"world size {world_size} is larger than the number of classes {num_classes}: "
                         f"every rank needs at least one class centre")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _GatherRows(torch.autograd.Function):
    """All-gather equal-sized [b, ...] blocks into [N*b, ...]; backward keeps this rank's rows, because every
    consumer of the gathered tensor computes the complete gradient on every rank (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, group):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        start, end = ctx.rows
        return grad[start:end], None


def gather_rows(x: torch.Tensor, group=None) -> torch.Tensor:
    return _GatherRows.apply(x, group)


def sum_gradients_hook(state, bucket):
    """DDP communication hook: all-reduce SUM (DDP's default averages). Each rank's backbone gradient is its
    samples' exact share of the gradient of the global mean loss, so the shares add up."""
    fut = dist.all_reduce(bucket.buffer(), group=state, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class _ShardedMarginCE(torch.autograd.Function):
    """Cross-entropy over classes split across ranks. Inputs: x [B, d] (unit embeddings for cosine heads, raw for
    the linear softmax), norms [B], weight shard [K, d], bias shard [K] or None, col [B] (column of the target in
    this shard, -1 where another rank owns it), s, target_fn (None: linear softmax), group.
    Outputs: per-sample loss [B], shard logits [B, K] (margin applied), cos_y [B], plain target logit [B]."""

    @staticmethod
    def forward(ctx, x, norms, weight, bias, col, s, target_fn, group):
        owned = col >= 0
        rows = owned.nonzero().squeeze(1)
        cols = col[rows]
        cosine = target_fn is not None
        logits = torch.mm(x, weight.t())
        if cosine:
            inv_wnorm = torch.linalg.vector_norm(weight, dim=1).clamp_min(NORM_EPS).reciprocal()
            logits.mul_(inv_wnorm * s)
        else:
            inv_wnorm = None
            if bias is not None:
                logits.add_(bias)
        plain = torch.zeros(len(col), dtype=logits.dtype, device=logits.device)
        plain[rows] = logits[rows, cols]
        dist.all_reduce(plain, group=group)                   # each row's target lives on exactly one rank
        if cosine:
            with torch.enable_grad():
                c = (plain / s).detach().requires_grad_(True)
                n = norms.detach().requires_grad_(True)
                target = target_fn(c, n)                      # the same on every rank
            logits[rows, cols] = target.detach()[rows]
        else:
            c = n = None
            target = plain
        row_max = logits.max(dim=1).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        sum_exp = torch.cat([torch.exp(chunk - m[:, None]).sum(1) for chunk, m in
                             zip(logits.split(ROW_CHUNK), row_max.split(ROW_CHUNK))])
        dist.all_reduce(sum_exp, group=group)
        lse = row_max + torch.log(sum_exp)
        loss = lse - target.detach()
        ctx.save_for_backward(x, weight, col, logits, lse, inv_wnorm, plain)
        ctx.margin_graph = (c, n, target)
        ctx.s, ctx.group, ctx.has_bias, ctx.cosine = s, group, bias is not None, cosine
        cos_y = plain / s if cosine else plain.clone()
        ctx.mark_non_differentiable(logits, cos_y, plain)
        ctx.set_materialize_grads(False)
        return loss, logits, cos_y, plain

    @staticmethod
    def backward(ctx, grad_loss, _g_logits, _g_cos, _g_plain):
        x, weight, col, logits, lse, inv_wnorm, plain = ctx.saved_tensors
        if grad_loss is None:
            return (None,) * 8
        owned = col >= 0
        rows = owned.nonzero().squeeze(1)
        cols = col[rows]
        grad = torch.sub(logits, lse[:, None]).exp_()        # this shard's softmax columns
        p_y = torch.zeros_like(lse)
        p_y[rows] = grad[rows, cols]
        dist.all_reduce(p_y, group=ctx.group)
        grad_target = (p_y - 1.0) * grad_loss                  # dL/d(target logit), complete on every rank
        dn = None
        grad.mul_(grad_loss[:, None])
        if ctx.cosine:
            c, n, target = ctx.margin_graph
            dc, dn = torch.autograd.grad(target, (c, n), grad_target, allow_unused=True)
            dc = torch.zeros_like(c) if dc is None else dc
            grad.mul_(ctx.s)
            grad[rows, cols] = dc[rows]
            grad.mul_(inv_wnorm)                               # H = dL/dcos / ||W_j||
        else:
            grad[rows, cols] = grad_target[rows]
        grad_x = torch.mm(grad, weight)
        dist.all_reduce(grad_x, group=ctx.group)               # the shards' shares of dL/dx
        grad_w = torch.mm(grad.t(), x)
        grad_b = grad.sum(0) if ctx.has_bias else None
        if ctx.cosine:                                         # remove the radial part of d(W_j/||W_j||)
            cos_local = logits / ctx.s
            cos_local[rows, cols] = plain[rows] / ctx.s
            colsum = grad.mul_(cos_local).sum(dim=0)
            grad_w.addcmul_(weight, (colsum * inv_wnorm)[:, None], value=-1.0)
        return grad_x, dn, grad_w, grad_b, None, None, None, None


class ShardedHeadOutput(HeadOutput):
    """A HeadOutput whose logits are this rank's columns (target_column -1 where another rank owns the class);
    accuracy() is reduced over all ranks, so it is a collective: call it on every rank or on none."""

    group = None

    def accuracy(self) -> float:
        with torch.no_grad():
            others = self.logits.clone()
            rows = (self.target_column >= 0).nonzero().squeeze(1)
            others[rows, self.target_column[rows]] = float("-inf")
            best = others.max(dim=1).values
            dist.all_reduce(best, op=dist.ReduceOp.MAX, group=self.group)
            return float((self.plain_target > best).float().mean())


class DistributedHead(nn.Module):
    """Wraps a MarginHead built identically (same seed) on every rank. shard=True keeps only this rank's slice
    of the class centres; shard=False keeps all of them (every rank computes the same full head). Either way the
    embeddings and labels of all ranks are gathered, so batch statistics (AdaFace) and MagFace's g term are
    computed over the global batch, identically on every rank."""

    def __init__(self, head: MarginHead, group=None, shard: bool = True):
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("DistributedHead needs an initialised torch.distributed process group")
        self.group, self.shard = group, shard
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.start, self.end = shard_bounds(head.num_classes, self.world_size, self.rank)
        self.inner = head
        if shard:   # the wrapper owns this rank's rows under the same names, so state-dict keys stay weight/bias
            rows = slice(self.start, self.end)
            weight, bias = head.weight, getattr(head, "bias", None)
            del head.weight             # first: while the head has it, __getattr__ would find it and refuse the name
            if bias is not None:
                del head.bias
            self.weight = nn.Parameter(weight.detach()[rows].clone())
            self.bias = None if bias is None else nn.Parameter(bias.detach()[rows].clone())

    @property
    def hparams(self) -> dict:
        return {**self.inner.hparams, "world_size": self.world_size, "shard_centres": self.shard}

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:   # head-specific attributes (lambda_g, margin(), ...) come from the wrapped head
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None:
                raise
            return getattr(inner, name)

    def log_stats(self, norms, cos_target) -> dict:
        return self.inner.log_stats(norms, cos_target)

    def startup_check(self) -> str | None:
        return self.inner.startup_check()

    def full_state_dict(self) -> dict:
        """The single-process head's state dict (shards gathered on every rank): for final checkpoints."""
        state = dict(self.inner.state_dict())
        if self.shard:
            state["weight"] = self._gather_shards(self.weight.detach())
            if self.bias is not None:
                state["bias"] = self._gather_shards(self.bias.detach())
        return state

    def _gather_shards(self, t):
        """All-gather the uneven shards (padded to the largest: gloo gathers equal sizes only), in class order."""
        bounds = [shard_bounds(self.inner.num_classes, self.world_size, r) for r in range(self.world_size)]
        rows = max(e - s for s, e in bounds)
        padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in bounds]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:e - s] for p, (s, e) in zip(parts, bounds)])

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        b = torch.tensor([embeddings.shape[0]], device=embeddings.device)
        sizes = [torch.zeros_like(b) for _ in range(self.world_size)]
        dist.all_gather(sizes, b, group=self.group)
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(f"every rank needs the same batch size; got {[int(s) for s in sizes]}")
        x = gather_rows(embeddings, self.group)
        labels = gather_rows(labels.long(), self.group)
        if not self.shard:
            return self.inner(x, labels)
        head = self.inner
        check_batch(x, labels, head.embedding_size, head.num_classes)
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = torch.promote_types(x.dtype, torch.float32)
            x = x.to(dtype)
            norms = torch.linalg.vector_norm(x, dim=1)
            head.before_batch(norms.detach())
            classes = self.sample_classes(labels)
            weight = self.weight if classes is None else self.weight.index_select(0, classes - self.start)
            bias = self.bias
            if classes is not None and bias is not None:
                bias = bias.index_select(0, classes - self.start)
            local = classes if classes is not None else torch.arange(self.start, self.end, device=labels.device)
            col = torch.searchsorted(local, labels)
            col = torch.where((col < len(local)) & (local[col.clamp_max(len(local) - 1)] == labels), col, -1)
            inp = x / norms.clamp_min(NORM_EPS)[:, None] if head.normalised else x
            per_sample, logits, cos_y, plain = _ShardedMarginCE.apply(
                inp, norms, weight.to(dtype), None if bias is None else bias.to(dtype), col, head.s,
                head.target_logit if head.normalised else None, self.group)
            if not head.normalised:   # the linear softmax's cosine to the own centre, for logging
                cos_y = self._softmax_cos(x, norms, labels)
            out = head.make_output(per_sample, logits, cos_y, plain, norms, classes, col, labels,
                                   kind=ShardedHeadOutput)
        out.group = self.group
        return out

    def sample_classes(self, labels):
        """Partial FC on the shard: every class of the batch this rank owns plus a random share of its others.
        The random scores come from the global RNG, drawn for all C classes on every rank (ranks stay in step)."""
        head = self.inner
        if not self.training or head.sample_rate >= 1.0:
            return None
        score = torch.rand(head.num_classes, device=labels.device)[self.start:self.end]
        mine = labels[(labels >= self.start) & (labels < self.end)]
        positives = torch.unique(mine) - self.start
        k = max(math.ceil(head.sample_rate * (self.end - self.start)), positives.numel())
        score[positives] = 2.0
        return torch.topk(score, k, sorted=False).indices.sort().values + self.start

    def _softmax_cos(self, x, norms, labels):
        with torch.no_grad():
            owned = (labels >= self.start) & (labels < self.end)
            dots = torch.zeros(len(labels), 2, dtype=x.dtype, device=x.device)
            centre = self.weight[(labels[owned] - self.start)]
            dots[owned, 0] = (x[owned] * centre).sum(1)
            dots[owned, 1] = centre.norm(dim=1)
            dist.all_reduce(dots, group=self.group)
            return dots[:, 0] / (norms * dots[:, 1]).clamp_min(NORM_EPS)
