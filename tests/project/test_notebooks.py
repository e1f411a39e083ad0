"""The notebooks in figures/: by default each redraws the published results, and its committed outputs are current
(re-executing gives the same text and the same images, which are the README gallery's PNGs); without published
results it names the command that makes them; asked for its quick mode it runs the benchmark on tiny data."""
import base64
import io
import json
import re
import sys
from pathlib import Path

import matplotlib.image
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from support import ROOT
from tiny import TINY

from harness.config import load_config

FIGURES = Path(ROOT) / "figures"
sys.path.insert(0, str(FIGURES))
import refresh_notebooks  # noqa: E402

pytestmark = pytest.mark.slow   # starts kernels: deselect with -m "not slow"

NOTEBOOKS = sorted(FIGURES.glob("*.ipynb"))
FIGURES_DRAWN = {"theory": 4, "ablation": 1, "quality_vs_magnitude": 4, "erc": 1, "loss_comparison": 1,
                 "clustering": 1, "templates": 1, "fair_comparison": 1, "geometry": 1}
PIXEL_TOLERANCE = 0.01   # mean absolute difference on [0, 1] RGBA: another FreeType/matplotlib build may move text


def test_every_paper_figure_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == set(FIGURES_DRAWN)


def outputs(nb) -> list:
    """Per code cell: its text (the streams joined: the kernel splits them by timing) and its images as
    (figure file name, decoded pixels)."""
    cells = []
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        texts, images = [], []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                texts[-1:] = ["".join(texts[-1:]) + o["text"]]
            elif "image/png" in o.get("data", {}):
                png = base64.b64decode(o["data"]["image/png"])
                images.append((o["metadata"]["image/png"]["figure"], matplotlib.image.imread(io.BytesIO(png))))
            elif "text/plain" in o.get("data", {}):
                texts.append(o["data"]["text/plain"])
        cells.append((texts, images))
    return cells


def same_pixels(a, b) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).mean()) <= PIXEL_TOLERANCE


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_are_the_published_figures_and_current(path):
    stored = outputs(nbformat.read(path, as_version=4))
    fresh = outputs(refresh_notebooks.execute(path))
    images = [img for _, imgs in stored for img in imgs]
    assert len(images) == FIGURES_DRAWN[path.stem], "the committed notebook lacks its outputs: refresh_notebooks.py"
    assert len(fresh) == len(stored)
    for (texts, imgs), (new_texts, new_imgs) in zip(stored, fresh, strict=True):
        assert new_texts == texts, "stale text output: run python figures/refresh_notebooks.py"
        assert [n for n, _ in new_imgs] == [n for n, _ in imgs]
        for (name, old), (_, new) in zip(imgs, new_imgs, strict=True):
            assert same_pixels(new, old), f"{name}: stale in {path.name}; run python figures/refresh_notebooks.py"
            gallery = matplotlib.image.imread(FIGURES / name)
            assert same_pixels(new, gallery), f"{name}: the notebook draws another figure than figures/{name}"
    if path.stem != "theory":
        first = stored[0][0][0]   # the first output says where the numbers come from
        assert first.startswith("drawing from the published results in results/published/")


def test_missing_published_results_name_the_command(tmp_path):
    with pytest.raises(CellExecutionError, match=r"python benchmarks/ablation\.py --publish"):
        refresh_notebooks.execute(FIGURES / "ablation.ipynb", results_root=tmp_path)


def test_quick_mode_runs_the_benchmark_when_asked(tmp_path, monkeypatch):
    """One notebook is enough: the others call the same results_dir, and each benchmark's --quick path has its
    own test (tests/test_benchmarks_*.py)."""
    path, root = FIGURES / "loss_comparison.ipynb", tmp_path
    monkeypatch.setenv("MAGFACE_RESULTS", str(root))
    monkeypatch.setenv("MAGFACE_NOTEBOOK_RESULTS", "quick")
    tiny = [a for s in TINY + ["train.epochs=2", f'data.cache_dir="{root / "cache"}"'] for a in ("--set", s)]
    monkeypatch.setenv("MAGFACE_BENCH_ARGS", json.dumps(
        {"*": tiny, "compare_losses": ["--heads", "softmax,magface", "--conditions", "clean"]}))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(FIGURES)}}).execute()
    cells = outputs(nb)
    assert sum(len(imgs) for _, imgs in cells) == FIGURES_DRAWN[path.stem]
    assert "running (asked by MAGFACE_NOTEBOOK_RESULTS=quick)" in cells[0][0][0]
    assert (root / "compare_losses_quick" / "compare_losses.json").is_file()   # in the temporary root, not results/


def test_notebook_prose_types_no_durations_and_says_how_the_ablation_band_is_set():
    """Prose that states a measurement goes stale: durations come from the provenance a notebook prints. The
    ablation notebook describes its config's band: measured ("auto") or fixed, as configs/cpu_synthetic_*.toml says."""
    stale = []
    for path in sorted(FIGURES.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown" and re.search(r"about \d+(\.\d+)? (minutes?|hours?|s)\b", cell.source):
                stale.append(path.name)
    assert not stale, f"notebooks typing a duration in their prose: {stale}"
    band = load_config(str(Path(ROOT) / "configs" / "cpu_synthetic_ablation.toml")).head.params.get("l_a")
    prose = nbformat.read(FIGURES / "ablation.ipynb", as_version=4).cells[0].source
    assert ("measured per cell" in prose) == (band == "auto"), "the ablation notebook misstates how its band is set"
