"""MagFace (Meng et al., CVPR 2021): a magnitude-aware angular margin m(a) plus a regulariser g(a).

a = ||x|| clamped to [l_a, u_a] (as the official code: no gradient to a outside the band);
m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m;   g(a) = 1/a + a/u_a^2;
loss = mean CE with the target logit s*cos(theta_y + m(a))  +  lambda_g * mean g(a)   (aux "mag_g").
The theorem needs lambda_g >= s*k*u_a^2*l_a^2/(u_a^2 - l_a^2), k = (u_m - l_m)/(u_a - l_a) (computed with the
actual s, not a hard-coded 64); below it the optimum magnitude of hard samples sits at l_a.
"""
from __future__ import annotations

import math
import warnings

import torch

from . import checks
from .arcface import GRAD_MODES, THETA_POLICIES, additive_angular_margin
from .base import MarginHead

MAG_STATS = ("margin_mean", "margin_min", "margin_max", "margin_p5", "margin_p50", "margin_p95", "g_mean",
             "in_band_share")


class FeasibilityWarning(UserWarning):
    """lambda_g is below the bound under which MagFace's convergence theorem holds."""


def magface_lambda_g_min(s: float, l_a: float, u_a: float, l_m: float, u_m: float) -> float:
    k = (u_m - l_m) / (u_a - l_a)
    return s * k * u_a**2 * l_a**2 / (u_a**2 - l_a**2)


class _MagnitudeMarginHead(MarginHead):
    """Shared part of Mag-ArcFace and Mag-CosFace: parameter checks, m(a), g(a) and the lambda_g bound."""

    def _init_magnitude(self, l_a, u_a, l_m, u_m, lambda_g, strict, max_margin):
        self.l_a = checks.real("l_a", l_a, low=0.0, low_open=True)
        self.u_a = checks.real("u_a (must exceed l_a)", u_a, low=self.l_a, low_open=True)
        self.l_m = checks.real("l_m", l_m, low=0.0, high=max_margin)
        self.u_m = checks.real("u_m (must be >= l_m)", u_m, low=self.l_m, high=max_margin)
        self.lambda_g = checks.real("lambda_g", lambda_g, low=0.0)
        if not isinstance(strict, bool):
            raise ValueError(f"strict must be True or False, got {strict!r}")
        self.strict = strict
        bound = self.lambda_g_min
        if self.lambda_g < bound:
            msg = (f"lambda_g={self.lambda_g:g} is below the feasibility bound {bound:.4f} = s*k*u_a^2*l_a^2/"
                   f"(u_a^2-l_a^2) for s={self.s:g}, l_a={self.l_a:g}, u_a={self.u_a:g}, l_m={self.l_m:g}, "
                   f"u_m={self.u_m:g}: hard samples' optimal magnitude sits at l_a and the convergence "
                   "theorem does not hold")
            if strict:
                raise ValueError(msg)
            warnings.warn(msg, FeasibilityWarning, stacklevel=3)

    @property
    def lambda_g_min(self) -> float:
        return magface_lambda_g_min(self.s, self.l_a, self.u_a, self.l_m, self.u_m)

    def clamped_magnitude(self, norms):
        return norms.clamp(self.l_a, self.u_a)

    def margin(self, a):
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def regulariser(self, a):
        return 1.0 / a + a / self.u_a**2

    def auxiliary(self, norms):
        return {"mag_g": self.lambda_g * self.regulariser(self.clamped_magnitude(norms)).mean()}

    def startup_check(self) -> str:
        """The lambda_g feasibility check the official trainer prints at start, with the actual s."""
        ok = self.lambda_g >= self.lambda_g_min
        verdict = "OK" if ok else "BELOW THE BOUND: the convergence theorem does not hold"
        return (f"lambda_g check: bound s*k*u_a^2*l_a^2/(u_a^2-l_a^2) = {self.lambda_g_min:.4f} for s={self.s:g}; "
                f"lambda_g = {self.lambda_g:g} -> {verdict}")

    @torch.no_grad()
    def log_stats(self, norms, cos_target):
        """Whether the mechanism operates: the realised margin m(a) (mean, min, max, 5/50/95th percentiles), the
        mean g(a), and the share of the batch whose norm lies inside [l_a, u_a], where m and g follow the norm."""
        a = self.clamped_magnitude(norms)
        m = self.margin(a)
        q = torch.quantile(m, m.new_tensor([0.05, 0.5, 0.95]))
        inside = ((norms >= self.l_a) & (norms <= self.u_a)).to(m.dtype).mean()
        values = torch.stack([m.mean(), m.min(), m.max(), *q, self.regulariser(a).mean(), inside]).tolist()
        return dict(zip(MAG_STATS, values))


class MagFaceHead(_MagnitudeMarginHead):
    """Mag-ArcFace, the paper's MagFace. Defaults: the official code's s=64, l_a=10, u_a=110, l_m=0.45, u_m=0.8,
    lambda_g=35 (the paper text reports l_m=0.4). theta_policy defaults to the official code's "easy"
    (margin only where cos theta > 0); use "none" for the pure formula the theorem analyses."""

    name = "magface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, l_a: float = 10.0,
                 u_a: float = 110.0, l_m: float = 0.45, u_m: float = 0.8, lambda_g: float = 35.0,
                 theta_policy: str = "easy", grad_mode: str = "analytic", strict: bool = False,
                 sample_rate: float = 1.0):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate)
        self.theta_policy = checks.choice("theta_policy", theta_policy, THETA_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)
        self._init_magnitude(l_a, u_a, l_m, u_m, lambda_g, strict, max_margin=math.pi)

    def target_logit(self, cos_y, norms):
        m = self.margin(self.clamped_magnitude(norms))
        return self.s * additive_angular_margin(cos_y, m, self.theta_policy, self.grad_mode)


class MagCosFaceHead(_MagnitudeMarginHead):
    """Mag-CosFace (arXiv v4): target logit s * (cos theta_y - m(a)); the theorem needs no angle condition.
    Defaults from the official run_dist_cos.sh: l_m=0.35, u_m=0.8, lambda_g=150, s=64."""

    name = "mag_cosface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, l_a: float = 10.0,
                 u_a: float = 110.0, l_m: float = 0.35, u_m: float = 0.8, lambda_g: float = 150.0,
                 strict: bool = False, sample_rate: float = 1.0):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate)
        self._init_magnitude(l_a, u_a, l_m, u_m, lambda_g, strict, max_margin=None)

    def target_logit(self, cos_y, norms):
        return self.s * (cos_y - self.margin(self.clamped_magnitude(norms)))
