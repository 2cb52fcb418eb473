"""The shared data layer: turns observable logs into what sequence models need.

Every neural policy builds its training data from here, so the conventions below hold everywhere:

- **Chronological order.** A user's events are ordered by ``ts``, then ``request_id``, then
  ``position`` (the order in which the platform's feature store records them, so histories
  built here equal what :meth:`FeatureStore.history` returns at serving time).
- **Histories** are the feature store's, by the same names (:data:`simulator.schema.HISTORIES`):
  ``clicks`` (effective views), ``skips`` (passive negatives), ``mixed`` (both, labelled
  1 = effective view, 0 = skip), ``satisfied`` (questionnaire answered ``like``) and
  ``dissatisfied`` (``dislike``, ``unsuitable`` or ``adults_only``).
- **Ragged sequences** are held in CSR form (:class:`Sequences`): one flat array of events
  sorted by user and time, plus per-user offsets. Nothing loops over impressions in Python.
- **Item ids in torch.** Models see ``item_id + 1``, so that ``0`` is padding (the
  ``padding_idx`` of an embedding). The feature store pads with ``PAD = -1``, so
  :func:`to_model_ids` (``ids + 1``) maps a feature-store history to model ids and its padding to
  0 in one step. Padded arrays are right-aligned (oldest first, the newest event in the last
  column), like the feature store's.
- **Splits.** :func:`leave_last_out`: per user, the last positive is the test target, the
  second to last the validation target, everything before it is training data.
- **Negative sampling** is uniform over the catalogue, excludes the user's positives, and
  draws from an explicit ``numpy.random.Generator`` (:func:`sample_negatives`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.schema import DISSATISFIED_ANSWERS, HISTORIES, ORACLE_PREFIX, PAD, SATISFIED_ANSWERS, LogData
ORDER_COLUMNS = ("user_id", "ts", "request_id", "position")
REQUIRED_COLUMNS = ORDER_COLUMNS + ("item_id", "effective_view", "skip", "survey_answer")
"""Impression columns the data layer reads."""


def check_observable(data: LogData, *, required: tuple[str, ...] = REQUIRED_COLUMNS,
                     where: str = "train", allow_empty: bool = False) -> None:
    """Validate what a policy is given: observable columns only, the ``required`` ones present,
    at least one impression (unless ``allow_empty``, for policies that learn nothing from logs).

    This is where the rule "no oracle column reaches a policy" is enforced: every policy's
    ``fit`` calls it (directly or through :func:`user_sequences`).

    Raises:
        TypeError: ``data`` is not a LogData.
        ValueError: an oracle (``true_*``) column in any of the three tables, a missing column,
            or no impressions.
    """
    if not isinstance(data, LogData):
        raise TypeError(f"{where} must be a LogData, got {type(data).__name__}")
    oracle = [str(c) for frame in (data.impressions, data.items, data.users)
              for c in frame.columns if str(c).startswith(ORACLE_PREFIX)]
    if oracle:
        shown = ", ".join(oracle[:5]) + (f", ... ({len(oracle)} in all)" if len(oracle) > 5 else "")
        raise ValueError("policies must be given observable data only; got oracle column(s) "
                         f"{shown}; pass LogData.observable()")
    missing = [c for c in required if c not in data.impressions.columns]
    if missing:
        raise ValueError(f"{where} impressions are missing column(s) {', '.join(map(repr, missing))}")
    if len(data.impressions) == 0 and not allow_empty:
        raise ValueError(f"{where} has no impressions; a policy needs logs to learn from")


def n_items_of(data: LogData) -> int:
    """Catalogue size: one more than the largest item id in the item table or the impressions."""
    top = -1
    if "item_id" in data.items.columns and len(data.items):
        top = int(data.items["item_id"].max())
    if len(data.impressions):
        top = max(top, int(data.impressions["item_id"].max()))
    return top + 1


def item_side(items: pd.DataFrame, features: tuple[str, ...] | list[str], n_items: int, *,
              unknown: bool = False) -> list[np.ndarray]:
    """(n_items,) int64 value of each item attribute in ``features`` (e.g. ``l1``, ``leaf``), read
    from the item table; an item the table lacks gets 0, or with ``unknown=True`` one above the
    largest known value (a category of its own).

    Raises:
        ValueError: naming the features the item table does not have.
    """
    missing = [f for f in (*features, "item_id") if f not in items.columns]
    if features and missing:
        raise ValueError(f"item_features={tuple(features)}: the item table has no column(s) "
                         f"{', '.join(map(repr, missing))}")
    out = []
    for f in features:
        known = items[f].to_numpy(np.int64)
        fill = int(known.max()) + 1 if unknown and len(known) else 0
        values = np.full(n_items, fill, np.int64)
        values[items["item_id"].to_numpy(np.int64)] = known
        out.append(values)
    return out


def chronological_order(impressions: pd.DataFrame) -> np.ndarray:
    """Row order that sorts impressions by user, then ``ts``, ``request_id``, ``position``."""
    keys = [impressions[c].to_numpy() for c in reversed(ORDER_COLUMNS)]   # lexsort: last key first
    return np.lexsort(keys)


@dataclass(frozen=True)
class Sequences:
    """Ragged per-user event sequences in CSR form, oldest event first within each user.

    Attributes:
        users: (U,) int64 user ids, ascending; only users with at least one event.
        offsets: (U + 1,) int64; the events of ``users[r]`` are ``[offsets[r], offsets[r + 1])``.
        items: (N,) int64 item ids.
        labels: (N,) int8; 1 positive, 0 negative (only ``mixed`` has zeros).
        ts: (N,) float64 time of each event, seconds.
    """
    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    ts: np.ndarray

    @classmethod
    def from_events(cls, users: np.ndarray, items: np.ndarray, labels: np.ndarray | None = None,
                    ts: np.ndarray | None = None) -> Sequences:
        """Build from flat event arrays already sorted by user, then time."""
        users = np.asarray(users, dtype=np.int64)
        n = len(users)
        if n and np.any(users[1:] < users[:-1]):
            raise ValueError("users must be sorted (events grouped by user, oldest first)")
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if n else np.zeros(0, np.int64)
        return cls(users=users[starts], offsets=np.r_[starts, n].astype(np.int64),
                   items=np.asarray(items, dtype=np.int64),
                   labels=(np.ones(n, np.int8) if labels is None else np.asarray(labels, np.int8)),
                   ts=(np.zeros(n) if ts is None else np.asarray(ts, np.float64)))

    def __len__(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        """(U,) number of events per user."""
        return np.diff(self.offsets)

    @property
    def event_users(self) -> np.ndarray:
        """(N,) the user of every event."""
        return np.repeat(self.users, self.lengths)

    @property
    def event_rank(self) -> np.ndarray:
        """(N,) 0-based index of every event within its user's sequence."""
        return np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths)

    def row(self, user: int) -> np.ndarray:
        """Item ids of one user's sequence (empty if the user has none)."""
        r = np.searchsorted(self.users, user)
        if r == len(self.users) or self.users[r] != user:
            return np.zeros(0, np.int64)
        return self.items[self.offsets[r]:self.offsets[r + 1]]

    def rows_of(self, users: np.ndarray) -> np.ndarray:
        """(B,) row index of each user id, -1 where the user has no sequence."""
        users = np.asarray(users, dtype=np.int64)
        if len(self.users) == 0:
            return np.full(len(users), -1, np.int64)
        r = np.minimum(np.searchsorted(self.users, users), len(self.users) - 1)
        return np.where(self.users[r] == users, r, -1)

    def select(self, events: np.ndarray) -> Sequences:
        """The sub-sequences of the events where the (N,) boolean mask ``events`` is true."""
        return Sequences.from_events(self.event_users[events], self.items[events], self.labels[events],
                                     self.ts[events])

    def positives(self) -> Sequences:
        """Only the positive events (``labels == 1``): for ``mixed``, the click sequence."""
        return self.select(self.labels == 1)

    def head(self, keep: np.ndarray) -> Sequences:
        """The first ``keep[r]`` events of each row (users left with none are dropped)."""
        keep = np.broadcast_to(np.asarray(keep, np.int64), self.users.shape)
        return self.select(self.event_rank < np.repeat(keep, self.lengths))


