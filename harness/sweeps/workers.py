"""Training a sweep's runs: one run per job, inline or one spawned process per run, each under its folder's lock.

A job's result (RUN/result.json) or failure (RUN/failed.json) is written by the process that holds the run's lock,
before it lets go, so a second process waiting for the run finds it finished. With --jobs N every run trains in a
process of its own (spawned, not forked: a forked child of a process that ran OpenMP work can deadlock; not
daemonic: a run's DataLoader workers are its children), so a worker that dies (killed, out of memory) costs only its
own run, recorded as failed with the signal. A Ctrl-C is not a run's failure: the run resumes next time.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from dataclasses import dataclass

import torch

from harness.config import RunConfig
from harness.files import atomic_json, read_json
from harness.locks import RunBusy, run_lock
from harness.sweeps.rows import metric_columns
from harness.training.trainer import train

RESULT_FILE = "result.json"     # a finished run's table row: its presence marks the run done
FAILED_FILE = "failed.json"     # a run that raised (e.g. diverged): its error; retried only when asked
META_FILE = "sweep_run.json"    # written before training: which sweep, axis values and fingerprint made the folder


@dataclass
class Job:
    """One run for a worker: its config, the record written into its folder, its table description, and whether to
    wait for another process that holds the run (else the worker reports it busy at once)."""
    cfg: dict
    meta: dict
    row: dict
    wait: bool = False

    @property
    def folder(self) -> str:
        return self.cfg["out"]


@dataclass
class Outcome:
    """What became of a job: 'trained', 'failed' (trained here and failed: its error), 'reused' (another process
    finished it while this one waited), 'failed_elsewhere' (another process recorded its failure meanwhile), 'busy'
    (another process holds it), 'interrupted' (Ctrl-C: not a failure) or 'died' (the worker process ended without a
    word)."""
    state: str
    seconds: float = 0.0
    error: str | None = None


def worker_threads(jobs: int) -> int:
    """Threads per run when `jobs` runs train at once (the weights depend on it in their last bits)."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def run_job(job: Job, threads: int, slot: int = 0) -> Outcome:
    """Train + evaluate one run under its folder's lock and record the result or the failure (see the module
    docstring). A run that fails (e.g. TrainingDiverged) is recorded, not raised, so the other runs go on. Worker
    `slot` uses GPU slot mod the GPU count (--jobs N spreads runs over the GPUs of one machine)."""
    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict(job.cfg)
    if torch.cuda.is_available() and cfg.train.device != "cpu":
        torch.cuda.set_device(slot % torch.cuda.device_count())
    try:
        with run_lock(job.folder, wait=job.wait):
            return _train_locked(job, cfg)
    except RunBusy:
        return Outcome("busy")


def _train_locked(job: Job, cfg: RunConfig) -> Outcome:
    if os.path.isfile(os.path.join(job.folder, FAILED_FILE)):
        return Outcome("failed_elsewhere", error=read_json(os.path.join(job.folder, FAILED_FILE)).get("error"))
    if os.path.isfile(os.path.join(job.folder, RESULT_FILE)):
        return Outcome("reused")
    atomic_json(os.path.join(job.folder, META_FILE), job.meta)
    t0 = time.perf_counter()
    try:
        metrics = train(cfg, quiet=True)["metrics"]
    except Exception as exc:   # recorded as the run's failure (RUN/failed.json); the sweep carries on
        error = f"{type(exc).__name__}: {exc}"
        record_failure(job.folder, error, time.perf_counter() - t0)
        return Outcome("failed", time.perf_counter() - t0, error)
    seconds = time.perf_counter() - t0
    atomic_json(os.path.join(job.folder, RESULT_FILE), {**job.row, **metric_columns(metrics), "seconds": seconds,
                                                        "fingerprint": job.meta["fingerprint"], "run": job.folder})
    return Outcome("trained", seconds)


def record_failure(folder: str, error: str, seconds: float = 0.0) -> None:
    """RUN/failed.json (the caller holds the run's lock)."""
    atomic_json(os.path.join(folder, FAILED_FILE), {"error": error, "seconds": seconds})


def run_all(job_list: list, jobs: int = 1):
    """Yield (job, Outcome) as each run ends; jobs > 1: a spawned process per run, at most `jobs` at once."""
    threads = worker_threads(jobs)
    if jobs <= 1:
        for job in job_list:
            yield job, run_job(job, threads)
        return
    yield from _in_processes(job_list, jobs, threads)


def _in_processes(job_list: list, jobs: int, threads: int):
    ctx = multiprocessing.get_context("spawn")
    pending, running = list(job_list), {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                slot = min(set(range(jobs)) - {r[3] for r in running.values()})   # a free GPU slot
                job = pending.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=worker_main, args=(job, threads, slot, send))
                process.start()
                send.close()
                running[process.sentinel] = (job, process, receive, slot)
            for sentinel in multiprocessing.connection.wait(list(running)):
                job, process, receive, _ = running.pop(sentinel)
                outcome = _receive(receive)
                process.join()
                yield job, outcome or _died(job, process.exitcode)
    finally:   # an interrupted sweep (Ctrl-C, an error) leaves no worker behind
        for _job, process, receive, _ in running.values():
            process.terminate()
            process.join()
            receive.close()


def _receive(connection) -> Outcome | None:
    """The worker's Outcome, or None when it died without sending one (its end of the pipe closed: EOF)."""
    try:
        return connection.recv() if connection.poll() else None
    except (EOFError, OSError):
        return None
    finally:
        connection.close()


def worker_main(job: Job, threads: int, slot: int, send) -> None:
    """A spawned worker: one run, its small Outcome sent back (the result itself is in the run folder)."""
    try:
        outcome = run_job(job, threads, slot)
    except KeyboardInterrupt:   # Ctrl-C reaches every process of the terminal: the sweep stops, the run resumes later
        outcome = Outcome("interrupted")
    except Exception as exc:   # e.g. a damaged file found before training: the run's failure, recorded
        outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}")
        try:
            with run_lock(job.folder, wait=False):
                record_failure(job.folder, outcome.error)
        except RunBusy:
            pass   # another process took the run over: its outcome is the run's
    send.send(outcome)
    send.close()


def _died(job: Job, exitcode) -> Outcome:
    """The run of a worker that ended without reporting (a signal, the out-of-memory killer): recorded as failed."""
    how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    error = (f"WorkerDied: the worker process training this run ended without a result ({how}; e.g. killed, or out "
             "of memory); --retry-failed resumes it from its last checkpoint")
    try:
        with run_lock(job.folder, wait=False):
            record_failure(job.folder, error)
    except RunBusy:
        pass   # another process took the run over: its outcome is the run's
    return Outcome("died", error=error)
