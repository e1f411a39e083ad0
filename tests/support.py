"""What several test modules share (tests/ is on sys.path, see conftest.py): the repository root, the tiny run
config of a test folder, a sweep spec written next to a test."""
from __future__ import annotations

import os

from tiny import TINY

from harness.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "cpu_synthetic_quick.toml")


def tiny(tmp_path, *extra):
    """The tiny run config (tiny.TINY) writing into tmp_path/run, its data cached under tmp_path/cache."""
    return load_config(None, TINY + [f'out="{tmp_path / "run"}"', f'data.cache_dir="{tmp_path / "cache"}"', *extra])


def write_spec(tmp_path, text: str, name: str = "spec.toml"):
    """A sweep spec named "t" on configs/cpu_synthetic_quick.toml with `text` after its header; returns its path."""
    path = tmp_path / name
    path.write_text(f'name = "t"\nbase = "{BASE}"\n' + text)
    return str(path)
