"""Recall: a candidate set per page request, identical for every bucket.

A mix of the popular pool, items from the leaf categories of the user's recent effective views
(observable history only) and uniformly random items; duplicates within a request are replaced.
"""
from __future__ import annotations

import numpy as np

from simulator.config import PlatformConfig
from simulator.features import PAD, FeatureStore

_INTEREST_HISTORY = 20   # recent clicks whose leaves feed interest recall


class Recall:
    """Builds (B, C) candidate arrays from the feature store."""

    def __init__(self, config: PlatformConfig, features: FeatureStore):
        self.config = config
        self.features = features
        leaf = features.items.leaf
        self._by_leaf = np.argsort(leaf, kind="stable").astype(np.int32)
        counts = np.bincount(leaf, minlength=int(leaf.max()) + 1)
        self._leaf_count = counts
        self._leaf_start = np.r_[0, np.cumsum(counts)[:-1]]
        c = config.n_candidates
        self.n_popular = int(round(c * config.recall_popular))
        self.n_interest = int(round(c * config.recall_interest))
        self.n_random = c - self.n_popular - self.n_interest
        if c > features.items.n_items:
            raise ValueError(f"n_candidates={c} must be <= the number of items {features.items.n_items}")

    def __call__(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Candidates for each user's request: (B, C) int32 item ids, no duplicates within a row."""
        n_items = self.features.items.n_items
        b = len(users)
        pool = self.features.popular(self.config.popular_pool)
        popular = pool[rng.integers(0, len(pool), (b, self.n_popular))]
        random = rng.integers(0, n_items, (b, self.n_random))
        interest = self._interest(users, rng)
        cands = np.concatenate([popular, interest, random], axis=1).astype(np.int32)
        return _dedupe(cands, n_items, rng)

    def _interest(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, m = len(users), self.n_interest
        hist, _ = self.features.history("clicks", users, min(_INTEREST_HISTORY, self.features.history_length))
        valid = hist != PAD
        n_valid = valid.sum(axis=1)
        # pick a random valid history slot per candidate (valid slots are right-aligned)
        width = hist.shape[1]
        offset = (rng.random((b, m)) * np.maximum(n_valid, 1)[:, None]).astype(np.int64)
        slot = width - 1 - offset
        picked = hist[np.arange(b)[:, None], slot]
        leaf = self.features.items.leaf[np.maximum(picked, 0)]
        count = self._leaf_count[leaf]
        item = self._by_leaf[self._leaf_start[leaf] + (rng.random((b, m)) * count).astype(np.int64)]
        # users with no click history get random items instead
        fallback = rng.integers(0, self.features.items.n_items, (b, m))
        return np.where((n_valid > 0)[:, None], item, fallback)


def _dedupe(cands: np.ndarray, n_items: int, rng: np.random.Generator, rounds: int = 6) -> np.ndarray:
    """Replace duplicate items within each row by random ones until no row has a duplicate."""
    b, c = cands.shape
    cands = cands.copy()
    flat_rows = np.repeat(np.arange(b, dtype=np.int64) * n_items, c)
    check = np.arange(b * c)          # positions whose value may collide
    for _ in range(rounds):
        keys = flat_rows + cands.ravel()
        _, first = np.unique(keys, return_index=True)
        dup = np.ones(b * c, dtype=bool)
        dup[first] = False
        check = np.flatnonzero(dup)
        if not check.size:
            return cands
        cands.ravel()[check] = rng.integers(0, n_items, check.size)
    # rare leftovers: redraw those rows without replacement
    for row in np.unique(check // c):
        keep = np.unique(cands[row])
        extra = rng.choice(np.setdiff1d(np.arange(n_items), keep), c - len(keep), replace=False)
        cands[row] = np.concatenate([keep, extra])
    return cands
