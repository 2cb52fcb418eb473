"""One online-learning schedule for every policy: each policy that trains a model learns from new
logs through ``update(new, epochs=...)``, and ``epochs=0`` leaves it as it was."""
from __future__ import annotations

import numpy as np
import pytest
from test_check_policy import FAST_PARAMS

from policies import make_policy
from simulator.schema import LogData

TRAINABLE = ("sasrec", "sasrec_n", "sine", "saqrec", "usm", "easq")


def _split(train: LogData) -> tuple[LogData, LogData]:
    """Day 0 (the fit) and day 1 (the update), whole pages each."""
    imp = train.impressions
    day = imp["day"].to_numpy()
    first, second = imp[day == day.min()], imp[day > day.min()]
    return (LogData(first.reset_index(drop=True), train.items, train.users),
            LogData(second.reset_index(drop=True), train.items, train.users))


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_trainable_policy_learns_from_update(name, tiny_world):
    old, new = _split(tiny_world.train)
    batch = tiny_world.batch(n_requests=16, n_candidates=40)
    params = dict(FAST_PARAMS[name])
    policy = make_policy(name, **params).fit(old, rng=np.random.default_rng(0))
    before = policy.score(batch)
    policy.update(new, epochs=0)
    assert np.array_equal(policy.score(batch), before), f"{name}: update(epochs=0) changed the scores"
    policy.update(new, epochs=1)
    after = policy.score(batch)
    assert after.shape == before.shape and np.isfinite(after).all()
    assert not np.allclose(after, before, rtol=0, atol=1e-7), f"{name}: update(epochs=1) left the model as it was"


@pytest.mark.parametrize("name", TRAINABLE)
def test_update_is_reproducible(name, tiny_world):
    old, new = _split(tiny_world.train)
    batch = tiny_world.batch(n_requests=8, n_candidates=20)
    scores = []
    for _ in range(2):
        policy = make_policy(name, **FAST_PARAMS[name]).fit(old, rng=np.random.default_rng(1))
        policy.update(new, epochs=1)
        scores.append(policy.score(batch))
    assert np.array_equal(scores[0], scores[1])


@pytest.mark.parametrize("epochs", [-1, 1.5, True])
def test_bad_epochs_are_refused_by_name(epochs, tiny_world):
    from policies.base import resolve_update_epochs
    with pytest.raises(ValueError, match=r"epochs=.* must be an integer >= 0"):
        resolve_update_epochs(epochs, 0)
    policy = make_policy("most_popular").fit(tiny_world.train, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        policy.update(tiny_world.train, epochs=epochs)


def test_most_popular_adds_no_counts_with_zero_epochs(tiny_world):
    old, new = _split(tiny_world.train)
    policy = make_policy("most_popular").fit(old, rng=np.random.default_rng(0))
    before = policy.counts_.copy()
    policy.update(new, epochs=0)
    assert np.array_equal(policy.counts_, before)
    policy.update(new, epochs=1)
    assert policy.counts_.sum() == before.sum() + int(new.impressions["effective_view"].sum())
