"""Bad input fails loudly; Partial FC, AdaFace statistics, the lambda_g check and the MagFace norm landscape."""
import math
import warnings

import pytest
import torch
from reference_heads import reference_loss

from losses import HEADS, FeasibilityWarning, build_head, head_parameters
from losses.magface import PAPER_LAMBDA_G_RATIO


def good_batch(C=10, d=4, B=3):
    return torch.randn(B, d), torch.randint(0, C, (B,))


@pytest.mark.parametrize("x,y,message", [
    (torch.randn(3, 4), torch.tensor([0, 1, 10]), "label 10 is outside the valid class range [0, 10)"),
    (torch.randn(3, 4), torch.tensor([0, -1, 2]), "label -1"),
    (torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0]), "labels must be an integer tensor"),
    (torch.randn(3, 5), torch.tensor([0, 1, 2]), "embeddings must have shape [B, 4], got [3, 5]"),
    (torch.tensor([[0.0, 1, 2, 3], [float("nan"), 0, 0, 0], [0, 0, 0, 1.0]]), torch.tensor([0, 1, 2]),
     "non-finite value(s) (NaN or inf), first in row 1"),
    (torch.tensor([[0.0, 1, 2, float("inf")]]), torch.tensor([0]), "first in row 0"),
    (torch.randn(3, 4), torch.tensor([0, 1]), "labels must have shape [3]"),
    (torch.randint(0, 5, (3, 4)), torch.tensor([0, 1, 2]), "floating-point"),
    (torch.randn(0, 4), torch.zeros(0, dtype=torch.long), "empty"),
])
def test_bad_batches_raise_clear_errors(x, y, message):
    head = build_head("magface", 10, 4)
    with pytest.raises(ValueError) as err:
        head(x, y)
    assert message in str(err.value)


@pytest.mark.parametrize("name,params,message", [
    ("magfce", {}, "unknown head 'magfce'; valid heads: adacos, adaface, arcface, circleloss"),
    ("arcface", {"margin": 0.5}, "unknown parameter(s) ['margin'] for head 'arcface'; valid parameters: s, m,"),
    ("magface", {"l_a": 20.0, "u_a": 10.0},
     "u_a (must exceed l_a, or 'auto')=10.0 is outside the valid range (20.0, inf)"),
    ("magface", {"l_a": 10.0, "u_a": 10.0}, "u_a (must exceed l_a, or 'auto')=10.0"),
    ("magface", {"l_m": 0.9, "u_m": 0.8}, "u_m (must be >= l_m)=0.8 is outside the valid range [0.9, 3.14"),
    ("magface", {"l_a": 0.0}, "l_a (or 'auto')=0.0 is outside the valid range (0.0, inf)"),
    ("cosface", {"s": -1.0}, "s=-1.0 is outside the valid range (0.0, inf)"),
    ("arcface", {"s": float("nan")}, "s=nan"),
    ("arcface", {"theta_policy": "eazy"}, "theta_policy='eazy' is not one of ['easy', 'none', 'threshold']"),
    ("arcface", {"grad_mode": "ste"}, "grad_mode='ste' is not one of ['analytic', 'straight_through']"),
    ("cosface", {"sample_rate": 0.0}, "sample_rate=0.0"),
    ("cosface", {"m": "0.35"}, "m must be a real number, got '0.35'"),
    ("softmax", {"bias": 1}, "bias must be True or False"),
])
def test_bad_parameters_raise_clear_errors(name, params, message):
    with pytest.raises(ValueError) as err:
        build_head(name, 10, 4, **params)
    assert message in str(err.value)


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        build_head("cosface", 0, 4)
    with pytest.raises(ValueError, match="embedding_size must be a positive integer, got 2.5"):
        build_head("cosface", 3, 2.5)


def test_head_parameters_lists_the_documented_names():
    assert head_parameters("magface") == ["s", "l_a", "u_a", "l_m", "u_m", "lambda_g", "theta_policy", "grad_mode",
                                          "strict", "auto_quantiles", "lambda_g_ratio", "sample_rate", "centre_init"]
    assert head_parameters("adaface")[:3] == ["s", "m", "h"]


