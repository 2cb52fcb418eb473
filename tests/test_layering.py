"""The import graph: the packages are layers that import only downwards, and no modules form a cycle.

estimators <- simulator <- policies <- experiments <- studies <- satbed (the CLI). Every ``import``
statement counts, also those inside functions (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("estimators", "simulator", "policies", "experiments", "studies", "satbed")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _deferred(stmt: ast.stmt) -> bool:
    """A statement whose imports do not run when the module is imported."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The project modules that ``path`` imports (``from a.b import c`` counts a.b and a.b.c)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:      # imports run at import time: also under a module-level try/if, not in functions,
        nodes = [n for stmt in tree.body if not _deferred(stmt) for n in ast.walk(stmt)]   # classes, TYPE_CHECKING
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in LAYERS}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def test_every_layer_exists_and_is_a_package():
    for layer in LAYERS:
        assert (ROOT / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    below = set(LAYERS[:LAYERS.index(layer) + 1])
    bad = []
    for name, path in _modules().items():
        if name.split(".")[0] != layer:
            continue
        for target in sorted(_imports(path, top_level_only=False)):
            if target.split(".")[0] not in below:
                bad.append(f"{name} imports {target}")
    assert not bad, f"upward imports from {layer}:\n" + "\n".join(bad)


def test_no_module_level_import_cycles():
    modules = _modules()
    graph = {name: {t for t in _imports(path, top_level_only=True) if t in modules and t != name}
             for name, path in modules.items()}
    for name in graph:      # a package's __init__ is imported before any of its modules: not a cycle
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_crosses_a_package():
    """``from pkg.mod import _name`` from another top-level package reaches into a private name."""
    bad = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == name.split(".")[0]:
                    continue
                bad += [f"{name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The test above can fail: a simulator module that imports policies is reported."""
    bad = tmp_path / "simulator" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from policies import make_policy\n")
    assert "policies" in _imports(bad, top_level_only=False)
    assert "policies" not in _imports(bad, top_level_only=True)
