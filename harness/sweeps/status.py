"""A run's state on disk: done, resumable, failed, busy or new; a finished run whose evaluation is stale."""
from __future__ import annotations

import os
from dataclasses import asdict

from harness.config import (
    RunConfig,
    eval_settings,
)
from harness.evaluation.evaluate import EVAL_VERSION
from harness.files import DamagedFile, read_json
from harness.sweeps.expand import Run
from harness.sweeps.workers import FAILED_FILE, META_FILE, RESULT_FILE


def run_status(run: Run) -> str:
    """'done' (its result row is stored, evaluated by this version with these eval settings), 're-evaluate' (trained,
    but evaluated by an older version or with other eval settings, or its stored evaluation is damaged: the
    checkpoint is evaluated again, nothing is retrained), 'failed', 'resume' (training started) or 'new'.
    A folder whose stored fingerprint differs (a hash-prefix collision, or a folder copied by hand) is an error: it is
    never overwritten. A damaged run file is a DamagedFile naming it (execute records the run as failed)."""
    meta = os.path.join(run.folder, META_FILE)
    if os.path.isfile(meta):
        stored = read_json(meta, "sweep run record", "--retry-failed writes it again").get("fingerprint")
        if stored != run.fingerprint:
            raise ValueError(f"{run.folder} holds a run of fingerprint {stored}, not {run.fingerprint}; move it away")
    if os.path.isfile(os.path.join(run.folder, FAILED_FILE)):
        return "failed"
    if os.path.isfile(os.path.join(run.folder, RESULT_FILE)):
        read_json(os.path.join(run.folder, RESULT_FILE), "result row", "--retry-failed rebuilds it from the run")
        try:
            current = stored_evaluation(run.folder) == evaluation_of(run.cfg)
        except DamagedFile:
            current = False   # derived from the checkpoint in seconds: evaluated again, nothing is lost
        return "done" if current else "re-evaluate"
    return "resume" if os.path.isfile(os.path.join(run.folder, "config.json")) else "new"


def evaluation_of(cfg: RunConfig) -> tuple:
    """What a current evaluation of this run is: suite version, settings, verification packs, final checkpoint."""
    return EVAL_VERSION, eval_settings(asdict(cfg.eval)), list(cfg.data.eval_bins), "final.pt"


def stored_evaluation(folder: str) -> tuple:
    """The same tuple for the evaluation stored in the run's eval/metrics.json."""
    path = os.path.join(folder, "eval", "metrics.json")
    if not os.path.isfile(path):
        return ()
    m = read_json(path, "evaluation")
    settings = m.get("eval_config")
    return (m.get("eval_version", 1), eval_settings(settings) if isinstance(settings, dict) else settings,
            m.get("eval_bins"), m.get("checkpoint"))


def statuses(runs: list) -> tuple[dict, dict]:
    """({folder: status}, {folder: why it is damaged}) of every run; a damaged run's status is 'failed'."""
    status, damage = {}, {}
    for r in runs:
        try:
            status[r.folder] = run_status(r)
        except DamagedFile as exc:
            status[r.folder], damage[r.folder] = "failed", str(exc)
    return status, damage
