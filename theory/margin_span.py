"""How much of [l_m, u_m] can MagFace's margin span on a given batch if every magnitude sits at the theory's optimum?

The realised margin varies across samples only as much as the optimal magnitudes a* do, and a* is set by each
sample's (cos theta_y, lse_neg). Scaling the band and lambda_g by the same factor c scales every a* by c and the
theorem's bound by c (g(ca) with u_a -> c u_a is g(a)/c), so the span depends only on u_a / l_a and on lambda_g's
ratio to the bound: a two-parameter search covers every band. Why it is bounded: at lambda_g = bound and a narrow
band, the first-order condition reads (1 - P_y) sin(theta_y + m) = position of a* in the band (from the top), so
the margin spans [l_m, u_m] only if the batch holds both samples the model fits (P_y -> 1) and samples it misses.
(In a very wide band the position follows 1 / sqrt(1 + (1 - P_y) sin(theta_y + m) / (ratio (l_a/u_a)^2)): there
the span needs 1 - P_y to vary by orders of magnitude across the batch.) The search is over a grid, so the
"widest" span is a ceiling over the bands searched, u_a / l_a from 1.001 to 1e8, not a proof over all reals; on the
batches measured here it is reached as u_a / l_a -> 1 at the bound, where the narrowest band searched is within a
fraction of a per cent of the limit.
"""
from __future__ import annotations

import numpy as np

from .model import lambda_g_min, margin
from .optimum import optimal_magnitude

SPAN_QUANTILES = (0.05, 0.95)
# u_a / l_a: narrow bands use the spread of 1 - P_y, very wide ones its spread in orders of magnitude
RELATIVE_WIDTHS = (1.001, 1.01, 1.05, 1.1, 1.3, 2.0, 4.0, 10.0, 1e2, 1e3, 1e4, 1e6, 1e8)
LAMBDA_RATIOS = (1.0, 1.25, 1.55, 2.0, 3.0, 5.0)                          # lambda_g / the theorem's bound


def margin_span_share(a, *, l_a, u_a, l_m, u_m, quantiles=SPAN_QUANTILES) -> float:
    """(m(a_hi) - m(a_lo)) / (u_m - l_m) for the magnitudes' quantiles, a clamped to the band as the heads do."""
    if not u_m > l_m:
        raise ValueError(f"l_m={l_m}, u_m={u_m}: the span share needs u_m > l_m")
    lo, hi = np.quantile(np.clip(np.asarray(a, dtype=float), l_a, u_a), quantiles)
    m_lo, m_hi = margin(np.array([lo, hi]), l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m)
    return float((m_hi - m_lo) / (u_m - l_m))


def optimal_margin_span(cos_y, lse_neg, *, s, lambda_g, l_a, u_a, l_m, u_m, form="arc", theta_policy="none") -> float:
    """The span share of m(a*) over the samples for one band and lambda_g."""
    a_star = optimal_magnitude(cos_y, lse_neg, s=s, lambda_g=lambda_g, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m, form=form,
                               theta_policy=theta_policy)
    return margin_span_share(a_star, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m)


def widest_margin_span(cos_y, lse_neg, *, s, l_m, u_m, form="arc", theta_policy="none",
                       relative_widths=RELATIVE_WIDTHS, lambda_ratios=LAMBDA_RATIOS) -> dict:
    """The largest span share of m(a*) over bands u_a / l_a in `relative_widths` and lambda_g = ratio x bound with
    ratio in `lambda_ratios` (>= 1: below the bound the theorem gives no interior optimum). Returns {span,
    u_a_over_l_a, lambda_g_ratio}; the band is searched at l_a = 1 (the span is scale-free, see the module)."""
    if min(lambda_ratios) < 1:
        raise ValueError(f"lambda_ratios={tuple(lambda_ratios)}: the theorem needs lambda_g >= its bound (ratio >= 1)")
    if min(relative_widths) <= 1:
        raise ValueError(f"relative_widths={tuple(relative_widths)}: a band needs u_a / l_a > 1")
    cos_y, lse_neg = np.asarray(cos_y, dtype=float), np.asarray(lse_neg, dtype=float)
    best = {"span": -1.0}
    for width in relative_widths:
        bound = lambda_g_min(s, 1.0, width, l_m, u_m)
        for ratio in lambda_ratios:
            span = optimal_margin_span(cos_y, lse_neg, s=s, lambda_g=ratio * bound, l_a=1.0, u_a=width, l_m=l_m,
                                       u_m=u_m, form=form, theta_policy=theta_policy)
            if span > best["span"]:
                best = {"span": span, "u_a_over_l_a": float(width), "lambda_g_ratio": float(ratio)}
    return best
