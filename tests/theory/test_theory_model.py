"""Closed-form L, L', L'' against finite differences, the MagFace head's autograd, and the paper's numbers."""
import math

import numpy as np
import pytest
import torch

import theory
from losses import build_head, magface_lambda_g_min

PAPER = dict(s=64.0, lambda_g=35.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8)


@pytest.mark.parametrize("form", ["arc", "cos"])
def test_derivatives_match_finite_differences(form):
    rng = np.random.default_rng(0)
    a = rng.uniform(11, 109, 400)
    cos_y = rng.uniform(-0.95, 0.95, 400)
    lse = rng.uniform(-30, 70, 400)
    kw = dict(PAPER, form=form)
    h = 1e-4
    L = lambda x: theory.magnitude_loss(x, cos_y, lse, **kw)  # noqa: E731
    d1 = theory.magnitude_loss_d1(a, cos_y, lse, **kw)
    d2 = theory.magnitude_loss_d2(a, cos_y, lse, **kw)
    np.testing.assert_allclose(d1, (L(a + h) - L(a - h)) / (2 * h), rtol=1e-6, atol=1e-9)
    d1f = lambda x: theory.magnitude_loss_d1(x, cos_y, lse, **kw)  # noqa: E731
    np.testing.assert_allclose(d2, (d1f(a + h) - d1f(a - h)) / (2 * h), rtol=1e-6, atol=1e-10)


def head_loss_along_norm(head, weight, direction, label, a):
    """(loss, dloss/da) of the implemented head for one sample x = a * direction, in float64."""
    head.weight.data.copy_(weight)
    a_t = torch.tensor(float(a), dtype=torch.float64, requires_grad=True)
    out = head((a_t * direction)[None], torch.tensor([label]))
    (grad,) = torch.autograd.grad(out.loss, a_t)
    return out.loss.item(), grad.item(), out


@pytest.mark.parametrize("head_name,form", [("magface", "arc"), ("mag_cosface", "cos")])
def test_theory_agrees_with_the_head_autograd(head_name, form):
    """The one place theory meets losses/: same L(a) and dL/da to 1e-8 in float64 (pure formula, no easy rule)."""
    gen = torch.Generator().manual_seed(3)
    C, d = 50, 16
    params = dict(s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0)
    extra = {"theta_policy": "none"} if head_name == "magface" else {}
    head = build_head(head_name, C, d, **params, **extra).double()
    for trial in range(6):
        weight = torch.randn(C, d, generator=gen, dtype=torch.float64)
        label = trial
        centre = torch.nn.functional.normalize(weight[label], dim=0)
        noise = torch.nn.functional.normalize(torch.randn(d, generator=gen, dtype=torch.float64), dim=0)
        direction = torch.nn.functional.normalize(centre + (0.3 + 0.3 * trial) * noise, dim=0)
        cos_all = torch.nn.functional.normalize(weight, dim=1) @ direction
        cos_y = cos_all[label].item()
        lse = torch.logsumexp(64.0 * torch.cat([cos_all[:label], cos_all[label + 1:]]), 0).item()
        assert lse == pytest.approx(float(theory.lse_from_cosines(
            np.delete(cos_all.numpy(), label), 64.0)), rel=1e-13)
        for a in (12.0, 35.5, 71.0, 108.0):
            loss, grad, out = head_loss_along_norm(head, weight, direction, label, a)
            kw = dict(params, form=form)
            assert out.cos_target.item() == pytest.approx(cos_y, abs=1e-13)
            assert loss == pytest.approx(float(theory.magnitude_loss(a, cos_y, lse, **kw)), rel=1e-8, abs=1e-8)
            assert grad == pytest.approx(float(theory.magnitude_loss_d1(a, cos_y, lse, **kw)), rel=1e-8, abs=1e-8)


def test_head_gradient_in_the_magnitude_is_zero_outside_the_band():
    head = build_head("magface", 3, 2, theta_policy="none").double()
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]], dtype=torch.float64)
    direction = torch.tensor([0.8, 0.6], dtype=torch.float64)
    for a in (5.0, 150.0):
        _, grad, _ = head_loss_along_norm(head, weight, direction, 0, a)
        assert abs(grad) < 1e-12  # only rounding: the direction does not change with a


