"""The off-policy estimator protocol: standard named arrays (:class:`OPEData`) and a registry.

A registered estimator is a plain function of named arrays, each passed as a keyword argument
whose name is one of :func:`standard_names`, plus ``alpha``; it returns an
:class:`~estimators.base.Estimate`. It is registered with the names it ``needs`` and its
``level``: ``"impression"`` (every array (n,), one row per impression; the value is the expected
reward per impression) or ``"page"`` (every array (n_pages, page_len), one row per page; the
value is the expected page reward ``sum_k reward[:, k]``)::

    register_estimator("my_ips", my_ips, needs=("reward", "pscore", "action_dist"))
    get_estimator("my_ips")(data, alpha=0.05)       # data: an OPEData of the same level

Calling a :class:`RegisteredEstimator` checks what the function cannot check for itself: that
the data is of its level and has every array it needs, and that it returned a finite
``Estimate`` whose interval contains its value. Every built-in OPE estimator of
:mod:`estimators.ope` is registered below; :func:`estimators.checks.check_estimator` measures a
registered (or any) estimator's bias and coverage against known truths.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from ._validation import (
    _where,
    as_float_array,
    as_index_array,
    check_choice,
    check_probability,
    check_pscore,
)
from .base import Estimate
from .ope import (
    ope_dm,
    ope_dr,
    ope_dros,
    ope_ips,
    ope_sndr,
    ope_snips,
    ope_switch_dr,
    slate_independent_ips,
    slate_rips,
    slate_snrips,
    slate_standard_ips,
)

LEVELS = ("impression", "page")


class UnknownEstimatorError(KeyError):
    """No estimator is registered under the name asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _array(meaning: str, *, impression_only: bool = False) -> Any:
    return field(default=None, metadata={"meaning": meaning, "impression_only": impression_only})


