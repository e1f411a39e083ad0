"""MV-Softmax (Wang et al., AAAI 2020): a margin on the target and more weight on the misclassified negatives.

A negative is misclassified when cos_j exceeds the margin-applied target by the formula alone (cos_y - m for the
AM target, cos(theta_y + m) for the Arc target, as FaceX-Zoo compares); its logit becomes s * (t cos_j + t - 1)
(the paper's adaptive form with t = 1 + its t'), the others stay s * cos_j.
Targets, as FaceX-Zoo's head/MV_Softmax.py (its defaults: s=32, m=0.35, t=1.12):
  target="am":  s * (cos_y - m); theta_policy "easy" keeps cos_y where cos_y <= m (FaceX-Zoo), "none" never does;
  target="arc": s * cos(theta_y + m) under ArcFace's policies ("easy": cos_y where cos_y <= 0, FaceX-Zoo).
"""
from __future__ import annotations

import math

import torch

from . import checks
from .arcface import GRAD_MODES, THETA_POLICIES, additive_angular_margin
from .base import MarginHead
from .branchfree import above, select
from .curricularface import plain_angular_margin

TARGETS = ("am", "arc")
AM_POLICIES = ("none", "easy")


class MVSoftmaxHead(MarginHead):
    name = "mv_softmax"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 32.0, m: float = 0.35, t: float = 1.12,
                 target: str = "am", theta_policy: str = "easy", grad_mode: str = "analytic",
                 sample_rate: float = 1.0, centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.target = checks.choice("target", target, TARGETS)
        high = math.pi if target == "arc" else 2.0
        self.m = checks.real("m", m, low=0.0, high=high, high_open=True)
        self.t = checks.real("t (the weight of misclassified negatives)", t, low=1.0)
        self.theta_policy = checks.choice(f"theta_policy (target={target!r})", theta_policy,
                                          THETA_POLICIES if target == "arc" else AM_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)

    def target_logit(self, cos_y, norms):
        if self.target == "arc":
            return self.s * additive_angular_margin(cos_y, self.m, self.theta_policy, self.grad_mode)
        shifted = cos_y - self.m
        if self.theta_policy == "easy":
            shifted = torch.where(cos_y > self.m, shifted, cos_y)
        return self.s * shifted

    def _boundary(self, cos_y):
        return cos_y - self.m if self.target == "am" else plain_angular_margin(cos_y, self.m)

    def _misclassified(self, cos, cos_y):
        """1.0 for a misclassified negative (cos_j above the target's boundary), else 0.0."""
        return above(cos, self._boundary(cos_y))

    def negative_logit(self, cos, cos_y, target):
        return select(self._misclassified(cos, cos_y), self.t * cos + self.t - 1.0, cos).mul_(self.s)

    # The slope is read off the reshaped logits (no recomputed cosines): a misclassified negative's logit
    # s (t c + t - 1) with c > b exceeds s b, since t b + t - 1 >= b for t >= 1 and b >= -1, and every other logit
    # s c <= s b; so z > s b tells the two branches apart.
    slope_of_logits = True

    def negative_slope(self, logits, cos_y, target, code=None):
        misclassified = above(logits, self.s * self._boundary(cos_y))
        return misclassified.mul_(self.s * (self.t - 1.0)).add_(self.s)   # s t or s