def test_lambda_g_feasibility_warning_and_strict_error():
    with pytest.warns(FeasibilityWarning, match=r"lambda_g=20 is below the feasibility bound 22.5867"):
        build_head("magface", 10, 4, lambda_g=20.0)
    with pytest.raises(ValueError, match="below the feasibility bound 10.5875"):
        build_head("magface", 10, 4, lambda_g=10.0, s=30.0, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = build_head("magface", 10, 4, lambda_g=35.0, strict=True)
    assert head.lambda_g_min == pytest.approx(22.586666666666673, rel=1e-12)
    assert build_head("magface", 10, 4, l_m=0.4, strict=True).lambda_g_min == pytest.approx(25.813333, rel=1e-6)


def test_hparams_record_every_hidden_choice():
    hp = build_head("magface", 10, 4).hparams
    assert hp == {"head": "magface", "num_classes": 10, "embedding_size": 4, "s": 64.0, "l_a": 10.0, "u_a": 110.0,
                  "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0, "theta_policy": "easy", "grad_mode": "analytic",
                  "strict": False, "auto_quantiles": (0.05, 0.95), "lambda_g_ratio": PAPER_LAMBDA_G_RATIO,
                  "sample_rate": 1.0, "centre_init": "unit"}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_centre_init_unit_rows_or_insightface_normal(name):
    torch.manual_seed(0)
    unit = build_head(name, 50, 128).weight.detach().norm(dim=1)
    assert torch.allclose(unit, torch.ones_like(unit), atol=1e-6)
    normal = build_head(name, 50, 128, centre_init="normal").weight.detach()
    assert 0.008 < float(normal.std()) < 0.012 and build_head(name, 5, 4, centre_init="normal").centre_init == "normal"
    with pytest.raises(ValueError, match=r"centre_init='xavier' is not one of \['normal', 'unit'\]"):
        build_head(name, 5, 4, centre_init="xavier")


@pytest.mark.parametrize("name", ["cosface", "subcenter_arcface", "curricularface", "uniface"])
def test_partial_fc_keeps_positives_and_matches_reference_on_sampled_classes(name):
    torch.manual_seed(0)
    C, d = 200, 6
    head = build_head(name, C, d, sample_rate=0.1).double().train()
    k = head.centres_per_class
    x = torch.randn(12, d, dtype=torch.float64)
    y = torch.randint(0, C, (12,))
    out = head(x, y)
    assert out.classes is not None and out.logits.shape == (12, 20)
    assert set(y.tolist()) <= set(out.classes.tolist())
    assert torch.equal(out.classes[out.target_column], y)
    rows = (out.classes[:, None] * k + torch.arange(k)).flatten()          # each sampled class's k centres
    state = {n: v.detach() for n, v in [*head.named_buffers(), *head.named_parameters()] if n != "weight"}
    ref, _ = reference_loss(name, x, head.weight.detach()[rows], out.target_column, head.hparams, state)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-10)
    out.loss.backward()
    untouched = torch.ones(k * C, dtype=torch.bool)
    untouched[rows] = False
    assert torch.all(head.weight.grad[untouched] == 0)
    head.eval()
    assert head(x, y).classes is None and head(x, y).logits.shape == (12, C)


def test_partial_fc_with_more_positives_than_the_sample_keeps_them_all():
    head = build_head("arcface", 50, 4, sample_rate=0.05).train()
    y = torch.arange(20)
    out = head(torch.randn(20, 4), y)
    assert out.classes.tolist() == list(range(20))


def test_adaface_statistics_update_only_in_training():
    head = build_head("adaface", 10, 4, t_alpha=0.5)
    x = torch.randn(8, 4) * 3
    norms = x.norm(dim=1)
    head.eval()
    head(x, torch.zeros(8, dtype=torch.long))
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0
    head.train()
    head(x, torch.zeros(8, dtype=torch.long))
    assert head.batch_mean.item() == pytest.approx(0.5 * 20 + 0.5 * norms.mean().item(), rel=1e-6)
    assert head.batch_std.item() == pytest.approx(0.5 * 100 + 0.5 * norms.std().item(), rel=1e-6)
    assert set(head.state_dict()) == {"weight", "batch_mean", "batch_std"}
    head(x[:1], torch.zeros(1, dtype=torch.long))  # a one-sample batch leaves the std as it was
    assert math.isfinite(head.batch_std.item())


def test_head_stays_float32_under_bf16_autocast():
    head = build_head("magface", 10, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(3, 4, dtype=torch.bfloat16) * 30, torch.tensor([0, 1, 2]))
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32


def magface_loss_along_norm(cos_y, norms, s=64.0):
    """Per-sample MagFace loss (CE + lambda_g g) of one sample whose direction is fixed, at several norms."""
    head = build_head("magface", 2, 2, theta_policy="none").double()
    theta = math.acos(cos_y)
    head.weight.data = torch.tensor([[1.0, 0.0], [math.cos(theta + 1.2), math.sin(theta + 1.2)]], dtype=torch.float64)
    direction = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64)
    losses = []
    for a in norms:
        out = head((a * direction)[None], torch.tensor([0]))
        losses.append(out.loss.item())
    return torch.tensor(losses)


