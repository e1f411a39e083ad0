"""Runs that survive sharing and damage (the reliability campaign of 2026-12-03, one test per reproduction): one
writer per run folder, damaged files named and recovered, dead workers and divergence reported, stale temporaries
removed."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import ROOT, tiny, write_spec
from tiny import TINY

from harness.__main__ import main as harness_main
from harness.locks import RunBusy, remove_stale_temporaries, run_lock, temporary_name
from harness.sweeps.expand import expand
from harness.sweeps.runner import prune_runs, prune_spec, run_spec, settle
from harness.sweeps.spec import load_spec
from harness.sweeps.status import run_status
from harness.sweeps.workers import Job, worker_main
from harness.training.trainer import train

HOLD = ("import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(float(sys.argv[2]))")


def hold_lock(folder, seconds=60.0):
    """Another process holding a run folder's lock (as a training would), started and confirmed."""
    os.makedirs(folder, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, os.path.join(folder, ".lock"), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def sweep_args(tmp_path):
    return TINY + ["train.epochs=1", f'data.cache_dir="{tmp_path / "cache"}"', "eval.bootstrap=0"]


def test_a_held_run_is_busy_and_prune_keeps_it(tmp_path):
    busy, idle = tmp_path / "o" / "runs" / "busy-1", tmp_path / "o" / "runs" / "idle-2"
    idle.mkdir(parents=True)
    proc = hold_lock(str(busy))
    try:
        with pytest.raises(RunBusy, match="in use by another process"), run_lock(str(busy), wait=False):
            pass
        said = []
        assert prune_runs(str(tmp_path / "o"), [], said.append) == ["idle-2"]
        assert busy.is_dir() and not idle.exists() and "kept busy-1: in use by another process" in said[0]
    finally:
        proc.kill()
        proc.wait()
    with run_lock(str(busy), wait=False):   # the kernel released the dead holder's lock
        pass


def test_temporaries_are_unique_per_process_and_stale_ones_go_when_the_lock_is_taken(tmp_path):
    path = str(tmp_path / "run" / "last.pt")
    assert temporary_name(path) == f"{path}.tmp-{os.getpid()}"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    dead = tmp_path / "run" / "checkpoints" / "last.pt.tmp-999999999"        # no such process
    dead_npz = tmp_path / "run" / "step_00000005.npz.tmp-999999999.npz"
    live = tmp_path / "run" / f"metrics.csv.tmp-{os.getppid()}"              # a live process's write: kept
    for f in (dead, dead_npz, live):
        f.write_bytes(b"x")
    with run_lock(str(tmp_path / "run")):
        assert not dead.exists() and not dead_npz.exists() and live.exists()
    assert remove_stale_temporaries(str(tmp_path / "run")) == []


@pytest.mark.slow
def test_two_sweeps_on_one_out_train_each_run_once_and_print_equal_tables(tmp_path):
    spec_path = write_spec(tmp_path, '[axes]\nseed = [0, 1, 2, 3]\n')
    out, args = tmp_path / "o", sweep_args(tmp_path)
    other = subprocess.Popen([sys.executable, "-m", "harness", "sweep", spec_path, "--out", str(out),
                              *[a for s in args for a in ("--set", s)]], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        mine = run_spec(load_spec(spec_path), str(out), args, quiet=True)
        printed, _ = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, printed
    theirs = int(printed.split(" new run(s)")[0].split()[-1])
    assert mine.trained + theirs == 4, printed                      # each run trained once, by one of the two
    assert {r["seed"] for r in mine.rows} == {0, 1, 2, 3} and not any(r.get("failed") for r in mine.rows)
    for run in mine.runs:
        log = Path(os.path.join(run.folder, "metrics.jsonl")).read_text().splitlines()
        steps = [json.loads(line)["step"] for line in log]
        assert steps == sorted(set(steps)) and len(steps) == 5      # the training log of one writer, complete
        assert not os.path.exists(os.path.join(run.folder, "failed.json"))
    again = run_spec(load_spec(spec_path), str(out), args, quiet=True)   # the table both wrote: the same rows
    assert again.trained == 0 and again.rows == mine.rows


def test_a_sweep_waits_for_a_run_another_process_holds(tmp_path, capsys):
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0, 1]\n'))
    out, args = tmp_path / "o", sweep_args(tmp_path)
    held = expand(spec, str(out), args)[0].folder
    proc = hold_lock(held, seconds=3)
    try:
        result = run_spec(spec, str(out), args)
    finally:
        proc.kill()
    printed = capsys.readouterr().out
    assert "1 run(s) are in use by another process; waiting for them: seed0" in printed
    assert result.trained == 2 and all(r.get("accuracy") is not None for r in result.rows)


def test_damaged_run_files_are_named_recorded_and_recovered(tmp_path, capsys):
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0, 1]\n'))
    out, args = str(tmp_path / "o"), sweep_args(tmp_path)
    first = run_spec(spec, out, args, quiet=True)
    run0 = first.runs[0].folder
    open(os.path.join(run0, "eval", "metrics.json"), "w").close()    # derived: evaluated again, nothing lost
    second = run_spec(spec, out, args, quiet=True)
    assert second.trained == 0 and second.rows == first.rows
    open(os.path.join(run0, "result.json"), "w").close()             # a disk-full write
    third = run_spec(spec, out, args)
    printed = capsys.readouterr().out
    assert f"result row {run0}/result.json is damaged" in printed and "recorded as failed" in printed
    assert "result.json is damaged" in third.rows[0]["failed"] and third.rows[1] == first.rows[1]
    retried = run_spec(spec, out, args, quiet=True, retry_failed=True)   # resumed at its end: the same weights
    assert retried.rows[0]["accuracy"] == first.rows[0]["accuracy"] and "failed" not in retried.rows[0]
    open(os.path.join(run0, "environment.json"), "w").close()        # read only for a note: skipped
    assert run_spec(spec, out, args, quiet=True).rows == retried.rows
    open(os.path.join(run0, "sweep_run.json"), "w").close()
    assert "sweep run record" in run_spec(spec, out, args, quiet=True).rows[0]["failed"]
    run_spec(spec, out, args, quiet=True, retry_failed=True)
    final = os.path.join(run0, "checkpoints", "final.pt")
    with open(final, "r+b") as f:                                   # a truncated final.pt, found on re-evaluation
        f.truncate(100)
    fourth = run_spec(spec, out, args + ["eval.fmr=0.02"], quiet=True)
    assert f"checkpoint {final} is damaged" in fourth.rows[0]["failed"] and fourth.rows[1].get("accuracy")
    fifth = run_spec(spec, out, args + ["eval.fmr=0.02"], quiet=True, retry_failed=True)
    assert "failed" not in fifth.rows[0] and os.path.isfile(final + ".damaged")
    assert fifth.rows[0]["accuracy"] == first.rows[0]["accuracy"]


