"""The feature store: what the platform can observe about users and items, updated as events happen.

Policies read it at serving time through :class:`simulator.schema.RankBatch`. It holds no oracle
value: histories of observable events, counters, and the observable item attributes.
Per-user histories are ring buffers in arrays (users x length), so a batch of events for many
users is recorded with a few numpy calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.schema import HISTORIES, PAD  # noqa: E402  (re-exported)

# HISTORIES: clicks = effective views; skips = passive negatives (< skip threshold);
# satisfied / dissatisfied = items whose questionnaire was answered like / dislike (or unsuitable);
# mixed = effective views and skips interleaved in time, with a label (1 positive, 0 skip).


@dataclass(frozen=True)
class ItemAttributes:
    """Observable item attributes (no hidden trait)."""
    l1: np.ndarray
    l2: np.ndarray
    leaf: np.ndarray
    author: np.ndarray
    duration: np.ndarray
    release_day: np.ndarray | None = None   # first day each item can be served; None: every item from day 0

    @property
    def n_items(self) -> int:
        return len(self.l1)


class RingHistory:
    """Last ``length`` events per user, oldest first when read, with an optional int8 label."""

    def __init__(self, n_users: int, length: int):
        self.length = length
        self.items = np.full((n_users, length), PAD, dtype=np.int32)
        self.labels = np.zeros((n_users, length), dtype=np.int8)
        self.count = np.zeros(n_users, dtype=np.int64)   # events ever recorded

    def record(self, users: np.ndarray, items: np.ndarray, labels: np.ndarray | None = None, *,
               grouped: bool = False) -> None:
        """Append events; ``users`` may repeat, events of one user are taken in the given order.

        ``grouped=True`` promises that each user's events are contiguous (as in a page batch),
        which saves a sort.
        """
        if len(users) == 0:
            return
        order = slice(None) if grouped else np.argsort(users, kind="stable")
        u, it = users[order], items[order]
        starts = np.concatenate(([0], np.flatnonzero(u[1:] != u[:-1]) + 1))
        sizes = np.diff(np.concatenate((starts, [len(u)])))
        rank = np.arange(len(u)) - np.repeat(starts, sizes)
        slot = (self.count[u] + rank) % self.length
        self.items[u, slot] = it
        if labels is not None:
            self.labels[u, slot] = labels[order]
        self.count[u[starts]] += sizes

    def record_pages(self, users: np.ndarray, items: np.ndarray, mask: np.ndarray,
                     labels: np.ndarray | None = None) -> None:
        """Append the events of page rows: ``items[r, j]`` for user ``users[r]`` where ``mask[r, j]``.

        ``users`` must be distinct (one page per user); each row's events are taken left to right,
        the same as :meth:`record` on the masked rows with ``grouped=True``, without its
        group search.
        """
        rank = np.cumsum(mask, axis=1)                  # 1-based rank of each event in its row
        slot = (self.count[users][:, None] + rank - 1) % self.length
        rows = np.broadcast_to(users[:, None], mask.shape)[mask]
        slot = slot[mask]
        self.items[rows, slot] = items[mask]
        if labels is not None:
            self.labels[rows, slot] = labels[mask]
        self.count[users] += rank[:, -1]

    def read(self, users: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``length`` events of each user, right-aligned, oldest first, padded with PAD.

        Returns:
            (items, labels): (B, length) int32 and int8.
        """
        length = self.length if length is None else length
        if not 1 <= length <= self.length:
            raise ValueError(f"length={length} must be in [1, {self.length}]")
        pos = self.count[users, None] - length + np.arange(length)[None, :]   # (B, L)
        valid = pos >= 0
        slot = pos % self.length
        rows = users[:, None]
        items = np.where(valid, self.items[rows, slot], PAD)
        labels = np.where(valid, self.labels[rows, slot], 0).astype(np.int8)
        return items, labels


