"""USM's offline metrics on labelled samples: AUC and calibration (Eq. 10), IPW-weighted with
``weight = 1 / P̂(submit | shown)`` (Tables 1-2), from :mod:`estimators`. Design: docs/notes/usm.md.
"""
from __future__ import annotations

import numpy as np

from estimators import weighted_auc, weighted_calibration


def labelled_metrics(prob: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """AUC and calibration (Eq. 10) of a head on labelled samples (USM Tables 1-2).

    With ``weight = 1 / P̂(submit | shown)`` (:func:`policies.usm.examples.ipw_weights`) both are the IPW-weighted
    variants: estimates over every shown questionnaire, answered or not, rather than over the
    respondents.
    """
    return {"auc": weighted_auc(label, prob, weight), "calibration": weighted_calibration(prob, label, weight),
            "n": int(len(label)), "positives": int(np.asarray(label).sum())}

