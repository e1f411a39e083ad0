"""Every registered head against the independent float64 reference, at known angles and on random inputs."""
import math
import warnings

import pytest
import torch
from reference_heads import GRADCHECK, NO_GRADCHECK, REFERENCES, STATE, cases, reference_loss
from torch.func import functional_call

from losses import HEADS, build_head

CASES = cases(sorted(HEADS))


def case_id(case):
    name, params = case
    return "-".join([name, *(f"{k}={v}" for k, v in params.items())])


def quiet_build(name, C, d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_head(name, C, d, **kw)


def set_state(head, name):
    """Running statistics away from their starting values (tests/reference_heads.py STATE)."""
    for key, value in STATE.get(name, {}).items():
        getattr(head, key).fill_(value)
    head.load_state_dict(head.state_dict())   # heads that mirror a buffer in a plain attribute re-read it


def random_batch(gen, B=12, d=6, C=9, scale=3.0, rows=None):
    """Embeddings, centres ([rows, d]: C, or K * C for heads with K centres per class) and labels."""
    x = torch.randn(B, d, generator=gen, dtype=torch.float64) * scale
    w = torch.randn(rows or C, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=gen)
    return x, w, y


def test_registry_has_the_six_losses_and_relatives():
    required = {"softmax", "normface", "cosface", "arcface", "magface", "mag_cosface", "adaface", "sphereface"}
    assert required <= set(HEADS)


def test_every_registered_head_has_a_reference_formula():
    missing = sorted(set(HEADS) - set(REFERENCES))
    assert not missing, f"heads without a reference formula in tests/reference_heads.py: {missing}"
    stale = sorted(set(REFERENCES) - set(HEADS))
    assert not stale, f"reference formulas in tests/reference_heads.py for heads not in losses.HEADS: {stale}"


@pytest.mark.parametrize("name,params", CASES, ids=[case_id(c) for c in CASES])
def test_loss_logits_and_gradients_match_reference(name, params, rng):
    head = quiet_build(name, 9, 6, **params).double()
    x, w, y = random_batch(rng, rows=head.weight.shape[0])
    set_state(head, name)
    buffers = {k: v.detach().clone() for k, v in [*head.named_buffers(), *head.named_parameters()] if k != "weight"}
    head.eval()  # AdaFace: use the stored statistics without updating them
    xh, wh = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = functional_call(head, {"weight": wh}, (xh, y))
    out.loss.backward()
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref_loss, ref_logits = reference_loss(name, xr, wr, y, head.hparams, buffers)
    ref_loss.backward()
    torch.testing.assert_close(out.logits, ref_logits.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.loss, ref_loss.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xh.grad, xr.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(wh.grad, wr.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(out.norms, x.norm(dim=1))


EXACT = [c for c in CASES if c[1].get("grad_mode") != "straight_through" and c[0] not in NO_GRADCHECK]


@pytest.mark.parametrize("name,params", EXACT, ids=[case_id(c) for c in EXACT])
def test_float64_gradcheck(name, params, rng):
    head = quiet_build(name, 5, 4, **{**params, **GRADCHECK.get(name, {})}).double().eval()
    set_state(head, name)
    x, w, y = random_batch(rng, B=5, d=4, C=5, scale=2.5, rows=head.weight.shape[0])
    x.requires_grad_(), w.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: functional_call(head, {"weight": w}, (x, y)).loss, (x, w),
                                    eps=1e-6, atol=1e-6)


def unit(angle):
    return torch.tensor([[math.cos(angle), math.sin(angle)]], dtype=torch.float64)


@pytest.mark.parametrize("theta", [0.3, 1.0, 1.4, 2.0, 2.9])
def test_known_angles_in_two_dimensions(theta):
    """Class 0 at angle 0, class 1 at pi/2; the embedding at angle theta with norm 5."""
    w = torch.cat([unit(0.0), unit(math.pi / 2)])
    x = 5.0 * unit(theta)
    y = torch.tensor([0])
    s, m = 64.0, 0.5
    expect_other = s * math.cos(math.pi / 2 - theta)
    expect = {
        ("normface", ()): s * math.cos(theta),
        ("cosface", ("m", 0.35)): s * (math.cos(theta) - 0.35),
        ("arcface", ("theta_policy", "none")): s * math.cos(theta + m),
        ("arcface", ("theta_policy", "easy")): s * (math.cos(theta + m) if math.cos(theta) > 0 else math.cos(theta)),
        ("arcface", ("theta_policy", "threshold")):
            s * (math.cos(theta + m) if theta + m < math.pi else math.cos(theta) - m * math.sin(m)),
        ("sphereface", ("m", 4.0)): None,
    }
    for (name, kv), value in expect.items():
        if value is None:
            k = math.floor(4 * theta / math.pi)
            value = s * (5 * math.cos(theta) + (-1) ** k * math.cos(4 * theta) - 2 * k) / 6
        head = build_head(name, 2, 2, **(dict([kv]) if kv else {})).double()
        head.weight.data.copy_(w)
        out = head(x, y)
        assert out.logits[0, 0].item() == pytest.approx(value, abs=1e-9), (name, kv)
        assert out.logits[0, 1].item() == pytest.approx(expect_other, abs=1e-9)
        assert out.cos_target.item() == pytest.approx(math.cos(theta), abs=1e-12)


def test_magface_margin_at_known_norms():
    """m(a) is linear from l_m at l_a to u_m at u_a and clamped outside; known angle 0.6 rad."""
    w = torch.cat([unit(0.0), unit(math.pi / 2)])
    head = build_head("magface", 2, 2, theta_policy="none").double()
    head.weight.data.copy_(w)
    for norm, margin in [(5.0, 0.45), (10.0, 0.45), (60.0, 0.625), (110.0, 0.8), (500.0, 0.8)]:
        out = head(norm * unit(0.6), torch.tensor([0]))
        assert out.logits[0, 0].item() == pytest.approx(64 * math.cos(0.6 + margin), abs=1e-9)
        a = min(max(norm, 10.0), 110.0)
        assert out.aux["mag_g"].item() == pytest.approx(35 * (1 / a + a / 110**2), rel=1e-12)
        assert out.loss.item() == pytest.approx(out.identity_loss.item() + out.aux["mag_g"].item(), rel=1e-12)


def test_training_accuracy_ignores_the_margin():
    w = torch.cat([unit(0.0), unit(math.pi / 2)])
    head = build_head("arcface", 2, 2, m=1.2).double()
    head.weight.data.copy_(w)
    x = torch.cat([unit(0.6), unit(0.7)])  # both closer to class 0, but with margin class 1 would win
    out = head(x, torch.tensor([0, 0]))
    assert out.logits[0, 0] < out.logits[0, 1]
    assert out.accuracy() == 1.0
    assert head(x, torch.tensor([1, 0])).accuracy() == 0.5
