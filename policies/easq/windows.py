"""EASQ's training examples from logs: request-time click contexts, click windows, questionnaire pairs.

Every context is the user's clicks in the pages requested before the impression's page, as the
feature store held them when the page was ranked; docs/notes/easq.md explains why and how.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from policies.data import REQUIRED_COLUMNS, Sequences, merge, page_starts, to_model_ids
from policies.easq.model import DENSE_TASKS
from simulator.schema import SATISFIED_ANSWERS

EASQ_COLUMNS = REQUIRED_COLUMNS + ("watch_time", "duration", "like", "survey_shown", "survey_submitted")
"""Impression columns EASQ reads."""


# ----------------------------------------------------------------------------- click histories at the request

@dataclass(frozen=True)
class ClickContext:
    """Each impression's click history as the feature store held it at the impression's request."""
    clicks: Sequences      # every user's clicks (kept ones first), chronological
    rows: np.ndarray       # (N,) row of each impression's user in ``clicks`` (-1: none)
    before: np.ndarray     # (N,) the user's clicks before the impression's request

    def histories(self, length: int) -> np.ndarray:
        """(N, length) model ids, right-aligned, 0 = padding."""
        return histories(self.clicks, self.rows, self.before, length)


def click_context(frame: pd.DataFrame, kept: Sequences | None) -> ClickContext:
    """Each row's click history at its request: ``kept`` (the clicks seen before ``frame``, None
    in ``fit``) then the user's clicks in earlier requests of ``frame`` (rows in page order)."""
    users = frame["user_id"].to_numpy(np.int64)
    ev = frame["effective_view"].to_numpy(bool)
    fresh = Sequences.from_events(users[ev], frame["item_id"].to_numpy(np.int64)[ev])
    n_kept = np.zeros(len(users), np.int64)
    if kept is not None:
        r = kept.rows_of(users)
        n_kept[r >= 0] = kept.lengths[r[r >= 0]]
    clicks = fresh if kept is None else merge(kept, fresh)
    before = n_kept + clicks_before_request(users, frame["request_id"].to_numpy(np.int64), ev)
    return ClickContext(clicks, clicks.rows_of(users), before)


def histories(clicks: Sequences, rows: np.ndarray, before: np.ndarray, length: int) -> np.ndarray:
    """(N, length) model ids of the last ``length`` of the first ``before[n]`` clicks of row
    ``rows[n]`` of ``clicks`` (right-aligned, 0 = padding; row -1 = no clicks)."""
    ok = rows >= 0
    r = np.where(ok, rows, 0)
    lens = np.where(ok, np.minimum(before, length), 0)                    # (N,)
    ends = (clicks.offsets[r] + before) if len(clicks) else np.zeros(len(rows), np.int64)
    col = np.arange(length)[None, :]
    idx = ends[:, None] - length + col                                     # (N, L)
    valid = col >= length - lens[:, None]                                  # (N, L)
    out = np.zeros((len(rows), length), np.int64)
    out[valid] = clicks.items[idx[valid]] + 1
    return out


