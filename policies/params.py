"""Policy hyperparameters: nested groups read from TOML tables, and checks that name the field.

A paper policy's hyperparameters are a few frozen dataclasses (e.g. ``encoder``, ``train``) held
by the policy; in a config they are tables: ``params = { encoder = { d_model = 16 }, train = {
max_epochs = 1 } }``. :func:`nested` builds a group from such a table and refuses an unknown key;
the checks below raise :class:`ParameterError`, whose message names the field, when a policy is
constructed, so a bad value stops ``satbed ab`` before any simulation (exit code 2).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, TypeVar

T = TypeVar("T")


class ParameterError(ValueError):
    """A policy parameter is invalid; the message names it (``saqrec: train.lr=-1.0 must be > 0``)."""


def parameter_names(cls: type) -> list[str]:
    """The constructor parameters of a dataclass (its init fields, in order)."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_known(owner: str, cls: type, keys: Any, prefix: str = "") -> None:
    """Every key is a parameter of ``cls``; else a ParameterError listing the valid ones."""
    names = parameter_names(cls)
    unknown = [k for k in keys if k not in names]
    if unknown:
        raise ParameterError(f"{owner}: {prefix}{unknown[0]} is not a parameter; "
                             f"{prefix.rstrip('.') or owner} takes: {', '.join(names)}")


def nested(owner: str, field: str, cls: type[T], value: Any) -> T:
    """``value`` as the parameter group ``cls``: an instance as is, a table (dict) built key by key.

    Errors name the path: ``usm: train.lr=-1 must be > 0``, ``usm: train.foo is not a parameter``.
    """
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ParameterError(f"{owner}: {field} must be a table of {', '.join(parameter_names(cls))}; "
                             f"got {value!r}")
    check_known(owner, cls, value, prefix=f"{field}.")
    try:
        return cls(**value)
    except ParameterError as err:
        raise ParameterError(f"{owner}: {field}.{err}") from None


# ----------------------------------------------------------------------------- checks
def _number(name: str, value: Any, integral: bool = False) -> None:
    kind = Integral if integral else Real
    if isinstance(value, bool) or not isinstance(value, kind) or (not integral and not math.isfinite(value)):
        raise ParameterError(f"{name}={value!r} must be {'an integer' if integral else 'a finite number'}")


def positive(name: str, value: Any) -> None:
    _number(name, value)
    if not value > 0:
        raise ParameterError(f"{name}={value!r} must be > 0")


def nonnegative(name: str, value: Any) -> None:
    _number(name, value)
    if not value >= 0:
        raise ParameterError(f"{name}={value!r} must be >= 0")


def probability(name: str, value: Any, *, open_right: bool = False) -> None:
    """``value`` in [0, 1] (or [0, 1) with ``open_right``: dropout rates, shares held out)."""
    _number(name, value)
    if not (0 <= value < 1 if open_right else 0 <= value <= 1):
        raise ParameterError(f"{name}={value!r} must be in [0, {'1)' if open_right else '1]'}")


def at_least(name: str, value: Any, low: int) -> None:
    """An integer ``>= low`` (sizes, epochs, counts)."""
    _number(name, value, integral=True)
    if value < low:
        raise ParameterError(f"{name}={value!r} must be an integer >= {low}")


def sizes(name: str, value: Any, *, allow_empty: bool = False) -> None:
    """A sequence of positive integers (hidden layer sizes)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or (not value and not allow_empty):
        raise ParameterError(f"{name}={value!r} must be a list of positive integers")
    for v in value:
        at_least(name, v, 1)


def heads_divide(d_model: int, n_heads: int) -> None:
    """A transformer's width splits evenly over its attention heads."""
    if d_model % n_heads:
        raise ParameterError(f"d_model={d_model} must be divisible by n_heads={n_heads}")


def column_names(name: str, value: Any) -> tuple[str, ...]:
    """A list of item-table column names (a TOML list or a tuple), as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) \
            or not all(isinstance(v, str) for v in value):
        raise ParameterError(f"{name}={value!r} must be a list of item-table column names")
    return tuple(value)


def choice(name: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ParameterError(f"{name}={value!r} must be one of {', '.join(map(repr, options))}")


def flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParameterError(f"{name}={value!r} must be true or false")


def temperature(name: str, value: Any) -> None:
    """None (deterministic top-k) or a positive softmax temperature."""
    if value is not None:
        positive(name, value)
