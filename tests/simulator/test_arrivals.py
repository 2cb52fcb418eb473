"""Arrivals of new users and new items (``users.new_users_per_day``, ``catalog.new_items_per_day``):
Poisson counts per day, nobody served before joining, no item recalled or served before its release,
new items reached by recall once out, and the world without arrivals unchanged draw for draw (the
log hashes of ``test_replays.py`` pin the default world)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import simulator.gym_env as ge
from experiments.simulate import serving_policy
from simulator.config import ConfigError, SimConfig, with_overrides
from simulator.features import FeatureStore, ItemAttributes
from simulator.feed_sessions import FeedSessions, warm_start
from simulator.logs import read_run
from simulator.recall import Recall
from simulator.scenarios import scale_model
from simulator.simulate import run_simulation
from simulator.world import World

SMALL = {"users.n_users": 300, "catalog.n_items": 1000, "platform.days": 3, "platform.tick_s": 900.0}
ARRIVALS = {"users.new_users_per_day": 30.0, "catalog.new_items_per_day": 100.0}


def _world(overrides: dict, seed: int = 1) -> World:
    return World.generate(with_overrides(SimConfig(), overrides), np.random.default_rng(seed))


def _assert_poisson(counts: np.ndarray, rate: float) -> None:
    """Counts per day are Poisson(rate): the mean within 4 standard errors, and the dispersion
    statistic sum((x - mean)^2) / mean inside chi2(n - 1)'s central 99.8% (fixed counts fail it)."""
    n = len(counts)
    assert abs(counts.mean() - rate) < 4 * np.sqrt(rate / n), (counts.mean(), rate)
    dispersion = ((counts - counts.mean()) ** 2).sum() / counts.mean()
    assert stats.chi2.ppf(0.001, n - 1) < dispersion < stats.chi2.ppf(0.999, n - 1), dispersion


# ----------------------------------------------------------------------------- the world
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joins_and_releases_per_day_are_poisson_at_the_configured_rate(seed):
    days, rate_u, rate_i = 61, 40.0, 25.0
    world = _world({"users.n_users": 4000, "catalog.n_items": 3000, "platform.days": days,
                    "users.new_users_per_day": rate_u, "catalog.new_items_per_day": rate_i}, seed)
    joins = np.bincount(world.users.join_day, minlength=days)
    releases = np.bincount(world.catalog.release_day, minlength=days)
    assert joins.shape == releases.shape == (days,)                  # nothing on or after day `days`
    _assert_poisson(joins[1:], rate_u)
    _assert_poisson(releases[1:], rate_i)
    assert joins[0] == 4000 - joins[1:].sum() and releases[0] == 3000 - releases[1:].sum()


def test_new_users_have_tenure_zero_and_everything_else_is_the_world_without_arrivals():
    """Arrivals are drawn last: the traits (and the initial users' tenure) are those of the world
    without them, and each knob has its own stream, so turning one on leaves the other's days alone."""
    base = {"users.n_users": 500, "catalog.n_items": 800, "platform.days": 5}
    off, on = _world(base), _world({**base, **ARRIVALS})
    users_only = _world({**base, "users.new_users_per_day": 30.0})
    items_only = _world({**base, "catalog.new_items_per_day": 100.0})
    for name in ("interests", "weights", "willingness", "activity", "patience"):
        assert np.array_equal(getattr(off.users, name), getattr(on.users, name))
    for name in ("leaf", "topic", "quality", "duration", "issue"):
        assert np.array_equal(getattr(off.catalog, name), getattr(on.catalog, name))
    new = on.users.join_day > 0
    assert new.sum() > 50 and (on.users.tenure_days[new] == 0).all()
    assert np.array_equal(on.users.tenure_days[~new], off.users.tenure_days[~new])
    assert np.array_equal(users_only.users.join_day, on.users.join_day) and users_only.catalog.release_day is None
    assert np.array_equal(items_only.catalog.release_day, on.catalog.release_day) and items_only.users.join_day is None
    assert off.users.join_day is None and off.catalog.release_day is None
    assert "join_day" not in off.users.table() and "release_day" not in off.catalog.table()


def test_present_admits_no_user_before_joining_and_every_joiner_on_the_day():
    world = _world({**SMALL, "users.new_users_per_day": 30.0})
    join, everyone = world.users.join_day, np.ones(world.users.n_users, dtype=bool)
    for day in range(3):
        assert np.array_equal(world.users.present(everyone, day), join <= day)
        assert np.array_equal(world.users.present(~everyone, day), (join == day) & (day > 0))


def test_a_scale_model_divides_the_arrivals_per_day():
    full = with_overrides(SimConfig(), {"users.new_users_per_day": 300.0, "catalog.new_items_per_day": 90.0})
    small = scale_model(full, 20)
    assert small.users.new_users_per_day == 15.0 and small.catalog.new_items_per_day == 4.5
    assert scale_model(SimConfig(), 20).users.new_users_per_day == 0.0


