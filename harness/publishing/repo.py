"""The one place that says where the repository's tracked outputs live: README.md, paper_repro.md, docs/, figures/
and results/published/. Only publishing and the report generator write there; everything else writes into a run's
own folder. The checkout is the one `--repo` names, else the git checkout around the current folder, so the suite
works from any install (editable or not) as long as the command runs inside a checkout."""
from __future__ import annotations

import os
import subprocess

MARKERS = ("paper_repro.md", os.path.join("figures", "tables"))   # what makes a folder this project's checkout


def checkout(explicit: str | None = None) -> str:
    """The repository root: `explicit` (a --repo option) if given, else `git rev-parse --show-toplevel` from the
    current folder. ValueError naming the folder and what was expected when it is not a checkout of this suite."""
    if explicit:
        root = os.path.abspath(explicit)
    else:
        try:
            root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            raise ValueError(f"{os.getcwd()} is not inside a git checkout of magface-bench: publishing and the "
                             "report write the repository's README, docs/, figures/ and results/published/; run "
                             "the command inside a checkout, or name one with --repo DIR") from None
    missing = [m for m in MARKERS if not os.path.exists(os.path.join(root, m))]
    if missing:
        raise ValueError(f"{root} is not a checkout of magface-bench (it lacks {', '.join(missing)}); run the "
                         "command inside one, or name one with --repo DIR")
    return root


def published_root(repo: str) -> str:
    return os.path.join(repo, "results", "published")


def gallery(repo: str) -> str:
    """figures/: the committed figures the README shows; publishing copies a benchmark's figures there."""
    return os.path.join(repo, "figures")
