"""`Estimate`: a point estimate with its standard error and confidence interval.

Almost every estimator in this package is either a mean of per-unit terms (naive, IPS, DR,
per-user ranking metrics) or a ratio of two such means (SNIPS, ratio metrics, USM Eq. 13,
calibration). The two constructors below give both the same treatment: a standard error from
the sample variance of the terms (the ratio one by the delta method, i.e. the variance of its
linearisation) and a normal-approximation interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from ._validation import as_float_array, check_alpha, check_same_length


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with uncertainty.

    Attributes:
        value: the point estimate.
        stderr: its standard error (0 when the terms have no variance, never NaN).
        ci_low: lower end of the two-sided confidence interval.
        ci_high: upper end of the interval.
        n: number of units the estimate is a mean over (rows, users, ...).
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int

    def __str__(self) -> str:
        return (
            f"{self.value:.4g} ± {self.stderr:.2g} "
            f"[{self.ci_low:.4g}, {self.ci_high:.4g}] (n={self.n})"
        )

    def contains(self, truth: float) -> bool:
        """Whether the closed interval [ci_low, ci_high] covers ``truth``."""
        return bool(self.ci_low <= truth <= self.ci_high)

    @classmethod
    def normal(cls, value: float, stderr: float, n: int, *, alpha: float = 0.05) -> Estimate:
        """Estimate with the interval ``value ± z_{1-alpha/2} * stderr``."""
        alpha = check_alpha(alpha)
        if not np.isfinite(value):
            raise ValueError(f"value must be finite, got {value!r}")
        if not (np.isfinite(stderr) and stderr >= 0):
            raise ValueError(f"stderr must be finite and >= 0, got {stderr!r}")
        half = float(special.ndtri(1 - alpha / 2)) * stderr  # the normal quantile, fast
        return cls(float(value), float(stderr), float(value - half), float(value + half), int(n))

    @classmethod
    def from_terms(cls, terms: np.ndarray, *, alpha: float = 0.05) -> Estimate:
        """Mean of i.i.d. per-unit terms, ``stderr = std(terms, ddof=1) / sqrt(n)``.

        Args:
            terms: (n,) per-unit contributions, n >= 2.
            alpha: 1 - confidence level.
        """
        terms = as_float_array("terms", terms, min_len=2)
        n = len(terms)
        return cls.normal(terms.mean(), _sd(terms) / np.sqrt(n), n, alpha=alpha)

    @classmethod
    def from_ratio(
        cls, numerator: np.ndarray, denominator: np.ndarray, *, alpha: float = 0.05
    ) -> Estimate:
        """Ratio of means ``sum(numerator) / sum(denominator)`` with a delta-method stderr.

        The linearised term of unit i is ``(numerator_i - R * denominator_i) / mean(denominator)``;
        its sample standard deviation over sqrt(n) is the standard error.

        Args:
            numerator: (n,) per-unit numerators, n >= 2.
            denominator: (n,) per-unit denominators; their sum must not be 0.
            alpha: 1 - confidence level.
        """
        numerator = as_float_array("numerator", numerator, min_len=2)
        denominator = as_float_array("denominator", denominator, min_len=2)
        n = check_same_length({"numerator": numerator, "denominator": denominator})
        den_mean = denominator.mean()
        if den_mean == 0:
            raise ValueError("denominator must not sum to 0 (the ratio is undefined)")
        ratio = numerator.sum() / denominator.sum()
        linear = (numerator - ratio * denominator) / den_mean  # (n,)
        return cls.normal(ratio, _sd(linear) / np.sqrt(n), n, alpha=alpha)


def _sd(x: np.ndarray) -> float:
    # A constant array can come out of np.std with a tiny rounding residue; report exactly 0
    # so that "no variance" tests (and zero-width intervals) are exact.
    if np.all(x == x[0]):
        return 0.0
    return float(np.std(x, ddof=1))
