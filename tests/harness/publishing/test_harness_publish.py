"""harness.publishing.publish: what a published folder holds (tables, run metadata, arrays on request, never
checkpoints), its provenance, and the refusals: unfinished or failed runs, a dirty tree, a published tree over its
budget."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.publishing import publish as publish_module
from harness.publishing.publish import PROVENANCE, publish, run_folder

GIT = ["-c", "user.name=t", "-c", "user.email=t@t"]


def project(path):
    """The files that make a folder a checkout of the suite (harness.publishing.repo.MARKERS)."""
    (path / "figures" / "tables").mkdir(parents=True, exist_ok=True)
    (path / "paper_repro.md").write_text("report\n")
    return str(path)


def git_repo(path, ignore="*\n"):
    """A checkout of the suite at `path` with one commit; by default everything in it is ignored (a clean tree)."""
    project(path)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / ".gitignore").write_text(ignore)
    subprocess.run(["git", "-C", str(path), *GIT, "add", "-f", ".gitignore"], check=True)
    subprocess.run(["git", "-C", str(path), *GIT, "commit", "-q", "-m", "start"], check=True)
    return str(path)


def fake_benchmark(tmp_path, runs=("a-1", "b-2"), finished=True, failed=None):
    """A finished benchmark folder as harness.sweeps leaves it: tables, and per run its files and a checkpoint."""
    out = tmp_path / "bench"
    rows = []
    for name in runs:
        run = out / "runs" / name
        for sub in ("checkpoints", "eval", "dumps"):
            (run / sub).mkdir(parents=True)
        (run / "checkpoints" / "final.pt").write_bytes(b"x" * 1000)
        (run / "config.json").write_text("{}")
        (run / "environment.json").write_text(json.dumps({"git_commit": "abc", "git_dirty": False}))
        (run / "eval" / "metrics.json").write_text("{}")
        np.savez(run / "eval" / "synthetic.npz", norms=np.arange(3.0))
        for step in (5, 10):
            np.savez(run / "dumps" / f"step_{step:08d}.npz", norms=np.arange(2.0))
        if finished:
            (run / "result.json").write_text(json.dumps({"seconds": 12.5, "fingerprint": f"fp-{name}"}))
        rows.append({"run": f"somewhere/else/runs/{name}", "name": name, "failed": failed if name == runs[0] else None})
    (out / "bench.json").write_text(json.dumps({"sweep": "bench", "runs": rows}))
    (out / "bench.csv").write_text("head,accuracy\nmagface,0.9\n")
    (out / "figure.png").write_bytes(b"png")
    return out


def test_publish_copies_tables_and_run_metadata_never_checkpoints(tmp_path):
    repo = git_repo(tmp_path)
    out = fake_benchmark(tmp_path)
    dest = publish(str(out), root=str(tmp_path / "published"), repo=repo, command="python bench.py")
    files = sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs)
    assert files == ["bench.csv", "bench.json", PROVENANCE,
                     "runs/a-1/config.json", "runs/a-1/environment.json", "runs/a-1/eval/metrics.json",
                     "runs/a-1/result.json",
                     "runs/b-2/config.json", "runs/b-2/environment.json", "runs/b-2/eval/metrics.json",
                     "runs/b-2/result.json"]
    prov = json.loads(Path(os.path.join(dest, PROVENANCE)).read_text())
    assert prov["command"] == "python bench.py" and prov["name"] == "bench" and prov["training_seconds"] == 25.0
    assert (tmp_path / "figures" / "figure.png").read_bytes() == b"png"   # the benchmark's figure, into the gallery
    assert [r["fingerprint"] for r in prov["runs"]] == ["fp-a-1", "fp-b-2"]
    assert prov["runs"][0]["trained_at_commit"] == "abc" and prov["packages"]["numpy"] == np.__version__
    assert run_folder(dest, {"run": "somewhere/else/runs/b-2/"}) == os.path.join(dest, "runs", "b-2")


def test_arrays_bring_the_evaluation_arrays_and_only_the_last_dump(tmp_path):
    dest = publish(str(fake_benchmark(tmp_path)), arrays=True, root=str(tmp_path / "published"),
                   repo=git_repo(tmp_path))
    assert sorted(os.listdir(os.path.join(dest, "runs", "a-1", "dumps"))) == ["step_00000010.npz"]
    assert sorted(os.listdir(os.path.join(dest, "runs", "a-1", "eval"))) == ["metrics.json", "synthetic.npz"]


def test_unfinished_and_failed_runs_are_refused(tmp_path):
    git_repo(tmp_path)
    with pytest.raises(ValueError, match="not finished.*runs without a result"):
        publish(str(fake_benchmark(tmp_path, finished=False)), root=str(tmp_path / "p"), repo=str(tmp_path))
    with pytest.raises(ValueError, match=r"failed runs \['a-1'\]"):
        publish(str(fake_benchmark(tmp_path / "f", failed="boom")), root=str(tmp_path / "p"), repo=str(tmp_path))
    assert not (tmp_path / "p").exists() or not os.listdir(tmp_path / "p")


def test_a_dirty_tree_is_refused_unless_allowed_and_then_recorded(tmp_path):
    git_repo(tmp_path, ignore="")
    out = fake_benchmark(tmp_path)   # untracked files: a dirty tree
    with pytest.raises(ValueError, match="uncommitted changes.*--allow-dirty"):
        publish(str(out), root=str(tmp_path / "published"), repo=str(tmp_path))
    dest = publish(str(out), root=str(tmp_path / "published"), repo=str(tmp_path), allow_dirty=True)
    prov = json.loads(Path(os.path.join(dest, PROVENANCE)).read_text())
    assert prov["dirty"] is True and prov["dirty_files"]


def test_over_the_budget_nothing_changes(tmp_path, monkeypatch):
    git_repo(tmp_path)
    root = tmp_path / "published"
    first = publish(str(fake_benchmark(tmp_path)), root=str(root), repo=str(tmp_path))
    before = Path(os.path.join(first, PROVENANCE)).read_text()
    monkeypatch.setattr(publish_module, "BUDGET_BYTES", 100)
    with pytest.raises(ValueError, match="over its budget"):
        publish(str(fake_benchmark(tmp_path / "again")), arrays=True, root=str(root), repo=str(tmp_path))
    assert Path(os.path.join(first, PROVENANCE)).read_text() == before
    assert sorted(os.listdir(root)) == ["bench"]    # no temporary folder left behind


def test_a_folder_without_tables_is_refused_and_a_benchmark_without_runs_is_published(tmp_path):
    git_repo(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no tables to publish"):
        publish(str(tmp_path / "empty"), root=str(tmp_path / "p"), repo=str(tmp_path))
    with pytest.raises(ValueError, match="no such folder"):
        publish(str(tmp_path / "nowhere"), root=str(tmp_path / "p"), repo=str(tmp_path))
    speed = tmp_path / "head_speed"
    speed.mkdir()
    (speed / "head_speed.json").write_text(json.dumps({"rows": [{"case": "bare", "median_ms": 1.0}]}))
    dest = publish(str(speed), root=str(tmp_path / "p"), repo=str(tmp_path), command="python benchmarks/head_speed.py")
    assert sorted(os.listdir(dest)) == ["head_speed.json", PROVENANCE]
    assert json.loads(Path(os.path.join(dest, PROVENANCE)).read_text())["runs"] == []


def test_what_publishing_itself_writes_is_not_dirt(tmp_path):
    """This benchmark's published folder, gallery PNGs, and documents or notebooks whose only changes are generated
    tables or outputs do not block the next publish; another benchmark's folder or changed prose does."""
    repo = git_repo(tmp_path, ignore="bench/\n")
    (tmp_path / "README.md").write_text("intro\n<!-- report:t -->\nold\n<!-- /report:t -->\n")
    nb = {"cells": [{"cell_type": "code", "source": "1", "outputs": []}], "metadata": {}, "nbformat": 4,
          "nbformat_minor": 5}
    (tmp_path / "figures" / "a.ipynb").write_text(json.dumps(nb))
    subprocess.run(["git", "-C", repo, *GIT, "add", "README.md", "paper_repro.md", "figures/a.ipynb"], check=True)
    subprocess.run(["git", "-C", repo, *GIT, "commit", "-q", "-m", "docs"], check=True)
    out = fake_benchmark(tmp_path)
    root = tmp_path / "results" / "published"
    (tmp_path / "figures" / "bench.png").write_bytes(b"png")
    (tmp_path / "README.md").write_text("intro\n<!-- report:t -->\nnew numbers\n<!-- /report:t -->\n")
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1"}]
    (tmp_path / "figures" / "a.ipynb").write_text(json.dumps(nb))
    publish(str(out), root=str(root), repo=repo)
    publish(str(out), root=str(root), repo=repo)     # its own earlier output is not dirt either
    (root / "other").mkdir()
    (root / "other" / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="results/published/other/x.csv"):
        publish(str(out), root=str(root), repo=repo)
    (root / "other" / "x.csv").unlink()
    (tmp_path / "README.md").write_text("changed intro\n<!-- report:t -->\nnew\n<!-- /report:t -->\n")
    with pytest.raises(ValueError, match="README.md"):
        publish(str(out), root=str(root), repo=repo)


