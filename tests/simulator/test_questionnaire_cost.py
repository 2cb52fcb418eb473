"""The cost of a questionnaire, checked against the oracle: its time counts against the session
(``questionnaire.time_s``), it may end the session (``quit_prob``), and users asked often answer
less (``response_fatigue``, ``response_fatigue_decay``; inside ``true_p_submit``)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from experiments.simulate import simulate
from simulator.config import ConfigError, QuestionnaireConfig, with_overrides
from simulator.feed_sessions import FeedSessions, warm_start
from simulator.logs import read_run
from simulator.platform import DAY_S
from simulator.questionnaire import SAT, Engagement, submit_logit
from tests_support import assert_calibrated, first_world, tiny

ASKED_OFTEN = dict(base_rate=0.3, per_user_daily_cap=20)


def _run(tmp_path_factory, name: str, cfg):
    out = tmp_path_factory.mktemp(name) / "run"
    simulate(cfg, out, progress=False)
    return cfg, read_run(out)


def _ended_sessions(imp: pd.DataFrame, cfg) -> pd.DataFrame:
    """Each row with ``last``: whether the session ended after it; sessions that may still have been
    running at the end of the run are dropped."""
    imp = imp.sort_values(["session_id", "request_id", "position"]).reset_index(drop=True)
    imp["last"] = imp.groupby("session_id").cumcount(ascending=False).to_numpy() == 0
    last_ts = imp.groupby("session_id")["ts"].transform("max")
    return imp[last_ts < cfg.platform.days * DAY_S - 3600.0].reset_index(drop=True)


# ----------------------------------------------------------------------------- quitting and fatigue
@pytest.fixture(scope="module")
def asked_often(tmp_path_factory):
    """Many questionnaires, a 30% chance that one ends the session, willingness fatigue; budgets
    so long that only the quit hazard ends a session."""
    cfg = first_world(tiny(n_users=300, n_items=1500, days=3, seed=2))          # hundreds of quits to count
    cfg = with_overrides(cfg, {"users.patience_median_s": 1e7, **{f"questionnaire.{k}": v for k, v in dict(
        **ASKED_OFTEN, quit_prob=0.3, response_fatigue=0.8, response_fatigue_decay=0.5).items()}})
    return _run(tmp_path_factory, "asked_often", cfg)


def test_a_shown_questionnaire_ends_the_session_with_quit_prob(asked_often):
    """P(the session ends after an item) = 1 - (1 - p_quit)(1 - quit_prob) after a shown
    questionnaire and p_quit otherwise, with p_quit recomputed from the oracle columns."""
    cfg, logs = asked_often
    imp = _ended_sessions(logs.impressions, cfg)
    b, q = cfg.behaviour, cfg.questionnaire.quit_prob
    p_quit = expit(b.quit_bias + b.quit_dissatisfied * ~imp["true_satisfied"].to_numpy()
                   + b.quit_fatigue * imp["true_fatigue"].to_numpy(np.float64))
    shown, last = imp["survey_shown"].to_numpy(), imp["last"].to_numpy()
    assert shown.sum() > 2000
    p_end = np.where(shown, 1 - (1 - p_quit) * (1 - q), p_quit)
    assert assert_calibrated(p_end[shown], last[shown], bins=4, name="ended after a questionnaire") >= 3
    assert assert_calibrated(p_end[~shown], last[~shown], bins=4, name="ended after an item") >= 3
    # the share of sessions ending right after a questionnaire rises by quit_prob * (1 - p_quit)
    rise = last[shown].mean() - p_quit[shown].mean()
    expected = q * (1 - p_quit[shown]).mean()
    assert abs(rise - expected) < 4 * np.sqrt(p_end[shown].mean() * (1 - p_end[shown].mean()) / shown.sum())


def _recent(imp: pd.DataFrame, decay: float) -> np.ndarray:
    """The questionnaires shown to each row's user before it, decayed by ``decay`` per day (in
    serving order: a user's new session may start before an ended one's last page has played)."""
    shown = imp[imp["survey_shown"]].sort_values(["user_id", "request_id", "position"])
    day = shown["day"].to_numpy(np.float64)
    weight = decay ** -day                                        # decay ** (d - d_i) = decay ** d * weight_i
    before = pd.Series(weight, index=shown.index).groupby(shown["user_id"].to_numpy()).cumsum() - weight
    out = np.zeros(len(imp))
    out[imp.index.get_indexer(shown.index)] = decay ** day * before.to_numpy()
    return out


def test_true_p_submit_includes_willingness_fatigue(asked_often):
    """true_p_submit is the response model with the fatigue term of the user's recent questionnaires,
    as the logs reconstruct them (to float32 precision)."""
    cfg, logs = asked_often
    imp = logs.impressions
    shown = imp["survey_shown"].to_numpy()
    recent = _recent(imp, cfg.questionnaire.response_fatigue_decay)
    assert (recent[shown] >= 2).mean() > 0.3                    # many users are asked often
    users = logs.users.set_index("user_id").reindex(imp["user_id"].to_numpy())
    stype = np.where(imp["survey_type"].astype(object).to_numpy() == "satisfaction", SAT, 1)
    expected = expit(submit_logit(
        cfg.questionnaire, stype, willingness=users["true_willingness"].to_numpy(np.float64),
        random_responder=users["true_random_responder"].to_numpy(bool), satisfied=imp["true_satisfied"].to_numpy(),
        p_satisfied=imp["true_p_satisfied"].to_numpy(np.float64), issue=imp["true_issue"].to_numpy(),
        engagement=Engagement.none(len(imp)), recent=recent))
    np.testing.assert_allclose(imp["true_p_submit"].to_numpy(np.float64)[shown], expected[shown], rtol=0, atol=2e-6)


def test_users_asked_often_answer_less(asked_often):
    """Empirical submit rates match true_p_submit in its bins, and fall with the recent questionnaires
    as the oracle says."""
    cfg, logs = asked_often
    imp = logs.impressions
    shown = imp["survey_shown"].to_numpy()
    rows = imp[shown]
    p, submitted = rows["true_p_submit"].to_numpy(np.float64), rows["survey_submitted"].to_numpy()
    assert assert_calibrated(p, submitted, bins=5, name="survey_submitted") >= 4
    recent = _recent(imp, cfg.questionnaire.response_fatigue_decay)[shown]
    group = np.digitize(recent, [0.5, 2.0, 4.0])                  # 0, (0.5, 2], (2, 4], > 4
    rates = []
    for g in range(4):
        sel = group == g
        assert sel.sum() > 300, g
        rate, want = submitted[sel].mean(), p[sel].mean()
        assert abs(rate - want) < 4 * np.sqrt(want * (1 - want) / sel.sum()), (g, rate, want)
        rates.append(rate)
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert rates[0] - rates[-1] > 0.1, rates


def test_fatigue_lowers_the_submit_logit_per_recent_questionnaire():
    cfg = QuestionnaireConfig(response_fatigue=0.6)
    args = dict(willingness=np.full(3, 0.3), random_responder=np.array([False, True, False]),
                satisfied=np.array([True, False, True]), p_satisfied=np.full(3, 0.7), issue=np.zeros(3, bool),
                engagement=Engagement.none(3))
    stype = np.array([SAT, SAT, 1])
    recent = np.array([0.0, 2.0, 3.5])
    got = submit_logit(cfg, stype, recent=recent, **args) - submit_logit(cfg, stype, **args)
    np.testing.assert_allclose(got, -0.6 * recent, atol=1e-12)          # random responders too
    assert np.array_equal(submit_logit(QuestionnaireConfig(), stype, recent=recent, **args),
                          submit_logit(QuestionnaireConfig(), stype, **args))
    assert logit(0.3) == pytest.approx(submit_logit(replace(cfg, response_bias=0.0, extremity_bias=0.0),
                                                    stype, **args)[0])


# ----------------------------------------------------------------------------- time
@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """Questionnaires take 20 s; no quit hazard, and each session's budget is its user's patience,
    so a session ends exactly when watching and questionnaires have used its budget."""
    cfg = tiny(n_users=250, n_items=1500, days=2, seed=3, users=dict(patience_sigma=0.0),
               behaviour=dict(quit_bias=-30.0), questionnaire=dict(**ASKED_OFTEN, time_s=20.0))
    return _run(tmp_path_factory, "timed", cfg)


def test_questionnaire_time_uses_the_session_budget(timed):
    cfg, logs = timed
    imp = _ended_sessions(logs.impressions, cfg)
    imp["spent"] = imp["watch_time"].to_numpy(np.float64) + cfg.questionnaire.time_s * imp["survey_shown"]
    per = imp.groupby("session_id").agg(spent=("spent", "sum"), user=("user_id", "first"),
                                        shown=("survey_shown", "sum"))
    last_spent = imp.loc[imp["last"]].set_index("session_id")["spent"].reindex(per.index)
    budget = logs.users.set_index("user_id")["true_patience_s"].reindex(per["user"]).to_numpy(np.float64)
    assert (per["shown"] > 0).mean() > 0.5
    tol = 1e-5 * budget + 1e-2                                  # watch_time and patience are float32
    assert (per["spent"].to_numpy() >= budget - tol).all()        # the budget was used up...
    assert (per["spent"].to_numpy() - last_spent.to_numpy() < budget + tol).all()   # ...by the last item
    # so a session watches its budget less its questionnaires' time, plus the last item's overshoot


def test_the_next_item_starts_after_the_questionnaire(timed):
    cfg, logs = timed
    s = logs.impressions.sort_values(["session_id", "ts"])
    same_page = s["request_id"].to_numpy()[1:] == s["request_id"].to_numpy()[:-1]
    end = (s["ts"] + s["watch_time"] + cfg.questionnaire.time_s * s["survey_shown"]).to_numpy()[:-1]
    gap = s["ts"].to_numpy()[1:] - end
    assert s["survey_shown"].to_numpy()[:-1][same_page].sum() > 200
    assert np.abs(gap[same_page]).max() < 1e-3


def test_the_gym_clock_counts_questionnaire_time():
    cfg = tiny(n_users=60, n_items=600, days=1,
               questionnaire=dict(base_rate=1.0, per_user_daily_cap=50, one_per_page=False, time_s=30.0))
    sessions = FeedSessions(warm_start(cfg, days=0), 8)
    sessions.restart(np.random.SeedSequence(0))
    slots = np.arange(8)
    sessions.open(slots, slots)
    before, k = sessions.now, cfg.platform.page_size
    out = sessions.serve(slots, np.tile(np.arange(k), (8, 1)))
    c = out.columns
    spent = np.where(out.served, c["watch_time"] + 30.0 * c["survey_shown"], 0.0).sum(axis=1)
    assert (out.served & c["survey_shown"]).sum() > 8
    assert sessions.now == pytest.approx(before + spent.max() + cfg.platform.page_gap_s, abs=1e-9)


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("time_s", -1.0, "time_s=-1.0 must be >= 0"),
    ("quit_prob", 1.5, r"quit_prob=1.5 must be in \[0, 1\]"),
    ("response_fatigue", -0.2, "response_fatigue=-0.2 must be >= 0"),
    ("response_fatigue_decay", 2.0, r"response_fatigue_decay=2.0 must be in \[0, 1\]"),
    ("time_s", float("nan"), "time_s=nan must be a finite number"),
])
def test_bad_values_name_the_field(field, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        QuestionnaireConfig(**{field: value})
