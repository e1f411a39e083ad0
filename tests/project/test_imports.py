"""The project's import graph, read with ast (imports inside functions count): no cycles, the layers point one way,
and a function-level import says why it is not at the top (an optional or heavy dependency)."""
import ast
import os
from pathlib import Path

import pytest
from support import ROOT

PACKAGES = ("losses", "theory", "harness", "benchmarks", "figures")


def modules() -> dict:
    found = {}
    for pkg in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()
TEST_FILES = sorted(str(p) for p in Path(ROOT, "tests").rglob("*.py"))


def imports(name: str, path: str):
    """(imported project module, line, at module level?) for every import statement of a module."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        else:
            continue
        for t in targets:   # every imported name (from . import a, b: both a and b)
            parts = t.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            dep = ".".join(parts)
            if dep and dep != name and not name.startswith(dep + "."):
                yield dep, node.lineno, id(node) in top


GRAPH = {m: {d for d, _, _ in imports(m, p)} for m, p in MODULES.items()}


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("package,allowed", [("losses", {"losses"}), ("theory", {"theory"}),
                                             ("harness", {"harness", "losses", "theory"})])
def test_layers_point_one_way(package, allowed):
    wrong = {f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] == package
             for d in deps if d.split(".")[0] not in allowed}
    assert not wrong, f"{package} may import only {sorted(allowed)}: {sorted(wrong)}"


# harness's rooms (a package, or a single module) from the bottom up: a room imports only rooms below it.
HARNESS_ROOMS = ["locks", "files", "devices", "data", "provenance", "measures", "config_checks", "config",
                 "checkpoint_io", "models", "source", "evaluation", "training", "sweeps", "publishing", "plots",
                 "bench_cli", "commands", "__main__"]


def room(module: str) -> str:
    return module.split(".")[1] if module.startswith("harness.") else module.split(".")[0]


def test_harness_rooms_import_only_rooms_below_them():
    found = {room(m) for m in GRAPH if m.startswith("harness.")}
    assert found <= set(HARNESS_ROOMS), f"rooms not placed in HARNESS_ROOMS: {sorted(found - set(HARNESS_ROOMS))}"
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.startswith("harness.") for d in deps
                    if d.startswith("harness.") and room(d) != room(m)
                    and HARNESS_ROOMS.index(room(d)) > HARNESS_ROOMS.index(room(m)))
    assert not upward, f"imports pointing up the rooms' order: {upward}"


def test_no_private_name_is_imported_from_another_module():
    """A leading underscore means "this module's own": no other module (tests included) imports it."""
    found = []
    for path in [*MODULES.values(), *TEST_FILES]:
        for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{os.path.relpath(path, ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, f"private names imported across modules: {found}"


def test_function_level_imports_say_why():
    """An import inside a function (of anything) needs a comment on its line or the line above."""
    silent = []
    for path in MODULES.values():
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
                        if "#" not in here and not above.strip().startswith("#"):
                            silent.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {here.strip()}")
    assert not silent, "function-level imports without a comment saying why:\n" + "\n".join(sorted(set(silent)))
