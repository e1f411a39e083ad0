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
             "in_band_share", "margin_applied_share")


class FeasibilityWarning(UserWarning):
    """lambda_g is below the bound under which MagFace's convergence theorem holds."""


def magface_lambda_g_min(s: float, l_a: float, u_a: float, l_m: float, u_m: float) -> float:
    k = (u_m - l_m) / (u_a - l_a)
    return s * k * u_a**2 * l_a**2 / (u_a**2 - l_a**2)


# The paper's lambda_g = 35 is 1.55 times the bound of its own band (s=64, [10, 110], [0.45, 0.8]: bound 22.6).
# At the bound itself the hardest samples' optimum is l_a, where the clamp leaves no gradient on a, and measured
# magnitudes drift under the band; lambda_g = "auto" keeps the paper's distance to the bound instead.
PAPER_LAMBDA_G_RATIO = 35.0 / magface_lambda_g_min(64.0, 10.0, 110.0, 0.45, 0.8)
# The official Mag-CosFace setting (run_dist_cos.sh: lambda_g = 150, [0.35, 0.8]) is 5.17 times its bound (29.0).
PAPER_MAG_COSFACE_LAMBDA_G_RATIO = 150.0 / magface_lambda_g_min(64.0, 10.0, 110.0, 0.35, 0.8)


