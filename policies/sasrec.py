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
item popularity from a few days of logs (see policies/README_SECTION.md); the category
embeddings let sparse and unseen items share what is learned about their categories.

SASRec-N (SINE, RecSys'23, Sec. 2.2): the same model, where the item the user skipped most
recently before each target click is an additional negative, weighted by ``skip_weight`` (the
ratio of observed to sampled negatives that SINE tunes). SINE reports that this naive use of
passive negatives can hurt: it is the baseline that SINE improves on.

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
from policies.data import (Sequences, Targets, Windows, check_observable, holdout_last, item_side,
                           last_negative_before, merge, n_items_of, next_item_windows, pad, positive_keys,
                           sample_negatives, to_model_ids, user_sequences)
from policies.encoders import EncoderConfig, SequenceEncoder
from policies.train import EpochRecord, TrainConfig, build_module, sampled_metrics, train_model
from simulator.schema import PAD, LogData, RankBatch

METRICS = ("ndcg@10", "hr@10")


@dataclass(frozen=True)
class _Examples:
    """One epoch of training examples; every array is (n, L) except users (n,)."""
    users: np.ndarray
    inputs: np.ndarray       # model ids of the click history
    targets: np.ndarray      # next click (0 = no target at this position)
    negatives: np.ndarray    # a sampled negative per position
    skips: np.ndarray        # the latest skip before the target (0 = none)


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
            :func:`policies.data.next_item_windows`).
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
    # fitted state
    fitted_: bool = field(default=False, init=False)
    model_: SequenceEncoder | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    best_epoch_: int = field(default=0, init=False)
    mixed_: Sequences | None = field(default=None, init=False, repr=False)
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    table_: tuple | None = field(default=None, init=False, repr=False)   # serving cache

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Train on the effective-view sequences of ``train``; each user's last click is held out
        for early stopping.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, no user with two
                clicks, or a bad parameter.
        """
        check_observable(train)
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 or None")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} must be one of {', '.join(METRICS)}")
        if self.skip_weight < 0:
            raise ValueError(f"skip_weight={self.skip_weight} must be >= 0")
        if self.eval_negatives < 1:
            raise ValueError(f"eval_negatives={self.eval_negatives} must be >= 1")
        n_items = n_items_of(train)
        side = item_side(train.items, self.item_features, n_items)
        encoder_config = EncoderConfig(n_items=n_items, max_len=self.max_len, d_model=self.d_model,
                                       n_layers=self.n_layers, n_heads=self.n_heads,
                                       dropout=self.dropout, pre_ln=self.pre_ln,
                                       side_sizes=tuple(int(a.max()) + 1 for a in side),
                                       item_bias=self.item_bias)
        train_config = self._train_config(self.max_epochs, self.patience)
        mixed = user_sequences(train, "mixed")
        rest, valid = holdout_last(mixed)
        windows = self._windows(rest)
        if len(windows) == 0:
            raise ValueError("train has no user with at least two effective views; SASRec needs "
                             "click sequences to learn from")
        exclude = positive_keys(mixed, n_items)
        side_t = torch.from_numpy(np.stack(side)) if side else None
        model = build_module(lambda: SequenceEncoder(encoder_config, side_t), rng)
        evaluate = self._validation(valid, n_items, exclude, rng) if len(valid) else None
        result = train_model(model, lambda r: self._examples(windows, n_items, exclude, r),
                             self._loss, evaluate, train_config, rng)
        self.model_, self.n_items_, self.mixed_ = model, n_items, mixed
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
        ids = torch.from_numpy(to_model_ids(cands))
        with torch.inference_mode():
            h = self.model_.encode_last(torch.from_numpy(to_model_ids(hist)))          # (B, d)
            scores = torch.bmm(table[ids], h.unsqueeze(-1)).squeeze(-1)               # (B, C)
            if bias is not None:
                scores += bias[ids]
        return scores.numpy().astype(np.float64)

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning between serving rounds: with ``epochs`` (default ``update_epochs``)
        > 0, append ``new`` to the stored sequences and fine-tune for that many epochs on the
        users in ``new`` (no validation); with 0 (the default), do nothing (see the class
        docstring)."""
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, where="new")
        fresh = user_sequences(new, "mixed")
        self.mixed_ = merge(self.mixed_, fresh)
        touched = self.mixed_.select(np.isin(self.mixed_.event_users, fresh.users))
        windows = self._windows(touched)
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

    def _windows(self, mixed: Sequences) -> Windows:
        """Click windows with, aligned to each target, the latest skip before it (SASRec-N)."""
        skips = last_negative_before(mixed) if self.skip_weight > 0 else None
        return next_item_windows(mixed.positives(), self.max_len, extra=skips, stride=self.window_stride)

    def _examples(self, w: Windows, n_items: int, exclude: np.ndarray, rng: np.random.Generator) -> _Examples:
        """The epoch's examples: a fresh uniform negative per position (never a positive of the
        user); skips that are also positives of the user are not used as negatives."""
        neg = to_model_ids(sample_negatives(rng, w.users, w.inputs.shape[1], n_items=n_items,
                                            exclude=exclude))              # (n, L)
        if w.extra is None:
            skips = np.zeros_like(w.targets)
        else:
            keys = w.users[:, None] * n_items + w.extra
            clicked = np.isin(keys, exclude) & (w.extra != PAD)
            skips = np.where(clicked, 0, to_model_ids(w.extra))
        return _Examples(w.users, w.inputs, w.targets, neg, skips)

    def _loss(self, model: SequenceEncoder, b: _Examples) -> torch.Tensor:
        """BCE of the next click vs a sampled negative at every position (SASRec's objective),
        plus ``skip_weight`` x BCE of the observed skip as a negative (SASRec-N)."""
        h = model(b.inputs)                                                 # (B, L, d)
        mask = ((b.targets > 0) & (b.inputs > 0)).float()                  # (B, L)
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

    def _validation(self, valid: Targets, n_items: int, exclude: np.ndarray, rng: np.random.Generator):
        """A closure computing the validation metric: each held-out click against
        ``eval_negatives`` distinct sampled negatives (drawn once per fit)."""
        hist = to_model_ids(pad(valid.history.positives(), self.max_len))            # (n, L)
        negs = sample_negatives(rng, valid.users, self.eval_negatives, n_items=n_items,
                                exclude=exclude, distinct=True)
        cands = to_model_ids(np.concatenate([valid.items[:, None], negs], axis=1))   # (n, 1 + K)
        hist_t, cands_t = torch.from_numpy(hist), torch.from_numpy(cands)
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
    """SASRec with the latest skip before each target click as an extra negative (SINE Sec. 2.2)."""
    skip_weight: float = 1.0
