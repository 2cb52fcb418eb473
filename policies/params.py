"""Policy hyperparameters: nested groups read from TOML tables, and the errors that name the field.

A paper policy's hyperparameters are a few frozen dataclasses (e.g. ``encoder``, ``train``) held
by the policy; in a config they are tables: ``params = { encoder = { d_model = 16 }, train = {
max_epochs = 1 } }``. :func:`nested` builds a group from such a table and refuses an unknown key.
The groups check their values with :mod:`simulator.checks` (as config fields are checked);
:func:`nested` and the policies' constructors turn a :class:`~simulator.checks.ConfigError` into a
:class:`ParameterError` naming the path, so a bad value stops ``satbed ab`` before any simulation
(exit code 2).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from simulator.checks import ConfigError

T = TypeVar("T")


class ParameterError(ConfigError):
    """A policy parameter is invalid; the message names it (``saqrec: train.lr=-1.0 must be > 0``).

    A :class:`ConfigError`, so every command that reports a bad config reports it too (exit code 2).
    """


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
    except ConfigError as err:     # a ParameterError too
        raise ParameterError(f"{owner}: {field}.{err}") from None


# ----------------------------------------------------------------------------- policy-specific checks
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
