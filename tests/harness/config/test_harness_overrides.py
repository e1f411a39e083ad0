"""Config overrides a user can predict, one source of truth for defaults, and the config fingerprint."""
import dataclasses

import pytest

from harness.config import RunConfig, load_config, load_toml
from harness.data import SyntheticConfig

MAGFACE = "configs/cpu_synthetic_magface.toml"


def test_inline_table_replaces_dotted_key_merges():
    merged = load_config(MAGFACE, ["head.params.l_m=0.4"])
    assert merged.head.params == {"s": 32.0, "l_a": "auto", "u_a": "auto", "l_m": 0.4, "u_m": 0.8, "lambda_g": "auto",
                                  "lambda_g_ratio": 3.0}
    replaced = load_config(MAGFACE, ["head.params={l_m = 0.4}"])
    assert replaced.head.params == {"l_m": 0.4}


def test_switching_head_drops_the_old_params_with_a_note(capsys):
    cfg = load_config(MAGFACE, ['head.name="arcface"'])
    assert cfg.head.name == "arcface" and cfg.head.params == {}
    assert "dropping magface's parameters" in capsys.readouterr().err
    # the README's former failure: name and an empty table together
    cfg = load_config(MAGFACE, ['head.name="arcface"', "head.params={}"])
    assert cfg.head.params == {}
    # new params given with the new name: they are used, nothing is dropped silently
    cfg = load_config(MAGFACE, ['head.name="cosface"', "head.params.m=0.3"])
    assert cfg.head.params == {"m": 0.3}
    # same name: nothing dropped
    assert load_config(MAGFACE, ['head.name="magface"']).head.params["lambda_g"] == "auto"


def test_a_file_switching_head_drops_its_base_params(tmp_path, capsys):
    base = tmp_path / "base.toml"
    base.write_text('[head]\nname = "magface"\nparams = { l_m = 0.3 }\n')
    (tmp_path / "arc.toml").write_text('base = "base.toml"\n[head]\nname = "arcface"\n')
    assert load_config(str(tmp_path / "arc.toml")).head.params == {}
    assert "dropping magface's parameters" in capsys.readouterr().err


def test_synthetic_section_reaches_every_generator_field():
    cfg = load_config(None, ["data.synthetic.pose=0.5", "data.synthetic.folds=5", "data.synthetic.pairs_per_fold=100",
                             "data.synthetic.degradation_probability.blur=0.9"])
    s = cfg.data.synthetic
    assert isinstance(s, SyntheticConfig) and (s.pose, s.folds, s.pairs_per_fold) == (0.5, 5, 100)
    # a dotted key inside a dict field keeps the other entries' defaults
    assert s.degradation_probability == {**SyntheticConfig().degradation_probability, "blur": 0.9}
    assert {f.name for f in dataclasses.fields(SyntheticConfig)} <= set(cfg.to_dict()["data"]["synthetic"])


@pytest.mark.parametrize("override,message", [
    ("data.synthetic.size=8", "config key data.synthetic: SyntheticConfig.size=8"),
    ("data.synthetic.sise=32", "unknown config key 'data.synthetic.sise'"),
    ("data.synthetic.degradation_probability.smudge=0.5", "unknown degradations ['smudge']"),
    ("data.size=32", "unknown config key 'data.size'; valid keys in [data]"),
])
def test_bad_synthetic_values_name_the_key(override, message):
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and k != "params":
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_base_toml_restates_the_dataclass_defaults():
    defaults = dict(_leaves(RunConfig().to_dict()))
    stated = dict(_leaves(load_toml("configs/base.toml")))
    differ = {k: (v, defaults.get(k, "<no such key>")) for k, v in stated.items() if defaults.get(k) != v}
    assert not differ, f"configs/base.toml differs from harness/config.py defaults (toml, dataclass): {differ}"


def test_fingerprint_ignores_where_results_go_but_not_what_they_are():
    a = load_config(MAGFACE)
    b = load_config(MAGFACE, ['out="elsewhere"', 'data.cache_dir="/tmp/c"', "data.workers=4", "eval.fmr=0.01"])
    assert a.fingerprint() == b.fingerprint()
    assert load_config(MAGFACE, ["head.params.l_m=0.4"]).fingerprint() != a.fingerprint()
    assert load_config(MAGFACE, ["train.seed=1"]).fingerprint() != a.fingerprint()
    # the head's resolved defaults are part of it: {} and the explicit default value are the same run
    arc = load_config(MAGFACE, ['head.name="arcface"'])
    arc_explicit = load_config(MAGFACE, ['head.name="arcface"', "head.params.m=0.5"])
    assert arc.fingerprint() == arc_explicit.fingerprint()
