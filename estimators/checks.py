"""A ground-truth check for off-policy estimators, shipped with the library.

``check_estimator(estimator, datasets)`` runs an estimator on datasets whose true value is
known (from :func:`estimators.synthetic.synthetic_ope_datasets`, or satbed logs with the
simulator's oracle value) and measures what matters about it: bias (with its standard error),
RMSE, and how often its interval covers the truth. It fails loudly, naming the dataset, on what
would otherwise make those numbers meaningless: data of the wrong level or lacking an array the
estimator needs, an estimator that raises, returns something other than an
:class:`~estimators.base.Estimate`, or returns a non-finite one. Bad input arrays (wrong shapes,
NaN, a propensity of 0 where the target puts mass) are already refused when the
:class:`~estimators.registry.OPEData` is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy import stats

from ._validation import check_alpha
from .registry import OPEData, RegisteredEstimator, get_estimator, make_estimator


@dataclass(frozen=True, eq=False)
class CheckReport:
    """An estimator's results on datasets with known truth; one array entry per dataset.

    Attributes:
        name: the estimator's name.
        level: ``"impression"`` or ``"page"``.
        alpha: 1 - the intervals' nominal coverage.
        truth, value, stderr, ci_low, ci_high: (n_datasets,) arrays.
    """

    name: str
    level: str
    alpha: float
    truth: np.ndarray
    value: np.ndarray
    stderr: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray

    @property
    def n_datasets(self) -> int:
        return len(self.truth)

    @property
    def error(self) -> np.ndarray:
        """(n_datasets,) ``value - truth``."""
        return self.value - self.truth

    @property
    def bias(self) -> float:
        """Mean error."""
        return float(self.error.mean())

    @property
    def bias_se(self) -> float:
        """Standard error of :attr:`bias`: the errors' sample sd over sqrt(n_datasets)."""
        return float(self.error.std(ddof=1) / math.sqrt(self.n_datasets))

    @property
    def bias_z(self) -> float:
        """``bias / bias_se`` (0 if both are 0, ±inf if only the SE is)."""
        if self.bias_se == 0:
            return 0.0 if self.bias == 0 else math.copysign(math.inf, self.bias)
        return self.bias / self.bias_se

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.error**2)))

    @property
    def covered(self) -> np.ndarray:
        """(n_datasets,) whether each interval contains its truth."""
        return (self.ci_low <= self.truth) & (self.truth <= self.ci_high)

    @property
    def coverage(self) -> float:
        """Share of intervals that contain the truth (nominal: ``1 - alpha``)."""
        return float(self.covered.mean())

    def coverage_ci(self, confidence: float = 0.99) -> tuple[float, float]:
        """Clopper-Pearson interval of the true coverage rate (scipy's ``binomtest``)."""
        ci = stats.binomtest(int(self.covered.sum()), self.n_datasets).proportion_ci(
            confidence_level=confidence, method="exact"
        )
        return float(ci.low), float(ci.high)

    def failures(
        self, *, bias_tol_se: float = 3.0, min_coverage: float | None = None
    ) -> list[str]:
        """Why the estimator fails the check; empty if it passes.

        Args:
            bias_tol_se: largest allowed ``|bias|`` in standard errors of the bias.
            min_coverage: smallest allowed coverage; None: the coverage must not be
                significantly below nominal, i.e. its 99% Clopper-Pearson interval must reach
                ``1 - alpha``.
        """
        problems = []
        if not abs(self.bias_z) <= bias_tol_se:
            problems.append(
                f"bias {self.bias:+.4g} is {abs(self.bias_z):.1f} standard errors from 0 "
                f"(allowed {bias_tol_se:g})"
            )
        nominal = 1 - self.alpha
        if min_coverage is None:
            high = self.coverage_ci()[1]
            if high < nominal:
                problems.append(
                    f"coverage {self.coverage:.3f} is below nominal {nominal:.3f} "
                    f"(99% interval reaches only {high:.3f})"
                )
        elif self.coverage < min_coverage:
            problems.append(f"coverage {self.coverage:.3f} is below {min_coverage:.3f}")
        return problems

    def passed(self, *, bias_tol_se: float = 3.0, min_coverage: float | None = None) -> bool:
        """Whether :meth:`failures` finds nothing."""
        return not self.failures(bias_tol_se=bias_tol_se, min_coverage=min_coverage)

    def __str__(self) -> str:
        low, high = self.coverage_ci()
        failures = self.failures()
        verdict = "passed" if not failures else "FAILED: " + "; ".join(failures)
        return "\n".join([
            f"check_estimator({self.name!r}) on {self.n_datasets} {self.level}-level datasets",
            f"  bias      {self.bias:+.4g} ± {self.bias_se:.2g} (z {self.bias_z:+.1f})",
            f"  RMSE      {self.rmse:.4g}",
            f"  spread    sd of estimates {self.value.std(ddof=1):.3g}, "
            f"mean stderr {self.stderr.mean():.3g}",
            f"  coverage  {self.coverage:.3f} [{low:.3f}, {high:.3f}] "
            f"(nominal {1 - self.alpha:.3f})",
            f"  {verdict}",
        ])


