"""Package boundaries: estimators imports nothing of satbed's and never seeds global randomness."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import estimators

PACKAGE_DIR = Path(estimators.__file__).parent
FORBIDDEN = ("simulator", "policies", "studies")
GLOBAL_SEEDING = {("np", "random", "seed"), ("numpy", "random", "seed"), ("random", "seed"),
                  ("torch", "manual_seed")}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), filename=str(path)))
            for path in sorted(PACKAGE_DIR.glob("*.py"))]


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def test_no_import_of_simulator_or_policies():
    offending = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 1:  # "from ..simulator import x" climbs out of the package
                    offending.append(f"{path.name}: relative import level {node.level}")
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            offending += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offending, offending


def test_importing_estimators_loads_no_other_satbed_package():
    code = ("import sys, estimators; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_global_seeding_or_legacy_numpy_random():
    calls = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                legacy = name[:2] in {("np", "random"), ("numpy", "random")} and name[2:] not in {
                    ("default_rng",), ("Generator",), ("SeedSequence",)}
                if name in GLOBAL_SEEDING or legacy:
                    calls.append(f"{path.name}:{node.lineno} {'.'.join(name)}")
    assert not calls, calls


def test_public_api_is_exported_and_documented():
    for name in estimators.__all__:
        obj = getattr(estimators, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
    exported = {n for n in dir(estimators) if not n.startswith("_")}
    modules = {"ab", "base", "calibration", "ope", "pooling", "propensity", "ranking", "rates", "registry",
               "checks", "synthetic", "obp_adapter"}
    assert exported - modules == set(estimators.__all__)
