"""Every notebook in figures/ runs headless (nbclient) in its quick mode, on tiny data in a temporary results root."""
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tiny import TINY

pytestmark = pytest.mark.slow   # trains runs or starts processes: deselect with -m "not slow"

FIGURES = Path(__file__).resolve().parent.parent / "figures"
NOTEBOOKS = sorted(FIGURES.glob("*.ipynb"))
FIGURES_DRAWN = {"theory": 4, "ablation": 1, "quality_vs_magnitude": 4, "erc": 1, "loss_comparison": 1}


def test_every_paper_figure_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == set(FIGURES_DRAWN)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_draws(path, tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "notebook_results"   # shared: erc reuses quality_vs_magnitude's runs
    monkeypatch.setenv("MAGFACE_RESULTS", str(root))
    monkeypatch.setenv("MAGFACE_NOTEBOOK_QUICK", "1")
    tiny = [a for s in TINY + ["train.epochs=2", f'data.cache_dir="{root / "cache"}"'] for a in ("--set", s)]
    monkeypatch.setenv("MAGFACE_BENCH_ARGS", json.dumps(   # every head of the comparison runs in its own test
        {"*": tiny, "compare_losses": ["--heads", "softmax,magface", "--conditions", "clean,noisy"]}))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(FIGURES)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == FIGURES_DRAWN[path.stem]
    if path.stem != "theory":   # it ran the benchmark's --quick version into the temporary root, not results/
        assert any(p.name.endswith("_quick") for p in root.iterdir())