def test_torn_and_damaged_training_log_lines(tmp_path, capsys):
    cfg = tiny(tmp_path, "train.epochs=1", "eval.bootstrap=0")
    train(cfg, quiet=True, evaluate=False)
    log = tmp_path / "run" / "metrics.jsonl"
    rows = log.read_text().splitlines()
    log.write_text("\n".join(rows) + '\n{"step": 6, "loss": 0.')    # torn by a full disk mid-write
    train(cfg, quiet=True, evaluate=False)
    assert "dropped a torn last line" in capsys.readouterr().err and log.read_text().splitlines() == rows
    log.write_text("\n".join([rows[0], "{oops", *rows[1:]]) + "\n")
    with pytest.raises(ValueError, match=f"{log}:2: damaged training log line"):
        train(cfg, quiet=True, evaluate=False)


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut short", b"hello, not a checkpoint\n"])
def test_a_damaged_checkpoint_names_its_path_and_no_resume(tmp_path, refused, damage):
    cfg = tiny(tmp_path, "train.epochs=1", "train.max_steps=5", "eval.bootstrap=0")
    train(cfg, quiet=True, evaluate=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(damage)
    sets = [a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"', "train.epochs=1", "train.max_steps=5",
                              "eval.bootstrap=0"] for a in ("--set", s)]
    message = refused(harness_main, "train", *sets, "--out", tmp_path / "run", "--no-eval")
    assert f"checkpoint {last} is damaged" in message and "--no-resume" in message and "Traceback" not in message


