"""Finite loss and gradients for any finite input, in float32 and under bf16 autocast: every registered head with
its defaults, plus the variants whose formulas take other branches."""
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from losses import HEADS, build_head

C, D = 7, 5


def heads():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {name: build_head(name, C, D) for name in sorted(HEADS)}
        out["arcface_st"] = build_head("arcface", C, D, grad_mode="straight_through", theta_policy="none")
        out["magface_none"] = build_head("magface", C, D, theta_policy="none")
        out["magface_threshold"] = build_head("magface", C, D, theta_policy="threshold")
    return out


HEAD_OBJECTS = heads()


@st.composite
def hard_batches(draw):
    """Embeddings with log-uniform norms in [1e-6, 1e4], some exactly on (or opposite) their class centre,
    some exactly zero; class centres of any length."""
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    B = draw(st.integers(1, 9))
    w = torch.randn(C, D, generator=gen) * 10 ** draw(st.floats(-3, 3))
    y = torch.randint(0, C, (B,), generator=gen)
    direction = torch.nn.functional.normalize(torch.randn(B, D, generator=gen), dim=1)
    kinds = draw(st.lists(st.sampled_from(["random", "on_centre", "opposite", "zero"]), min_size=B, max_size=B))
    centre = torch.nn.functional.normalize(w[y], dim=1)
    for i, kind in enumerate(kinds):
        if kind == "on_centre":
            direction[i] = centre[i]
        elif kind == "opposite":
            direction[i] = -centre[i]
    norms = torch.tensor(draw(st.lists(st.floats(-6, 4), min_size=B, max_size=B)))
    x = direction * (10 ** norms)[:, None]
    x[[i for i, k in enumerate(kinds) if k == "zero"]] = 0.0
    return x, w, y


def finite_step(head, x, w, y, autocast):
    head.weight.data.copy_(w.repeat_interleave(head.centres_per_class, dim=0))   # K equal sub-centres: tied maxima
    head.weight.grad = None
    xg = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = head(xg.to(torch.bfloat16) if autocast else xg, y)
    out.loss.backward()
    assert out.logits.dtype == torch.float32
    for name, t in [("loss", out.loss), ("logits", out.logits), ("grad x", xg.grad), ("grad W", head.weight.grad)]:
        assert torch.isfinite(t).all(), f"{name} not finite"


@pytest.mark.parametrize("name", list(HEAD_OBJECTS))
@settings(max_examples=40, deadline=None)
@given(batch=hard_batches(), autocast=st.booleans())
def test_finite_loss_and_gradients(name, batch, autocast):
    finite_step(HEAD_OBJECTS[name], *batch, autocast)


def test_cos_exactly_one_and_minus_one_float32():
    w = torch.eye(C, D)
    x = torch.stack([w[0] * 3.0, -w[1] * 50.0, w[2] * 1e4, torch.zeros(D)])
    y = torch.tensor([0, 1, 2, 3])
    for head in HEAD_OBJECTS.values():
        finite_step(head, x, w, y, autocast=False)
