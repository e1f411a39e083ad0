"""ElasticFace (Boutros et al., CVPRW 2022): a margin drawn per sample, m_i ~ N(m, std), at every training step.

ElasticFace-Arc: s * cos(theta_y + m_i) (the official code has no theta + m > pi handling: theta_policy "none");
ElasticFace-Cos: s * (cos_y - m_i). Defaults from fdbtrs/ElasticFace utils/losses.py's classes: s=64, std=0.0125,
m=0.5 (Arc) / 0.35 (Cos); its config files train with larger std (0.05; the "+" runs 0.0175 and 0.02).

The "+" variant (plus=True) sorts the batch's margins and hands them out by target cosine. `plus_order`:
  "official": what the official code does, margin_i = sorted_margins[argsort(-cos_y)[i]] (a gather by the
              descending argsort, which is the rank assignment only when that permutation is its own inverse);
  "rank":     the stated intent, the r-th highest target cosine gets the r-th smallest margin.
The draws come from the head's own generator (seeded by `seed`; None: by torch.initial_seed() at construction,
which the trainer sets to train.seed just before, so the draws follow the run's seed without consuming its random
stream and every rank of a torchrun draws alike), one draw per training forward, on the CPU, so runs
are reproducible on any device; its state is in the state dict (`_extra_state`), so resumes are exact. In
evaluation mode every sample gets m (no draw).
"""
from __future__ import annotations

import math

import torch

from . import checks
from .arcface import GRAD_MODES, THETA_POLICIES, additive_angular_margin
from .base import MarginHead

PLUS_ORDERS = ("official", "rank")


class _ElasticHead(MarginHead):
    def _init_elastic(self, m, std, plus, plus_order, seed, max_margin):
        self.m = checks.real("m", m, low=0.0, high=max_margin, high_open=True)
        self.std = checks.real("std", std, low=0.0)
        if not isinstance(plus, bool):
            raise ValueError(f"plus must be True or False, got {plus!r}")
        self.plus = plus
        self.plus_order = checks.choice("plus_order", plus_order, PLUS_ORDERS)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)
        self._draw = None

    def before_batch(self, norms):
        self._draw = None
        if self.training:
            self._draw = torch.normal(self.m, self.std, (len(norms),), generator=self.generator)

    def margins(self, cos_y):
        """[B] this batch's margins: the draw (ordered by target cosine for "+"), or m in evaluation."""
        if self._draw is None:
            return torch.full_like(cos_y, self.m)
        draw = self._draw.to(device=cos_y.device, dtype=cos_y.dtype)
        if not self.plus:
            return draw
        ascending = draw.sort().values
        by_cos = torch.argsort(cos_y.detach(), descending=True)
        if self.plus_order == "official":
            return ascending[by_cos]
        return torch.empty_like(ascending).index_copy_(0, by_cos, ascending)

    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state):
        self.generator.set_state(state["generator"])

    def log_stats(self, norms, cos_target):
        """Mean and spread of the margins drawn for this batch."""
        if self._draw is None:
            return {}
        return {"margin_mean": self._draw.mean().item(), "margin_std": self._draw.std().item()
                if len(self._draw) > 1 else 0.0}


class ElasticArcFaceHead(_ElasticHead):
    name = "elasticface_arc"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.5,
                 std: float = 0.0125, plus: bool = False, plus_order: str = "official", seed: int | None = None,
                 theta_policy: str = "none", grad_mode: str = "analytic", sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self._init_elastic(m, std, plus, plus_order, seed, math.pi)
        self.theta_policy = checks.choice("theta_policy", theta_policy, THETA_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)

    def target_logit(self, cos_y, norms):
        return self.s * additive_angular_margin(cos_y, self.margins(cos_y), self.theta_policy, self.grad_mode)


class ElasticCosFaceHead(_ElasticHead):
    name = "elasticface_cos"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.35,
                 std: float = 0.0125, plus: bool = False, plus_order: str = "official", seed: int | None = None,
                 sample_rate: float = 1.0, centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self._init_elastic(m, std, plus, plus_order, seed, 2.0)

    def target_logit(self, cos_y, norms):
        return self.s * (cos_y - self.margins(cos_y))