def user_sequences(data: LogData | pd.DataFrame, kind: str) -> Sequences:
    """Per-user chronological sequence of one history kind (see the module docstring).

    Args:
        data: observable logs (a LogData is validated with :func:`check_observable`), or an
            impressions frame with :data:`REQUIRED_COLUMNS`.
        kind: one of :data:`simulator.schema.HISTORIES`.

    Returns:
        The sequences; ``labels`` are 1 except for skips in ``mixed`` (0).
    """
    if kind not in HISTORIES:
        raise ValueError(f"kind={kind!r} must be one of {', '.join(HISTORIES)}")
    if isinstance(data, LogData):
        check_observable(data)
        frame = data.impressions
    else:
        frame = data
    order = chronological_order(frame)
    ev = frame["effective_view"].to_numpy(bool)[order]
    skip = frame["skip"].to_numpy(bool)[order]
    labels = None
    if kind == "clicks":
        keep = ev
    elif kind == "skips":
        keep = skip
    elif kind == "mixed":
        keep = ev | skip
        labels = ev.astype(np.int8)
    else:
        answers = SATISFIED_ANSWERS if kind == "satisfied" else DISSATISFIED_ANSWERS
        keep = frame["survey_answer"].isin(answers).to_numpy(bool)[order]
    rows = order[keep]
    return Sequences.from_events(frame["user_id"].to_numpy()[rows], frame["item_id"].to_numpy()[rows],
                                 None if labels is None else labels[keep], frame["ts"].to_numpy()[rows])


