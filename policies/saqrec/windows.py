"""SAQRec's training data: the logs in the feature store's order, click windows cut at each page's
request, and the examples of every stage.

Top to bottom: :func:`prepare_logs` (impressions -> click / satisfied / dissatisfied sequences and
the click rows of stages 1-2), :func:`feedback_window` and :func:`click_windows` (what the store
held when a page was requested), :class:`ExampleStream` (one epoch of examples of stages 0 and 3)
and :func:`validation_inputs` (the held-out clicks). Why the page rule: ``docs/notes/saqrec.md``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from policies.data import (REQUIRED_COLUMNS, Sequences, Targets, next_item_windows, pad, page_order, page_starts,
                           sample_negatives, to_model_ids, user_sequences)
from simulator.schema import PAD, SATISFACTION_ANSWERS, SATISFIED_ANSWERS, LogData

SAT_SURVEY = "satisfaction"
SAQREC_COLUMNS = REQUIRED_COLUMNS + ("survey_type", "survey_submitted")
"""The impression columns SAQRec reads."""

Teacher = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(users (n,), model ids (n, ...)) -> s_hat (n, ...)``: g's imputed satisfaction (float32)."""


@dataclass(frozen=True)
class Examples:
    """A mini-batchable set of click windows (arrays sliced by the training loop; None fields and
    ``epoch`` pass through)."""
    users: np.ndarray                  # (n,)
    inputs: np.ndarray                 # (n, T) model ids
    targets: np.ndarray                # (n, T) next click (0 = none)
    negatives: np.ndarray              # (n, T, K) sampled negatives
    query: np.ndarray                  # (n, T) column of the newest earlier-page click, -1 none
    sat: np.ndarray | None = None      # (n, S)
    sat_idx: np.ndarray | None = None  # (n, T)
    dis: np.ndarray | None = None      # (n, D)
    dis_idx: np.ndarray | None = None  # (n, T)
    scores: np.ndarray | None = None   # (n, T) float32 teacher scores of the inputs
    teacher: np.ndarray | None = None  # (n, T, 1 + K) float32 teacher labels of target + negatives
    epoch: int = 0


@dataclass(frozen=True)
class Pairs:
    """(user, item) rows of stages 1 and 2."""
    users: np.ndarray                      # (n,)
    items: np.ndarray                      # (n,) model ids
    labels: np.ndarray                     # (n,) float32
    propensity: np.ndarray | None = None   # (n,) float32, clipped o_hat (stage 2, IPS)


@dataclass(frozen=True)
class PreparedLogs:
    """The training logs as the stages need them; every ``ts`` is the impression's rank in the
    order the feature store records impressions (:func:`policies.data.page_order`), so events of different
    histories compare exactly, and "recorded before the page of rank r was ranked" is
    ``ts < page_start[r]``."""
    clicks: Sequences
    satisfied: Sequences
    dissatisfied: Sequences
    page_start: np.ndarray       # (N,) rank of the first impression of each rank's page
    click_users: np.ndarray      # (N_c,) every click row
    click_items: np.ndarray      # (N_c,) item ids
    observed: np.ndarray         # (N_c,) bool, a satisfaction questionnaire was answered (o)
    satisfied_label: np.ndarray  # (N_c,) bool, the answer was "like" (s; meaningful where observed)


def prepare_logs(train: LogData) -> PreparedLogs:
    imp = train.impressions
    order, _ = page_order(imp)
    page_start = page_starts(imp["user_id"].to_numpy(np.int64)[order],
                             imp["request_id"].to_numpy(np.int64)[order])
    rank = np.empty(len(imp), np.float64)
    rank[order] = np.arange(len(imp), dtype=np.float64)
    slim = pd.DataFrame({c: imp[c].to_numpy() for c in REQUIRED_COLUMNS if c != "ts"})
    slim["ts"] = rank
    seqs = {k: user_sequences(slim, k) for k in ("clicks", "satisfied", "dissatisfied")}
    f = imp.iloc[order]
    ev = f["effective_view"].to_numpy(bool)
    answer = f["survey_answer"].astype(object).to_numpy()[ev]
    observed = ((f["survey_type"].astype(object).to_numpy()[ev] == SAT_SURVEY)
                & f["survey_submitted"].to_numpy(bool)[ev] & np.isin(answer, SATISFACTION_ANSWERS))
    return PreparedLogs(clicks=seqs["clicks"], satisfied=seqs["satisfied"], dissatisfied=seqs["dissatisfied"],
                     page_start=page_start,
                     click_users=f["user_id"].to_numpy(np.int64)[ev], click_items=f["item_id"].to_numpy(np.int64)[ev],
                     observed=observed, satisfied_label=observed & np.isin(answer, SATISFIED_ANSWERS))


