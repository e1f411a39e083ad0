"""The sweep runner: trains, reuses, resumes, re-evaluates and tabulates a spec's runs; nothing computed is
deleted, and two sweeps on one folder share the work."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import replace

from tqdm import tqdm

from harness.checkpoint_io import load_data
from harness.evaluation.evaluate import evaluate_run
from harness.files import DamagedFile, read_json
from harness.locks import RunBusy, SweepsBusy, run_lock, sweep_sharing, sweeps_exclusive, tables_lock
from harness.source import synthetic_faces
from harness.sweeps.expand import Run, expand
from harness.sweeps.spec import SUMMARY_METRICS, SweepSpec, check_name
from harness.sweeps.status import run_status, statuses
from harness.sweeps.tables import (
    SweepResult,
    compare,
    describe_run,
    load_row,
    replicate_variance,
    summarise,
    write_tables,
)
from harness.sweeps.workers import FAILED_FILE, RESULT_FILE, Job, record_failure, run_all, worker_threads

# --- training ----------------------------------------------------------------------------------------------------


def run_spec(spec: SweepSpec, out: str | None = None, overrides=(), *, jobs: int = 1, dry_run: bool = False,
             retry_failed: bool = False, describe=None, quiet: bool = False):
    """Train what is missing of the spec, reuse what is done, write the tables; returns a SweepResult (rows in
    spec order). A run that fails is recorded (RUN/failed.json, a `failed` column) and the others go on; it is
    tried again only with retry_failed. dry_run: print the plan and return None. Every sweep holds OUT's shared
    lock while it runs."""
    check_name(spec.name, "sweep name")
    out = out or spec.default_out()
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: expected a number of processes >= 1")
    runs = expand(spec, out, overrides)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    with sweep_sharing(out):
        if dry_run:
            _print_plan(spec, out, runs, say)
            return None
        return _run_spec(spec, out, runs, jobs, retry_failed, describe, say, quiet)


def prune_spec(spec: SweepSpec, out: str | None = None, overrides=(), quiet: bool = False) -> None:
    """Remove the run folders under OUT/runs that this spec (with these overrides) does not name, listing them
    (refused while another sweep runs on OUT)."""
    check_name(spec.name, "sweep name")
    out = out or spec.default_out()
    runs = expand(spec, out, overrides)
    try:
        with sweeps_exclusive(out):
            prune_runs(out, runs, (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True)))
    except SweepsBusy as exc:
        raise ValueError(str(exc)) from None


def _announce(spec, out, runs, say) -> None:
    c = runs[0].cfg
    say(f"sweep {spec.name}{' (quick)' if spec.quick else ''}: {len(runs)} run(s) over "
        f"{', '.join(f'{a} ({len(v)})' for a, v in spec.axes.items())}; {c.model.backbone}, {c.train.epochs} "
        f"epochs, data {c.data.source}; results in {out}")


def _print_plan(spec, out, runs, say) -> None:
    """--dry-run: every run with its state (done, resume, new, failed, busy) and folder; nothing trains."""
    status, damage = statuses(runs)
    _announce(spec, out, runs, say)
    for r in runs:
        say(f"  {status[r.folder]:<7}{r.name:<40}{r.folder}" + (f"\n    {damage[r.folder]}" if r.folder in damage
                                                               else ""))


def _run_spec(spec, out, runs, jobs, retry_failed, describe, say, quiet):
    state = statuses(runs)
    _announce(spec, out, runs, say)
    t0 = time.perf_counter()
    trained = execute(runs, spec.name, out, state, jobs=jobs, retry_failed=retry_failed, describe=describe,
                      say=None if quiet else say)
    rows = [load_row(r) for r in runs]
    ijb = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("ijb_") and k.endswith("0.0001")]
    metrics = (*(spec.summary_metrics or SUMMARY_METRICS), *ijb)   # IJB TAR@FAR=1e-4 when runs were evaluated on it
    declared = spec.verdicts["metrics"]
    compared = metrics if declared is None else [m for m in metrics if m in declared]
    result = SweepResult(spec, out, runs, rows, trained, summarise(rows, list(spec.axes), metrics),
                         compare(rows, list(spec.axes), spec.reference, compared, spec.verdicts["margins"],
                                 spec.name, replicate_variance(runs)) if spec.reference else [])
    with tables_lock(out):
        write_tables(result)
    say(f"{trained} new run(s) in {time.perf_counter() - t0:.0f} s; tables {out}/{spec.name}.csv"
        f"{f', {spec.name}_summary.csv' if result.summary else ''}, {spec.name}.json")
    return result


def execute(runs: list, name: str, out: str, state: tuple | None = None, *, jobs: int = 1,
            retry_failed: bool = False, describe=None, say=print) -> int:
    """Bring every run to 'done' or 'failed': re-evaluate the stale, reuse the finished, resume the started, train the
    rest (`jobs` at once), each result (RUN/result.json) or failure (RUN/failed.json) recorded by the process that
    holds the run's lock. A run another process holds is left for last, then waited for and reused. `state`: the
    runs' (status, damage) when the caller has read them; say=None: quiet (no notes, no progress bar). Returns the
    number of runs this process trained."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: expected a number of processes >= 1")
    quiet, say = say is None, say or (lambda *a: None)
    with sweep_sharing(out):
        status, damage = state or statuses(runs)
        for r in runs:
            status[r.folder] = settle(r, status[r.folder], (damage or {}).get(r.folder), retry_failed, say)
        failed = [r.name for r in runs if status[r.folder] == "failed"]
        if failed:
            say(f"{len(failed)} run(s) failed before and are not retried (--retry-failed): {', '.join(failed)}")
        todo = [r for r in runs if status[r.folder] not in ("done", "failed")]
        reused = [r for r in runs if status[r.folder] == "done"]
        if reused:
            say(f"{len(reused)} run(s) reused from {out}/runs")
            _note_thread_counts(reused, jobs, say)
        for r in todo:
            if status[r.folder] == "resume":
                say(f"{r.name}: resuming an unfinished run")
        for cfg in {json.dumps(r.cfg.data.synthetic.__dict__, sort_keys=True): r.cfg for r in todo
                    if r.cfg.data.source == "synthetic"}.values():
            synthetic_faces(cfg)   # each data set once, before the workers need it
        bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"{name} runs", unit="run", file=sys.stdout,
                   disable=quiet)
        try:
            return _train_jobs([_job(r, name) for r in todo], jobs, bar, describe)
        finally:
            bar.close()


