"""The world: generation, and ground-truth functions checked against their own Monte Carlo."""
from __future__ import annotations

import numpy as np
from scipy import stats
import pytest

from simulator.config import SimConfig
from simulator.world import World


@pytest.fixture(scope="module")
def world():
    return World.generate(SimConfig(), np.random.default_rng(1))


def _pairs(world, n, rng):
    users = rng.integers(0, world.users.n_users, n)
    items = rng.integers(0, world.catalog.n_items, n)
    active = rng.integers(0, world.config.users.n_interests, n)
    fatigue = rng.exponential(1.0, n)
    return users, items, active, fatigue


def test_generation_is_deterministic_and_seed_dependent():
    a = World.generate(SimConfig(), np.random.default_rng(5))
    b = World.generate(SimConfig(), np.random.default_rng(5))
    c = World.generate(SimConfig(), np.random.default_rng(6))
    assert np.array_equal(a.catalog.topic, b.catalog.topic) and np.array_equal(a.users.interests, b.users.interests)
    assert not np.array_equal(a.catalog.quality, c.catalog.quality)


def test_category_tree_is_consistent(world):
    cfg = world.config.catalog
    cat = world.catalog
    assert np.array_equal(cat.l2, cat.leaf // cfg.n_l3) and np.array_equal(cat.l1, cat.l2 // cfg.n_l2)
    # an item's topic is closest to its own leaf centroid far more often than chance
    sims = cat.topic @ cat.leaf_centroids.T
    assert (sims.argmax(axis=1) == cat.leaf).mean() > 0.5
    # leaves under one level-1 category are closer to each other than leaves of different ones
    leaf_l1 = np.arange(cfg.n_leaves) // (cfg.n_l2 * cfg.n_l3)
    c = cat.leaf_centroids @ cat.leaf_centroids.T
    same = leaf_l1[:, None] == leaf_l1[None, :]
    assert c[same & ~np.eye(cfg.n_leaves, dtype=bool)].mean() > c[~same].mean() + 0.3


def test_durations_are_heavy_tailed_and_bounded(world):
    d = world.catalog.duration
    cfg = world.config.catalog
    assert d.min() >= cfg.duration_min_s and d.max() <= cfg.duration_max_s
    assert np.mean(d) > 1.2 * np.median(d)
    assert np.median(d) == pytest.approx(cfg.duration_median_s, rel=0.1)


def test_clickbait_correlation(world):
    rho = np.corrcoef(world.catalog.quality, world.catalog.attractiveness)[0, 1]
    assert rho == pytest.approx(world.config.catalog.clickbait_corr, abs=0.05)


def test_user_traits(world):
    u = world.users
    assert np.allclose(u.weights.sum(axis=1), 1.0)
    assert np.allclose(np.linalg.norm(u.interests, axis=2), 1.0, atol=1e-5)
    assert u.willingness.mean() == pytest.approx(world.config.users.willingness_mean, abs=0.02)
    assert u.willingness.std() > 0.1           # heterogeneous: some users answer far more
    assert u.random_responder.mean() == pytest.approx(world.config.users.random_responder_share, abs=0.015)


def test_interest_weights_the_active_sub_interest(world):
    rng = np.random.default_rng(0)
    users, items, active, _ = _pairs(world, 50, rng)
    match, active_match = world.interest(users, items, active)
    boost = world.config.users.active_boost
    sims = np.einsum("nkd,nd->nk", world.users.interests[users], world.catalog.topic[items])
    w = (1 - boost) * world.users.weights[users]
    w[np.arange(50), active] += boost
    assert np.allclose(match, (w * sims).sum(axis=1), atol=1e-6)
    assert np.allclose(active_match, sims[np.arange(50), active], atol=1e-6)


def test_probabilities_in_range_and_monotone(world):
    rng = np.random.default_rng(2)
    users, items, active, fatigue = _pairs(world, 20000, rng)
    p = world.probabilities(users, items, active, fatigue)
    for name in ("p_issue", "p_satisfied", "p_skip", "p_effective_view"):
        values = getattr(p, name)
        assert values.shape == (20000,) and np.all((values >= 0) & (values <= 1)), name
    assert np.all(p.p_effective_view <= 1 - p.p_skip + 1e-12)
    replays = 1.0 + world.config.behaviour.replay_max                  # a view may replay its video
    assert np.all(p.expected_watch_time <= replays * world.catalog.duration[items] + 1e-4)
    # satisfaction rises with interest and quality and falls with fatigue (same pairs, shifted inputs)
    tired = world.probabilities(users, items, active, fatigue + 2.0)
    assert np.all(tired.p_satisfied <= p.p_satisfied + 1e-12) and np.all(tired.p_skip >= p.p_skip - 1e-12)
    assert np.corrcoef(p.interest, p.p_satisfied)[0, 1] > 0.3
    assert np.corrcoef(world.catalog.quality[items], p.p_satisfied)[0, 1] > 0.2
    # attractiveness drives watching, not satisfaction (clickbait)
    attract = world.catalog.attractiveness[items]
    assert np.corrcoef(attract, -p.p_skip)[0, 1] > 0.2


def test_sampled_behaviour_matches_its_probabilities(world):
    """Monte Carlo of 200 draws per pair agrees with the closed-form probabilities."""
    rng = np.random.default_rng(3)
    users, items, active, fatigue = _pairs(world, 300, rng)
    reps = 200
    p = world.probabilities(np.repeat(users, reps), np.repeat(items, reps), np.repeat(active, reps),
                            np.repeat(fatigue, reps))
    beh = world.sample_behaviour(np.repeat(items, reps), p, rng)
    def per_pair(x):
        return np.asarray(x, float).reshape(300, reps).mean(axis=1)
    def check(draws, prob, name):
        prob = per_pair(prob)
        # no pair is far off: the exact binomial tail of each pair's count (a normal z is wrong for
        # rare events such as likes, where 200 draws expect about 4), Bonferroni over the pairs
        count = np.asarray(draws, float).reshape(300, reps).sum(axis=1)
        tail = np.minimum(stats.binom.sf(count - 1, reps, prob), stats.binom.cdf(count, reps, prob))
        assert tail.min() > 1e-4 / 300, name
        se = np.sqrt(np.maximum(prob * (1 - prob), 1e-4) / reps)
        z = (per_pair(draws) - prob) / se
        assert abs(z.mean()) < 0.3, name            # and no systematic bias
    check(beh.skip, p.p_skip, "skip")
    check(beh.effective_view, p.p_effective_view, "effective_view")
    check(beh.satisfied, p.p_satisfied, "satisfied")
    check(beh.issue, p.p_issue, "issue")
    check(beh.like, beh.p_like, "like")
    # expected watch time (32-point quadrature) vs the sample mean
    mean_watch = per_pair(beh.watch_time)
    expected = per_pair(p.expected_watch_time)
    sd = beh.watch_time.reshape(300, reps).std(axis=1) / np.sqrt(reps)
    assert np.abs((mean_watch - expected) / np.maximum(sd, 1e-3)).max() < 5.0
    # skips are exactly the views under the threshold; effective views reach the fraction
    threshold = world.config.behaviour.skip_threshold_s
    assert np.array_equal(beh.skip, beh.watch_time < threshold)
    dur = world.catalog.duration[np.repeat(items, reps)]
    assert np.array_equal(beh.effective_view,
                          ~beh.skip & (beh.watch_time >= world.config.behaviour.effective_view_fraction * dur))


def test_feedback_direction(world):
    rng = np.random.default_rng(4)
    users, items, active, fatigue = _pairs(world, 50000, rng)
    p = world.probabilities(users, items, active, fatigue)
    beh = world.sample_behaviour(items, p, rng)
    watched = ~beh.skip
    sat, unsat = watched & beh.satisfied, watched & ~beh.satisfied
    assert beh.p_like[sat].mean() > 3 * beh.p_like[unsat].mean()
    assert beh.p_dislike[unsat].mean() > 3 * beh.p_dislike[sat].mean()
    assert beh.p_report[beh.issue].mean() > 10 * beh.p_report[~beh.issue].mean()
    assert np.all(beh.p_like[beh.skip] == 0)      # no like without watching
    assert not np.any(beh.satisfied & beh.issue)  # a perceived issue rules out satisfaction
