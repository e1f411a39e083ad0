"""Typed config: files with bases, overrides, and errors that name the key."""
import pytest

from harness.config import OptimConfig, load_config, parse_override
from harness.training.schedule import learning_rate


def test_base_and_override_files(tmp_path):
    (tmp_path / "base.toml").write_text('[train]\nepochs = 7\nbatch_size = 64\n[head]\nname = "arcface"\n')
    (tmp_path / "exp.toml").write_text('base = "base.toml"\n[train]\nepochs = 3\n[head]\nparams = { m = 0.3 }\n')
    cfg = load_config(str(tmp_path / "exp.toml"), ["optim.lr=0.05", "head.params.s=30"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 64 and cfg.head.name == "arcface"
    assert cfg.head.params == {"m": 0.3, "s": 30} and cfg.optim.lr == 0.05


def test_shipped_configs_load():
    cfg = load_config("configs/cpu_synthetic_magface.toml")
    assert cfg.head.name == "magface" and cfg.model.backbone == "small_cnn"
    with pytest.raises(ValueError, match="data.path='/data/faces_emore': not found"):
        load_config("configs/paper_ms1mv2_r100_magface.toml")


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown config key 'train.epoch'; valid keys in [train]: epochs, batch_size"),
    ("trian.epochs=3", "unknown config key 'trian'"),
    ("train.calibrate_at_epoch=0", "train.calibrate_at_epoch=0.0 must be a finite number in (0, infinity)"),
    ('train.epochs="3"', "config key train.epochs: expected int, got '3'"),
    ("train.epochs=0", "train.epochs=0 must be a finite number in [1, infinity)"),
    ("train.amp=fp8", "train.amp='fp8' is not one of"),
    ("optim.lr=-1", "optim.lr=-1.0 must be a finite number in (0, infinity)"),
    # impossible values that used to pass or end in tracebacks (reliability campaign, 2026-12-03)
    ("train.max_steps=-5", "train.max_steps=-5 must be a finite number in [0, infinity) (0: run all epochs)"),
    ("optim.lr=nan", "optim.lr=nan must be a finite number in (0, infinity)"),
    ("optim.lr=inf", "optim.lr=inf must be a finite number"),
    ("optim.momentum=nan", "optim.momentum=nan must be a finite number in [0, 1)"),
    ("model.dropout=inf", "model.dropout=inf must be a finite number in [0, 1)"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1.0 must be a finite number in [0, infinity)"),
    ("train.seed=-1", "train.seed=-1 must be a finite number in [0, "),
    ("data.workers=-1", "data.workers=-1 must be a finite number in [0, infinity)"),
    ('optim.milestones=["a"]', "optim.milestones=['a']: expected epochs (numbers >= 0), got ['a']"),
    ("model.width=0", "model.width=0 must be a finite number in [1, infinity)"),
    ('out=""', "config key out='': give the run folder"),
    ("head.name=arcfce", "unknown head 'arcfce'"),
    ("head.params.margin=0.5", "unknown parameter(s) ['margin']"),
    ("head.params.l_m=0.9", "u_m (must be >= l_m)"),
    ('data.source="recordio"', "data.path='': not found"),
    ("optim.milestones=[5, 2]", "must be increasing"),
    ("train.epochs", "must look like section.key=value"),
])
def test_bad_config_fails_before_training_naming_the_key(override, message):
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_override_parsing():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("out=results/x") == (["out"], "results/x")
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("head.params={l_m = 0.4}") == (["head", "params"], {"l_m": 0.4})


def test_closed_form_schedule():
    step = OptimConfig(lr=0.1, milestones=[10, 18, 22])
    assert learning_rate(0, 100, 2500, step) == 0.1
    assert learning_rate(999, 100, 2500, step) == 0.1 and learning_rate(1000, 100, 2500, step) == pytest.approx(0.01)
    assert learning_rate(2200, 100, 2500, step) == pytest.approx(1e-4)
    assert learning_rate(49, 100, 2500, OptimConfig(lr=0.1, warmup_epochs=1.0)) == pytest.approx(0.05)
    poly = OptimConfig(lr=1.0, schedule="poly")
    lrs = [learning_rate(s, 100, 200, poly) for s in (0, 100, 199)]
    assert lrs[0] == 1.0 and lrs[1] == pytest.approx(0.25) and lrs[2] < 1e-3
    # a warmup of 46.8 steps never passes the peak; poly follows the real length of the run (train.max_steps)
    assert max(learning_rate(s, 156, 468, OptimConfig(lr=0.1, warmup_epochs=0.3)) for s in range(60)) == 0.1
    assert learning_rate(50, 100, 100, poly) == pytest.approx(0.25)
