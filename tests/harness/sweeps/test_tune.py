"""The fair comparison protocol: identity-disjoint validation and test splits, the equal-budget search
(harness.sweeps.tune) and compare_losses.py --tune end to end at a tiny size."""
import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support import ROOT
from tiny import TINY

from harness.config import load_config
from harness.data.synthetic import SyntheticConfig, generate
from harness.evaluation.evaluate import identity_splits
from harness.sweeps.spec import load_spec
from harness.sweeps.tune import check_validation, load_plan, trial_run

SPEC = f"{ROOT}/configs/sweeps/compare_losses.toml"


def test_validation_and_test_identities_are_disjoint_and_cover_the_pairs():
    faces = generate(SyntheticConfig(size=16, train_identities=4, eval_identities=40, eval_images_per_identity=4,
                                     pairs_per_fold=20))
    ident, p = faces.eval.identity, faces.pairs
    emb = np.random.default_rng(0).standard_normal((len(ident), 8))
    scores = np.random.default_rng(1).random(len(p.left))
    splits = identity_splits(emb, ident, p, scores, validation_folds=3, n_boot=20)
    val_pairs, test_pairs = p.fold < 3, p.fold >= 3
    val_ids = set(ident[p.left[val_pairs]]) | set(ident[p.right[val_pairs]])
    test_ids = set(ident[p.left[test_pairs]]) | set(ident[p.right[test_pairs]])
    assert val_ids and test_ids and not val_ids & test_ids
    assert splits["validation"]["folds"] == [0, 1, 2] and splits["test"]["folds"] == list(range(3, 10))
    assert splits["validation"]["identities"] == len(val_ids) and splits["test"]["identities"] == 40 - len(val_ids)
    assert splits["validation"]["pairs"] + splits["test"]["pairs"] == len(scores)
    assert splits["test"]["images"] == int(np.isin(ident, list(test_ids)).sum()) + int(
        (~np.isin(ident, list(val_ids | test_ids))).sum())          # identities in no pair count as test
    assert splits["validation"]["images"] == int(np.isin(ident, list(val_ids)).sum())
    assert "ci" in splits["test"] and "ci" not in splits["validation"]   # validation numbers are never reported
    assert identity_splits(emb, ident, p, scores, validation_folds=0) == {}
    leaky = replace(p, fold=np.where(np.arange(len(p.fold)) == np.flatnonzero(val_pairs)[0], 5, p.fold))
    with pytest.raises(ValueError, match="test pair.s. involve validation identities"):
        identity_splits(emb, ident, leaky, scores, validation_folds=3)   # a validation pair moved into a test fold


def test_bad_split_settings_are_refused():
    with pytest.raises(ValueError, match="eval.validation_folds=1: expected 0"):
        load_config(None, TINY + ["eval.validation_folds=1"])
    with pytest.raises(ValueError, match="leaves 1 of data.synthetic.folds=10 folds"):
        load_config(None, TINY + ["eval.validation_folds=9"])
    with pytest.raises(ValueError, match=r"\['cfp'\] are not among data.eval_bins"):
        load_config(None, TINY + ['eval.validation_bins=["cfp"]'])


def plan_error(tmp_path, tune_text, trials=None):
    """The error load_plan gives for the shipped spec with its [tune] table replaced."""
    text = Path(SPEC).read_text()
    text = text[:text.index("[tune]")] + tune_text + "\n" + text[text.index("[quick]"):]
    text = text.replace('base = "../', f'base = "{ROOT}/configs/')
    path = tmp_path / "spec.toml"
    path.write_text(text)
    spec = load_spec(str(path)).with_axis("head", ["cosface", "magface"])
    with pytest.raises(ValueError) as exc:
        load_plan(spec, trials)
    return str(exc.value)


GOOD = """[tune]
[tune.space.cosface]
"optim.lr" = { low = 0.02, high = 0.4, log = true }
[tune.space.magface]
"head.params.l_m" = { low = 0.2, high = 0.5 }
"""


