"""CircleLoss (Sun et al., CVPR 2020) in its classification form, as FaceX-Zoo's head/CircleLoss.py.

Target logit gamma * alpha_p * (cos_y - (1 - m)), alpha_p = [1 + m - cos_y]_+; negatives
gamma * alpha_n * (cos_j - m), alpha_n = [cos_j + m]_+; both weights detached (the paper's and the code's
stop-gradient), then softmax cross-entropy. Defaults gamma=256, m=0.25 (FaceX-Zoo).
"""
from __future__ import annotations

import torch

from . import checks
from .base import MarginHead
from .branchfree import above, below


class CircleLossHead(MarginHead):
    name = "circleloss"

    def __init__(self, num_classes: int, embedding_size: int, *, gamma: float = 256.0, m: float = 0.25,
                 sample_rate: float = 1.0, centre_init: str = "unit"):
        gamma = checks.real("gamma", gamma, low=0.0, low_open=True)
        super().__init__(num_classes, embedding_size, s=gamma, sample_rate=sample_rate, centre_init=centre_init)
        self.gamma = self.s
        self.m = checks.real("m", m, low=0.0, high=1.0, high_open=True)

    def target_logit(self, cos_y, norms):
        alpha = (1.0 + self.m - cos_y).clamp_min(0.0).detach()
        return self.gamma * alpha * (cos_y - (1.0 - self.m))

    def negative_logit(self, cos, cos_y, target):
        return self.gamma * (cos + self.m).clamp_min(0.0) * (cos - self.m)

    # The slope gamma [c + m]_+ is read off the logit: where c + m > 0, z = gamma (c^2 - m^2), so
    # |c| = sqrt(z / gamma + m^2). The code (int8) keeps what z cannot tell: 0 where c + m <= 0 (no slope), else
    # the sign of c (+1 where c >= 0). Near c = 0 the logit z ~ -gamma m^2 holds c^2 only to about eps * m^2, so
    # there |c| is known to about m * sqrt(eps) and the slope (about gamma m) to a relative 1e-4 in float32 (3e-4 at
    # worst, |c| < 1e-3; the recomputed cosines were exact to eps): far below the gradient noise of training, and
    # tests/losses/test_heads_field.py holds the whole gradient to the float64 head's.
    slope_of_logits = True

    def negative_code(self, cos, cos_y, target):
        active = above(cos, -self.m)                       # c + m > 0, computed as c - (-m): the same float op
        return active.mul_(below(cos, 0.0).mul_(-2.0).add_(1.0)).to(torch.int8)

    def negative_slope(self, logits, cos_y, target, code):
        sign = code.to(logits.dtype)
        magnitude = torch.div(logits, self.gamma).add_(self.m * self.m).clamp_min_(0.0).sqrt_()
        return torch.addcmul(sign.abs().mul_(self.m), sign, magnitude).mul_(self.gamma)
