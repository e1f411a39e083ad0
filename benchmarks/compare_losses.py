"""Loss comparison: the paper's heads (Softmax, SphereFace, CosFace, ArcFace, MagFace, AdaFace) and the field's
other families (CurricularFace, MV-Softmax, CircleLoss, Sub-center ArcFace, AdaCos, ElasticFace-Arc/-Cos, UniFace) on
one harness, one data set, one budget and the same seeds, trained on clean data and on data with label noise and
garbage images.

The grid (conditions x heads x seeds, each head's parameters) is the sweep spec configs/sweeps/compare_losses.toml,
run by harness.sweeps: every run is a harness run in OUT/runs/, reused when finished, resumed when killed, never
deleted by a run of another configuration. Tables: OUT/compare_losses.csv (one row per run),
OUT/compare_losses_summary.csv (mean, std and 95 % t interval over seeds per condition and head),
OUT/compare_losses_comparison.csv (every head minus MagFace, paired by seed, with CI and verdict),
OUT/compare_losses_vs_arcface.csv (every head minus ArcFace, the baseline the newer heads' papers claim to beat),
OUT/noise_robustness.csv (accuracy lost to noise, and that loss minus MagFace's), OUT/compare_losses.json;
figure: OUT/compare_losses.png (and a copy in figures/).

    python benchmarks/compare_losses.py              # 14 heads x 5 seeds x {clean, noisy}, CPU, about 2.5 hours
    python benchmarks/compare_losses.py --quick      # 1 seed, 2 epochs, a few minutes
    python benchmarks/compare_losses.py --tune 8 --jobs 2   # equal tuning budget per head (see below)
    python benchmarks/compare_losses.py --data /data/faces_emore --eval-bins /data/faces_emore/lfw.bin \\
        --backbone iresnet50 --device cuda --epochs 25 --seeds 0,1,2 --conditions clean

With --tune N every head gets N trials of a seeded TPE search over its own space (the spec's [tune] table, run by
harness.sweeps.tune), scored on validation identities (eval.validation_folds); the best configuration per head is
retrained with the spec's seeds and reported on the test identities only, beside the untuned benchmark's runs
(--untuned, the
same seeds and data): OUT/tuning.csv (one row per trial), OUT/tuning_best.csv (per head: space, trials, best values
and validation score), OUT/compare_losses_tuned*.csv (the final runs; every head minus MagFace),
OUT/tuned_vs_untuned.csv (per head, tuned minus untuned, paired by seed); figure OUT/tuning.png. OUT defaults to
results/compare_losses_tuned.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from harness.bench_cli import (
    add_output_args,
    add_sweep_args,
    benchmark_spec,
    comma_list,
    publish_result,
    run_benchmark_sweep,
    sweep_overrides,
)
from harness.config import RunConfig
from harness.files import atomic_json
from harness.measures.stats import family_verdicts, mean_ci, paired_difference, paired_test
from harness.plots import PALETTE, publish_figure
from harness.publishing.publish import run_folder
from harness.sweeps.runner import run_spec
from harness.sweeps.tables import compare, replicate_variance, write_csv
from harness.sweeps.tune import best_table, best_values, load_plan, search, tuned_spec

TEST_METRICS = (("test_accuracy", "accuracy"), ("test_tar_far_0.01", "TAR@FAR=1e-2"), ("map_at_r", "MAP@R"),
                ("precision_at_1", "P@1"))

SPEC = "configs/sweeps/compare_losses.toml"
ARCFACE = "arcface"   # the second reference: the newer heads' papers each claim to beat ArcFace on one backbone
TAR_KEY = "tar_far_0.01"


# --- figures ---------------------------------------------------------------------------------------------------
def loss_comparison(rows, metrics, title=""):
    """One panel per metric: bars of the mean over seeds per head, one colour per training condition, error bars
    of one standard deviation and each seed as a dot. rows: dicts with head, condition, seed and the metrics."""
    df = pd.DataFrame(rows)
    conditions = list(dict.fromkeys(df["condition"]))
    heads = list(dict.fromkeys(df["head"]))
    many = len(heads) > 8   # many heads: one panel per row, wide enough for every name
    shape, size = ((len(metrics), 1), (max(8.0, 0.75 * len(heads) + 1.5), 3.4 * len(metrics))) if many else \
        ((1, len(metrics)), (5.2 * len(metrics), 4.0))
    fig, axes = plt.subplots(*shape, figsize=size, constrained_layout=True, squeeze=False)
    for ax, (key, label) in zip(axes.flat, metrics, strict=True):
        d = df.assign(value=100 * df[key])
        common = dict(data=d, x="head", y="value", hue="condition", order=heads, hue_order=conditions, ax=ax,
                      palette=PALETTE[:len(conditions)])
        sns.barplot(**common, errorbar="sd", capsize=0.15, alpha=0.55, err_kws={"linewidth": 1.2})
        state = np.random.get_state()   # seaborn jitters with numpy's global generator: fixed, so redraws match
        np.random.seed(0)
        try:
            sns.stripplot(**common, dodge=True, size=4, edgecolor="k", linewidth=0.5, legend=False)
        finally:
            np.random.set_state(state)
        low = d["value"].min()
        ax.set_ylim(max(0.0, low - 0.15 * (100 - low) - 2), 100)
        ax.set_xlabel("head")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(f"{label}: mean ± std over seeds, dots = seeds", fontsize=10)
        if many:
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
        else:
            ax.tick_params(axis="x", labelrotation=20)
        ax.get_legend().remove()
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="training set", loc="outside lower center", ncol=len(conditions), fontsize=9,
               title_fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def tuning_figure(trials: list, objective: str, tuned: list, untuned: list, *metrics, title: str = ""):
    """Left: each head's validation objective per trial (dots) and best so far (line): a curve still rising at the
    last trial says the budget had not saturated. Then one panel per test metric: untuned (hatched) and tuned bars,
    mean over seeds with its 95 % t interval, each seed a dot. metrics: (column, label) pairs."""
    heads = list(dict.fromkeys(r["head"] for r in trials))
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5.0 * (1 + len(metrics)), 4.2), constrained_layout=True)
    ax = axes[0]
    for i, head in enumerate(heads):
        mine = [r for r in trials if r["head"] == head]
        x = np.array([r["trial"] for r in mine])
        v = np.array([np.nan if r["value"] is None else r["value"] for r in mine], float)
        best = np.array([np.nan if r["best_so_far"] is None else r["best_so_far"] for r in mine], float)
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(x, v, "o", color=colour, alpha=0.5, markersize=4)
        ax.step(x, best, where="post", color=colour, label=head)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel(f"{objective} (validation identities)")
    ax.set_title("search: trials (dots), best so far (line)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for ax, (key, label) in zip(axes[1:], metrics, strict=True):
        for j, (rows, name) in enumerate(((untuned, "untuned"), (tuned, "tuned"))):
            for i, head in enumerate(heads):
                values = [100 * r[key] for r in rows if r["head"] == head and r.get(key) is not None]
                if not values:
                    continue
                mean, low, high = mean_ci(values)
                x = i + (j - 0.5) * 0.38
                err = None if low is None else [[mean - low], [high - mean]]
                ax.bar(x, mean, 0.36, yerr=err, capsize=3, color=PALETTE[i % len(PALETTE)], alpha=0.35 + 0.4 * j,
                       hatch="//" if j == 0 else None, edgecolor="k", linewidth=0.5,
                       label=name if i == 0 else None)
                ax.plot(np.full(len(values), x), values, "k.", markersize=4)
        ax.set_xticks(np.arange(len(heads)), heads, rotation=20)
        ax.set_xlabel("head")
        ax.set_ylabel(f"{label} (%), test identities")
        ax.set_title(f"{label}: untuned vs tuned, mean and 95 % CI over seeds", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        values = [100 * r[key] for r in untuned + tuned if r.get(key) is not None]
        if values:
            ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 3))
    fig.suptitle(title, fontsize=11)
    return fig



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heads", type=comma_list(str), help="subset of the spec's heads (default: all of them)")
    ap.add_argument("--conditions", type=comma_list(str),
                    help="clean and/or noisy (10%% wrong labels + 5%% garbage images in the training set)")
    ap.add_argument("--tune", type=int, metavar="N", help="equal tuning budget: N trials per head on validation "
                                                           "identities, then the best per head on the seeds")
    ap.add_argument("--untuned", metavar="DIR", help="with --tune: the untuned benchmark's folder to set beside the "
                                                    "tuned heads (default results/compare_losses[_quick])")
    add_sweep_args(ap, SPEC)
    add_output_args(ap, "compare_losses")
    args = ap.parse_args(argv)

    spec = benchmark_spec(args, SPEC, {"head": args.heads, "condition": args.conditions})
    if args.tune is not None:
        return tuned_main(args, spec)
    if args.untuned:
        raise SystemExit("error: --untuned goes with --tune")
    t0 = time.perf_counter()
    result = run_benchmark_sweep(args, spec, describe=lambda r: f"{r['condition']}/{r['head']}/seed{r['seed']} "
                                                                f"acc {r['accuracy']:.3f}")
    if result is None:   # --dry-run or --prune
        return
    print_summary(result.summary)
    print_comparison(result.comparison)
    compared = sorted({c["metric"] for c in result.comparison}, key=[c["metric"] for c in result.comparison].index)
    versus_arcface = compare(result.rows, list(spec.axes), ARCFACE, compared, spec.verdicts["margins"],
                             f"{spec.name} vs {ARCFACE}", replicate_variance(result.runs))
    if versus_arcface:
        write_csv(os.path.join(result.out, "compare_losses_vs_arcface.csv"), versus_arcface)
        print_comparison(versus_arcface, ARCFACE)
    robustness = noise_robustness(result.rows, spec.verdicts["margins"].get("accuracy"),
                                  replicate_variance(result.runs))
    if robustness:
        write_csv(os.path.join(result.out, "noise_robustness.csv"), robustness)
        print_robustness(robustness)
    stored = load_results(result.out)
    publish_figure(comparison_figure(stored["runs"], stored["title"]), result.out, "compare_losses.png", args.figures,
                   args.quick)
    print(f"wrote {result.out}/compare_losses.csv, compare_losses_summary.csv, compare_losses.png "
          f"({time.perf_counter() - t0:.0f} s for {result.trained} new run(s))")
    publish_result(args, result)


def tuned_main(args, spec):
    """--tune N: the search (harness.sweeps.tune), the final runs of each head's best values, the tables and the
    figure."""
    if args.prune:
        raise SystemExit("error: --prune with --tune is not supported (trials are runs the final sweep does not name)")
    if args.conditions and len(args.conditions) > 1:
        raise SystemExit(f"error: --tune tunes one condition, got --conditions {','.join(args.conditions)}")
    try:
        plan = load_plan(spec, args.tune)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.conditions:
        plan.condition = args.conditions[0]
    out = args.out or os.path.join("results", "compare_losses_tuned" + ("_quick" if spec.quick else ""))
    print(f"tuning {len(plan.spaces)} head(s) x {plan.trials} trial(s) on validation identities ({plan.objective}, "
          f"TPE seed {plan.sampler_seed}, {plan.per_round} per round), then {len(spec.axes['seed'])} seed(s) each; "
          f"results in {out}")
    if args.dry_run:
        for label, params in plan.spaces.items():
            print(f"  {label}: " + "; ".join(p.describe() for p in params))
        return None
    t0 = time.perf_counter()
    try:
        trials = search(spec, plan, out, sweep_overrides(args), jobs=args.jobs, retry_failed=args.retry_failed)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    best = best_values(plan, trials)
    table = best_table(plan, trials, best)
    write_csv(os.path.join(out, "tuning.csv"), trials)
    write_csv(os.path.join(out, "tuning_best.csv"), table)
    lost = [t["head"] for t in table if t["best_value"] is None]
    if lost:
        print(f"every trial failed for {', '.join(lost)}: left out of the final runs (see {out}/tuning.csv)")
    try:
        result = run_spec(tuned_spec(spec, plan, best), out, sweep_overrides(args), jobs=args.jobs,
                          retry_failed=args.retry_failed)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    untuned = untuned_rows(args, spec, plan, result)
    versus = tuned_vs_untuned(result.rows, untuned)
    if versus:
        write_csv(os.path.join(out, "tuned_vs_untuned.csv"), versus)
    atomic_json(os.path.join(out, "tuning.json"), {
        "objective": plan.objective, "trials_per_head": plan.trials, "trials_per_round": plan.per_round,
        "startup_trials": plan.startup, "sampler_seed": plan.sampler_seed, "trial_seed": plan.trial_seed,
        "condition": plan.condition, "spaces": {h: [p.describe() for p in ps] for h, ps in plan.spaces.items()},
        "trials": trials, "best": table, "untuned": untuned, "tuned_vs_untuned": versus})
    print_tuning(table)
    print_test_summary(result.summary, untuned)
    print_tuned_comparison(result.comparison, versus)
    publish_figure(tuned_figure(load_tuned(out)), out, "tuning.png", args.figures, args.quick)
    print(f"wrote {out}/tuning.csv, tuning_best.csv, compare_losses_tuned*.csv, tuning.png "
          f"({time.perf_counter() - t0:.0f} s)")
    publish_result(args, result)
    return result


def load_tuned(out) -> dict:
    """The stored tables of a finished --tune run in `out`: the search (tuning.json) and the final runs."""
    with open(os.path.join(out, "tuning.json")) as f, open(os.path.join(out, "compare_losses_tuned.json")) as g:
        return {"tuning": json.load(f), **json.load(g)}


def tuned_figure(stored):
    """The search per head and the untuned-vs-tuned test metrics (harness.plots.tuning_figure)."""
    t = stored["tuning"]
    return tuning_figure(t["trials"], t["objective"], stored["runs"], t["untuned"], TEST_METRICS[0], TEST_METRICS[2],
                         title=f"Equal tuning budget ({t['trials_per_head']} trials per head, {t['objective']} on "
                               f"validation identities); test identities, {len(stored['axes']['seed'])} seed(s)")


def untuned_rows(args, spec, plan, result) -> list:
    """The untuned benchmark's runs on the tuned condition and seeds (the same data and budget), or [] with a note
    saying which command makes them."""
    folder = args.untuned or ("results/compare_losses_quick" if spec.quick else "results/compare_losses")
    path = os.path.join(folder, "compare_losses.json")
    command = f"python benchmarks/compare_losses.py{' --quick' if spec.quick else ''}"
    if not os.path.isfile(path):
        print(f"note: no untuned comparison in {folder}; {command} makes it (the tuned-vs-untuned table is skipped)")
        return []
    with open(path) as f:
        stored = json.load(f)
    seeds = set(spec.axes["seed"])
    rows = [r for r in stored["runs"] if r.get("condition", plan.condition) == plan.condition and r["seed"] in seeds
            and r["head"] in plan.spaces]
    ours = protocol(result.runs[0].cfg.to_dict(), asdict(result.runs[0].cfg.eval))
    for r in rows:
        path, evaluated = (os.path.join(run_folder(folder, r), name) for name in ("config.json", "eval/metrics.json"))
        if not (os.path.isfile(path) and os.path.isfile(evaluated)):
            raise SystemExit(f"error: {path} or its eval/metrics.json is missing: the untuned runs in {folder} cannot "
                             "be checked against the tuned ones; point --untuned at a benchmark folder with its runs")
        with open(path) as f, open(evaluated) as g:
            try:
                theirs = protocol(RunConfig.from_dict(json.load(f)).to_dict(), json.load(g)["eval_config"])
            except ValueError as exc:
                raise SystemExit(f"error: {path}: {exc}") from None
        differ = sorted(f"{section}.{k}" for section in ours for k in set(ours[section]) | set(theirs[section])
                        if ours[section].get(k) != theirs[section].get(k))
        if differ:
            raise SystemExit(f"error: the untuned run {r['run']} differs from the tuned runs in {', '.join(differ)}: "
                             f"not the same data, budget or evaluation; run {command} with the same flags, or point "
                             "--untuned at the matching folder")
    if rows and any(r.get("test_accuracy") is None and not r.get("failed") for r in rows):
        print(f"note: the untuned runs in {folder} were evaluated before the validation/test split; {command} "
              "re-evaluates them (no retraining); the tuned-vs-untuned table is skipped")
        return []
    return rows


def protocol(cfg: dict, evaluation: dict) -> dict:
    """What two runs must share to be paired by seed: data, model, training budget and the evaluation their stored
    metrics were made with (not the head, the optimiser, the seed or where files live)."""
    out = {k: dict(cfg[k]) for k in ("data", "model", "train")}
    out["eval"] = dict(evaluation)
    for key in ("cache_dir", "workers"):
        out["data"].pop(key, None)
    out["train"].pop("seed", None)
    return out


def tuned_vs_untuned(tuned: list, untuned: list) -> list:
    """Per head and test metric: tuned minus untuned, paired by seed, with CI and verdict."""
    out = []
    for head in dict.fromkeys(r["head"] for r in tuned):
        a = {r["seed"]: r for r in tuned if r["head"] == head}
        b = {r["seed"]: r for r in untuned if r["head"] == head}
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        for metric, _ in TEST_METRICS:
            d = paired_difference([a[s].get(metric) for s in seeds], [b[s].get(metric) for s in seeds])
            out.append({"head": head, "metric": metric, "tuned_minus_untuned": d["diff"],
                        "diff_ci_low": d["diff_ci_low"], "diff_ci_high": d["diff_ci_high"],
                        "verdict": d["verdict"], "detectable": d["detectable"], "seeds": d["seeds"]})
    return out


def print_tuning(table):
    print("\nsearch per head (validation identities)")
    for t in table:
        best = "every trial failed" if t["best_value"] is None else (
            f"best {t['objective']} {t['best_value']:.4f} at trial {t['best_trial']} of {t['trials']}: "
            f"{t['best_values']}")
        failed = f", {t['failed']} failed" if t["failed"] else ""
        print(f"  {t['head']:<12}{t['space']}\n  {'':<12}{best}{failed}")


def print_test_summary(summary, untuned):
    print("\ntest identities only: mean over seeds [95 % t interval], tuned (untuned)")
    print(f"{'head':<12}{'seeds':>6}" + "".join(f"{label:>30}" for _, label in TEST_METRICS))
    for s in summary:
        cells = []
        for key, _ in TEST_METRICS:
            mean, low, high = s[f"{key}_mean"], s[f"{key}_ci_low"], s[f"{key}_ci_high"]
            before = mean_ci([r.get(key) for r in untuned if r["head"] == s["head"]])[0]
            text = "n/a" if mean is None else f"{100 * mean:.2f}" + (
                f" [{100 * low:.2f}, {100 * high:.2f}]" if low is not None else "")
            cells.append(text + ("" if before is None else f" ({100 * before:.2f})"))
        print(f"{s['head']:<12}{s['seeds']:>6}" + "".join(f"{c:>30}" for c in cells))


def print_tuned_comparison(comparison, versus):
    print_paired("tuned head - tuned MagFace", [c for c in comparison if c["metric"] in dict(TEST_METRICS)],
                 "diff_vs_magface")
    print_paired("tuned - untuned, same head", versus, "tuned_minus_untuned")


def print_paired(title, rows, key):
    """Paired differences (points, test identities) with interval and verdict, one line per head and metric."""
    if not rows:
        return
    print(f"\n{title}, paired by seed (points, test identities) [95 % t interval]: verdict")
    for c in rows:
        diff = c[key]
        ci = "" if c["diff_ci_low"] is None else f" [{100 * c['diff_ci_low']:+.2f}, {100 * c['diff_ci_high']:+.2f}]"
        print(f"  {c['head']:<12}{c['metric']:<18}{'n/a' if diff is None else f'{100 * diff:+.2f}'}{ci}: "
              f"{verdict_in_points(c)}")


def load_results(out) -> dict:
    """The stored tables of a finished run of this benchmark in `out`: runs, summary and the figure title."""
    with open(f"{out}/compare_losses.json") as f:
        stored = json.load(f)
    s = stored["setup"]
    return {**stored, "title": f"Loss comparison on {s['data']} data, {s['backbone']}, {s['epochs']} epochs, "
                               f"{len(stored['axes']['seed'])} seed(s) each"}


def comparison_figure(table, title):
    return loss_comparison(table, [("accuracy", "verification accuracy"), (TAR_KEY, "TAR @ FAR = 1e-2")], title)


def print_summary(summary):
    print("mean over seeds [95 % t interval]")
    print(f"{'condition':<10}{'head':<19}{'seeds':>6}{'accuracy (%)':>24}{'TAR@FAR=1e-2 (%)':>24}"
          f"{'rho(|f|,q)':>24}")
    for s in summary:
        def ci(key, scale=100, digits=2, s=s):
            mean, low, high = s[f"{key}_mean"], s[f"{key}_ci_low"], s[f"{key}_ci_high"]
            if mean is None:
                return "n/a"
            text = f"{scale * mean:.{digits}f}"
            return text + (f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]" if low is not None else "")
        print(f"{s['condition']:<10}{s['head']:<19}{s['seeds']:>6}{ci('accuracy'):>24}{ci(TAR_KEY):>24}"
              f"{ci('spearman_rho', 1, 3):>24}")


def print_comparison(comparison, reference="magface"):
    """Accuracy and TAR of every head minus the reference's, paired by seed, with the verdict."""
    rows = [c for c in comparison if c["metric"] in ("accuracy", TAR_KEY)]
    if not rows:
        return
    print(f"\nhead - {reference}, paired by seed (points) [95 % t interval, unadjusted]: verdict on the Holm-adjusted "
          f"p within each family (one metric in one condition, every head vs {reference}); variance: "
          f"{rows[0].get('variance') or 'n/a'}")
    for c in rows:
        diff = c[f"diff_vs_{reference}"]
        ci = "" if c["diff_ci_low"] is None else f" [{100 * c['diff_ci_low']:+.2f}, {100 * c['diff_ci_high']:+.2f}]"
        print(f"  {c['condition']:<8}{c['head']:<27}{c['metric']:<14}"
              f"{'n/a' if diff is None else f'{100 * diff:+.2f}'}{ci}: {verdict_in_points(c)}")


