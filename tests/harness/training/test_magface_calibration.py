"""MagFace's "auto" magnitude band: measured from the training magnitudes, recorded, carried by checkpoints."""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from tiny import TINY

from harness.config import load_config
from harness.evaluation.diagnostics import training_diagnostics
from harness.training.trainer import train
from losses import FeasibilityWarning, build_head
from losses.magface import PAPER_LAMBDA_G_RATIO, magface_lambda_g_min

AUTO = dict(s=32.0, l_a="auto", u_a="auto", l_m=0.45, u_m=0.8, lambda_g="auto")


def feed(head, norms, classes=10, dim=8):
    """One training forward with embeddings of the given norms."""
    x = torch.nn.functional.normalize(torch.randn(len(norms), dim), dim=1) * torch.as_tensor(norms)[:, None]
    return head(x, torch.randint(0, classes, (len(norms),)))


def test_before_calibration_the_head_is_arcface_with_margin_l_m():
    head = build_head("magface", 10, 8, **AUTO)
    assert head.needs_calibration and head.calibration is None
    assert head.hparams["l_a"] == head.hparams["u_a"] == head.hparams["lambda_g"] == "auto"
    out = feed(head, np.linspace(2, 9, 32))
    assert float(out.aux["mag_g"]) == 0.0
    stats = head.log_stats(out.norms, out.cos_target)
    assert stats["margin_p5"] == pytest.approx(0.45) and stats["margin_p95"] == pytest.approx(0.45)
    assert "band 'auto'" in head.startup_check()


def test_calibration_takes_the_quantiles_of_the_latest_norms_and_the_papers_lambda_ratio():
    head = build_head("magface", 10, 8, **AUTO)
    feed(head, np.full(head.CALIBRATION_SAMPLES, 100.0))        # pushed out of the ring by the next ones
    norms = np.linspace(3.0, 12.0, head.CALIBRATION_SAMPLES)
    for chunk in np.split(norms, 8):
        feed(head, chunk)
    info = head.calibrate()
    low, high = np.quantile(norms, [0.05, 0.95])
    assert info["l_a"] == pytest.approx(low, rel=1e-5) and info["u_a"] == pytest.approx(high, rel=1e-5)
    bound = magface_lambda_g_min(32.0, info["l_a"], info["u_a"], 0.45, 0.8)
    assert info["lambda_g"] == pytest.approx(PAPER_LAMBDA_G_RATIO * bound)
    assert info["lambda_g_min"] == pytest.approx(bound)
    assert pytest.approx(35 / 22.586666666666673) == PAPER_LAMBDA_G_RATIO
    assert not head.needs_calibration and info["samples"] == head.CALIBRATION_SAMPLES
    out = feed(head, [low, high])
    assert out.aux["mag_g"] > 0
    m = head.margin(torch.tensor([low, high], dtype=torch.float64))
    assert m.tolist() == pytest.approx([0.45, 0.8])
    head.eval()                                               # evaluation forwards do not collect
    seen = int(head.calibration_seen)
    feed(head, [5.0])
    assert int(head.calibration_seen) == seen


def test_the_band_travels_in_the_state_dict():
    head = build_head("magface", 10, 8, **AUTO)
    feed(head, np.linspace(3, 12, 256))
    head.calibrate()
    fresh = build_head("magface", 10, 8, **AUTO)
    assert fresh.needs_calibration
    fresh.load_state_dict(head.state_dict())
    assert fresh.calibration == head.calibration and not fresh.needs_calibration


def test_numeric_lambda_g_is_checked_against_the_calibrated_bound():
    head = build_head("magface", 10, 8, **{**AUTO, "lambda_g": 1.0})
    feed(head, np.linspace(3, 12, 256))
    with pytest.warns(FeasibilityWarning, match="lambda_g=1 is below the feasibility bound"):
        head.calibrate()
    strict = build_head("magface", 10, 8, **{**AUTO, "lambda_g": 1.0, "strict": True})
    feed(strict, np.linspace(3, 12, 256))
    with pytest.raises(ValueError, match="below the feasibility bound"):
        strict.calibrate()


def test_fixed_band_with_auto_lambda_g_resolves_to_the_ratio_times_its_bound():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = build_head("magface", 10, 8, s=32.0, l_a=1.0, u_a=51.0, lambda_g="auto", lambda_g_ratio=2.0)
    assert head.lambda_g == pytest.approx(2 * magface_lambda_g_min(32.0, 1.0, 51.0, 0.45, 0.8))
    assert head.hparams["lambda_g"] == pytest.approx(head.lambda_g)


