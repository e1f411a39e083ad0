"""CurricularFace (Huang et al., CVPR 2020): an ArcFace target and hard negatives that grow with training.

Target logit: s * cos(theta_y + m) under ArcFace's theta + m > pi policy (the official code: "threshold").
A negative is hard when cos_j > cos(theta_y + m) (the plain formula, not the policy's fallback, as the official
code compares); a hard negative's logit becomes s * cos_j * (t + cos_j), an easy one stays s * cos_j.
t: a running mean of the batch's mean target cosine (no margin), t <- (1 - momentum) t + momentum mean(cos_y),
starting at 0 and updated in training before it is used on the batch (as the official code); a buffer, so
checkpoints carry it. Under torchrun the mean is over the global batch (the official code keeps one t per rank).
"""
from __future__ import annotations

import math

import torch

from . import checks
from .arcface import GRAD_MODES, THETA_POLICIES, additive_angular_margin
from .base import MarginHead, clamp_cos
from .branchfree import above, below, select


def plain_angular_margin(cos_y, m):
    """cos(theta_y + m) by the formula alone (no policy), detached: the hard-negative boundary."""
    c = clamp_cos(cos_y)
    return c * math.cos(m) - torch.sqrt(1.0 - c * c) * math.sin(m)


class CurricularFaceHead(MarginHead):
    """Defaults from the official code (HuangYG123/CurricularFace head/metrics.py): s=64, m=0.5, momentum 0.01."""

    name = "curricularface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.5,
                 momentum: float = 0.01, theta_policy: str = "threshold", grad_mode: str = "analytic",
                 sample_rate: float = 1.0, centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.m = checks.real("m", m, low=0.0, high=math.pi, high_open=True)
        self.momentum = checks.real("momentum", momentum, low=0.0, high=1.0)
        self.theta_policy = checks.choice("theta_policy", theta_policy, THETA_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)
        self.register_buffer("t", torch.zeros(()))

    def observe_targets(self, cos_y):
        if self.training:
            with torch.no_grad():
                self.t.lerp_(cos_y.mean().to(self.t.dtype), self.momentum)

    def target_logit(self, cos_y, norms):
        return self.s * additive_angular_margin(cos_y, self.m, self.theta_policy, self.grad_mode)

    def _hard(self, cos, cos_y):
        """1.0 for a hard negative (cos_j > cos(theta_y + m)), else 0.0."""
        return above(cos, plain_angular_margin(cos_y, self.m))

    def negative_logit(self, cos, cos_y, target):
        t = self.t.to(cos.dtype)
        return select(self._hard(cos, cos_y), cos * (t + cos), cos).mul_(self.s)

    # The slope is read off the logit: a hard negative's z = s c (t + c) gives (t + 2c)^2 = t^2 + 4 z / s, so the
    # slope s (t + 2c) is s * sqrt(t^2 + 4 z / s) with the sign of t + 2c. The code (int8) keeps what z cannot
    # tell: 0 for an easy negative, else that sign (+1 where t + 2c >= 0). Float rounding of z costs about
    # sqrt(eps) * t of slope only where t + 2c ~ 0 (where the slope itself is ~ 0); tests/losses/test_heads_field.py
    # holds the float32 gradients to the float64 head's, also there.
    slope_of_logits = True

    def negative_code(self, cos, cos_y, target):
        falling = below(torch.mul(cos, 2.0).add_(self.t.to(cos.dtype)), 0.0)     # t + 2c < 0
        return self._hard(cos, cos_y).mul_(falling.mul_(-2.0).add_(1.0)).to(torch.int8)

    def negative_slope(self, logits, cos_y, target, code):
        t = self.t.to(logits.dtype)
        sign = code.to(logits.dtype)
        root = torch.mul(logits, 4.0 / self.s).add_(t * t).clamp_min_(0.0).sqrt_()
        return torch.addcmul(1.0 - sign.abs(), sign, root).mul_(self.s)

    def log_stats(self, norms, cos_target):
        """The curriculum's running t (0 at start, rising towards the mean target cosine)."""
        return {"curricular_t": self.t.item()}
