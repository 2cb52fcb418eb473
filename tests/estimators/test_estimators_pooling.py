"""Pooling runs that share a world (several policy seeds on one world): world_means and
spread_sources against seeded simulations with known variance components."""
from __future__ import annotations

import numpy as np
import pytest

from estimators import normal_p, random_effects, spread_sources, world_means

USERS, TRAINING, WORLD = 0.0016, 0.0004, 0.0009          # variances of the three parts


def _runs(rng, n_worlds, n_policy_seeds, effect=0.0):
    """Lifts y = effect + world + training + users, the users' error shared by a world's runs."""
    w = np.repeat(np.arange(n_worlds), n_policy_seeds)
    world = rng.normal(0, np.sqrt(WORLD), n_worlds)[w]
    users = rng.normal(0, np.sqrt(USERS), n_worlds)[w]                 # same users in every run of a world
    training = rng.normal(0, np.sqrt(TRAINING), len(w))
    return effect + world + users + training, np.full(len(w), np.sqrt(USERS)), w


def test_world_means_closed_form():
    worlds, means, errs = world_means([0.1, 0.3, 0.2, np.nan], [0.1, 0.1, 0.2, 0.1], [5, 5, 7, 7])
    assert worlds.tolist() == [5, 7]
    assert means == pytest.approx([0.2, 0.2])
    # world 5: mean se^2 (not divided by 2) + var / 2; world 7: its one finite run
    assert errs == pytest.approx([np.sqrt(0.01 + 0.02 / 2), 0.2])


def test_pooled_test_keeps_its_size_when_runs_share_a_world():
    """No effect, 3 worlds x 2 policy seeds: pooling world means rejects at about alpha; pooling
    the six runs as independent replications rejects far too often."""
    rng = np.random.default_rng(0)
    reject = {"world means": 0, "runs as independent": 0}
    n = 4000
    for _ in range(n):
        y, se, w = _runs(rng, 3, 2)
        v, s, _, _ = random_effects(*world_means(y, se, w)[1:])
        reject["world means"] += normal_p(v, s) < 0.05
        v, s, _, _ = random_effects(y, se)
        reject["runs as independent"] += normal_p(v, s) < 0.05
    rate = {k: r / n for k, r in reject.items()}
    assert rate["world means"] < 0.075, rate                  # measured 0.04-0.05
    assert rate["runs as independent"] > 0.10, rate           # the bias the pooling avoids


def test_spread_sources_recovers_the_parts():
    rng = np.random.default_rng(1)
    y, se, w = _runs(rng, 400, 4)
    got = spread_sources(y, se, w)
    assert got["sd_users"] == pytest.approx(np.sqrt(USERS))
    assert got["sd_policy_seed"] ** 2 == pytest.approx(TRAINING, rel=0.1)
    assert got["sd_world_seed"] ** 2 == pytest.approx(WORLD, rel=0.25)
    one = spread_sources(*_runs(rng, 50, 1))
    assert np.isnan(one["sd_policy_seed"])                    # no world with two policy seeds
    assert np.isnan(spread_sources([0.1], [0.01], [0])["sd_world_seed"])

