"""The policy protocol and the registry that lets configs and the CLI name policies.

A policy learns from logs (``fit``) and scores batches of page requests (``score``). Policies see
only observable data: :class:`simulator.schema.LogData` without ``true_*`` columns and the
platform's feature store through :class:`simulator.schema.RankBatch`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

from policies.params import ParameterError, check_known
from simulator.schema import LogData, RankBatch


class NotFittedError(RuntimeError):
    """``score`` was called before ``fit``."""


class UnknownPolicyError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@runtime_checkable
class Policy(Protocol):
    """Scores candidates for page requests.

    Attributes:
        name: registered name.
        temperature: ``None`` for a deterministic top-k ranking of the scores; a float for a
            stochastic Plackett-Luce ranking with softmax(score / temperature), whose per-position
            propensities are logged.

    Optional: ``update(new: LogData, *, epochs: int | None = None) -> None``, online learning from
    a bucket's new logs (``epochs`` passes; None: the policy's own ``update_epochs``). Under the
    A/B runner's ``learning = "update"`` every policy that has it gets its own bucket's new logs
    every ``update_interval_s`` with the experiment's ``update_epochs``; every policy that trains
    a model has one (sasrec, sasrec_n, sine, saqrec, usm, easq).
    """
    name: str
    temperature: float | None

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self: ...

    def score(self, batch: RankBatch) -> np.ndarray: ...   # (B, C) float


_REGISTRY: dict[str, tuple[Callable[..., Any], str]] = {}


def register_policy(name: str, description: str) -> Callable[[type], type]:
    """Class decorator: register a policy under ``name`` with a one-line description."""
    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"policy name {name!r} is already registered")
        _REGISTRY[name] = (cls, description)
        cls.name = name
        return cls
    return deco


def resolve_update_epochs(epochs: object, default: int) -> int:
    """The passes an ``update(new, epochs=...)`` call takes: ``epochs``, or the policy's own
    ``update_epochs`` when it is None; a clear error unless it is an integer >= 0."""
    value = default if epochs is None else epochs
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"epochs={value!r} must be an integer >= 0 (or None: the policy's update_epochs)")
    return int(value)


def append_logs(seen: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The impressions an ``update()`` has seen so far with ``new``'s appended (``seen``'s
    columns, a fresh index); an error names the columns ``new`` lacks."""
    missing = [c for c in seen.columns if c not in new.columns]
    if missing:
        raise ValueError(f"new logs lack column(s) {', '.join(map(repr, missing))} that the training logs had")
    return pd.concat([seen, new[seen.columns]], ignore_index=True)


def available_policies() -> dict[str, str]:
    """Registered policy names with their one-line descriptions."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def policy_class(name: str) -> type | None:
    """The class registered as ``name``, or None for an unknown name."""
    entry = _REGISTRY.get(name)
    return entry[0] if entry else None


def is_oracle(name: str) -> bool:
    """Whether the registered policy ``name`` reads the ground truth (an upper bound, not deployable)."""
    return bool(getattr(policy_class(name), "is_oracle", False))


def make_policy(name: str, **params: Any) -> Any:
    """Build a registered policy by name; unknown names and parameters are clear errors."""
    try:
        cls, _ = _REGISTRY[name]
    except KeyError:
        raise UnknownPolicyError(
            f"unknown policy {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None
    if dataclasses.is_dataclass(cls):
        check_known(name, cls, params)
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:     # a policy's own check is a parameter error too (exit 2)
        text = str(err)
        raise ParameterError(text if text.startswith(f"{name}: ") else f"{name}: {text}") from None


def check_fitted(policy: Any, attr: str = "fitted_") -> None:
    if not getattr(policy, attr, False):
        raise NotFittedError(f"policy {policy.name!r} must be fitted before score(); call fit() first")


def check_ids(ids: Any, n: int, what: str = "candidate item id", table: str = "catalogue") -> np.ndarray:
    """``ids`` as an array, each checked to be in ``[0, n)``; a ValueError names the first one
    outside (e.g. ``candidate item id 7000 is outside the fitted catalogue [0, 6000)``)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)]
        raise ValueError(f"{what} {int(bad[0])} is outside the fitted {table} [0, {n})")
    return ids
