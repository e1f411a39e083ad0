"""One writer per run folder: an exclusive file lock held while a process trains, evaluates or prunes a run; and
a shared lock on a results folder held by every sweep on it, which a prune takes exclusively. Both are OS- or
SQLite-level locks released when the holder dies; they assume the processes share one machine's view of the file
system (a local disk; a network file system only where its locking works).

The lock is `RUN/.lock` (filelock: an OS lock that the kernel releases when its holder dies, so a killed run never
leaves its folder locked). A process that takes the lock is the only live writer of the folder, so the temporary
files a dead writer left behind (`NAME.tmp-PID...`, written before an atomic rename) are removed then. The lock is
re-entrant within a process (a sweep worker holds it around `train`, which takes it again).
"""
from __future__ import annotations

import contextlib
import glob
import os
import re

from filelock import FileLock, ReadWriteLock, Timeout

LOCK_NAME = ".lock"
TABLES_LOCK = ".tables.lock"
SWEEPS_LOCK = ".sweeps.lock"   # OUT: shared by the sweeps running on it, exclusive for a prune
_TEMPORARY = re.compile(r"\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")   # atomic writes: NAME.tmp-PID or NAME.tmp-PID.npz


class RunBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


class SweepsBusy(RuntimeError):
    """Another sweep is running on the results folder (a prune must wait for it)."""


def temporary_name(path: str, suffix: str = "") -> str:
    """The temporary file an atomic write of `path` goes through: unique per process (two writers never share it)."""
    return f"{path}.tmp-{os.getpid()}{suffix}"


def _lock(folder: str) -> FileLock:
    os.makedirs(folder, exist_ok=True)
    return FileLock(os.path.join(folder, LOCK_NAME), is_singleton=True)


@contextlib.contextmanager
def run_lock(folder: str, wait: bool = True, say=None):
    """Hold the run folder's lock for the block. wait=False raises RunBusy at once when another process holds it;
    wait=True waits for it (saying so once, through `say`). Stale temporaries are removed once the lock is held."""
    lock = _lock(folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise RunBusy(f"{folder} is in use by another process (it holds {os.path.join(folder, LOCK_NAME)})") \
                from None
        if say:
            say(f"{folder}: another process is working on this run; waiting for it")
        lock.acquire()
    try:
        if lock.lock_counter == 1:
            remove_stale_temporaries(folder)
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def tables_lock(out: str):
    """Hold OUT's table lock while a sweep writes its table set, so two sweeps never interleave their files."""
    os.makedirs(out, exist_ok=True)
    with FileLock(os.path.join(out, TABLES_LOCK), is_singleton=True):
        yield


def _sweeps_lock(out: str) -> ReadWriteLock:
    os.makedirs(out, exist_ok=True)
    return ReadWriteLock(os.path.join(out, SWEEPS_LOCK))


@contextlib.contextmanager
def sweep_sharing(out: str):
    """Held (shared) by every sweep on OUT for its whole run: a prune cannot remove runs a sweep will read."""
    with _sweeps_lock(out).read_lock():
        yield


@contextlib.contextmanager
def sweeps_exclusive(out: str):
    """Held by a prune: no sweep is running on OUT (else SweepsBusy at once, naming the lock)."""
    try:
        with _sweeps_lock(out).write_lock(blocking=False):
            yield
    except Timeout:
        raise SweepsBusy(f"another sweep is running on {out} (it holds {os.path.join(out, SWEEPS_LOCK)}); prune "
                         "when it has finished") from None


def remove_stale_temporaries(folder: str) -> list:
    """Delete the temporary files of writers that are no longer alive under `folder` (and its sub-folders); a live
    writer's (another process still writing) are kept. Returns the removed paths."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "**", "*.tmp-*"), recursive=True):
        match = _TEMPORARY.search(os.path.basename(path))
        if match and os.path.isfile(path) and not _alive(int(match.group(1))):
            os.remove(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False   # this process holds the lock and is writing nothing now: its own leftovers are stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
