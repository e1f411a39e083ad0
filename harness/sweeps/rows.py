"""A finished run's table row from its stored evaluation (RUN/eval/metrics.json): the columns every sweep table
shares (accuracy, TAR@FAR, quality protocols, validation/test split, IJB, training diagnostics), with an empty
cell and a reason for what the data cannot give."""
from __future__ import annotations

from harness.files import json_safe

NO_GROUND_TRUTH = "no ground-truth quality on this data (real data)"


def metric_columns(metrics: dict) -> dict:
    """The table columns of a run's evaluation (its first evaluation set): accuracy, TAR@FAR, quality metrics.
    A metric the data cannot give is None (an empty CSV cell), and `not_computable` says which and why."""
    sets = metrics["sets"]
    name = next((n for n, m in sets.items() if m.get("role") != "validation"), next(iter(sets)))
    m = sets[name]
    row = {"eval_set": name, "accuracy": m["accuracy"], "accuracy_std_folds": m["accuracy_std"]}
    why = split_columns(row, m, sets)
    for far, tar in m["tar_at_far"].items():
        row[f"tar_far_{far}"] = tar
        why[f"tar_far_{far}"] = f"fewer than 1/{far} impostor pairs"
    row["spearman_rho"] = m.get("magnitude_vs_quality", {}).get("spearman_rho")
    row["erc_area_magface"] = m["erc"]["area"]          # threshold recomputed per discard step (official script)
    row["erc_defined_up_to"] = m["erc"].get("defined_up_to")
    row["edc_area_iso"] = m["edc"]["area"]              # threshold fixed at the starting error (ISO/IEC 29794-1)
    row["edc_pauc_20"] = m["edc"]["pauc"]["0.2"]        # area of that EDC up to 20 % discarded
    row["erc_area_magface_ground_truth"] = m.get("erc_ground_truth", {}).get("area")
    row["edc_pauc_20_ground_truth"] = m.get("edc_ground_truth", {}).get("pauc", {}).get("0.2")
    row["mean_norm"] = m.get("mean_norm")
    for key, (low, high) in ((k, v) for k, v in m.get("ci", {}).items() if isinstance(v, list)):
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
    for mode, r in (metrics.get("ijb") or {}).get("modes", {}).items():   # IJB 1:1, the field's (nearest) FAR rule
        for far in ("1e-05", "0.0001"):
            row[f"ijb_{mode}_tar_far_{far}"] = r["tar_at_far_nearest"].get(far)
        row[f"ijb_{mode}_auc"] = r["auc"]
    row.update({k: v for k, v in metrics.get("training", {}).items() if not isinstance(v, (list, dict))})
    why.update({k: NO_GROUND_TRUTH for k in ("spearman_rho", "erc_area_magface_ground_truth",
                                             "edc_pauc_20_ground_truth", "spearman_rho_ci_low",
                                             "spearman_rho_ci_high")})
    official = "the official protocol is undefined from the first discard step on (fewer than 1/(10 fmr) impostors)"
    why.update({k: official for k in ("erc_area_magface", "erc_area_magface_ci_low", "erc_area_magface_ci_high")})
    row = json_safe(row)
    row["not_computable"] = "; ".join(f"{k}: {why.get(k, 'undefined')}" for k, v in row.items() if v is None)
    return row


SPLIT_METRICS = ("accuracy", "tar_far_0.01", "map_at_r", "precision_at_1")


def split_columns(row: dict, main: dict, sets: dict) -> dict:
    """Validation columns (val_*: tuning only) and test columns (test_accuracy, test_tar_far_0.01, map_at_r,
    precision_at_1, with CIs) of the identity-disjoint split (harness.evaluation.evaluate.identity_splits); for real
    data the first validation pack and the main (test) pack. Returns {column: why it is empty} for the columns that
    are."""
    splits = main.get("splits") or {}
    validation = splits.get("validation") or next((m for m in sets.values() if m.get("role") == "validation"), None)
    test = splits.get("test") or (main if validation is not None else None)
    why = {}
    for prefix, part in (("val_", validation), ("test_", test)):
        for metric in SPLIT_METRICS:
            column = (metric if metric in ("map_at_r", "precision_at_1") and prefix == "test_" else prefix + metric)
            value = None
            if part is not None:
                value = part["tar_at_far"].get("0.01") if metric == "tar_far_0.01" else part.get(metric)
            value = None if value is None or value != value else value      # NaN: too few impostors
            row[column] = value
            if part is None:
                why[column] = "no validation/test split (eval.validation_folds = 0, or no eval.validation_bins)"
            elif value is None and metric in ("map_at_r", "precision_at_1"):
                why[column] = "retrieval needs identity labels, which verification packs do not have"
            elif value is None:
                why[column] = why[f"{column}_ci_low"] = why[f"{column}_ci_high"] = "fewer than 100 impostor pairs"
            if prefix == "test_" and part is not None:
                low, high = (part.get("ci") or {}).get(metric, (None, None))
                row[f"{column}_ci_low"], row[f"{column}_ci_high"] = low, high
    return why