class _MagnitudeMarginHead(MarginHead):
    """Shared part of Mag-ArcFace and Mag-CosFace: parameter checks, m(a), g(a), the lambda_g bound and the
    calibration of an "auto" band.

    l_a = u_a = "auto": the band is measured, not guessed (the official advice for small magnitudes: look at them,
    then choose l_a below and u_a above). Until `calibrate()` the head is ArcFace (CosFace) with margin l_m and no
    g term, and it keeps the norms of the last CALIBRATION_SAMPLES training samples in a buffer; `calibrate()` (the
    trainer calls it at train.calibrate_at_epoch) sets [l_a, u_a] to the `auto_quantiles` of those norms and, with
    lambda_g = "auto", lambda_g to `lambda_g_ratio` times the theorem's bound for that band (default: the official
    setting's ratio, PAPER_LAMBDA_G_RATIO for Mag-ArcFace, PAPER_MAG_COSFACE_LAMBDA_G_RATIO for Mag-CosFace).
    Band and samples live in buffers, so checkpoints and resumes carry them."""

    CALIBRATION_SAMPLES = 4096

    def _init_magnitude(self, l_a, u_a, l_m, u_m, lambda_g, strict, max_margin, auto_quantiles, lambda_g_ratio):
        self.l_m = checks.real("l_m", l_m, low=0.0, high=max_margin)
        self.u_m = checks.real("u_m (must be >= l_m)", u_m, low=self.l_m, high=max_margin)
        if not isinstance(strict, bool):
            raise ValueError(f"strict must be True or False, got {strict!r}")
        self.strict = strict
        if (l_a == "auto") != (u_a == "auto"):
            raise ValueError(f"l_a={l_a!r}, u_a={u_a!r}: 'auto' calibrates the whole band, so give both as 'auto' "
                             "or both as numbers")
        self.auto_band = l_a == "auto"
        q = tuple(auto_quantiles) if isinstance(auto_quantiles, (list, tuple)) else auto_quantiles
        if not (isinstance(q, tuple) and len(q) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in q) and 0 <= q[0] < q[1] <= 1):
            raise ValueError(f"auto_quantiles={auto_quantiles!r}: expected two quantiles 0 <= low < high <= 1")
        self.auto_quantiles = tuple(float(v) for v in q)
        self._lambda_g_spec = "auto" if lambda_g == "auto" else checks.real("lambda_g (or 'auto')", lambda_g, low=0.0)
        self.lambda_g_ratio = checks.real("lambda_g_ratio", lambda_g_ratio, low=0.0, low_open=True)
        if self.auto_band:
            self.register_buffer("band", torch.full((3,), float("nan"), dtype=torch.float64))   # l_a, u_a, lambda_g
            self.register_buffer("calibration_norms", torch.zeros(self.CALIBRATION_SAMPLES))   # valid: [:seen]
            self.register_buffer("calibration_seen", torch.zeros((), dtype=torch.long))
            self._values = None
            return
        l_a = checks.real("l_a (or 'auto')", l_a, low=0.0, low_open=True)
        u_a = checks.real("u_a (must exceed l_a, or 'auto')", u_a, low=l_a, low_open=True)
        bound = magface_lambda_g_min(self.s, l_a, u_a, self.l_m, self.u_m)
        self._values = (l_a, u_a, self._resolve_lambda_g(bound))
        self._check_feasible(*self._values, stacklevel=4)

    # --- the band: fixed, or calibrated -------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return self._values is not None

    def _value(self, i: int) -> float:
        if self._values is None:
            raise RuntimeError(f"{self.name}: the 'auto' band is not calibrated yet (call calibrate() first)")
        return self._values[i]

    l_a = property(lambda self: self._value(0))
    u_a = property(lambda self: self._value(1))
    lambda_g = property(lambda self: self._value(2))

    def _hparam(self, name: str):
        """An "auto" band is recorded as "auto" (with its lambda_g as given): the calibrated numbers are in
        `calibration`. A fixed band records lambda_g = "auto" as the bound it resolves to."""
        if self.auto_band and name in ("l_a", "u_a", "lambda_g"):
            return self._lambda_g_spec if name == "lambda_g" else "auto"
        return super()._hparam(name)

    @property
    def calibration(self) -> dict | None:
        """The band in use: {l_a, u_a, lambda_g, lambda_g_min}, or None while an "auto" band is uncalibrated."""
        if not self.calibrated:
            return None
        return {"l_a": self.l_a, "u_a": self.u_a, "lambda_g": self.lambda_g, "lambda_g_min": self.lambda_g_min}

    @property
    def needs_calibration(self) -> bool:
        return self.auto_band and not self.calibrated

    def before_batch(self, norms):
        if self.training and self.needs_calibration:   # a ring of the latest training norms
            n = self.CALIBRATION_SAMPLES
            idx = (self.calibration_seen + torch.arange(len(norms), device=norms.device)) % n
            self.calibration_norms[idx[-n:]] = norms[-n:].to(self.calibration_norms.dtype)
            self.calibration_seen += len(norms)

    def calibrate(self) -> dict:
        """Set the "auto" band from the collected norms; returns what was measured and chosen."""
        if not self.auto_band:
            raise RuntimeError(f"{self.name}: calibrate() needs l_a = u_a = 'auto' (this head has a fixed band)")
        seen = int(self.calibration_seen)
        norms = self.calibration_norms[:min(seen, self.CALIBRATION_SAMPLES)].double()
        if len(norms) < 2:
            raise ValueError(f"{self.name}: cannot calibrate the band from {len(norms)} training norm(s); the "
                             "calibration point must come after some training steps")
        low, high = torch.quantile(norms, norms.new_tensor(self.auto_quantiles)).tolist()
        if not high > low * (1 + 1e-3):
            raise ValueError(f"{self.name}: the magnitudes have no spread to calibrate a band on: quantiles "
                             f"{self.auto_quantiles} of {len(norms)} training norms are {low:.4g} and {high:.4g}")
        if not low > 0:
            raise ValueError(f"{self.name}: the {self.auto_quantiles[0]} quantile of the training norms is {low:.4g}; "
                             "l_a must be > 0 (raise the lower of auto_quantiles)")
        bound = magface_lambda_g_min(self.s, low, high, self.l_m, self.u_m)
        values = (low, high, self._resolve_lambda_g(bound))
        self._check_feasible(*values, stacklevel=3)      # before the head changes: a strict failure leaves it as it was
        self.band.copy_(torch.tensor(values, dtype=torch.float64))
        self._values = values
        return {**self.calibration, "quantiles": list(self.auto_quantiles), "samples": len(norms),
                "magnitude_p50": float(norms.median())}

    def _resolve_lambda_g(self, bound: float) -> float:
        return self.lambda_g_ratio * bound if self._lambda_g_spec == "auto" else self._lambda_g_spec

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.auto_band:
            band = self.band.tolist()
            self._values = None if any(math.isnan(v) for v in band) else tuple(band)

    def _check_feasible(self, l_a: float, u_a: float, lambda_g: float, stacklevel: int) -> None:
        bound = magface_lambda_g_min(self.s, l_a, u_a, self.l_m, self.u_m)
        if lambda_g < bound:
            msg = (f"lambda_g={lambda_g:g} is below the feasibility bound {bound:.4f} = s*k*u_a^2*l_a^2/"
                   f"(u_a^2-l_a^2) for s={self.s:g}, l_a={l_a:g}, u_a={u_a:g}, l_m={self.l_m:g}, "
                   f"u_m={self.u_m:g}: hard samples' optimal magnitude sits at l_a and the convergence "
                   "theorem does not hold")
            if self.strict:
                raise ValueError(msg)
            warnings.warn(msg, FeasibilityWarning, stacklevel=stacklevel)

    @property
    def lambda_g_min(self) -> float:
        if not self.calibrated:
            return float("nan")
        return magface_lambda_g_min(self.s, self.l_a, self.u_a, self.l_m, self.u_m)

    # --- m(a) and g(a) ------------------------------------------------------------------------------------------
    def clamped_magnitude(self, norms):
        return norms.clamp(self.l_a, self.u_a) if self.calibrated else norms

    def margin(self, a):
        if not self.calibrated:       # before calibration: the constant margin l_m
            return torch.full_like(a, self.l_m)
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def regulariser(self, a):
        if not self.calibrated:
            return torch.zeros_like(a)
        return 1.0 / a + a / self.u_a**2

    def auxiliary(self, norms):
        return {"mag_g": (self.lambda_g if self.calibrated else 0.0)
                * self.regulariser(self.clamped_magnitude(norms)).mean()}

    def startup_check(self) -> str:
        """The lambda_g feasibility check the official trainer prints at start, with the actual s."""
        if not self.calibrated:
            return (f"magnitude band 'auto': margin l_m={self.l_m:g} and no g term until the band is calibrated "
                    f"from the {self.auto_quantiles} quantiles of the training magnitudes"
                    + (f", lambda_g = {self.lambda_g_ratio:.3g} x its bound" if self._lambda_g_spec == "auto" else ""))
        ok = self.lambda_g >= self.lambda_g_min
        verdict = "OK" if ok else "BELOW THE BOUND: the convergence theorem does not hold"
        return (f"lambda_g check: bound s*k*u_a^2*l_a^2/(u_a^2-l_a^2) = {self.lambda_g_min:.4f} for s={self.s:g}; "
                f"lambda_g = {self.lambda_g:g} -> {verdict}")

    def margin_applies(self, cos_target):
        """Which samples' target logits carry the margin m(a) (every one, unless a theta policy drops it)."""
        return torch.ones_like(cos_target, dtype=torch.bool)

    @torch.no_grad()
    def log_stats(self, norms, cos_target):
        """Whether the mechanism operates: the realised margin m(a) (mean, min, max, 5/50/95th percentiles) over
        the samples whose target logit carries it (under "easy", cos theta_y > 0: the others have no margin, and
        their magnitudes, pushed up by g alone, would count as a span that is not there; NaN if none), their share
        of the batch, the mean g(a), and the share of the batch whose norm lies inside [l_a, u_a], where m and g
        follow the norm (0 while an "auto" band is uncalibrated)."""
        a = self.clamped_magnitude(norms)
        applied = self.margin_applies(cos_target)
        m = self.margin(a[applied])
        nan = m.new_tensor(float("nan"))
        q = torch.quantile(m, m.new_tensor([0.05, 0.5, 0.95])) if len(m) else nan.repeat(3)
        spread = [m.mean(), m.min(), m.max()] if len(m) else [nan, nan, nan]
        inside = ((norms >= self.l_a) & (norms <= self.u_a)).to(a.dtype).mean() if self.calibrated else a.new_zeros(())
        values = torch.stack([*spread, *q, self.regulariser(a).mean(), inside,
                              applied.to(a.dtype).mean()]).tolist()
        return dict(zip(MAG_STATS, values, strict=True))


