"""Machine checks of the paper's two properties on dense grids, with structured reports and counterexamples.

Convergence: L(a) strictly convex on [l_a, u_a] (so a* is unique).  Checked as min L'' > 0 over the grid.
Existence:   the optimum is interior (L'(l_a) < 0), which is what the lambda_g bound buys.
Monotonicity: a* non-decreasing in cos theta_y and non-increasing in lse_neg (harder negatives -> smaller a*).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .model import check_params, lambda_g_min, raw_d1, raw_d2
from .optimum import optimal_magnitude

MS1MV2_NEGATIVES = 85741  # classes other than the own one in MS1MV2
A_TOL = 1e-7              # relative (to u_a) tolerance on a* when comparing neighbours


@dataclass(frozen=True)
class MagParams:
    """One MagFace setting. Defaults: the official code (s=64, l_a=10, u_a=110, l_m=0.45, u_m=0.8, lambda_g=35)."""
    s: float = 64.0
    lambda_g: float = 35.0
    l_a: float = 10.0
    u_a: float = 110.0
    l_m: float = 0.45
    u_m: float = 0.8
    form: str = "arc"

    def __post_init__(self):
        check_params(**self.kwargs())

    def kwargs(self) -> dict:
        return dict(s=self.s, lambda_g=self.lambda_g, l_a=self.l_a, u_a=self.u_a, l_m=self.l_m, u_m=self.u_m,
                    form=self.form)

    def args(self) -> tuple:
        return (self.s, self.lambda_g, self.l_a, self.u_a, self.l_m, self.u_m)

    @property
    def lambda_g_min(self) -> float:
        return lambda_g_min(self.s, self.l_a, self.u_a, self.l_m, self.u_m)

    def replace(self, **changes) -> MagParams:
        return MagParams(**{**self.kwargs(), **changes})


@dataclass(frozen=True)
class Grid:
    """Points (cos_y, lse_neg) at which a property is checked, with n_a magnitudes across the band."""
    cos_y: np.ndarray
    lse_neg: np.ndarray
    n_a: int = 100

    @property
    def size(self) -> int:
        return len(self.cos_y) * len(self.lse_neg) * self.n_a

    @classmethod
    def full(cls, params: MagParams, n: int = 100) -> Grid:
        """All angles and every lse_neg that 1 to 85,741 negatives with cosines in [-1, 1] can produce."""
        return cls(np.cos(np.linspace(1e-3, math.pi - 1e-3, n)),
                   np.linspace(-params.s, params.s + math.log(MS1MV2_NEGATIVES), n), n)

    @classmethod
    def within_assumption(cls, params: MagParams, n: int = 100) -> Grid:
        """As `full`, but only angles with theta_y + u_m <= pi/2 (the theorem's condition for Mag-ArcFace)."""
        theta_max = math.pi / 2 - params.u_m if params.form == "arc" else math.pi - 1e-3
        return cls(np.cos(np.linspace(1e-3, theta_max, n)), cls.full(params, n).lse_neg, n)


@dataclass
class Report:
    prop: str
    holds: bool
    worst: float                     # the extreme value of the checked quantity (see `measure`)
    measure: str                     # what `worst` is
    counterexample: dict | None      # coordinates of the worst violation, None when the property holds
    n_points: int
    n_violations: int
    seconds: float
    notes: dict = field(default_factory=dict)

    def __str__(self):
        verdict = "holds" if self.holds else f"FAILS at {self.n_violations} of {self.n_points} points"
        text = f"{self.prop}: {verdict}; {self.measure} = {self.worst:.4g} ({self.seconds:.2f} s)"
        if self.counterexample:
            text += "\n  counterexample: " + ", ".join(f"{k}={v:.6g}" for k, v in self.counterexample.items())
        return text


def _coords(cos_y, lse, a=None, **extra):
    out = {"cos_y": float(cos_y), "theta": float(np.arccos(cos_y)), "lse_neg": float(lse)}
    if a is not None:
        out["a"] = float(a)
    out.update({k: float(v) for k, v in extra.items()})
    return out


def check_convexity(params: MagParams | None = None, grid: Grid | None = None) -> Report:
    """Strict convexity of L in a: min over the grid of the closed-form L''(a) must be > 0."""
    params = params or MagParams()
    grid = grid or Grid.full(params)
    t0 = time.perf_counter()
    a = np.linspace(params.l_a, params.u_a, grid.n_a)
    d2 = raw_d2(a[None, None, :], grid.cos_y[:, None, None], grid.lse_neg[None, :, None], *params.args(), params.form)
    seconds = time.perf_counter() - t0
    bad = d2 <= 0
    i, j, k = np.unravel_index(np.argmin(d2), d2.shape)
    worst = float(d2[i, j, k])
    counter = _coords(grid.cos_y[i], grid.lse_neg[j], a[k], d2L_da2=worst) if bad.any() else None
    return Report("convexity", not bad.any(), worst, "min d2L/da2", counter, d2.size, int(bad.sum()), seconds)


def check_interior_optimum(params: MagParams | None = None, grid: Grid | None = None) -> Report:
    """Existence of an interior optimum: L'(l_a) < 0 for every (cos_y, lse_neg) on the grid."""
    params = params or MagParams()
    grid = grid or Grid.full(params)
    t0 = time.perf_counter()
    d1 = raw_d1(np.float64(params.l_a), grid.cos_y[:, None], grid.lse_neg[None, :], *params.args(), params.form)
    seconds = time.perf_counter() - t0
    bad = d1 >= 0
    i, j = np.unravel_index(np.argmax(d1), d1.shape)
    worst = float(d1[i, j])
    counter = _coords(grid.cos_y[i], grid.lse_neg[j], params.l_a, dL_da_at_l_a=worst) if bad.any() else None
    return Report("interior optimum", not bad.any(), worst, "max dL/da at l_a", counter, d1.size,
                  int(bad.sum()), seconds, {"lambda_g_min": params.lambda_g_min})


def check_monotonicity(params: MagParams | None = None, grid: Grid | None = None) -> Report:
    """a* non-decreasing in cos_y (at fixed lse_neg) and non-increasing in lse_neg (at fixed cos_y)."""
    params = params or MagParams()
    grid = grid or Grid.full(params)
    t0 = time.perf_counter()
    order_c, order_l = np.argsort(grid.cos_y), np.argsort(grid.lse_neg)
    cos_y, lse = grid.cos_y[order_c], grid.lse_neg[order_l]
    opt = optimal_magnitude(cos_y[:, None], lse[None, :], **params.kwargs(), full_output=True,
                            grid_points=max(grid.n_a, 65))
    a_star = opt.a_star
    seconds = time.perf_counter() - t0
    tol = A_TOL * params.u_a
    step_cos = np.diff(a_star, axis=0)    # must be >= -tol
    step_lse = -np.diff(a_star, axis=1)   # must be >= -tol
    bad_cos, bad_lse = step_cos < -tol, step_lse < -tol
    worst_cos = float(step_cos.min()) if step_cos.size else 0.0
    worst_lse = float(step_lse.min()) if step_lse.size else 0.0
    counter = None
    if bad_cos.any() and worst_cos <= worst_lse:
        i, j = np.unravel_index(np.argmin(step_cos), step_cos.shape)
        counter = _coords(cos_y[i], lse[j], a_star[i, j], cos_y_next=cos_y[i + 1], a_star_next=a_star[i + 1, j])
    elif bad_lse.any():
        i, j = np.unravel_index(np.argmin(step_lse), step_lse.shape)
        counter = _coords(cos_y[i], lse[j], a_star[i, j], lse_neg_next=lse[j + 1], a_star_next=a_star[i, j + 1])
    n_bad = int(bad_cos.sum() + bad_lse.sum())
    notes = {"holds_in_cos_y": not bad_cos.any(), "holds_in_lse_neg": not bad_lse.any(),
             "unique_optimum": bool(np.all(opt.local_minima == 1)), "at_lower": int(opt.at_lower.sum()),
             "a_star": a_star, "cos_y": cos_y, "lse_neg": lse}
    return Report("monotonicity", n_bad == 0, min(worst_cos, worst_lse),
                  "most negative step of a* (toward easier samples)", counter,
                  step_cos.size + step_lse.size, n_bad, seconds, notes)


@dataclass
class ValidityMap:
    """Boolean maps over (y-axis values, theta): where each property holds."""
    theta: np.ndarray
    axis_name: str                 # "lambda_g" or "lse_neg"
    axis: np.ndarray
    convex: np.ndarray             # [len(axis), len(theta)] min over the band of L'' > 0
    interior: np.ndarray           # optimum strictly inside the band
    unique: np.ndarray             # exactly one local minimum
    monotone: np.ndarray           # a* does not increase when theta grows to the next grid value
    a_star: np.ndarray
    params: MagParams
    fixed: float                   # the lse_neg (for a lambda_g map) or lambda_g (for an lse_neg map) held fixed


def validity_map(params: MagParams | None = None, theta=None, axis_name: str = "lambda_g", axis=None,
                 fixed: float | None = None, n_a: int = 200) -> ValidityMap:
    """Where convexity, an interior optimum and monotonicity hold, over theta and lambda_g or lse_neg."""
    params = params or MagParams()
    theta = np.linspace(0.01, math.pi - 0.01, 180) if theta is None else np.sort(np.asarray(theta, float))
    if axis_name == "lambda_g":
        axis = np.linspace(0.0, 3 * params.lambda_g_min, 121) if axis is None else np.asarray(axis, float)
        fixed = math.log(MS1MV2_NEGATIVES) if fixed is None else fixed
        lam, lse = axis[:, None], np.float64(fixed)
    elif axis_name == "lse_neg":
        axis = Grid.full(params, 121).lse_neg if axis is None else np.asarray(axis, float)
        fixed = params.lambda_g if fixed is None else fixed
        lam, lse = np.float64(fixed), axis[:, None]
    else:
        raise ValueError(f"axis_name={axis_name!r} is not one of ('lambda_g', 'lse_neg')")
    p = params.replace(lambda_g=0.0).kwargs()
    del p["lambda_g"]
    cos_y = np.cos(theta)[None, :]
    a = np.linspace(params.l_a, params.u_a, n_a)
    d2 = raw_d2(a, cos_y[..., None], np.asarray(lse)[..., None] if np.ndim(lse) else lse,
             params.s, np.asarray(lam)[..., None] if np.ndim(lam) else lam,
             params.l_a, params.u_a, params.l_m, params.u_m, params.form)
    opt = optimal_magnitude(cos_y, lse, lambda_g=lam, **p, full_output=True)
    a_star = np.broadcast_to(opt.a_star, (len(axis), len(theta)))
    step = np.diff(a_star, axis=1) <= A_TOL * params.u_a   # theta grows -> a* must not grow
    monotone = np.concatenate([step, step[:, -1:]], axis=1)
    return ValidityMap(theta, axis_name, axis, np.broadcast_to(d2.min(axis=-1) > 0, a_star.shape),
                       np.broadcast_to(~opt.at_lower & ~opt.at_upper, a_star.shape),
                       np.broadcast_to(opt.local_minima == 1, a_star.shape), monotone, a_star, params, fixed)
