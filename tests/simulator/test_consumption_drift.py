"""Consumption drift (``users.consumption_drift``): after each page the active sub-interest moves
toward the topics of the items the user was satisfied with. Checked against its closed form, on
a run (interests follow what was consumed, and the oracle with them), and off by default: with
the knob at 0 nothing is drawn and nothing moves (the default world's log hashes are pinned by
``tests/simulator/test_replays.py::test_default_logs_are_pinned_with_the_off_knobs_off``)."""
from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.simulate import serving_policy
from satbed.cli import build_parser, config_from_args
from simulator.config import ConfigError, SimConfig, UserConfig, with_overrides
from simulator.feed_sessions import FeedSessions, warm_start
from simulator.logs import read_impressions
from simulator.platform import consumption_pull
from simulator.simulate import generate_world, serve_world
from tests_support import tiny


def _closed_form(v: np.ndarray, topics: np.ndarray, liked: np.ndarray, rate: float) -> np.ndarray:
    """unit((1 - r)^n v + (1 - (1 - r)^n) m), m the mean topic of the n liked items; v if n = 0."""
    n = int(liked.sum())
    if n == 0:
        return v
    keep = (1.0 - rate) ** n
    moved = keep * v.astype(np.float64) + (1.0 - keep) * topics[liked].astype(np.float64).mean(axis=0)
    return moved / np.linalg.norm(moved)


# ----------------------------------------------------------------------------- the rule
def test_the_pull_is_its_closed_form_on_a_hand_made_page():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])                      # (B=3, d=2)
    topics = np.array([[[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]]] * 3)          # (3, k=3, 2)
    liked = np.array([[True, True, False],     # two satisfying items, the third (opposite) not
                      [False, False, False],   # none: the interest stays
                      [False, False, True]])
    got = consumption_pull(v, topics, liked, 0.5)
    # row 0: (1 - 0.5)^2 = 0.25 of v, 0.75 of the mean topic (0, 1)
    np.testing.assert_allclose(got[0], np.array([0.25, 0.75]) / np.hypot(0.25, 0.75), atol=1e-15)
    assert np.array_equal(got[1], v[1])
    np.testing.assert_allclose(got[2], np.array([0.3 - 0.5, 0.4]) / np.hypot(0.2, 0.4), atol=1e-15)
    for row in range(3):
        np.testing.assert_allclose(got[row], _closed_form(v[row], topics[row], liked[row], 0.5), atol=1e-15)


