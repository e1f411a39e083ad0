"""Sweep specs: expansion into runs, metadata stored with each run, and bad specs refused before any training."""
import json
from pathlib import Path

import pytest
from support import ROOT, write_spec
from tiny import TINY

from harness.__main__ import main as harness_main
from harness.sweeps.expand import expand
from harness.sweeps.runner import run_spec
from harness.sweeps.spec import load_spec
from harness.sweeps.status import run_status
from harness.sweeps.tables import compare, replicate_variance

BASE = f"{ROOT}/configs/cpu_synthetic_quick.toml"


def test_shipped_specs_expand(tmp_path):
    abl = expand(load_spec(f"{ROOT}/configs/sweeps/ablation.toml"), str(tmp_path))
    assert [(r.cfg.head.params["l_m"], r.cfg.head.params["u_m"]) for r in abl][:2] == [(0.35, 0.7), (0.35, 0.8)]
    assert len(abl) == 9 and all(r.cfg.head.name == "magface" for r in abl)
    spec = load_spec(f"{ROOT}/configs/sweeps/compare_losses.toml", quick=True)
    cmp = expand(spec, str(tmp_path))
    heads = spec.axes["head"]
    assert len(heads) == 15 and len(cmp) == 2 * len(heads)   # --quick: one seed, both conditions
    assert cmp[0].axes == {"condition": "clean", "head": "softmax", "seed": 0}
    arc = next(r for r in cmp if r.axes["head"] == "arcface")
    assert arc.cfg.head.params == {"s": 32.0, "theta_policy": "easy"} and arc.cfg.train.epochs == 2
    mag = next(r for r in cmp if r.axes == {"condition": "noisy", "head": "magface", "seed": 0})
    assert mag.cfg.head.params["lambda_g"] == "auto"   # inherited from the base config
    assert mag.cfg.data.synthetic.label_noise == 0.1 and mag.cfg.data.synthetic.garbage == 0.05
    assert len({r.folder for r in cmp}) == len(cmp) and len({r.fingerprint for r in cmp}) == len(cmp)


def test_order_of_overrides_and_per_run_overrides(tmp_path):
    spec = load_spec(write_spec(tmp_path, '''
[set]
"train.epochs" = 1
[axes]
head = ["cosface", "softmax"]
seed = [3]
[[overrides]]
match = { head = "softmax" }
set = { "optim.lr" = 0.01 }
'''))
    runs = expand(spec, str(tmp_path / "o"), ["optim.lr=0.2", "train.epochs=4"])
    assert [r.cfg.optim.lr for r in runs] == [0.2, 0.01]      # caller's --set <- per-run override
    assert all(r.cfg.train.epochs == 4 and r.cfg.train.seed == 3 for r in runs)
    assert runs[0].cfg.head.params == {}                     # another head than the base's: its own defaults


@pytest.mark.parametrize("text,message", [
    ('foo = 1\n[axes]\nseed = [0]\n', "unknown key(s) ['foo']"),
    ('[axes]\n', "[axes] is empty"),
    ('[axes]\nseed = []\n', "axis 'seed' must be a non-empty list"),
    ('[axes]\nseed = [0, 1, 0]\n', "axis 'seed' has duplicate values ['0']"),
    ('[axes]\nseed = [0.5]\n', "axis 'seed' takes integers"),
    ('[axes]\n"train.epoch" = [1, 2]\n', "'train.epoch' is not a config key (no 'epoch' in train)"),
    ('[axes]\n"head.params.l_m" = [0.4]\n"model.l_m" = [1]\n', "'model.l_m' is not a config key"),
    ('[axes]\nhead = ["arcfce"]\n', "axis 'head' values ['arcfce'] are neither [heads] labels"),
    ('[axes]\ncondition = ["x"]\n', "axis 'condition' values ['x'] are not [conditions] labels"),
    ('[axes]\nseed = [0]\n[[overrides]]\nmatch = { head = "x" }\nset = {}\n',
     "matches on ['head'], which are not axes"),
    ('[axes]\nseed = [0]\n[set]\n"optim.lrr" = 1\n', "'optim.lrr' is not a config key"),
    ('[axes]\nseed = [0]\n[heads.x]\nname = "nope"\n', "[heads.x]: unknown head 'nope'"),
    ('[axes]\n"head.params.l_m" = [0.9]\n', "head.params.l_m': 0.9}: u_m (must be >= l_m)"),
])
def test_bad_specs_are_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(ValueError) as err:
        expand(load_spec(write_spec(tmp_path, text)), str(tmp_path / "o"))
    assert message in str(err.value)


