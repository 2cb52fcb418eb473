"""Debiasing and off-policy estimators, A/B statistics and offline ranking metrics.

Plain functions over arrays, each returning a value with its uncertainty (an :class:`Estimate`,
or an :class:`ABResult` for an A/B comparison). This package imports nothing from the rest of
satbed: give it arrays (numpy or pandas) from any log.

Modules, one concept each:
    base         Estimate and its two constructors (mean of terms, ratio of means)
    rates        questionnaire / satisfaction rates: naive, IPS, clipped IPS, SNIPS, DR, USM Eq. 13
    propensity   fitted exposure and survey-submit propensity models
    calibration  USM Eq. 10, reliability table, ECE
    ope          off-policy value of a ranking policy: IPS, SNIPS, DM, DR, SNDR, Switch-DR, DRos
                 (item-position) and standard, independent, RIPS, SNRIPS (slate)
    registry     the OPE estimator protocol: OPEData (standard named arrays) and the registry
    checks       check_estimator: bias, RMSE and interval coverage against known truths
    synthetic    seeded synthetic OPE datasets with an exactly known target value
    obp_adapter  to and from Open Bandit Pipeline's bandit_feedback dict
    ab           A/B statistics on user-randomised buckets
    pooling      summaries over replications: t and Wilson intervals, pooling over worlds
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
    weighted_calibration,
)
from .checks import CheckReport, check_estimator
from .obp_adapter import BanditFeedback, from_bandit_feedback, to_bandit_feedback
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
from .pooling import mean_ci, normal_p, random_effects, spread_sources, wilson, world_means, z_value
from .propensity import LogisticPropensity, fit_exposure_propensity, fit_submit_propensity
from .ranking import auc, gauc, hit_rate, mrr, ndcg, per_user_auc, sampled_rank_metrics, uauc, weighted_auc
from .rates import clipped_ips, doubly_robust, ips, naive, snips, usm_debiased_rate
from .registry import (
    OPEData,
    RegisteredEstimator,
    UnknownEstimatorError,
    get_estimator,
    list_estimators,
    make_estimator,
    register_estimator,
    standard_names,
)
from .synthetic import synthetic_ope_datasets

__all__ = [
    "ABResult",
    "adjust_pvalues",
    "auc",
    "BanditFeedback",
    "bootstrap_ci",
    "calibration_report",
    "calibration_table",
    "CalibrationReport",
    "check_estimator",
    "CheckReport",
    "clipped_ips",
    "cuped",
    "doubly_robust",
    "Estimate",
    "expected_calibration_error",
    "fit_exposure_propensity",
    "fit_submit_propensity",
    "from_bandit_feedback",
    "gauc",
    "get_estimator",
    "hit_rate",
    "ips",
    "list_estimators",
    "LogisticPropensity",
    "make_estimator",
    "mean_calibration",
    "mean_ci",
    "mean_difference",
    "mean_estimate",
    "minimum_detectable_effect",
    "mrr",
    "naive",
    "ndcg",
    "normal_p",
    "ope_dm",
    "ope_dr",
    "ope_dros",
    "ope_ips",
    "ope_sndr",
    "ope_snips",
    "ope_switch_dr",
    "OPEData",
    "per_user_auc",
    "power",
    "random_effects",
    "ratio_difference",
    "ratio_estimate",
    "register_estimator",
    "RegisteredEstimator",
    "sampled_rank_metrics",
    "slate_independent_ips",
    "slate_rips",
    "slate_snrips",
    "slate_standard_ips",
    "snips",
    "spread_sources",
    "srm_test",
    "SRMResult",
    "standard_names",
    "synthetic_ope_datasets",
    "to_bandit_feedback",
    "uauc",
    "UnknownEstimatorError",
    "usm_debiased_rate",
    "weighted_auc",
    "weighted_calibration",
    "wilson",
    "world_means",
    "z_value",
]
