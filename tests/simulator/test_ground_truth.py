"""Statistical checks of the default world against its oracle columns and published marginals.

These share one simulation of the built-in default world (about 15 s) and are marked slow.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator.config import with_overrides
from simulator.logs import read_impressions
from experiments.simulate import simulate
from tests_support import assert_calibrated, assert_means_calibrated, first_world, tiny

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("prob", "outcome", "where"), [
    ("true_p_skip", "skip", None),
    ("true_p_effective_view", "effective_view", None),
    ("true_p_satisfied", "true_satisfied", None),
    ("true_p_issue", "true_issue", None),
    ("true_p_like", "like", None),
    ("true_p_share", "share", None),
    ("true_p_dislike", "dislike", None),
    ("true_p_show", "survey_shown", None),
    ("true_p_submit", "survey_submitted", "survey_shown"),
])
def test_oracle_probabilities_are_honoured(default_run, prob, outcome, where):
    _, logs = default_run
    rows = logs if where is None else logs[logs[where]]
    assert assert_calibrated(rows[prob].to_numpy(), rows[outcome].to_numpy(), name=outcome) >= 2


def test_expected_watch_time_is_honoured(default_run):
    _, logs = default_run
    assert_means_calibrated(logs["true_expected_watch_time"], logs["watch_time"], name="watch_time")


def test_published_marginals(default_run):
    """DESIGN.md: answered ~1% of effective views, like:dislike 2:1-3:1, views:skips 1.9-3, sparse negatives."""
    result, logs = default_run
    s = result.summary
    assert 0.005 <= s["answered_per_effective_view"] <= 0.02
    assert 2.0 <= s["survey_like_to_dislike"] <= 3.0
    assert 1.9 <= s["effective_views_per_skip"] <= 3.0
    assert logs["skip"].sum() >= 10 * (logs["dislike"].sum() + logs["report"].sum())
    assert s["impressions"] > 300_000 and s["days"] == 7


def test_response_bias_is_real_by_default(default_run):
    _, logs = default_run
    sat = logs[logs["survey_shown"] & (logs["survey_type"] == "satisfaction")]
    naive = (sat.loc[sat["survey_submitted"], "survey_answer"] == "like").mean()
    oracle = sat["true_p_satisfied"].mean()
    assert naive - oracle > 0.05


def _gap(tmp_path, name, **questionnaire_and_users):
    users = questionnaire_and_users.pop("users", {})
    config = first_world(tiny(n_users=3000, days=3, seed=21, users=users))
    config = with_overrides(config, {f"questionnaire.{k}": v for k, v in
                                     {"base_rate": 1.0, "per_user_daily_cap": 40, **questionnaire_and_users}.items()})
    simulate(config, tmp_path / name, progress=False)
    logs = read_impressions(tmp_path / name / "logs")
    sat = logs[logs["survey_shown"] & (logs["survey_type"] == "satisfaction")]
    answered = sat[sat["survey_submitted"]]
    naive = (answered["survey_answer"] == "like").mean()
    se = np.sqrt(naive * (1 - naive) / len(answered))
    return naive - sat["true_p_satisfied"].mean(), se, len(answered)


def test_zero_bias_knobs_remove_the_gap(tmp_path):
    biased, _, _ = _gap(tmp_path, "biased")
    gap, se, n = _gap(tmp_path, "unbiased", response_bias=0.0, extremity_bias=0.0,
                      users={"random_responder_share": 0.0})
    assert n > 4000
    assert biased > 0.05
    assert abs(gap) < 3 * se + 0.005


def test_return_depends_on_recent_satisfaction(default_run):
    """Users more satisfied on one day come back the next day more often."""
    _, logs = default_run
    daily = logs.groupby(["user_id", "day"])["true_satisfied"].mean().unstack()
    rows = []
    for d in range(daily.shape[1] - 1):
        today, tomorrow = daily.iloc[:, d], daily.iloc[:, d + 1]
        seen = today.notna()
        rows.append(pd.DataFrame({"sat": today[seen], "back": tomorrow[seen].notna()}))
    df = pd.concat(rows)
    top = df["sat"] >= df["sat"].quantile(0.75)
    low = df["sat"] <= df["sat"].quantile(0.25)
    assert df.loc[top, "back"].mean() > df.loc[low, "back"].mean() + 0.05
