"""A/B statistics for user-randomised buckets.

The randomisation unit is the user, so every test here takes one value (or one numerator and
one denominator) *per user* and treats users as i.i.d.:

- a per-user metric (average user watch time: each user's total watch time) ->
  :func:`mean_difference`, a Welch t-test, optionally with CUPED;
- a ratio metric whose unit is not the user (average video watch time = total watch time /
  impressions; positive-to-negative ratio = positives / negatives; survey like rate =
  likes / answered; the response-debiased rate of USM Eq. 13 = sum of answer / submit_pscore
  over sum of submitted / submit_pscore) -> :func:`ratio_difference`, with per-user numerators
  and denominators and the delta method. Testing such a metric over impressions instead of
  users ignores that one user's impressions are correlated and rejects far more often than
  alpha (the A/A tests in ``tests/estimators/test_estimators_ab.py`` measure how much).

Plus the sample-ratio-mismatch check, multiple-comparison corrections, a bootstrap interval
and power / minimum-detectable-effect helpers. Randomness only enters through an explicit
``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from ._validation import (
    as_float_array,
    check_alpha,
    check_choice,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_probability,
    check_rng,
    check_same_length,
)
from .base import Estimate, _sd


@dataclass(frozen=True, slots=True)
class ABResult:
    """Treatment-versus-control comparison of one metric.

    Attributes:
        control: the metric in the control arm.
        treatment: the metric in the treatment arm.
        difference: ``treatment - control`` with its interval (t-based for Welch, normal for
            the delta method); ``n`` = users in both arms.
        lift: relative lift ``treatment / control - 1`` with a delta-method normal interval;
            None when ``control`` is 0 (a relative change from 0 is undefined).
        p_value: two-sided p-value of "no difference".
        n_control: users in the control arm.
        n_treatment: users in the treatment arm.
        method: ``"welch"``, ``"welch+cuped"`` or ``"delta"``.
        alpha: the level the intervals were built at.
    """

    control: float
    treatment: float
    difference: Estimate
    lift: Estimate | None
    p_value: float
    n_control: int
    n_treatment: int
    method: str
    alpha: float

    @property
    def significant(self) -> bool:
        """Whether ``p_value < alpha``."""
        return self.p_value < self.alpha

    def as_row(self) -> dict[str, object]:
        """Flat dict for a metrics table (lift columns are None when the lift is undefined)."""
        lift = self.lift
        return {
            "control": self.control,
            "treatment": self.treatment,
            "difference": self.difference.value,
            "difference_ci_low": self.difference.ci_low,
            "difference_ci_high": self.difference.ci_high,
            "lift": None if lift is None else lift.value,
            "lift_ci_low": None if lift is None else lift.ci_low,
            "lift_ci_high": None if lift is None else lift.ci_high,
            "p_value": self.p_value,
            "n_control": self.n_control,
            "n_treatment": self.n_treatment,
            "method": self.method,
        }


def _compare(
    control: Estimate,
    treatment: Estimate,
    *,
    df: float | None,
    method: str,
    alpha: float,
) -> ABResult:
    """Difference and lift of two independent arm estimates; t(df) or normal if df is None."""
    mc, mt = control.value, treatment.value
    var_c, var_t = control.stderr**2, treatment.stderr**2
    diff = mt - mc
    se = float(np.sqrt(var_c + var_t))
    # scipy.special's normal / Student-t functions give the same numbers as scipy.stats.norm / t
    # without their per-call overhead (an A/A study calls this thousands of times)
    if se == 0:  # both arms constant: the difference is known exactly
        p_value, half = (1.0 if diff == 0 else 0.0), 0.0
    elif df is None:
        p_value = float(2 * special.ndtr(-abs(diff) / se))
        half = float(special.ndtri(1 - alpha / 2)) * se
    else:
        p_value = float(2 * special.stdtr(df, -abs(diff) / se))
        half = float(special.stdtrit(df, 1 - alpha / 2)) * se
    n = control.n + treatment.n
    difference = Estimate(diff, se, diff - half, diff + half, n)
    lift = None
    if mc != 0:
        # delta method for mt / mc with independent arms
        lift_se = float(np.sqrt(var_t / mc**2 + mt**2 * var_c / mc**4))
        lift = Estimate.normal(mt / mc - 1, lift_se, n, alpha=alpha)
    return ABResult(mc, mt, difference, lift, p_value, control.n, treatment.n, method, alpha)


def mean_estimate(values: object, *, alpha: float = 0.05) -> Estimate:
    """Mean of a per-user metric in one arm, ``stderr = sd / sqrt(n)`` (n >= 2 users)."""
    return Estimate.from_terms(as_float_array("values", values, min_len=2), alpha=alpha)


def ratio_estimate(numerator: object, denominator: object, *, alpha: float = 0.05) -> Estimate:
    """Ratio metric of one arm, ``sum(numerator) / sum(denominator)`` over its users.

    Args:
        numerator: (n_users,) per-user numerator (e.g. total watch time).
        denominator: (n_users,) per-user denominator, >= 0 with a positive sum (e.g.
            impressions); users with a zero denominator still count as users.
        alpha: 1 - confidence level.

    Returns:
        The ratio with a delta-method stderr; ``stderr * sqrt(n)`` is the per-user standard
        deviation to give :func:`power` and :func:`minimum_detectable_effect`.
    """
    return _ratio_arm(numerator, denominator, ("numerator", "denominator"), alpha)


def _ratio_arm(
    numerator: object, denominator: object, names: tuple[str, str], alpha: float
) -> Estimate:
    """:func:`ratio_estimate` with the argument ``names`` its messages should use."""
    num_name, den_name = names
    num = as_float_array(num_name, numerator, min_len=2)
    den = check_nonnegative(den_name, as_float_array(den_name, denominator, min_len=2))
    check_same_length({num_name: num, den_name: den})
    if den.sum() == 0:
        raise ValueError(f"{den_name} must have a positive sum, got 0")
    return Estimate.from_ratio(num, den, alpha=alpha)


def mean_difference(
    control: object,
    treatment: object,
    *,
    control_pre: object | None = None,
    treatment_pre: object | None = None,
    alpha: float = 0.05,
) -> ABResult:
    """Welch's t-test and interval for the difference of per-user means.

    Args:
        control: (n_control,) per-user metric in the control arm (n >= 2).
        treatment: (n_treatment,) per-user metric in the treatment arm (n >= 2).
        control_pre: optional (n_control,) the same users' pre-period covariate; with
            ``treatment_pre`` it switches on CUPED (:func:`cuped`, one theta for both arms).
        treatment_pre: optional (n_treatment,) likewise.
        alpha: 1 - confidence level.

    Returns:
        An :class:`ABResult`. The p-value equals ``scipy.stats.ttest_ind(..., equal_var=False)``;
        when both arms are constant the difference is exact (stderr 0, p-value 1 or 0).
    """
    alpha = check_alpha(alpha)
    c = as_float_array("control", control, min_len=2)
    t = as_float_array("treatment", treatment, min_len=2)
    method = "welch"
    if (control_pre is None) != (treatment_pre is None):
        raise ValueError("control_pre and treatment_pre must be given together (or neither)")
    if control_pre is not None:
        c_pre = as_float_array("control_pre", control_pre, min_len=2)
        t_pre = as_float_array("treatment_pre", treatment_pre, min_len=2)
        check_same_length({"control": c, "control_pre": c_pre})
        check_same_length({"treatment": t, "treatment_pre": t_pre})
        adjusted, _ = cuped(np.concatenate([c, t]), np.concatenate([c_pre, t_pre]))
        c, t = adjusted[: len(c)], adjusted[len(c) :]
        method = "welch+cuped"
    arm_c = Estimate.from_terms(c, alpha=alpha)
    arm_t = Estimate.from_terms(t, alpha=alpha)
    a, b = arm_c.stderr**2, arm_t.stderr**2
    df = None
    if a + b > 0:  # Welch-Satterthwaite degrees of freedom
        df = (a + b) ** 2 / (a**2 / (len(c) - 1) + b**2 / (len(t) - 1))
    return _compare(arm_c, arm_t, df=df, method=method, alpha=alpha)


def ratio_difference(
    num_control: object,
    den_control: object,
    num_treatment: object,
    den_treatment: object,
    *,
    alpha: float = 0.05,
) -> ABResult:
    """Delta-method z-test and interval for a ratio metric, from per-user sums.

    Each arm's metric is ``sum(num) / sum(den)`` over its users; its variance is that of the
    per-user linearisation ``(num - R * den) / mean(den)`` over n (see :func:`ratio_estimate`).

    Args:
        num_control: (n_control,) per-user numerators in control (e.g. total watch time).
        den_control: (n_control,) per-user denominators in control (e.g. impressions), >= 0.
        num_treatment: (n_treatment,) per-user numerators in treatment.
        den_treatment: (n_treatment,) per-user denominators in treatment, >= 0.
        alpha: 1 - confidence level.
    """
    alpha = check_alpha(alpha)
    arm_c = _ratio_arm(num_control, den_control, ("num_control", "den_control"), alpha)
    arm_t = _ratio_arm(num_treatment, den_treatment, ("num_treatment", "den_treatment"), alpha)
    return _compare(arm_c, arm_t, df=None, method="delta", alpha=alpha)


def cuped(y: object, x_pre: object, *, theta: float | None = None) -> tuple[np.ndarray, float]:
    """CUPED: ``y - theta * (x_pre - mean(x_pre))`` with ``theta = cov(x_pre, y) / var(x_pre)``.

    The adjusted metric has the same mean and a variance smaller by the factor
    ``1 - corr(x_pre, y)^2``. Use one theta for both arms, fitted on them pooled (as
    :func:`mean_difference` does with ``control_pre`` / ``treatment_pre``): a theta per arm can
    bias the difference.

    Args:
        y: (n,) per-user metric in the experiment period.
        x_pre: (n,) the same users' pre-period covariate (e.g. pre-period watch time; 0 for
            users absent from the pre-period).
        theta: use this coefficient instead of fitting it.

    Returns:
        ``(adjusted, theta)``: the adjusted (n,) metric and the coefficient used. A constant
        ``x_pre`` carries no information: theta is 0 and ``y`` comes back unchanged.
    """
    y_arr = as_float_array("y", y, min_len=2)
    x = as_float_array("x_pre", x_pre, min_len=2)
    check_same_length({"y": y_arr, "x_pre": x})
    x_centred = x - x.mean()
    if theta is None:
        var_x = float(x_centred @ x_centred)
        theta = 0.0 if var_x == 0 else float(x_centred @ (y_arr - y_arr.mean()) / var_x)
    elif not np.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta!r}")
    return y_arr - theta * x_centred, float(theta)


class SRMResult(NamedTuple):
    """Chi-square statistic and p-value of a sample-ratio-mismatch test."""

    statistic: float
    p_value: float


def srm_test(counts: object, expected_shares: object | None = None) -> SRMResult:
    """Sample-ratio-mismatch check: chi-square goodness of fit of the bucket sizes.

    Args:
        counts: (n_buckets,) users (or sessions) per bucket, non-negative, n_buckets >= 2.
        expected_shares: (n_buckets,) the designed traffic shares, > 0, summing to 1; default
            equal shares.

    Returns:
        ``(statistic, p_value)``; a tiny p-value (the usual alarm is < 0.001) means the
        assignment or the logging is broken and the experiment's numbers should not be trusted.
    """
    obs = check_nonnegative("counts", as_float_array("counts", counts, min_len=2))
    total = obs.sum()
    if total == 0:
        raise ValueError("counts must have a positive total, got 0")
    if expected_shares is None:
        shares = np.full(len(obs), 1.0 / len(obs))
    else:
        shares = as_float_array("expected_shares", expected_shares, min_len=2)
        check_same_length({"counts": obs, "expected_shares": shares})
        check_positive("expected_shares", shares)
        if not np.isclose(shares.sum(), 1.0, rtol=0, atol=1e-6):
            raise ValueError(f"expected_shares must sum to 1, got {shares.sum()!r}")
    res = stats.chisquare(obs, f_exp=total * shares / shares.sum())
    return SRMResult(float(res.statistic), float(res.pvalue))


_PVALUE_METHODS = {"holm": "holm", "bh": "fdr_bh"}


def adjust_pvalues(pvalues: object, method: str = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values (Holm by hand, BH by statsmodels ``multipletests``;
    both equal statsmodels' results, which the tests check).

    Args:
        pvalues: (m,) raw p-values in [0, 1], e.g. one per metric of an experiment.
        method: ``"holm"`` (family-wise error, Holm-Bonferroni) or ``"bh"`` (false discovery
            rate, Benjamini-Hochberg).

    Returns:
        (m,) adjusted p-values in the input order; reject where ``adjusted < alpha``.
    """
    method = check_choice("method", method, tuple(_PVALUE_METHODS))
    p = check_probability("pvalues", as_float_array("pvalues", pvalues))
    if method == "holm":
        # Holm step-down, by hand: statsmodels' holm branch calls gc.collect() on every call
        # (0.1-0.3 s in a process holding a torch model); the tests check equality with it
        m = len(p)
        order = np.argsort(p, kind="stable")
        stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
        out = np.empty(m)
        out[order] = stepped
        return out
    from statsmodels.stats.multitest import multipletests  # deferred: a quarter-second import

    return multipletests(p, method=_PVALUE_METHODS[method])[1]


