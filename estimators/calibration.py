"""Calibration of predicted probabilities: USM's mean calibration, reliability table, ECE.

Common arguments:

- ``prob``: (n,) predicted probabilities in [0, 1] (a propensity, submit or survey model).
- ``label``: (n,) 0/1 observed outcomes for the same rows.
- ``n_bins`` / ``strategy``: the reliability bins. ``"uniform"`` cuts [0, 1] into equal-width
  bins (empty ones are left out of the table); ``"quantile"`` sorts the rows by ``prob`` and cuts
  them into bins of equal count (sizes differ by at most one), which suits skewed propensities
  such as a 1% show rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._validation import (
    as_binary,
    as_float_array,
    check_choice,
    check_nonnegative,
    check_positive_int,
    check_probability,
    check_same_length,
)
from .base import Estimate
from .ranking import auc

_STRATEGIES = ("uniform", "quantile")


def _inputs(prob: object, label: object) -> tuple[np.ndarray, np.ndarray]:
    p = check_probability("prob", as_float_array("prob", prob))
    y = as_binary("label", label)
    check_same_length({"prob": p, "label": y})
    return p, y.astype(np.float64)


def mean_calibration(prob: object, label: object, *, alpha: float = 0.05) -> Estimate:
    """USM Eq. 10: ``avg(prob) / avg(label) - 1``; 0 is calibrated in the mean, > 0 over-predicts.

    The standard error is the delta method for a ratio of two means over the same rows.

    Raises:
        ValueError: if ``label`` has no 1 (Eq. 10 divides by its mean) or fewer than 2 rows.
    """
    p, y = _inputs(prob, label)
    if not y.any():
        raise ValueError("label must contain at least one 1 (USM Eq. 10 divides by avg(label))")
    ratio = Estimate.from_ratio(p, y, alpha=alpha)
    return Estimate(ratio.value - 1, ratio.stderr, ratio.ci_low - 1, ratio.ci_high - 1, ratio.n)


def calibration_table(
    prob: object, label: object, *, n_bins: int = 10, strategy: str = "uniform"
) -> pd.DataFrame:
    """Reliability table: one row per non-empty bin of predicted probability.

    Returns:
        DataFrame with columns ``bin`` (0-based), ``prob_low`` / ``prob_high`` (the smallest and
        largest prediction in the bin), ``count``, ``mean_predicted`` and ``observed_rate``.
    """
    p, y = _inputs(prob, label)
    n_bins = check_positive_int("n_bins", n_bins)
    strategy = check_choice("strategy", strategy, _STRATEGIES)
    if strategy == "uniform":
        bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # prob = 1 -> last bin
    else:
        order = np.argsort(p, kind="stable")
        bins = np.empty(len(p), dtype=np.int64)
        bins[order] = np.arange(len(p)) * n_bins // len(p)  # equal-count bins
    frame = pd.DataFrame({"bin": bins, "prob": p, "label": y})
    table = frame.groupby("bin", sort=True).agg(
        prob_low=("prob", "min"),
        prob_high=("prob", "max"),
        count=("prob", "size"),
        mean_predicted=("prob", "mean"),
        observed_rate=("label", "mean"),
    )
    return table.reset_index()


def expected_calibration_error(
    prob: object, label: object, *, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """ECE: ``sum_b count_b / n * |mean_predicted_b - observed_rate_b|`` over the table's bins."""
    return _ece(calibration_table(prob, label, n_bins=n_bins, strategy=strategy))


def _ece(table: pd.DataFrame) -> float:
    gap = (table["mean_predicted"] - table["observed_rate"]).abs()
    return float((table["count"] * gap).sum() / table["count"].sum())


@dataclass(frozen=True)
class CalibrationReport:
    """What to look at before using a model's predictions as propensities.

    Attributes:
        mean_calibration: USM Eq. 10, with its interval.
        ece: expected calibration error over ``table``'s bins.
        auc: ranking quality (DeLong interval); a propensity model can be calibrated yet
            uninformative (AUC 0.5), which makes IPS no better than the naive mean.
        table: the reliability table (see :func:`calibration_table`).
    """

    mean_calibration: Estimate
    ece: float
    auc: Estimate
    table: pd.DataFrame


def calibration_report(
    prob: object,
    label: object,
    *,
    n_bins: int = 10,
    strategy: str = "quantile",
    alpha: float = 0.05,
) -> CalibrationReport:
    """Mean calibration, ECE, AUC and the reliability table of ``prob`` against ``label``."""
    table = calibration_table(prob, label, n_bins=n_bins, strategy=strategy)
    return CalibrationReport(
        mean_calibration=mean_calibration(prob, label, alpha=alpha),
        ece=_ece(table),
        auc=auc(label, prob, alpha=alpha),
        table=table,
    )


def weighted_calibration(prob: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> float:
    """USM Eq. 10, ``avg(p) / avg(y) - 1``, with sample weights (e.g. IPW); NaN if no positive.

    A plain float for training loops and tables; :func:`mean_calibration` is the unweighted value
    with its delta-method interval.
    """
    p = check_probability("prob", as_float_array("prob", prob, min_len=0))          # empty: NaN
    y = as_binary("label", label, min_len=0).astype(np.float64)
    w = np.ones(len(p)) if weight is None else \
        check_nonnegative("weight", as_float_array("weight", weight, min_len=0))
    check_same_length({"prob": p, "label": y, "weight": w})
    den = (w * y).sum()
    return float((w * p).sum() / den - 1.0) if den > 0 else float("nan")
