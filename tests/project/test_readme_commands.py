"""Every `python -m harness`, `python -m theory`, `python benchmarks/...` and `torchrun ... -m harness` command in
README.md and docs/*.md (code blocks and inline code) runs with --dry-run (--help where there is none), so a
documented command cannot rot. Real-data paths (/data/faces_emore) point at a tiny insightface export made here."""
import importlib
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from support import ROOT

from harness.data import SyntheticConfig, export_insightface, load_or_generate

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
README = os.path.join(ROOT, "README.md")
REAL_DATA = "/data/faces_emore"
NO_DRY_RUN = {("harness", "evaluate"), ("harness", "publish"), ("harness", "report"), ("harness", "embed"),
              ("harness", "align"), ("theory", None)}   # run with --help


def readme_commands() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    pages = [README] + sorted(os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))
    text = "\n".join(Path(p).read_text(encoding="utf-8") for p in pages)
    pieces = [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S)
              if lang in ("", "bash", "sh")]   # shell blocks (text and python ones hold no commands)
    pieces += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    commands = []
    for piece in pieces:
        for line in piece.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] in ("python", "torchrun") and target(words)[0]:
                    commands.append(" ".join(shlex.quote(w) for w in words))
    return list(dict.fromkeys(commands))


def target(words):
    """(module, sub-command or None, argv) of a README command, or (None, None, None) for other commands."""
    if "-m" in words:
        i = words.index("-m")
        module = words[i + 1]
        if module in ("harness", "theory"):
            rest = words[i + 2:]
            sub = rest[0] if module == "harness" and rest else None
            return module, sub, rest
    elif words[0] == "python" and len(words) > 1 and words[1].startswith("benchmarks/"):
        return "benchmarks." + os.path.splitext(os.path.basename(words[1]))[0], None, words[2:]
    return None, None, None


COMMANDS = readme_commands()


def test_readme_has_the_main_commands():
    joined = "\n".join(COMMANDS)
    for needed in ("python benchmarks/ablation.py", "python -m harness train", "python -m harness sweep",
                   "python benchmarks/compare_losses.py", "python benchmarks/quality_vs_magnitude.py", "torchrun"):
        assert needed in joined, needed


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """A tiny insightface export with the verification packs the README names."""
    root = tmp_path_factory.mktemp("faces_emore")
    faces = load_or_generate(SyntheticConfig(size=32, train_identities=4, train_images_per_identity=2,
                                             eval_identities=20, eval_images_per_identity=2, folds=10,
                                             pairs_per_fold=2), cache_dir=str(root / "cache"))
    export_insightface(faces, str(root))
    for name in ("lfw.bin", "cfp_fp.bin", "agedb_30.bin"):
        os.link(root / "synthetic_pairs.bin", root / name)
    return str(root)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_dry_runs(command, real_data, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    words = shlex.split(command.replace(REAL_DATA, real_data))
    module, sub, argv = target(words)
    config = next((argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "--config"), None)
    if config and REAL_DATA in Path(config).read_text():   # a config naming the real data inside the file
        argv += ["--set", f'data.path="{real_data}"', "--set", f'data.eval_bins=["{real_data}/lfw.bin"]']
    argv = argv + (["--help"] if (module, sub) in NO_DRY_RUN else ["--dry-run"])
    main = importlib.import_module(module if module.startswith("benchmarks") else f"{module}.__main__").main
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), f"{command} -> exit {exc.code}: {capsys.readouterr().err[-2000:]}"
    out = capsys.readouterr().out
    assert out.strip(), f"{command} printed nothing"
    assert "Traceback" not in out