def verdict_in_points(c) -> str:
    """The verdict with effects in accuracy points (the tables keep the metric's own units)."""
    verdict = c["verdict"]
    if verdict.startswith("no detectable") and c["detectable"] is not None:   # tuned_vs_untuned (uncorrected)
        return f"no detectable difference at {c['seeds']} seeds (could detect {100 * c['detectable']:.1f} points)"
    if verdict.startswith("inconclusive") and c["detectable"] is not None:
        return f"inconclusive at {c['seeds']} seeds (80 % power for |diff| >= {100 * c['detectable']:.1f} points)"
    if verdict.startswith("equivalent") and c.get("equivalence_margin") is not None:
        return f"equivalent within ±{100 * c['equivalence_margin']:g} points"
    return verdict


def noise_robustness(rows, margin=None, variance="") -> list:
    """Accuracy lost to label noise per head (clean - noisy, per seed) and, as a difference in differences, that
    loss minus MagFace's, with CI and a verdict over the family of every head against MagFace (Holm; "better" =
    the head loses less than MagFace; equivalence within the accuracy margin)."""
    acc = {(r["condition"], r["head"], r["seed"]): r["accuracy"] for r in rows}
    heads = list(dict.fromkeys(r["head"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    drop = {h: [acc[("clean", h, s)] - acc[("noisy", h, s)] if ("clean", h, s) in acc and ("noisy", h, s) in acc
                else None for s in seeds] for h in heads}
    if "magface" not in drop or all(v is None for v in drop["magface"]):
        return []
    others = [h for h in heads if h != "magface"]
    tests = [paired_test([None if v is None else -v for v in drop[h]],
                         [None if v is None else -v for v in drop["magface"]], margin) for h in others]
    family = f"compare_losses: accuracy lost to noise minus MagFace's, {len(others)} head(s) vs magface"
    judged = dict(zip(others, family_verdicts(tests, family), strict=True)) if others else {}
    out = []
    for h in heads:
        mean, low, high = mean_ci(drop[h])
        row = {"head": h, "accuracy_drop": mean, "accuracy_drop_ci_low": low, "accuracy_drop_ci_high": high}
        t = judged.get(h)
        if t is None:
            row.update({"verdict": "reference", "seeds": sum(v is not None for v in drop[h])})
        else:   # the test ran on -drop (higher is better): back to drops
            row.update({"drop_minus_magface": None if t["diff"] is None else -t["diff"],
                        "did_ci_low": None if t["diff_ci_high"] is None else -t["diff_ci_high"],
                        "did_ci_high": None if t["diff_ci_low"] is None else -t["diff_ci_low"],
                        "p": t["p"], "p_holm": t["p_holm"], "equivalence_margin": margin,
                        "p_equivalence_holm": t["p_equivalence_holm"], "verdict": t["verdict"],
                        "detectable": t["detectable"], "seeds": t["n"], "family": t["family"],
                        "family_size": t["family_size"]})
        out.append({**row, "variance": variance})
    return out


def print_robustness(rows):
    print("\naccuracy lost to noise (clean - noisy, points) and that loss minus MagFace's [95 % t interval]")
    for r in rows:
        drop = "n/a" if r["accuracy_drop"] is None else f"{100 * r['accuracy_drop']:+.2f}"
        did = ("" if r.get("did_ci_low") is None else
               f"  minus MagFace {100 * r['drop_minus_magface']:+.2f} [{100 * r['did_ci_low']:+.2f}, "
               f"{100 * r['did_ci_high']:+.2f}]: {verdict_in_points(r)}")
        print(f"  {r['head']:<27}{drop}{did}")


if __name__ == "__main__":
    main()