class MagFaceHead(_MagnitudeMarginHead):
    """Mag-ArcFace, the paper's MagFace. Defaults: the official code's s=64, l_a=10, u_a=110, l_m=0.45, u_m=0.8,
    lambda_g=35 (the paper text reports l_m=0.4). theta_policy defaults to the official code's "easy"
    (margin only where cos theta > 0); use "none" for the pure formula the theorem analyses."""

    name = "magface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, l_a: float = 10.0,
                 u_a: float = 110.0, l_m: float = 0.45, u_m: float = 0.8, lambda_g: float = 35.0,
                 theta_policy: str = "easy", grad_mode: str = "analytic", strict: bool = False,
                 auto_quantiles=(0.05, 0.95), lambda_g_ratio: float = PAPER_LAMBDA_G_RATIO,
                 sample_rate: float = 1.0, centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self.theta_policy = checks.choice("theta_policy", theta_policy, THETA_POLICIES)
        self.grad_mode = checks.choice("grad_mode", grad_mode, GRAD_MODES)
        self._init_magnitude(l_a, u_a, l_m, u_m, lambda_g, strict, math.pi, auto_quantiles, lambda_g_ratio)

    def target_logit(self, cos_y, norms):
        m = self.margin(self.clamped_magnitude(norms))
        return self.s * additive_angular_margin(cos_y, m, self.theta_policy, self.grad_mode)

    def margin_applies(self, cos_target):
        if self.theta_policy == "easy":       # additive_angular_margin keeps cos theta_y where it is <= 0
            return cos_target > 0
        return super().margin_applies(cos_target)


class MagCosFaceHead(_MagnitudeMarginHead):
    """Mag-CosFace (arXiv v4): target logit s * (cos theta_y - m(a)); the theorem needs no angle condition.
    Defaults from the official run_dist_cos.sh: l_m=0.35, u_m=0.8, lambda_g=150, s=64."""

    name = "mag_cosface"

    def __init__(self, num_classes: int, embedding_size: int, *, s: float = 64.0, l_a: float = 10.0,
                 u_a: float = 110.0, l_m: float = 0.35, u_m: float = 0.8, lambda_g: float = 150.0,
                 strict: bool = False, auto_quantiles=(0.05, 0.95),
                 lambda_g_ratio: float = PAPER_MAG_COSFACE_LAMBDA_G_RATIO, sample_rate: float = 1.0,
                 centre_init: str = "unit"):
        super().__init__(num_classes, embedding_size, s=s, sample_rate=sample_rate, centre_init=centre_init)
        self._init_magnitude(l_a, u_a, l_m, u_m, lambda_g, strict, None, auto_quantiles, lambda_g_ratio)

    def target_logit(self, cos_y, norms):
        return self.s * (cos_y - self.margin(self.clamped_magnitude(norms)))
