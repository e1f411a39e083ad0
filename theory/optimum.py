"""The optimal magnitude a* = argmin over [l_a, u_a] of L_i(a), vectorised.

A coarse grid locates the global minimum (L need not be convex outside the theorem's assumptions, so a root of
L' alone could be a maximum or a non-global minimum); the bracket around it is then refined by a vectorised
bracketing root finder on the closed-form L' (scipy's Chandrupatla solver, brentq's elementwise sibling).
Minima at the ends of the band are reported as boundary optima, not refined.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import elementwise

from .model import as_float_array, check_params, magnitude_loss, raw_d1

GRID_POINTS = 257


@dataclass
class Optimum:
    a_star: np.ndarray         # the global minimiser in [l_a, u_a]
    at_lower: np.ndarray       # bool: a* = l_a because L'(l_a) >= 0 (lambda_g too small for this sample)
    at_upper: np.ndarray       # bool: a* = u_a because L'(u_a) <= 0
    local_minima: np.ndarray   # int: number of local minima of L on the band (1 = unique optimum)


THETA_POLICIES = ("none", "easy")


def optimal_magnitude(cos_y, lse_neg, *, s, lambda_g, l_a, u_a, l_m, u_m, form="arc", theta_policy="none",
                      full_output=False, grid_points=GRID_POINTS):
    """a* for each (cos_y, lse_neg, parameters) after broadcasting; `full_output=True` returns an Optimum.
    theta_policy "none" is the pure formula; "easy" is the official code's rule (no margin where cos theta_y <= 0):
    there the loss depends on a through lambda_g g(a) alone, which falls on the whole band, so a* = u_a."""
    if theta_policy not in THETA_POLICIES:
        raise ValueError(f"theta_policy={theta_policy!r}: the optimum is derived for {THETA_POLICIES}")
    s, lambda_g, l_a, u_a, l_m, u_m = check_params(s=s, lambda_g=lambda_g, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m,
                                                   form=form)
    cos_y, lse_neg = as_float_array("cos_y", cos_y), as_float_array("lse_neg", lse_neg)
    shape = np.broadcast_shapes(cos_y.shape, lse_neg.shape, s.shape, lambda_g.shape, l_a.shape, u_a.shape,
                                l_m.shape, u_m.shape)
    args = [np.broadcast_to(v, shape)[..., None] for v in (cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m)]
    cy, lse, s_, lam, la, ua, lm, um = args
    frac = np.linspace(0.0, 1.0, grid_points)
    grid = la + (ua - la) * frac                                          # shape + (n,)
    loss = magnitude_loss(grid, cy, lse, s=s_, lambda_g=lam, l_a=la, u_a=ua, l_m=lm, u_m=um, form=form)
    d1 = raw_d1(grid, cy, lse, s_, lam, la, ua, lm, um, form)
    i = np.argmin(loss, axis=-1)
    take = lambda arr, j: np.take_along_axis(arr, j[..., None], axis=-1)[..., 0]  # noqa: E731
    at_lower = (i == 0) & (d1[..., 0] >= 0)
    at_upper = (i == grid_points - 1) & (d1[..., -1] <= 0)
    lo_idx, hi_idx = np.clip(i - 1, 0, grid_points - 1), np.clip(i + 1, 0, grid_points - 1)
    lo, hi = take(grid, lo_idx), take(grid, hi_idx)
    d_lo, d_hi = take(d1, lo_idx), take(d1, hi_idx)
    a_star = take(grid, i)
    refine = ~at_lower & ~at_upper & (d_lo < 0) & (d_hi > 0)
    if np.any(refine):
        sub = [np.broadcast_to(v[..., 0], shape)[refine] for v in args]
        res = elementwise.find_root(
            lambda a, *p: raw_d1(a, *p, form), (lo[refine], hi[refine]), args=tuple(sub),
            tolerances={"xatol": 1e-12, "xrtol": 4 * np.finfo(float).eps})
        a_star[refine] = res.x
    a_star[at_lower] = np.broadcast_to(l_a, shape)[at_lower]
    a_star[at_upper] = np.broadcast_to(u_a, shape)[at_upper]
    if theta_policy == "easy":
        no_margin = np.broadcast_to(cos_y, shape) <= 0
        a_star[no_margin] = np.broadcast_to(u_a, shape)[no_margin]
        at_upper = at_upper | no_margin
        at_lower = at_lower & ~no_margin
    # local minima: interior sign changes of L' from - to +, plus minima at either end
    interior = np.sum((d1[..., :-1] < 0) & (d1[..., 1:] >= 0), axis=-1)
    local_minima = interior + (d1[..., 0] >= 0) + (d1[..., -1] <= 0)
    if full_output:
        return Optimum(a_star, at_lower, at_upper, local_minima)
    return a_star
