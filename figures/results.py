"""Where a notebook in figures/ finds the results it draws from, and how it shows a figure as the PNG it publishes.

By default a notebook draws from the published results, results/published/<benchmark>/ (committed: the tables and
arrays behind README.md and paper_repro.md), so on a fresh clone it redraws the published figures in seconds and
trains nothing. MAGFACE_NOTEBOOK_RESULTS picks another source, and only when asked does anything run:
    published (default)  results/published/<benchmark>; missing: the error names the command that publishes them
    local                results/<benchmark>, your own full run of the benchmark; missing: the error names it
    quick                results/<benchmark>_quick, running the benchmark's --quick version first if it is missing
MAGFACE_RESULTS moves the results root; MAGFACE_BENCH_ARGS adds arguments to a quick run: a JSON list for every
benchmark, or an object {"*": [...], "<benchmark>": [...]} (the tests use it to shrink the data).
Importing this module puts the repository root on sys.path, so the notebooks can import the benchmarks' loading
and drawing functions.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.plots import FIGURE_DPI  # noqa: E402  (needs the repository root on sys.path)

SOURCES = ("published", "local", "quick")
# results that a benchmark script makes under another name: folder -> (script, its flags, its flags with --quick)
SCRIPTS = {"compare_losses_tuned": ("compare_losses", ["--tune", "8"], ["--tune", "2"])}


def command(benchmark: str, *flags: str, quick: bool = False) -> list:
    """The benchmark command (script and flags) that makes the results folder `benchmark`."""
    script, full, small = SCRIPTS.get(benchmark, (benchmark, [], []))
    return [f"benchmarks/{script}.py", *(small if quick else full), *flags]


def results_dir(benchmark: str, done_file: str) -> Path:
    """The folder holding `benchmark`'s finished results (its `done_file` present), from the chosen source."""
    source = os.environ.get("MAGFACE_NOTEBOOK_RESULTS", "published")
    if source not in SOURCES:
        raise ValueError(f"MAGFACE_NOTEBOOK_RESULTS={source!r}: expected one of {SOURCES}")
    root = Path(os.environ.get("MAGFACE_RESULTS", ROOT / "results"))
    if source == "published":
        folder = root / "published" / benchmark
        if not (folder / done_file).is_file():
            raise FileNotFoundError(
                f"no published results for {benchmark} in {folder}; publish them with: python "
                f"{' '.join(command(benchmark, '--publish'))} (or set MAGFACE_NOTEBOOK_RESULTS=quick to run its small "
                "version here)")
        print(f"drawing from the published results in {_shown(folder)}: {_provenance(folder)}")
        return folder
    if source == "local":
        folder = root / benchmark
        if not (folder / done_file).is_file():
            raise FileNotFoundError(f"no results in {folder}; make them with: python {' '.join(command(benchmark))}")
        print(f"drawing from your own results in {_shown(folder)}")
        return folder
    quick = root / f"{benchmark}_quick"
    if (quick / done_file).is_file():
        print(f"drawing from the stored --quick results in {_shown(quick)}")
        return quick
    extra = json.loads(os.environ.get("MAGFACE_BENCH_ARGS", "[]"))
    if isinstance(extra, dict):
        extra = extra.get("*", []) + extra.get(benchmark, [])
    script, *own = command(benchmark, quick=True)
    cmd = [sys.executable, str(ROOT / script), *own, "--quick", "--out", str(quick), "--figures", "", *extra]
    print(f"no stored --quick results for {benchmark}; running (asked by MAGFACE_NOTEBOOK_RESULTS=quick): "
          f"{' '.join(cmd)}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT)   # its progress shows in the cell as it runs
    if done.returncode != 0:
        raise RuntimeError(f"{benchmark}.py --quick failed (exit {done.returncode}); its output is above")
    return quick


def table(rows: list, columns: list, digits: int = 4):
    """The rows (dicts) as a pandas DataFrame of the given columns, in that order (those the rows have), floats
    rounded: JupyterLab renders it as a table that fits the cell, where printed text would wrap."""
    present = [c for c in columns if any(c in r for r in rows)]
    return pd.DataFrame([{c: r.get(c) for c in present} for r in rows], columns=present).round(digits)


def png(fig, name: str):
    """The figure as the PNG the benchmark publishes as figures/<name> (same renderer and resolution), closed
    afterwards; shown by Jupyter, and tagged with its file name so the tests can compare it with the gallery's."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png", metadata={"figure": name})


def _shown(folder: Path) -> str:
    try:
        return str(folder.relative_to(ROOT))
    except ValueError:
        return str(folder)


def _provenance(folder: Path) -> str:
    path = folder / "provenance.json"
    if not path.is_file():
        return "no provenance.json"
    p = json.loads(path.read_text())
    commit = (p.get("published_commit") or "?")[:10]
    return (f"published {p.get('published_at', '?')[:10]} at commit {commit}{' (dirty tree)' if p.get('dirty') else ''}"
            f" by `{p.get('command') or '?'}`")
