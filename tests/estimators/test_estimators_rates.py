"""Questionnaire-rate estimators: exact reductions, and bias under MNAR responses vs the truth."""

import math

import numpy as np
import pytest
from scipy.special import expit

import estimators as est


def _mnar_questionnaire(rng: np.random.Generator, reps: int, n: int) -> dict[str, np.ndarray]:
    """(reps, n) arrays of a synthetic questionnaire whose satisfied users answer more.

    x is an observable user feature; satisfaction depends on it, and the response probability
    depends on x *and on the satisfaction itself* (missing not at random): about 0.3 for
    satisfied and 0.08 for dissatisfied users.
    """
    x = rng.normal(size=(reps, n))
    p_sat = expit(0.3 + 2.0 * x)
    satisfied = (rng.random((reps, n)) < p_sat).astype(np.float64)
    pscore = expit(-2.5 + 1.6 * satisfied + 0.4 * x)
    observed = rng.random((reps, n)) < pscore
    return {"x": x, "p_sat": p_sat, "satisfied": satisfied, "pscore": pscore, "observed": observed}


# --- exact reductions -------------------------------------------------------------------------


def test_ips_with_all_propensities_one_is_the_naive_mean():
    rng = np.random.default_rng(1)
    reward = rng.normal(size=50)
    ones = np.ones(50)
    assert est.ips(reward, ones, ones).value == pytest.approx(reward.mean(), abs=1e-12)
    assert est.naive(reward, ones).value == pytest.approx(reward.mean(), abs=1e-12)
    assert est.ips(reward, ones, ones).stderr == pytest.approx(est.naive(reward, ones).stderr)


def test_snips_of_a_constant_reward_is_that_constant():
    rng = np.random.default_rng(2)
    pscore = rng.uniform(0.05, 1.0, size=200)
    observed = rng.random(200) < pscore
    result = est.snips(np.full(200, 0.37), observed, pscore)
    assert result.value == pytest.approx(0.37, abs=1e-12)
    assert result.stderr == pytest.approx(0.0, abs=1e-12)


def test_doubly_robust_with_the_true_outcomes_is_the_truth():
    # the "true outcome model" of a realised sample is each unit's realised outcome
    rng = np.random.default_rng(3)
    reward = (rng.random(300) < 0.6).astype(float)
    pscore = rng.uniform(0.01, 1.0, size=300)
    observed = rng.random(300) < pscore
    result = est.doubly_robust(reward, observed, pscore, imputed=reward)
    assert result.value == pytest.approx(reward.mean(), abs=1e-12)
    # what is left is the sampling error of the units themselves, as with no missing data
    full = est.naive(reward, np.ones(300))
    assert result.stderr == pytest.approx(full.stderr, rel=1e-9)


def test_clipping_at_infinity_is_plain_ips():
    rng = np.random.default_rng(4)
    pscore = rng.uniform(0.01, 1.0, size=100)
    observed = rng.random(100) < pscore
    reward = rng.normal(size=100)
    assert est.clipped_ips(reward, observed, pscore, max_weight=math.inf) == est.ips(
        reward, observed, pscore
    )


def test_clipped_ips_is_saqrec_eq6_and_clipping_at_one_is_the_unweighted_sum():
    rng = np.random.default_rng(5)
    pscore = rng.uniform(0.01, 1.0, size=100)
    observed = rng.random(100) < pscore
    reward = rng.random(100)
    m = 0.2  # SAQRec Eq. 6 divides by max(pscore, M)
    expected = np.mean(observed * reward / np.maximum(pscore, m))
    assert est.clipped_ips(reward, observed, pscore, max_weight=1 / m).value == pytest.approx(
        expected, rel=1e-12
    )
    assert est.clipped_ips(reward, observed, pscore, max_weight=1.0).value == pytest.approx(
        np.sum(observed * reward) / 100, rel=1e-12
    )


