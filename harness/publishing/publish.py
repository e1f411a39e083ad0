"""Published results: the tables and small arrays behind every number and figure of README.md and paper_repro.md.

A benchmark writes its results into a working folder (results/<benchmark>, not committed: checkpoints are large).
Publishing copies from a finished run of it what readers need to check and redraw, into results/published/<name>/
(committed): the top-level tables (CSV/JSON/NPZ), and per run its config, result row, evaluation metrics,
calibration and environment (with `arrays`, also its evaluation arrays and last training dump). Never checkpoints.
provenance.json records the command, the commit and dirtiness of the tree at publishing and at each run's training,
package versions and machine. The folder is replaced atomically, and the whole published tree is kept under
BUDGET_BYTES. Loaders find a run's files under OUT/runs/<folder name>, so a published folder reads like the original.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import re
import shutil
import subprocess
from importlib.metadata import version

from harness.evaluation.diagnostics import DUMP_NAME
from harness.files import atomic_json
from harness.provenance import git_state
from harness.publishing import report
from harness.publishing.repo import checkout, gallery, published_root

BLOCK_BODY = re.compile(r"(<!-- report:([\w-]+) -->\n).*?(<!-- /report:\2 -->)", re.S)
BUDGET_BYTES = 20 * 2**20
TABLE_SUFFIXES = (".csv", ".json", ".npz")
RUN_FILES = ("config.json", "result.json", "sweep_run.json", "calibration.json", "environment.json",
             os.path.join("eval", "metrics.json"))
PROVENANCE = "provenance.json"


def run_folder(out: str, row: dict) -> str:
    """A run's folder under OUT/runs, from a table row's `run` (the path it had when the table was written)."""
    return os.path.join(out, "runs", os.path.basename(os.path.normpath(row["run"])))


def sweep_table(out: str) -> tuple[str | None, dict]:
    """(file name, content) of the sweep's JSON table in OUT (the one with `sweep` and `runs`), or (None, {}) for
    the folder of a benchmark that is not a sweep (tables only, no runs)."""
    found = []
    for name in sorted(os.listdir(out)):
        if name.endswith(".json") and name != PROVENANCE:
            with open(os.path.join(out, name)) as f:
                content = json.load(f)
            if isinstance(content, dict) and {"sweep", "runs"} <= content.keys():
                found.append((name, content))
    if len(found) > 1:
        raise ValueError(f"{out}: more than one sweep table ({[n for n, _ in found]}); publish one benchmark's folder")
    return found[0] if found else (None, {})


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def publish(out: str, name: str | None = None, *, arrays: bool = False, command: str = "", allow_dirty: bool = False,
            root: str | None = None, repo: str | None = None, before_swap=None) -> str:
    """Copy the finished benchmark run in OUT to ROOT/NAME (NAME: the sweep's name; ROOT: the checkout's
    results/published, the checkout `repo` or the one around the current folder) and its figures (the PNG and PDF
    files at the top of OUT) into the checkout's figures/, the gallery; returns the published folder.
    Errors (nothing changes): an unfinished or failed run, a dirty tree or no git checkout without allow_dirty
    (with it, the changed files are recorded), a published tree over BUDGET_BYTES, or `before_swap(name, folder)`
    raising ValueError on the new folder (the CLI renders the report tables from it there)."""
    table_name, table, name = _finished(out, name)
    repo = checkout(repo)
    root = root or published_root(repo)
    commit, changed = _clean_tree(repo, name, allow_dirty)
    dest = os.path.join(root, name)
    _recover(root, name)
    tmp = os.path.join(root, f".{name}.tmp-{os.getpid()}")
    os.makedirs(tmp)
    try:
        runs = _copy_tables_and_runs(out, tmp, table_name, table.get("runs", []), arrays)
        atomic_json(os.path.join(tmp, PROVENANCE), {
            "name": name, "table": table_name, "source": os.path.normpath(out), "command": command,
            "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "published_commit": commit, "dirty": bool(changed), "dirty_files": changed,
            "packages": {p: _version(p) for p in ("torch", "numpy", "scipy", "scikit-learn", "matplotlib")},
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "runs": runs, "training_seconds": sum(r["seconds"] or 0 for r in runs), "arrays": arrays})
        _within_budget(root, tmp, dest, name)
        if before_swap is not None:
            before_swap(name, tmp)
        _swap(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    copy_figures(out, gallery(repo))
    return dest


def _finished(out: str, name: str | None) -> tuple:
    """(sweep table file name or None, its content, the published name) of a finished benchmark folder; ValueError
    for a missing folder, one without tables, a bad name, failed runs or runs without a result."""
    if not os.path.isdir(out):
        raise ValueError(f"{out}: no such folder; run the benchmark first")
    table_name, table = sweep_table(out)
    if table_name is None and not any(f.endswith(TABLE_SUFFIXES) for f in os.listdir(out)):
        raise ValueError(f"{out}: no tables to publish (no CSV, JSON or NPZ file); is it a benchmark's folder?")
    name = name or table.get("sweep") or os.path.basename(os.path.normpath(out))
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"name={name!r}: expected a plain folder name")
    rows = table.get("runs", [])
    failed = [r.get("name", r["run"]) for r in rows if r.get("failed")]
    missing = [r["run"] for r in rows if not os.path.isfile(os.path.join(run_folder(out, r), "result.json"))]
    if failed or missing:
        raise ValueError(f"{out} is not finished: failed runs {failed}, runs without a result {missing}; run the "
                         "benchmark to the end (it resumes) before publishing")
    return table_name, table, name


def _clean_tree(repo: str, name: str, allow_dirty: bool) -> tuple:
    """(commit, changed files that publishing itself did not make); ValueError outside git or with changes,
    unless allow_dirty (then they are recorded)."""
    commit, changed = git_state(repo)
    changed = [f for f in changed if not _made_by_publishing(f, name, repo)]
    if commit is None and not allow_dirty:
        raise ValueError(f"{repo} is not a git checkout (or git failed): the published results could not name their "
                         "commit; publish with --allow-dirty (recorded in provenance.json)")
    if changed and not allow_dirty:
        raise ValueError(f"the working tree has uncommitted changes ({', '.join(changed[:5])}"
                         f"{', ...' if len(changed) > 5 else ''}): commit them, or publish with --allow-dirty "
                         "(recorded in provenance.json)")
    return commit, changed


def _copy_tables_and_runs(out: str, tmp: str, table_name, rows: list, arrays: bool) -> list:
    """The tables at the top of OUT and each run's small files (with arrays: its evaluation arrays and last dump)
    into the new folder; returns the runs' records for the provenance."""
    for entry in sorted(os.listdir(out)):
        if entry.endswith(TABLE_SUFFIXES) and entry != PROVENANCE and os.path.isfile(os.path.join(out, entry)):
            shutil.copy2(os.path.join(out, entry), os.path.join(tmp, entry))
    runs = [_copy_run(run_folder(out, r), tmp, arrays) for r in rows]
    if table_name is None and os.path.isfile(os.path.join(out, RUN_FILES[-1])):   # a single run's folder
        os.makedirs(os.path.join(tmp, "eval"))
        shutil.copy2(os.path.join(out, RUN_FILES[-1]), os.path.join(tmp, RUN_FILES[-1]))
    return runs