@dataclass(frozen=True, eq=False, kw_only=True)
class OPEData:
    """The named arrays an off-policy estimator may read; every one but ``reward`` optional.

    Every array has one shape: (n,) at level ``"impression"``, (n_pages, page_len) at level
    ``"page"`` (row i, column k: page i's position k). The meaning of each name is in
    :func:`standard_names` (from the field definitions below). Arrays are checked when the
    object is built (finite, probabilities in range, same shape, at least 2 rows) and stored as
    read-only float64 copies (``position`` and ``page_id`` as int64).

    Raises:
        ValueError: naming the array, the bound and the first offending index; in particular a
            ``pscore`` (or ``pscore_cascade``) of 0 where the target puts mass.
    """

    level: str = "impression"
    reward: np.ndarray = _array("the logged reward (page level: of each position)")
    pscore: np.ndarray | None = _array(
        "the logging policy's marginal probability of the logged item at the logged position "
        "(log column propensity_marginal), in (0, 1]"
    )
    action_dist: np.ndarray | None = _array(
        "the target policy's marginal probability of the logged item at the logged position"
    )
    pscore_cascade: np.ndarray | None = _array(
        "the logging policy's probability of the logged item at the logged position given the "
        "items above it (log column propensity), in (0, 1]"
    )
    action_dist_cascade: np.ndarray | None = _array(
        "the target policy's probability of the logged item at the logged position given the "
        "same items above it"
    )
    imputed: np.ndarray | None = _array(
        "a reward model's prediction for the logged item at the logged position"
    )
    imputed_target: np.ndarray | None = _array(
        "the reward model's expected reward under the target at that row's request and "
        "position, sum_a pi_target(a at k | x) * q_hat(x, a, k) with pi_target marginal"
    )
    position: np.ndarray | None = _array(
        "0-based position on the page (log column position)", impression_only=True
    )
    page_id: np.ndarray | None = _array(
        "the page request of the row (log column request_id)", impression_only=True
    )

    def __post_init__(self) -> None:
        check_choice("level", self.level, LEVELS)
        if self.reward is None:
            raise ValueError("reward must be given (it fixes the rows of the data)")
        ndim = 1 if self.level == "impression" else 2
        shape = None
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "level" or value is None:
                continue
            if f.metadata["impression_only"] and self.level != "impression":
                raise ValueError(f"{f.name} is for level 'impression' only, got level 'page'")
            if f.metadata["impression_only"]:
                arr = as_index_array(f.name, value, min_len=2)
            else:
                arr = as_float_array(f.name, value, ndim=ndim, min_len=2).copy()
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise ValueError(f"{f.name} must have reward's shape {shape}, got {arr.shape}")
            arr.flags.writeable = False
            object.__setattr__(self, f.name, arr)
        pairs = (("pscore", "action_dist"), ("pscore_cascade", "action_dist_cascade"))
        for p_name, e_name in pairs:
            p, e = getattr(self, p_name), getattr(self, e_name)
            if e is not None:
                check_probability(e_name, e)
            if p is None:
                continue
            if e is not None:
                unseen = (p == 0) & (e > 0)
                if unseen.any():
                    at = tuple(int(i[0]) for i in np.nonzero(unseen))
                    raise ValueError(
                        f"{p_name} is 0 at {_where(unseen)} where {e_name} is {float(e[at])!r}: "
                        "the target puts mass where the logging policy never shows the item, "
                        "so no importance weight recovers its reward"
                    )
            check_pscore(p_name, p)

    @property
    def n(self) -> int:
        """Rows: impressions or pages."""
        return len(self.reward)

    @property
    def names(self) -> tuple[str, ...]:
        """The standard names this data has an array for."""
        return tuple(f.name for f in _ARRAY_FIELDS if getattr(self, f.name) is not None)

    def arrays(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """``{name: array}`` for ``names``; a ValueError names those this data lacks."""
        missing = [name for name in names if getattr(self, name, None) is None]
        if missing:
            raise ValueError(
                f"OPEData has no {', '.join(missing)} (it has {', '.join(self.names)})"
            )
        return {name: getattr(self, name) for name in names}

    def to_pages(self, *, pad: bool = False) -> OPEData:
        """The page-level data of impression rows: one row per ``page_id`` (sorted), one
        column per ``position``.

        Args:
            pad: allow pages shorter than the longest one. A missing trailing position gets
                reward 0 (and ``imputed``, ``imputed_target`` 0) and every probability 1, so it
                adds 0 to a page and multiplies the page's weights by 1: exact for
                :func:`~estimators.ope.slate_standard_ips`,
                :func:`~estimators.ope.slate_independent_ips` and
                :func:`~estimators.ope.slate_rips`, but not for
                :func:`~estimators.ope.slate_snrips`, whose per-position denominators then
                count the padded pages.

        Raises:
            ValueError: not impression level, no ``position`` or ``page_id``, a position twice
                on one page, a page with a gap (a page is a prefix: positions 0, 1, ...), or
                pages of different lengths without ``pad``.
        """
        if self.level != "impression":
            raise ValueError("to_pages needs level 'impression' data, got level 'page'")
        self.arrays(("position", "page_id"))
        pages, page = np.unique(self.page_id, return_inverse=True)  # page: (n,) row of pages
        page_len = int(self.position.max()) + 1
        cell = page * page_len + self.position  # (n,) flat index into (n_pages, page_len)
        filled = np.zeros(len(pages) * page_len, dtype=bool)
        if len(np.unique(cell)) != len(cell):
            first_dup = np.flatnonzero(np.bincount(cell) > 1)[0]
            raise ValueError(f"page_id {pages[first_dup // page_len]} has position "
                             f"{first_dup % page_len} twice")
        filled[cell] = True
        filled = filled.reshape(len(pages), page_len)
        length = filled.sum(axis=1)  # (n_pages,)
        gap = filled.argmin(axis=1) < length  # a False before the last True
        gap &= ~filled.all(axis=1)
        if gap.any():
            i = int(np.argmax(gap))
            raise ValueError(f"page_id {pages[i]} lacks position {int(filled[i].argmin())} "
                             "(a page must be a prefix: positions 0, 1, ...)")
        if not pad and (length != page_len).any():
            i = int(np.argmax(length != page_len))
            raise ValueError(
                f"page_id {pages[i]} has {int(length[i])} positions, others {page_len}; pass "
                "pad=True to pad short pages (see the docstring for which estimators that suits)"
            )
        out = {}
        for name in self.names:
            if name in ("position", "page_id"):
                continue
            fill = 1.0 if name in ("pscore", "action_dist", "pscore_cascade",
                                   "action_dist_cascade") else 0.0
            grid = np.full(len(pages) * page_len, fill)
            grid[cell] = getattr(self, name)
            out[name] = grid.reshape(len(pages), page_len)
        return OPEData(level="page", **out)


_ARRAY_FIELDS = tuple(f for f in fields(OPEData) if f.name != "level")


def standard_names(level: str | None = None) -> dict[str, str]:
    """Standard array name -> its meaning: the keyword arguments a registered estimator may take.

    Args:
        level: ``"impression"``, ``"page"`` (which has no ``position`` or ``page_id``), or None
            for every name.
    """
    if level is not None:
        check_choice("level", level, LEVELS)
    return {f.name: f.metadata["meaning"] for f in _ARRAY_FIELDS
            if level != "page" or not f.metadata["impression_only"]}


@dataclass(frozen=True, eq=False)
class RegisteredEstimator:
    """An estimator with what it needs; call it on an :class:`OPEData`.

    Attributes:
        name: registered name (or the function's name, for one built by :func:`make_estimator`).
        fn: ``fn(**arrays, **params, alpha=alpha) -> Estimate``.
        needs: the standard names passed to ``fn``.
        level: ``"impression"`` or ``"page"``.
        params: fixed keyword arguments (e.g. ``{"tau": 10.0}``).
        description: one line.
    """

    name: str
    fn: Callable[..., Estimate]
    needs: tuple[str, ...]
    level: str
    params: Mapping[str, Any]
    description: str

    def __call__(self, data: OPEData, *, alpha: float = 0.05) -> Estimate:
        """Run the estimator on ``data``.

        Raises:
            TypeError: ``data`` is not an OPEData, or ``fn`` returned something other than an
                Estimate.
            ValueError: ``data`` is of another level or lacks a needed array, or the estimate
                is not finite or its interval does not contain its value.
        """
        if not isinstance(data, OPEData):
            raise TypeError(f"estimator {self.name!r} needs an OPEData, got {type(data).__name__}")
        if data.level != self.level:
            raise ValueError(
                f"estimator {self.name!r} is for level {self.level!r} data, got {data.level!r}"
            )
        missing = [name for name in self.needs if getattr(data, name) is None]
        if missing:
            raise ValueError(
                f"estimator {self.name!r} needs {', '.join(missing)}, which the data lacks "
                f"(it has {', '.join(data.names)})"
            )
        result = self.fn(**data.arrays(self.needs), **self.params, alpha=alpha)
        return _check_result(self.name, result)


def _check_result(name: str, result: object) -> Estimate:
    if not isinstance(result, Estimate):
        raise TypeError(
            f"estimator {name!r} returned {type(result).__name__}, not an Estimate"
        )
    numbers = {"value": result.value, "stderr": result.stderr,
               "ci_low": result.ci_low, "ci_high": result.ci_high}
    for label, number in numbers.items():
        if not np.isfinite(number):
            raise ValueError(f"estimator {name!r} returned an Estimate with {label}={number!r}")
    if result.stderr < 0 or not result.ci_low <= result.value <= result.ci_high:
        raise ValueError(
            f"estimator {name!r} returned an inconsistent Estimate ({result!r}): need "
            "stderr >= 0 and ci_low <= value <= ci_high"
        )
    return result


def make_estimator(
    fn: Callable[..., Estimate],
    *,
    needs: tuple[str, ...] | None = None,
    level: str = "impression",
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
) -> RegisteredEstimator:
    """Check ``fn`` against the protocol and wrap it, without registering it.

    Args:
        fn: a function taking the arrays in ``needs`` and ``params`` as keyword arguments, and
            ``alpha``; returns an Estimate.
        needs: standard names (:func:`standard_names`) passed to ``fn``; None: ``fn``'s
            parameters that have no default.
        level: ``"impression"`` or ``"page"``.
        params: fixed keyword arguments passed on every call.
        name: defaults to ``fn.__name__``.
        description: defaults to the first line of ``fn``'s docstring.

    Raises:
        ValueError: an unknown name in ``needs``, a name ``fn`` does not take, a required
            parameter of ``fn`` that nothing fills, or ``fn`` not accepting ``alpha``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    name = getattr(fn, "__name__", repr(fn)) if name is None else name
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    check_choice("level", level, LEVELS)
    params = MappingProxyType(dict(params or {}))
    signature = inspect.signature(fn)
    takes = {p.name: p for p in signature.parameters.values()
             if p.kind not in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if needs is None:
        needs = tuple(n for n, p in takes.items()
                      if p.default is p.empty and n != "alpha" and n not in params)
    needs = tuple(needs)
    if not needs:
        raise ValueError(f"estimator {name!r} must need at least one array")
    known = standard_names(level)
    for array_name in needs:
        if array_name not in known:
            raise ValueError(
                f"estimator {name!r} needs {array_name!r}, which is not a standard name at level "
                f"{level!r} (one of {', '.join(known)})"
            )
    if len(set(needs)) != len(needs):
        raise ValueError(f"estimator {name!r} lists a name twice in needs {needs}")
    for arg in (*needs, *params, "alpha"):
        if arg not in takes and not open_kwargs:
            raise ValueError(f"estimator {name!r}: fn takes no keyword argument {arg!r}")
    unfilled = [n for n, p in takes.items()
                if p.default is p.empty and n not in needs and n not in params and n != "alpha"]
    if unfilled:
        raise ValueError(
            f"estimator {name!r}: fn's required argument(s) {', '.join(unfilled)} are neither "
            "in needs nor in params"
        )
    if description is None:
        description = (inspect.getdoc(fn) or name).splitlines()[0]
    return RegisteredEstimator(name, fn, needs, level, params, description)


_REGISTRY: dict[str, RegisteredEstimator] = {}


def register_estimator(
    name: str,
    fn: Callable[..., Estimate],
    *,
    needs: tuple[str, ...] | None = None,
    level: str = "impression",
    params: Mapping[str, Any] | None = None,
    description: str | None = None,
    replace: bool = False,
) -> RegisteredEstimator:
    """Register ``fn`` under ``name`` (see :func:`make_estimator` for the arguments).

    Args:
        replace: allow replacing an estimator already registered under ``name``.

    Returns:
        The registered estimator.
    """
    if name in _REGISTRY and not replace:
        raise ValueError(
            f"estimator name {name!r} is already registered (pass replace=True to replace it)"
        )
    entry = make_estimator(
        fn, needs=needs, level=level, params=params, name=name, description=description
    )
    _REGISTRY[name] = entry
    return entry


def get_estimator(name: str) -> RegisteredEstimator:
    """The estimator registered under ``name``; an unknown name lists the registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownEstimatorError(
            f"unknown estimator {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_estimators(level: str | None = None) -> dict[str, str]:
    """Registered estimator names (of ``level``, or all) with their one-line descriptions."""
    if level is not None:
        check_choice("level", level, LEVELS)
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())
            if level is None or entry.level == level}


