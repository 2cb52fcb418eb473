"""The SimPy platform: ranking, determinism, sessions, and the questionnaire exposure rule."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from simulator.logs import read_impressions
from simulator.platform import rank_page
from simulator.questionnaire import draw_exposure
from experiments.simulate import simulate
from simulator.config import SimConfig
from tests_support import first_world


def _run(tmp_path, config, name="run"):
    simulate(config, tmp_path / name, progress=False)
    return read_impressions(tmp_path / name / "logs")


def test_plackett_luce_propensities_match_frequencies():
    scores = np.array([[2.0, 1.0, 0.5, 0.0, -1.0]])
    rng = np.random.default_rng(0)
    n = 20000
    pos, prop = rank_page(np.repeat(scores, n, axis=0), 2, 0.7, rng)
    p = softmax(scores[0] / 0.7)
    first = np.bincount(pos[:, 0], minlength=5) / n
    assert np.allclose(first, p, atol=4 * np.sqrt(p * (1 - p) / n).max())
    assert np.allclose(prop[:, 0], p[pos[:, 0]])
    # second position: P(j | i first) = p_j / (1 - p_i)
    assert np.allclose(prop[:, 1], p[pos[:, 1]] / (1 - p[pos[:, 0]]))
    pair = (pos[:, 0] == 0) & (pos[:, 1] == 1)
    assert pair.mean() == pytest.approx(p[0] * p[1] / (1 - p[0]), abs=0.01)


def test_deterministic_ranking_is_top_k_without_propensity():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    pos, prop = rank_page(scores, 3, None, np.random.default_rng(0))
    assert pos.tolist() == [[1, 3, 2], [0, 1, 2]]
    assert np.isnan(prop).all()


def test_draw_exposure_first_hit_only():
    p = np.array([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    eligible = np.array([[True, True, True], [False, False, True], [False, False, False]])
    shown, rec = draw_exposure(p, eligible, np.random.default_rng(0))
    assert shown.tolist() == [[False, True, False], [False, False, True], [False, False, False]]
    assert rec.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def test_same_seed_same_logs_different_seed_different(tmp_path, make_config):
    a = _run(tmp_path, make_config(seed=11), "a")
    b = _run(tmp_path, make_config(seed=11), "b")
    c = _run(tmp_path, make_config(seed=12), "c")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) != len(c) or not a["item_id"].equals(c["item_id"])


def test_sessions_pages_and_times_are_consistent(tmp_path, make_config):
    logs = _run(tmp_path, make_config(seed=3))
    # positions of a request are 0..n-1 with no gap, all from one user and session
    per_req = logs.groupby("request_id").agg(n=("position", "size"), mx=("position", "max"),
                                             users=("user_id", "nunique"), sessions=("session_id", "nunique"))
    assert (per_req["mx"] == per_req["n"] - 1).all() and (per_req["users"] == 1).all()
    assert (per_req["sessions"] == 1).all() and per_req["n"].max() <= 10
    # within a session, an item starts when the previous one ends (same page) or later (next page)
    s = logs.sort_values(["session_id", "ts"])
    end = s["ts"] + s["watch_time"]
    same = s["session_id"].to_numpy()[1:] == s["session_id"].to_numpy()[:-1]
    assert np.all(s["ts"].to_numpy()[1:][same] >= end.to_numpy()[:-1][same] - 1e-3)   # watch_time is float32
    replay_max = SimConfig().behaviour.replay_max        # views may replay their video
    assert (logs["watch_time"] <= (1.0 + replay_max) * logs["duration"] + 1e-4).all()
    assert (logs["skip"] == (logs["watch_time"] < 3.0)).all()
    assert not (logs["skip"] & logs["effective_view"]).any()
    # a session belongs to one user, and a user has one session at a time
    assert (logs.groupby("session_id")["user_id"].nunique() == 1).all()
    # stochastic production ranking logs a propensity for every impression
    assert logs["propensity"].between(0, 1, inclusive="right").all()


def test_questionnaire_rule_and_cap_exact(tmp_path, make_config):
    """base_rate 1 and cap 1: exactly one questionnaire per user-day, at the day's first effective view."""
    logs = _run(tmp_path, make_config(seed=4, questionnaire={"base_rate": 1.0, "per_user_daily_cap": 1}))
    logs = logs.sort_values(["ts", "request_id", "position"])
    ev = logs[logs["effective_view"]]
    first_ev = ev.groupby(["user_id", "day"]).head(1)
    shown = logs[logs["survey_shown"]]
    assert len(shown) == len(first_ev)
    assert set(zip(shown["user_id"], shown["day"], shown["request_id"], shown["position"])) == \
        set(zip(first_ev["user_id"], first_ev["day"], first_ev["request_id"], first_ev["position"]))
    assert (shown["true_p_show"] == 1.0).all()


