"""Policies see only observable data: imports, the feature store, and the registry."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import policies
from policies import NotFittedError, UnknownPolicyError, available_policies, make_policy
from policies.checks import ALLOWED_SIMULATOR_MODULES
from simulator.config import SimConfig
from simulator.features import FeatureStore, ItemAttributes
from simulator.schema import LogData, RankBatch

POLICY_DIR = Path(policies.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(POLICY_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(POLICY_DIR)))
def test_policies_import_only_the_schema_and_the_checks_from_the_simulator(path):
    assert set(ALLOWED_SIMULATOR_MODULES) == {"simulator.schema", "simulator.checks"}   # neither reads a world
    bad = {m for m in _imports(path) if m.startswith("simulator") and m not in ALLOWED_SIMULATOR_MODULES}
    assert not bad, f"{path.relative_to(POLICY_DIR)} imports {bad}"


def test_feature_store_holds_no_oracle_value():
    store = FeatureStore(3, ItemAttributes(*(np.zeros(4, dtype=int),) * 4, np.ones(4)))
    assert not any(name.startswith("true") for name in vars(store))
    assert not any(name.startswith("true") for name in vars(store.items))


def _batch(n_users=4, n_items=50, c=20):
    rng = np.random.default_rng(0)
    leaf = np.arange(n_items) % 8
    items = ItemAttributes(l1=leaf // 4, l2=leaf // 2, leaf=leaf, author=np.arange(n_items),
                           duration=np.full(n_items, 20.0, np.float32))
    store = FeatureStore(n_users, items)
    cands = np.stack([rng.permutation(n_items)[:c] for _ in range(n_users)])
    return RankBatch(np.arange(n_users), cands, 0.0, 0, store)


def _no_logs() -> LogData:
    return LogData(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())


# policies that learn nothing from logs; every registered policy goes through the whole
# check_policy battery in test_check_policy.py
@pytest.mark.parametrize("name", ["production", "random"])
def test_untrained_policies_score_shape_and_require_fit(name):
    policy = make_policy(name)
    batch = _batch()
    with pytest.raises(NotFittedError, match="must be fitted before score"):
        policy.score(batch)
    assert policy.fit(_no_logs(), rng=np.random.default_rng(0)) is policy
    scores = policy.score(batch)
    assert scores.shape == batch.candidates.shape and np.isfinite(scores).all()


def test_unknown_policy_and_bad_parameters():
    registered = ", ".join(sorted(available_policies()))
    assert {"most_popular", "production", "random", "sasrec", "sasrec_n"} <= set(available_policies())
    with pytest.raises(UnknownPolicyError, match=re.escape(f"unknown policy 'sasrec2'; registered: {registered}")):
        make_policy("sasrec2")
    with pytest.raises(ValueError, match=r"^production: warmth is not a parameter; production takes: .*temperature"):
        make_policy("production", warmth=3)


def test_production_prefers_the_users_categories():
    batch = _batch()
    store = batch.features
    item = int(batch.candidates[0, 0])
    leaf_items = np.flatnonzero(store.items.leaf == store.items.leaf[item])
    t = np.ones(len(leaf_items), bool)
    store.record(np.zeros(len(leaf_items), int), leaf_items, effective_view=t, skip=~t, like=~t,
                 survey_satisfied=~t, survey_dissatisfied=~t, survey_submitted=~t)
    scores = make_policy("production").fit(_no_logs(), rng=np.random.default_rng(0)).score(batch)
    same_leaf = np.isin(batch.candidates[0], leaf_items)
    assert scores[0, same_leaf].min() > scores[0, ~same_leaf].max()


def test_batch_shape_is_checked():
    with pytest.raises(ValueError, match="candidates must have shape"):
        RankBatch(np.arange(3), np.zeros((2, 5), int), 0.0, 0, None)  # type: ignore[arg-type]
