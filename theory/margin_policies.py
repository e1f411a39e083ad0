"""The additive angular margin's target logit cos(theta_y + m) and its gradient in cos theta_y under each theta
policy, in closed form: where the gradient vanishes, training from scratch stalls.

With c = cos theta_y, the analytic gradient of cos(theta_y + m) = c cos m - sqrt(1 - c^2) sin m is
    d/dc cos(theta_y + m) = cos m + c sin m / sqrt(1 - c^2) = sin(theta_y + m) / sin(theta_y),
zero at theta_y = pi - m and negative beyond (the pure formula rewards a sample for moving away from its centre).
"easy" replaces the margin by c where c <= 0 (gradient 1); "threshold" replaces it by c - m sin m where
theta_y >= pi - m (gradient 1), so samples reaching theta_y = pi - m from below meet a gradient falling to zero:
the dead band. A straight-through gradient (insightface's arcface_torch) is 1 everywhere.
"""
from __future__ import annotations

import numpy as np

POLICIES = ("none", "easy", "threshold")


def target_and_gradient(cos_y, m: float, theta_policy: str = "none", grad_mode: str = "analytic"):
    """(cos(theta_y + m) under the policy, its derivative in cos theta_y), unscaled (multiply both by s)."""
    if theta_policy not in POLICIES or grad_mode not in ("analytic", "straight_through"):
        raise ValueError(f"theta_policy={theta_policy!r} / grad_mode={grad_mode!r}: expected one of {POLICIES} "
                         "and 'analytic' or 'straight_through'")
    c = np.clip(np.asarray(cos_y, float), -1 + 1e-6, 1 - 1e-6)
    theta = np.arccos(c)
    value = np.cos(theta + m)
    grad = np.sin(theta + m) / np.sin(theta) if grad_mode == "analytic" else np.ones_like(c)
    if theta_policy == "easy":
        fallback = c <= 0
        value, grad = np.where(fallback, c, value), np.where(fallback, 1.0, grad)
    elif theta_policy == "threshold":
        fallback = c <= np.cos(np.pi - m)
        value, grad = np.where(fallback, c - m * np.sin(m), value), np.where(fallback, 1.0, grad)
    return value, grad
