"""Recall: a candidate set per page request, identical for every bucket.

A mix of the popular pool, items from the leaf categories of the user's recent effective views
(observable history only) and uniformly random items; duplicates within a request are replaced.
With release days (``catalog.new_items_per_day``) every part draws only from the items released
by the current day (the feature store's ``released_ids``, set by ``FeatureStore.start_day``).
"""
from __future__ import annotations

import numpy as np

from simulator.config import PlatformConfig
from simulator.features import PAD, FeatureStore


class Recall:
    """Builds (B, C) candidate arrays from the feature store."""

    def __init__(self, config: PlatformConfig, features: FeatureStore):
        self.config = config
        self.features = features
        self._released = None              # the released_ids the leaf index was built for
        self._index_leaves(np.arange(features.items.n_items))
        c = config.n_candidates
        self.n_popular = int(round(c * config.recall_popular))
        self.n_interest = int(round(c * config.recall_interest))
        self.n_random = c - self.n_popular - self.n_interest
        if c > features.items.n_items:
            raise ValueError(f"n_candidates={c} must be <= the number of items {features.items.n_items}")

    def _index_leaves(self, items: np.ndarray) -> None:
        """Index ``items`` (ascending ids) by leaf: ``_by_leaf[_leaf_start[l]:][:_leaf_count[l]]`` are leaf l's."""
        leaf = self.features.items.leaf
        self._by_leaf = items[np.argsort(leaf[items], kind="stable")].astype(np.int32)
        counts = np.bincount(leaf[items], minlength=int(leaf.max()) + 1)
        self._leaf_count = counts
        self._leaf_start = np.r_[0, np.cumsum(counts)[:-1]]

    def _pool(self) -> int | np.ndarray:
        """What recall draws from: the number of items (all of them), or the ids of the released ones
        (with the leaf index brought up to date when the feature store has released more)."""
        released = self.features.released_ids
        if released is None:
            return self.features.items.n_items
        if released is not self._released:
            self._index_leaves(released)
            self._released = released
        return released

    def __call__(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Candidates for each user's request: (B, C) int32 item ids, no duplicates within a row."""
        pool = self._pool()
        b = len(users)
        popular = self._popular(b, pool, rng)
        random = _draw(pool, (b, self.n_random), rng)
        interest = self._interest(users, pool, rng)
        cands = np.concatenate([popular, interest, random], axis=1).astype(np.int32)
        return _dedupe(cands, pool, rng)

    def _popular(self, b: int, pool: int | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Distinct popular items per request: a window at a random offset into the popular pool,
        shuffled once per call (so no duplicates arise within the popular part) with the caller's
        stream, so one bucket's draws never depend on whether another bucket was served first."""
        shuffled = rng.permutation(self.features.popular(self.config.popular_pool))
        n = min(self.n_popular, len(shuffled))
        offset = rng.integers(0, len(shuffled), b)
        window = shuffled[(offset[:, None] + np.arange(n)[None, :]) % len(shuffled)]
        if n < self.n_popular:   # a pool smaller than the popular share: fill with random items
            extra = _draw(pool, (b, self.n_popular - n), rng)
            window = np.concatenate([window, extra], axis=1)
        return window

    def _interest(self, users: np.ndarray, pool: int | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Items of the leaves of the users' recent clicks (a released click's leaf has a released
        item: itself); random items for users with no click history."""
        b, m = len(users), self.n_interest
        hist, _ = self.features.history("clicks", users, min(self.config.recall_history, self.features.history_length))
        valid = hist != PAD
        n_valid = valid.sum(axis=1)
        # pick a random valid history slot per candidate (valid slots are right-aligned)
        width = hist.shape[1]
        offset = (rng.random((b, m)) * np.maximum(n_valid, 1)[:, None]).astype(np.int64)
        slot = width - 1 - offset
        picked = hist[np.arange(b)[:, None], slot]
        leaf = self.features.items.leaf[np.maximum(picked, 0)]
        count = self._leaf_count[leaf]
        at = self._leaf_start[leaf] + (rng.random((b, m)) * count).astype(np.int64)
        # clipped: a user with no clicks reads item 0's leaf, which may have no released item yet
        item = self._by_leaf[np.minimum(at, len(self._by_leaf) - 1)]
        # users with no click history get random items instead
        fallback = _draw(pool, (b, m), rng)
        return np.where((n_valid > 0)[:, None], item, fallback)


def _draw(pool: int | np.ndarray, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform items: from all ``pool`` items for an int (``rng.integers(0, pool, size)``), else
    from the array of item ids ``pool``."""
    if isinstance(pool, np.ndarray):
        return pool[rng.integers(0, len(pool), size)]
    return rng.integers(0, pool, size)


def _row_duplicates(rows: np.ndarray) -> np.ndarray:
    """(R, C) bool: True where a value already occurred at an earlier column of its row.

    One row sort of ``value * C + column`` keys (distinct, so an unstable sort is exact): equal
    values are adjacent with the earliest column first, and every later one is a duplicate.
    """
    r, c = rows.shape
    keys = rows * np.int64(c) + np.arange(c, dtype=np.int64)
    keys.sort(axis=1)
    value = keys // c
    row, col = np.nonzero(value[:, 1:] == value[:, :-1])
    dup = np.zeros((r, c), dtype=bool)
    dup[row, keys[row, col + 1] - value[row, col + 1] * c] = True
    return dup


def _dedupe(cands: np.ndarray, pool: int | np.ndarray, rng: np.random.Generator, rounds: int = 6) -> np.ndarray:
    """Replace duplicate items within each row by random ones from ``pool`` (see :func:`_draw`)
    until no row has a duplicate.

    Only rows that received replacements are checked again, so later rounds are cheap.
    """
    cands = cands.copy()
    rows = np.arange(len(cands))
    for _ in range(rounds):
        dup = _row_duplicates(cands[rows])
        hit = dup.any(axis=1)
        if not hit.any():
            return cands
        rows, dup = rows[hit], dup[hit]
        sub = cands[rows]
        sub[dup] = _draw(pool, int(dup.sum()), rng)
        cands[rows] = sub
    # rare leftovers: redraw those rows without replacement
    for row in rows[_row_duplicates(cands[rows]).any(axis=1)]:
        keep = np.unique(cands[row])
        items = pool if isinstance(pool, np.ndarray) else np.arange(pool)
        extra = rng.choice(np.setdiff1d(items, keep), cands.shape[1] - len(keep), replace=False)
        cands[row] = np.concatenate([keep, extra])
    return cands
