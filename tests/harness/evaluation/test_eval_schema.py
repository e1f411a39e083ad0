"""The stored evaluation's version is checked, not trusted: the key structure of a run's eval/metrics.json is hashed
here, and a change to it without a new harness.evaluation.evaluate.EVAL_VERSION fails (sweeps re-evaluate finished
runs whose stored version differs, so a silent schema change would leave stale evaluations in use)."""
import hashlib
import json

from tiny import TINY

from harness.config import load_config
from harness.evaluation.evaluate import EVAL_VERSION
from harness.training.trainer import train

# EVAL_VERSION -> the hash of metrics.json's key structure for the tiny MagFace run below. A new version records its
# hash here (the failure message prints it).
SCHEMAS = {5: "50837e434b22bdaa"}


def key_paths(value, prefix="") -> set:
    """Every key path of a JSON document; list positions collapse to [] (their length is data, not schema)."""
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in key_paths(v, f"{prefix}.{k}")} | {prefix}
    if isinstance(value, list):
        return {p for v in value for p in key_paths(v, f"{prefix}[]")} | {prefix}
    return {prefix}


def test_a_change_of_the_stored_metrics_comes_with_a_new_eval_version(tmp_path):
    cfg = load_config(None, TINY + [f'out="{tmp_path / "run"}"', f'data.cache_dir="{tmp_path / "cache"}"',
                                    "train.max_steps=10", "head.name=\"magface\"",
                                    "head.params={l_a = 'auto', u_a = 'auto', lambda_g = 'auto'}"])
    metrics = train(cfg, quiet=True)["metrics"]
    stored = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert stored["eval_version"] == EVAL_VERSION and set(stored) == set(json.loads(json.dumps(metrics, default=str)))
    digest = hashlib.sha256("\n".join(sorted(key_paths(stored))).encode()).hexdigest()[:16]
    assert SCHEMAS.get(EVAL_VERSION) == digest, (
        f"eval/metrics.json's key structure hashes to {digest}, not to SCHEMAS[{EVAL_VERSION}]: if the stored "
        f"metrics changed, bump EVAL_VERSION (harness/evaluation/evaluate.py) and record {{{EVAL_VERSION + 1}: "
        f"{digest!r}}} in SCHEMAS")
