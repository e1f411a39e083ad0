"""MagFace's per-sample loss as a function of the feature magnitude a, in float64 closed form.

With the direction of the feature fixed, the negatives enter only through
    lse_neg = log sum_{j != y} exp(s cos theta_j),
and the loss of sample i is (paper Eq. 2, the pure formula: no easy-margin or threshold rule)
    L(a) = log(1 + exp(lse_neg - A(a))) + lambda_g g(a),
    A(a) = s cos(theta_y + m(a))   ("arc", Mag-ArcFace = MagFace)   or   s (cos theta_y - m(a))   ("cos"),
    m(a) = k (a - l_a) + l_m,  k = (u_m - l_m) / (u_a - l_a),      g(a) = 1/a + a / u_a^2.
Write q = sigmoid(lse_neg - A) (one minus the target probability P) and t = theta_y + m(a). Then
    arc: L'  = s q sin(t) m' + lambda_g g'
         L'' = s^2 P q sin(t)^2 m'^2 + s q cos(t) m'^2 + s q sin(t) m'' + lambda_g g''
    cos: L'  = s q m' + lambda_g g'
         L'' = s^2 P q m'^2 + s q m'' + lambda_g g''
Every function broadcasts over arrays of a, cos_y, lse_neg and the parameters.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

FORMS = ("arc", "cos")


def as_float_array(name, value):
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def check_params(*, s, lambda_g, l_a, u_a, l_m, u_m, form="arc"):
    """Validate MagFace parameters (arrays allowed); return them as float64 arrays."""
    s, lambda_g, l_a, u_a, l_m, u_m = (as_float_array(n, v) for n, v in
                                       (("s", s), ("lambda_g", lambda_g), ("l_a", l_a), ("u_a", u_a),
                                        ("l_m", l_m), ("u_m", u_m)))
    if form not in FORMS:
        raise ValueError(f"form={form!r} is not one of {FORMS}")
    if np.any(s <= 0):
        raise ValueError(f"s={s} must be > 0")
    if np.any(lambda_g < 0):
        raise ValueError(f"lambda_g={lambda_g} must be >= 0")
    if np.any(l_a <= 0):
        raise ValueError(f"l_a={l_a} must be > 0 (g(a) = 1/a + a/u_a^2 needs a positive magnitude)")
    if np.any(u_a <= l_a):
        raise ValueError(f"l_a={l_a} must be < u_a={u_a}")
    if np.any(l_m < 0) or np.any(u_m < l_m):
        raise ValueError(f"margins must satisfy 0 <= l_m <= u_m, got l_m={l_m}, u_m={u_m}")
    return s, lambda_g, l_a, u_a, l_m, u_m


def _check_point(a, cos_y, lse_neg, l_a, u_a):
    a, cos_y, lse_neg = as_float_array("a", a), as_float_array("cos_y", cos_y), as_float_array("lse_neg", lse_neg)
    if np.any(np.abs(cos_y) > 1):
        raise ValueError(f"cos_y must lie in [-1, 1], got values up to {np.max(np.abs(cos_y))}")
    if np.any(a < l_a * (1 - 1e-12)) or np.any(a > u_a * (1 + 1e-12)):
        raise ValueError(f"a must lie in the band [l_a, u_a] = [{np.min(l_a)}, {np.max(u_a)}], "
                         f"got range [{np.min(a)}, {np.max(a)}]")
    return a, cos_y, lse_neg


def _prepare(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form):
    """Validated float64 arrays (a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m) for the public functions."""
    s, lambda_g, l_a, u_a, l_m, u_m = check_params(s=s, lambda_g=lambda_g, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m,
                                                   form=form)
    a, cos_y, lse_neg = _check_point(a, cos_y, lse_neg, l_a, u_a)
    return a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m


def margin(a, *, l_a, u_a, l_m, u_m):
    return (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m


def regulariser(a, *, u_a):
    return 1.0 / a + a / u_a**2


def regulariser_d1(a, *, u_a):
    return -1.0 / a**2 + 1.0 / u_a**2


def regulariser_d2(a):
    return 2.0 / a**3


def lse_from_cosines(neg_cos, s, axis=-1):
    """lse_neg from the cosines to the negative class centres (the last axis by default)."""
    return np.logaddexp.reduce(s * as_float_array("neg_cos", neg_cos), axis=axis)


def loss_terms(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form):
    """Shared pieces: target logit A, q = 1 - P, and sin/cos of t (arc form) at each a."""
    m = margin(a, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m)
    if form == "arc":
        t = np.arccos(np.clip(cos_y, -1.0, 1.0)) + m
        target = s * np.cos(t)
        sin_t, cos_t = np.sin(t), np.cos(t)
    else:
        target = s * (cos_y - m)
        sin_t, cos_t = np.ones_like(target), np.zeros_like(target)
    z = lse_neg - target
    return z, expit(z), expit(-z), sin_t, cos_t


def magnitude_loss(a, cos_y, lse_neg, *, s, lambda_g, l_a, u_a, l_m, u_m, form="arc"):
    """L_i(a): cross-entropy with the magnitude-aware margin plus lambda_g g(a)."""
    a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m = _prepare(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m,
                                                                  form)
    z = loss_terms(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form)[0]
    return np.logaddexp(0.0, z) + lambda_g * regulariser(a, u_a=u_a)


def magnitude_loss_d1(a, cos_y, lse_neg, *, s, lambda_g, l_a, u_a, l_m, u_m, form="arc"):
    """dL/da in closed form."""
    return raw_d1(*_prepare(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form), form)


def raw_d1(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form):
    _, q, _, sin_t, _ = loss_terms(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form)
    k = (u_m - l_m) / (u_a - l_a)
    return s * q * sin_t * k + lambda_g * regulariser_d1(a, u_a=u_a)


def magnitude_loss_d2(a, cos_y, lse_neg, *, s, lambda_g, l_a, u_a, l_m, u_m, form="arc"):
    """d2L/da2 in closed form (m is linear, so the m'' term vanishes)."""
    return raw_d2(*_prepare(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form), form)


def raw_d2(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form):
    _, q, p, sin_t, cos_t = loss_terms(a, cos_y, lse_neg, s, lambda_g, l_a, u_a, l_m, u_m, form)
    k = (u_m - l_m) / (u_a - l_a)
    return s**2 * p * q * sin_t**2 * k**2 + s * q * cos_t * k**2 + lambda_g * regulariser_d2(a)


def lambda_g_min(s, l_a, u_a, l_m, u_m):
    """The smallest lambda_g for which every sample has an interior optimum: s k u_a^2 l_a^2 / (u_a^2 - l_a^2).

    Derivation. The optimum leaves the lower end of the band only if L'(l_a) < 0. With the formula above,
        L'(l_a) = s q sin(t) k + lambda_g g'(l_a),   g'(l_a) = -(1/l_a^2 - 1/u_a^2) < 0.
    The first term is largest for the hardest possible sample: q -> 1 (the negatives dominate, P -> 0),
    sin(t) = 1 (t = theta_y + l_m = pi/2) and the steepest margin slope k = (u_m - l_m)/(u_a - l_a). In that worst
    case L'(l_a) <= s k - lambda_g (1/l_a^2 - 1/u_a^2), which is <= 0 iff
        lambda_g >= s k / (1/l_a^2 - 1/u_a^2) = s k u_a^2 l_a^2 / (u_a^2 - l_a^2).
    For Mag-CosFace sin(t) is replaced by 1, so the bound is the same. The worst case is a supremum (q < 1 for
    any finite lse_neg), so at lambda_g equal to the bound L'(l_a) < 0 still holds for every finite sample.
    At the upper end g'(u_a) = 0, so L'(u_a) = s q sin(t) k > 0 whenever 0 < t < pi: the optimum is never at u_a.
    """
    s, _, l_a, u_a, l_m, u_m = check_params(s=s, lambda_g=0.0, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m)
    k = (u_m - l_m) / (u_a - l_a)
    out = s * k * u_a**2 * l_a**2 / (u_a**2 - l_a**2)
    return float(out) if np.ndim(out) == 0 else out


def assumption_holds(cos_y, *, u_m, form="arc"):
    """The theorem's angle condition: theta_y + m(a) <= pi/2 for every a in the band (i.e. at u_m).
    Mag-CosFace needs no angle condition."""
    cos_y = as_float_array("cos_y", cos_y)
    if form == "cos":
        return np.ones(cos_y.shape, dtype=bool)
    return np.arccos(np.clip(cos_y, -1, 1)) + u_m <= np.pi / 2