@pytest.mark.parametrize("cos_y", [0.75, 0.85, 0.95])
def test_magface_loss_falls_to_its_optimum_then_rises(cos_y):
    """Sanity link to theory/: along the magnitude, with the direction fixed, L is unimodal with an interior
    minimum inside [l_a, u_a] (cos_y large enough that theta + u_m <= pi/2)."""
    norms = torch.linspace(10.0, 110.0, 201)
    loss = magface_loss_along_norm(cos_y, norms)
    k = int(torch.argmin(loss))
    assert 0 < k < len(norms) - 1, "optimum should be interior"
    assert torch.all(torch.diff(loss[: k + 1]) < 0)
    assert torch.all(torch.diff(loss[k:]) > 0)


def test_heads_run_under_no_grad_and_inference_mode():
    head = build_head("magface", 10, 4)
    x, y = torch.randn(3, 4) * 20, torch.tensor([0, 1, 2])
    with torch.no_grad():
        a = head(x, y).loss
    with torch.inference_mode():
        b = head(x, y).loss
    assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-6)


def test_magface_log_stats_at_known_norms():
    """Realised margin, mean g and the in-band share, at norms below, inside and above [l_a, u_a] = [10, 110]."""
    head = build_head("magface", 10, 4)
    norms = torch.tensor([5.0, 10.0, 60.0, 110.0, 500.0])
    stats = head.log_stats(norms, torch.full((5,), 0.5))
    margins, a = [0.45, 0.45, 0.625, 0.8, 0.8], torch.tensor([10.0, 10.0, 60.0, 110.0, 110.0])
    expect = {"margin_mean": sum(margins) / 5, "margin_min": 0.45, "margin_max": 0.8, "margin_p5": 0.45,
              "margin_p50": 0.625, "margin_p95": 0.8, "g_mean": (1 / a + a / 110**2).mean().item(),
              "in_band_share": 0.6, "margin_applied_share": 1.0}
    assert stats.keys() == expect.keys() and all(isinstance(v, float) for v in stats.values())
    for key, value in expect.items():
        assert stats[key] == pytest.approx(value, rel=1e-6), key


def test_magface_margin_stats_count_only_samples_that_carry_the_margin():
    """Under "easy" a sample with cos theta_y <= 0 has no margin: its (large) magnitude is not a realised margin.
    Under "none" (and for Mag-CosFace) every sample carries m(a)."""
    norms, cos = torch.tensor([10.0, 60.0, 110.0, 110.0]), torch.tensor([0.5, 0.6, -0.2, 0.0])
    easy = build_head("magface", 10, 4).log_stats(norms, cos)
    assert easy["margin_applied_share"] == 0.5
    assert (easy["margin_min"], easy["margin_max"]) == pytest.approx((0.45, 0.625))
    none = build_head("magface", 10, 4, theta_policy="none").log_stats(norms, cos)
    assert none["margin_applied_share"] == 1.0 and none["margin_max"] == pytest.approx(0.8)
    assert build_head("mag_cosface", 10, 4).log_stats(norms, cos)["margin_applied_share"] == 1.0
    nothing = build_head("magface", 10, 4).log_stats(norms, -cos.abs() - 0.1)
    assert nothing["margin_applied_share"] == 0.0 and math.isnan(nothing["margin_p5"])


def test_adaface_logs_its_running_statistics_and_other_heads_log_nothing_extra():
    head = build_head("adaface", 10, 4)
    assert head.log_stats(torch.ones(3), torch.zeros(3)) == {"ada_norm_mean": 20.0, "ada_norm_std": 100.0}
    for name in ("softmax", "cosface", "arcface", "sphereface"):
        assert build_head(name, 10, 4).log_stats(torch.ones(3), torch.zeros(3)) == {}


def test_startup_check_is_magface_feasibility_line():
    assert build_head("magface", 10, 4).startup_check() == (
        "lambda_g check: bound s*k*u_a^2*l_a^2/(u_a^2-l_a^2) = 22.5867 for s=64; lambda_g = 35 -> OK")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low = build_head("mag_cosface", 10, 4, lambda_g=1.0)
    assert low.startup_check().endswith("lambda_g = 1 -> BELOW THE BOUND: the convergence theorem does not hold")
    assert build_head("cosface", 10, 4).startup_check() is None