def count_before(seqs: Sequences, users: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(...) number of each user's events ranked before ``ranks`` (same shape as ``ranks``;
    ``users`` broadcast to it)."""
    users = np.broadcast_to(users, ranks.shape)
    rows = seqs.rows_of(users.ravel()).reshape(ranks.shape)
    r = np.maximum(rows, 0)
    start, stop = seqs.offsets[r], seqs.offsets[r + 1]
    # ranks are global and user-major, so the search over all events lands in the user's segment
    # for the user's own ranks; clipping makes any rank safe
    end = np.clip(np.searchsorted(seqs.ts, ranks, side="left"), start, stop)
    return np.where(rows >= 0, end - start, 0).astype(np.int64)


def feedback_window(seqs: Sequences, users: np.ndarray, ranks: np.ndarray,
                    length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` events of each user ranked before ``ranks`` (n,), right-aligned with PAD
    (what the feature store would hold then), and how many events precede (n,)."""
    count = count_before(seqs, users, ranks)                                       # (n,)
    rows = seqs.rows_of(users)
    start = np.where(rows >= 0, seqs.offsets[np.maximum(rows, 0)], 0)
    col = np.arange(length)[None, :]
    idx = (start + count)[:, None] - length + col                             # (n, L) event index
    ok = col >= length - np.minimum(count, length)[:, None]
    out = np.full((len(users), length), PAD, np.int64)
    out[ok] = seqs.items[idx[ok]]
    return out, count


@dataclass(frozen=True)
class ClickWindows:
    """Next-click windows (:func:`policies.data.next_item_windows`) with what each target's page
    was ranked with."""
    users: np.ndarray     # (n,)
    inputs: np.ndarray    # (n, T) model ids, 0 = padding
    targets: np.ndarray   # (n, T) the click at each position, 0 = none
    page: np.ndarray      # (n, T) rank of the first impression of the target's page, -1 = none
    query: np.ndarray     # (n, T) newest input column ranked before ``page``, -1 = none

    def __len__(self) -> int:
        return len(self.users)


def click_windows(clicks: Sequences, max_len: int, page_start: np.ndarray,
                   stride: int | None = None) -> ClickWindows:
    """The click windows of ``clicks`` (``ts`` = ranks, :class:`PreparedLogs`) and, per target, the
    newest input column whose click was recorded before the target's page was requested: the
    store held exactly the window's inputs up to that column (and older clicks) then."""
    rank = clicks.ts.astype(np.int64)
    prev = np.r_[-1, rank[:-1]] if len(rank) else rank
    prev[clicks.offsets[:-1][clicks.lengths > 0]] = -1                      # a user's first click
    w = next_item_windows(clicks, max_len, extra=rank, stride=stride)
    input_rank = next_item_windows(clicks, max_len, extra=prev, stride=stride).extra   # (n, T), -1 = none
    target_rank = w.extra                                                   # (n, T), -1 = none
    page = np.where(target_rank >= 0, page_start[np.maximum(target_rank, 0)], -1)
    # each row's input ranks increase (padding -1 first), and the input after a target is the
    # target itself (rank >= its page's start), so the newest input before the page is found by
    # one sorted search over all rows, offset per row
    n, T = page.shape
    span = int(rank.max()) + 2 if len(rank) else 1
    off = np.arange(n, dtype=np.int64)[:, None] * span
    q = np.searchsorted((input_rank + 1 + off).ravel(), (page + 1 + off).ravel(), side="left")
    q = q.reshape(n, T) - np.arange(n)[:, None] * T - 1                     # (n, T) column, or -1
    ok = (page >= 0) & (q >= 0) & (np.take_along_axis(input_rank, np.maximum(q, 0), 1) >= 0)
    return ClickWindows(w.users, w.inputs, w.targets, page, np.where(ok, q, -1).astype(np.int64))