def settle(run: Run, seen: str, damage: str | None, retry_failed: bool, say) -> str:
    """A run's state before training, acted on under its lock with the state read again there (another process
    may have changed it meanwhile): a damaged run recorded as failed (or prepared for a retry), a stale evaluation
    redone, a failed run prepared for --retry-failed."""
    if seen not in ("re-evaluate", "failed"):
        return seen
    with run_lock(run.folder, say=say):
        try:
            now, damage = run_status(run), None
        except DamagedFile as exc:
            now, damage = "failed", str(exc)
        if damage:
            say(f"{run.name}: {damage}" + ("; retrying it (--retry-failed)" if retry_failed else
                                           "; recorded as failed, the other runs go on (--retry-failed)"))
            if not retry_failed:
                record_failure(run.folder, damage)
        if now == "re-evaluate":
            now = _reevaluate(run, say)
        if now == "failed" and retry_failed:
            _prepare_retry(run, say)
            now = "resume"
        return now


def _job(run: Run, sweep: str) -> Job:
    meta = {"sweep": sweep, "axes": run.axes, "name": run.name, "fingerprint": run.fingerprint}
    return Job(run.cfg.to_dict(), meta, describe_run(run))


def _train_jobs(job_list: list, jobs: int, bar, describe) -> int:
    """Train the jobs; those another process holds are tried again after the rest, waiting for their lock (and
    then reused when that process finished them). Returns how many this process trained."""
    trained, busy = 0, []
    for wait in (False, True):
        for job, outcome in run_all(job_list, jobs):
            name = job.meta["name"]
            if outcome.state == "busy":
                busy.append(replace(job, wait=True))
                continue
            if outcome.state == "interrupted":
                bar.write(f"{name}: interrupted; it resumes from its last checkpoint next time")
                continue
            trained += outcome.state in ("trained", "failed", "died")
            if outcome.state in ("failed", "died", "failed_elsewhere"):
                bar.write(f"{name}: FAILED ({outcome.error}); recorded in {job.folder}/{FAILED_FILE}")
            elif outcome.state == "reused":
                bar.write(f"{name}: finished by another process meanwhile; reused")
            elif describe:
                bar.set_postfix(last=describe(read_json(os.path.join(job.folder, RESULT_FILE))))
            bar.update(1)
        if not busy or wait:
            break
        bar.write(f"{len(busy)} run(s) are in use by another process; waiting for them: "
                  f"{', '.join(j.meta['name'] for j in busy)}")
        job_list, busy = busy, []
    return trained