def test_the_pull_at_its_ends():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    topics = rng.standard_normal((50, 6, 8))
    topics /= np.linalg.norm(topics, axis=2, keepdims=True)
    liked = rng.random((50, 6)) < 0.4
    liked[0] = False
    some = liked.any(axis=1)
    mean = (liked[..., None] * topics).sum(axis=1)[some]
    # rate 1: the interest becomes the direction of the mean satisfying topic; rate 0: it stays
    np.testing.assert_allclose(consumption_pull(v, topics, liked, 1.0)[some],
                               mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(consumption_pull(v, topics, liked, 0.0), v, atol=1e-12)
    # each row is its closed form, and stays a unit vector
    got = consumption_pull(v, topics, liked, 0.2)
    np.testing.assert_allclose(got, [_closed_form(v[b], topics[b], liked[b], 0.2) for b in range(50)], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-12)
    # more satisfying items (the same topic) pull further
    one, three = np.zeros((1, 6), bool), np.zeros((1, 6), bool)
    one[0, 0], three[0, :3] = True, True
    same = np.repeat(topics[:1, :1], 6, axis=1)
    assert (consumption_pull(v[:1], same, three, 0.2) @ same[0, 0]) > (consumption_pull(v[:1], same, one, 0.2) @ same[0, 0])


def test_opposite_topics_at_rate_one_leave_the_interest_alone():
    """The combination is the zero vector: no direction to take, so the interest stays."""
    v, topics = np.array([[0.0, 1.0]]), np.array([[[1.0, 0.0], [-1.0, 0.0]]])
    assert np.array_equal(consumption_pull(v, topics, np.array([[True, True]]), 1.0), v)


# ----------------------------------------------------------------------------- in the platform
RATE = 0.05


def test_the_platform_moves_the_active_sub_interest_by_the_closed_form():
    """One served page per user: each user's active sub-interest is its closed form given the
    logged satisfied and reached items; every other vector is untouched. The warm start (one day,
    drifted already) is restored for each new platform."""
    cfg = tiny(n_users=80, n_items=600, days=1, seed=2, users={"consumption_drift": 0.3})
    start = warm_start(cfg, days=1)
    kept = start.interests.copy()
    assert not np.array_equal(kept, generate_world(cfg).users.interests)      # the warm-up moved them
    sessions = FeedSessions(start, 24)
    sessions.restart(np.random.SeedSequence(0))
    p = sessions.platform
    assert np.array_equal(p.world.users.interests, kept) and p.world.users.interests is not start.interests
    users, slots, k = np.arange(24), np.arange(24), cfg.platform.page_size
    sessions.open(slots, users)
    before, active = p.world.users.interests.copy(), p.active[users].copy()
    out = sessions.serve(slots, np.tile(np.arange(k), (24, 1)))
    after = p.world.users.interests
    liked = out.served & out.columns["true_satisfied"]
    assert 0 < liked.any(axis=1).sum() < 24            # both cases: pulled and left alone
    topics = p.world.catalog.topic[out.pages]
    for b, (u, a) in enumerate(zip(users, active)):
        np.testing.assert_allclose(after[u, a], _closed_form(before[u, a], topics[b], liked[b], 0.3), atol=1e-6)
        if not liked[b].any():
            assert np.array_equal(after[u, a], before[u, a])
    moved = np.zeros(after.shape[:2], bool)
    moved[users, active] = True
    assert np.array_equal(after[~moved], before[~moved])
    assert np.array_equal(start.interests, kept) and np.array_equal(start.world.users.interests, kept)
    sessions.restart(np.random.SeedSequence(0))        # a new platform starts from the warm start again
    assert np.array_equal(sessions.platform.world.users.interests, kept)


def _run(rate: float, days: int = 3):
    cfg = tiny(n_users=300, n_items=1500, days=days, seed=3, users={"consumption_drift": rate},
               platform={"tick_s": 900.0})
    world = generate_world(cfg)
    start = world.users.interests.copy()
    with tempfile.TemporaryDirectory() as out:
        serve_world(world, serving_policy(cfg), Path(out), progress=False)
        logs = read_impressions(Path(out) / "logs")
    return world, start, logs


@pytest.fixture(scope="module")
def runs():
    return {rate: _run(rate) for rate in (0.0, RATE)}


def _hash(logs: pd.DataFrame) -> int:
    return int(pd.util.hash_pandas_object(logs, index=False).sum())


def test_interests_follow_what_was_consumed(runs):
    """With the knob on, the served items' match with the active sub-interest (the oracle's
    ``true_active_interest``) rises from the first day to the last, and the users' sub-interests
    turn toward the mean topic of what they were satisfied with; with it at 0 neither moves."""
    rise = {}
    for rate, (world, start, logs) in runs.items():
        daily = logs.groupby("day")["true_active_interest"].mean()
        rise[rate] = daily.iloc[-1] - daily.iloc[0]
    assert abs(rise[0.0]) < 0.03 and rise[RATE] > rise[0.0] + 0.05           # measured: 0.006 and 0.098
    world, start, logs = runs[RATE]
    sat = logs[logs["true_satisfied"]]
    users, row = np.unique(sat["user_id"].to_numpy(), return_inverse=True)
    mean = np.zeros((len(users), world.catalog.topic.shape[1]))              # (n, d) satisfying topics' direction
    np.add.at(mean, row, world.catalog.topic[sat["item_id"].to_numpy()])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)

    def best_match(interests):                                                # (U, K, d) -> (n,)
        return np.einsum("nkd,nd->nk", interests[users], mean).max(axis=1)
    assert best_match(world.users.interests).mean() > best_match(start).mean() + 0.15     # measured: 0.60 -> 0.86
    np.testing.assert_allclose(np.linalg.norm(world.users.interests, axis=-1), 1.0, atol=1e-5)
    never = np.setdiff1d(np.arange(world.users.n_users), users)               # satisfied by nothing: untouched
    assert np.array_equal(world.users.interests[never], start[never])
    off_world, off_start, _ = runs[0.0]
    assert np.array_equal(off_world.users.interests, off_start)


def test_the_drift_is_deterministic_and_changes_the_logs(runs):
    world, _, logs = _run(RATE)
    assert np.array_equal(world.users.interests, runs[RATE][0].users.interests)
    assert _hash(logs) == _hash(runs[RATE][2]) != _hash(runs[0.0][2])


def test_off_by_default_and_a_documented_option():
    assert SimConfig().users.consumption_drift == 0.0
    assert {f.name: f for f in dataclasses.fields(UserConfig)}["consumption_drift"].metadata["doc"]
    args = build_parser().parse_args(["simulate", "--users.consumption_drift", "0.2"])
    assert config_from_args(args).users.consumption_drift == 0.2


# ----------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(("value", "fragment"), [
    (-0.1, "consumption_drift=-0.1 must be in [0, 1]"),
    (1.5, "consumption_drift=1.5 must be in [0, 1]"),
    (float("nan"), "consumption_drift=nan must be in [0, 1]"),
    (True, "consumption_drift=True must be a finite number"),
    ("0.1", "consumption_drift='0.1' must be a finite number"),
])
def test_bad_values_name_the_field(value, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        dataclasses.replace(SimConfig().users, consumption_drift=value)


@pytest.mark.parametrize(("value", "fragment"), [
    (2.0, "consumption_drift=2.0 must be in [0, 1]"),
    ("0.1", "users.consumption_drift='0.1' must be a number"),
])
def test_bad_overrides_name_the_field(value, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        with_overrides(SimConfig(), {"users.consumption_drift": value})
