"""Where a notebook in figures/ finds the stored results it draws from, and how it makes them when there are none.

A notebook draws from the full benchmark's results in results/<benchmark>/ when they exist; otherwise (or with
MAGFACE_NOTEBOOK_QUICK=1) from results/<benchmark>_quick/, running the benchmark's --quick version first when that
is missing too. MAGFACE_RESULTS moves the results root; MAGFACE_BENCH_ARGS adds arguments to that run: a JSON
list for every benchmark, or an object {"*": [...], "<benchmark>": [...]} (the tests use it to shrink the data).
Importing this module puts the repository root on sys.path, so the notebooks can import the benchmarks' loading
and drawing functions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def results_dir(benchmark: str, done_file: str) -> Path:
    """The folder holding `benchmark`'s finished results (its `done_file` present), running --quick if needed."""
    root = Path(os.environ.get("MAGFACE_RESULTS", ROOT / "results"))
    full = root / benchmark
    if os.environ.get("MAGFACE_NOTEBOOK_QUICK") != "1" and (full / done_file).is_file():
        print(f"drawing from the stored results in {full}")
        return full
    quick = root / f"{benchmark}_quick"
    if (quick / done_file).is_file():
        print(f"drawing from the stored --quick results in {quick}")
        return quick
    extra = json.loads(os.environ.get("MAGFACE_BENCH_ARGS", "[]"))
    if isinstance(extra, dict):
        extra = extra.get("*", []) + extra.get(benchmark, [])
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{benchmark}.py"), "--quick", "--out", str(quick),
           "--figures", "", *extra]
    print(f"no stored results for {benchmark}; running: {' '.join(cmd)}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT)   # its progress shows in the cell as it runs
    if done.returncode != 0:
        raise RuntimeError(f"{benchmark}.py --quick failed (exit {done.returncode}); its output is above")
    return quick
