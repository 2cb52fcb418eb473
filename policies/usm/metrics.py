"""USM's offline metrics on labelled samples: weighted AUC and calibration (Eq. 10), IPW-weighted with
``weight = 1 / P̂(submit | shown)`` (Tables 1-2). Design: docs/notes/usm.md.
"""
from __future__ import annotations

import numpy as np


def weighted_auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """ROC AUC with sample weights: weighted share of (positive, negative) pairs ordered right,
    ties counting one half. NaN if a class is missing."""
    y = np.asarray(label).astype(bool)
    s = np.asarray(score, np.float64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, np.float64)
    wp, wn = w[y].sum(), w[~y].sum()
    if wp <= 0 or wn <= 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    new = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(new) - 1                                                 # tie groups
    neg_in_group = np.bincount(group, weights=w * ~y)
    neg_below = np.cumsum(neg_in_group) - neg_in_group                         # negatives with a lower score
    pos = y
    correct = (w[pos] * (neg_below[group[pos]] + 0.5 * neg_in_group[group[pos]])).sum()
    return float(correct / (wp * wn))


def calibration(prob: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> float:
    """USM Eq. 10, ``avg(p) / avg(y) - 1`` (weighted averages with ``weight``); NaN if no positive."""
    p, y = np.asarray(prob, np.float64), np.asarray(label, np.float64)
    w = np.ones(len(p)) if weight is None else np.asarray(weight, np.float64)
    den = (w * y).sum()
    return float((w * p).sum() / den - 1.0) if den > 0 else float("nan")


def labelled_metrics(prob: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """AUC and calibration (Eq. 10) of a head on labelled samples (USM Tables 1-2).

    With ``weight = 1 / P̂(submit | shown)`` (:func:`policies.usm.examples.ipw_weights`) both are the IPW-weighted
    variants: estimates over every shown questionnaire, answered or not, rather than over the
    respondents.
    """
    return {"auc": weighted_auc(label, prob, weight), "calibration": calibration(prob, label, weight),
            "n": int(len(label)), "positives": int(np.asarray(label).sum())}

