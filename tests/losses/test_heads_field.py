"""The contract's new hooks, tested through the heads that use them: K centres per class and the cleaning step,
draws per sample and their resume, a per-batch scale, a running curriculum, a learnt loss bias, and bad input."""
import math

import pytest
import torch

from losses import build_head
from losses.base import MarginHead


@pytest.mark.parametrize("name,params,message", [
    ("subcenter_arcface", {"k": 0}, r"k \(sub-centres per class\) must be a positive integer, got 0"),
    ("elasticface_arc", {"std": -0.1}, r"std=-0.1 is outside the valid range \[0.0, inf\)"),
    ("elasticface_cos", {"seed": -1}, r"seed must be a non-negative integer or None, got -1"),
    ("elasticface_arc", {"plus_order": "sorted"}, r"plus_order='sorted' is not one of \['official', 'rank'\]"),
    ("mv_softmax", {"t": 0.9}, r"t \(the weight of misclassified negatives\)=0.9 is outside the valid range"),
    ("mv_softmax", {"target": "sphere"}, r"target='sphere' is not one of \['am', 'arc'\]"),
    ("mv_softmax", {"theta_policy": "threshold"}, r"theta_policy \(target='am'\)='threshold' is not one of"),
    ("circleloss", {"m": 1.0}, r"m=1.0 is outside the valid range \[0.0, 1.0\)"),
    ("circleloss", {"gamma": 0.0}, r"gamma=0.0 is outside the valid range \(0.0, inf\)"),
    ("curricularface", {"momentum": 1.5}, r"momentum=1.5 is outside the valid range \[0.0, 1.0\]"),
    ("uniface", {"lam": 0.0}, r"lam=0.0 is outside the valid range \(0.0, inf\)"),
    ("uniface", {"bias_init": "log"}, r"bias_init \(a number or 'auto'\) must be a real number, got 'log'"),
])
def test_bad_parameters_name_the_parameter_and_its_range(name, params, message):
    with pytest.raises(ValueError, match=message):
        build_head(name, 10, 4, **params)


def test_adacos_needs_three_classes():
    with pytest.raises(ValueError, match=r"num_classes=2: AdaCos needs at least 3 classes"):
        build_head("adacos", 2, 4)


class _Exploding(MarginHead):
    name = "exploding"

    def target_logit(self, cos_y, norms):
        return self.s * cos_y

    def negative_logit(self, cos, cos_y, target):
        return cos / (cos - cos)      # 0/0: NaN from finite cosines

    def negative_slope(self, cos, cos_y, target):
        return torch.ones_like(cos)


def test_a_negative_transform_that_is_not_finite_is_named():
    head = _Exploding(5, 3)
    with pytest.raises(ValueError, match=r"head 'exploding': its negative logits are not finite for finite cosines"):
        head(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


def test_several_centres_with_reshaped_negatives_is_refused():
    class Both(_Exploding):
        name = "both"

    with pytest.raises(ValueError, match=r"several centres per class together with reshaped negatives"):
        Both(5, 3, centres_per_class=2)


def test_subcentres_take_the_nearest_centre_and_tied_centres_the_first():
    head = build_head("subcenter_arcface", 2, 2, k=2, s=1.0, m=0.0)
    with torch.no_grad():   # class 0: centres at 0 and 90 degrees; class 1: two equal centres at 180 degrees
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-1.0, 0.0]]))
    x = torch.tensor([[math.cos(math.pi / 3), math.sin(math.pi / 3)]], requires_grad=True)   # at 60 degrees
    out = head(x, torch.tensor([1]))
    torch.testing.assert_close(out.logits, torch.tensor([[math.cos(math.pi / 6), -0.5]]), atol=1e-6, rtol=0)
    out.loss.backward()
    grad = head.weight.grad.abs().sum(dim=1)
    assert grad[0] == 0 and grad[1] > 0      # class 0: only its nearer centre (90 degrees) is used
    assert grad[2] > 0 and grad[3] == 0      # class 1: two tied centres, the first is used