def _reevaluate(run: Run, say) -> str:
    """Evaluate a trained run's checkpoint again (the caller holds its lock); a damaged or missing checkpoint makes
    the run failed (recorded)."""
    say(f"{run.name}: evaluated by an older version, with other eval settings, or its evaluation is damaged; "
        "evaluating its checkpoint again")
    try:
        faces = synthetic_faces(run.cfg) if run.cfg.data.source == "synthetic" else None
        evaluate_run(run.folder, faces=faces, device=run.cfg.train.device, eval_cfg=run.cfg.eval,
                     eval_bins=run.cfg.data.eval_bins)
    except ValueError as exc:   # a damaged or missing final.pt: --retry-failed rebuilds it from last.pt
        record_failure(run.folder, f"{type(exc).__name__}: {exc}")
        say(f"{run.name}: FAILED ({exc}); recorded in {run.folder}/{FAILED_FILE}")
        return "failed"
    return "done"


def _prepare_retry(run: Run, say) -> None:
    """Before a failed run is trained again (the caller holds its lock): its failure record and derived files go
    (result row, evaluation: both rebuilt), a damaged checkpoint is kept aside as NAME.damaged (named), so training
    resumes from the last good one (or starts over when none is left)."""
    for path in (FAILED_FILE, RESULT_FILE, os.path.join("eval", "metrics.json")):
        if os.path.isfile(os.path.join(run.folder, path)):
            os.remove(os.path.join(run.folder, path))
    for name in ("final.pt", "last.pt"):
        path = os.path.join(run.folder, "checkpoints", name)
        if not os.path.isfile(path):
            continue
        try:
            load_data(path)
        except DamagedFile as exc:
            os.replace(path, f"{path}.damaged")
            say(f"{run.name}: {exc}\n  kept aside as {path}.damaged; training resumes without it")


def _note_thread_counts(reused: list, jobs: int, say) -> None:
    """The thread count changes the weights in their last bits but is not in the fingerprint: say so when a reused
    run was trained with another count than this sweep would use."""
    now, other = worker_threads(jobs), {}
    for r in reused:
        path = os.path.join(r.folder, "environment.json")
        try:
            seen = read_json(path).get("torch_threads_seen") if os.path.isfile(path) else None
        except DamagedFile:
            continue   # the note is a courtesy: a damaged environment record does not stop the sweep
        if seen and seen != [now]:
            other.setdefault(", ".join(map(str, seen)), []).append(r.name)
    for threads, names in other.items():
        say(f"note: {len(names)} reused run(s) were trained with {threads} thread(s), this sweep trains with {now} "
            f"(--jobs {jobs}); a retrain would differ in the last bits (not in the fingerprint): {', '.join(names)}")


def prune_runs(out: str, keep: list, say=print) -> list:
    """Remove the run folders under OUT/runs that are not among `keep`; returns (and lists) what went. A run another
    process is training or evaluating (its lock is held) is never removed: it is listed as kept. (run_spec holds
    OUT's exclusive sweep lock around this: no sweep is running on OUT meanwhile.)"""
    root = os.path.join(out, "runs")
    names = {os.path.basename(r.folder) for r in keep}
    candidates = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else []) if d not in names and
                        os.path.isdir(os.path.join(root, d)))
    gone, busy = [], []
    for d in candidates:
        try:
            with run_lock(os.path.join(root, d), wait=False):
                shutil.rmtree(os.path.join(root, d))
            gone.append(d)
        except RunBusy:
            busy.append(d)
    say(f"pruned {len(gone)} run folder(s) from {root} that this sweep does not name"
        + "".join(f"\n  removed {d}" for d in gone) + "".join(f"\n  kept {d}: in use by another process" for d in busy)
        + f"\nkept {len(names)} run folder name(s) of this sweep")
    return gone