def _within_budget(root: str, tmp: str, dest: str, name: str) -> None:
    """ValueError when the published tree would grow past BUDGET_BYTES with the new folder in place of the old."""
    total = folder_bytes(root) - (folder_bytes(dest) if os.path.isdir(dest) else 0)
    if total > BUDGET_BYTES:
        raise ValueError(f"publishing {name} ({folder_bytes(tmp) / 2**20:.1f} MiB) would bring {root} to "
                         f"{total / 2**20:.1f} MiB, over its budget of {BUDGET_BYTES / 2**20:.0f} MiB")


FIGURE_SUFFIXES = (".png", ".pdf")


def copy_figures(out: str, figures: str) -> list:
    """The figures at the top of OUT (a benchmark draws its gallery figures there) copied into the gallery folder,
    each atomically (temp file + rename); returns the names. A run never writes the gallery itself: this is the
    only path from a run's folder to figures/."""
    names = sorted(f for f in os.listdir(out) if f.endswith(FIGURE_SUFFIXES) and os.path.isfile(os.path.join(out, f)))
    for name in names:
        tmp = os.path.join(figures, f".{name}.tmp-{os.getpid()}")
        shutil.copyfile(os.path.join(out, name), tmp)
        os.replace(tmp, os.path.join(figures, name))
    return names


