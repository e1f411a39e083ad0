"""UniFace (Zhou et al., ICCV 2023): the unified cross-entropy, a sigmoid per class against one learnt bias b.

loss_i = log(1 + exp(-(s (cos_y - m) - b))) + lam * sum_{j != y} log(1 + exp(s cos_j - b)), mean over the batch
(the negatives summed, not averaged), as CVI-SZU/UniFace head.py's Unified_Cross_Entropy_Loss: with clamp=True
(the official code) z - b is clamped to [-s, s] before each log(1 + exp), so no gradient flows beyond it.
b is one learnt scalar (`loss_bias`), initialised to ln(10 C) by bias_init="auto" (the official ln(C r 10) with
r = 1; 15.1 for Glint360K's 360,232 identities); a float sets it. Defaults s=64, m=0.4, lam=1.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import checks
from .base import MarginHead


class UniFaceHead(MarginHead):
    name = "uniface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.4, lam: float = 1.0,
                 bias_init: float | str = "auto", clamp: bool = True, sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.m = checks.real("m", m, low=0.0, high=2.0, high_open=True)
        self.lam = checks.real("lam", lam, low=0.0, low_open=True)
        self.bias_init = bias_init if bias_init == "auto" else checks.real("bias_init (a number or 'auto')", bias_init)
        start = math.log(10.0 * self.num_classes) if bias_init == "auto" else self.bias_init
        if not isinstance(clamp, bool):
            raise ValueError(f"clamp must be True or False, got {clamp!r}")
        self.clamp = clamp
        self.loss_bias = nn.Parameter(torch.tensor(start))

    @property
    def sigmoid_lam(self):
        return self.lam

    @property
    def sigmoid_clamp(self):
        return self.s if self.clamp else None

    def target_logit(self, cos_y, norms):
        return self.s * (cos_y - self.m)

    def log_stats(self, norms, cos_target):
        """The learnt bias b."""
        return {"uniface_bias": self.loss_bias.item()}