def test_a_diverged_run_prints_one_paragraph(tmp_path, refused):
    sets = [a for s in TINY + [f'data.cache_dir="{tmp_path / "cache"}"', "train.epochs=1", "optim.lr=1e30"]
            for a in ("--set", s)]
    message = refused(harness_main, "train", *sets, "--out", tmp_path / "run", "--no-eval")
    assert message.startswith("error: training diverged: non-finite") and "What to try: a lower optim.lr" in message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 2


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_run_and_thread_counts_are_shown(tmp_path, capsys):
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0, 1, 2]\n'))
    out, args = str(tmp_path / "o"), sweep_args(tmp_path)
    done = {}
    sweep = threading.Thread(target=lambda: done.update(r=run_spec(spec, out, args, jobs=2, quiet=True)))
    sweep.start()
    deadline = time.time() + 60
    while not multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
    sweep.join(timeout=300)
    rows = done["r"].rows
    failed = [r for r in rows if r.get("failed")]
    assert len(failed) == 1 and failed[0]["failed"].startswith("WorkerDied") and "signal 9" in failed[0]["failed"]
    assert sum(r.get("accuracy") is not None for r in rows) == 2
    capsys.readouterr()
    again = run_spec(spec, out, args, retry_failed=True)            # resumed from its last checkpoint, or anew
    assert not any(r.get("failed") for r in again.rows) and again.trained == 1
    if (os.cpu_count() or 1) >= 2:   # --jobs 2 trained with half the threads of --jobs 1: reuse says so
        assert "reused run(s) were trained with" in capsys.readouterr().out


SHARE = ("import sys, time; from filelock import ReadWriteLock; lock = ReadWriteLock(sys.argv[1]); "
         "lock.acquire_read(); print('held', flush=True); time.sleep(60)")


def test_a_prune_is_refused_while_another_sweep_runs_on_out(tmp_path):
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0]\n'))
    (tmp_path / "o" / "runs" / "other-1").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", SHARE, str(tmp_path / "o" / ".sweeps.lock")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="another sweep is running on .*; prune when it has finished"):
            prune_spec(spec, str(tmp_path / "o"), sweep_args(tmp_path), quiet=True)
        assert (tmp_path / "o" / "runs" / "other-1").is_dir()
    finally:
        proc.kill()
        proc.wait()
    prune_spec(spec, str(tmp_path / "o"), sweep_args(tmp_path), quiet=True)
    assert not (tmp_path / "o" / "runs" / "other-1").exists()


def test_a_state_seen_before_the_lock_is_read_again_under_it(tmp_path):
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0]\n'))
    run = run_spec(spec, str(tmp_path / "o"), sweep_args(tmp_path), quiet=True).runs[0]
    # another process saw the run failed and waited; meanwhile it was rebuilt: nothing of it may be removed
    assert settle(run, "failed", None, True, lambda *a: None) == "done"
    assert run_status(run) == "done" and os.path.isfile(os.path.join(run.folder, "result.json"))


def test_a_ctrl_c_in_a_worker_is_not_the_runs_failure(tmp_path, monkeypatch):
    import harness.sweeps.workers as workers
    monkeypatch.setattr(workers, "run_job", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    receive, send = multiprocessing.Pipe(duplex=False)
    worker_main(Job({"out": str(tmp_path / "run")}, {}, {}), 1, 0, send)
    assert receive.recv().state == "interrupted" and not (tmp_path / "run" / "failed.json").exists()


@pytest.mark.slow
def test_jobs_train_real_data_whose_loader_has_workers(tmp_path):
    """A spawned run's DataLoader starts worker processes of its own (a daemonic worker could not)."""
    from test_reliability_inputs import folder, pack
    spec = load_spec(write_spec(tmp_path, '[axes]\nseed = [0, 1]\n'))
    root, bins = folder(tmp_path, (16,) * 8), pack(tmp_path / "val.bin", 16, (True, False) * 10)
    args = ['train.device="cpu"', 'data.source="folder"', f'data.path="{root}"', f'data.eval_bins=["{bins}"]',
            "data.workers=1", "train.batch_size=4", "train.epochs=2", "train.calibrate_at_epoch=0.5", "model.width=8",
            "model.embedding_size=16",
            "eval.bootstrap=0", "eval.validation_folds=0"]
    result = run_spec(spec, str(tmp_path / "o"), args, jobs=2, quiet=True)
    assert not any(r.get("failed") for r in result.rows), [r.get("failed") for r in result.rows]
    assert all(r["accuracy"] is not None for r in result.rows)
