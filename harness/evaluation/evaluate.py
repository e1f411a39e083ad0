"""Evaluate a run: embed the evaluation images, store per-image norms and per-pair scores, compute metrics.

Everything a figure needs is written under RUN/eval/ as arrays (norms, quality, scores, issame, fold, pair
quality), so plots re-draw in seconds without a model.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from harness.config_checks import pack_name
from harness.data import batch_to_tensor, file_sha256, read_verification_bin
from harness.devices import pick_device
from harness.evaluation.diagnostics import training_diagnostics
from harness.evaluation.sets import Images, Pairs, Protocol, evaluation_set, stored_arrays
from harness.files import atomic_json, atomic_npz, read_json, read_npz
from harness.locks import run_lock
from harness.measures import metrics
from harness.measures.stats import interval_verdict
from harness.models.build import run_backbone
from harness.source import synthetic_faces

# Bumped when the stored metrics change (sweeps then re-evaluate finished runs, no retraining);
# tests/harness/evaluation/test_eval_schema.py hashes the key structure of metrics.json per version, so a change
# without a bump fails.
EVAL_VERSION = 5


@torch.no_grad()
def embed(backbone, images_uint8: np.ndarray, batch_size: int, device, flip: bool, channels_last=False):
    """-> (plain embeddings [N, d], fused embeddings [N, d]) in float32 on the CPU. The fused one adds the
    embedding of the horizontally flipped image (used for cosine scores); the plain one gives the magnitude."""
    backbone.eval()
    plain, fused = [], []
    for start in range(0, len(images_uint8), batch_size):
        x = batch_to_tensor(torch.from_numpy(np.ascontiguousarray(images_uint8[start:start + batch_size])).to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        elif x.device.type == "cuda":
            x = x.contiguous()
        e = backbone(x).float()
        plain.append(e.cpu())
        fused.append((e + backbone(x.flip(-1)).float()).cpu() if flip else e.cpu())
    return torch.cat(plain).numpy(), torch.cat(fused).numpy()


def quality_protocols(scores, issame, pair_quality, fmr) -> dict:
    """Both error-versus-discard protocols for one quality estimate: "erc" as the official MagFace script
    (threshold recomputed on the kept pairs) and "edc" as ISO/IEC 29794-1 (threshold fixed at the start)."""
    out = {}
    for key, protocol in (("erc", "recomputed"), ("edc", "fixed")):
        c = metrics.error_versus_discard(scores, issame, pair_quality, fmr=fmr, threshold=protocol)
        out[key] = {"protocol": protocol, "fmr": fmr, "area": c["area"], "defined_up_to": c["defined_up_to"],
                    "pauc": {f"{limit:g}": v for limit, v in c["pauc"].items()},
                    "fractions": c["fractions"].tolist(), "fnmr": c["fnmr"].tolist(),
                    "thresholds": c["thresholds"].tolist()}
    return out


def set_metrics(pairs: Pairs, protocol: Protocol, images: Images | None = None) -> dict:
    """Every metric of one evaluation set, with bootstrap CIs over its identities (over pairs where the set has no
    identity labels); with ground truth (synthetic data) also the ground-truth quality's curves and the
    magnitude-quality agreement."""
    p, fmr = pairs, protocol.fmr
    out = metrics.verification_accuracy(p.scores, p.issame, p.folds)
    out["tar_at_far"] = {f"{k:g}": v for k, v in metrics.tar_at_far(p.scores, p.issame).items()}
    out.update(quality_protocols(p.quality_scores, p.issame, p.pair_quality, fmr))
    if p.ground_truth is not None:
        truth = quality_protocols(p.quality_scores, p.issame, p.ground_truth, fmr)
        out["erc_ground_truth"], out["edc_ground_truth"] = truth["erc"], truth["edc"]
        out["magnitude_vs_quality"] = metrics.quality_agreement(images.norms, images.quality)
        out["mean_norm"] = float(np.mean(images.norms))
    if protocol.n_boot:
        out["ci"] = confidence_intervals(pairs, protocol, images)
    return out


def confidence_intervals(pairs: Pairs, protocol: Protocol, images: Images | None = None) -> dict:
    """{metric: [low, high]}: accuracy, TAR@FAR=1e-2, the official ERC area, the ISO EDC pAUC at 20 %, and the
    magnitude-quality Spearman rho, each by resampling evaluation identities (metrics.identity_bootstrap)."""
    p, fmr = pairs, protocol.fmr
    units = p.identities if p.identities is not None else np.arange(len(p.scores))

    def boot(f, ids=units):
        return list(metrics.identity_bootstrap(ids, f, n_boot=protocol.n_boot, level=protocol.level))

    def accuracy(i):
        folds = None if p.folds is None else p.folds[i]
        return metrics.verification_accuracy(p.scores[i], p.issame[i], folds)["accuracy"]

    def discard(i, threshold):
        return metrics.error_versus_discard(p.quality_scores[i], p.issame[i], p.pair_quality[i], fmr=fmr,
                                            threshold=threshold)
    out = {"level": protocol.level, "resamples": protocol.n_boot,
           "unit": "identities" if p.identities is not None else "pairs (no identity labels in this set)",
           "accuracy": boot(accuracy),
           "tar_far_0.01": boot(lambda i: metrics.tar_at_far(p.scores[i], p.issame[i], fars=(1e-2,))[1e-2]),
           "erc_area_magface": boot(lambda i: discard(i, "recomputed")["area"]),
           "edc_pauc_20": boot(lambda i: discard(i, "fixed")["pauc"][0.2])}
    if images is not None and images.quality is not None:
        out["spearman_rho"] = boot(lambda i: metrics.quality_agreement(images.norms[i], images.quality[i])
                                   ["spearman_rho"], images.identities)
    return out


def split_metrics(scores, issame, folds, embeddings, identities, pair_identities, n_boot=200, level=0.95) -> dict:
    """Verification (accuracy over the split's own folds, TAR@FAR) and open-set retrieval among the split's images
    (MAP@R, Precision@1), with bootstrap CIs over the split's identities (n_boot = 0: none)."""
    acc = metrics.verification_accuracy(scores, issame, folds)
    r = metrics.retrieval_per_query(embeddings, identities)
    ap, hit = r["ap_at_r"], r["hit_at_1"]
    out = {"identities": int(len(np.unique(identities))), "images": int(len(identities)), "pairs": int(len(scores)),
           "accuracy": acc["accuracy"], "accuracy_std": acc["accuracy_std"],
           "tar_at_far": {f"{k:g}": v for k, v in metrics.tar_at_far(scores, issame).items()},
           "map_at_r": float(ap.mean()), "precision_at_1": float(hit.mean())}
    if n_boot:
        boot = lambda f, ids: list(metrics.identity_bootstrap(ids, f, n_boot=n_boot, level=level))  # noqa: E731
        out["ci"] = {"level": level, "resamples": n_boot, "unit": "identities",
                     "accuracy": boot(lambda i: metrics.verification_accuracy(scores[i], issame[i], folds[i])
                                      ["accuracy"], pair_identities),
                     "tar_far_0.01": boot(lambda i: metrics.tar_at_far(scores[i], issame[i], fars=(1e-2,))[1e-2],
                                          pair_identities),
                     "map_at_r": boot(lambda i: ap[i].mean(), identities[r["query"]]),
                     "precision_at_1": boot(lambda i: hit[i].mean(), identities[r["query"]])}
    return out


def identity_splits(embeddings, identity, pairs, scores, validation_folds: int, n_boot=200, level=0.95) -> dict:
    """The evaluation identities split by fold (folds hold disjoint identities): validation = the identities of
    the first `validation_folds` folds, for tuning only (no CIs: never reported); test = every other identity.
    {} when validation_folds is 0."""
    if not validation_folds:
        return {}
    in_validation = pairs.fold < validation_folds
    val_ids = np.unique(np.concatenate([identity[pairs.left[in_validation]], identity[pairs.right[in_validation]]]))
    val_image = np.isin(identity, val_ids)
    touched = np.isin(identity[pairs.left[~in_validation]], val_ids) | np.isin(identity[pairs.right[~in_validation]],
                                                                             val_ids)
    if touched.any():
        raise ValueError(f"{int(touched.sum())} test pair(s) involve validation identities: the folds are not "
                         "identity-disjoint")
    pair_ids = np.stack([identity[pairs.left], identity[pairs.right]], 1)
    out = {}
    for name, pair_mask, image_mask, boot in (("validation", in_validation, val_image, 0),
                                              ("test", ~in_validation, ~val_image, n_boot)):
        out[name] = split_metrics(scores[pair_mask], pairs.issame[pair_mask], pairs.fold[pair_mask],
                                  embeddings[image_mask], identity[image_mask], pair_ids[pair_mask], boot, level)
        out[name]["folds"] = sorted(int(f) for f in np.unique(pairs.fold[pair_mask]))
    return out


def evaluate_run(run_dir: str, checkpoint: str = "final.pt", faces=None, device: str = "auto",
                 eval_cfg=None, eval_bins=None) -> dict:
    """Evaluate the checkpoint of a run on its evaluation data with the run's evaluation settings and verification
    packs (or `eval_cfg`, `eval_bins`); writes RUN/eval/ (replacing an earlier evaluation: it is regenerated from
    the checkpoint in seconds) and returns the metrics. Holds the run folder's lock (one writer per run)."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"run folder {run_dir} not found: train it first (python -m harness train --out {run_dir})")
    with run_lock(run_dir):
        return _evaluate_run(run_dir, checkpoint, faces, device, eval_cfg, eval_bins)


def _evaluate_run(run_dir, checkpoint, faces, device, eval_cfg, eval_bins) -> dict:
    backbone, ckpt = run_backbone(run_dir, checkpoint)
    cfg = ckpt["config_obj"]
    e = eval_cfg or cfg.eval
    bins = cfg.data.eval_bins if eval_bins is None else list(eval_bins)
    dev = pick_device(device if device != "auto" else cfg.train.device)
    # Embeddings in float32 (no autocast): evaluation numbers stay comparable across the runs' amp settings. On a GPU
    # the network takes the run's layout (channels_last or not); the CPU path stays as stored evaluations were made.
    channels_last = cfg.train.channels_last and dev.type == "cuda"
    backbone.to(dev)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    out_dir = os.path.join(run_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    result = {"eval_version": EVAL_VERSION, "eval_config": dataclasses.asdict(e), "eval_bins": bins,
              "checkpoint": checkpoint, "step": ckpt["global_step"], "flip": e.flip,
              "flip_for_quality": e.flip_for_quality, "sets": {}}
    protocol = Protocol(e.fmr, e.bootstrap, e.ci_level)

    def evaluate_set(name, images_uint8, left, right, issame, labels=None, folds=None):
        plain, fused = embed(backbone, images_uint8, e.batch_size, dev, e.flip, channels_last)
        pairs, images = evaluation_set(plain, fused, left, right, issame, e.flip_for_quality, labels, folds)
        atomic_npz(os.path.join(out_dir, f"{name}.npz"), **stored_arrays(pairs, images))
        result["sets"][name] = set_metrics(pairs, protocol, images)
        return pairs, fused

    if cfg.data.source == "synthetic":
        faces = faces or synthetic_faces(cfg)
        p, labels = faces.pairs, Images(None, faces.eval.quality, faces.eval.identity)
        pairs, fused = evaluate_set("synthetic", faces.eval.images, p.left, p.right, p.issame, labels, p.fold)
        result["sets"]["synthetic"]["splits"] = identity_splits(fused, faces.eval.identity, p, pairs.scores,
                                                                e.validation_folds, e.bootstrap, e.ci_level)
    validation = {pack_name(v) for v in e.validation_bins}
    for path in bins:
        images, issame = read_verification_bin(path)
        evaluate_set(pack_name(path), images, np.arange(0, len(images), 2), np.arange(1, len(images), 2), issame)
        result["sets"][pack_name(path)].update(sha256=file_sha256(path),
                                               role="validation" if pack_name(path) in validation else "test")
    if e.ijb:
        result["ijb"] = ijb_summary(run_dir, checkpoint, e, str(dev))
    result["training"] = training_diagnostics(run_dir, cfg)
    atomic_json(os.path.join(out_dir, "metrics.json"), result)
    return result


def ijb_summary(run_dir: str, checkpoint: str, e, device: str) -> dict:
    """The run's network on the configured IJB release (harness.evaluation.ijb_eval; everything in RUN/eval/ijb/):
    per mode, TAR at each FAR under both rules and AUC."""
    if checkpoint != "final.pt":
        raise ValueError(f"eval.ijb evaluates a run's final.pt, not {checkpoint}")
    from harness.evaluation import ijb_eval  # scikit-image (alignment): loaded only when a run is evaluated on IJB
    out = ijb_eval.run(ijb_eval.Request(e.ijb, e.ijb_set, run_dir, "run", os.path.join(run_dir, "eval", "ijb"),
                                        modes=tuple(e.ijb_modes), device=device, n_boot=e.bootstrap))
    keys = ("tar_at_far_nearest", "tar_at_far_conservative", "auc")
    return {"set": e.ijb_set, "release": out["release"], "pairs": out["pairs"],
            "modes": {m: {k: r["verification"][k] for k in keys} for m, r in out["modes"].items()}}


def summary_line(result: dict) -> str:
    parts = []
    for name, m in result["sets"].items():
        text = f"{name}: accuracy {100 * m['accuracy']:.2f}% ± {100 * m['accuracy_std']:.2f}"
        tar = {k: v for k, v in m["tar_at_far"].items() if v is not None and v == v}   # NaN live, None stored
        if tar:
            far = min(tar, key=float)
            text += f", TAR@FAR={far} {100 * tar[far]:.2f}%"
        if "magnitude_vs_quality" in m:
            text += f", magnitude-quality Spearman {m['magnitude_vs_quality']['spearman_rho']:+.3f}"
        if "erc" in m:
            text += f", ERC area (official protocol) {m['erc']['area']:.4f}"
        parts.append(text)
    return "; ".join(parts)


def run_embeddings(run: str, split: str = "eval") -> dict:
    """A finished run's plain (unflipped) embeddings of its synthetic images with their identities and ground-truth
    quality: for analyses that need features, not scores. split "eval": the unseen identities and the evaluation
    pairs (clustering, templates); "train": the training images, their labels and the head's class centres (the
    geometry of the trained feature space)."""
    if split not in ("eval", "train"):
        raise ValueError(f"split={split!r}: expected 'eval' or 'train'")
    backbone, ckpt = run_backbone(run)
    faces = synthetic_faces(ckpt["config_obj"])
    images = faces.train if split == "train" else faces.eval
    plain, _ = embed(backbone, images.images, 256, "cpu", flip=False)
    if split == "train":
        return {"embeddings": plain, "labels": images.labels, "identity": images.identity, "quality": images.quality,
                "centres": ckpt["head"]["weight"].float().numpy()}
    arrays = load_eval(run)
    return {"embeddings": plain, "identity": images.identity, "quality": images.quality,
            "left": arrays["left"], "right": arrays["right"], "issame": arrays["issame"]}


def load_eval(run_dir: str, name: str = "synthetic") -> dict:
    return read_npz(os.path.join(run_dir, "eval", f"{name}.npz"))


def paired_accuracy_difference(run_a: str, run_b: str, n_boot: int = 200, level: float = 0.95,
                               name: str = "synthetic") -> dict:
    """Verification accuracy of run a minus run b on the same evaluation pairs, with a CI from resampling the
    evaluation identities (both runs scored on every resample, so the pairs' shared difficulty cancels). It measures
    evaluation noise only: the seed-to-seed spread of training is not in it (harness.measures.stats, over seeds, has
    that). Returns {diff, diff_ci_low, diff_ci_high, verdict}."""
    a, b = load_eval(run_a, name), load_eval(run_b, name)
    for key in ("left", "right", "issame", "fold", "identity"):
        if not np.array_equal(a[key], b[key]):
            raise ValueError(f"{run_a} and {run_b} were evaluated on different pairs ({key} differs); a paired "
                             "difference needs the same evaluation set")
    pairs = np.stack([a["identity"][a["left"]], a["identity"][a["right"]]], axis=1)

    def diff(i):
        acc = lambda ev: metrics.verification_accuracy(ev["scores"][i], ev["issame"][i], ev["fold"][i])  # noqa: E731
        return acc(a)["accuracy"] - acc(b)["accuracy"]
    point = diff(np.arange(len(pairs)))
    low, high = metrics.identity_bootstrap(pairs, diff, n_boot=n_boot, level=level)
    verdict = interval_verdict(low, high, "better", "worse", "no detectable difference (evaluation noise)")
    if low is None:
        verdict = "not computable: fewer than 2 identities"
    return {"diff": float(point), "diff_ci_low": low, "diff_ci_high": high, "verdict": verdict}


def load_metrics(run_dir: str) -> dict:
    return read_json(os.path.join(run_dir, "eval", "metrics.json"), "evaluation",
                     "evaluate the run again (python -m harness evaluate --run RUN)")