def test_subcentre_cleaning_step_finds_the_dominant_centre_and_drops_far_samples():
    head = build_head("subcenter_arcface", 2, 2, k=3)
    angles = torch.tensor([0.0, 2.0, 4.0, 0.0, 0.0, 0.0])   # class 0's centres; class 1's all at 0 rad
    with torch.no_grad():
        head.weight.copy_(torch.stack([angles.cos(), angles.sin()], dim=1))
    deg = torch.tensor([2.0, 10.0, 115.0, 80.0, 30.0, 5.0, 100.0])    # the samples' angles in degrees
    x = torch.stack([torch.deg2rad(deg).cos(), torch.deg2rad(deg).sin()], dim=1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    step = head.drop_step(x, labels)
    assert step.dominant.tolist() == [0, 0]      # class 0: two samples nearest centre 0, one each at 2 rad / 4 rad
    assert step.keep.tolist() == [True, True, False, False, True, True, False]   # beyond 75 deg of centre 0: dropped
    single = head.single_centre_weight(step.dominant)
    torch.testing.assert_close(single, head.weight.detach()[[0, 3]])


def test_elastic_margins_are_drawn_per_sample_in_training_and_resume_exactly():
    torch.manual_seed(3)
    head = build_head("elasticface_cos", 6, 4, std=0.1, s=1.0)
    x, y = torch.randn(8, 4), torch.randint(0, 6, (8,))
    head.eval()
    fixed = head(x, y).logits.gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(fixed, head(x, y).plain_target - 0.35)      # evaluation: the mean margin m
    head.train()
    first = head(x, y).logits.gather(1, y[:, None]).squeeze(1)
    saved = head.state_dict()
    second = head(x, y).logits.gather(1, y[:, None]).squeeze(1)
    assert not torch.equal(first, second) and float((fixed - first).abs().max()) > 0
    again = build_head("elasticface_cos", 6, 4, std=0.1, s=1.0, seed=99)
    again.load_state_dict(saved)
    torch.testing.assert_close(again(x, y).logits.gather(1, y[:, None]).squeeze(1), second)
    assert head.hparams["seed"] is None   # follows the run's seed (torch.initial_seed at construction)


@pytest.mark.parametrize("order,expected", [("official", [0.45, 0.50, 0.55, 0.40]), ("rank", [0.55, 0.40, 0.45, 0.50])])
def test_elastic_plus_orders_the_margins_by_target_cosine(order, expected):
    head = build_head("elasticface_cos", 4, 2, plus=True, plus_order=order)
    head._draw = torch.tensor([0.50, 0.40, 0.55, 0.45])   # a known draw (sorted: .40 .45 .50 .55)
    margins = head.margins(torch.tensor([0.1, 0.9, 0.5, 0.3]))
    torch.testing.assert_close(margins, torch.tensor(expected))


def test_adacos_scale_adapts_in_training_is_logged_and_survives_a_state_dict():
    torch.manual_seed(0)
    head = build_head("adacos", 50, 8)
    assert head.s == pytest.approx(math.sqrt(2) * math.log(49))
    x, y = torch.randn(32, 8), torch.randint(0, 50, (32,))
    out = head(x, y)
    assert out.scale == head.s != pytest.approx(math.sqrt(2) * math.log(49))
    assert head.log_stats(out.norms, out.cos_target) == {"scale": head.s}
    torch.testing.assert_close(out.plain_target, head.s * out.cos_target)
    copy = build_head("adacos", 50, 8)
    copy.load_state_dict(head.state_dict())
    assert copy.s == head.s
    head.eval()
    s = head.s
    head(x, y)
    assert head.s == s                                     # evaluation uses the stored scale


def test_curricular_t_moves_in_training_only_and_accuracy_ignores_the_reshaping():
    torch.manual_seed(0)
    head = build_head("curricularface", 20, 8)
    x, y = torch.randn(16, 8) * 3, torch.randint(0, 20, (16,))
    head.eval()
    head(x, y)
    assert float(head.t) == 0.0
    head.train()
    out = head(x, y)
    expected = 0.01 * float(out.cos_target.mean())
    assert float(head.t) == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        cos = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(head.weight).t()
    plain = (cos.argmax(dim=1) == y).float().mean().item()
    assert out.accuracy() == pytest.approx(plain)


@pytest.mark.parametrize("name", ["curricularface", "circleloss"])
def test_slopes_read_off_the_logits_keep_float32_accuracy_at_the_roots_vertex(name):
    """CurricularFace and CircleLoss invert their quadratic from the logit (losses/fused.py): in float32 the
    gradients stay within float32 accuracy of the float64 head, also for cosines at the vertex where the root
    is ill-conditioned (CurricularFace t + 2c = 0, CircleLoss c = 0) and on both signs of the root."""
    torch.manual_seed(0)
    classes, dim = 400, 8
    head64 = build_head(name, classes, dim).double().train()
    x = torch.randn(64, dim, dtype=torch.float64)
    vertex = -0.15 if name == "curricularface" else 0.0
    with torch.no_grad():   # a third of the centres at the vertex of sample 0's cosine
        unit = torch.nn.functional.normalize(x[0], dim=0)
        other = torch.nn.functional.normalize(torch.randn(classes // 3, dim, dtype=torch.float64), dim=1)
        other -= (other @ unit)[:, None] * unit
        other = torch.nn.functional.normalize(other, dim=1)
        head64.weight[: classes // 3] = vertex * unit + math.sqrt(1 - vertex**2) * other
    if name == "curricularface":
        head64.t.fill_(0.3)
        head64.momentum = 0.0
    head32 = build_head(name, classes, dim).train()
    head32.load_state_dict({k: v.float() for k, v in head64.state_dict().items()})
    if name == "curricularface":
        head32.momentum = 0.0
    y = torch.randint(classes // 3, classes, (64,))
    x64, x32 = x.clone().requires_grad_(), x.float().requires_grad_()
    out64, out32 = head64(x64, y), head32(x32, y)
    assert (out64.logits > 0).any() and (out64.logits < 0).any()
    out64.loss.backward()
    out32.loss.backward()
    for a, b in ((x32.grad, x64.grad), (head32.weight.grad, head64.weight.grad)):
        assert float((a.double() - b).abs().max() / b.abs().max()) < 2e-5


def test_a_slope_from_recomputed_cosines_equals_the_slope_read_off_the_logits():
    """The fallback for a head that cannot invert its formula (its slope from the cosines, recomputed once in the
    backward) and CurricularFace's closed form from the logits give the same gradients."""
    from losses.branchfree import select  # only this test builds a head from the parts
    from losses.curricularface import CurricularFaceHead  # only where it is used

    class FromCosines(CurricularFaceHead):
        slope_of_logits = False
        negative_code = None

        def negative_slope(self, cos, cos_y, target):
            t = self.t.to(cos.dtype)
            return select(self._hard(cos, cos_y), t + 2.0 * cos, torch.ones_like(cos)).mul_(self.s)

    torch.manual_seed(0)
    closed = build_head("curricularface", 50, 6).double().train()
    fallback = FromCosines(50, 6).double().train()
    closed.t.fill_(0.3)   # hard negatives on both signs of t + 2c (about -0.15 < c and c < -0.15 both occur)
    fallback.load_state_dict(closed.state_dict())
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 50, (32,))
    for _ in range(3):
        grads = []
        for head in (closed, fallback):
            head.zero_grad()
            xi = x.clone().requires_grad_()
            head(xi, y).loss.backward()
            grads.append((xi.grad, head.weight.grad))
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert float(closed.t) == float(fallback.t)