def request_times(impressions: pd.DataFrame) -> np.ndarray:
    """(N,) request time of every row: the first ``ts`` of its ``(user_id, request_id)``."""
    ts = pd.Series(impressions["ts"].to_numpy(np.float64))
    return ts.groupby([impressions["user_id"].to_numpy(), impressions["request_id"].to_numpy()],
                      sort=False).transform("min").to_numpy()


def page_order(impressions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row order by user, then page (request time, ``request_id``), then position; and the (N,)
    request time of each row (:func:`request_times`), in that order.

    The platform logs a row at ``ts`` = request time + the watch time before it, so a long page
    can outlast the user's next request; the feature store records whole pages in the order they
    were served. Ordering by page keeps each page contiguous and its events after those of every
    page requested before it, as the store holds them (row-time order would interleave the two
    pages).
    """
    req_ts = request_times(impressions)
    order = np.lexsort((impressions["position"].to_numpy(), impressions["request_id"].to_numpy(np.int64),
                        req_ts, impressions["user_id"].to_numpy(np.int64)))
    return order, req_ts[order]


def page_starts(users: np.ndarray, requests: np.ndarray) -> np.ndarray:
    """(N,) int64 index of the first row of each row's page, for rows grouped by page (as
    :func:`page_order` orders them)."""
    n = len(users)
    if n == 0:
        return np.zeros(0, np.int64)
    new = np.r_[True, (users[1:] != users[:-1]) | (requests[1:] != requests[:-1])]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0)).astype(np.int64)


def request_sequences(data: LogData | pd.DataFrame, kind: str) -> tuple[Sequences, np.ndarray]:
    """:func:`user_sequences` in page order, with the events each event's page was served after.

    The platform ranks a page in one call and records the whole page in its feature store when it
    serves it, so a page is ranked with the user's events of *earlier requests* only. Here each
    user's events are ordered by page (request time, the first ``ts`` of the ``(user_id,
    request_id)``; then ``request_id``), then ``position``: the order the store records them in.
    It equals :func:`user_sequences`' order except where a long page outlasts the user's next
    request (row ``ts`` is the request time plus the watch time before the row).

    Args:
        data: observable logs (validated with :func:`check_observable`), or an impressions frame
            with :data:`REQUIRED_COLUMNS`.
        kind: one of :data:`simulator.schema.HISTORIES`.

    Returns:
        (seqs, before): ``seqs`` as :func:`user_sequences` returns them (``ts`` is each row's own),
        in page order; ``before`` (N,) int64, the number of the user's events of ``kind`` in pages
        requested before the event's page: what ``FeatureStore.history(kind)`` held when the page
        was ranked. The last event of an earlier request is ``seqs.offsets[row] + before - 1``
        (none where ``before == 0``).
    """
    if isinstance(data, LogData):
        check_observable(data)
        data = data.impressions
    users = data["user_id"].to_numpy(np.int64)
    requests = data["request_id"].to_numpy(np.int64)
    request_ts = request_times(data)
    # user_sequences on the rows with their request time as ts (so that they sort by page) and
    # their row number as item_id (to read the items and times back)
    paged = pd.DataFrame({c: data[c].to_numpy() for c in REQUIRED_COLUMNS})
    paged["ts"], paged["item_id"] = request_ts, np.arange(len(data), dtype=np.int64)
    seqs = user_sequences(paged, kind)
    rows = seqs.items
    seqs = Sequences(seqs.users, seqs.offsets, data["item_id"].to_numpy(np.int64)[rows], seqs.labels,
                     data["ts"].to_numpy(np.float64)[rows])
    page_first = page_starts(users[rows], requests[rows])
    return seqs, (page_first - np.repeat(seqs.offsets[:-1], seqs.lengths)).astype(np.int64)


@dataclass(frozen=True)
class Targets:
    """One held-out positive per user and the events before it.

    Attributes:
        users: (n,) int64 user ids, ascending.
        items: (n,) int64 the held-out item of each user.
        ts: (n,) float64 its time.
        history: the events of each user before the target, rows aligned with ``users``
            (every user here has at least one event before the target).
    """
    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    history: Sequences

    def __len__(self) -> int:
        return len(self.users)


def holdout_last(seqs: Sequences, *, min_positives: int = 2) -> tuple[Sequences, Targets]:
    """Hold out each user's last positive.

    Users with at least ``min_positives`` positives (>= 2) give a target; their remaining events
    are the ones before it (later negatives are dropped). Other users keep all their events and
    give no target.

    Returns:
        (rest, targets): ``rest`` is every user's events before the target (or all of them).
    """
    if min_positives < 2:
        raise ValueError(f"min_positives={min_positives} must be >= 2 (a target needs a history)")
    pos = seqs.labels == 1
    n_pos = np.add.reduceat(pos.astype(np.int64), seqs.offsets[:-1]) if len(seqs) else np.zeros(0, np.int64)
    # index of the last positive event of each row: the largest event index among positives
    last = np.full(len(seqs), -1, np.int64)
    idx = np.flatnonzero(pos)
    row_of = np.repeat(np.arange(len(seqs)), seqs.lengths)
    np.maximum.at(last, row_of[idx], idx)
    eligible = n_pos >= min_positives
    keep = np.where(eligible, last - seqs.offsets[:-1], seqs.lengths)
    rest = seqs.head(keep)
    t_rows = np.flatnonzero(eligible)
    t_idx = last[t_rows]
    history = rest.select(np.isin(rest.event_users, seqs.users[t_rows]))
    targets = Targets(users=seqs.users[t_rows], items=seqs.items[t_idx], ts=seqs.ts[t_idx], history=history)
    return rest, targets


@dataclass(frozen=True)
class LeaveLastOut:
    """Leave-last-out split: ``test`` = last positive, ``valid`` = second to last, ``train`` = the rest.

    ``valid.history`` equals the user's ``train`` events; ``test.history`` adds the validation
    target and whatever happened between the two targets.
    """
    train: Sequences
    valid: Targets
    test: Targets


def leave_last_out(seqs: Sequences, *, min_positives: int = 3) -> LeaveLastOut:
    """Per user: the last positive for test, the second to last for validation.

    Users with fewer than ``min_positives`` (>= 3) positives are kept whole in ``train`` and have
    no validation or test target.
    """
    if min_positives < 3:
        raise ValueError(f"min_positives={min_positives} must be >= 3 (test, validation and a history)")
    n_pos = np.add.reduceat((seqs.labels == 1).astype(np.int64), seqs.offsets[:-1]) if len(seqs) \
        else np.zeros(0, np.int64)
    eligible = np.isin(seqs.event_users, seqs.users[n_pos >= min_positives])
    small = seqs.select(~eligible)
    rest, test = holdout_last(seqs.select(eligible), min_positives=2)
    train_part, valid = holdout_last(rest, min_positives=2)
    return LeaveLastOut(train=merge(train_part, small), valid=valid, test=test)


def merge(a: Sequences, b: Sequences) -> Sequences:
    """Events of both, grouped by user; within a user ``a``'s events come first.

    Used to append newer logs to older ones (``a`` older): within each user the result stays
    chronological.
    """
    users = np.r_[a.event_users, b.event_users]
    order = np.argsort(users, kind="stable")
    return Sequences.from_events(users[order], np.r_[a.items, b.items][order],
                                 np.r_[a.labels, b.labels][order], np.r_[a.ts, b.ts][order])


def leave_last_out_logs(data: LogData, *, min_positives: int = 3) -> tuple[LogData, Targets]:
    """Cut each user's logs before their last effective view, for offline evaluation of a policy.

    For users with at least ``min_positives`` effective views, the last one and every impression
    after it are removed; the removed effective view is the user's test target. A policy fitted
    on the returned logs holds out the next-to-last click as its own validation target, so this
    is the leave-last-out protocol applied through the public ``fit``.

    Returns:
        (train, targets): the cut logs and the test targets (``targets.history`` = clicks before).
    """
    check_observable(data)
    if min_positives < 3:
        raise ValueError(f"min_positives={min_positives} must be >= 3 (test, validation and a history)")
    frame = data.impressions
    order = chronological_order(frame)
    users = frame["user_id"].to_numpy()[order].astype(np.int64)
    ev = frame["effective_view"].to_numpy(bool)[order]
    clicks = Sequences.from_events(users[ev], frame["item_id"].to_numpy()[order][ev], None,
                                   frame["ts"].to_numpy()[order][ev])
    eligible = clicks.lengths >= min_positives                            # (U,)
    _, targets = holdout_last(clicks.select(np.isin(clicks.event_users, clicks.users[eligible])))
    # position (in sorted order) of each eligible user's last click: it and everything after go
    last_click = np.flatnonzero(ev)[clicks.offsets[1:] - 1]               # (U,)
    cut = np.full(int(users.max()) + 1, len(order), np.int64)
    cut[clicks.users[eligible]] = last_click[eligible]
    kept_rows = np.sort(order[np.arange(len(order)) < cut[users]])
    train = LogData(frame.iloc[kept_rows].reset_index(drop=True), data.items, data.users)
    return train, targets


def positive_keys(seqs: Sequences, n_items: int) -> np.ndarray:
    """Sorted unique ``user * n_items + item`` of every positive event: the exclusion set of
    :func:`sample_negatives`."""
    pos = seqs.labels == 1
    return np.unique(seqs.event_users[pos] * n_items + seqs.items[pos])


def sample_negatives(rng: np.random.Generator, users: np.ndarray, n: int, *, n_items: int,
                     exclude: np.ndarray, distinct: bool = False, max_rounds: int = 100) -> np.ndarray:
    """Items drawn uniformly from the catalogue, never one of the user's positives.

    Args:
        rng: the only source of randomness.
        users: (B,) user ids.
        n: negatives per user.
        n_items: catalogue size; items are ``0 .. n_items - 1``.
        exclude: sorted ``user * n_items + item`` keys never to return (:func:`positive_keys`).
        distinct: no repeated item within a user's row (e.g. for 1 + 99 evaluation lists).
        max_rounds: rejected draws are redrawn up to this many times.

    Returns:
        (B, n) int64 item ids.

    Raises:
        ValueError: a user has too few admissible items (after ``max_rounds``).
    """
    users = np.asarray(users, dtype=np.int64)
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    out = rng.integers(0, n_items, size=(len(users), n))
    key_base = (users * n_items)[:, None]
    for _ in range(max_rounds):
        bad = _is_member(key_base + out, exclude)
        if distinct and n > 1:
            bad |= _repeated_in_row(out)
        n_bad = int(bad.sum())
        if n_bad == 0:
            return out
        out[bad] = rng.integers(0, n_items, size=n_bad)
    bad_users = np.unique(np.broadcast_to(users[:, None], out.shape)[bad])
    raise ValueError(f"could not sample {n} negative(s) for user(s) {bad_users[:5].tolist()} in "
                     f"max_rounds={max_rounds}: too few items that are not their positives")


def _is_member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(keys.shape, bool)
    i = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    return sorted_set[i] == keys


def _repeated_in_row(a: np.ndarray) -> np.ndarray:
    """True at every occurrence of a value after its first within the row."""
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    dup_sorted = np.zeros(a.shape, bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    out = np.zeros(a.shape, bool)
    np.put_along_axis(out, order, dup_sorted, axis=1)
    return out


def to_model_ids(items: np.ndarray) -> np.ndarray:
    """Item ids as the models index them: ``item + 1`` (int64), so PAD (-1) becomes 0."""
    return np.asarray(items, dtype=np.int64) + 1


def pad(seqs: Sequences, max_len: int, *, values: np.ndarray | None = None, fill: int = PAD,
        rows: np.ndarray | None = None) -> np.ndarray:
    """The last ``max_len`` events of each row, right-aligned (oldest first), padded on the left.

    Args:
        seqs: the sequences.
        max_len: width of the result; longer sequences keep their newest events.
        values: (N,) per-event values to lay out instead of ``seqs.items`` (e.g. labels, or the
            skip negatives aligned with the events).
        fill: the value of empty slots; with the default (PAD = -1) the result equals the feature
            store's :meth:`~simulator.features.FeatureStore.history` and :func:`to_model_ids`
            turns it into model ids.
        rows: (B,) row indices into ``seqs`` to lay out (default: every row); -1 gives an empty row.

    Returns:
        (B, max_len) array of ``values``' dtype (int64 item ids by default).
    """
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be >= 1")
    values = seqs.items if values is None else np.asarray(values)
    rows = np.arange(len(seqs)) if rows is None else np.asarray(rows, np.int64)
    if len(seqs) == 0:
        return np.full((len(rows), max_len), fill, dtype=values.dtype)
    valid_row = rows >= 0
    r = np.where(valid_row, rows, 0)
    return _layout(values, seqs.offsets[1:][r], np.where(valid_row, seqs.lengths[r], 0), max_len, fill)


def _layout(values: np.ndarray, ends: np.ndarray, lens: np.ndarray, max_len: int, fill) -> np.ndarray:
    """(B, max_len): row b holds ``values[ends[b] - min(lens[b], max_len) : ends[b]]`` right-aligned."""
    col = np.arange(max_len)[None, :]
    idx = ends[:, None] - max_len + col                                   # (B, max_len) event index
    ok = col >= max_len - np.minimum(lens, max_len)[:, None]
    out = np.full((len(ends), max_len), fill, dtype=values.dtype)
    out[ok] = values[idx[ok]]
    return out


def history(seqs: Sequences, users: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`FeatureStore.history` would return for these sequences: (B, length) int32 item
    ids right-aligned with PAD, and int8 labels."""
    rows = seqs.rows_of(users)
    return (pad(seqs, length, rows=rows).astype(np.int32),
            pad(seqs, length, values=seqs.labels, fill=0, rows=rows).astype(np.int8))


@dataclass(frozen=True)
class Windows:
    """Next-item training windows (SASRec): at every position of ``inputs`` the model predicts the
    item at the same position of ``targets`` (the following event).

    Attributes:
        users: (n,) int64 user of each window.
        inputs: (n, L) int64 model ids (0 = padding), right-aligned.
        targets: (n, L) int64 model ids of the next event (0 = no target).
        extra: (n, L) per-event values laid out like ``targets`` (PAD where empty), or None.
    """
    users: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    extra: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)


