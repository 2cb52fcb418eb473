"""estimators.pooling: world_means and spread_sources against seeded simulations with known
variance components (runs that share a world), and the intervals, DerSimonian-Laird pooling and
normal p-values against scipy and statsmodels."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.proportion import proportion_confint

from estimators import mean_ci, normal_p, random_effects, spread_sources, wilson, world_means, z_value

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


# ----------------------------------------------------------------------------- against the libraries
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
@pytest.mark.parametrize(("successes", "n"), [(0, 1), (0, 20), (1, 20), (7, 20), (19, 20), (20, 20), (3, 1000)])
def test_wilson_matches_statsmodels(successes, n, alpha):
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    assert wilson(successes, n, alpha) == pytest.approx((low, high), rel=1e-12, abs=1e-15)


def test_mean_ci_matches_scipys_t_interval():
    rng = np.random.default_rng(2)
    for n in (2, 3, 10, 200):
        x = rng.normal(0.3, 2.0, n)
        for alpha in (0.05, 0.1):
            low, high = stats.ttest_1samp(x, 0.0).confidence_interval(1 - alpha)
            m, lo, hi, k = mean_ci(np.append(x, [np.nan, np.inf]), alpha)   # non-finite values are left out
            assert k == n and m == pytest.approx(x.mean(), rel=1e-12)
            assert (lo, hi) == pytest.approx((low, high), rel=1e-10)


@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt:RuntimeWarning")   # statsmodels, tau2 < 0
@pytest.mark.parametrize("spread", [0.0, 0.03])
@pytest.mark.parametrize("k", [3, 7, 30])
def test_random_effects_matches_statsmodels_dersimonian_laird(k, spread):
    """DerSimonian-Laird: statsmodels' ``combine_effects(method_re="dl")`` where its tau2 is positive;
    where it is negative (statsmodels does not floor it) the floor at 0 leaves the fixed-effect pool."""
    floored = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        se = rng.uniform(0.01, 0.05, k)
        y = rng.normal(0.02, spread, k) + rng.normal(0, se)
        ref = combine_effects(y, se ** 2, method_re="dl")
        pooled, stderr, tau2, used = random_effects(y, se)
        assert used == k
        if ref.tau2 > 0:
            assert (pooled, stderr, tau2) == pytest.approx((ref.mean_effect_re, ref.sd_eff_w_re, ref.tau2), rel=1e-10)
        else:
            floored += 1
            assert tau2 == 0.0
            assert (pooled, stderr) == pytest.approx((ref.mean_effect_fe, ref.sd_eff_w_fe), rel=1e-10)
    assert floored < 10 if spread else floored > 0       # both branches are exercised


def test_normal_p_and_z_value_match_scipy():
    for est, se in ((0.0, 1.0), (1.96, 1.0), (-0.3, 0.1), (5.0, 0.7)):
        assert normal_p(est, se) == pytest.approx(2 * stats.norm.sf(abs(est) / se), rel=1e-12)
    for alpha in (0.05, 0.01, 0.3):
        assert z_value(alpha) == pytest.approx(stats.norm.ppf(1 - alpha / 2), rel=1e-12)
    assert np.isnan(normal_p(1.0, 0.0)) and np.isnan(normal_p(np.nan, 1.0))
