"""Debiasing and off-policy estimators, A/B statistics and offline ranking metrics.

Plain functions over arrays, each returning a value with its uncertainty (an :class:`Estimate`,
or an :class:`ABResult` for an A/B comparison). This package imports nothing from the rest of
satbed: give it arrays (numpy or pandas) from any log.

Modules, one concept each:
    base         Estimate and its two constructors (mean of terms, ratio of means)
    rates        questionnaire / satisfaction rates: naive, IPS, clipped IPS, SNIPS, DR, USM Eq. 13
    propensity   fitted exposure and survey-submit propensity models
    calibration  USM Eq. 10, reliability table, ECE
    ope          off-policy value of a ranking policy (item-position and slate level)
    ab           A/B statistics on user-randomised buckets
    ranking      HR@k, NDCG@k, MRR, AUC, GAUC, UAUC
"""

from .ab import (
    ABResult,
    SRMResult,
    adjust_pvalues,
    bootstrap_ci,
    cuped,
    mean_difference,
    mean_estimate,
    minimum_detectable_effect,
    power,
    ratio_difference,
    ratio_estimate,
    srm_test,
)
from .base import Estimate
from .calibration import (
    CalibrationReport,
    calibration_report,
    calibration_table,
    expected_calibration_error,
    mean_calibration,
)
from .ope import ope_dr, ope_ips, ope_snips, slate_independent_ips, slate_standard_ips
from .propensity import LogisticPropensity, fit_exposure_propensity, fit_submit_propensity
from .ranking import auc, gauc, hit_rate, mrr, ndcg, per_user_auc, uauc
from .rates import clipped_ips, doubly_robust, ips, naive, snips, usm_debiased_rate

__all__ = [
    # base
    "Estimate",
    # rates
    "naive",
    "ips",
    "clipped_ips",
    "snips",
    "doubly_robust",
    "usm_debiased_rate",
    # propensity
    "LogisticPropensity",
    "fit_exposure_propensity",
    "fit_submit_propensity",
    # calibration
    "CalibrationReport",
    "calibration_report",
    "calibration_table",
    "expected_calibration_error",
    "mean_calibration",
    # off-policy evaluation
    "ope_ips",
    "ope_snips",
    "ope_dr",
    "slate_standard_ips",
    "slate_independent_ips",
    # A/B statistics
    "ABResult",
    "SRMResult",
    "mean_estimate",
    "ratio_estimate",
    "mean_difference",
    "ratio_difference",
    "cuped",
    "srm_test",
    "adjust_pvalues",
    "bootstrap_ci",
    "power",
    "minimum_detectable_effect",
    # ranking
    "hit_rate",
    "ndcg",
    "mrr",
    "auc",
    "per_user_auc",
    "gauc",
    "uauc",
]