# ----------------------------------------------------------------------------- recall
def test_recall_and_popularity_see_only_released_items():
    world = _world({**SMALL, "catalog.new_items_per_day": 150.0, "platform.n_candidates": 100,
                    "platform.popular_pool": 300})
    cat, release = world.catalog, world.catalog.release_day
    fs = FeatureStore(50, ItemAttributes(cat.l1, cat.l2, cat.leaf, cat.author, cat.duration, release))
    fs.item_recent_clicks[:] = np.arange(cat.n_items)[::-1]          # unreleased items would rank high
    recall, rng = Recall(world.config.platform, fs), np.random.default_rng(0)
    users = np.arange(50)
    no = np.zeros(25, bool)
    fs.record(users[:25], np.flatnonzero(release == 0)[:25], effective_view=~no, skip=no, like=no,
              survey_satisfied=no, survey_dissatisfied=no, survey_submitted=no)   # half the users have clicks
    for day in range(3):
        fs.start_day(day)
        popular = fs.popular(300)
        assert len(popular) == min(300, (release <= day).sum()) and (release[popular] <= day).all()
        cands = np.concatenate([recall(users, rng) for _ in range(20)])
        assert (release[cands] <= day).all(), day
        assert all(len(np.unique(row)) == row.size for row in cands)
        if day:
            assert np.isin(cands, np.flatnonzero(release == day)).any()    # the day's new items are recalled


# ----------------------------------------------------------------------------- a run
class Recording:
    """The serving policy, keeping each request batch's day and candidates: what recall offered."""

    def __init__(self, policy):
        self.policy, self.name, self.temperature = policy, policy.name, policy.temperature
        self.days, self.candidates = [], []

    def fit(self, data, *, rng):
        self.policy.fit(data, rng=rng)
        return self

    def score(self, batch):
        self.days.append(np.full(len(batch.candidates), batch.day))
        self.candidates.append(batch.candidates.copy())
        return self.policy.score(batch)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = with_overrides(SimConfig(seed=3), {**SMALL, **ARRIVALS})
    out = tmp_path_factory.mktemp("arrivals") / "run"
    policy = Recording(serving_policy(cfg))
    run_simulation(cfg, out, policy, progress=False)
    return read_run(out), (np.concatenate(policy.days), np.concatenate(policy.candidates))


def test_no_user_is_served_before_joining_and_joiners_come_on_their_day(run):
    logs, _ = run
    imp, users = logs.impressions, logs.users.set_index("user_id")
    join = users["join_day"].reindex(imp["user_id"]).to_numpy()
    assert (imp["day"].to_numpy() >= join).all()
    new = users.index[users["join_day"] > 0]
    assert len(new) > 30
    first = imp.groupby("user_id")["day"].min().reindex(new)
    # a joiner has a session on the join day; only one starting just before midnight may slip to the next
    assert (first.to_numpy() == users.loc[new, "join_day"].to_numpy()).mean() > 0.9
    assert (users.loc[new, "tenure_days"] == 0).all()


def test_no_item_is_recalled_or_served_before_its_release(run):
    logs, (day, candidates) = run
    release = logs.items.set_index("item_id")["release_day"]
    imp = logs.impressions
    assert (imp["day"].to_numpy() >= release.reindex(imp["item_id"]).to_numpy()).all()
    assert (day[:, None] >= release.to_numpy()[candidates]).all()


def test_new_items_are_recalled_and_watched_once_out(run):
    logs, (day, candidates) = run
    items, imp = logs.items, logs.impressions
    new = items.loc[items["release_day"] > 0, "item_id"].to_numpy()
    shown = np.isin(new, imp["item_id"].to_numpy())
    assert len(new) > 100 and shown.mean() > 0.5
    assert np.isin(new, candidates[day == 2]).mean() > 0.8


# ----------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"users.new_users_per_day": -1.0}, "users.new_users_per_day=-1.0 must be >= 0"),
    ({"users.new_users_per_day": float("nan")}, "users.new_users_per_day=nan must be a finite number"),
    ({"users.new_users_per_day": float("inf")}, "users.new_users_per_day=inf must be a finite number"),
    ({"catalog.new_items_per_day": -0.5}, "catalog.new_items_per_day=-0.5 must be >= 0"),
    ({"catalog.new_items_per_day": float("nan")}, "catalog.new_items_per_day=nan must be a finite number"),
    ({"users.new_users_per_day": 200.0}, r"users.new_users_per_day=200.0 over platform.days - 1 = 2 days is 400 "
                                         r"new users, more than users.n_users=300"),
    ({"catalog.new_items_per_day": 500.0}, r"catalog.new_items_per_day=500.0 .* more than catalog.n_items - "
                                           r"platform.n_candidates = 800"),
])
def test_bad_values_name_the_field(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        with_overrides(SimConfig(), {**SMALL, **overrides})


# ----------------------------------------------------------------------------- the gym env
@pytest.fixture(scope="module")
def joining():
    """A world whose users keep joining after a one-day warm-up (join days up to 5)."""
    return with_overrides(SimConfig(seed=2), {**SMALL, "platform.days": 6, "users.new_users_per_day": 40.0})


def test_feed_sessions_open_no_session_before_joining(joining):
    sessions = FeedSessions(warm_start(joining, days=1), 4)
    sessions.restart(np.random.SeedSequence(0))
    join = sessions.start.world.users.join_day
    assert np.array_equal(sessions.joined_users(), np.flatnonzero(join <= 1))
    late = np.flatnonzero(join > 1)[:2]
    with pytest.raises(ValueError, match=r"join after day 1"):
        sessions.open(np.arange(2), late)


def test_the_envs_draw_only_joined_users(joining):
    join = World.generate(joining, np.random.default_rng(np.random.SeedSequence(joining.seed).spawn(4)[0])) \
        .users.join_day
    env = ge.FeedEnv(joining, warmup_days=1)
    drawn = [env.reset(seed=s)[1]["user_id"] for s in range(40)]
    assert (join[drawn] <= 1).all()
    vector = ge.FeedVectorEnv(8, joining, warmup_days=1)
    _, info = vector.reset(seed=0)
    assert (join[info["user_id"]] <= 1).all()