def test_unobserved_rewards_are_ignored_even_if_nan():
    reward = np.array([1.0, np.nan, 0.0, np.nan, 1.0])
    observed = np.array([1, 0, 1, 0, 1])
    pscore = np.array([0.5, 0.2, 0.25, 0.9, 1.0])
    assert est.ips(reward, observed, pscore).value == pytest.approx((2 + 0 + 1) / 5)
    assert est.naive(reward, observed).value == pytest.approx(2 / 3)
    assert est.snips(reward, observed, pscore).value == pytest.approx(3 / (2 + 4 + 1))


def test_usm_eq13_by_hand():
    # two issue submissions (weights 1/0.5, 1/0.25) among three (plus 1/0.8); one not submitted
    answer = np.array([1, 1, 0, np.nan])
    submitted = np.array([1, 1, 1, 0])
    sub_pred = np.array([0.5, 0.25, 0.8, 0.1])
    expected = (2 + 4) / (2 + 4 + 1.25)
    assert est.usm_debiased_rate(answer, submitted, sub_pred).value == pytest.approx(expected)
    # and it is SNIPS over the shown questionnaires
    assert est.usm_debiased_rate(answer, submitted, sub_pred) == est.snips(
        answer, submitted, sub_pred
    )


# --- unbiasedness against the truth ------------------------------------------------------------


@pytest.mark.slow
def test_mnar_naive_is_biased_weighting_estimators_are_not():
    reps, n = 400, 4000
    data = _mnar_questionnaire(np.random.default_rng(2024), reps, n)
    s, o, p = data["satisfied"], data["observed"], data["pscore"]
    wrong_model = expit(-0.8 + 1.0 * data["x"])  # wrong intercept and slope
    truth = s.mean(axis=1)  # the oracle: every unit's satisfaction, answered or not

    estimates = {
        "naive": [est.naive(s[i], o[i]) for i in range(reps)],
        "ips": [est.ips(s[i], o[i], p[i]) for i in range(reps)],
        "snips": [est.snips(s[i], o[i], p[i]) for i in range(reps)],
        "dr": [est.doubly_robust(s[i], o[i], p[i], data["p_sat"][i]) for i in range(reps)],
        "dr_wrong": [est.doubly_robust(s[i], o[i], p[i], wrong_model[i]) for i in range(reps)],
    }
    errors = {k: np.array([e.value for e in v]) - truth for k, v in estimates.items()}
    z = {k: e.mean() / (e.std(ddof=1) / np.sqrt(reps)) for k, e in errors.items()}
    rmse = {k: float(np.sqrt(np.mean(e**2))) for k, e in errors.items()}
    for k, e in errors.items():
        print(f"{k}: mean error {e.mean():+.5f} (z {z[k]:+.2f}), RMSE {rmse[k]:.4f}")

    assert errors["naive"].mean() > 0.2  # satisfied users answer more: visibly too high
    assert z["naive"] > 50
    for name in ("ips", "snips", "dr", "dr_wrong"):
        assert abs(z[name]) < 3, (name, errors[name].mean(), z[name])
    # the wrong imputation model is really wrong: on its own (direct method) it is far off ...
    assert abs((wrong_model.mean(axis=1) - truth).mean()) > 0.1
    # ... yet DR built on it stays unbiased and beats IPS on RMSE
    assert rmse["dr_wrong"] < 0.95 * rmse["ips"], rmse
    # the standard errors are honest: 95% intervals cover the truth about 95% of the time
    for name in ("ips", "snips", "dr", "dr_wrong"):
        coverage = np.mean([e.contains(t) for e, t in zip(estimates[name], truth)])
        print(f"{name}: 95% interval coverage {coverage:.3f}")
        assert 0.92 <= coverage <= 0.98, (name, coverage)


