"""Bad-input table: every public function rejects unusable input with a message naming it.

Each row is ``(function, args, kwargs, error type, message fragment)``. The last test checks
that every public function of the package has at least one row.
"""

import math

import numpy as np
import pytest

import estimators as est
from estimators import Estimate

R = np.array([1.0, 0.0, 1.0, 1.0])  # reward
O = np.array([1, 1, 0, 1])  # observed
P = np.array([0.5, 0.4, 0.5, 0.8])  # pscore
E = np.array([0.2, 0.4, 0.1, 0.3])  # action_dist
X = np.array([[0.1], [0.5], [-0.3], [1.2]])  # features
NEG = np.array([[0.1, 0.2], [0.3, 0.0], [0.5, 0.5], [0.0, 0.9]])  # negative_scores


def _with(arr: np.ndarray, index: int, value: float) -> np.ndarray:
    out = arr.astype(float).copy()
    out[index] = value
    return out


def case(func, *args, match, exc=ValueError, **kwargs):
    return pytest.param(func, args, kwargs, exc, match, id=f"{func.__name__}: {match}")


CASES = [
    # --- rates ---
    case(est.naive, R, O[:3], match=r"reward and observed must have the same length, got 4 and 3"),
    case(est.naive, [], [], match="reward must not be empty"),
    case(est.naive, R, [1, 0, 0, 0], match="observed must mark at least 2 responses, got 1"),
    case(est.naive, R, [1, 2, 0, 1], match=r"observed must be 0 or 1, got 2.0 at index 1"),
    case(est.naive, R, O, alpha=0.0, match=r"alpha must be in \(0, 1\), got 0.0"),
    case(est.ips, R, O, P[:3], match="reward and pscore must have the same length, got 4 and 3"),
    case(est.ips, R, O, _with(P, 2, 0.0), match=r"pscore must be in \(0, 1\], got 0.0 at index 2"),
    case(est.ips, R, O, _with(P, 0, 1.5), match=r"pscore must be in \(0, 1\], got 1.5 at index 0"),
    case(est.ips, R, O, _with(P, 3, -0.2),
         match=r"pscore must be in \(0, 1\], got -0.2 at index 3"),
    case(est.ips, R, O, _with(P, 1, np.nan), match="pscore must be finite, got nan at index 1"),
    case(est.ips, R, [0, 0, 0, 0], P, match="observed must mark at least one observed unit"),
    case(est.ips, _with(R, 1, np.nan), O, P,
         match="reward must be finite where observed is 1, got nan at index 1"),
    case(est.ips, [[1.0, 0.0]], [[1, 1]], [[0.5, 0.5]],
         match=r"reward must be 1-D, got shape \(1, 2\)"),
    case(est.ips, ["a", "b"], [1, 1], [1, 1], match="reward must be numeric"),
    case(est.clipped_ips, R, O, P, max_weight=0.0, match=r"max_weight must be > 0 .* got 0.0"),
    case(est.clipped_ips, R, O, P, max_weight=math.nan, match="max_weight must be > 0"),
    case(est.clipped_ips, R, O, _with(P, 0, 0.0), max_weight=5.0,
         match=r"pscore must be in \(0, 1\]"),
    case(est.snips, R, O, _with(P, 2, 2.0),
         match=r"pscore must be in \(0, 1\], got 2.0 at index 2"),
    case(est.snips, R[:1], O[:1], P[:1], match="reward must have at least 2 elements, got 1"),
    case(est.doubly_robust, R, O, P, E[:2],
         match="reward and imputed must have the same length, got 4 and 2"),
    case(est.doubly_robust, R, O, P, _with(E, 0, np.inf),
         match="imputed must be finite, got inf at index 0"),
    case(est.usm_debiased_rate, R, O, _with(P, 1, 0.0),
         match=r"submit_pscore must be in \(0, 1\], got 0.0 at index 1"),
    case(est.usm_debiased_rate, R, O[:2], P,
         match="answer and submitted must have the same length"),
    case(est.usm_debiased_rate, R, [0, 0, 0, 0], P, match="submitted must mark at least one"),
    # --- propensity ---
    case(est.LogisticPropensity, l2=-1.0, match=r"l2 must be finite and >= 0, got -1.0"),
    case(est.LogisticPropensity, max_iter=0, match="max_iter must be an integer >= 1, got 0"),
    case(est.LogisticPropensity().fit, X[:, 0], O, match=r"features must be 2-D, got shape \(4,\)"),
    case(est.LogisticPropensity().fit, X, O[:3],
         match="features and target must have the same length, got 4 and 3"),
    case(est.LogisticPropensity().fit, X, [1, 1, 1, 1], match="target must contain both 0 and 1"),
    case(est.LogisticPropensity().fit, X, [0, 1, 0.5, 1],
         match="target must be 0 or 1, got 0.5 at index 2"),
    case(est.LogisticPropensity().fit, X, O, sample_weight=[1, -1, 1, 1],
         match=r"sample_weight must be >= 0, got -1.0 at index 1"),
    case(est.fit_exposure_propensity, X, O[:2],
         match="features and target must have the same length"),
    case(est.fit_exposure_propensity, _with(X, 0, np.nan), O,
         match=r"features must be finite, got nan at index \(0, 0\)"),
    case(est.fit_submit_propensity, X, [1, 0, 1, 1], [1, 1, 0, 0],
         match="submitted must be 0 where shown is 0, got 1 at index 1"),
    case(est.fit_submit_propensity, X, O, O[:3],
         match="features and submitted must have the same length"),
    # --- calibration ---
    case(est.mean_calibration, _with(P, 0, 1.5), O,
         match=r"prob must be in \[0, 1\], got 1.5 at index 0"),
    case(est.mean_calibration, P, [0, 0, 0, 0], match="label must contain at least one 1"),
    case(est.mean_calibration, P, O[:3],
         match="prob and label must have the same length, got 4 and 3"),
    case(est.weighted_calibration, _with(P, 0, 1.5), O, match=r"prob must be in \[0, 1\], got 1.5 at index 0"),
    case(est.weighted_calibration, P, [0, 2, 0, 1], match=r"label must be 0 or 1, got 2.0 at index 1"),
    case(est.weighted_calibration, P, O, _with(P, 2, -1.0), match=r"weight must be >= 0, got -1.0 at index 2"),
    case(est.weighted_calibration, P, O[:3], match="prob and label must have the same length, got 4 and 3"),
    case(est.calibration_table, P, O, n_bins=0, match="n_bins must be an integer >= 1, got 0"),
    case(est.calibration_table, P, O, strategy="kmeans", match="strategy must be one of"),
    case(est.expected_calibration_error, [], [], match="prob must not be empty"),
    case(est.expected_calibration_error, _with(P, 2, np.nan), O, match="prob must be finite"),
    case(est.calibration_report, P, O, n_bins=2.5, match="n_bins must be an integer >= 1"),
    # --- off-policy evaluation ---
    case(est.ope_ips, R, _with(P, 0, 0.0), E,
         match=r"pscore must be in \(0, 1\], got 0.0 at index 0"),
    case(est.ope_ips, R, P, _with(E, 1, -0.1),
         match=r"action_dist must be in \[0, 1\], got -0.1 at index 1"),
    case(est.ope_ips, R[:3], P, E,
         match="reward and pscore must have the same length, got 3 and 4"),
    case(est.ope_ips, R, P, E[:3], match=r"pscore and action_dist must have the same shape"),
    case(est.ope_ips, [], [], [], match="pscore must not be empty"),
    case(est.ope_ips, R, P, E, max_weight=-1.0, match="max_weight must be > 0"),
    case(est.ope_snips, R, P, np.zeros(4), match="action_dist must be > 0 for at least one row"),
    case(est.ope_snips, R, _with(P, 3, np.nan), E,
         match="pscore must be finite, got nan at index 3"),
    case(est.ope_dr, R, P, E, R[:3], R,
         match="reward and imputed must have the same length, got 4 and 3"),
    case(est.ope_dr, R, P, E, R, R[:2],
         match="reward and imputed_target must have the same length"),
    case(est.slate_standard_ips, R, np.ones((4, 2, 2)), np.ones((4, 2, 2)),
         match=r"pscore must be 1-D \(page probabilities\) or 2-D"),
    case(est.slate_standard_ips, R, NEG + 0.05, E, match="action_dist must be 2-D"),
    case(est.slate_standard_ips, R, P, E, max_weight=0, match="max_weight must be > 0"),
    case(est.slate_independent_ips, R, NEG + 0.05, NEG,
         match=r"reward must be 2-D, got shape \(4,\)"),
    case(est.slate_independent_ips, NEG, _with(NEG, 1, 0.0), NEG,
         match=r"pscore must be in \(0, 1\], got 0.0 at index \(1, 0\)"),
    case(est.ope_dm, [1.0], match="imputed_target must have at least 2 elements, got 1"),
    case(est.ope_dm, _with(R, 0, np.nan),
         match="imputed_target must be finite, got nan at index 0"),
    case(est.ope_sndr, R, P, np.zeros(4), R, R,
         match=r"action_dist must be > 0 for at least one row \(SNDR divides by sum\(w\)\)"),
    case(est.ope_sndr, R, P, E, R[:3], R,
         match="reward and imputed must have the same length, got 4 and 3"),
    case(est.ope_switch_dr, R, P, E, R, R, tau=-1.0,
         match=r"tau must be >= 0 \(inf for plain DR\), got -1.0"),
    case(est.ope_switch_dr, R, P, E, R, R, tau=math.nan, match="tau must be >= 0"),
    case(est.ope_dros, R, P, E, R, R, lambda_=-0.5, match="lambda_ must be >= 0 .* got -0.5"),
    case(est.ope_dros, R, _with(P, 0, 0.0), E, R, R, lambda_=1.0,
         match=r"pscore must be in \(0, 1\], got 0.0 at index 0"),
    case(est.slate_rips, R, NEG + 0.05, NEG, match=r"reward must be 2-D, got shape \(4,\)"),
    case(est.slate_rips, NEG, NEG, NEG,
         match=r"pscore_cascade must be in \(0, 1\], got 0.0 at index \(1, 1\)"),
    case(est.slate_rips, NEG, NEG + 0.05, NEG[:, :1],
         match="pscore_cascade and action_dist_cascade must have the same shape"),
    case(est.slate_rips, NEG, NEG + 0.05, NEG, max_weight=0, match="max_weight must be > 0"),
    case(est.slate_snrips, NEG, NEG + 0.05, np.c_[NEG[:, 0], np.zeros(4)],
         match="action_dist_cascade must be > 0 for at least one page at every position .* "
               "got none at position 1"),
    case(est.slate_snrips, NEG[:3], NEG + 0.05, NEG,
         match="reward and pscore_cascade must have the same length, got 3 and 4"),
    # --- OPE protocol, checker, synthetic data, obp adapter ---
    case(est.OPEData, reward=R, pscore=P[:3], match=r"pscore must have reward's shape \(4,\)"),
    case(est.OPEData, reward=R, pscore=_with(P, 1, 0.0), action_dist=E,
         match="pscore is 0 at index 1 where action_dist is 0.4"),
    case(est.register_estimator, "ips", est.ope_ips, match="'ips' is already registered"),
    case(est.make_estimator, est.ope_ips, needs=("reward", "propensity"),
         match="needs 'propensity', which is not a standard name"),
    case(est.get_estimator, "nope", exc=est.UnknownEstimatorError,
         match="unknown estimator 'nope'; registered: "),
    case(est.list_estimators, "slate", match="level must be one of"),
    case(est.standard_names, "slate", match="level must be one of"),
    case(est.check_estimator, "ips", [], match="needs at least 2 datasets, got 0"),
    case(est.check_estimator, "ips", [(R, 0.5)], exc=TypeError,
         match=r"dataset 0 must be an \(OPEData, truth\) pair"),
    case(est.synthetic_ope_datasets, 0, 10, 1, match="n_datasets must be an integer >= 1, got 0"),
    case(est.synthetic_ope_datasets, 2, 10, 1, level="page", page_len=6,
         match="page level needs page_len <= n_actions <= 8"),
    case(est.BanditFeedback, n_actions=1, action=[0], reward=[1.0], pscore=[1.0],
         match="n_actions must be an integer >= 2, got 1"),
    case(est.to_bandit_feedback, n_actions=2, action=[0, 2], reward=[1.0, 0.0],
         pscore=[0.5, 0.5], match=r"action must be in \[0, n_actions=2\), got 2.0 at index 1"),
    case(est.from_bandit_feedback, {"n_rounds": 1}, match="feedback lacks key"),
    # --- A/B statistics ---
    case(est.mean_estimate, [1.0], match="values must have at least 2 elements, got 1"),
    case(est.ratio_estimate, R, _with(P, 0, -1.0),
         match=r"denominator must be >= 0, got -1.0 at index 0"),
    case(est.ratio_estimate, R, np.zeros(4), match="denominator must have a positive sum"),
    case(est.mean_difference, [1.0], R, match="control must have at least 2 elements, got 1"),
    case(est.mean_difference, R, _with(R, 2, np.nan),
         match="treatment must be finite, got nan at index 2"),
    case(est.mean_difference, R, R, control_pre=R,
         match="control_pre and treatment_pre must be given together"),
    case(est.mean_difference, R, R, control_pre=R[:3], treatment_pre=R,
         match="control and control_pre must have the same length, got 4 and 3"),
    case(est.mean_difference, R, R, alpha=1.5, match=r"alpha must be in \(0, 1\), got 1.5"),
    case(est.ratio_difference, R, P[:3], R, P,
         match="num_control and den_control must have the same length, got 4 and 3"),
    case(est.ratio_difference, R, P, R, np.zeros(4),
         match="den_treatment must have a positive sum"),
    case(est.ratio_difference, [], [], R, P, match="num_control must not be empty"),
    case(est.cuped, R, P[:2], match="y and x_pre must have the same length, got 4 and 2"),
    case(est.cuped, R, P, theta=math.inf, match="theta must be finite, got inf"),
    case(est.srm_test, [50, -1], match=r"counts must be >= 0, got -1.0 at index 1"),
    case(est.srm_test, [100], match="counts must have at least 2 elements, got 1"),
    case(est.srm_test, [0, 0], match="counts must have a positive total"),
    case(est.srm_test, [50, 50], [0.5, 0.4], match="expected_shares must sum to 1"),
    case(est.srm_test, [50, 50], [1.0, 0.0],
         match=r"expected_shares must be > 0, got 0.0 at index 1"),
    case(est.srm_test, [50, 50], [0.3, 0.3, 0.4],
         match="counts and expected_shares must have the same length"),
    case(est.adjust_pvalues, [0.01, 1.2], match=r"pvalues must be in \[0, 1\], got 1.2 at index 1"),
    case(est.adjust_pvalues, [], match="pvalues must not be empty"),
    case(est.adjust_pvalues, [0.01], method="bonferroni", match="method must be one of"),
    case(est.bootstrap_ci, R, statistic=np.mean, rng=42, exc=TypeError,
         match="rng must be a numpy.random.Generator"),
    case(est.bootstrap_ci, R, statistic=np.mean, rng=np.random.default_rng(0), n_resamples=1,
         match="n_resamples must be >= 2, got 1"),
    case(est.bootstrap_ci, [1.0], statistic=np.mean, rng=np.random.default_rng(0),
         match=r"samples\[0\] must have at least 2 elements, got 1"),
    case(est.bootstrap_ci, R, statistic=lambda a: np.nan, rng=np.random.default_rng(0),
         match="statistic returned nan on the data"),
    case(est.bootstrap_ci, [1.0, 2.0], rng=np.random.default_rng(0),  # inf once both rows match
         statistic=lambda a: np.inf if a.min() == a.max() else 1.0,
         match="statistic returned inf on a resample"),
    case(est.bootstrap_ci, statistic=np.mean, rng=np.random.default_rng(0),
         match="at least one sample"),
    case(est.power, 0.1, 0.0, 100, match="stddev must be finite and > 0, got 0.0"),
    case(est.power, 0.1, 1.0, 0, match="n_control must be an integer >= 1, got 0"),
    case(est.power, math.nan, 1.0, 10, match="effect must be finite, got nan"),
    case(est.power, 0.1, 1.0, 10, 10, alpha=0, match=r"alpha must be in \(0, 1\)"),
    case(est.minimum_detectable_effect, 1.0, 100, power=1.0,
         match=r"power must be in \(0, 1\), got 1.0"),
    case(est.minimum_detectable_effect, 1.0, 100, -5,
         match="n_treatment must be an integer >= 1, got -5"),
    # --- ranking ---
    case(est.hit_rate, R, NEG, k=0, match="k must be an integer >= 1, got 0"),
    case(est.weighted_auc, [0, 2, 1, 1], P, match=r"label must be 0 or 1, got 2.0 at index 1"),
    case(est.weighted_auc, O, _with(P, 1, np.nan), match=r"score must be finite, got nan at index 1"),
    case(est.weighted_auc, O, P, _with(P, 3, -0.5), match=r"weight must be >= 0, got -0.5 at index 3"),
    case(est.weighted_auc, O, P[:3], match="label and score must have the same length, got 4 and 3"),
    case(est.sampled_rank_metrics, NEG, k=0, match="k must be an integer >= 1, got 0"),
    case(est.sampled_rank_metrics, R, match=r"scores must have shape \(n >= 1, 1 \+ K >= 2\), got \(4,\)"),
    case(est.hit_rate, R, NEG, k=1.5, match="k must be an integer >= 1, got 1.5"),
    case(est.hit_rate, R, NEG[:3], k=1,
         match="positive_score and negative_scores must have the same length, got 4 and 3"),
    case(est.hit_rate, R, NEG[:, :0], k=1, match="negative_scores must have at least one column"),
    case(est.ndcg, R, NEG, k=-1, match="k must be an integer >= 1, got -1"),
    case(est.ndcg, R, R, k=5, match=r"negative_scores must be 2-D, got shape \(4,\)"),
    case(est.mrr, [], np.empty((0, 3)), match="positive_score must not be empty"),
    case(est.mrr, _with(R, 0, np.nan), NEG,
         match="positive_score must be finite, got nan at index 0"),
    case(est.mrr, R, NEG, ties="random", match="ties must be one of"),
    case(est.auc, [1, 1, 1], [0.2, 0.3, 0.1],
         match="label must contain both 0 and 1, got 3 ones and 0 zeros"),
    case(est.auc, O, P[:3], match="label and score must have the same length, got 4 and 3"),
    case(est.per_user_auc, [1, None, 2, 2], O, P,
         match="user must not contain missing ids, got one at index 1"),
    case(est.per_user_auc, [1, 1, 2], O, P,
         match="user and label must have the same length, got 3 and 4"),
    case(est.gauc, [1, 1, 2, 2], [1, 0, 1, 1], P, match="gauc needs at least 2 users .* got 1"),
    case(est.uauc, [1, 1, 2, 2], O, _with(P, 1, np.inf),
         match="score must be finite, got inf at index 1"),
    # --- pooling over replications (non-finite runs are left out, not errors) ---
    case(est.mean_ci, [0.1, 0.2], alpha=1.0, match=r"alpha must be in \(0, 1\), got 1.0"),
    case(est.wilson, 5, 4, match=r"successes must be in \[0, n=4\], got 5"),
    case(est.wilson, -1, 4, match=r"successes must be in \[0, n=4\], got -1"),
    case(est.wilson, 1, 4, alpha=0.0, match=r"alpha must be in \(0, 1\), got 0.0"),
    case(est.world_means, R, P, [0, 0, 1],
         match="estimates and world_seeds must have the same length, got 4 and 3"),
    case(est.spread_sources, R, P[:1], [0, 0, 1, 1],
         match="estimates and stderrs must have the same length, got 4 and 1"),
    case(est.random_effects, R, P[:3],
         match="estimates and stderrs must have the same length, got 4 and 3"),
    case(est.normal_p, 0.1, -0.2, match=r"stderr must be >= 0, got -0.2"),
    case(est.z_value, 1.5, match=r"alpha must be in \(0, 1\), got 1.5"),
    # --- Estimate constructors ---
    case(Estimate.from_terms, [1.0], match="terms must have at least 2 elements, got 1"),
    case(Estimate.from_ratio, R, [1.0, -1.0, 0.0, 0.0], match="denominator must not sum to 0"),
    case(Estimate.normal, 1.0, -0.1, 10, match="stderr must be finite and >= 0, got -0.1"),
]


@pytest.mark.parametrize(("func", "args", "kwargs", "exc", "match"), CASES)
def test_bad_input_is_rejected_with_a_message_naming_it(func, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        func(*args, **kwargs)


def test_every_public_function_has_a_bad_input_row():
    covered = {getattr(p.values[0], "__name__", None) for p in CASES}
    public = {
        name for name in est.__all__
        if callable(getattr(est, name))
        and name not in {"Estimate", "ABResult", "SRMResult", "CalibrationReport", "CheckReport",
                         "RegisteredEstimator", "UnknownEstimatorError"}  # records, an error
    }
    assert public - covered == set()
