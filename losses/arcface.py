"""Additive angular margin (ArcFace), with the two choices other implementations hide made explicit.

theta_policy, for targets where theta + m would pass pi (where cos(theta + m) stops decreasing):
  "none"      the pure formula cos(theta + m) everywhere (the paper's equation);
  "easy"      cos(theta + m) where cos theta > 0, else cos theta (insightface/MagFace `easy_margin=True`);
  "threshold" cos(theta + m) where theta < pi - m, else cos theta - m sin m (ArcFace's original code).
grad_mode:
  "analytic"          differentiate cos(theta + m) = c cos m - sqrt(1 - c^2) sin m exactly;
  "straight_through"  same value, but d(target)/d(cos theta) = 1 (insightface arcface_torch computes the margin
                      under no_grad on arccos'ed logits); a margin that depends on the norm keeps its gradient.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .base import MarginHead, clamp_cos

THETA_POLICIES = ("none", "easy", "threshold")
GRAD_MODES = ("analytic", "straight_through")


def additive_angular_margin(cos: torch.Tensor, m, theta_policy: str, grad_mode: str) -> torch.Tensor:
    """cos(theta + m) under the given policy; m is a float or a [B] tensor (MagFace). Unscaled."""
    c = clamp_cos(cos)
    m = torch.as_tensor(m, dtype=c.dtype, device=c.device)
    if grad_mode == "analytic":
        shifted = c * torch.cos(m) - torch.sqrt(1.0 - c * c) * torch.sin(m)
    else:
        theta = torch.acos(c).detach()
        shifted = torch.cos(theta + m) + (c - c.detach())
    if theta_policy == "none":
        return shifted
    if theta_policy == "easy":
        return torch.where(c > 0, shifted, c)
    return torch.where(c > torch.cos(math.pi - m), shifted, c - m * torch.sin(m))


class ArcFaceHead(MarginHead):
    """Target logit s * cos(theta_y + m). Defaults s=64, m=0.5 (ArcFace paper); theta_policy "threshold"
    as ArcFace's original code; grad_mode "analytic"."""

    name = "arcface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.5,
                 theta_policy: str = "threshold", grad_mode: str = "analytic", sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.m = checks.real("m", m, low=0.0, high=math.pi, high_open=True)
        self.theta_policy = checks.choice("theta_policy", theta_policy, THETA_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)

    def target_logit(self, cos_y, norms):
        return self.s * additive_angular_margin(cos_y, self.m, self.theta_policy, self.grad_mode)