def _made_by_publishing(path: str, name: str, repo: str) -> bool:
    """Changes that a benchmark run and its publishing make themselves, so not dirt: this benchmark's published
    folder, the gallery figures (figures/*.png, *.pdf), and the documents (README.md, paper_repro.md, docs/*.md) and
    figures/*.ipynb where only their generated tables or the notebooks' outputs differ from the commit. Anything
    else is a change to declare."""
    path = path.strip('"')
    if path.startswith(f"results/published/{name}/"):
        return True
    if re.fullmatch(r"figures/[^/]+\.(png|pdf)", path):
        return True
    if path in report.documents(repo) or re.fullmatch(r"figures/[^/]+\.ipynb", path):
        return _same_but_generated(path, repo)
    return False


def _same_but_generated(path: str, repo: str) -> bool:
    """Whether the working copy equals the committed one once report blocks (or notebook outputs) are set aside."""
    try:
        committed = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True, cwd=repo,
                                   check=True, timeout=5).stdout
        with open(os.path.join(repo, path), encoding="utf-8") as f:
            current = f.read()
    except (OSError, subprocess.SubprocessError):
        return False
    if path.endswith(".ipynb"):
        strip = lambda text: [(c["cell_type"], c["source"]) for c in json.loads(text)["cells"]]  # noqa: E731
    else:
        strip = lambda text: BLOCK_BODY.sub(r"\1\3", text)  # noqa: E731
    try:
        return strip(committed) == strip(current)
    except (ValueError, KeyError):
        return False


def _recover(root: str, name: str) -> None:
    """Before publishing NAME: put back a folder a crash left moved aside (NAME.old-PID, when NAME is missing) and
    remove temporary folders of crashed publishes (.NAME.tmp-PID)."""
    dest = os.path.join(root, name)
    olds = sorted(glob.glob(glob.escape(dest) + ".old-*"))
    if olds and not os.path.isdir(dest):
        os.replace(olds.pop(), dest)
    for leftover in olds + glob.glob(os.path.join(glob.escape(root), f".{glob.escape(name)}.tmp-*")):
        shutil.rmtree(leftover, ignore_errors=True)


def _copy_run(src: str, dest_root: str, arrays: bool) -> dict:
    dest = os.path.join(dest_root, "runs", os.path.basename(src))
    files = list(RUN_FILES)
    if arrays:
        evals = os.path.join(src, "eval")
        files += [os.path.join("eval", f) for f in sorted(os.listdir(evals)) if f.endswith(".npz")]
        dumps = sorted(f for f in os.listdir(os.path.join(src, "dumps")) if DUMP_NAME.fullmatch(f))
        files += [os.path.join("dumps", dumps[-1])] if dumps else []
    for rel in files:
        if os.path.isfile(os.path.join(src, rel)):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(os.path.join(src, rel), os.path.join(dest, rel))
    env = _read(os.path.join(src, "environment.json"))
    result = _read(os.path.join(src, "result.json"))
    return {"folder": os.path.basename(src), "fingerprint": result.get("fingerprint"),
            "seconds": result.get("seconds"), "trained_at_commit": env.get("git_commit"),
            "trained_dirty": env.get("git_dirty")}


def _swap(tmp: str, dest: str) -> None:
    """Replace dest by tmp: the old folder is moved aside first, so a crash leaves one of the two whole."""
    old = f"{dest}.old-{os.getpid()}"
    if os.path.isdir(dest):
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def _read(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except Exception:
        return None