@pytest.mark.parametrize("params,message", [
    ({"l_a": "auto", "u_a": 50.0}, "give both as 'auto' or both as numbers"),
    ({"auto_quantiles": (0.9, 0.1)}, "auto_quantiles=(0.9, 0.1): expected two quantiles"),
    ({"auto_quantiles": (False, True)}, "auto_quantiles=(False, True): expected two quantiles"),
    ({"lambda_g": "big"}, "lambda_g (or 'auto') must be a real number, got 'big'"),
    ({"lambda_g_ratio": 0.0}, "lambda_g_ratio=0.0 is outside the valid range"),
])
def test_bad_auto_settings(params, message):
    with pytest.raises(ValueError) as err:
        build_head("magface", 10, 8, **{**AUTO, **params})
    assert message in str(err.value)


def test_auto_on_other_heads_and_calibration_without_spread_or_samples_are_errors():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['l_a'\] for head 'arcface'"):
        build_head("arcface", 10, 8, l_a="auto")
    with pytest.raises(RuntimeError, match="fixed band"):
        build_head("magface", 10, 8, s=32.0, l_a=1.0, u_a=51.0, lambda_g=5.0).calibrate()
    head = build_head("magface", 10, 8, **AUTO)
    with pytest.raises(ValueError, match="cannot calibrate the band from 0 training norm"):
        head.calibrate()
    feed(head, np.full(64, 4.0))
    with pytest.raises(ValueError, match="no spread to calibrate a band on"):
        head.calibrate()


def test_training_calibrates_at_the_configured_epoch_and_records_the_band(tmp_path):
    cfg = load_config(None, TINY + [f'out="{tmp_path / "run"}"', f'data.cache_dir="{tmp_path / "cache"}"',
                                    "head.params={s = 16.0, l_a = 'auto', u_a = 'auto', lambda_g = 'auto'}",
                                    "train.epochs=4", "train.calibrate_at_epoch=2"])
    train(cfg, quiet=True, evaluate=False)
    info = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert info["step"] == 10 and info["epoch"] == 2.0 and info["l_a"] < info["magnitude_p50"] < info["u_a"]
    final = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=False)
    assert final["head"]["band"].tolist() == pytest.approx([info["l_a"], info["u_a"], info["lambda_g"]])
    diag = training_diagnostics(str(tmp_path / "run"), cfg)
    assert diag["calibrated_l_a"] == info["l_a"] and diag["calibrated_lambda_g"] == info["lambda_g"]
    assert np.isfinite(diag["theory_rho_a_astar"])
    assert [entry["step"] for entry in diag["theory_by_step"]] == [15, 20]   # dumps every 5 steps, after step 10


def test_calibration_after_the_last_step_is_refused_with_the_setting_that_works(tmp_path):
    sets = TINY + [f'out="{tmp_path / "run"}"', f'data.cache_dir="{tmp_path / "cache"}"',
                   "head.params={l_a = 'auto', u_a = 'auto'}", "train.epochs=2"]
    cfg = load_config(None, sets + ["train.calibrate_at_epoch=2"])
    with pytest.raises(ValueError, match="calibrate_at_epoch=2.0 puts the calibration .* at step 10, but the run has "
                                         "only 10 steps; for a run this short add --set train.calibrate_at_epoch=1 "):
        train(cfg, quiet=True, evaluate=False)
    train(load_config(None, sets + ["train.calibrate_at_epoch=1"]), quiet=True, evaluate=False)   # as suggested
    assert os.path.isfile(tmp_path / "run" / "calibration.json")


def test_the_ring_keeps_exactly_the_latest_norms_across_its_wrap():
    head = build_head("magface", 10, 8, **AUTO)
    norms = np.linspace(1.0, 50.0, 6000)
    feed(head, norms[:3000])
    feed(head, norms[3000:])                                     # straddles the end of the 4,096-slot ring
    kept = np.sort(head.calibration_norms.numpy())
    assert np.allclose(kept, np.sort(norms[-head.CALIBRATION_SAMPLES:]), rtol=1e-6)
    feed(head, np.linspace(60.0, 70.0, 5000))                    # one batch longer than the ring
    assert np.allclose(np.sort(head.calibration_norms.numpy()), np.linspace(60.0, 70.0, 5000)[-4096:], rtol=1e-6)


def test_a_strict_failure_leaves_the_head_uncalibrated():
    strict = build_head("magface", 10, 8, **{**AUTO, "lambda_g": 1.0, "strict": True})
    feed(strict, np.linspace(3, 12, 256))
    with pytest.raises(ValueError, match="below the feasibility bound"):
        strict.calibrate()
    assert strict.needs_calibration and torch.isnan(strict.band).all()


def test_mag_cosface_auto_lambda_g_uses_its_official_ratio():
    head = build_head("mag_cosface", 10, 8, s=32.0, l_a="auto", u_a="auto", lambda_g="auto")
    feed(head, np.linspace(3, 12, 256))
    info = head.calibrate()
    assert info["lambda_g"] / info["lambda_g_min"] == pytest.approx(150 / 29.04, rel=1e-3)
