"""The head interface: class centres W [C, d] + (embeddings, labels) -> HeadOutput.

A margin head only states its target logit as a function of the target cosine and the embedding norm
(`target_logit`) and, optionally, auxiliary losses of the norms (`auxiliary`). Everything else (validation,
float32 under autocast, Partial FC sampling, the fused cosine classifier and cross-entropy) lives here once.

The contract of a new head (one file in losses/ plus one line in losses/registry.py's HEADS):
- a subclass of MarginHead with a class attribute `name` (the registry and config name);
- a constructor `(num_classes, embedding_size, *, s=..., <its parameters>, sample_rate=1.0,
  centre_init="unit")` that calls
  `super().__init__` and validates each of its parameters with losses/checks.py (a bad value raises ValueError
  naming it and the valid range);
- the hparams rule: every constructor parameter is stored as an attribute of the same name, because `hparams`
  reads them back by name to record the head in every result and checkpoint (a head that stores one differently
  overrides `hparams`, as SoftmaxHead does for its bias);
- `target_logit(cos_y, norms)`: the scaled logit of the own class, differentiable in both;
- optional: `auxiliary(norms)` (named weighted losses, added to the loss and logged), `before_batch(norms)`
  (running statistics or per-sample draws; keep them in buffers, or in `get_extra_state` for a generator, so
  checkpoints hold them), `observe_targets(cos_y)` (running statistics of the target cosines, before the target
  logit), `log_stats(norms, cos_target)` (plain floats for the metrics log), `startup_check()` (a line the trainer
  prints at start), and `normalised = False` for a head whose logits are not scaled cosines (it then overrides
  `classify`, as SoftmaxHead's linear classifier does);
- optional, for the field's other families, each applied once by losses/fused.py for every head, in one process and
  sharded alike: `negative_logit(cos, cos_y, target)` with its slope `negative_slope(...)` (reshaped negatives:
  CurricularFace, MV-Softmax, CircleLoss), `centres_per_class` passed to `super().__init__` (Sub-center ArcFace),
  `next_scale(mean_negative_exp, cos_y)` (a per-batch scale: AdaCos), `sigmoid_lam` / `sigmoid_clamp` with a
  `loss_bias` parameter (UniFace's sigmoid loss instead of softmax cross-entropy), `min_classes`.
Its reference formula goes in tests/reference_heads.py; the generic tests iterate over HEADS and then cover it.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from . import checks
from .fused import NORM_EPS, LocalReduce, MarginCE, Recipe

COS_EPS = 1e-6    # cosines are clamped to [-1 + COS_EPS, 1 - COS_EPS] before any sqrt or arccos
# NORM_EPS (from fused.py): embeddings shorter than this are treated as having this norm when normalised
# Class centres at start: "unit" rows (the official MagFace code) or "normal" N(0, 0.01^2) (insightface's
# arcface_torch). With d=128 the latter has |W_j| ~ 0.11, so one SGD step at lr 0.1 turns a centre by tens of
# degrees: cosine heads start far less stable than with unit rows.
CENTRE_INITS = ("unit", "normal")


@dataclass
class HeadOutput:
    logits: torch.Tensor          # [B, K] float32 scaled logits, margin on the target column (K = C unless sampled)
    loss: torch.Tensor            # scalar: identity_loss + sum(aux.values()); what training backpropagates
    identity_loss: torch.Tensor   # scalar: mean cross-entropy alone
    aux: dict = field(default_factory=dict)  # name -> weighted scalar auxiliary loss
    norms: torch.Tensor = None    # [B] embedding norms before any clamping
    cos_target: torch.Tensor = None  # [B] cosine to the own class centre, no margin
    per_sample_loss: torch.Tensor = None  # [B] cross-entropy of each sample
    classes: torch.Tensor | None = None   # [K] class ids of the logit columns when Partial FC sampled, else None
    plain_target: torch.Tensor = None     # [B] target logit without the margin (s * cos_target for cosine heads)
    target_column: torch.Tensor = None    # [B] column of each sample's own class in `logits` (-1: on another rank)
    labels: torch.Tensor = None           # [B] class of each sample (the global batch under torchrun)
    best_other: torch.Tensor | None = None  # [B] largest plain logit of another class, kept by heads that reshape
    #                                          the negatives (their `logits` are no longer s * cos there)
    scale: float = None                   # the scale s this batch used (AdaCos adapts it per batch)

    def accuracy(self) -> float:
        """Top-1 training accuracy measured without the margin (as the official MagFace trainer does) and without
        any reshaping of the negatives."""
        with torch.no_grad():
            if self.best_other is not None:
                return float((self.plain_target > self.best_other).float().mean())
            others = self.logits.scatter(1, self.target_column[:, None], float("-inf"))
            return float((self.plain_target > others.max(dim=1).values).float().mean())


class MarginHead(nn.Module):
    """Base class. Subclasses set their parameters, call `super().__init__` and implement `target_logit`."""

    name = "base"
    # True: the logits are s * cos(x, W_j) and only the own class's logit carries the margin (`target_logit`);
    # the fused and the sharded (losses/distributed.py) classifiers rely on this. False: a linear classifier
    # x W^T (+ bias) on the raw embedding, computed by the head's own `classify` (SoftmaxHead).
    normalised = True
    min_classes = 1         # the fewest classes the head is defined for (AdaCos: 3)
    # Optional formulas (see losses/fused.py for how each is applied once for every head):
    negative_logit = None   # (cos [r, C], cos_y [r, 1], target [r, 1]) -> the negatives' logits (scaled)
    negative_slope = None   # the same arguments -> d negative_logit / d cos
    slope_of_logits = False  # True: negative_slope(logits, cos_y, target, code) reads the reshaped logits
    negative_code = None    # (cos, cos_y, target) -> uint8 [r, C]: what that slope needs beside the logit
    next_scale = None       # (mean over the batch of sum_{j != y} exp(s cos_j), cos_y [B]) -> this batch's scale
    sigmoid_lam = None      # a float: UniFace's sigmoid loss with weight lam on the negatives (needs `loss_bias`)
    sigmoid_clamp = None    # with the sigmoid loss: clamp z - b to [-clamp, clamp] (official UniFace: s)

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, sample_rate: float = 1.0,
                 centre_init: str = "unit", centres_per_class: int = 1):
        super().__init__()
        self.num_classes = checks.positive_int("num_classes", num_classes)
        self.embedding_size = checks.positive_int("embedding_size", embedding_size)
        self.s = checks.real("s", s, low=0.0, low_open=True)
        self.sample_rate = checks.real("sample_rate", sample_rate, low=0.0, high=1.0, low_open=True)
        self.centre_init = checks.choice("centre_init", centre_init, CENTRE_INITS)
        self.centres_per_class = checks.positive_int("centres_per_class", centres_per_class)
        if self.centres_per_class > 255:
            raise ValueError(f"centres_per_class={centres_per_class} is outside the valid range [1, 255]")
        if self.centres_per_class > 1 and type(self).negative_logit is not None:
            raise ValueError(f"head {self.name!r}: several centres per class together with reshaped negatives is "
                             "not supported by the shared classifier")
        self.weight = nn.Parameter(torch.empty(self.centres_per_class * self.num_classes, self.embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        if centre_init == "unit":
            with torch.no_grad():
                self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    # --- what a head defines -------------------------------------------------------------------------------
    def target_logit(self, cos_y: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """Scaled logit of the own class, [B] -> [B]; differentiable in cos_y and norms."""
        raise NotImplementedError

    def auxiliary(self, norms: torch.Tensor) -> dict:
        """Weighted auxiliary losses of the norms (e.g. MagFace's lambda_g * mean g(a))."""
        return {}

    def before_batch(self, norms: torch.Tensor) -> None:
        """Hook for running statistics (AdaFace) and per-sample draws (ElasticFace); called once per forward with
        the detached norms of the whole (global) batch."""

    def observe_targets(self, cos_y: torch.Tensor) -> None:
        """Hook for running statistics of the target cosines (CurricularFace's t); called once per forward with the
        detached target cosines, before `target_logit`."""

    def log_stats(self, norms: torch.Tensor, cos_target: torch.Tensor) -> dict:
        """Head-specific statistics of a batch for the metrics log, {name: float}; inputs are detached.
        The trainer logs whatever a head returns, so it needs no knowledge of any head."""
        return {}

    def startup_check(self) -> str | None:
        """A line for the trainer to print at start (MagFace: its lambda_g feasibility bound), or None."""
        return None

    # --- shared machinery ----------------------------------------------------------------------------------
    @property
    def hparams(self) -> dict:
        """Every constructor parameter with its resolved value: recorded with results and checkpoints."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {"head": self.name, **{p: self._hparam(p) for p in names}}

    def _hparam(self, name: str):
        """The recorded value of constructor parameter `name` (a head that stores one differently overrides it)."""
        return getattr(self, name)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams.items() if k != "head")

    def recipe(self) -> Recipe:
        """What this head asks of the shared classifier (losses/fused.py) for the next batch."""
        observe = self.observe_targets if type(self).observe_targets is not MarginHead.observe_targets else None
        return Recipe(name=self.name, s=self.s, target_fn=self.target_logit if self.normalised else None,
                      negative_fn=self.negative_logit, negative_slope=self.negative_slope,
                      slope_of_logits=self.slope_of_logits, negative_code=self.negative_code,
                      rescale=self.next_scale, k=self.centres_per_class, lam=self.sigmoid_lam,
                      sigmoid_clamp=self.sigmoid_clamp, observe=observe)

    def loss_bias_tensor(self):
        """UniFace's learnt bias b (a 0-d parameter), or None for every softmax head."""
        return getattr(self, "loss_bias", None)

    def centres(self, weight: torch.Tensor, classes: torch.Tensor | None, offset: int = 0) -> torch.Tensor:
        """The rows of `weight` (a block of classes starting at `offset`) for the classes kept by Partial FC, each
        class's centres_per_class rows together."""
        if classes is None:
            return weight
        k = self.centres_per_class
        if k == 1:
            return weight.index_select(0, classes - offset)
        return weight.view(-1, k, weight.shape[1]).index_select(0, classes - offset).reshape(-1, weight.shape[1])

    def sample_classes(self, labels: torch.Tensor):
        """Partial FC: keep every class present in the batch plus a random subset of the other centres."""
        if not self.training or self.sample_rate >= 1.0:
            return None, labels
        positives = torch.unique(labels)
        k = max(math.ceil(self.sample_rate * self.num_classes), positives.numel())
        score = torch.rand(self.num_classes, device=labels.device)
        score[positives] = 2.0
        classes = torch.topk(score, k, sorted=False).indices.sort().values
        return classes, torch.searchsorted(classes, labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        checks.check_batch(embeddings, labels, self.embedding_size, self.num_classes)
        labels = labels.long()
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            dtype = torch.promote_types(embeddings.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
            x = embeddings.to(dtype)
            norms = torch.linalg.vector_norm(x, dim=1)
            self.before_batch(norms.detach())
            classes, local = self.sample_classes(labels)
            weight = self.centres(self.weight, classes).to(dtype)
            result = self.classify(x, norms, weight, local, classes)
            return self.make_output(result, norms, classes, local, labels)

    def make_output(self, result, norms, classes, target_column, labels, kind=HeadOutput) -> HeadOutput:
        """Mean loss plus this head's auxiliary losses, packed into `kind`: the one place the output's fields are
        filled, shared by this forward and DistributedHead's (which passes its ShardedHeadOutput). `result`:
        (per-sample loss, logits, cos_y, plain target logit, best other plain logit or None, scale)."""
        per_sample, logits, cos_y, plain, best, scale = result
        identity = per_sample.mean()
        aux = self.auxiliary(norms)
        loss = identity + sum(aux.values()) if aux else identity
        return kind(logits=logits, loss=loss, identity_loss=identity, aux=aux, norms=norms, cos_target=cos_y,
                    per_sample_loss=per_sample, classes=classes, plain_target=plain, target_column=target_column,
                    labels=labels, best_other=best, scale=scale)

    def classify(self, x, norms, weight, labels, classes, reduce=None):
        """(per-sample loss [B], logits [B, K], cos_y [B], target logit without margin [B], best other or None,
        scale) of the cosine classifier, through the shared fused function."""
        x_unit = x / norms.clamp_min(NORM_EPS)[:, None]
        bias = self.loss_bias_tensor()
        per_sample, logits, cos_y, plain, best, scale = MarginCE.apply(
            x_unit, norms, weight, None, None if bias is None else bias.to(x.dtype), labels, self.recipe(),
            reduce or LocalReduce())
        return per_sample, logits, cos_y, plain, (best if best.numel() else None), float(scale)


def clamp_cos(cos: torch.Tensor) -> torch.Tensor:
    return cos.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
