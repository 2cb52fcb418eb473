"""SASRec on effective views, and SASRec-N with the user's skips as extra negatives.

SASRec (Kang & McAuley, ICDM 2018): a causal transformer (:mod:`policies.encoders`) reads a
user's click (effective-view) sequence; the hidden state at each position is scored against the
next clicked item's embedding and against one uniformly sampled negative with binary
cross-entropy. At serving, the newest position of the user's live click history (read from the
feature store) is dotted with each candidate's embedding; only that position is computed in the
last layer.

Item representation: by default the item-id embedding plus embeddings of the item's observable
categories (``item_features = ("l1", "l2", "leaf")``, as production SASRec variants do). In this
simulator an id-only SASRec (``item_features=()``, the paper's model) learns little more than
item popularity from a few days of logs (see docs/policies.md); the category
embeddings let sparse and unseen items share what is learned about their categories.

SASRec-N (SINE, RecSys'23, Sec. 2.2): the same model, where the item the user skipped most
recently before each target click's page is an additional negative, weighted by
``skip_weight`` (the ratio of observed to sampled negatives that SINE tunes). SINE reports that
this naive use of passive negatives can hurt: it is the baseline that SINE improves on.

Training sees what serving saw (the page rule, as in ``sine``, ``saqrec`` and ``easq``): the
platform ranks a whole page from the feature store before the page's request and records the
page's clicks only after serving it, so serving never reads a click of the page being ranked.
Events are ordered as the store records them (:func:`policies.data.request_sequences`), and
every target click is scored from the state at the newest click of a page requested *before*
its page (the column ``ctx``), not at the click just before it: the clicks above it on its own
page are never its context. Clicks of the same page share one state; a target with no
earlier-page click in its window (a user's first page, or a window that starts inside the
target's page) gives no example. SASRec-N's skip of a target is likewise the latest skip of
those earlier pages. The held-out validation click is scored from the clicks of the pages before
its page too (users with none are left out), and ``update()`` builds its windows the same way.

Training data come from :mod:`policies.data` (each user's last click is the validation target
for early stopping, ranked against 99 sampled negatives) and training runs in
:func:`policies.train.train_model`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from policies.base import check_fitted, check_ids, register_policy, resolve_update_epochs
from policies.data import (Sequences, check_observable, holdout_last, item_side, merge, n_items_of,
                           next_item_windows, pad, positive_keys, request_sequences, sample_negatives,
                           to_model_ids)
from policies.device import check_device_spec, resolve_device, to_device, to_host
from policies.encoders import EncoderConfig, SequenceEncoder
from policies.train import EpochRecord, TrainConfig, build_module, sampled_metrics, train_model
from simulator.checks import check_choice, check_int_at_least, check_nonnegative, check_temperature
from simulator.schema import PAD, LogData, RankBatch

METRICS = ("ndcg@10", "hr@10")


@dataclass(frozen=True)
class _Windows:
    """Next-click windows (:func:`policies.data.next_item_windows`) with, per target, the column
    whose state scores it: the newest input from a page requested before the target's page.
    Every array is (n, L) except users (n,)."""
    users: np.ndarray
    inputs: np.ndarray         # model ids of the clicks, 0 = padding
    targets: np.ndarray        # model id of the click after each column, 0 = none
    ctx: np.ndarray            # column of each target's context (<= its own column), -1 = none
    events: np.ndarray         # index of each target in the click sequence, -1 = none
    skips: np.ndarray | None   # items: the latest skip of the pages before the target's (PAD = none)

    def __len__(self) -> int:
        return len(self.users)


def _page_clicks(mixed: Sequences, before: np.ndarray) -> tuple[Sequences, np.ndarray, np.ndarray]:
    """The click sequence of page-ordered ``mixed`` events (:func:`policies.data.request_sequences`)
    and, per click, what the feature store held when the click's page was requested.

    Args:
        mixed: per-user events in page order (labels 1 click, 0 skip).
        before: (N,) the user's events in pages requested before each event's page.

    Returns:
        (clicks, n_before, skips): ``clicks`` = ``mixed.positives()``; ``n_before`` (C,) the user's
        clicks in pages before each click's page; ``skips`` (C,) the item of the latest skip in
        those pages, PAD if none.
    """
    n = len(mixed.items)
    first = np.repeat(mixed.offsets[:-1], mixed.lengths)                  # (N,) the user's first event
    cut = first + before                                                  # (N,) end of the page's history
    pos = mixed.labels == 1
    clicks_until = np.r_[0, np.cumsum(pos, dtype=np.int64)]               # (N + 1,) clicks in [0, i)
    n_before = clicks_until[cut] - clicks_until[first]
    latest = np.maximum.accumulate(np.where(pos, -1, np.arange(n))) if n else np.zeros(0, np.int64)
    skip_at = latest[np.maximum(cut - 1, 0)] if n else latest              # latest skip up to the cut
    has = (before > 0) & (skip_at >= first)                               # in the user's earlier pages
    skips = np.where(has, mixed.items[np.maximum(skip_at, 0)], PAD)
    return mixed.positives(), n_before[pos].astype(np.int64), skips[pos].astype(np.int64)


def _page_windows(clicks: Sequences, n_before: np.ndarray, max_len: int, stride: int | None,
                  skips: np.ndarray | None = None) -> _Windows:
    """Click windows where each target's context column is the newest input of an earlier page
    (see :func:`_page_clicks` for the arguments); windows without any such target are dropped."""
    w = next_item_windows(clicks, max_len, extra=np.arange(len(clicks.items)), stride=stride)
    events = w.extra                                                      # (n, L) target's click index, -1 none
    e = np.maximum(events, 0)
    # the clicks of the target's own page above it: its context is that many columns further back
    above = (clicks.event_rank - n_before)[e]                             # (n, L) >= 0
    ctx = np.arange(max_len)[None, :] - above
    real = np.take_along_axis(w.inputs, np.maximum(ctx, 0), axis=1) > 0
    ok = (events >= 0) & (ctx >= 0) & real                                # a click of an earlier page in the window
    ctx = np.where(ok, ctx, -1).astype(np.int64)
    sk = None if skips is None else np.where(events >= 0, skips[e], PAD)
    keep = ok.any(axis=1)
    return _Windows(w.users[keep], w.inputs[keep], w.targets[keep], ctx[keep], events[keep],
                    None if sk is None else sk[keep])


def _history_at(mixed: Sequences, before: np.ndarray, events: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The click history each event's page was ranked with: (n, length) the newest ``length``
    clicks of the user's pages before the page of ``events`` (n,) (indices into page-ordered
    ``mixed``, at most one per user), right-aligned with PAD as the feature store returns them;
    and (n,) how many such clicks there are."""
    users = mixed.event_users[events]
    first = mixed.offsets[mixed.rows_of(users)]
    clicks_until = np.r_[0, np.cumsum(mixed.labels == 1, dtype=np.int64)]    # (N + 1,) clicks in [0, i)
    count = clicks_until[first + before[events]] - clicks_until[first]       # (n,)
    clicks = mixed.positives()
    rows = clicks.rows_of(users)
    keep = np.zeros(len(clicks), np.int64)
    keep[rows[rows >= 0]] = count[rows >= 0]
    head = clicks.head(keep)
    return pad(head, length, rows=head.rows_of(users)), count