def test_lambda_g_bound_matches_paper_and_head():
    assert theory.lambda_g_min(64, 10, 110, 0.45, 0.8) == pytest.approx(22.586666666666673, rel=1e-14)
    assert theory.lambda_g_min(64, 10, 110, 0.40, 0.8) == pytest.approx(25.813333333333333, rel=1e-14)
    assert theory.lambda_g_min(64, 10, 110, 0.35, 0.8) == pytest.approx(29.04, rel=1e-12)
    assert theory.lambda_g_min(30, 10, 110, 0.45, 0.8) == pytest.approx(10.5875, rel=1e-12)
    assert theory.lambda_g_min(64, 1, 51, 0.45, 1.0) == pytest.approx(0.7043, abs=5e-5)
    rng = np.random.default_rng(1)
    for _ in range(20):
        s, la = rng.uniform(1, 100), rng.uniform(0.1, 50)
        ua, lm = la + rng.uniform(0.1, 100), rng.uniform(0, 0.5)
        um = lm + rng.uniform(0, 1)
        assert theory.lambda_g_min(s, la, ua, lm, um) == pytest.approx(magface_lambda_g_min(s, la, ua, lm, um),
                                                                        rel=1e-12)


def test_bound_is_tight_in_the_worst_case():
    """At lambda_g = bound, L'(l_a) -> 0 as the sample gets infinitely hard (q -> 1, t = pi/2)."""
    lam = theory.lambda_g_min(64, 10, 110, 0.45, 0.8)
    cos_y = math.cos(math.pi / 2 - 0.45)
    kw = dict(PAPER, lambda_g=lam)
    d1 = [float(theory.magnitude_loss_d1(10.0, cos_y, lse, **kw)) for lse in (5.0, 10.0, 20.0, 30.0)]
    assert d1[0] < d1[1] < d1[2] < d1[3] < 0 and d1[3] > -1e-13


def test_optimum_reproduces_the_numbers_in_paper_notes():
    """PAPER.md section 2.5 (the user's own grid search + root finding), to its two decimals."""
    cos = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    expected = {1: [12.63, 12.49, 12.71, 25.55, 51.70, 82.48, 109.01, 110.0],
                85741: [12.63, 12.49, 12.43, 12.44, 16.11, 40.99, 76.12, 109.44]}
    for S, row in expected.items():
        got = theory.optimal_magnitude(np.array(cos), math.log(S), **PAPER)
        np.testing.assert_allclose(got, row, atol=0.006)
    cos_form = theory.optimal_magnitude(np.array([0.1, 0.3, 0.5, 0.7, 0.9]), 0.0, **PAPER, form="cos")
    np.testing.assert_allclose(cos_form, [12.42, 12.42, 21.21, 64.92, 106.74], atol=0.006)


def test_optimum_is_a_root_of_the_derivative_and_boundaries_are_reported():
    opt = theory.optimal_magnitude(np.array([0.3, 0.7, 0.99]), 11.36, **PAPER, full_output=True)
    interior = ~opt.at_lower & ~opt.at_upper
    d1 = theory.magnitude_loss_d1(opt.a_star[interior], np.array([0.3, 0.7, 0.99])[interior], 11.36, **PAPER)
    assert np.all(np.abs(d1) < 1e-9)
    low = theory.optimal_magnitude(math.sin(0.45), 40.0, **dict(PAPER, lambda_g=20.0), full_output=True)
    assert bool(low.at_lower) and float(low.a_star) == 10.0
    high = theory.optimal_magnitude(0.5, 0.0, **dict(PAPER, l_m=0.6, u_m=0.6), full_output=True)
    assert bool(high.at_upper) and float(high.a_star) == 110.0  # constant margin: g alone pushes a to u_a