def check_estimator(
    estimator: str | RegisteredEstimator | Callable[..., object],
    datasets: Iterable[tuple[OPEData, float]],
    *,
    alpha: float = 0.05,
) -> CheckReport:
    """Run ``estimator`` on every ``(data, truth)`` and report bias, RMSE and coverage.

    Args:
        estimator: a registered name, a :class:`RegisteredEstimator`, or a function following
            the protocol (its parameters without a default are the arrays it needs; see
            :func:`estimators.registry.make_estimator`).
        datasets: ``(data, truth)`` pairs, at least 2, all of one level.
        alpha: 1 - the intervals' confidence level.

    Returns:
        The report; ``report.passed()`` says whether bias and coverage are acceptable.

    Raises:
        TypeError: a dataset is not an ``(OPEData, float)`` pair, or the estimator returned
            something other than an Estimate.
        ValueError: a non-finite truth, datasets of mixed levels, fewer than 2 datasets, data
            lacking an array the estimator needs, or a non-finite estimate.
        Exception: whatever the estimator raised, with a note naming the dataset.
    """
    alpha = check_alpha(alpha)
    entry: RegisteredEstimator | None
    if isinstance(estimator, str):
        entry = get_estimator(estimator)
    elif isinstance(estimator, RegisteredEstimator):
        entry = estimator
    elif callable(estimator):
        entry = None  # built once the first dataset gives the level
    else:
        raise TypeError(
            "estimator must be a registered name, a RegisteredEstimator or a function, "
            f"got {type(estimator).__name__}"
        )
    rows = []
    level = None
    for i, pair in enumerate(datasets):
        data, truth = _unpack(i, pair)
        if level is None:
            level = data.level
        elif data.level != level:
            raise ValueError(f"dataset {i} is of level {data.level!r}, dataset 0 of {level!r}")
        if entry is None:
            entry = make_estimator(estimator, level=level)
        try:
            result = entry(data, alpha=alpha)
        except Exception as exc:
            exc.add_note(f"(while checking estimator {entry.name!r} on dataset {i})")
            raise
        rows.append((truth, result.value, result.stderr, result.ci_low, result.ci_high))
    if len(rows) < 2:
        raise ValueError(f"check_estimator needs at least 2 datasets, got {len(rows)}")
    columns = [np.array(column) for column in zip(*rows)]  # 5 arrays, each (n_datasets,)
    for column in columns:
        column.flags.writeable = False
    return CheckReport(entry.name, level, alpha, *columns)


def _unpack(i: int, pair: object) -> tuple[OPEData, float]:
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], OPEData)):
        got = type(pair).__name__
        if isinstance(pair, tuple):
            got += f" of ({', '.join(type(x).__name__ for x in pair)})"
        raise TypeError(f"dataset {i} must be an (OPEData, truth) pair, got {got}")
    data, truth = pair
    if not isinstance(truth, Real) or isinstance(truth, bool) or not math.isfinite(truth):
        raise ValueError(f"dataset {i}: truth must be a finite number, got {truth!r}")
    return data, float(truth)
