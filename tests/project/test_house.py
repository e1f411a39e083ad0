"""harness/ keeps the house rules of issue 22: no module over 400 lines, no function over 60 lines or with more
than 8 parameters (a dataclass's constructor is not a written function). Complexity (at most 12) is ruff's C901,
configured in pyproject.toml and run by CI."""
import ast
import os
from pathlib import Path

from support import ROOT

HARNESS = Path(ROOT) / "harness"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 400, 60, 8


def harness_modules():
    return sorted(p for p in HARNESS.rglob("*.py"))


def parameters(fn) -> int:
    a = fn.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return n - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)


def test_no_module_over_400_lines():
    long = {os.path.relpath(p, HARNESS): n for p in harness_modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"harness modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_60_lines_or_8_parameters():
    found = []
    for p in harness_modules():
        for fn in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines, params = fn.end_lineno - fn.lineno + 1, parameters(fn)
                if lines > MAX_FUNCTION_LINES or params > MAX_PARAMETERS:
                    found.append(f"{os.path.relpath(p, HARNESS)}:{fn.lineno} {fn.name}: {lines} lines, "
                                 f"{params} parameters")
    assert not found, "functions over the limits:\n" + "\n".join(found)