@pytest.mark.parametrize("kwargs,message", [
    (dict(PAPER, l_a=110.0), "l_a=110.0 must be < u_a=110.0"),
    (dict(PAPER, l_a=0.0), "l_a=0.0 must be > 0"),
    (dict(PAPER, l_a=-1.0), "l_a=-1.0 must be > 0"),
    (dict(PAPER, s=float("nan")), "s must be finite"),
    (dict(PAPER, u_a=float("inf")), "u_a must be finite"),
    (dict(PAPER, l_m=0.9), "0 <= l_m <= u_m"),
    (dict(PAPER, s=-2.0), "s=-2.0 must be > 0"),
    (dict(PAPER, lambda_g=-1.0), "lambda_g=-1.0 must be >= 0"),
    (dict(PAPER, form="arcface"), "form='arcface' is not one of"),
])
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(ValueError) as err:
        theory.magnitude_loss(50.0, 0.5, 0.0, **kwargs)
    assert message in str(err.value)
    with pytest.raises(ValueError):
        theory.optimal_magnitude(0.5, 0.0, **kwargs)


def test_bad_points_raise():
    with pytest.raises(ValueError, match="a must lie in the band"):
        theory.magnitude_loss(5.0, 0.5, 0.0, **PAPER)
    with pytest.raises(ValueError, match=r"cos_y must lie in \[-1, 1\]"):
        theory.magnitude_loss(50.0, 1.5, 0.0, **PAPER)
    with pytest.raises(ValueError, match="lse_neg must be finite"):
        theory.magnitude_loss(50.0, 0.5, float("nan"), **PAPER)
    with pytest.raises(ValueError, match="l_a=10.0 must be < u_a=5.0"):
        theory.lambda_g_min(64, 10, 5, 0.4, 0.8)


def test_everything_broadcasts_over_parameters():
    lam = np.array([10.0, 35.0, 70.0])[:, None]
    cos = np.linspace(0.75, 0.95, 5)[None, :]
    kw = dict(PAPER, lambda_g=lam)
    a_star = theory.optimal_magnitude(cos, 11.36, **kw)
    assert a_star.shape == (3, 5)
    for i in range(3):
        expected = theory.optimal_magnitude(cos[0], 11.36, **dict(PAPER, lambda_g=lam[i, 0]))
        np.testing.assert_allclose(a_star[i], expected)
    d2 = theory.magnitude_loss_d2(np.linspace(10, 110, 7)[:, None, None], cos, np.zeros((1, 1)), **kw)
    assert d2.shape == (7, 3, 5)


def test_easy_policy_optimum_is_u_a_without_margin_and_unchanged_elsewhere():
    cos = np.array([-0.5, -0.01, 0.0, 0.3, 0.8])
    easy = theory.optimal_magnitude(cos, 11.36, **PAPER, theta_policy="easy")
    pure = theory.optimal_magnitude(cos, 11.36, **PAPER)
    np.testing.assert_array_equal(easy[:3], PAPER["u_a"])
    np.testing.assert_array_equal(easy[3:], pure[3:])
    # brute force where there is no margin: L(a) = const + lambda_g g(a), smallest at the top of the band
    a = np.linspace(PAPER["l_a"], PAPER["u_a"], 1001)
    assert np.argmin(theory.regulariser(a, u_a=PAPER["u_a"])) == len(a) - 1
    with pytest.raises(ValueError, match="theta_policy='threshold'"):
        theory.optimal_magnitude(cos, 11.36, **PAPER, theta_policy="threshold")


@pytest.mark.parametrize("policy", ["none", "easy", "threshold"])
@pytest.mark.parametrize("grad_mode", ["analytic", "straight_through"])
def test_margin_policy_closed_form_equals_the_head(policy, grad_mode):
    from losses.arcface import additive_angular_margin
    from theory.margin_policies import target_and_gradient
    cos = torch.linspace(-0.99, 0.99, 397, dtype=torch.float64, requires_grad=True)
    value = additive_angular_margin(cos, 0.5, policy, grad_mode)
    grad, = torch.autograd.grad(value.sum(), cos)
    ours_value, ours_grad = target_and_gradient(cos.detach().numpy(), 0.5, policy, grad_mode)
    np.testing.assert_allclose(value.detach().numpy(), ours_value, atol=1e-9)
    np.testing.assert_allclose(grad.numpy(), ours_grad, atol=1e-6)
    if policy == "threshold" and grad_mode == "analytic":   # the dead band: the gradient vanishes at pi - m
        theta = np.arccos(cos.detach().numpy())
        near = (theta < math.pi - 0.5) & (theta > math.pi - 0.5 - 0.02)   # just inside the margin branch
        assert near.any() and np.all(np.abs(ours_grad[near]) < 0.05)