def test_questionnaire_one_per_page_and_cap(tmp_path, make_config):
    logs = _run(tmp_path, make_config(seed=5, questionnaire={
        "base_rate": 1.0, "per_user_daily_cap": 2, "after_effective_view_only": False}))
    shown = logs[logs["survey_shown"]]
    assert (shown["position"] == 0).all()                          # the first impression of a page
    assert shown.groupby("request_id").size().max() == 1
    per_day = shown.groupby(["user_id", "day"]).size()
    requests = logs.groupby(["user_id", "day"])["request_id"].nunique()
    assert per_day.equals(np.minimum(requests, 2).loc[per_day.index].rename(None)) or \
        (per_day.to_numpy() == np.minimum(requests.loc[per_day.index].to_numpy(), 2)).all()
    assert len(per_day) == len(requests)                          # every active user-day got one


def test_targeting_multiplies_the_rate(tmp_path, make_config):
    logs = _run(tmp_path, make_config(seed=6, questionnaire={
        "base_rate": 0.05, "targeting": "fresh_items", "target_boost": 4.0}))
    p = logs.loc[logs["true_p_show"] > 0, "true_p_show"].astype(float).round(6)
    assert set(p.unique()) == {0.05, 0.2}


def test_survey_answers_are_consistent(tmp_path, make_config):
    logs = _run(tmp_path, make_config(seed=7, questionnaire={"base_rate": 0.5, "per_user_daily_cap": 10}))
    assert (~logs["survey_shown"] <= ~logs["survey_submitted"]).all()          # submitted => shown
    assert logs["survey_answer"].notna().eq(logs["survey_submitted"]).all()
    assert logs["survey_type"].notna().eq(logs["survey_shown"]).all()
    sat = logs["survey_type"] == "satisfaction"
    assert logs.loc[sat & logs["survey_submitted"], "survey_answer"].isin(["like", "neutral", "dislike"]).all()
    inap = logs["survey_type"] == "inappropriate"
    assert logs.loc[inap & logs["survey_submitted"], "survey_answer"].isin(
        ["suitable", "unsuitable", "adults_only"]).all()
    bad = logs["survey_answer"].isin(["unsuitable", "adults_only"])
    assert logs["survey_reasons"].notna().eq(bad).all()
    # a non-random responder's answer follows the realised truth
    users = pd.read_parquet(tmp_path / "run" / "users.parquet")
    honest = ~users["true_random_responder"].to_numpy()[logs["user_id"].to_numpy()]
    answered = logs[honest & sat & logs["survey_submitted"]]
    assert ((answered["survey_answer"] == "like") == answered["true_satisfied"]).all()
    inap_ans = logs[honest & inap & logs["survey_submitted"]]
    assert ((inap_ans["survey_answer"] != "suitable") == inap_ans["true_issue"]).all()


def _production_platform(tmp_path, config, arms, seed, name):
    """A platform on ``config``'s world with one production ranker per (bucket name, temperature)
    of ``arms``, listed in that order. Bucket streams are seeded by name (``seed`` spawned over the
    sorted names) and users alternate over the sorted names by id, so listing the arms in another
    order keeps every bucket's users and streams."""
    from policies import make_policy
    from simulator.logs import LogWriter
    from simulator.platform import Bucket, Platform
    from simulator.schema import LogData
    from simulator.simulate import seed_streams
    from simulator.world import World
    streams = seed_streams(config.seed)
    world = World.generate(config, np.random.default_rng(streams["world"]))
    empty = LogData(pd.DataFrame(), world.catalog.table(), world.users.table()).observable()
    names = sorted(n for n, _ in arms)
    seeds = dict(zip(names, np.random.SeedSequence(seed).spawn(len(names))))
    buckets = [Bucket.from_seed(n, make_policy("production", temperature=t).fit(empty, rng=np.random.default_rng(1)),
                                i, seeds[n]) for i, (n, t) in enumerate(arms)]
    index = {bucket.name: bucket.index for bucket in buckets}
    assignment = np.array([index[n] for n in names])[np.arange(world.users.n_users) % len(names)]
    writer = LogWriter(tmp_path / name, [n for n, _ in arms])
    return Platform(world, buckets, assignment, writer, streams["arrivals"])


