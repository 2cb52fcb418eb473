"""A conformance battery for policies, shipped with the library (like gymnasium's ``check_env``
and scikit-learn's ``parametrize_with_checks``).

``check_policy(factory, train, batch)`` runs every check below on fresh policies from
``factory`` and raises ``AssertionError`` naming the first check that fails:

- ``score`` before ``fit`` raises :class:`~policies.base.NotFittedError`;
- ``fit`` returns the policy itself and leaves ``train`` unchanged;
- ``score`` returns a (B, C) array of finite floats;
- fitting twice with the same seed gives identical scores (a different seed may differ);
- ``fit`` refuses logs that contain oracle (``true_*``) columns, in the impressions or in the
  item or user tables, with a ``ValueError`` naming them;
- ``fit`` on empty logs raises ``ValueError`` or, for a policy that learns nothing from logs
  (random, production), leaves a policy that still scores;
- the policy's module, and every ``policies`` module it imports, imports nothing from
  ``simulator`` except ``simulator.schema`` and ``simulator.checks`` (:data:`ALLOWED_SIMULATOR_MODULES`);
- ``temperature`` is None or positive; ``update`` (if defined) keeps the scores well formed.

Policies that read the world (``requires_world = True``, the oracle) are built by the same
factory; pass ``prepare=lambda p: p.attach(world, state)`` to hand them what they need before
``fit``.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from policies.base import NotFittedError
from simulator.schema import ORACLE_PREFIX, LogData, RankBatch

ALLOWED_SIMULATOR_MODULES = ("simulator.schema", "simulator.checks")
"""What a policy may import from the simulator: the logs' schema, and the checks of named settings that its
parameters share with the config (they read no world)."""

CHECKS = ("not_fitted", "fit_returns_self", "score_shape", "deterministic", "refuses_oracle",
          "empty_logs", "imports", "temperature", "update")


def check_policy(policy_factory: Callable[[], Any], train: LogData, batch: RankBatch, *,
                 prepare: Callable[[Any], Any] | None = None, seed: int = 0) -> list[str]:
    """Run the conformance battery (see the module docstring) on policies from ``policy_factory``.

    Args:
        policy_factory: builds a fresh, unfitted policy (e.g. ``lambda: make_policy("sasrec")``).
        train: observable logs to fit on (no ``true_*`` column).
        batch: requests to score; its candidates must be items of ``train``'s catalogue.
        prepare: called on every new policy before ``fit`` (e.g. to attach the world to a policy
            with ``requires_world = True``).
        seed: seed of the fits.

    Returns:
        The names of the checks that ran (all of :data:`CHECKS`; ``update`` only if the policy
        defines it).

    Raises:
        AssertionError: a check failed; the message names it.
        ValueError: ``train`` contains oracle columns.
    """
    if train.has_oracle:
        raise ValueError("check_policy needs observable training logs; pass train.observable()")

    def new() -> Any:
        policy = policy_factory()
        if prepare is not None:
            prepare(policy)
        return policy

    ran = []
    name = getattr(policy_factory(), "name", repr(policy_factory))

    policy = new()
    try:
        policy.score(batch)
    except NotFittedError:
        pass
    else:
        raise AssertionError(f"[not_fitted] {name}: score() before fit() must raise NotFittedError")
    ran.append("not_fitted")

    before = train.impressions.copy()
    fitted = policy.fit(train, rng=np.random.default_rng(seed))
    _expect(fitted is policy, "fit_returns_self", name, f"fit() must return self, got {type(fitted).__name__}")
    _expect(train.impressions.equals(before), "fit_returns_self", name, "fit() modified the training logs")
    ran.append("fit_returns_self")

    scores = policy.score(batch)
    _expect(isinstance(scores, np.ndarray), "score_shape", name,
            f"score() must return a numpy array, got {type(scores).__name__}")
    _expect(scores.shape == batch.candidates.shape, "score_shape", name,
            f"score() returned shape {scores.shape}, expected {batch.candidates.shape}")
    _expect(np.issubdtype(scores.dtype, np.floating), "score_shape", name,
            f"score() must return floats, got {scores.dtype}")
    _expect(bool(np.isfinite(scores).all()), "score_shape", name,
            f"score() returned {int((~np.isfinite(scores)).sum())} non-finite value(s)")
    ran.append("score_shape")

    again = new().fit(train, rng=np.random.default_rng(seed)).score(batch)
    _expect(np.array_equal(scores, again), "deterministic", name,
            f"fitting twice with seed {seed} gave different scores (max difference "
            f"{float(np.max(np.abs(scores - again))):.3g})")
    new().fit(train, rng=np.random.default_rng(seed + 1)).score(batch)   # may differ; must run
    ran.append("deterministic")

    for table, frame in (("impressions", _with_oracle(train.impressions, "true_p_satisfied")),
                         ("items", _with_oracle(train.items, "true_quality")),
                         ("users", _with_oracle(train.users, "true_willingness"))):
        leaky = LogData(**{**{"impressions": train.impressions, "items": train.items, "users": train.users},
                           table: frame})
        try:
            new().fit(leaky, rng=np.random.default_rng(seed))
        except ValueError as err:
            _expect("observable data only" in str(err) and ORACLE_PREFIX in str(err), "refuses_oracle", name,
                    f"fit() on logs with an oracle column in {table} must raise ValueError('policies "
                    f"must be given observable data only; got oracle column(s) ...'), got {err!r}")
        else:
            raise AssertionError(f"[refuses_oracle] {name}: fit() accepted logs with an oracle "
                                 f"column in the {table} table")
    ran.append("refuses_oracle")

    empty = LogData(train.impressions.iloc[:0], train.items, train.users)
    try:
        fresh = new().fit(empty, rng=np.random.default_rng(seed))
    except ValueError:
        pass
    else:   # a policy that learns nothing from logs may accept them, and must then still score
        out = fresh.score(batch)
        _expect(out.shape == batch.candidates.shape and bool(np.isfinite(out).all()), "empty_logs", name,
                "fit() on empty logs must raise ValueError or leave a policy that scores")
    ran.append("empty_logs")

    bad = simulator_imports(type(policy))
    _expect(not bad, "imports", name, f"imports from the simulator beyond {', '.join(ALLOWED_SIMULATOR_MODULES)}: {bad}")
    ran.append("imports")

    t = getattr(policy, "temperature", "missing")
    _expect(t is None or (isinstance(t, (int, float)) and t > 0), "temperature", name,
            f"temperature must be None or > 0, got {t!r}")
    ran.append("temperature")

    if callable(getattr(policy, "update", None)):
        out = policy.update(LogData(train.impressions.iloc[len(train.impressions) // 2:].reset_index(drop=True),
                                    train.items, train.users))
        _expect(out is None, "update", name, f"update() must return None, got {type(out).__name__}")
        after = policy.score(batch)
        _expect(after.shape == batch.candidates.shape and bool(np.isfinite(after).all()), "update", name,
                "score() after update() must stay (B, C) and finite")
        ran.append("update")
    return ran


def _expect(ok: bool, check: str, name: str, message: str) -> None:
    if not ok:
        raise AssertionError(f"[{check}] {name}: {message}")


def _with_oracle(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    out = frame.copy()
    out[column] = 0.5
    return out


def simulator_imports(cls: type) -> dict[str, set[str]]:
    """``{module file: imported simulator modules}`` beyond :data:`ALLOWED_SIMULATOR_MODULES`, for the module
    defining ``cls`` and every ``policies`` module it imports (transitively)."""
    start = inspect.getsourcefile(cls)
    if start is None:
        return {}
    bad: dict[str, set[str]] = {}
    todo, seen = [Path(start)], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            if module.startswith("simulator") and module not in ALLOWED_SIMULATOR_MODULES:
                bad.setdefault(path.name, set()).add(module)
            elif module == "policies" or module.startswith("policies."):
                try:
                    spec = importlib.util.find_spec(module)
                except ModuleNotFoundError:   # "from policies import name" where name is not a module
                    continue
                if spec is not None and spec.origin and spec.origin.endswith(".py"):
                    todo.append(Path(spec.origin))
    return bad


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "policies":   # "from policies import data" imports policies.data
                names |= {f"policies.{a.name}" for a in node.names}
    return names
