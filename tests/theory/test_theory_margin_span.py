"""theory.margin_span: how much of [l_m, u_m] the optimal margins m(a*) of a batch can span, and why it is bounded."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import theory
from theory.model import loss_terms

MARGINS = dict(l_m=0.45, u_m=0.8)


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.05, 50.0), width=st.floats(1.01, 20.0), ratio=st.floats(1.0, 6.0), seed=st.integers(0, 99))
def test_the_span_is_scale_free(c, width, ratio, seed):
    """Band x c and lambda_g x c give a* x c and the same span: the search over u_a / l_a alone covers every band."""
    rng = np.random.default_rng(seed)
    cos, lse = rng.uniform(0.05, 0.95, 40), rng.uniform(5, 30, 40)
    spans = []
    for scale in (1.0, c):
        bound = theory.lambda_g_min(32.0, scale, scale * width, **MARGINS)
        spans.append(theory.optimal_margin_span(cos, lse, s=32.0, lambda_g=ratio * bound, l_a=scale,
                                                u_a=scale * width, **MARGINS, theta_policy="easy"))
    assert spans[0] == pytest.approx(spans[1], abs=1e-6)


def test_widest_span_is_at_least_the_span_of_any_searched_band_at_any_scale():
    rng = np.random.default_rng(1)
    cos, lse = rng.uniform(0.3, 0.95, 64), rng.uniform(15, 30, 64)
    best = theory.widest_margin_span(cos, lse, s=32.0, **MARGINS, theta_policy="easy")
    for width in theory.margin_span.RELATIVE_WIDTHS[::3]:
        for ratio in theory.margin_span.LAMBDA_RATIOS[::2]:
            l_a = 7.0
            lam = ratio * theory.lambda_g_min(32.0, l_a, l_a * width, **MARGINS)
            span = theory.optimal_margin_span(cos, lse, s=32.0, lambda_g=lam, l_a=l_a, u_a=l_a * width, **MARGINS,
                                              theta_policy="easy")
            assert span <= best["span"] + 1e-9
    assert best["lambda_g_ratio"] >= 1 and best["u_a_over_l_a"] > 1


def test_at_the_bound_in_a_narrow_band_the_optimum_sits_where_one_minus_p_times_sin_says():
    """The module's reason for the ceiling: with lambda_g at the bound, L'(a) = 0 reads
    (1 - P_y) sin(theta_y + m) = (1/a^2 - 1/u_a^2) / (1/l_a^2 - 1/u_a^2), about 1 - x for a narrow band,
    where x = (a - l_a) / (u_a - l_a): samples the model fits (P_y -> 1) sit at the top, missed ones at the bottom."""
    cos, lse = np.array([0.2, 0.5, 0.7, 0.9]), np.array([10.0, 12.0, 14.0, 9.0])
    l_a, u_a, s = 10.0, 10.01, 32.0
    lam = theory.lambda_g_min(s, l_a, u_a, **MARGINS)
    a = theory.optimal_magnitude(cos, lse, s=s, lambda_g=lam, l_a=l_a, u_a=u_a, **MARGINS)
    x = (a - l_a) / (u_a - l_a)
    _, q, _, sin_t, _ = loss_terms(a, cos, lse, s, lam, l_a, u_a, MARGINS["l_m"], MARGINS["u_m"], "arc")
    assert x == pytest.approx(1 - q * sin_t, abs=2e-3)
    assert np.ptp(x) > 0.5       # these four samples range from missed to fitted


def test_alike_samples_leave_little_span_and_a_batch_from_missed_to_fitted_a_wide_one():
    alike = theory.widest_margin_span(0.9 + np.linspace(0, 0.002, 50), np.full(50, 20.0), s=32.0, **MARGINS)
    mixed = theory.widest_margin_span(np.linspace(0.05, 0.95, 50), np.full(50, 10.0), s=32.0, **MARGINS)
    assert alike["span"] < 0.05 and mixed["span"] > 0.8


def test_bad_search_grids_and_margins_are_refused():
    with pytest.raises(ValueError, match="ratio >= 1"):
        theory.widest_margin_span([0.5], [10.0], s=32.0, **MARGINS, lambda_ratios=(0.5, 1.0))
    with pytest.raises(ValueError, match="u_a / l_a > 1"):
        theory.widest_margin_span([0.5], [10.0], s=32.0, **MARGINS, relative_widths=(1.0, 2.0))
    with pytest.raises(ValueError, match="u_m > l_m"):
        theory.margin_span_share([1.0, 2.0], l_a=1.0, u_a=2.0, l_m=0.5, u_m=0.5)
