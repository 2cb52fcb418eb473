"""Argument checks shared by every estimator.

Each check names the argument, the offending value and the bound, and points at the first
offending element, e.g. ``"pscore must be in (0, 1], got 0.0 at index 3"``. Nothing is
clipped or dropped silently: an input an estimator cannot use is a ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np


def _where(mask: np.ndarray) -> str:
    """Format the first ``True`` position of ``mask`` as ``index i`` (or a tuple for 2-D)."""
    idx = tuple(int(i[0]) for i in np.nonzero(mask))
    return f"index {idx[0]}" if len(idx) == 1 else f"index {idx}"


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray, bound: str) -> None:
    if bad.any():
        first = values[tuple(int(i[0]) for i in np.nonzero(bad))]
        raise ValueError(f"{name} must be {bound}, got {float(first)!r} at {_where(bad)}")


def as_float_array(
    name: str, x: object, *, ndim: int = 1, allow_nan: bool = False, min_len: int = 1
) -> np.ndarray:
    """Convert ``x`` to a float64 array of ``ndim`` dimensions and check it.

    Args:
        name: argument name used in error messages.
        x: array-like (numpy array, list, pandas Series / DataFrame).
        ndim: required number of dimensions.
        allow_nan: if False, NaN and ±inf are errors; if True, only ±inf is.
        min_len: minimum length of the first axis.

    Returns:
        A float64 ndarray (a copy only when conversion needs one).
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {exc}") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.shape[0] < min_len:
        if arr.shape[0] == 0:
            raise ValueError(f"{name} must not be empty")
        raise ValueError(f"{name} must have at least {min_len} elements, got {arr.shape[0]}")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    _first_bad(name, arr, bad, "finite")
    return arr


def check_same_length(arrays: Mapping[str, np.ndarray]) -> int:
    """Check that all arrays have the same first-axis length; return it.

    The message names the first pair that differs:
    ``"reward and pscore must have the same length, got 10 and 9"``.
    """
    items = list(arrays.items())
    first_name, first = items[0]
    for name, arr in items[1:]:
        if len(arr) != len(first):
            raise ValueError(
                f"{first_name} and {name} must have the same length, "
                f"got {len(first)} and {len(arr)}"
            )
    return len(first)


def check_pscore(name: str, p: np.ndarray) -> np.ndarray:
    """A propensity must be in (0, 1]: zero means the unit can never be observed."""
    _first_bad(name, p, ~((p > 0) & (p <= 1)), "in (0, 1]")
    return p


def check_probability(name: str, p: np.ndarray) -> np.ndarray:
    """A probability (array) must be in [0, 1]."""
    _first_bad(name, p, ~((p >= 0) & (p <= 1)), "in [0, 1]")
    return p


def check_nonnegative(name: str, x: np.ndarray) -> np.ndarray:
    _first_bad(name, x, x < 0, ">= 0")
    return x


def check_positive(name: str, x: np.ndarray) -> np.ndarray:
    _first_bad(name, x, x <= 0, "> 0")
    return x


def as_binary(name: str, x: object, *, min_len: int = 1) -> np.ndarray:
    """Convert a 0/1 (or bool) array to bool, rejecting any other value."""
    arr = as_float_array(name, x, min_len=min_len)
    _first_bad(name, arr, (arr != 0) & (arr != 1), "0 or 1")
    return arr.astype(bool)


def check_alpha(alpha: object) -> float:
    """Significance level of a two-sided (1 - alpha) interval."""
    if not isinstance(alpha, Real) or isinstance(alpha, bool) or not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_max_weight(max_weight: object) -> float:
    """An importance-weight cap: positive, ``math.inf`` meaning no clipping."""
    if (
        not isinstance(max_weight, Real)
        or isinstance(max_weight, bool)
        or math.isnan(max_weight)
        or max_weight <= 0
    ):
        raise ValueError(f"max_weight must be > 0 (inf for no clipping), got {max_weight!r}")
    return float(max_weight)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)


def check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def as_index_array(
    name: str, x: object, *, bound: int | None = None, bound_name: str = "", min_len: int = 1
) -> np.ndarray:
    """Convert ids or positions to a 1-D int64 copy, each in [0, bound) (or >= 0 if no bound).

    Integer input is not routed through float64, which would round ids above 2**53; float
    input must hold whole numbers.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        as_float = as_float_array(name, arr, min_len=min_len)
        _first_bad(name, as_float, as_float != np.round(as_float), "whole numbers")
    elif arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    elif len(arr) < min_len:
        raise ValueError(f"{name} must have at least {min_len} elements, got {len(arr)}")
    arr = arr.astype(np.int64)  # always a copy
    if bound is None:
        _first_bad(name, arr, arr < 0, ">= 0")
    else:
        _first_bad(name, arr, (arr < 0) | (arr >= bound), f"in [0, {bound_name}={bound})")
    return arr
