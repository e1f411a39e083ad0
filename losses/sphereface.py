"""SphereFace (Liu et al., CVPR 2017): multiplicative angular margin on normalised features.

psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m] is the monotone extension of
cos(m theta) to [0, pi]. SphereFace trains with the blend (lam * cos theta + psi(theta)) / (1 + lam), annealing lam
from about 1000 down to 5; here lam is an explicit parameter (default 5, the end of that schedule), and the
feature is normalised and scaled by s like the other heads (so the heads differ only in their margin).
"""
from __future__ import annotations

import math

import torch

from . import checks
from .base import MarginHead, clamp_cos


class SphereFaceHead(MarginHead):
    name = "sphereface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, m: float = 4.0,
                 lam: float = 5.0, sample_rate: float = 1.0, centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.m = checks.real("m", m, low=1.0)
        self.lam = checks.real("lam", lam, low=0.0)

    def target_logit(self, cos_y, norms):
        c = clamp_cos(cos_y)
        m_theta = self.m * torch.acos(c)
        k = torch.floor(m_theta / math.pi).detach()
        psi = (1.0 - 2.0 * torch.remainder(k, 2.0)) * torch.cos(m_theta) - 2.0 * k
        return self.s * (self.lam * c + psi) / (1.0 + self.lam)