@pytest.mark.parametrize("tune_text, trials, message", [
    (GOOD, 0, "--tune 0: expected a number of trials per head >= 1"),
    (GOOD.replace('[tune.space.magface]\n"head.params.l_m" = { low = 0.2, high = 0.5 }\n', ""), None,
     "head 'magface': empty or missing search space"),
    (GOOD.replace("[tune.space.magface]", "[tune.space.magface]\n\"head.params.h\" = { low = 0.1, high = 0.5 }"), None,
     "the space names 'h', which head magface does not take"),
    (GOOD.replace("low = 0.2, high = 0.5", "low = 0.5, high = 0.5"), None, "'head.params.l_m' range low=0.5, high=0.5"),
    (GOOD.replace("low = 0.02, high = 0.4, log = true", "low = 0.0, high = 0.4, log = true"), None,
     "low > 0 for log = true"),
    (GOOD.replace("{ low = 0.2, high = 0.5 }", "{ choices = [0.3] }"), None, "at least 2 distinct values"),
    (GOOD.replace("{ low = 0.2, high = 0.5 }", "{ lo = 0.2, high = 0.5 }"), None, "unknown key(s) ['lo']"),
    (GOOD.replace("[tune]\n", '[tune]\nobjective = "test_accuracy"\n'), None, "a test number never chooses"),
    (GOOD.replace("[tune]\n", "[tune]\ntrial_seed = 3\n"), None, "trial_seed 3 is one of the final seeds"),
    (GOOD.replace('"optim.lr"', '"optim.lrate"'), None, "'optim.lrate' is not a config key"),
    (GOOD.replace('"optim.lr"', '"train.seed"'), None, "'train.seed' cannot be searched: only optim.* and head.params"),
    (GOOD.replace('"optim.lr"', '"eval.validation_folds"'), None, "'eval.validation_folds' cannot be searched"),
    (GOOD + '[tune.space.cosfce]\n"optim.lr" = { low = 0.1, high = 0.2 }\n', None,
     "names ['cosfce'], which are neither"),
])
def test_bad_search_plans_are_refused_before_training(tmp_path, tune_text, trials, message):
    assert message in plan_error(tmp_path, tune_text, trials)


def test_the_shipped_plan_names_every_head_and_checks_the_validation_split(tmp_path):
    spec = load_spec(SPEC)
    plan = load_plan(spec)
    assert list(plan.spaces) == spec.axes["head"] and plan.objective == "val_map_at_r"
    assert all(any(p.key == "optim.lr" for p in ps) for ps in plan.spaces.values())   # lr for every head
    assert plan.trial_seed not in spec.axes["seed"]
    quick = load_plan(load_spec(SPEC, quick=True))
    assert quick.trials == 2 and quick.spaces.keys() == plan.spaces.keys()
    over = TINY + [f'data.cache_dir="{tmp_path}"']
    run = trial_run(spec, plan, "cosface", {"head.params.m": 0.3}, str(tmp_path), over)
    assert run.cfg.head.params["m"] == 0.3 and run.cfg.train.seed == plan.trial_seed
    with pytest.raises(ValueError, match="the validation split has 0 identities"):
        check_validation([trial_run(spec, plan, "cosface", {}, str(tmp_path), over + ["eval.validation_folds=0"])],
                         plan.objective)
    real = replace(run.cfg.data, source="recordio")
    with pytest.raises(ValueError, match="needs a validation pack"):
        check_validation([replace(run, cfg=replace(run.cfg, data=real))], plan.objective)


def test_trials_a_head_refuses_fail_without_training_and_all_failed_is_an_error(tmp_path):
    from harness.sweeps.tune import search, tuned_spec
    spec = load_spec(SPEC, quick=True).with_axis("head", ["magface"])
    spec = replace(spec, tune={**spec.tune, "space": {"magface": {"head.params.l_m": {"low": 0.85, "high": 0.9},
                                                                  "head.params.u_m": {"low": 0.5, "high": 0.8}}}})
    plan = load_plan(spec, 2)
    rows = search(spec, plan, str(tmp_path), TINY + [f'data.cache_dir="{tmp_path}"'], say=lambda *a: None)
    assert [r["state"] for r in rows] == ["failed", "failed"] and all(r["run"] is None for r in rows)
    assert all("refused before training" in r["error"] and "u_m" in r["error"] for r in rows)
    assert not (tmp_path / "runs").exists()                                      # nothing was trained
    with pytest.raises(ValueError, match="every trial of every head failed"):
        tuned_spec(spec, plan, {})


