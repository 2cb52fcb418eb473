"""The shared offline evaluation protocol (studies/engine/offline.py) against policies whose metrics are known."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from policies import make_policy
from studies.engine.offline import METRICS, evaluate, make_task, offline_table, simulate_logs, summarise
from tests_support import tiny


@pytest.fixture(scope="module")
def logs():
    return simulate_logs(tiny(n_users=300, n_items=1500, days=3))


@pytest.fixture(scope="module")
def task(logs):
    return make_task(logs, seed=0)


@dataclass
class LookupPolicy:
    """Scores each (user, item) from a dict; ``default`` elsewhere. A test double with known metrics."""
    table: dict
    default: float = 0.0
    temperature: float | None = None
    name: str = "lookup"
    fitted_: bool = field(default=False, init=False)

    def fit(self, train, *, rng):
        self.fitted_ = True
        return self

    def score(self, batch):
        u = np.repeat(batch.user_ids, batch.candidates.shape[1])
        vals = [self.table.get((int(a), int(b)), self.default) for a, b in zip(u, batch.candidates.ravel())]
        return np.asarray(vals, dtype=np.float64).reshape(batch.candidates.shape)


def test_time_split_and_serving_state(logs, task):
    imp = logs.impressions
    assert task.split_day == imp["day"].max()
    assert (task.train.impressions["day"] < task.split_day).all()
    assert len(task.train.impressions) == (imp["day"] < task.split_day).sum()
    assert not task.train.has_oracle
    # the feature store has seen exactly the training impressions
    assert task.store.user_impressions.sum() == len(task.train.impressions)


def test_targets_are_first_test_clicks_and_negatives_are_never_clicked(logs, task):
    imp = logs.impressions
    test = imp[imp["day"] >= task.split_day].sort_values(["user_id", "ts", "request_id", "position"])
    first = test[test["effective_view"]].groupby("user_id")["item_id"].first()
    np.testing.assert_array_equal(task.rank_candidates[:, 0], first.loc[task.rank_users].to_numpy())
    clicked = set(zip(imp.loc[imp["effective_view"], "user_id"], imp.loc[imp["effective_view"], "item_id"]))
    negs = task.rank_candidates[:, 1:]
    assert negs.shape[1] == 99
    assert not any((u, i) in clicked for u, row in zip(task.rank_users, negs) for i in row)
    assert all(len(set(row)) == len(row) for row in negs)


def test_impression_rows_hold_each_users_test_impressions(logs, task):
    imp = logs.impressions
    test = imp[imp["day"] >= task.split_day].drop_duplicates(["user_id", "item_id"])
    assert task.row_valid.sum() == len(test)
    assert (task.row_labels[task.row_valid] == 1).sum() == test["effective_view"].sum()
    assert (task.row_labels[task.row_valid] == 0).sum() == test["skip"].sum()
    assert (task.row_labels[~task.row_valid] == -1).all()
    assert task.row_satisfied[task.row_valid].sum() == test["true_satisfied"].sum()


def test_known_metrics_of_a_perfect_a_constant_and_a_reversed_policy(logs, task):
    # the perfect policy knows every target and every test label
    table = {(int(u), int(i)): 10.0 for u, i in zip(task.rank_users, task.rank_candidates[:, 0])}
    for r, u in enumerate(task.row_users):
        for c in np.flatnonzero(task.row_labels[r] >= 0):
            table[(int(u), int(task.row_items[r, c]))] = float(task.row_labels[r, c])
    perfect = evaluate(LookupPolicy(table, default=-1.0).fit(None, rng=None), task)
    assert perfect["hr@1"].value == 1.0 and perfect["mrr"].value == 1.0 and perfect["ndcg@10"].value == 1.0
    assert perfect["auc"].value == 1.0 and perfect["gauc"].value == 1.0
    reversed_ = evaluate(LookupPolicy({k: -v for k, v in table.items()}, default=1.0).fit(None, rng=None), task)
    assert reversed_["auc"].value == 0.0 and reversed_["hr@10"].value == 0.0
    # constant scores: every tie broken at random in expectation, the chance level exactly
    const = evaluate(LookupPolicy({}).fit(None, rng=None), task)
    assert const["hr@10"].value == pytest.approx(0.1) and const["hr@1"].value == pytest.approx(0.01)
    for m in ("auc", "gauc", "sat_auc", "sat_gauc", "nfb_uauc", "pfb_uauc"):
        assert const[m].value == pytest.approx(0.5), m


def test_oracle_satisfaction_labels_separate_what_the_oracle_ranks(logs, task):
    """A policy scoring by the logged true_p_satisfied of each test impression separates truly
    satisfying clicks far better than chance: the satisfaction metrics read the truth."""
    imp = logs.impressions
    test = imp[imp["day"] >= task.split_day]
    table = {(int(u), int(i)): float(p) for u, i, p in
             zip(test["user_id"], test["item_id"], test["true_p_satisfied"])}
    res = evaluate(LookupPolicy(table).fit(None, rng=None), task)
    assert res["sat_auc"].value > 0.75
    assert res["sat_auc"].ci_low > 0.5


def test_offline_table_and_summary(logs):
    table = offline_table({"random": lambda: make_policy("random"), "most_popular": lambda: make_policy("most_popular")},
                          lambda seed: logs, seeds=(0, 1), progress=False)
    assert set(table["metric"]) == set(METRICS) and len(table) == 2 * 2 * len(METRICS)
    wide = summarise(table, ("hr@10", "auc"))
    assert list(wide.index) == ["random", "most_popular"] and list(wide.columns) == ["hr@10", "auc"]
    pop = table[(table.policy == "most_popular") & (table.metric == "hr@10")]["value"]
    assert (pop > 0.2).all()       # popularity is far above the chance level 0.1 on these logs


@pytest.mark.parametrize("kwargs, message", [
    (dict(test_days=0), "test_days=0 must be >= 1"),
    (dict(test_days=3), "logs cover 3 day"),
    (dict(target="clicks"), "target='clicks' must be one of"),
    (dict(row_size=1), "row_size=1 must be >= 2"),
])
def test_bad_arguments(logs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task(logs, **kwargs)


def test_needs_the_oracle_columns(logs):
    with pytest.raises(ValueError, match="must keep the oracle columns"):
        make_task(logs.observable())
