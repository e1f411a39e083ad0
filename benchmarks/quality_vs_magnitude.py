"""Is the feature magnitude a quality score? Train MagFace and the baselines on the same harness and data,
then draw the paper's quality figures from the stored arrays.

Figures (in OUT and figures/): magnitude vs ground-truth quality per head; MagFace magnitude histograms per
quality quartile; evaluation images ordered by MagFace magnitude; magnitude vs target cosine in the last
training batch (Fig. 3); error-versus-reject curves on MagFace's scores with pairs ranked by MagFace's
magnitude, ArcFace's and AdaFace's norms, SER-FIQ on MagFace's network and image sharpness (the paper's Fig. 6
baselines that need no other trained model; harness/measures/quality_estimators.py), the ground-truth quality (the
ideal) and at random.
The four runs are the sweep spec configs/sweeps/quality_vs_magnitude.toml (harness.sweeps: reused when finished,
never deleted by another configuration). Tables: OUT/quality_vs_magnitude.csv (one row per run), OUT/erc.csv (areas
with CIs and paired differences to MagFace's magnitude) and OUT/magnitude_vs_quality.csv (rho per head and its paired
difference to MagFace's).

    python benchmarks/quality_vs_magnitude.py            # 4 heads on the CPU default, about 10 minutes
    python benchmarks/quality_vs_magnitude.py --quick    # smaller data and model, about 3 minutes
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr

from harness.bench_cli import add_output_args, add_sweep_args, publish_result, run_quality_sweep
from harness.config import RunConfig
from harness.evaluation.diagnostics import optimum_curve
from harness.evaluation.evaluate import embed, load_eval
from harness.files import atomic_json, atomic_npz
from harness.measures import metrics
from harness.measures.quality_estimators import SERFIQ_DROPOUT, SERFIQ_PASSES, laplacian_sharpness, serfiq
from harness.measures.stats import interval_verdict
from harness.models.build import build_model, run_backbone
from harness.plots import GRID_SHAPE, PALETTE, grid_pick, publish_figure, sorted_image_grid
from harness.publishing.publish import run_folder
from harness.source import synthetic_faces
from harness.sweeps.runner import run_spec
from harness.sweeps.spec import load_spec
from harness.sweeps.tables import write_csv

SPEC = "configs/sweeps/quality_vs_magnitude.toml"
ERC_FMR = 1e-2   # 1e-3 leaves only a handful of impostor pairs above the threshold on the built-in pairs
REFERENCE_EDC = {"starting_fnmr": 0.05, "pauc_limits": (0.2,)}   # the EDC of Schlett et al.'s reference code (its
#                                                                  example's starting error),
# harness.measures.metrics.iso_edc
PAIRED_RESAMPLES = 5000   # identity resamples for the paired differences: about 18 in each tail at 0.05 / 7
PROTOCOLS = {"recomputed": "official MagFace ERC: threshold recomputed after each discard step",
             "fixed": "ISO/IEC 29794-1 EDC: threshold fixed, mated pairs discarded"}


# The analyses built on this benchmark's finished runs (clustering, templates) find or make them here.
QUALITY = "quality_vs_magnitude"


def add_runs_args(ap) -> None:
    """--runs / --quick / --set of an analysis on the quality benchmark's runs (trained first when missing)."""
    ap.add_argument("--runs", help=f"the quality benchmark's folder (default results/{QUALITY}, with --quick "
                                   f"results/{QUALITY}_quick); its runs are trained there first when missing")
    ap.add_argument("--quick", action="store_true", help="use the quality benchmark's --quick runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="harness override for the quality runs, when they have to be trained")


def runs_plan(args) -> str:
    """What an analysis of this benchmark's runs would use (its --dry-run line): the finished runs, or the runs it
    would train first."""
    runs = args.runs or os.path.join("results", QUALITY + ("_quick" if args.quick else ""))
    if os.path.isfile(os.path.join(runs, f"{QUALITY}.json")):
        return f"would analyse the finished quality benchmark in {runs}"
    return (f"{runs} holds no finished quality benchmark: would first train its runs there ({SPEC}"
            f"{', --quick variant' if args.quick else ''}, 4 runs)")


def finished_runs(args) -> tuple[str, dict]:
    """(folder, {head: run folder}) of the quality benchmark's finished runs (each head's first seed). When the
    folder holds none, they are trained (or resumed) there first by the sweep runner, with a note saying so;
    SystemExit when a run failed or MagFace is missing."""
    runs = args.runs or os.path.join("results", QUALITY + ("_quick" if args.quick else ""))
    table = os.path.join(runs, f"{QUALITY}.json")
    if not os.path.isfile(table):
        print(f"note: {runs} holds no finished quality benchmark: training its runs there first ({SPEC}"
              f"{', --quick variant' if args.quick else ''}: 4 runs, about {'2' if args.quick else '5'} minutes on "
              f"2 CPU cores; python benchmarks/{QUALITY}.py{' --quick' if args.quick else ''} reuses them and draws "
              "its own figures)")
        try:
            run_spec(load_spec(SPEC, quick=args.quick), runs, list(getattr(args, "set", [])), jobs=1)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    with open(table) as f:
        stored = json.load(f)["runs"]
    failed = [r.get("name", r["run"]) for r in stored if r.get("failed")]
    if failed:
        raise SystemExit(f"error: runs of the quality benchmark in {runs} failed ({', '.join(failed)}); see their "
                         f"failed.json, then python benchmarks/{QUALITY}.py --retry-failed")
    folders = {}
    for r in stored:
        folders.setdefault(r["head"], run_folder(runs, r))
    if "magface" not in folders:
        raise SystemExit(f"error: {runs} has no MagFace run to compare with")
    return runs, folders


def load_results(out):
    """Everything the figures need, from the runs stored under OUT (the first seed of each head): per head the
    evaluation arrays, accuracy, rho and last training-batch dump; ERC curves on MagFace's scores; the rows."""
    path = os.path.join(out, "quality_vs_magnitude.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results in {out}; run python benchmarks/quality_vs_magnitude.py first")
    with open(path) as f:
        stored = json.load(f)["runs"]
    runs = {}
    for r in stored:
        runs.setdefault(r["head"], {**r, "run": run_folder(out, r)})
    ev = {h: load_eval(r["run"]) for h, r in runs.items()}
    quality = ev["magface"]["quality"]
    rows, per_head, dumps = [], {}, {}
    for head, r in runs.items():
        agreement = metrics.quality_agreement(ev[head]["norms"], quality)
        per_head[head] = (ev[head]["norms"], quality, agreement["spearman_rho"])
        rows.append({"head": head, "seed": r["seed"], "accuracy": r["accuracy"],
                     "accuracy_ci_low": r.get("accuracy_ci_low"), "accuracy_ci_high": r.get("accuracy_ci_high"),
                     "spearman_rho": agreement["spearman_rho"], "spearman_rho_ci_low": r.get("spearman_rho_ci_low"),
                     "spearman_rho_ci_high": r.get("spearman_rho_ci_high"),
                     "mean_norm": float(ev[head]["norms"].mean()),
                     "margin_span_share": r.get("margin_span_share"), "train_cos_median": r.get("train_cos_median"),
                     "train_loss_change_last_epoch": r.get("train_loss_change_last_epoch"),
                     **rho_versus_magface(ev[head]["norms"], ev["magface"]["norms"], quality,
                                          ev["magface"]["identity"], is_magface=head == "magface")})
        last = sorted(os.listdir(os.path.join(r["run"], "dumps")))[-1]
        with np.load(os.path.join(r["run"], "dumps", last)) as z:
            dump = {k: z[k] for k in z.files}
        with open(os.path.join(r["run"], "config.json")) as f:
            cfg = RunConfig.from_dict(json.load(f))
        dumps[head] = (dump["norms"], dump["cos_target"], optimum_curve(r["run"], cfg, dump))
        rows[-1]["rho_norm_cos_last_batch"] = float(spearmanr(dump["cos_target"], dump["norms"])[0])   # Fig. 3
    control = untrained_row(out, ev["magface"]["norms"], quality, ev["magface"]["identity"])
    if control:
        rows.append(control)
    mag = ev["magface"]
    scores, issame = mag.get("quality_scores", mag["scores"]), mag["issame"]   # unflipped unless eval.flip_for_quality
    pair_q = lambda n: np.minimum(n[mag["left"]], n[mag["right"]])  # noqa: E731
    estimates = {"MagFace magnitude": pair_q(mag["norms"]), "ArcFace norm": pair_q(ev["arcface"]["norms"]),
                 "AdaFace norm": pair_q(ev["adaface"]["norms"]), "Softmax norm": pair_q(ev["softmax"]["norms"]),
                 **{name: pair_q(q) for name, q in other_estimates(out).items()},
                 "ground-truth quality (ideal)": mag["pair_quality_gt"],
                 "random": np.random.default_rng(0).random(len(scores))}
    curves, erc_rows = {title: {} for title in PROTOCOLS.values()}, []
    for name, q in estimates.items():
        row = {"quality estimate": name, "scores": "MagFace", "fmr": ERC_FMR}
        for protocol, title in PROTOCOLS.items():
            c = metrics.error_versus_discard(scores, issame, q, fmr=ERC_FMR, threshold=protocol)
            curves[title][name] = (c["fractions"], c["fnmr"])
            row["erc_area_magface" if protocol == "recomputed" else "edc_area_iso"] = c["area"]
            if protocol == "fixed":
                row["edc_pauc_20"] = c["pauc"][0.2]
        ref = metrics.iso_edc(scores, issame, q, **REFERENCE_EDC)
        row.update({"edc_ref_pauc_20": ref["pauc"][0.2], "edc_ref_pauc_20_best": ref["pauc_theoretical_best"][0.2],
                    "edc_ref_starting_fnmr": ref["starting_fnmr"]})
        erc_rows.append(row)
    _merge_stored_intervals(out, erc_rows)
    pair_identities = np.stack([mag["identity"][mag["left"]], mag["identity"][mag["right"]]], axis=1)
    grid_path = os.path.join(out, IMAGE_GRID)
    if not os.path.isfile(grid_path):
        raise FileNotFoundError(f"no {IMAGE_GRID} in {out}; run python benchmarks/quality_vs_magnitude.py first")
    with np.load(grid_path) as z:
        image_grid = (z["images"], z["magnitudes"])
    return {"per_head": per_head, "magface_norms": mag["norms"], "quality": quality, "dumps": dumps,
            "erc_inputs": (scores, issame, estimates, pair_identities),
            "erc_curves": curves, "rows": rows, "erc_rows": erc_rows, "image_grid": image_grid}


IMAGE_GRID = "images_by_magnitude.npz"   # the evaluation images the grid figure shows, so it redraws without the data
ESTIMATES = "quality_estimates.npz"      # per evaluation image: the other quality estimators' scores
ESTIMATOR_NAMES = {"serfiq": f"SER-FIQ (MagFace network; m={SERFIQ_PASSES}; p={SERFIQ_DROPOUT})",   # no commas:
                   "sharpness": "sharpness (variance of the Laplacian)"}              # report row keys


def save_quality_estimates(out: str, magface_run: str) -> None:
    """SER-FIQ on MagFace's own network (the "same model" variant), the images' sharpness and the feature norm of
    an untrained network of the same architecture (the control: is a norm-quality trend learnt?), per evaluation
    image (harness.measures.quality_estimators), stored so the figures and notebooks redraw without the network or
    the data."""
    backbone, ckpt = run_backbone(magface_run)
    cfg = ckpt["config_obj"]
    faces = synthetic_faces(cfg)
    torch.manual_seed(cfg.train.seed)   # the same architecture, freshly initialised: the untrained control
    untrained, _ = build_model(cfg, ckpt["num_classes"], ckpt["image_size"])
    atomic_npz(os.path.join(out, ESTIMATES), serfiq=serfiq(backbone, faces.eval.images),
               sharpness=laplacian_sharpness(faces.eval.images),
               untrained_norm=untrained_norms(untrained, faces.eval.images))


def untrained_norms(backbone, images) -> np.ndarray:
    """||f|| per image under a network in eval mode (harness.evaluation.evaluate.embed, no flip)."""
    with torch.no_grad():
        plain, _ = embed(backbone, images, 256, "cpu", flip=False)
    return torch.linalg.vector_norm(torch.from_numpy(plain), dim=1).numpy()


def other_estimates(out: str) -> dict:
    """The stored estimators' per-image scores by display name ({} for results made before they existed)."""
    path = os.path.join(out, ESTIMATES)
    if not os.path.isfile(path):
        return {}
    with np.load(path) as z:
        return {ESTIMATOR_NAMES[k]: z[k] for k in ESTIMATOR_NAMES if k in z.files}


def untrained_row(out: str, magface_norms, quality, identities, n_boot: int = 200) -> dict:
    """rho(||f||, quality) of the untrained network with its 95 % CI over identities and paired with MagFace's
    magnitude ({} for results made before the control existed)."""
    path = os.path.join(out, ESTIMATES)
    if not os.path.isfile(path):
        return {}
    with np.load(path) as z:
        if "untrained_norm" not in z.files:
            return {}
        norms = z["untrained_norm"]
    rho = lambda i: metrics.quality_agreement(norms[i], quality[i])["spearman_rho"]  # noqa: E731
    low, high = metrics.identity_bootstrap(identities, rho, n_boot=n_boot)
    return {"head": "untrained", "spearman_rho": rho(np.arange(len(quality))), "spearman_rho_ci_low": low,
            "spearman_rho_ci_high": high, "mean_norm": float(norms.mean()),
            **rho_versus_magface(norms, magface_norms, quality, identities, is_magface=False)}


def save_image_grid(out: str, magface_run: str) -> None:
    """The evaluation images picked for the grid (evenly across MagFace's magnitudes) and their magnitudes."""
    with open(os.path.join(magface_run, "config.json")) as f:
        faces = synthetic_faces(RunConfig.from_dict(json.load(f)))
    norms = load_eval(magface_run)["norms"]
    pick = grid_pick(norms, GRID_SHAPE[0] * GRID_SHAPE[1])
    atomic_npz(os.path.join(out, IMAGE_GRID), images=faces.eval.images[pick], magnitudes=norms[pick])


def erc_figure(res):
    return erc_curves(res["erc_curves"], ERC_FMR, "Error versus discard on MagFace's scores (no flip), built-in pairs")


def quality_figures(res):
    """The five figures, by file name."""
    order_title = "Evaluation images ordered by MagFace magnitude (low, top left, to high); titles: magnitude"
    return {"qvm_magnitude_vs_quality.png": magnitude_vs_quality(res["per_head"]),
            "qvm_magface_histograms.png": magnitude_histograms(res["magface_norms"], res["quality"], "MagFace"),
            "qvm_images_by_magnitude.png": sorted_image_grid(*res["image_grid"], title=order_title),
            "qvm_magnitude_vs_cosine.png": magnitude_vs_cosine(res["dumps"]),
            "qvm_erc.png": erc_figure(res)}


# --- figures ---------------------------------------------------------------------------------------------------
def magnitude_vs_quality(per_head: dict, bins: int = 10):
    """One panel per head: feature magnitude against ground-truth quality, with binned means and Spearman rho.
    per_head: name -> (magnitude [N], quality [N], rho)."""
    fig, axes = plt.subplots(1, len(per_head), figsize=(3.8 * len(per_head), 3.6), constrained_layout=True,
                             squeeze=False)
    for ax, (name, (mag, q, rho)), colour in zip(axes[0], per_head.items(), PALETTE, strict=False):   # PALETTE: longer
        ax.scatter(q, mag, s=4, alpha=0.25, color=colour, rasterized=True)
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(q, edges) - 1, 0, bins - 1)
        centres = [(edges[b] + edges[b + 1]) / 2 for b in range(bins) if np.any(which == b)]
        means = [mag[which == b].mean() for b in range(bins) if np.any(which == b)]
        ax.plot(centres, means, "o-", color="k", lw=1.5, ms=4, label="binned mean")
        ax.set_title(f"{name}: Spearman ρ = {rho:+.3f}", fontsize=10)
        ax.set_xlabel("ground-truth quality")
        ax.set_ylabel("feature magnitude ‖f‖")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Feature magnitude vs ground-truth image quality (evaluation images)", fontsize=11)
    return fig


