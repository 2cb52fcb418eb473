"""Helpers for the policy tests (a module with a unique name, so test files can import it)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

from estimators import hit_rate, ndcg
from policies.data import leave_last_out_logs, n_items_of, positive_keys, sample_negatives, user_sequences
from simulator.features import FeatureStore
from simulator.schema import LogData, RankBatch
from studies.engine.offline import feature_store_from  # noqa: F401  (re-exported for the tests)


@dataclass(frozen=True)
class TinyWorld:
    config: object
    logs: LogData          # with oracle columns
    train: LogData         # observable
    store: FeatureStore    # has recorded every impression
    world: object          # the ground truth (for the oracle policy only)

    def batch(self, n_requests: int = 16, n_candidates: int = 50, seed: int = 0) -> RankBatch:
        """Requests of active users, each against distinct random candidates."""
        rng = np.random.default_rng(seed)
        users = rng.choice(np.unique(self.train.impressions["user_id"]), n_requests, replace=False)
        n_items = len(self.train.items)
        cands = np.argsort(rng.random((n_requests, n_items)), axis=1)[:, :n_candidates]
        return RankBatch(users, cands, ts=0.0, day=0, features=self.store)

    def attach(self, policy):
        """What the A/B runner does for a policy with ``requires_world = True``."""
        n_users = len(self.train.users)
        n_l2 = int(self.train.items["l2"].max()) + 1
        state = SimpleNamespace(active=np.zeros(n_users, dtype=np.int64), fatigue=np.zeros((n_users, n_l2)))
        return policy.attach(self.world, state)


def frame(rows: list[tuple], columns: str = "user_id ts request_id position item_id effective_view skip survey_answer"
          ) -> pd.DataFrame:
    """A hand-written impressions frame."""
    df = pd.DataFrame(rows, columns=columns.split())
    if "survey_answer" in df:
        df["survey_answer"] = pd.Categorical(df["survey_answer"])
    return df


def offline_eval(policies: dict, logs: LogData, *, seed: int = 0) -> dict:
    """Leave-last-out: fit on each user's logs before their last effective view, then rank that
    click against 99 uniformly sampled items the user never clicked (HR@10, NDCG@10 per user).

    Returns:
        ``{name: {"hr": Estimate, "ndcg": Estimate, "scores": (n, 100), "seconds": fit + score}}``.
    """
    train, targets = leave_last_out_logs(logs)
    store = feature_store_from(train)
    n_items = n_items_of(logs)
    exclude = positive_keys(user_sequences(logs, "clicks"), n_items)
    negs = sample_negatives(np.random.default_rng(seed), targets.users, 99, n_items=n_items,
                            exclude=exclude, distinct=True)
    batch = RankBatch(targets.users, np.c_[targets.items, negs], 0.0, 0, store)
    out = {}
    for name, policy in policies.items():
        t0 = time.perf_counter()
        policy.fit(train, rng=np.random.default_rng(seed))
        s = policy.score(batch)
        out[name] = dict(hr=hit_rate(s[:, 0], s[:, 1:], k=10), ndcg=ndcg(s[:, 0], s[:, 1:], k=10),
                         scores=s, seconds=time.perf_counter() - t0)
    return out
