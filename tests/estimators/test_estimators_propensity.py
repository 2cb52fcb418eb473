"""Propensity models: agree with statsmodels, recover the truth, calibrated, deterministic."""

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit

import estimators as est


def _logistic_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features = np.column_stack([rng.normal(size=n), rng.exponential(2.0, size=n), rng.random(n)])
    coef = np.array([0.8, -0.5, 1.5])
    target = rng.random(n) < expit(-1.0 + features @ coef)
    return features, target, coef


def test_unpenalised_fit_matches_statsmodels_logit():
    features, target, _ = _logistic_data(np.random.default_rng(0), 5000)
    model = est.LogisticPropensity(l2=0.0).fit(features, target)
    reference = sm.Logit(target.astype(float), sm.add_constant(features)).fit(disp=0).params
    assert model.converged_
    np.testing.assert_allclose(model.intercept_, reference[0], atol=1e-5)
    np.testing.assert_allclose(model.coef_, reference[1:], atol=1e-5)


def test_recovers_the_true_coefficients_on_a_large_sample():
    features, target, coef = _logistic_data(np.random.default_rng(1), 200_000)
    model = est.LogisticPropensity(l2=1.0).fit(features, target)
    np.testing.assert_allclose(model.coef_, coef, atol=0.05)
    assert model.intercept_ == pytest.approx(-1.0, abs=0.05)


@pytest.mark.parametrize("l2", [0.0, 10.0, 1e4])
def test_unpenalised_intercept_makes_the_mean_prediction_the_training_rate(l2):
    # the intercept's score equation: sum(p - y) = 0, i.e. USM Eq. 10 calibration = 0
    features, target, _ = _logistic_data(np.random.default_rng(2), 3000)
    prob = est.LogisticPropensity(l2=l2).fit(features, target).predict_proba(features)
    assert prob.mean() == pytest.approx(target.mean(), abs=1e-6)
    assert est.mean_calibration(prob, target).value == pytest.approx(0.0, abs=1e-5)


def test_l2_shrinks_the_coefficients():
    features, target, _ = _logistic_data(np.random.default_rng(3), 3000)
    norms = [
        np.linalg.norm(est.LogisticPropensity(l2=l2).fit(features, target).coef_)
        for l2 in (0.0, 100.0, 1e4, 1e6)
    ]
    assert all(a > b for a, b in zip(norms, norms[1:])), norms
    assert norms[-1] < 0.01 * norms[0]


def test_fitting_twice_gives_the_same_model_and_fit_returns_self():
    features, target, _ = _logistic_data(np.random.default_rng(4), 2000)
    model = est.LogisticPropensity()
    assert model.fit(features, target) is model
    first = (model.coef_.copy(), model.intercept_)
    model.fit(features, target)
    np.testing.assert_array_equal(model.coef_, first[0])
    assert model.intercept_ == first[1]


def test_integer_sample_weights_equal_duplicated_rows():
    rng = np.random.default_rng(5)
    features, target, _ = _logistic_data(rng, 1000)
    weight = rng.integers(1, 4, size=1000)
    weighted = est.LogisticPropensity(l2=0.0).fit(features, target, sample_weight=weight)
    repeated = est.LogisticPropensity(l2=0.0).fit(
        np.repeat(features, weight, axis=0), np.repeat(target, weight)
    )
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-5)


def test_predict_before_fit_and_wrong_width_raise():
    model = est.LogisticPropensity()
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict_proba(np.zeros((2, 3)))
    features, target, _ = _logistic_data(np.random.default_rng(6), 500)
    model.fit(features, target)
    with pytest.raises(ValueError, match="features must have 3 columns"):
        model.predict_proba(np.zeros((2, 2)))


def test_hitting_max_iter_warns():
    features, target, _ = _logistic_data(np.random.default_rng(9), 2000)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 iterations"):
        model = est.LogisticPropensity(max_iter=1).fit(features, target)
    assert not model.converged_


def test_l2_keeps_separable_data_finite():
    # without a penalty the likelihood of separable data has no maximum: the slope runs off
    # (and the propensities go to 0 or 1); a penalty keeps it moderate
    features = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    target = np.array([0, 0, 1, 1])
    assert abs(est.LogisticPropensity(l2=0.0).fit(features, target).coef_[0]) > 10
    penalised = est.LogisticPropensity(l2=1.0).fit(features, target)
    assert penalised.converged_ and 0.5 < penalised.coef_[0] < 3


def test_intercept_only_model_predicts_the_rate():
    target = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    model = est.LogisticPropensity(l2=0.0).fit(np.empty((8, 0)), target)
    np.testing.assert_allclose(model.predict_proba(np.empty((3, 0))), 0.25, atol=1e-7)


def test_submit_model_is_fitted_on_shown_rows_only():
    rng = np.random.default_rng(7)
    features, submitted, _ = _logistic_data(rng, 4000)
    shown = rng.random(4000) < 0.4
    submitted = submitted & shown
    model = est.fit_submit_propensity(features, shown, submitted)
    direct = est.LogisticPropensity().fit(features[shown], submitted[shown])
    np.testing.assert_array_equal(model.coef_, direct.coef_)
    # whatever the features of rows without a questionnaire, the model does not change
    scrambled = features.copy()
    scrambled[~shown] = rng.normal(size=((~shown).sum(), 3)) * 100
    np.testing.assert_array_equal(
        est.fit_submit_propensity(scrambled, shown, submitted).coef_, model.coef_
    )


def test_exposure_model_calibration_report_on_held_out_rows():
    rng = np.random.default_rng(8)
    features, shown, _ = _logistic_data(rng, 40_000)
    model = est.fit_exposure_propensity(features[:20_000], shown[:20_000])
    report = est.calibration_report(model.predict_proba(features[20_000:]), shown[20_000:])
    assert report.ece < 0.02
    # (its interval is for the held-out rows only; the model's own fitting error is not in it)
    assert abs(report.mean_calibration.value) < 0.05
    assert report.auc.value > 0.7
    # a model that ignores the features is calibrated in the mean but ranks at chance
    flat = est.LogisticPropensity().fit(np.empty((20_000, 0)), shown[:20_000])
    flat_report = est.calibration_report(flat.predict_proba(np.empty((20_000, 0))), shown[20_000:])
    assert flat_report.auc.value == pytest.approx(0.5)