@pytest.mark.slow
def test_ips_with_an_estimated_propensity_is_unbiased_when_response_is_at_random():
    # missing at random given the observable features: a fitted model recovers the propensity
    reps, n = 300, 4000
    rng = np.random.default_rng(7)
    features = rng.uniform(-2, 2, size=(reps, n, 2))
    reward = (rng.random((reps, n)) < expit(2 * features[..., 0])).astype(float)
    true_p = expit(-1.0 + 0.8 * features[..., 0] + 0.4 * features[..., 1])
    observed = rng.random((reps, n)) < true_p
    fitted, known, naive = [], [], []
    for i in range(reps):
        model = est.fit_exposure_propensity(features[i], observed[i], l2=1.0)
        fitted.append(est.ips(reward[i], observed[i], model.predict_proba(features[i])).value)
        known.append(est.ips(reward[i], observed[i], true_p[i]).value)
        naive.append(est.naive(reward[i], observed[i]).value)
    truth = reward.mean(axis=1)
    err_fit, err_known, err_naive = (np.array(v) - truth for v in (fitted, known, naive))
    print(f"MAR, fitted propensity: IPS mean error {err_fit.mean():+.5f} "
          f"(se {err_fit.std(ddof=1) / np.sqrt(reps):.5f}, sd {err_fit.std():.4f}; "
          f"with the true propensity sd {err_known.std():.4f}); naive {err_naive.mean():+.4f}")
    assert abs(err_fit.mean()) < 3 * err_fit.std(ddof=1) / np.sqrt(reps)
    assert err_naive.mean() > 0.05
    # a known result (Hirano, Imbens & Ridder 2003): the fitted propensity is the more precise
    assert err_fit.std() < err_known.std()


@pytest.mark.slow
def test_usm_debiased_rate_removes_response_bias_naive_rate_does_not():
    # reluctant responders see more issues (USM Sec. 4.2): the raw survey issue rate is too low
    reps, n_shown = 300, 3000
    rng = np.random.default_rng(11)
    willingness = rng.normal(size=(reps, n_shown))
    issue = (rng.random((reps, n_shown)) < expit(-1.5 - 0.8 * willingness)).astype(float)
    p_submit = expit(-1.0 + 1.2 * willingness)
    submitted = rng.random((reps, n_shown)) < p_submit
    truth = issue.mean(axis=1)
    debiased = np.array([est.usm_debiased_rate(issue[i], submitted[i], p_submit[i]).value
                         for i in range(reps)]) - truth
    raw = np.array([est.naive(issue[i], submitted[i]).value for i in range(reps)]) - truth
    print(f"survey issue rate: raw mean error {raw.mean():+.4f}, USM Eq. 13 {debiased.mean():+.5f} "
          f"(se {debiased.std(ddof=1) / np.sqrt(reps):.5f})")
    assert raw.mean() < -0.05
    assert abs(debiased.mean()) < 3 * debiased.std(ddof=1) / np.sqrt(reps)


def test_usm_debiased_rate_with_a_fitted_submit_model():
    # USM's recipe end to end: fit the survey-submit model on an observable willingness proxy
    # (history submission count), weight each submission by 1 / prediction (Eq. 13)
    rng = np.random.default_rng(12)
    n = 200_000
    history = rng.poisson(3.0, size=n).astype(float)  # past submissions: observable
    shown = rng.random(n) < 0.3
    p_submit = expit(-2.0 + 0.5 * history)
    submitted = shown & (rng.random(n) < p_submit)
    issue = (rng.random(n) < expit(-1.0 - 0.4 * history)).astype(float)
    model = est.fit_submit_propensity(history[:, None], shown, submitted, l2=0.0)
    sub_pred = model.predict_proba(history[shown][:, None])
    truth = issue[shown].mean()
    debiased = est.usm_debiased_rate(issue[shown], submitted[shown], sub_pred)
    raw = est.naive(issue[shown], submitted[shown])
    assert debiased.contains(truth)
    assert raw.value < truth - 5 * raw.stderr  # raw rate visibly too low
