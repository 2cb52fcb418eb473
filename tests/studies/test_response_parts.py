"""`response_parts`: the Shapley split of the survey bias into the response model's parts."""
from __future__ import annotations

import pandas as pd
import pytest

from studies.response_parts import PARTS, ResponsePartsConfig, shapley, split


def test_shapley_of_an_additive_game_is_each_parts_own_effect():
    parts = ("a", "b", "c")
    effect = {"a": 0.1, "b": -0.03, "c": 0.5}
    game = {frozenset(s): sum(effect[p] for p in s) for s in
            [(), ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), parts]}
    assert shapley(game, parts) == pytest.approx(effect)


def test_shapley_splits_a_pure_interaction_equally_and_adds_up():
    parts = ("a", "b")
    game = {frozenset(): 0.0, frozenset("a"): 0.0, frozenset("b"): 0.0, frozenset("ab"): 0.6}
    assert shapley(game, parts) == pytest.approx({"a": 0.3, "b": 0.3})


def test_split_gives_inactive_parts_zero_and_shares_summing_to_one():
    rows = []
    for seed, noise in ((0, 0.0), (1, 0.01)):
        for on, err in (("none", 0.0 + noise), ("willingness", 0.02 + noise), ("engagement", 0.06 + noise),
                        ("willingness+engagement", 0.1 + noise)):
            rows.append({"scenario": "w", "estimator": "naive", "propensity": "none", "on": on, "seed": seed,
                         "value": 0.5 + err, "truth": 0.5})
    out = split(pd.DataFrame(rows)).set_index("part")
    assert out.loc["willingness", "bias"] == pytest.approx(0.03)    # (0.02 + (0.1 - 0.06)) / 2
    assert out.loc["engagement", "bias"] == pytest.approx(0.07)
    assert out.loc["self_masking", "bias"] == 0.0 and out.loc["random_responders", "bias"] == 0.0
    assert out.loc[list(PARTS), "share"].sum() == pytest.approx(1.0)


def test_active_parts_follow_the_scenario():
    cfg = ResponsePartsConfig()
    assert cfg.active_parts("default") == ("willingness", "self_masking", "random_responders")
    assert cfg.active_parts("engaged_response") == ("willingness", "engagement")