class ExampleStream:
    """``make_epoch`` of :func:`policies.train.train_model` for stages 0 and 3 (and the online
    updates): the click windows with each epoch's sampled negatives and, given g (``teacher``),
    the satisfied / dissatisfied windows, g's scores of the clicked items (MLSE) and, with
    ``labels``, g's pseudo labels of target and negatives (Eq. 16). Epochs count from 1.

    Args:
        windows: the click windows (:func:`click_windows`) of ``max_len`` columns.
        data: the logs they were cut from.
        n_items: catalogue size (negatives are drawn from it).
        exclude: the users' clicked items (:func:`policies.data.positive_keys`), never negatives.
        teacher: g, or None (stage 0: clicks only).
        max_len, max_len_satisfied, max_len_dissatisfied: window lengths.
        n_negatives: K, sampled negatives per position.
        labels: compute g's pseudo labels (the satisfaction loss is on).
    """

    def __init__(self, windows: ClickWindows, data: PreparedLogs, n_items: int, exclude: np.ndarray,
                 teacher: Teacher | None, *, max_len: int, max_len_satisfied: int, max_len_dissatisfied: int,
                 n_negatives: int, labels: bool):
        w = windows
        self.windows, self.n_items, self.exclude, self.teacher = w, n_items, exclude, teacher
        self.max_len, self.n_negatives, self.labels = max_len, n_negatives, labels
        self.epoch = 0
        page = w.page                                                            # (n, T) -1 = none
        self.fixed: dict[str, np.ndarray] = {}
        if teacher is not None:
            last = page[:, -1]                                                   # the window's last page
            for name, seqs, length in (("sat", data.satisfied, max_len_satisfied),
                                       ("dis", data.dissatisfied, max_len_dissatisfied)):
                window, count = feedback_window(seqs, w.users, last, length)     # (n, L), (n,)
                k = count_before(seqs, w.users[:, None], np.maximum(page, 0))    # (n, T) answers before the page
                back = count[:, None] - k                                       # answers after the position's page
                idx = np.where((page >= 0) & (k >= 1) & (back < length), length - 1 - back, -1)
                self.fixed[name], self.fixed[f"{name}_idx"] = to_model_ids(window), idx.astype(np.int64)
            self.fixed["scores"] = teacher(w.users, w.inputs)                    # (n, T)

    def __call__(self, rng: np.random.Generator) -> Examples:
        w, T, K = self.windows, self.max_len, self.n_negatives
        self.epoch += 1
        neg = sample_negatives(rng, w.users, T * K, n_items=self.n_items, exclude=self.exclude)
        neg = to_model_ids(neg).reshape(len(w.users), T, K)                     # (n, T, K)
        lab = None
        if self.teacher is not None and self.labels:
            lab = self.teacher(w.users, np.concatenate([w.targets[..., None], neg], axis=-1))   # (n, T, 1 + K)
        return Examples(w.users, w.inputs, w.targets, neg, w.query, teacher=lab, epoch=self.epoch, **self.fixed)


def validation_inputs(data: PreparedLogs, valid: Targets, n_items: int, exclude: np.ndarray,
                      rng: np.random.Generator, *, max_len: int, max_len_satisfied: int,
                      max_len_dissatisfied: int, eval_negatives: int) -> dict[str, np.ndarray] | None:
    """Serving inputs at each held-out click (``valid``: each user's last click): the histories
    recorded before its page was requested (held-out clicks with no earlier-page click are
    dropped, as in training), and the target with ``eval_negatives`` sampled negatives. None if
    no target is left.

    Returns:
        ``users`` (n,), ``clicks`` (n, max_len), ``sat`` (n, S), ``dis`` (n, D) model ids and
        ``cands`` (n, 1 + eval_negatives), the held-out click first.
    """
    ranks = data.page_start[valid.ts.astype(np.int64)]                       # (n,) its page's start
    h = valid.history
    hist = h.select(h.ts < np.repeat(ranks, h.lengths))
    rows = hist.rows_of(valid.users)
    keep = rows >= 0
    if not keep.any():
        return None
    users, items, ranks, rows = valid.users[keep].astype(np.int64), valid.items[keep], ranks[keep], rows[keep]
    out = {"users": users, "clicks": to_model_ids(pad(hist, max_len, rows=rows))}
    out["sat"] = to_model_ids(feedback_window(data.satisfied, users, ranks, max_len_satisfied)[0])
    out["dis"] = to_model_ids(feedback_window(data.dissatisfied, users, ranks, max_len_dissatisfied)[0])
    negs = sample_negatives(rng, users, eval_negatives, n_items=n_items, exclude=exclude, distinct=True)
    out["cands"] = to_model_ids(np.concatenate([items[:, None], negs], axis=1))   # (n, 1 + K)
    return out
