"""AdaFace (Kim et al., CVPR 2022): a margin that adapts to the norm, used as an image-quality proxy.

z = clip((||x|| - mu) / (sigma + eps) * h, -1, 1), with ||x|| clipped to [0.001, 100] and detached;
mu, sigma: exponential moving averages (momentum t_alpha) of the batch mean/std of the norms, kept as buffers
and updated only in training mode, before they are used (as the reference code does).
Target logit: s * (cos(clip(theta_y - m*z, eps, pi - eps)) - (m + m*z)). z = -1 -> ArcFace, z = 0 -> CosFace.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .base import MarginHead


class AdaFaceHead(MarginHead):
    """Defaults from the AdaFace code: s=64, m=0.4, h=0.333, t_alpha=0.01, eps=1e-3 (the cosine is clamped to
    +-(1 - eps) and the shifted angle to [eps, pi - eps]); running stats start at mean 20, std 100."""

    name = "adaface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 0.4,
                 h: float = 0.333, t_alpha: float = 0.01, eps: float = 1e-3, sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.m = checks.real("m", m, low=0.0, high=math.pi / 2)
        self.h = checks.real("h", h, low=0.0)
        self.t_alpha = checks.real("t_alpha", t_alpha, low=0.0, high=1.0)
        self.eps = checks.real("eps", eps, low=0.0, high=0.1, low_open=True)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    @staticmethod
    def safe_norms(norms):
        return norms.detach().clamp(0.001, 100.0)

    def before_batch(self, norms):
        if not self.training:
            return
        safe = self.safe_norms(norms)
        with torch.no_grad():
            self.batch_mean.lerp_(safe.mean(), self.t_alpha)
            if safe.numel() > 1:  # a one-sample batch has no spread: keep the running std
                self.batch_std.lerp_(safe.std(), self.t_alpha)

    def log_stats(self, norms, cos_target):
        """The running norm mean and std that the margin's z is measured against."""
        return {"ada_norm_mean": self.batch_mean.item(), "ada_norm_std": self.batch_std.item()}

    def quality(self, norms):
        """The normalised norm z in [-1, 1] (stop-gradient)."""
        z = (self.safe_norms(norms) - self.batch_mean) / (self.batch_std + self.eps)
        return (z * self.h).clamp(-1.0, 1.0)

    def target_logit(self, cos_y, norms):
        z = self.quality(norms)
        theta = torch.acos(cos_y.clamp(-1.0 + self.eps, 1.0 - self.eps))
        theta_m = (theta - self.m * z).clamp(self.eps, math.pi - self.eps)
        return self.s * (torch.cos(theta_m) - (self.m + self.m * z))