def magnitude_histograms(mag, quality, name: str, bins: int = 4):
    """Histograms of the magnitude, one per quality quartile (the paper's magnitude-distribution figure)."""
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    edges = np.quantile(quality, np.linspace(0, 1, bins + 1))
    for b in range(bins):
        sel = (quality >= edges[b]) & ((quality <= edges[b + 1]) if b == bins - 1 else (quality < edges[b + 1]))
        if sel.any():
            ax.hist(mag[sel], bins=40, histtype="step", lw=1.6, color=PALETTE[b], density=True,
                    label=f"quality {edges[b]:.2f}–{edges[b + 1]:.2f} (n={sel.sum()})")
    ax.set_xlabel("feature magnitude ‖f‖")
    ax.set_ylabel("density")
    ax.set_title(f"{name}: magnitude distribution per ground-truth quality quartile", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def magnitude_vs_cosine(per_head: dict):
    """Paper Fig. 3: magnitude against the cosine to the own class centre for the last training batch (Softmax too:
    the cosine to its linear class centre). per_head: name -> (magnitude [B], cos_target [B], optimum), optimum
    None or (cos grid, a*): the theory's optimal magnitude at the batch's median lse_neg, drawn as a line."""
    fig, axes = plt.subplots(1, len(per_head), figsize=(3.8 * len(per_head), 3.6), constrained_layout=True,
                             squeeze=False)
    # PALETTE holds more colours than there are heads
    for ax, (name, (mag, cos, optimum)), colour in zip(axes[0], per_head.items(), PALETTE, strict=False):
        ax.scatter(cos, mag, s=8, color=colour, alpha=0.7, label="training samples")
        if optimum is not None:
            ax.plot(*optimum, color="black", lw=1.5, label="theory a*(cos θ_y), median lse_neg")
            ax.legend(fontsize=7, loc="best")
        ax.set_title(f"{name}: Spearman ρ = {spearmanr(cos, mag)[0]:+.3f}", fontsize=10)
        ax.set_xlabel("cos θ_y to own class centre  (hard → easy)")
        ax.set_ylabel("feature magnitude ‖f‖")
    fig.suptitle("Magnitude vs difficulty in the last training batch (the paper's Fig. 3)", fontsize=11)
    return fig


def erc_curves(panels: dict, fmr: float, title: str):
    """Error-versus-discard curves: one panel per protocol ({panel title: {estimate: (fractions, fnmr)}}), FNMR
    against the fraction of pairs discarded, one line per quality estimate."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.9), constrained_layout=True,
                             squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for i, (name, (fractions, fnmr)) in enumerate(curves.items()):
            ls = "--" if "ideal" in name else ":" if name == "random" else "-"
            ax.plot(100 * np.asarray(fractions), fnmr, ls, color=PALETTE[i % len(PALETTE)], lw=1.8, label=name)
        ax.set_xlabel("share discarded, lowest quality first (%)")
        ax.set_ylabel(f"FNMR at FMR = {fmr:g}")
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)   # off the curves
    fig.suptitle(title, fontsize=11)
    return fig



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_sweep_args(ap, SPEC)
    add_output_args(ap, "quality_vs_magnitude")
    args = ap.parse_args(argv)
    result = run_quality_sweep(args, SPEC, describe=lambda r: f"{r['head']} acc {r['accuracy']:.3f}")
    if result is None:   # --dry-run or --prune
        return
    magface_run = next(r.folder for r in result.runs if r.cfg.head.name == "magface")
    save_image_grid(result.out, magface_run)
    save_quality_estimates(result.out, magface_run)
    res = load_results(result.out)
    for name, fig in quality_figures(res).items():
        publish_figure(fig, result.out, name, args.figures, args.quick)
    erc_intervals(res)
    write_csv(os.path.join(result.out, "erc.csv"), res["erc_rows"])
    write_csv(os.path.join(result.out, "magnitude_vs_quality.csv"), res["rows"])
    atomic_json(os.path.join(result.out, "erc.json"), res["erc_rows"])
    print_tables(res)
    print(f"figures and tables in {result.out}")
    publish_result(args, result, arrays=True)


def rho_versus_magface(norms, magface_norms, quality, identities, is_magface: bool, n_boot: int = 200) -> dict:
    """rho(this head's norm, quality) minus rho(MagFace's magnitude, quality) on the same evaluation images, with a
    95 % CI from resampling identities (both rhos on every resample) and a verdict (higher tracks quality better)."""
    if is_magface:
        return {}
    rho = lambda n, i: metrics.quality_agreement(n[i], quality[i])["spearman_rho"]  # noqa: E731
    low, high = metrics.identity_bootstrap(identities, lambda i: rho(norms, i) - rho(magface_norms, i), n_boot=n_boot)
    everything = np.arange(len(quality))
    verdict = interval_verdict(low, high, "tracks quality better than MagFace", "tracks quality worse than MagFace")
    return {"rho_diff_vs_magface": rho(norms, everything) - rho(magface_norms, everything),
            "rho_diff_ci_low": low, "rho_diff_ci_high": high, "rho_verdict": verdict}


def _merge_stored_intervals(out, erc_rows) -> None:
    """CIs that main() stored in erc.json for the same values (the notebooks re-draw without recomputing them)."""
    path = os.path.join(out, "erc.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        stored = {r["quality estimate"]: r for r in json.load(f)}
    for row in erc_rows:
        old = stored.get(row["quality estimate"], {})
        same = lambda a, b: a == b or (a is None and b != b)  # noqa: E731   (NaN is stored as null)
        if all(same(old.get(k), row[k]) for k in ("erc_area_magface", "edc_pauc_20", "edc_ref_pauc_20")):
            row.update({k: v for k, v in old.items() if k not in row})


def erc_intervals(res, n_boot: int = 200, n_paired: int = PAIRED_RESAMPLES) -> None:
    """Add to every ERC row 95 % CIs over evaluation identities of its official ERC area, ISO pAUC (threshold at
    FMR 1e-2) and reference-EDC pAUC (starting FNMR 0.05), and its paired difference to MagFace's magnitude on the
    same resamples with a verdict (lower is better). The estimators paired with MagFace's magnitude are one family
    per protocol: their difference intervals are simultaneous (Bonferroni, level 1 - 0.05 / m, from `n_paired`
    resamples) and the verdict is read off them. Slow (a few minutes): run by main() and stored in erc.csv/erc.json,
    not by the notebooks."""
    scores, issame, estimates, pair_ids = res["erc_inputs"]

    def value(key, q, i):
        if key == "edc_ref_pauc_20":
            return metrics.iso_edc(scores[i], issame[i], q[i], **REFERENCE_EDC)["pauc"][0.2]
        c = metrics.error_versus_discard(scores[i], issame[i], q[i], fmr=ERC_FMR,
                                         threshold="recomputed" if key == "erc_area_magface" else "fixed")
        return c["area"] if key == "erc_area_magface" else c["pauc"][0.2]
    reference = estimates["MagFace magnitude"]
    m = len(res["erc_rows"]) - 1
    level = 1 - 0.05 / m
    family = f"quality estimates minus MagFace's magnitude on MagFace's scores, {m} per protocol (Bonferroni)"
    for row in res["erc_rows"]:
        q = estimates[row["quality estimate"]]
        for key in ("erc_area_magface", "edc_pauc_20", "edc_ref_pauc_20"):
            low, high = metrics.identity_bootstrap(pair_ids, lambda i, key=key, q=q: value(key, q, i), n_boot=n_boot)
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
            if q is reference:
                continue
            def paired(i, key=key, q=q):
                return value(key, q, i) - value(key, reference, i)
            low, high = metrics.identity_bootstrap(pair_ids, paired, n_boot=n_paired, level=level)
            verdict = interval_verdict(low, high, "worse than MagFace's magnitude", "better than MagFace's magnitude")
            row[f"{key}_diff_vs_magface"] = row[key] - next(r[key] for r in res["erc_rows"]
                                                             if r["quality estimate"] == "MagFace magnitude")
            row[f"{key}_diff_ci_low"], row[f"{key}_diff_ci_high"], row[f"{key}_verdict"] = low, high, verdict
        if q is not reference:
            row.update({"family": family, "family_size": m, "paired_level": level, "paired_resamples": n_paired})


def print_tables(res):
    ci = lambda r, k, scale=1, f=".3f": ("" if r.get(f"{k}_ci_low") is None  # noqa: E731
                                         else f" [{scale * r[f'{k}_ci_low']:{f}}, {scale * r[f'{k}_ci_high']:{f}}]")
    print(f"{'head':<10}{'accuracy [95% CI]':>24}{'rho(|f|, quality) [95% CI]':>32}{'mean |f|':>10}{'m span':>8}")
    for r in res["rows"]:
        span = "" if r.get("margin_span_share") is None else f"{r['margin_span_share']:.0%}"
        accuracy = f"{100 * r['accuracy']:>11.2f}" if r.get("accuracy") is not None else f"{'-':>11}"
        print(f"{r['head']:<10}{accuracy}{ci(r, 'accuracy', 100, '.1f'):<13}"
              f"{r['spearman_rho']:>+15.3f}{ci(r, 'spearman_rho', 1, '+.3f'):<17}{r['mean_norm']:>10.2f}{span:>8}")
    for r in res["rows"]:
        if "rho_verdict" in r:
            print(f"  rho({r['head']}) - rho(magface) = {r['rho_diff_vs_magface']:+.3f}"
                  f"{ci(r, 'rho_diff', 1, '+.3f')}: {r['rho_verdict']} (same images, identity resamples)")
    print(f"Error versus discard at FMR={ERC_FMR:g} on MagFace's scores (lower is better; 95 % CIs over identities "
          "where computed):")
    print(f"  {'quality estimate':<42}{'ERC area (MagFace protocol)':>34}{'EDC area (ISO)':>16}"
          f"{'EDC pAUC20 (ISO)':>30}{'reference EDC pAUC20 (FNMR0 0.05)':>36}")
    for r in res["erc_rows"]:
        fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"  # noqa: E731
        print(f"  {r['quality estimate']:<42}{fmt(r['erc_area_magface']):>14}{ci(r, 'erc_area_magface'):<20}"
              f"{fmt(r['edc_area_iso']):>16}{fmt(r['edc_pauc_20']):>14}{ci(r, 'edc_pauc_20'):<16}"
              f"{fmt(r['edc_ref_pauc_20']):>14}{ci(r, 'edc_ref_pauc_20'):<22}")
    paired = [r for r in res["erc_rows"] if "erc_area_magface_verdict" in r]
    if paired:
        print(f"  paired with MagFace's magnitude on the same identity resamples (estimate minus MagFace; "
              f"simultaneous intervals over the {paired[0]['family_size']}, level {paired[0]['paired_level']:.4f}):")
    for r in paired:
        signed = lambda v: "n/a" if v is None or v != v else f"{v:+.4f}"  # noqa: E731   (NaN: stored as null)
        print(f"  {r['quality estimate']:<42}" + "; ".join(
            f"{name} {signed(r.get(f'{k}_diff_vs_magface'))}{ci(r, f'{k}_diff', 1, '+.4f')} {r.get(f'{k}_verdict')}"
            for k, name in (("erc_area_magface", "ERC"), ("edc_pauc_20", "pAUC20"), ("edc_ref_pauc_20", "ref pAUC20"))))


if __name__ == "__main__":
    main()
