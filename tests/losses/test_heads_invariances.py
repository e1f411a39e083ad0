"""Invariances every head must have, and equivalences between heads that the formulas imply: tested, not hoped for."""
import warnings

import pytest
import torch
from torch.func import functional_call

from losses import HEADS, build_head


def run(name, x, w, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = build_head(name, w.shape[0], w.shape[1], **params).centres_per_class   # w holds k rows per class
        head = build_head(name, w.shape[0] // k, w.shape[1], **params).double().eval()
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = functional_call(head, {"weight": wg}, (xg, y))
    out.loss.backward()
    return out, xg.grad, wg.grad


@pytest.fixture
def batch(rng):
    x = torch.randn(16, 8, generator=rng, dtype=torch.float64) * 40 + 5
    w = torch.randn(33, 8, generator=rng, dtype=torch.float64)   # 33 classes, or 11 classes x 3 sub-centres
    y = torch.randint(0, 11, (16,), generator=rng)
    return x, w, y


@pytest.mark.parametrize("name", sorted(HEADS))
def test_rotating_embeddings_and_centres_together_changes_nothing(batch, rng, name):
    """A head sees only norms and angles (or dot products): one orthogonal map of the space changes no loss."""
    x, w, y = batch
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=rng, dtype=torch.float64))
    out, gx, gw = run(name, x, w, y)
    rot, gx_rot, gw_rot = run(name, x @ q, w @ q, y)
    torch.testing.assert_close(rot.logits, out.logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(rot.loss, out.loss, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_rot, gx @ q, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gw_rot, gw @ q, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", sorted(n for n, cls in HEADS.items() if cls.normalised))
def test_cosine_heads_ignore_the_length_of_class_centres(batch, rng, name):
    """Normalised heads use the centres' directions only: rescaling W_j keeps the loss, scales its gradient by 1/c."""
    x, w, y = batch
    c = torch.rand(w.shape[0], generator=rng, dtype=torch.float64) * 10 + 0.1
    out, gx, gw = run(name, x, w, y)
    scaled, gx_s, gw_s = run(name, x, w * c[:, None], y)
    torch.testing.assert_close(scaled.logits, out.logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(scaled.loss, out.loss, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_s, gx, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gw_s, gw / c[:, None], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("policy", ["none", "easy", "threshold"])
def test_magface_with_constant_margin_is_arcface_plus_g(batch, policy):
    x, w, y = batch
    mag, _, _ = run("magface", x, w, y, l_m=0.5, u_m=0.5, theta_policy=policy)
    arc, _, _ = run("arcface", x, w, y, m=0.5, theta_policy=policy)
    a = x.norm(dim=1).clamp(10, 110)
    torch.testing.assert_close(mag.logits, arc.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mag.loss, arc.loss + 35 * (1 / a + a / 110**2).mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mag.identity_loss, arc.identity_loss, rtol=1e-12, atol=1e-12)


def test_mag_cosface_with_constant_margin_is_cosface_plus_g(batch):
    x, w, y = batch
    mag, _, _ = run("mag_cosface", x, w, y, l_m=0.35, u_m=0.35, lambda_g=0.0)
    cos, _, _ = run("cosface", x, w, y, m=0.35)
    torch.testing.assert_close(mag.logits, cos.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mag.loss, cos.loss, rtol=1e-12, atol=1e-12)


def test_adaface_with_h_zero_is_cosface(batch):
    x, w, y = batch
    ada, gxa, gwa = run("adaface", x, w, y, h=0.0, m=0.4)
    cos, gxc, gwc = run("cosface", x, w, y, m=0.4)
    torch.testing.assert_close(ada.logits, cos.logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gxa, gxc, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gwa, gwc, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("other", [("arcface", {"m": 0.0, "theta_policy": "none"}), ("cosface", {"m": 0.0}),
                                   ("sphereface", {"m": 1.0})])
def test_normface_is_the_zero_margin_case(batch, other):
    x, w, y = batch
    norm, gxn, gwn = run("normface", x, w, y)
    out, gx, gw = run(other[0], x, w, y, **other[1])
    torch.testing.assert_close(out.logits, norm.logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gxn, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gw, gwn, rtol=1e-7, atol=1e-9)


def test_straight_through_has_arcface_value_and_normface_gradient(batch):
    x, w, y = batch
    st, gx_st, gw_st = run("arcface", x, w, y, grad_mode="straight_through", theta_policy="none")
    an, _, _ = run("arcface", x, w, y, grad_mode="analytic", theta_policy="none")
    torch.testing.assert_close(st.logits, an.logits, rtol=1e-10, atol=1e-10)
    # d(target)/d(cos) = 1: same gradient as NormFace given the same softmax probabilities
    p = torch.softmax(st.logits, dim=1)
    g_cos = 64 * (p - torch.nn.functional.one_hot(y, w.shape[0])) / x.shape[0]
    xg = x.clone().requires_grad_()
    wg = w.clone().requires_grad_()
    cos = torch.nn.functional.normalize(xg, dim=1) @ torch.nn.functional.normalize(wg, dim=1).t()
    cos.backward(g_cos)
    torch.testing.assert_close(gx_st, xg.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gw_st, wg.grad, rtol=1e-8, atol=1e-10)
