"""The new heads equal the official implementations (re-derived in tests/official_heads.py from their code) on the
same weights and batches over several training steps: logits, loss, gradients of the embeddings and of the centres,
and the running state the official code keeps (CurricularFace's t, AdaCos's s, ElasticFace's draws, UniFace's b)."""
import official_heads as off
import pytest
import torch
import torch.nn.functional as F

from losses import build_head

B, D, C, STEPS, LR = 16, 8, 10, 4, 0.5


def official_case(name):
    """(our head's parameters, the official computation, whether the official weight is [d, C] columns)."""
    gen = torch.Generator().manual_seed(5)
    return {
        "curricularface": ({}, off.CurricularFace(), True),
        "mv_softmax-am": ({"target": "am"}, off.MVSoftmax(is_am=True), True),
        "mv_softmax-arc": ({"target": "arc"}, off.MVSoftmax(is_am=False), True),
        "circleloss": ({}, off.CircleLoss(), True),
        "adacos": ({}, off.AdaCos(C), False),
        "elasticface_arc": ({"seed": 5}, off.ElasticFace(True, 64.0, 0.5, 0.0125, False, gen), True),
        "elasticface_arc-plus": ({"seed": 5, "plus": True, "std": 0.05},
                                 off.ElasticFace(True, 64.0, 0.5, 0.05, True, gen), True),
        "elasticface_cos-plus": ({"seed": 5, "plus": True, "std": 0.05},
                                 off.ElasticFace(False, 64.0, 0.35, 0.05, True, gen), True),
        "subcenter_arcface": ({}, off.SubCenterArcFace(), True),
    }[name]


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        yield torch.randn(B, D, generator=g, dtype=torch.float64) * 4, torch.randint(0, C, (B,), generator=g)


def state_of(head, official):
    if head.name == "curricularface":
        return float(head.t), float(official.t)
    if head.name == "adacos":
        return head.s, official.s
    return None


@pytest.mark.parametrize("case", ["curricularface", "mv_softmax-am", "mv_softmax-arc", "circleloss", "adacos",
                                  "elasticface_arc", "elasticface_arc-plus", "elasticface_cos-plus",
                                  "subcenter_arcface"])
def test_equals_the_official_implementation_over_training_steps(case):
    params, official, columns = official_case(case)
    torch.manual_seed(0)
    head = build_head(case.split("-")[0], C, D, **params).double().train()
    head.weight.data.normal_()
    w_off = head.weight.detach().clone()
    for x, y in batches(1):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        wb = w_off.clone().requires_grad_()
        out = head(xa, y)
        out.loss.backward()
        logits = official.logits(xb, wb.t() if columns else wb, y)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        torch.testing.assert_close(out.logits, logits.detach(), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.loss, loss.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(head.weight.grad, wb.grad, rtol=1e-8, atol=1e-10)
        state = state_of(head, official)
        if state is not None:
            assert state[0] == pytest.approx(state[1], rel=1e-12, abs=1e-15)
        with torch.no_grad():                    # one SGD step on both sides: the next batch meets moved centres
            head.weight -= LR * head.weight.grad
            w_off = w_off - LR * wb.grad
        head.weight.grad = None
    if case.startswith("curricularface"):
        assert float(head.t) != 0.0   # the running t moved (and matched the official one at every step)


def test_uniface_equals_the_official_unified_cross_entropy_with_its_learnt_bias():
    torch.manual_seed(0)
    head = build_head("uniface", C, D).double().train()
    head.weight.data.normal_()
    w_off, b_off = head.weight.detach().clone(), head.loss_bias.detach().clone()
    assert float(b_off) == pytest.approx(torch.log(torch.tensor(10.0 * C)).item(), rel=1e-6)
    for x, y in batches(2):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        wb, bb = w_off.clone().requires_grad_(), b_off.clone().requires_grad_()
        out = head(xa, y)
        out.loss.backward()
        loss = off.uniface_loss(xb, wb, bb, y)
        loss.backward()
        torch.testing.assert_close(out.loss, loss.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(head.weight.grad, wb.grad, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(head.loss_bias.grad, bb.grad, rtol=1e-8, atol=1e-10)
        with torch.no_grad():
            head.weight -= LR * head.weight.grad
            head.loss_bias -= LR * head.loss_bias.grad
            w_off, b_off = w_off - LR * wb.grad, b_off - LR * bb.grad
        head.weight.grad = head.loss_bias.grad = None
