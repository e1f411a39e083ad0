"""Re-execute the notebooks in figures/ against the published results and store their outputs in place, so JupyterLab
and a repository browser show the published figures before anything runs. Publishing a benchmark calls this; run it
by hand after editing a notebook:

    python figures/refresh_notebooks.py                  # every notebook
    python figures/refresh_notebooks.py ablation erc     # some of them
    python figures/refresh_notebooks.py --gallery        # also redraw the gallery PNGs from the published results
                                                         #   (after a change to a figure's drawing code)
"""
from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

FIGURES = Path(__file__).resolve().parent


def execute(path: Path, timeout: int = 600, results_root: Path | None = None):
    """The notebook at `path` executed headless in figures/ against the published results under results_root
    (default: this repository's results/, whatever MAGFACE_RESULTS says), nothing written."""
    nb = nbformat.read(path, as_version=4)
    env = {"MAGFACE_NOTEBOOK_RESULTS": "published", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "MAGFACE_RESULTS": str(results_root or FIGURES.parent / "results")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(FIGURES)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return merge_streams(nb)


def merge_streams(nb):
    """Consecutive stdout (stderr) outputs of a cell joined into one: the kernel splits a cell's printing by timing,
    so the stored notebook would change from run to run without this."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if (merged and out.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                    and merged[-1]["name"] == out["name"]):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        if "outputs" in cell:
            cell["outputs"] = merged
    return nb


def write_gallery(nb) -> list:
    """Each figure the executed notebook drew (tagged with its gallery name by results.png) written to figures/NAME,
    atomically: the published figures redrawn from the published results, nothing trained. Returns the names."""
    names = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("image/png", {}).get("figure")
            if name and "image/png" in out.get("data", {}):
                tmp = FIGURES / f".{name}.tmp-{os.getpid()}"
                tmp.write_bytes(base64.b64decode(out["data"]["image/png"]))
                os.replace(tmp, FIGURES / name)
                names.append(name)
    return names


def refresh(names=None, gallery: bool = False) -> list:
    """Execute and rewrite (atomically) the named notebooks, or all, and with gallery their figures into figures/;
    returns the paths written."""
    paths = [FIGURES / f"{n}.ipynb" for n in names] if names else sorted(FIGURES.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook(s): {missing}; expected names of figures/*.ipynb")
    for path in paths:
        nb = execute(path)
        tmp = path.with_suffix(f".tmp-{os.getpid()}.ipynb")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
        print(f"refreshed {path.relative_to(FIGURES.parent)}")
        if gallery:
            print(f"  redrew {', '.join(write_gallery(nb)) or 'no gallery figure'}")
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    ap.add_argument("--gallery", action="store_true", help="also write each drawn figure to figures/ (the gallery)")
    args = ap.parse_args(argv)
    try:
        refresh(args.names, args.gallery)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