def next_item_windows(seqs: Sequences, max_len: int, *, extra: np.ndarray | None = None,
                      stride: int | None = None) -> Windows:
    """Next-item windows: the input is a stretch of a sequence, the target at each position is the
    event that follows. Users with fewer than 2 events give no window.

    Args:
        seqs: positive sequences (e.g. clicks).
        max_len: window length L.
        extra: (N,) per-event values aligned with ``seqs`` (e.g. the skip observed before each
            click, for SASRec-N), laid out like the targets.
        stride: None gives one window per user over the newest ``max_len + 1`` events (as in
            SASRec); an int also gives windows ending ``stride``, ``2 * stride``, ... events
            earlier, so that long sequences are used whole (``stride = max_len``: every event is
            a target exactly once).
    """
    if stride is not None and stride < 1:
        raise ValueError(f"stride={stride} must be >= 1 or None")
    lens = seqs.lengths
    if stride is None:
        back = np.zeros(int((lens >= 2).sum()), np.int64)
        rows = np.flatnonzero(lens >= 2)
    else:
        n_win = np.where(lens >= 2, (lens - 2) // stride + 1, 0)          # windows end at >= 2 events
        rows = np.repeat(np.arange(len(seqs)), n_win)
        back = (np.arange(len(rows)) - np.repeat(np.cumsum(n_win) - n_win, n_win)) * stride
    ends = seqs.offsets[1:][rows] - back                                   # exclusive end of each window
    lens_w = lens[rows] - back
    full = _layout(seqs.items, ends, lens_w, max_len + 1, PAD)             # (n, L + 1), PAD = -1
    ext = None if extra is None else _layout(np.asarray(extra), ends, lens_w, max_len + 1, PAD)[:, 1:]
    return Windows(seqs.users[rows], to_model_ids(full[:, :-1]), to_model_ids(full[:, 1:]), ext)


def last_negative_before(mixed: Sequences) -> np.ndarray:
    """For every positive event of a mixed sequence, the item of the user's latest negative
    (skip) before it, or PAD if there is none.

    Returns:
        (number of positives,) int64, aligned with ``mixed.positives()`` (the click sequence).
    """
    n = len(mixed.items)
    is_neg = mixed.labels == 0
    idx = np.where(is_neg, np.arange(n), -1)
    last = np.maximum.accumulate(idx) if n else idx                       # latest negative so far
    own = last >= np.repeat(mixed.offsets[:-1], mixed.lengths)            # not another user's
    item = np.where(own & (last >= 0), mixed.items[np.maximum(last, 0)], PAD)
    return item[mixed.labels == 1]
