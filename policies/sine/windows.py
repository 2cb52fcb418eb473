"""SINE's training data: per-user mixed sequences in page order, the training windows and their
targets, and the held-out tail for early stopping.

Every target is scored from the history its page was ranked with (docs/notes/sine.md, "Every
target is scored from the history its page was ranked with"). Shapes: N events, U users, n windows,
L window length (``max_len``), M target slots per window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.data import Sequences, merge, pad, request_sequences, to_model_ids
from simulator.schema import LogData

@dataclass(frozen=True)
class Paged:
    """Per-user sequences in page order, with the page boundary of every event
    (:func:`policies.data.request_sequences`).

    Attributes:
        seqs: the events (mixed, or clicks only), grouped by user, in the order the feature
            store records them.
        before: (N,) int64 the user's events in pages requested before the event's page, i.e.
            the length of the history the event's page was ranked with.
    """
    seqs: Sequences
    before: np.ndarray

    @classmethod
    def of(cls, data: LogData, kind: str = "mixed") -> Paged:
        return cls(*request_sequences(data, kind))

    def select(self, events: np.ndarray) -> Paged:
        """The events where the (N,) boolean mask ``events`` is true; ``before`` counts the kept
        events of earlier pages."""
        kept_before = np.r_[0, np.cumsum(events, dtype=np.int64)]          # (N + 1,) kept in [0, i)
        user_first = np.repeat(self.seqs.offsets[:-1], self.seqs.lengths)  # (N,)
        before = kept_before[user_first + self.before] - kept_before[user_first]
        return Paged(self.seqs.select(events), before[events])

    def positives(self) -> Paged:
        """The clicks (``labels == 1``)."""
        return self.select(self.seqs.labels == 1)

    def head(self, keep: np.ndarray) -> Paged:
        """The first ``keep[r]`` events of each row."""
        return self.select(self.seqs.event_rank < np.repeat(np.asarray(keep, np.int64), self.seqs.lengths))

    def append(self, new: Paged) -> Paged:
        """``new``'s events after this one's, user by user (``new``'s pages must be newer)."""
        rows = self.seqs.rows_of(new.seqs.users)
        n_old = np.where(rows >= 0, self.seqs.lengths[np.maximum(rows, 0)], 0) if len(self.seqs) \
            else np.zeros(len(new.seqs), np.int64)
        users = np.r_[self.seqs.event_users, new.seqs.event_users]
        order = np.argsort(users, kind="stable")                            # as merge() orders them
        before = np.r_[self.before, new.before + np.repeat(n_old, new.seqs.lengths)]
        return Paged(merge(self.seqs, new.seqs), before[order].astype(np.int64))


@dataclass(frozen=True)
class Windows:
    """Training windows; ``users`` (n,), ``tokens`` (n, L), every other array (n, M).

    ``tokens`` are the inputs (see :class:`~policies.sine.model.FeedbackItemEmbedding`), a
    stretch of a user's events. Each of the M target slots is one later event, scored from the
    state at column ``ctx`` of the window: the last event before the target's page (the history
    its page was ranked with). The event is either a click (``targets`` > 0, an L1 positive) or
    a skip (``skip_neg`` > 0, an L2 negative, with ``skip_pos`` the user's first click after it;
    0 if there is none or the skipped item is also one of the user's clicks); empty slots are 0
    in all four. ``events`` is the index of each slot's event in the sequences (-1: empty)."""
    users: np.ndarray
    tokens: np.ndarray
    ctx: np.ndarray
    targets: np.ndarray
    skip_pos: np.ndarray
    skip_neg: np.ndarray
    events: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def with_negatives(self, negatives: np.ndarray) -> Examples:
        """One epoch's :class:`Examples`: these windows plus ``negatives`` (n, M), model ids."""
        return Examples(users=self.users, tokens=self.tokens, ctx=self.ctx, targets=self.targets,
                        skip_pos=self.skip_pos, skip_neg=self.skip_neg, negatives=negatives)


@dataclass(frozen=True)
class Examples:
    """One epoch of training examples: :class:`Windows`' arrays plus ``negatives`` (n, M), a
    sampled negative (model id) per target slot."""
    users: np.ndarray
    tokens: np.ndarray
    ctx: np.ndarray
    targets: np.ndarray
    skip_pos: np.ndarray
    skip_neg: np.ndarray
    negatives: np.ndarray


def tokens_of(items: np.ndarray, labels: np.ndarray | None, n_items: int) -> np.ndarray:
    """Mixed-sequence tokens from item ids (PAD = -1) and labels (1 click, 0 skip; None: all
    clicks): a click is ``item + 1``, a skip ``item + 1 + n_items + 1``, padding 0."""
    ids = to_model_ids(items)                                              # PAD -> 0
    if labels is None:
        return ids
    return np.where((np.asarray(labels) == 0) & (ids > 0), ids + n_items + 1, ids)


def next_click_after(seqs: Sequences) -> np.ndarray:
    """(N,) index of each event's user's first click strictly after it, -1 if none."""
    n = len(seqs.items)
    idx = np.where(seqs.labels == 1, np.arange(n), n)
    first = np.minimum.accumulate(idx[::-1])[::-1] if n else idx          # first click at or after
    after = np.r_[first[1:], n]
    end = np.repeat(seqs.offsets[1:], seqs.lengths)
    return np.where(after < end, after, -1)


def mixed_windows(paged: Paged, max_len: int, n_items: int, exclude: np.ndarray, *,
                  stride: int | None = None) -> Windows:
    """Windows of ``max_len`` events of ``paged`` (mixed, or clicks only) with the targets of
    :class:`Windows`, every target scored from the history its page was ranked with.

    A user's *contexts* are the events before their last page. With ``stride=None`` there is one
    window per user, over the newest ``max_len`` contexts; with an int, also windows ending
    ``stride``, ``2 * stride``, ... events earlier. A target is placed in the window that holds
    its context (the last event before its page) at the latest column, so with ``stride <=
    max_len`` every event after the user's first page is a target exactly once; with
    ``stride=None`` only those whose context is in the newest window are. Events of the user's
    first page (no history) are no targets.
    """
    seqs, before = paged.seqs, paged.before
    lens = seqs.lengths
    U = len(seqs)
    m = np.where(lens > 0, before[np.maximum(seqs.offsets[1:] - 1, 0)], 0) if U else np.zeros(0, np.int64)
    if stride is None:
        n_win = (m >= 1).astype(np.int64)
        step = 0
    else:
        n_win = np.where(m >= 1, (m - 1) // stride + 1, 0)
        step = stride
    rows = np.repeat(np.arange(U), n_win)                                  # (n,)
    k = np.arange(len(rows)) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # 0 = the newest window
    end = m[rows] - k * step                                               # exclusive, within the user
    start = end - max_len                                                  # column 0 (may be < 0: padding)
    lo = np.maximum(start, 0) if stride is None else np.maximum(np.maximum(start, end - stride), 0)
    # the targets of a window are the events whose context (before - 1) is in [lo, end): a range
    big = int(lens.max()) + 2 if U else 2
    key = np.repeat(np.arange(U), lens) * big + before                     # sorted
    first = np.searchsorted(key, rows * big + lo + 1)
    count = np.searchsorted(key, rows * big + end + 1) - first             # (n,)
    has = count > 0
    rows, start, end, first, count = rows[has], start[has], end[has], first[has], count[has]
    M = int(count.max()) if len(count) else 1
    slot = np.arange(M)[None, :]
    real = slot < count[:, None]                                           # (n, M)
    nx = np.where(real, first[:, None] + slot, 0)                          # (n, M) index of the target
    ctx = np.where(real, before[nx] - 1 - start[:, None], 0)              # column of its context
    col = np.arange(max_len)[None, :]
    local = start[:, None] + col                                           # (n, L) index within the user
    inside = local >= 0
    idx = np.where(inside, seqs.offsets[rows][:, None] + local, 0)
    tokens = np.where(inside, tokens_of(seqs.items[idx], seqs.labels[idx], n_items), 0)
    users = seqs.users[rows]
    click = real & (seqs.labels[nx] == 1)
    targets = np.where(click, seqs.items[nx] + 1, 0)
    after = next_click_after(seqs)[nx]                                     # (n, M)
    skipped = seqs.items[nx]
    own = np.isin(users[:, None] * n_items + skipped, exclude)            # skipped item also clicked
    pair = real & (seqs.labels[nx] == 0) & (after >= 0) & ~own
    skip_neg = np.where(pair, skipped + 1, 0)
    skip_pos = np.where(pair, seqs.items[np.maximum(after, 0)] + 1, 0)
    return Windows(users=users, tokens=tokens.astype(np.int64), ctx=ctx.astype(np.int64),
                   targets=targets.astype(np.int64), skip_pos=skip_pos.astype(np.int64),
                   skip_neg=skip_neg.astype(np.int64), events=np.where(real, nx, -1))


@dataclass(frozen=True)
class Validation:
    """Held-out tails (see :func:`holdout_tail`): per user, the last click and the skips after the
    penultimate click, after the history the tail's first page was ranked with.

    Attributes:
        users: (n,) int64.
        items: (n,) int64 the last click of each user.
        skips: (n, M) int64 the skipped items of the tail, PAD-padded (M >= 1).
        history: the events before the page of the tail's first event, rows aligned with
            ``users`` (every user here has at least one).
    """
    users: np.ndarray
    items: np.ndarray
    skips: np.ndarray
    history: Paged

    def __len__(self) -> int:
        return len(self.users)


def holdout_tail(paged: Paged, n_items: int, exclude: np.ndarray) -> tuple[Paged, Validation]:
    """Hold out each user's *tail*: the events after their penultimate click (users with >= 2
    clicks; the others keep everything).

    The tail's last click is the validation target; its skips, unless the user clicked the item
    (``exclude`` keys), are the observed negatives it is ranked against, as in the authors' code.
    They are scored after the history the platform ranked the tail's first page with: the events
    before that page (users whose tail starts on their first page have none and are left out).

    Returns:
        (rest, validation): ``rest`` is every user's events up to and including the penultimate
        click (or all of them).
    """
    seqs = paged.seqs
    n, U = len(seqs.items), len(seqs)
    row = np.repeat(np.arange(U), seqs.lengths)                           # (N,)
    click = np.flatnonzero(seqs.labels == 1)
    last = np.full(U, -1, np.int64)
    np.maximum.at(last, row[click], click)
    earlier = click[click != last[row[click]]]
    prev = np.full(U, -1, np.int64)
    np.maximum.at(prev, row[earlier], earlier)                            # penultimate click
    cut = np.where(prev >= 0, paged.before[np.minimum(prev + 1, max(n - 1, 0))], 0)   # (U,) history length
    ok = (prev >= 0) & (cut > 0)                                           # (U,) >= 2 clicks, a history
    rest = paged.head(np.where(prev >= 0, prev - seqs.offsets[:-1] + 1, seqs.lengths))
    tail = ok[row] & (np.arange(n) > prev[row])
    keys = seqs.event_users * n_items + seqs.items
    neg = tail & (seqs.labels == 0) & ~np.isin(keys, exclude)
    negs = seqs.select(neg)
    users = seqs.users[ok]
    width = max(1, int(negs.lengths.max()) if len(negs) else 1)
    skips = pad(negs, width, rows=negs.rows_of(users))                     # (n, M), PAD
    history = paged.head(np.where(ok, cut, 0))
    return rest, Validation(users=users, items=seqs.items[last[ok]], skips=skips, history=history)

