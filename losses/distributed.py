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

from .base import HeadOutput, MarginHead
from .checks import check_batch
from .fused import NORM_EPS, ROW_CHUNK, MarginCE


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


class GroupReduce:
    """Reductions over the class dimension when the classes are split over the ranks of `group`."""

    def __init__(self, group):
        self.group = group

    def sum_(self, t):
        dist.all_reduce(t, group=self.group)
        return t

    def max_(self, t):
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def logsumexp(self, logits):
        """log sum_j exp(z_j) over every rank's columns: all-reduce the row max, then the sum of exponentials."""
        row_max = self.max_(logits.max(dim=1).values)
        sum_exp = torch.cat([torch.exp(chunk - m[:, None]).sum(1) for chunk, m in
                             zip(logits.split(ROW_CHUNK), row_max.split(ROW_CHUNK), strict=True)])
        return row_max + torch.log(self.sum_(sum_exp))


class ShardedHeadOutput(HeadOutput):
    """A HeadOutput whose logits are this rank's columns (target_column -1 where another rank owns the class);
    accuracy() is reduced over all ranks, so it is a collective: call it on every rank or on none."""

    group = None

    def accuracy(self) -> float:
        if self.best_other is not None:   # already reduced over the ranks in the forward
            return super().accuracy()
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
            k = head.centres_per_class
            rows = slice(self.start * k, self.end * k)
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
            state["weight"] = self._gather_shards(self.weight.detach(), self.inner.centres_per_class)
            if self.bias is not None:
                state["bias"] = self._gather_shards(self.bias.detach())
        return state

    def _gather_shards(self, t, rows_per_class=1):
        """All-gather the uneven shards (padded to the largest: gloo gathers equal sizes only), in class order."""
        bounds = [tuple(rows_per_class * b for b in shard_bounds(self.inner.num_classes, self.world_size, r))
                  for r in range(self.world_size)]
        rows = max(e - s for s, e in bounds)
        padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in bounds]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:e - s] for p, (s, e) in zip(parts, bounds, strict=True)])

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
            weight = head.centres(self.weight, classes, offset=self.start)
            bias = self.bias
            if classes is not None and bias is not None:
                bias = bias.index_select(0, classes - self.start)
            local = classes if classes is not None else torch.arange(self.start, self.end, device=labels.device)
            col = torch.searchsorted(local, labels)
            col = torch.where((col < len(local)) & (local[col.clamp_max(len(local) - 1)] == labels), col, -1)
            if head.normalised:
                result = head.classify(x, norms, weight.to(dtype), col, classes, reduce=GroupReduce(self.group))
            else:
                result = self._linear(x, norms, weight.to(dtype), bias, col, labels, dtype)
            out = head.make_output(result, norms, classes, col, labels, kind=ShardedHeadOutput)
        out.group = self.group
        return out

    def _linear(self, x, norms, weight, bias, col, labels, dtype):
        """The sharded linear softmax (SoftmaxHead): the fused function with no target formula."""
        recipe = self.inner.recipe()
        per_sample, logits, _, plain, _, _ = MarginCE.apply(
            x, norms, weight, None if bias is None else bias.to(dtype), None, col, recipe, GroupReduce(self.group))
        return per_sample, logits, self._softmax_cos(x, norms, labels), plain, None, 1.0

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
