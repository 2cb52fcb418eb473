"""The questionnaire response model's four parts, checked against the oracle.

Willingness and engagement are recoverable from observables (the engagement part is missing at
random given the logged watch fraction, feedback and session depth); self-masking is not.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests_support import first_world
from scipy.special import expit, logit

from simulator.config import QuestionnaireConfig, SimConfig, to_dict, with_overrides
from simulator.logs import read_run
from experiments.metrics import session_depth, submit_propensity
from simulator.questionnaire import SAT, Engagement, submit_logit
from simulator.schema import NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK
from experiments.simulate import simulate

ENGAGED = {"questionnaire.response_watch": 3.0, "questionnaire.response_feedback": 1.5,
           "questionnaire.response_depth": -0.3}
SMALL = {"users.n_users": 250, "catalog.n_items": 1000, "platform.days": 2,
         "questionnaire.base_rate": 0.3, "questionnaire.per_user_daily_cap": 10}


def test_submit_logit_is_the_sum_of_its_parts():
    cfg = QuestionnaireConfig(response_watch=2.0, response_feedback=0.5, response_depth=-0.25,
                              response_bias=1.2, extremity_bias=0.4)
    w = np.array([0.2, 0.2, 0.5, 0.7])
    eng = Engagement(np.array([1.0, 0.5, 0.0, 0.8]), np.array([0, 2, 1, 0]), np.array([0, 3, 10, 1]))
    sat = np.array([True, False, True, False])
    p = np.array([0.9, 0.3, 0.5, 0.1])
    rand = np.array([False, False, True, False])
    stype = np.array([SAT, SAT, SAT, 1])
    issue = np.array([False, False, False, True])
    got = submit_logit(cfg, stype, willingness=w, random_responder=rand, satisfied=sat, p_satisfied=p,
                       issue=issue, engagement=eng)
    engagement = 2.0 * eng.watch_fraction + 0.5 * eng.feedback_events - 0.25 * np.log1p(eng.session_depth)
    masking = np.array([1.2 + 0.4 * 0.8, 0.4 * 0.4, 0.0, 1.2]) - 0.6
    masking[2] = 0.0                                     # a random responder: no self-masking
    np.testing.assert_allclose(got, logit(w) + engagement + masking, rtol=0, atol=1e-12)


def test_engagement_part_is_zero_when_its_knobs_are():
    cfg = QuestionnaireConfig()
    args = dict(willingness=np.array([0.3, 0.6]), random_responder=np.array([False, True]),
                satisfied=np.array([True, False]), p_satisfied=np.array([0.8, 0.2]), issue=np.array([False, False]))
    stype = np.array([SAT, SAT])
    busy = Engagement(np.array([1.0, 0.7]), np.array([3, 1]), np.array([5, 40]))
    assert np.array_equal(submit_logit(cfg, stype, engagement=busy, **args),
                          submit_logit(cfg, stype, engagement=Engagement.none(2), **args))


@pytest.mark.parametrize("knob", ["response_watch", "response_feedback", "response_depth", "response_bias",
                                  "extremity_bias"])
def test_response_knobs_reject_non_finite(knob):
    from simulator.config import ConfigError
    with pytest.raises(ConfigError, match=knob):
        QuestionnaireConfig(**{knob: float("nan")})


def _world(tmp_path, overrides: dict, seed: int = 0):
    cfg = with_overrides(SimConfig(seed=seed), {**SMALL, **overrides})
    simulate(cfg, tmp_path / f"run{seed}", progress=False)
    return cfg, read_run(tmp_path / f"run{seed}")


def test_true_p_submit_is_recomputed_from_logged_observables_and_oracle_traits(tmp_path):
    """The platform feeds the response model exactly what the logs hold: watch fraction,
    feedback, session depth (as `session_depth` reconstructs it), plus the hidden traits."""
    cfg, logs = _world(tmp_path, {**ENGAGED, "users.random_responder_share": 0.2})
    imp = logs.impressions
    shown = imp["survey_shown"].to_numpy()
    assert shown.sum() > 500
    users = logs.users.set_index("user_id").reindex(imp["user_id"].to_numpy())
    feedback = sum(imp[c].to_numpy(dtype=np.int64) for c in (*POSITIVE_FEEDBACK, *NEGATIVE_FEEDBACK))
    eng = Engagement(np.clip(imp["watch_time"].to_numpy() / imp["duration"].to_numpy(), 0, 1), feedback,
                     session_depth(imp))
    stype = np.where(imp["survey_type"].astype(object).to_numpy() == "satisfaction", SAT, 1)
    expected = expit(submit_logit(
        cfg.questionnaire, stype, willingness=users["true_willingness"].to_numpy(np.float64),
        random_responder=users["true_random_responder"].to_numpy(bool), satisfied=imp["true_satisfied"].to_numpy(),
        p_satisfied=imp["true_p_satisfied"].to_numpy(np.float64), issue=imp["true_issue"].to_numpy(),
        engagement=eng))
    got = imp["true_p_submit"].to_numpy(np.float64)
    # willingness and p_satisfied are stored as float32, so compare at float32 precision
    np.testing.assert_allclose(got[shown], expected[shown], rtol=0, atol=2e-6)
    assert (session_depth(imp) > 0).mean() > 0.5          # depth varies, so the check has teeth


def test_session_depth_counts_items_earlier_in_the_session():
    logs = pd.DataFrame({"session_id": [7, 7, 7, 9, 7, 9], "ts": [10.0, 5.0, 20.0, 1.0, 20.0, 2.0],
                         "position": [1, 0, 0, 0, 1, 1]})
    np.testing.assert_array_equal(session_depth(logs), [1, 0, 2, 0, 3, 1])


def _satisfaction_errors(tmp_path, overrides: dict, seeds) -> pd.DataFrame:
    """Per seed: naive / IPS / SNIPS (fitted submit model) estimate - truth of the satisfaction
    rate over the impressions eligible for a questionnaire (bias_ablation's estimand)."""
    from studies.bias_ablation import run_cell
    base = with_overrides(first_world(SimConfig()), {**SMALL, "platform.tick_s": 900.0, **overrides})   # 15-min rounds: fast
    rows = []
    for seed in seeds:
        for r in run_cell({"world": to_dict(base), "alpha": 0.05}, seed):
            if r["estimand"] == "satisfaction" and r["propensity"] in ("none", "fitted"):
                rows.append({"seed": seed, "estimator": r["estimator"], "error": r["value"] - r["truth"]})
    return pd.DataFrame(rows).pivot(index="seed", columns="estimator", values="error")


@pytest.mark.slow
def test_fitted_submit_model_removes_engagement_bias_but_not_self_masking(tmp_path):
    """Over 20 worlds with self-masking at 0 (engagement-driven answering, no random
    responders), IPS and SNIPS with the *fitted* submit model are unbiased within 2 SE while the
    naive respondents' rate is not; with self-masking on, the residual bias grows with it."""
    mar = {**ENGAGED, "questionnaire.response_bias": 0.0, "questionnaire.extremity_bias": 0.0,
           "users.random_responder_share": 0.0}
    err = _satisfaction_errors(tmp_path, mar, range(20))
    mean, se = err.mean(), err.std(ddof=1) / np.sqrt(len(err))
    assert abs(mean["ips"]) < 2 * se["ips"], (mean, se)
    assert abs(mean["snips"]) < 2 * se["snips"], (mean, se)
    assert mean["naive"] > 3 * se["naive"], (mean, se)          # engaged respondents are more satisfied

    seeds = range(5)                                    # paired steps are large: 5 worlds show them
    residual = {rb: _satisfaction_errors(tmp_path, {**mar, "questionnaire.response_bias": rb}, seeds)["ips"]
                for rb in (1.0, 2.0)}
    residual[0.0] = err["ips"].loc[list(seeds)]
    for low, high in ((0.0, 1.0), (1.0, 2.0)):
        step = residual[high] - residual[low]               # paired by seed: same worlds
        assert step.mean() > 3 * step.std(ddof=1) / np.sqrt(len(step)), (low, high, step)


def test_without_one_per_page_every_eligible_position_draws_independently():
    from simulator.questionnaire import draw_exposure
    rng = np.random.default_rng(3)
    p = np.full((20000, 5), 0.4)
    eligible = np.ones_like(p, dtype=bool)
    eligible[:, 4] = False
    shown, rec = draw_exposure(p, eligible, rng, one_per_page=False)
    assert shown[:, :4].mean() == pytest.approx(0.4, abs=0.01) and not shown[:, 4].any()
    assert (shown.sum(axis=1) > 1).mean() == pytest.approx(1 - 0.6 ** 4 - 4 * 0.4 * 0.6 ** 3, abs=0.01)
    np.testing.assert_array_equal(rec, np.where(eligible, 0.4, 0.0))
    first, _ = draw_exposure(p, eligible, np.random.default_rng(3))
    assert (first.sum(axis=1) <= 1).all()
