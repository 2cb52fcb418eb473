"""Checks of named scalar settings (config fields, policy parameters), raising :class:`ConfigError`.

Each names the setting and the value: ``lr=-1.0 must be > 0``. Numbers are ints or floats, never
bools. Policies may import this module (and :mod:`simulator.schema`), nothing else of the simulator.
"""
from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the field."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or a float (not a bool), neither NaN nor infinite."""
    return _is_number(value) and math.isfinite(value)


def check_finite(name: str, value: Any) -> None:
    if not is_finite_number(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")


def check_positive(name: str, value: Any) -> None:
    check_finite(name, value)
    if not value > 0:
        raise ConfigError(f"{name}={value!r} must be > 0")


def check_nonnegative(name: str, value: Any) -> None:
    check_finite(name, value)
    if not value >= 0:
        raise ConfigError(f"{name}={value!r} must be >= 0")


def check_interval(name: str, value: Any, low: float, high: float, *, open_left: bool = False,
                   open_right: bool = False) -> None:
    """A number from ``low`` to ``high``, each end included unless open: ``must be in (0, 1]``."""
    if not _is_number(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    above = low < value if open_left else low <= value
    below = value < high if open_right else value <= high
    if not (above and below):     # NaN is neither
        raise ConfigError(f"{name}={value!r} must be in {'(' if open_left else '['}{low:g}, "
                          f"{high:g}{')' if open_right else ']'}")


def check_probability(name: str, value: Any, *, open_right: bool = False) -> None:
    """In [0, 1] (or [0, 1) with ``open_right``: dropout rates, shares held out)."""
    check_interval(name, value, 0, 1, open_right=open_right)


def check_int_at_least(name: str, value: Any, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")


def check_sizes(name: str, value: Any, *, allow_empty: bool = False) -> None:
    """A list (or tuple) of positive integers: hidden layer sizes."""
    if not (isinstance(value, (tuple, list)) and (value or allow_empty)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ConfigError(f"{name}={value!r} must be a list of positive integers")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be true or false")


def check_temperature(name: str, value: Any) -> None:
    """None (deterministic top-k) or a positive softmax temperature."""
    if value is not None:
        check_positive(name, value)


def check_beta(name: str, value: Any) -> None:
    """Parameters (a, b) of a Beta distribution: two numbers > 0."""
    if not (isinstance(value, tuple) and len(value) == 2
            and all(is_finite_number(v) and v > 0 for v in value)):
        raise ConfigError(f"{name}={value!r} must be two numbers (a, b), both > 0")