@dataclass(frozen=True)
class _Examples:
    """One epoch of training examples; every array is (n, L) except users (n,)."""
    users: np.ndarray
    inputs: np.ndarray       # model ids of the click history
    targets: np.ndarray      # next click (0 = no target at this position)
    ctx: np.ndarray          # the column whose state scores the target (-1 = not an example)
    negatives: np.ndarray    # a sampled negative per position
    skips: np.ndarray        # the latest skip before the target's page (0 = none)


@register_policy("sasrec", "SASRec on effective views: causal self-attention over the click history "
                           "(deterministic)")
@dataclass
class SASRec:
    """SASRec on effective views (see the module docstring).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        max_len: longest click history read (capped at the feature store's history length).
        d_model, n_layers, n_heads, dropout, pre_ln: the encoder (:class:`EncoderConfig`).
        batch_size, lr, weight_decay, max_epochs, patience: training (:class:`TrainConfig`).
        skip_weight: weight of the observed-skip negatives (0 = plain SASRec; SASRec-N: 1).
        window_stride: None trains on each user's newest ``max_len + 1`` clicks (SASRec);
            an int adds earlier windows every ``window_stride`` clicks (see
            :func:`policies.data.next_item_windows`). A target whose page starts before its
            window's first column has no context in that window and is left out of it.
        item_features: item-table columns (categorical) whose embeddings are added to the
            item-id embedding; () for the paper's id-only SASRec.
        item_bias: add a learned per-item score offset.
        eval_negatives: sampled negatives per validation target.
        metric: validation metric for early stopping, "ndcg@10" or "hr@10".
        update_epochs: epochs of fine-tuning on the users in each ``update()``'s new logs when the
            caller gives none; 0 (the default) makes such a call a no-op (serving reads the live
            click history from the feature store anyway, only the item embeddings stay as
            fitted). The A/B runner's ``learning = "update"`` passes its own ``update_epochs``.
        progress: show a tqdm bar while training.
        device: where the model trains and scores (:mod:`policies.device`): "auto" (a CUDA GPU
            when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N".
    """
    temperature: float | None = None
    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    pre_ln: bool = True
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 20
    patience: int = 3
    skip_weight: float = 0.0
    window_stride: int | None = None
    item_features: tuple[str, ...] = ("l1", "l2", "leaf")
    item_bias: bool = False
    eval_negatives: int = 99
    metric: str = "ndcg@10"
    update_epochs: int = 0
    progress: bool = False
    device: str = "auto"
    # fitted state
    fitted_: bool = field(default=False, init=False)
    device_: torch.device | None = field(default=None, init=False, repr=False)
    model_: SequenceEncoder | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    best_epoch_: int = field(default=0, init=False)
    mixed_: Sequences | None = field(default=None, init=False, repr=False)   # in page order
    before_: np.ndarray | None = field(default=None, init=False, repr=False)  # (N,) events of earlier pages
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    table_: tuple | None = field(default=None, init=False, repr=False)   # serving cache

    def __post_init__(self) -> None:
        check_device_spec(self.device, self.name)

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Train on the effective-view sequences of ``train``; each user's last click is held out
        for early stopping.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, no user with clicks
                on two pages, or a bad parameter (a :class:`~simulator.checks.ConfigError`).
        """
        check_observable(train)
        check_temperature("temperature", self.temperature)
        check_choice("metric", self.metric, METRICS)
        check_nonnegative("skip_weight", self.skip_weight)
        check_int_at_least("eval_negatives", self.eval_negatives, 1)
        device = resolve_device(self.device, self.name)
        n_items = n_items_of(train)
        side = item_side(train.items, self.item_features, n_items)
        encoder_config = EncoderConfig(n_items=n_items, max_len=self.max_len, d_model=self.d_model,
                                       n_layers=self.n_layers, n_heads=self.n_heads,
                                       dropout=self.dropout, pre_ln=self.pre_ln,
                                       side_sizes=tuple(int(a.max()) + 1 for a in side),
                                       item_bias=self.item_bias)
        train_config = self._train_config(self.max_epochs, self.patience)
        mixed, before = request_sequences(train, "mixed")
        rest, valid = holdout_last(mixed)
        rows = rest.rows_of(mixed.users)
        kept = np.where(rows >= 0, rest.lengths[np.maximum(rows, 0)], 0)    # (U,) each user's events in rest
        windows = self._windows(rest, before[mixed.event_rank < np.repeat(kept, mixed.lengths)])
        if len(windows) == 0:
            raise ValueError("train has no user with at least two effective views on different pages; "
                             "SASRec needs click sequences to learn from")
        exclude = positive_keys(mixed, n_items)
        side_t = torch.from_numpy(np.stack(side)) if side else None
        model = build_module(lambda: SequenceEncoder(encoder_config, side_t), rng, device)
        vrows = mixed.rows_of(valid.users)
        held = mixed.offsets[vrows] + kept[vrows]                          # each user's held-out click: after rest
        evaluate = self._validation(mixed, before, held, n_items, exclude, rng, device)
        result = train_model(model, lambda r: self._examples(windows, n_items, exclude, r),
                             self._loss, evaluate, train_config, rng)
        self.model_, self.n_items_, self.mixed_, self.before_ = model, n_items, mixed, before
        self.device_ = device
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        self.rng_ = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))
        self._cache_items()
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) dot products of the user's encoded live click history with each candidate.

        The history is the feature store's ``clicks`` (the newest ``min(max_len,
        history_length)``). A user without any click scores every candidate 0 (plus the item
        bias if ``item_bias``): a tie that the platform breaks.
        """
        check_fitted(self)
        cands = np.asarray(batch.candidates)
        check_ids(cands, self.n_items_)
        length = min(self.max_len, getattr(batch.features, "history_length", self.max_len))
        hist, _ = batch.features.history("clicks", np.asarray(batch.user_ids), length)   # (B, L), PAD
        table, bias = self.table_
        ids = to_device(to_model_ids(cands), self.device_)
        with torch.inference_mode():
            h = self.model_.encode_last(to_device(to_model_ids(hist), self.device_))   # (B, d)
            scores = torch.bmm(table[ids], h.unsqueeze(-1)).squeeze(-1)               # (B, C)
            if bias is not None:
                scores += bias[ids]
        return to_host(scores).astype(np.float64)

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning between serving rounds: with ``epochs`` (default ``update_epochs``)
        > 0, append ``new`` to the stored sequences and fine-tune for that many epochs on the
        users in ``new`` (no validation; every target scored from the clicks of the pages before
        its own); with 0 (the default), do nothing (see the class docstring). ``new``'s pages
        must be newer than those already seen."""
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, where="new")
        fresh, fresh_before = request_sequences(new, "mixed")
        rows = self.mixed_.rows_of(fresh.users)
        n_old = np.where(rows >= 0, self.mixed_.lengths[np.maximum(rows, 0)], 0)   # (U_new,)
        order = np.argsort(np.r_[self.mixed_.event_users, fresh.event_users], kind="stable")   # as merge()
        self.before_ = np.r_[self.before_, fresh_before + np.repeat(n_old, fresh.lengths)][order]
        self.mixed_ = merge(self.mixed_, fresh)
        touched = np.isin(self.mixed_.event_users, fresh.users)
        windows = self._windows(self.mixed_.select(touched), self.before_[touched])
        if len(windows) == 0:
            return
        exclude = positive_keys(self.mixed_, self.n_items_)
        result = train_model(self.model_, lambda r: self._examples(windows, self.n_items_, exclude, r),
                             self._loss, None, self._train_config(epochs, epochs),
                             self.rng_)
        self.history_ = self.history_ + result.history
        self._cache_items()

    # -- internals -------------------------------------------------------------------------

    def _cache_items(self) -> None:
        with torch.inference_mode():
            self.table_ = self.model_.item_table()

    def _train_config(self, epochs: int, patience: int) -> TrainConfig:
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           max_epochs=epochs, patience=patience, progress=self.progress, desc=self.name)

    def _windows(self, mixed: Sequences, before: np.ndarray) -> _Windows:
        """Click windows of page-ordered ``mixed`` events (``before``: :func:`policies.data.request_sequences`),
        each target with its context column and (SASRec-N) the latest skip of the pages before its page."""
        clicks, n_before, skips = _page_clicks(mixed, before)
        return _page_windows(clicks, n_before, self.max_len, self.window_stride,
                             skips if self.skip_weight > 0 else None)

    def _examples(self, w: _Windows, n_items: int, exclude: np.ndarray, rng: np.random.Generator) -> _Examples:
        """The epoch's examples: a fresh uniform negative per position (never a positive of the
        user); skips that are also positives of the user are not used as negatives."""
        neg = to_model_ids(sample_negatives(rng, w.users, w.inputs.shape[1], n_items=n_items,
                                            exclude=exclude))              # (n, L)
        if w.skips is None:
            skips = np.zeros_like(w.targets)
        else:
            keys = w.users[:, None] * n_items + w.skips
            clicked = np.isin(keys, exclude) & (w.skips != PAD)
            skips = np.where(clicked, 0, to_model_ids(w.skips))
        return _Examples(w.users, w.inputs, w.targets, w.ctx, neg, skips)

    def _loss(self, model: SequenceEncoder, b: _Examples) -> torch.Tensor:
        """BCE of the next click vs a sampled negative at every position (SASRec's objective),
        plus ``skip_weight`` x BCE of the observed skip as a negative (SASRec-N); each target is
        scored from the state at its context column (the history its page was ranked with)."""
        h = model(b.inputs)                                                 # (B, L, d)
        h = h.gather(1, b.ctx.clamp(min=0).unsqueeze(-1).expand(-1, -1, h.shape[-1]))   # (B, L, d) at ctx
        mask = ((b.targets > 0) & (b.ctx >= 0)).float()                    # (B, L)
        pos = model.score_items(h, b.targets.unsqueeze(-1)).squeeze(-1)     # (B, L)
        neg = model.score_items(h, b.negatives.unsqueeze(-1)).squeeze(-1)   # (B, L)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none") \
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
        total = (loss * mask).sum()
        if self.skip_weight > 0:
            skip_mask = mask * (b.skips > 0).float()
            sk = model.score_items(h, b.skips.unsqueeze(-1)).squeeze(-1)    # (B, L)
            total = total + self.skip_weight * (F.binary_cross_entropy_with_logits(
                sk, torch.zeros_like(sk), reduction="none") * skip_mask).sum()
        return total / mask.sum().clamp(min=1.0)

    def _validation(self, mixed: Sequences, before: np.ndarray, held: np.ndarray, n_items: int,
                    exclude: np.ndarray, rng: np.random.Generator, device: torch.device):
        """A closure computing the validation metric: each held-out click (``held``: indices into
        page-ordered ``mixed``, one per user) scored from the clicks of the pages before its page,
        against ``eval_negatives`` distinct sampled negatives (drawn once per fit). Users with no
        such click are left out; None if none is left."""
        hist, count = _history_at(mixed, before, held, self.max_len)              # (n, L) items, (n,)
        keep = count > 0
        if not keep.any():
            return None
        users, items = mixed.event_users[held][keep], mixed.items[held][keep]
        hist = to_model_ids(hist[keep])
        negs = sample_negatives(rng, users, self.eval_negatives, n_items=n_items,
                                exclude=exclude, distinct=True)
        cands = to_model_ids(np.concatenate([items[:, None], negs], axis=1))       # (n, 1 + K)
        hist_t, cands_t = to_device(hist, device), to_device(cands, device)
        use_ndcg = self.metric.startswith("ndcg")

        def evaluate(model: SequenceEncoder) -> float:
            scores = []
            for s in range(0, len(hist_t), 1024):
                h = model.encode_last(hist_t[s:s + 1024])                             # (b, d)
                scores.append(model.score_items(h, cands_t[s:s + 1024]))              # (b, 1 + K)
            hr, ndcg = sampled_metrics(torch.cat(scores), k=10)
            return ndcg if use_ndcg else hr

        return evaluate


@register_policy("sasrec_n", "SASRec-N: SASRec with the user's observed skips as extra negatives "
                             "(SINE Sec. 2.2)")
@dataclass
class SASRecN(SASRec):
    """SASRec with the latest skip before each target click's page as an extra negative (SINE Sec. 2.2)."""
    skip_weight: float = 1.0
