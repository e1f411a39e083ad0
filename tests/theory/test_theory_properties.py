"""Property-based checks of the theorem over random valid parameter sets, and searches that FIND
counterexamples when an assumption is dropped (so the assumptions are shown to matter)."""
import math

import numpy as np
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import theory

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SEARCH = settings(max_examples=5000, deadline=None, derandomize=True, database=None)


@st.composite
def magface_params(draw, lambda_factor=(1.01, 5.0), form="arc"):
    """Random valid (s, l_a, u_a, l_m, u_m) with u_m < pi/2, and lambda_g = factor * bound."""
    s = draw(st.floats(1.0, 100.0))
    l_a = draw(st.floats(0.5, 50.0))
    u_a = l_a + draw(st.floats(1.0, 200.0))
    l_m = draw(st.floats(0.0, 0.7))
    u_m = min(l_m + draw(st.floats(0.01, 0.8)), 1.5)
    bound = theory.lambda_g_min(s, l_a, u_a, l_m, u_m)
    lam = bound * draw(st.floats(*lambda_factor))
    return dict(s=s, lambda_g=lam, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m, form=form)


def lse_for(p, draw):
    return draw(st.floats(-p["s"], p["s"] + math.log(85741)))


def theta_inside(p, draw):
    """An angle with theta + u_m <= pi/2 (the theorem's condition)."""
    return draw(st.floats(0.0, math.pi / 2 - p["u_m"]))


@given(data=st.data())
@SETTINGS
def test_strictly_convex_with_unique_interior_optimum(data):
    p = data.draw(magface_params())
    cos_y = math.cos(theta_inside(p, data.draw))
    lse = lse_for(p, data.draw)
    a = np.linspace(p["l_a"], p["u_a"], 400)
    assert np.all(theory.magnitude_loss_d2(a, cos_y, lse, **p) > 0)
    opt = theory.optimal_magnitude(cos_y, lse, **p, full_output=True)
    assert int(opt.local_minima) == 1
    assert not bool(opt.at_lower)
    assert float(theory.magnitude_loss_d1(p["l_a"], cos_y, lse, **p)) < 0


@given(data=st.data())
@SETTINGS
def test_optimum_non_decreasing_in_cos_and_non_increasing_in_negatives(data):
    p = data.draw(magface_params())
    t1, t2 = sorted([theta_inside(p, data.draw), theta_inside(p, data.draw)])
    l1, l2 = sorted([lse_for(p, data.draw), lse_for(p, data.draw)])
    tol = 1e-9 * p["u_a"]
    a = theory.optimal_magnitude(np.cos([[t1], [t2]]), np.array([[l1, l2]]), **p)  # [theta, lse]
    assert a[0, 0] >= a[1, 0] - tol   # smaller angle (larger cos) -> larger a*
    assert a[0, 1] >= a[1, 1] - tol
    assert a[0, 0] >= a[0, 1] - tol   # larger lse_neg (harder negatives) -> smaller a*
    assert a[1, 0] >= a[1, 1] - tol


@given(data=st.data())
@SETTINGS
def test_mag_cosface_needs_no_angle_condition(data):
    p = data.draw(magface_params(form="cos"))
    c1, c2 = sorted([data.draw(st.floats(-1.0, 1.0)), data.draw(st.floats(-1.0, 1.0))])
    lse = lse_for(p, data.draw)
    a = np.linspace(p["l_a"], p["u_a"], 400)
    assert np.all(theory.magnitude_loss_d2(a, c1, lse, **p) > 0)
    a1, a2 = theory.optimal_magnitude(np.array([c1, c2]), lse, **p)
    assert a2 >= a1 - 1e-9 * p["u_a"]


def test_search_finds_boundary_optimum_when_lambda_g_is_below_the_bound():
    @st.composite
    def case(draw):
        p = draw(magface_params(lambda_factor=(0.0, 0.98)))
        return p, math.cos(draw(st.floats(0.0, math.pi))), lse_for(p, draw)

    p, cos_y, lse = find(case(), lambda c: theory.magnitude_loss_d1(c[0]["l_a"], c[1], c[2], **c[0]) >= 0,
                         settings=SEARCH)
    opt = theory.optimal_magnitude(cos_y, lse, **p, full_output=True)
    assert bool(opt.at_lower) and float(opt.a_star) == p["l_a"]
    assert p["lambda_g"] < theory.lambda_g_min(p["s"], p["l_a"], p["u_a"], p["l_m"], p["u_m"])


def test_search_finds_non_convexity_when_theta_plus_margin_passes_half_pi():
    @st.composite
    def case(draw):
        p = draw(magface_params())
        theta = draw(st.floats(math.pi / 2 - p["u_m"], math.pi))
        return p, math.cos(theta), lse_for(p, draw), draw(st.floats(p["l_a"], p["u_a"]))

    p, cos_y, lse, a = find(case(), lambda c: theory.magnitude_loss_d2(c[3], c[1], c[2], **c[0]) < 0,
                            settings=SEARCH)
    assert math.acos(cos_y) + float(theory.margin(a, l_a=p["l_a"], u_a=p["u_a"], l_m=p["l_m"], u_m=p["u_m"])) \
        > math.pi / 2
    assert p["lambda_g"] >= theory.lambda_g_min(p["s"], p["l_a"], p["u_a"], p["l_m"], p["u_m"])


def test_search_finds_non_monotone_optimum_when_theta_plus_margin_passes_half_pi():
    @st.composite
    def case(draw):
        p = draw(magface_params())
        t1 = draw(st.floats(math.pi / 2 - p["l_m"], math.pi - p["u_m"]))
        t2 = min(t1 + draw(st.floats(0.01, 0.5)), math.pi - p["u_m"])
        return p, t1, t2, lse_for(p, draw)

    def a_star_grows_with_angle(c):
        p, t1, t2, lse = c
        a1, a2 = theory.optimal_magnitude(np.cos([t1, t2]), lse, **p)
        return a2 > a1 + 1e-6 * p["u_a"]

    p, t1, t2, lse = find(case(), a_star_grows_with_angle, settings=SEARCH)
    assert t2 > t1 and t1 + p["l_m"] > math.pi / 2