def bootstrap_ci(
    *samples: object,
    statistic: Callable[..., object],
    rng: np.random.Generator,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    vectorized: bool = False,
) -> Estimate:
    """Percentile bootstrap interval, resampling the rows of each sample independently.

    Rows are the randomisation units (users): give per-user arrays, with per-user numerator and
    denominator as the two columns of a (n, 2) sample for a ratio metric, so they stay paired.

    Args:
        *samples: one or more arrays, each (n_i,) or (n_i, ...) with n_i >= 2 rows.
        statistic: called as ``statistic(*resampled)`` and returns a finite float; with
            ``vectorized=True`` it gets arrays with a leading resample axis (B, n_i, ...) and
            returns (B,) (much faster; same draws, same result).
        rng: the only source of randomness.
        n_resamples: number of bootstrap resamples (>= 2).
        alpha: 1 - confidence level.
        vectorized: see ``statistic``.

    Returns:
        Estimate with the statistic on the original data as ``value``, the standard deviation
        of the replicates as ``stderr``, the percentile interval, and ``n`` = total rows.
    """
    rng = check_rng(rng)
    alpha = check_alpha(alpha)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2, got {n_resamples}")
    if not samples:
        raise ValueError("bootstrap_ci needs at least one sample")
    data = []
    for i, sample in enumerate(samples):
        ndim = max(np.ndim(sample), 1)  # rows along axis 0, any trailing shape
        data.append(as_float_array(f"samples[{i}]", sample, ndim=ndim, min_len=2))
    if vectorized:  # the original data as a batch of one
        value = _finite_scalar(np.ravel(statistic(*(d[None] for d in data)))[0], "on the data")
    else:
        value = _finite_scalar(statistic(*data), "on the data")
    total = sum(len(d) for d in data)
    batch = max(1, min(n_resamples, 5_000_000 // total))  # bounds the index arrays' memory
    replicates = np.empty(n_resamples)
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        resampled = [d[rng.integers(0, len(d), size=(size, len(d)))] for d in data]  # (B, n_i, ...)
        if vectorized:
            out = np.asarray(statistic(*resampled), dtype=np.float64)
            if out.shape != (size,):
                raise ValueError(
                    f"a vectorized statistic must return shape ({size},), got {out.shape}"
                )
        else:
            out = np.array([_finite_scalar(statistic(*(r[b] for r in resampled)), "on a resample")
                            for b in range(size)])
        if not np.isfinite(out).all():
            raise ValueError("statistic returned a non-finite value on a bootstrap resample")
        replicates[start : start + size] = out
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return Estimate(value, _sd(replicates), float(low), float(high), total)


def _finite_scalar(x: object, where: str) -> float:
    try:
        value = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"statistic must return a float {where}, got {x!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"statistic returned {value} {where}")
    return value


def _arm_sizes(n_control: object, n_treatment: object | None) -> tuple[int, int]:
    nc = check_positive_int("n_control", n_control)
    nt = nc if n_treatment is None else check_positive_int("n_treatment", n_treatment)
    return nc, nt


def _check_stddev(stddev: object) -> float:
    if not isinstance(stddev, (int, float, np.floating, np.integer)) or not (
        np.isfinite(stddev) and stddev > 0
    ):
        raise ValueError(f"stddev must be finite and > 0, got {stddev!r}")
    return float(stddev)


def power(
    effect: float,
    stddev: float,
    n_control: int,
    n_treatment: int | None = None,
    *,
    alpha: float = 0.05,
) -> float:
    """Power of the two-sided two-sample test to detect an absolute difference ``effect``.

    Normal approximation with a common per-user standard deviation (for a ratio metric, the
    ``stderr * sqrt(n)`` of :func:`ratio_estimate`).

    Args:
        effect: the true difference (treatment - control), in the metric's unit.
        stddev: per-user standard deviation of the metric, > 0.
        n_control: users in control, >= 1.
        n_treatment: users in treatment; default the same as control.
        alpha: two-sided significance level.
    """
    if not np.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect!r}")
    sd = _check_stddev(stddev)
    nc, nt = _arm_sizes(n_control, n_treatment)
    alpha = check_alpha(alpha)
    shift = abs(effect) / (sd * np.sqrt(1 / nc + 1 / nt))
    z = special.ndtri(1 - alpha / 2)
    return float(special.ndtr(shift - z) + special.ndtr(-shift - z))


def minimum_detectable_effect(
    stddev: float,
    n_control: int,
    n_treatment: int | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest absolute difference detected with probability ``power`` (two-sided test).

    ``(z_{1-alpha/2} + z_power) * stddev * sqrt(1/n_control + 1/n_treatment)``; arguments as in
    :func:`power`. Divide by the control mean for a relative MDE.
    """
    sd = _check_stddev(stddev)
    nc, nt = _arm_sizes(n_control, n_treatment)
    alpha = check_alpha(alpha)
    if not (isinstance(power, (int, float)) and 0 < power < 1):
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    z = special.ndtri(1 - alpha / 2) + special.ndtri(power)
    return float(z * sd * np.sqrt(1 / nc + 1 / nt))
