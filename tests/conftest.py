import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(1, ROOT)   # the benchmark scripts import as benchmarks.<name>
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


def _tree_status() -> str | None:
    """`git status` of the checkout (tracked changes and untracked files; ignored ones such as results/ are not
    listed), or None outside git (a source archive)."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                              text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@pytest.fixture(autouse=True)
def tracked_files_untouched():
    """No test, and so no benchmark run, command or notebook it starts with its output elsewhere, changes a tracked
    file of the checkout or leaves an untracked one: only publishing writes README, docs/, figures/ and
    results/published/, and the tests publish into temporary checkouts only."""
    before = _tree_status()
    yield
    after = _tree_status()
    assert before == after, f"the test changed the checkout's files:\n{after}\n(was:\n{before})"


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def refused(capsys, monkeypatch):
    """Call a command line's main(argv) in-process from the repository root (no interpreter start-up): it must
    exit with an error; returns the message (the SystemExit text and stderr)."""
    monkeypatch.chdir(ROOT)

    def run(main, *argv) -> str:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code not in (0, None), f"{argv} did not fail"
        return f"{exc.value.code if isinstance(exc.value.code, str) else ''}\n{capsys.readouterr().err}"
    return run


@pytest.fixture(scope="session")
def qvm_quick_runs(tmp_path_factory):
    """The quality benchmark's --quick runs at the tiny size, trained once per session the way the clustering and
    templates benchmarks make them when they are missing (benchmarks.quality_vs_magnitude.finished_runs: the sweep
    runner); both read them and neither writes into the folder."""
    from argparse import Namespace  # only where it is used

    from tiny import TINY  # tests/ joins sys.path when this file is imported, not before

    from benchmarks.quality_vs_magnitude import finished_runs  # heavy import: only the tests that use it
    root = tmp_path_factory.mktemp("qvm_quick")
    sets = TINY + ["train.epochs=2", f'data.cache_dir="{root / "cache"}"']
    runs, folders = finished_runs(Namespace(runs=str(root / "qvm"), quick=True, set=sets))
    assert sorted(folders) == ["adaface", "arcface", "magface", "softmax"], folders   # trained: the folder was empty
    return root / "qvm"