class FeatureStore:
    """Observable histories and counters of every user and item."""

    def __init__(self, n_users: int, items: ItemAttributes, *, history_length: int = 50,
                 n_leaves: int | None = None, popularity_decay: float = 0.5, leaf_click_decay: float = 0.7):
        """The defaults are :class:`simulator.config.PlatformConfig`'s ``history_length``,
        ``popularity_decay`` (daily decay of the items' recent clicks) and ``leaf_click_decay``
        (daily decay of the users' per-category clicks); the platform passes its config's values."""
        if history_length < 1:
            raise ValueError(f"history_length={history_length} must be >= 1")
        self.n_users = n_users
        self.items = items
        self.history_length = history_length
        self.histories = {name: RingHistory(n_users, history_length) for name in HISTORIES}
        n_leaves = int(items.leaf.max()) + 1 if n_leaves is None else n_leaves
        self.user_impressions = np.zeros(n_users, dtype=np.int64)
        self.user_clicks = np.zeros(n_users, dtype=np.int64)
        self.user_skips = np.zeros(n_users, dtype=np.int64)
        self.user_likes = np.zeros(n_users, dtype=np.int64)
        self.user_surveys_answered = np.zeros(n_users, dtype=np.int64)
        self.user_active_days = np.zeros(n_users, dtype=np.int64)
        self.leaf_clicks = np.zeros((n_users, n_leaves), dtype=np.float32)  # decayed daily
        n = items.n_items
        self.item_impressions = np.zeros(n, dtype=np.int64)
        self.item_clicks = np.zeros(n, dtype=np.int64)
        self.item_skips = np.zeros(n, dtype=np.int64)
        self.item_likes = np.zeros(n, dtype=np.int64)
        self.item_recent_clicks = np.zeros(n, dtype=np.float64)  # decayed daily
        self.popularity_decay = popularity_decay
        self.leaf_click_decay = leaf_click_decay
        self._popular_cache: tuple[int, int, np.ndarray] | None = None   # (tick, k asked, pool)
        self.released: np.ndarray | None = None       # (N,) bool items out by the current day (start_day); None: all
        self.released_ids: np.ndarray | None = None   # their ids, ascending
        self.version = 0   # bumps on every record
        self.tick = 0      # bumps once per serving round (see begin_tick)

    def history(self, name: str, users: np.ndarray, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read a history (one of :data:`HISTORIES`) for users; see :meth:`RingHistory.read`."""
        try:
            ring = self.histories[name]
        except KeyError:
            raise KeyError(f"unknown history {name!r}; known: {', '.join(HISTORIES)}") from None
        return ring.read(np.asarray(users), length)

    def begin_tick(self) -> None:
        """Mark a new serving round: the popular pool is recomputed at most once per round
        (popularity may be one tick stale, as on a real platform)."""
        self.tick += 1

    def popular(self, k: int) -> np.ndarray:
        """The ``k`` items with the most recent (decayed) effective views, most popular first."""
        if self._popular_cache is not None and self._popular_cache[:2] == (self.tick, k):
            return self._popular_cache[2]
        asked, k = k, min(k, len(self.item_recent_clicks) if self.released is None else len(self.released_ids))
        # ties broken by item id, so the pool is deterministic
        key = self.item_recent_clicks - np.arange(len(self.item_recent_clicks)) * 1e-9
        if self.released is not None:               # items not released yet rank last, past k
            key = np.where(self.released, key, -np.inf)
        top = np.argpartition(-key, k - 1)[:k]
        top = top[np.argsort(-key[top], kind="stable")]
        self._popular_cache = (self.tick, asked, top)
        return top

    def record(self, users: np.ndarray, items: np.ndarray, *, effective_view: np.ndarray,
               skip: np.ndarray, like: np.ndarray, survey_satisfied: np.ndarray,
               survey_dissatisfied: np.ndarray, survey_submitted: np.ndarray,
               grouped: bool = False) -> None:
        """Record impressions (arrays over impressions, in time order within each user).

        ``grouped=True`` promises that each user's impressions are contiguous.
        """
        self.version += 1
        np.add.at(self.user_impressions, users, 1)
        np.add.at(self.item_impressions, items, 1)
        for mask, user_counter, item_counter in (
                (effective_view, self.user_clicks, self.item_clicks),
                (skip, self.user_skips, self.item_skips),
                (like, self.user_likes, self.item_likes)):
            np.add.at(user_counter, users[mask], 1)
            np.add.at(item_counter, items[mask], 1)
        np.add.at(self.user_surveys_answered, users[survey_submitted], 1)
        np.add.at(self.item_recent_clicks, items[effective_view], 1.0)
        np.add.at(self.leaf_clicks, (users[effective_view], self.items.leaf[items[effective_view]]), 1.0)
        h = self.histories
        g = {"grouped": grouped}
        h["clicks"].record(users[effective_view], items[effective_view], **g)
        h["skips"].record(users[skip], items[skip], **g)
        either = effective_view | skip
        h["mixed"].record(users[either], items[either], effective_view[either].astype(np.int8), **g)
        h["satisfied"].record(users[survey_satisfied], items[survey_satisfied], **g)
        h["dissatisfied"].record(users[survey_dissatisfied], items[survey_dissatisfied], **g)

    def record_pages(self, users: np.ndarray, pages: np.ndarray, *, served: np.ndarray,
                     effective_view: np.ndarray, skip: np.ndarray, like: np.ndarray,
                     survey_satisfied: np.ndarray, survey_dissatisfied: np.ndarray,
                     survey_submitted: np.ndarray) -> None:
        """Record the served part of a batch of pages: the same as :meth:`record` on the served
        impressions (row by row), with per-user counts taken per row.

        Args:
            users: (B,) distinct user ids, one page each.
            pages: (B, k) item ids; ``served`` (B, k) marks the impressions the user reached.
            effective_view, skip, like, survey_*: (B, k) bool flags of every position.
        """
        self.version += 1
        flags = [f & served for f in (effective_view, skip, like, survey_satisfied,
                                      survey_dissatisfied, survey_submitted)]
        ev, sk, lk, sat, dis, sub = flags
        self.user_impressions[users] += served.sum(axis=1)
        np.add.at(self.item_impressions, pages[served], 1)
        for mask, user_counter, item_counter in ((ev, self.user_clicks, self.item_clicks),
                                                 (sk, self.user_skips, self.item_skips),
                                                 (lk, self.user_likes, self.item_likes)):
            user_counter[users] += mask.sum(axis=1)
            np.add.at(item_counter, pages[mask], 1)
        self.user_surveys_answered[users] += sub.sum(axis=1)
        clicked = pages[ev]
        np.add.at(self.item_recent_clicks, clicked, 1.0)
        np.add.at(self.leaf_clicks, (np.broadcast_to(users[:, None], ev.shape)[ev], self.items.leaf[clicked]), 1.0)
        h = self.histories
        h["clicks"].record_pages(users, pages, ev)
        h["skips"].record_pages(users, pages, sk)
        h["mixed"].record_pages(users, pages, ev | sk, ev.view(np.int8))
        h["satisfied"].record_pages(users, pages, sat)
        h["dissatisfied"].record_pages(users, pages, dis)

    def start_day(self, day: int) -> None:
        """Release the items whose release day has come (``catalog.new_items_per_day``): from now
        on :meth:`popular` ranks only items out by ``day``, and recall draws only from
        ``released_ids``. Without release days nothing changes."""
        if self.items.release_day is None:
            return
        self.released = self.items.release_day <= day
        self.released_ids = np.flatnonzero(self.released)
        self._popular_cache = None

    def end_day(self, active_users: np.ndarray) -> None:
        """Decay the recency-weighted counters at the end of a simulated day."""
        self.version += 1
        self.tick += 1
        self.item_recent_clicks *= self.popularity_decay
        self.leaf_clicks *= self.leaf_click_decay
        self.user_active_days[active_users] += 1