def compare(tmp_path, *extra):
    args = [sys.executable, "benchmarks/compare_losses.py", "--quick", "--heads", "softmax,magface", "--figures",
            str(tmp_path / "fig"),
            *[a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"'] for a in ("--set", s)], *extra]
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tune_end_to_end_then_the_same_search_again(tmp_path):
    compare(tmp_path, "--conditions", "clean", "--out", str(tmp_path / "untuned"))
    tuned = ["--tune", "3", "--out", str(tmp_path / "tuned"), "--untuned", str(tmp_path / "untuned")]
    out = compare(tmp_path, *tuned)
    trials = read(tmp_path / "tuned" / "tuning.csv")
    assert [(t["head"], t["trial"]) for t in trials] == [(h, str(i)) for i in range(1, 4)
                                                         for h in ("softmax", "magface")]
    assert all(t["state"] == "complete" and 0 <= float(t["value"]) <= 1 for t in trials)
    assert len({t["lr"] for t in trials}) == 6                                          # every trial its own lr
    best = {b["head"]: b for b in read(tmp_path / "tuned" / "tuning_best.csv")}
    for head, b in best.items():
        mine = [t for t in trials if t["head"] == head]
        top = max(mine, key=lambda t: float(t["value"]))
        assert b["best_trial"] == top["trial"] and float(b["best_value"]) == float(top["value"])
    final = read(tmp_path / "tuned" / "compare_losses_tuned.csv")
    assert [(r["head"], r["seed"]) for r in final] == [("softmax", "0"), ("magface", "0")]   # the final seeds
    for r in final:
        cfg = json.loads(Path(f"{r['run']}/config.json").read_text())
        values = json.loads(best[r["head"]]["best_values"])
        assert cfg["optim"]["lr"] == values["lr"]
        assert all(cfg["head"]["params"][k] == v for k, v in values.items() if k != "lr")
        assert r["map_at_r"] and r["test_accuracy"] and r["val_map_at_r"]
    versus = read(tmp_path / "tuned" / "tuned_vs_untuned.csv")
    assert {v["head"] for v in versus} == {"softmax", "magface"} and "tuned - untuned" in out
    assert (tmp_path / "fig" / "tuning_quick.png").stat().st_size > 20_000
    again = compare(tmp_path, *tuned)
    assert "0 new run(s)" in again and read(tmp_path / "tuned" / "tuning.csv") == trials   # the same search


def test_real_data_columns_take_the_validation_pack_apart():
    from harness.sweeps.rows import metric_columns

    def pack(acc, role):
        return {"accuracy": acc, "accuracy_std": 0.01, "tar_at_far": {"0.01": acc - 0.1}, "role": role,
                "erc": {"area": 0.1}, "edc": {"area": 0.1, "pauc": {"0.2": 0.05}},
                "ci": {"accuracy": [acc - 0.02, acc + 0.02], "tar_far_0.01": [acc - 0.2, acc]}}
    row = metric_columns({"sets": {"cfp_fp": pack(0.8, "validation"), "lfw": pack(0.9, "test")}})
    assert row["eval_set"] == "lfw" and row["accuracy"] == 0.9 and row["test_accuracy"] == 0.9
    assert row["val_accuracy"] == 0.8 and row["val_tar_far_0.01"] == pytest.approx(0.7)
    assert row["test_accuracy_ci_low"] == pytest.approx(0.88) and row["map_at_r"] is None
    assert "map_at_r: retrieval needs identity labels" in row["not_computable"]
    alone = metric_columns({"sets": {"lfw": pack(0.9, "test")}})
    assert alone["val_accuracy"] is None and alone["test_accuracy"] is None and "no validation/test split" in \
        alone["not_computable"]