def _two_bucket_logs(tmp_path, config, order, name):
    """Serve ``config``'s world with two production rankers (they read the item counters that both
    arms' users update), listed in ``order``; even users: hot, odd: mild."""
    temperature = {"hot": 0.3, "mild": 1.5}
    _production_platform(tmp_path, config, [(n, temperature[n]) for n in order], 7, name).run(config.platform.days)
    logs = read_impressions(tmp_path / name)
    return logs.sort_values(["user_id", "ts", "position"]).reset_index(drop=True)


def test_bucket_order_does_not_change_any_bucket(tmp_path, make_config):
    """Every request of a tick is ranked against the feature store as of the tick's start, so
    listing the arms in the other order gives every user the same impressions, although both
    policies read item counters that the other arm's users update within the tick."""
    config = make_config(n_users=300, days=2)
    a = _two_bucket_logs(tmp_path, config, ("hot", "mild"), "a")
    b = _two_bucket_logs(tmp_path, config, ("mild", "hot"), "b")
    assert len(a) == len(b) > 10_000
    assert set(a["bucket"].astype(str)) == {"hot", "mild"}
    # request ids count requests in serving order (bucket by bucket), so only their grouping is compared
    same_request = a.groupby("request_id")["user_id"].transform("size")
    assert np.array_equal(same_request, b.groupby("request_id")["user_id"].transform("size"))
    pd.testing.assert_frame_equal(a.drop(columns="request_id"), b.drop(columns="request_id"))


def _platform_with_requests(tmp_path, config, name):
    """A platform whose users have all started today's sessions, and two buckets' ranked pages."""
    from simulator.platform import DAY_S
    platform = _production_platform(tmp_path, config, [("a", 0.5), ("b", 2.0)], 3, name)
    now = DAY_S - 1.0
    platform.start_day(0)
    platform.start_sessions(now)
    due = np.flatnonzero(platform.in_session)
    ranked = [platform.serve(bucket, due[platform.assignment[due] == bucket.index][start:start + 40], now)
              for bucket in platform.buckets for start in (0, 40)]
    return platform, ranked, now


def test_watching_all_batches_at_once_equals_batch_by_batch(tmp_path, make_config):
    """consume() draws each batch's uniforms from its bucket's streams in batch order, so one
    call over four batches of two buckets leaves every state array, the feature store and the
    log rows exactly as four calls, one per batch."""
    config = first_world(make_config(n_users=300, days=1))          # enough users due at once for 4 x 40
    joint, ranked, now = _platform_with_requests(tmp_path, config, "joint")
    apart, ranked_apart, _ = _platform_with_requests(tmp_path, config, "apart")
    assert all(len(r.users) == 40 for r in ranked)
    joint.consume(ranked, now)
    for r in ranked_apart:
        apart.consume([r], now)
    for name in ("fatigue", "session_elapsed", "next_due", "in_session", "recent_satisfaction", "shown_today"):
        assert np.array_equal(getattr(joint, name), getattr(apart, name)), name
    for name in ("item_impressions", "item_clicks", "user_clicks", "leaf_clicks", "item_recent_clicks"):
        assert np.array_equal(getattr(joint.features, name), getattr(apart.features, name)), name
    for name, ring in joint.features.histories.items():
        assert np.array_equal(ring.items, apart.features.histories[name].items), name
    for key in ((0, "production"), (1, "production")):
        x, y = joint.log._chunks[key], apart.log._chunks[key]
        for col in x[0]:
            assert np.array_equal(np.concatenate([c[col] for c in x]), np.concatenate([c[col] for c in y]),
                                  equal_nan=col in ("propensity", "propensity_marginal", "score")), col
    served = np.concatenate([r.users for r in ranked])
    assert 0 < (~joint.in_session[served]).sum() < len(served)         # some sessions ended, not all