def clicks_before(users: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """(N,) clicks of the same user strictly before each event (events sorted by user, time)."""
    c = np.cumsum(ev, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    first = np.repeat(c[starts] - ev[starts], np.diff(np.r_[starts, len(users)]))
    return c - ev - first


def clicks_before_request(users: np.ndarray, requests: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """(N,) the user's clicks in requests before each row's request: what the feature store held
    when the row's page was ranked (it records a page after the page is watched)."""
    return clicks_before(users, ev)[page_starts(users, requests)]


def tail(seqs: Sequences, length: int) -> Sequences:
    """The newest ``length`` events of each row."""
    return seqs.select(seqs.event_rank >= np.repeat(seqs.lengths - length, seqs.lengths))


# ----------------------------------------------------------------------------- the backbone's examples, Eq. (1)

@dataclass(frozen=True)
class WindowIndex:
    """Click windows of ``max_len`` (per user newest first, right-aligned) and where each
    impression's state is: the window position of the last click before its request."""
    inputs: np.ndarray     # (W, L) model ids
    users: np.ndarray      # (W,) user of each window
    imp_win: np.ndarray    # (N,) window of each impression
    imp_col: np.ndarray    # (N,) position in it (L = no click before the request)


def window_index(users: np.ndarray, ctx: ClickContext, max_len: int) -> WindowIndex:
    """Cut every user's clicks into windows of ``max_len`` (newest window first) and attach each
    impression (``users``, rows of ``ctx``) to the state after the last click before its request."""
    L, clicks = max_len, ctx.clicks
    all_users = np.unique(users)
    n_clicks = np.zeros(len(all_users), np.int64)
    r = clicks.rows_of(all_users)
    n_clicks[r >= 0] = clicks.lengths[r[r >= 0]]
    n_win = np.maximum((n_clicks + L - 1) // L, 1)                      # no click: one empty window
    win_user_idx = np.repeat(np.arange(len(all_users)), n_win)          # (W,)
    k = np.arange(len(win_user_idx)) - np.repeat(np.cumsum(n_win) - n_win, n_win)   # 0 = newest
    ends = n_clicks[win_user_idx] - k * L                               # exclusive end (click index)
    inputs = histories(clicks, r[win_user_idx], np.maximum(ends, 0), L)   # (W, L)
    first_win = np.cumsum(n_win) - n_win                                # each user's newest window
    u_idx = np.searchsorted(all_users, users)                           # (N,)
    j = ctx.before - 1                                                  # state after click j (-1: none)
    n = n_clicks[u_idx]
    kk = np.where(j >= 0, (n - 1 - j) // L, n_win[u_idx] - 1)
    imp_col = np.where(j >= 0, L - (n - kk * L - j), L)
    return WindowIndex(inputs=inputs, users=all_users[win_user_idx], imp_win=first_win[u_idx] + kk, imp_col=imp_col)


@dataclass(frozen=True)
class Windows:
    """One epoch of backbone examples: W windows of clicks, M impression slots each."""
    inputs: np.ndarray     # (W, L) model ids of the window's clicks
    cols: np.ndarray       # (W, M) state of each slot: index into the window's positions, L = empty
    items: np.ndarray      # (W, M) model ids of the impressions (0 = empty slot)
    targets: np.ndarray    # (W, M, K) float32 labels of the dense tasks
    mask: np.ndarray       # (W, M) float32, 1 for a real slot


def sample_windows(index: WindowIndex, win: np.ndarray, items: np.ndarray, targets: np.ndarray, slots: int,
                   rng: np.random.Generator) -> Windows:
    """The windows ``win`` of ``index`` with up to ``slots`` of their impressions each, drawn at
    random (``items`` (N,) and ``targets`` (N, K) of every impression of ``index``)."""
    L = index.inputs.shape[1]
    renum = np.full(len(index.inputs), -1, np.int64)
    renum[win] = np.arange(len(win))
    w_of = renum[index.imp_win]                                         # (N,) -1 = other split
    sel = np.flatnonzero(w_of >= 0)
    key = rng.random(len(sel))
    order = sel[np.lexsort((key, w_of[sel]))]
    w_sorted = w_of[order]
    starts = np.flatnonzero(np.r_[True, w_sorted[1:] != w_sorted[:-1]]) if len(order) else order
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = rank < slots
    order, w_sorted, rank = order[keep], w_sorted[keep], rank[keep]
    cols = np.full((len(win), slots), L, np.int64)                      # (W, M)
    its = np.zeros((len(win), slots), np.int64)                         # (W, M)
    tg = np.zeros((len(win), slots, len(DENSE_TASKS)), np.float32)      # (W, M, K)
    mask = np.zeros((len(win), slots), np.float32)                      # (W, M)
    cols[w_sorted, rank] = index.imp_col[order]
    its[w_sorted, rank] = items[order] + 1
    tg[w_sorted, rank] = targets[order]
    mask[w_sorted, rank] = 1.0
    return Windows(inputs=index.inputs[win], cols=cols, items=its, targets=tg, mask=mask)


def dense_targets(frame: pd.DataFrame) -> np.ndarray:
    """(N, K) labels: effective view, watch fraction in [0, 1], like."""
    duration = np.maximum(frame["duration"].to_numpy(np.float64), 1e-9)
    frac = np.clip(frame["watch_time"].to_numpy(np.float64) / duration, 0.0, 1.0)
    return np.stack([frame["effective_view"].to_numpy(np.float32), frac.astype(np.float32),
                     frame["like"].to_numpy(np.float32)], axis=1)


@dataclass(frozen=True)
class Impressions:
    """Impressions with their own histories (online multi-task steps)."""
    hist: np.ndarray       # (N, L)
    items: np.ndarray      # (N,)
    targets: np.ndarray    # (N, K)


# ----------------------------------------------------------------------------- questionnaires, Eq. (2) and (4)

_EVENT_FIELDS = ("users", "items", "ts", "kind", "label", "hist")


@dataclass(frozen=True)
class Events:
    """Questionnaire exposures with their contexts (kept as a buffer between updates)."""
    users: np.ndarray      # (n,) int64
    items: np.ndarray      # (n,) int64 item ids
    ts: np.ndarray         # (n,) float64
    kind: np.ndarray       # (n,) int8: 1 winner (like), 0 loser, -1 neither
    label: np.ndarray      # (n,) float32 satisfaction (1 like, 0 loser answer, nan unanswered/other)
    hist: np.ndarray       # (n, L) model ids of the click history at the impression's request

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx: np.ndarray) -> Events:
        return Events(*(getattr(self, f)[idx] for f in _EVENT_FIELDS))

    @staticmethod
    def concat(a: Events, b: Events) -> Events:
        return Events(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in _EVENT_FIELDS))


def questionnaire_events(frame: pd.DataFrame, hist: np.ndarray, *, loser_answers: tuple[str, ...],
                         unanswered_losers: bool) -> Events:
    """The questionnaire exposures of ``frame`` (rows in page order) with their contexts ``hist``
    (N, L): ``like`` wins; ``loser_answers`` (and, with ``unanswered_losers``, no answer) lose."""
    shown = frame["survey_shown"].to_numpy(bool)
    answer = frame["survey_answer"].astype(object).to_numpy()[shown]
    submitted = frame["survey_submitted"].to_numpy(bool)[shown]
    win = submitted & np.isin(answer, SATISFIED_ANSWERS)
    lose_answer = submitted & np.isin(answer, tuple(loser_answers))
    lose = lose_answer | (~submitted if unanswered_losers else False)
    kind = np.where(win, 1, np.where(lose, 0, -1)).astype(np.int8)
    label = np.where(win, 1.0, np.where(lose_answer, 0.0, np.nan)).astype(np.float32)
    return Events(users=frame["user_id"].to_numpy(np.int64)[shown], items=frame["item_id"].to_numpy(np.int64)[shown],
                  ts=frame["ts"].to_numpy(np.float64)[shown], kind=kind, label=label, hist=hist[shown])


@dataclass(frozen=True)
class Answers:
    """Answered questionnaires: satisfaction BCE (tower, or the LoRA path for w/o DPO)."""
    hist: np.ndarray       # (N, L)
    items: np.ndarray      # (N,)
    labels: np.ndarray     # (N,) float32, 1 = like


def answers_of(events: Events, idx: np.ndarray) -> Answers:
    """The events ``idx`` (answered ones) as satisfaction examples."""
    return Answers(events.hist[idx], to_model_ids(events.items[idx]), events.label[idx])


@dataclass(frozen=True)
class Pairs:
    """DPO preference pairs in one context each."""
    hist: np.ndarray       # (P, L) context of the earlier of the two impressions
    items: np.ndarray      # (P, 2) model ids (y_w, y_l)


def preference_pairs(events: Events, window_s: float,
                     new: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(winner index, loser index) of every pair of one user within ``window_s`` seconds (and, with
    ``new``, with at least one new event); same-item pairs are dropped."""
    w = pd.DataFrame({"u": events.users[events.kind == 1], "iw": np.flatnonzero(events.kind == 1)})
    lo = pd.DataFrame({"u": events.users[events.kind == 0], "il": np.flatnonzero(events.kind == 0)})
    m = w.merge(lo, on="u")
    iw, il = m["iw"].to_numpy(np.int64), m["il"].to_numpy(np.int64)
    keep = (np.abs(events.ts[iw] - events.ts[il]) <= window_s) & (events.items[iw] != events.items[il])
    if new is not None:
        keep &= new[iw] | new[il]
    return iw[keep], il[keep]


def alignment_data(events: Events, window_s: float, is_new: np.ndarray | None) -> tuple[Pairs, Answers]:
    """The DPO pairs of ``events`` (with a new event, given ``is_new``) in the context of their
    earlier impression, and the (new) answered questionnaires."""
    iw, il = preference_pairs(events, window_s, is_new)
    ctx = np.where(events.ts[iw] <= events.ts[il], iw, il)            # the earlier event's context
    pairs = Pairs(events.hist[ctx], to_model_ids(np.c_[events.items[iw], events.items[il]]))
    answered = ~np.isnan(events.label) & (True if is_new is None else is_new)
    return pairs, answers_of(events, np.flatnonzero(answered))