def test_missing_spec_parts(tmp_path):
    (tmp_path / "s.toml").write_text('name = "t"\n[axes]\nseed = [0]\n')
    with pytest.raises(ValueError, match="missing key 'base'"):
        load_spec(str(tmp_path / "s.toml"))
    with pytest.raises(ValueError, match="not found"):
        load_spec(str(tmp_path / "nope.toml"))


def test_runner_stores_metadata_and_never_overwrites_a_foreign_folder(tmp_path):
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0, 1]\n'))
    over = TINY + ["train.epochs=1", f'data.cache_dir="{tmp_path / "cache"}"']
    result = run_spec(spec, str(tmp_path / "o"), over, quiet=True)
    assert [r["seed"] for r in result.rows] == [0, 1] and result.trained == 2
    meta = json.loads(Path(f"{result.runs[0].folder}/sweep_run.json").read_text())
    assert meta == {"sweep": "t", "axes": {"seed": 0}, "name": "seed0", "fingerprint": result.runs[0].fingerprint}
    stored = json.loads(Path(tmp_path / "o" / "t.json").read_text())
    assert stored["summary"][0]["seeds"] == 2 and stored["setup"]["backbone"] == "small_cnn"
    assert "NaN" not in (tmp_path / "o" / "t.json").read_text()
    again = run_spec(spec, str(tmp_path / "o"), over, quiet=True)
    assert again.trained == 0 and again.rows == result.rows
    # other evaluation settings: the same trained runs, evaluated again (nothing retrained)
    other = run_spec(spec, str(tmp_path / "o"), over + ["eval.fmr=0.01", "eval.bootstrap=0"], quiet=True)
    assert other.trained == 0 and [r.folder for r in other.runs] == [r.folder for r in result.runs]
    stored = json.loads(Path(f"{result.runs[0].folder}/eval/metrics.json").read_text())
    assert stored["eval_config"]["fmr"] == 0.01 and "ci" not in stored["sets"]["synthetic"]
    assert other.rows[0]["accuracy"] == result.rows[0]["accuracy"] and other.rows[0].get("accuracy_ci_low") is None
    meta["fingerprint"] = "0" * 16   # a folder of another configuration under this name: refused, kept
    Path(f"{result.runs[0].folder}/sweep_run.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="move it away"):
        run_status(result.runs[0])


def test_cli_sweep_dry_run_and_prune_without_spec(tmp_path, capsys, refused):
    spec = write_spec(tmp_path, '[axes]\nseed = [0, 1]\n')
    harness_main(["sweep", spec, "--out", str(tmp_path / "o"), "--dry-run"])
    assert capsys.readouterr().out.count("  new    seed") == 2
    assert not (tmp_path / "o" / "runs").exists()
    assert "a sweep spec is required" in refused(harness_main, "sweep", "--prune")
    assert "unknown key(s) ['foo']" in refused(harness_main, "sweep", write_spec(tmp_path, 'foo = 1\n', "bad.toml"))


def test_a_failed_run_is_recorded_the_others_go_on_and_it_is_retried_only_when_asked(tmp_path):
    spec = load_spec(write_spec(tmp_path, '[axes]\n"optim.lr" = [0.05, 1e30]\n'))
    over = TINY + ["train.epochs=1", f'data.cache_dir="{tmp_path / "cache"}"', "eval.bootstrap=0"]
    result = run_spec(spec, str(tmp_path / "o"), over, quiet=True)
    ok, bad = result.rows
    assert ok["accuracy"] is not None and "failed" not in ok
    assert bad["failed"].startswith("TrainingDiverged: non-finite") and bad.get("accuracy") is None
    assert json.loads(Path(f"{result.runs[1].folder}/failed.json").read_text())["error"] == bad["failed"]
    assert [r["lr"] for r in json.loads(Path(tmp_path / "o" / "t.json").read_text())["runs"]] == [0.05, 1e30]
    again = run_spec(spec, str(tmp_path / "o"), over, quiet=True)
    assert again.trained == 0 and again.rows[1]["failed"] == bad["failed"]
    retried = run_spec(spec, str(tmp_path / "o"), over, quiet=True, retry_failed=True)
    assert retried.trained == 1 and retried.rows[1]["failed"].startswith("TrainingDiverged")


def test_data_replicates_draw_a_data_set_per_seed_and_the_tables_say_so(tmp_path):
    spec = load_spec(write_spec(tmp_path, 'replicates = "data"\n[axes]\nseed = [3, 4]\n'))
    runs = expand(spec, str(tmp_path / "o"))
    assert [(r.cfg.train.seed, r.cfg.data.synthetic.seed) for r in runs] == [(3, 3), (4, 4)]
    assert replicate_variance(runs) == "training seed and data instance"
    plain = expand(load_spec(write_spec(tmp_path, "[axes]\nseed = [3, 4]\n", "plain.toml")), str(tmp_path / "p"))
    assert {r.cfg.data.synthetic.seed for r in plain} == {0}
    assert replicate_variance(plain) == "training seed only: one data instance (data.synthetic.seed = 0)"
    with pytest.raises(ValueError, match=r"replicates = 'all'; expected one of \['training', 'data'\]"):
        load_spec(write_spec(tmp_path, 'replicates = "all"\n[axes]\nseed = [0]\n', "bad.toml"))
    real = load_spec(write_spec(tmp_path, 'replicates = "data"\n[set]\n"data.source" = "folder"\n'
                                          '"data.path" = "."\n[axes]\nseed = [0]\n', "real.toml"))
    with pytest.raises(ValueError, match="real data does not use"):
        expand(real, str(tmp_path / "r"))


@pytest.mark.parametrize("text,message", [
    ('[verdicts]\nmargins = { accuracy = 0 }', r"margins.accuracy = 0: expected a number > 0"),
    ('[verdicts]\nmetrics = ["accuracy"]\nmargins = { map_at_r = 0.02 }', r"'map_at_r' is not among the compared"),
    ('[verdicts]\nmetrics = "accuracy"', r"metrics must be a list of metric names"),
    ('[verdicts]\nfamily = "all"', r"unknown key\(s\) \['family'\]"),
    ('[verdicts]\nmetrics = ["acuracy"]', r"\['acuracy'\] are not compared metrics"),
    ('[verdicts]\nmargins = { accuracy = 0.01 }', r"\[verdicts\] needs a reference head"),
])
def test_bad_verdict_declarations_are_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_spec(write_spec(tmp_path, text + "\n[axes]\nseed = [0]\n"))


def test_comparisons_carry_their_family_and_adjusted_verdicts():
    """Three heads against a reference on one metric: one family of 3, Holm on its p-values, the equivalence margin
    applied where declared, lower-is-better metrics oriented back."""
    base = [0.80, 0.85, 0.83, 0.90, 0.78]
    shifts = {"ref": [0] * 5, "up": [0.06, 0.04, 0.05, 0.055, 0.045], "same": [0.001, -0.001, 0.0005, -0.0005, 0],
              "noisy": [0.02, -0.03, 0.01, -0.02, 0.03]}
    rows = [{"head": h, "seed": i, "condition": "clean", "accuracy": b + d, "erc_area_magface": b - d}
            for h, ds in shifts.items() for i, (b, d) in enumerate(zip(base, ds, strict=True))]
    out = compare(rows, ["condition", "head", "seed"], "ref", ["accuracy", "erc_area_magface"],
                  {"accuracy": 0.01}, "t", "training seed only")
    acc = {c["head"]: c for c in out if c["metric"] == "accuracy"}
    assert {c["family_size"] for c in out} == {3} and acc["up"]["family"] == \
        "t: accuracy (condition = clean), 3 head(s) vs ref"
    assert acc["up"]["verdict"] == "better" and acc["same"]["verdict"] == "equivalent within ±0.01"
    assert acc["noisy"]["verdict"].startswith("inconclusive (80 % power for |diff| >= ")
    assert acc["up"]["p_holm"] == pytest.approx(min(1.0, 3 * acc["up"]["p"]))
    erc = {c["head"]: c for c in out if c["metric"] == "erc_area_magface"}
    assert erc["up"]["verdict"] == "better" and erc["up"]["diff_vs_ref"] < 0     # lower area is better
    assert erc["up"]["equivalence_margin"] is None and erc["same"]["verdict"].startswith("inconclusive")
    assert all(c["variance"] == "training seed only" for c in out)