def test_outside_git_publishing_needs_allow_dirty(tmp_path):
    project(tmp_path)
    out = fake_benchmark(tmp_path)    # tmp_path is no git checkout
    with pytest.raises(ValueError, match="not a git checkout"):
        publish(str(out), root=str(tmp_path / "p"), repo=str(tmp_path))
    dest = publish(str(out), root=str(tmp_path / "p"), repo=str(tmp_path), allow_dirty=True)
    assert json.loads(Path(os.path.join(dest, PROVENANCE)).read_text())["published_commit"] is None


def test_a_crashed_publish_is_recovered_and_a_failed_check_replaces_nothing(tmp_path):
    repo = git_repo(tmp_path)
    root = tmp_path / "p"
    dest = publish(str(fake_benchmark(tmp_path)), root=str(root), repo=repo)
    os.replace(dest, f"{dest}.old-123")             # a crash between the two renames of a later publish
    (root / ".bench.tmp-999").mkdir()               # and a temporary folder a killed publish left

    def refuse(name, folder):
        assert name == "bench" and os.path.isfile(os.path.join(folder, PROVENANCE))
        raise ValueError("tables do not render")
    with pytest.raises(ValueError, match="tables do not render"):
        publish(str(fake_benchmark(tmp_path / "again")), root=str(root), repo=repo, before_swap=refuse)
    assert sorted(os.listdir(root)) == ["bench"]    # recovered, nothing replaced, no leftovers
    provenance = json.loads(Path(os.path.join(dest, PROVENANCE)).read_text())
    assert provenance["source"] == os.path.normpath(str(tmp_path / "bench"))