# --- the built-in estimators -------------------------------------------------------------------


def _slate_standard_ips_of_sum(
    reward: np.ndarray, pscore_cascade: np.ndarray, action_dist_cascade: np.ndarray, *,
    alpha: float = 0.05,
) -> Estimate:
    """Standard slate IPS of the page reward sum_k reward[:, k], from conditional propensities."""
    return slate_standard_ips(reward.sum(axis=1), pscore_cascade, action_dist_cascade, alpha=alpha)


_ITEM = ("reward", "pscore", "action_dist")
_MODEL = (*_ITEM, "imputed", "imputed_target")
_CASCADE = ("reward", "pscore_cascade", "action_dist_cascade")

register_estimator("ips", ope_ips, needs=_ITEM)
register_estimator("snips", ope_snips, needs=_ITEM)
register_estimator("dm", ope_dm, needs=("imputed_target",))
register_estimator("dr", ope_dr, needs=_MODEL)
register_estimator("sndr", ope_sndr, needs=_MODEL)
register_estimator("switch_dr", ope_switch_dr, needs=_MODEL, params={"tau": 10.0},
                   description="Switch-DR with tau = 10: DR where w <= 10, DM elsewhere")
register_estimator("dros", ope_dros, needs=_MODEL, params={"lambda_": 100.0},
                   description="DR with optimistic shrinkage, lambda = 100")
register_estimator("slate_standard_ips", _slate_standard_ips_of_sum, needs=_CASCADE, level="page")
register_estimator("slate_independent_ips", slate_independent_ips, needs=_ITEM, level="page")
register_estimator("slate_rips", slate_rips, needs=_CASCADE, level="page")
register_estimator("slate_snrips", slate_snrips, needs=_CASCADE, level="page")
