"""Returning as a point process: a daily return hazard driven by recent satisfaction, activity and
the days since the last visit, sessions per day that follow satisfaction, and recent satisfaction
fading while a user is away (``behaviour.return_*``, ``session_satisfaction``,
``away_satisfaction_drift``). Checked against the platform's own probabilities (its oracle) and
closed forms; with the new knobs at 0 the logs are unchanged (``test_replays``' hash pin)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from policies import make_policy
from simulator.config import ConfigError, SimConfig, with_overrides
from simulator.logs import LogWriter
from simulator.platform import Bucket, Platform
from simulator.schema import LogData
from simulator.simulate import seed_streams
from simulator.world import World
from tests_support import assert_calibrated, tiny

RETURNS = {"return_days_away": -1.5, "return_activity": 1.0, "session_satisfaction": 3.0,
           "away_satisfaction_drift": 0.3, "return_bias": 0.8}


class _DailyRecord(Platform):
    """A platform that keeps, for every day, each user's state at the draw and what was drawn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.days: list[dict[str, np.ndarray]] = []

    def start_day(self, day: int) -> None:
        super().start_day(day)
        self.days.append({
            "p_return": self.p_return.copy(), "active": self.active_today.copy(), "days_away": self.days_away.copy(),
            "satisfaction": self.recent_satisfaction.copy(), "mean_sessions": self.mean_sessions(),
            "sessions": np.bincount(self._pending_u, minlength=self.world.users.n_users)})


def _platform(config: SimConfig, path) -> _DailyRecord:
    streams = seed_streams(config.seed)
    world = World.generate(config, np.random.default_rng(streams["world"]))
    empty = LogData(pd.DataFrame(), world.catalog.table(), world.users.table()).observable()
    policy = make_policy("production").fit(empty, rng=np.random.default_rng(1))
    bucket = Bucket.from_seed("all", policy, 0, streams["buckets"])
    return _DailyRecord(world, [bucket], np.zeros(config.users.n_users, dtype=np.int64),
                        LogWriter(path, ["all"]), streams["arrivals"])


@pytest.fixture(scope="module")
def returning(tmp_path_factory):
    """1,500 users over 12 days with every return knob on, served in 15-minute rounds."""
    config = tiny(n_users=1500, n_items=1500, days=12, seed=3, behaviour=RETURNS, platform={"tick_s": 900.0})
    platform = _platform(config, tmp_path_factory.mktemp("returns") / "run")
    platform.run(config.platform.days)
    return {k: np.stack([d[k] for d in platform.days]) for k in platform.days[0]}, platform


def test_users_return_at_the_rate_of_their_hazard(returning):
    days, _ = returning
    later = slice(1, None)                  # day 0: everyone is "away one day" at 0.5 satisfaction
    assert assert_calibrated(days["p_return"][later].ravel(), days["active"][later].ravel(),
                             name="return") >= 8
    # the hazard really moves: from under 1/3 to over 3/4 across users and days
    p = days["p_return"][later]
    assert np.quantile(p, 0.05) < 0.33 and np.quantile(p, 0.95) > 0.75


def test_the_hazard_is_the_logistic_of_its_parts(returning):
    days, platform = returning
    b, users = platform.config.behaviour, platform.world.users
    expected = expit(b.return_bias + b.return_satisfaction * (days["satisfaction"] - 0.5)
                     + b.return_activity * np.log(users.activity / platform.config.users.activity_mean)
                     + b.return_days_away * np.log(days["days_away"]))
    np.testing.assert_allclose(days["p_return"], expected, rtol=1e-12)


def test_the_longer_away_the_less_likely_back(returning):
    """With return_days_away < 0 the gaps are not geometric: among users of similar satisfaction,
    those away three days or more come back less often than those here yesterday."""
    days, _ = returning
    sat, away, active = (days[k][1:].ravel() for k in ("satisfaction", "days_away", "active"))
    middle = (sat > np.quantile(sat, 0.25)) & (sat < np.quantile(sat, 0.75))
    yesterday, long_gone = middle & (away == 1), middle & (away >= 3)
    assert yesterday.sum() > 1000 and long_gone.sum() > 300
    assert active[yesterday].mean() - active[long_gone].mean() > 0.15


def test_days_away_counts_from_the_last_active_day(returning):
    days, _ = returning
    away, active = days["days_away"], days["active"]
    assert (away[0] == 1).all()
    np.testing.assert_array_equal(away[1:], np.where(active[:-1], 1, away[:-1] + 1))


def test_sessions_per_day_follow_satisfaction(returning):
    """An active user draws max(1, Poisson(m)) sessions, m = activity * exp(s * (satisfaction - 0.5)):
    E = m + exp(-m); the mean of each satisfaction bin matches it."""
    days, platform = returning
    active = days["active"].ravel()
    m, sessions, sat = (days[k].ravel()[active] for k in ("mean_sessions", "sessions", "satisfaction"))
    activity = np.tile(platform.world.users.activity, len(days["active"]))[active]
    np.testing.assert_allclose(m, activity * np.exp(3.0 * (sat - 0.5)), rtol=1e-12)
    assert (sessions >= 1).all() and (days["sessions"].ravel()[~active] == 0).all()
    expected = m + np.exp(-m)
    edges = np.quantile(sat, np.linspace(0, 1, 6))
    which = np.clip(np.searchsorted(edges, sat, side="right") - 1, 0, 4)
    for b in range(5):
        sel = which == b
        se = np.sqrt(np.var(sessions[sel]) / sel.sum())
        assert abs(sessions[sel].mean() - expected[sel].mean()) < 4 * se, b
    # and satisfaction matters: the most satisfied fifth has more sessions per unit of activity
    per_activity = sessions / activity
    assert per_activity[which == 4].mean() > 1.2 * per_activity[which == 0].mean()


def test_satisfaction_fades_toward_neutral_while_away(tmp_path):
    """Each day away moves recent satisfaction a share a of the way back to 0.5: after g days the
    distance is (1 - a)^g of what it was; users active yesterday keep theirs."""
    config = tiny(n_users=200, n_items=600, days=1, behaviour=RETURNS)
    platform = _platform(config, tmp_path / "run")
    rng = np.random.default_rng(0)
    start = rng.uniform(0.0, 1.0, 200)
    platform.recent_satisfaction[:] = start
    platform.active_today[:] = False
    here = np.arange(200) < 50
    platform.active_today[here] = True
    for g in range(1, 4):
        platform.start_day(g)
        platform.active_today[:] = False     # nobody comes back in between
        expected = 0.5 + (start - 0.5) * 0.7 ** g
        expected[here] = 0.5 + (start[here] - 0.5) * 0.7 ** (g - 1)
        np.testing.assert_allclose(platform.recent_satisfaction, expected, rtol=1e-12)


@pytest.mark.parametrize("field, value, fragment", [
    ("behaviour.away_satisfaction_drift", 1.5, "away_satisfaction_drift=1.5 must be in [0, 1]"),
    ("behaviour.return_days_away", float("nan"), "return_days_away"),
    ("behaviour.session_satisfaction", float("inf"), "session_satisfaction"),
])
def test_bad_values_name_the_field(field, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        with_overrides(SimConfig(), {field: value})
