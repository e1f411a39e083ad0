"""The README stays a first screen (short, narrow lines), and every relative link of README.md, paper_repro.md and
docs/ points at a file of the repository (pages moved into docs/ keep working links)."""
import os
import re
import subprocess
import sysconfig
from pathlib import Path

from support import ROOT as SUPPORT_ROOT

from harness.publishing.report import documents

ROOT = Path(SUPPORT_ROOT)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)|src=\"(?P<src>[^\"]+)\"|^\[\w+\]: (?P<ref>\S+)", re.M)


def test_readme_is_short_and_narrow():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250: move the detail into docs/)"
    wide = [i for i, line in enumerate(lines, 1) if len(line) > 120]
    assert not wide, f"README.md lines over 120 characters: {wide}"


def test_every_relative_link_resolves():
    broken = []
    for name in documents(str(ROOT)):
        page = ROOT / name
        for m in LINK.finditer(page.read_text(encoding="utf-8")):
            target = (m["target"] or m["src"] or m["ref"]).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{name}: {target}")
    assert not broken, f"links to missing files: {broken}"


def test_the_console_script_runs_the_harness_cli():
    """`magface-bench` (pyproject's [project.scripts]) is `python -m harness` under its own name."""
    exe = os.path.join(sysconfig.get_path("scripts"), "magface-bench")
    assert os.path.isfile(exe), f"{exe} is missing: pip install -e . installs it"
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: magface-bench") and "sweep" in done.stdout
