"""The registered EASQ policy: offline fit, serving, online updates, and the losses that train it.

The model, the equations (1)-(4), the online schedule, the ablation switches and every choice the
abstract leaves open are described in docs/notes/easq.md; the network is :mod:`policies.easq.model`,
the training examples :mod:`policies.easq.windows`, the hyperparameter groups :mod:`policies.easq.params`.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import check_fitted, check_ids, register_policy, resolve_update_epochs
from policies.data import Sequences, check_observable, item_side, n_items_of, page_order, to_model_ids
from policies.device import check_device_spec, resolve_device, to_device, to_host
from policies.easq.model import DENSE_TASKS, EASQConfig, EASQNet, dense_loss, dpo_loss, eval_mode
from policies.easq.params import (AlignParams, EncoderParams, LoRAParams, SatisfactionParams, TrainParams,
                                  UpdateParams, weights)
from policies.easq.windows import (EASQ_COLUMNS, Answers, Events, Impressions, Pairs, Windows, WindowIndex,
                                   alignment_data, answers_of, click_context, dense_targets, questionnaire_events,
                                   sample_windows, tail, window_index)
from policies.params import ParameterError, nested
from policies.train import EpochRecord, TrainConfig, build_module, train_model
from simulator.checks import ConfigError, check_choice, check_flag, check_int_at_least, check_temperature
from simulator.schema import LogData, RankBatch

OBJECTIVES = ("dpo", "bce")
UPDATE_DENSE_BATCH = 512
"""Impressions per mini-batch of an online multi-task step."""


@dataclass(frozen=True)
class UpdateStats:
    """What one :meth:`EASQ.update` call saw and learned from.

    Attributes:
        impressions: new rows used.
        stale: rows dropped because their page was requested at or before the user's last seen page.
        dense: impressions in the multi-task step (a).
        pairs: questionnaire pairs with a new event (the DPO examples; counted for w/o DPO too).
        answers: new answered questionnaires (the w/o DPO examples).
        margin: mean margin ``(s - s_ref)(y_w) - (s - s_ref)(y_l)`` of ``pairs`` before the
            alignment step, i.e. on pairs not trained on yet (NaN without pairs).
    """
    impressions: int
    stale: int
    dense: int
    pairs: int
    answers: int
    margin: float


@register_policy("easq", "EASQ: multi-task backbone + LoRA satisfaction path aligned online by DPO on "
                         "questionnaire pairs (deterministic)")
@dataclass
class EASQ:
    """EASQ (docs/notes/easq.md: the model, the equations and the choices made).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        fusion: (w_ev, w_watch, w_like, w_sat), the ranking score, Eq. (3); w_sat >= 0. With
            w_sat = 0 (:data:`VARIANTS` "click-only") no questionnaire reaches the score: the
            twin that the positive control compares EASQ with, learning online the same way.
        use_lora: the LoRA side path (False: "w/o LoRA", alignment on the whole network).
        objective: "dpo" (Eq. 4) or "bce" ("w/o DPO": BCE of the LoRA-on satisfaction logit).
        online: False = "offline-only" (``update`` does nothing).
        update_epochs: passes over each update's new examples (multi-task and alignment) when
            ``update`` is called without ``epochs``.
        progress: tqdm bars while training.
        encoder: the backbone's transformer and item features (:class:`EncoderParams`).
        train: the backbone's offline training, Eq. (1) (:class:`TrainParams`).
        satisfaction: the satisfaction tower's offline BCE, Eq. (2) (:class:`SatisfactionParams`).
        lora: the side path's rank and scale (:class:`LoRAParams`).
        align: the questionnaire pairs and the offline alignment, Eq. (4) (:class:`AlignParams`).
        updates: the online steps of ``update`` (:class:`UpdateParams`).
        device: where the model trains and scores (:mod:`policies.device`): "auto" (a CUDA GPU
            when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N".

    Each group is given as its dataclass or as a table (a dict) of some of its fields.
    """
    temperature: float | None = None
    fusion: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    use_lora: bool = True
    objective: str = "dpo"
    online: bool = True
    update_epochs: int = 1
    progress: bool = False
    encoder: EncoderParams = field(default_factory=EncoderParams)
    train: TrainParams = field(default_factory=TrainParams)
    satisfaction: SatisfactionParams = field(default_factory=SatisfactionParams)
    lora: LoRAParams = field(default_factory=LoRAParams)
    align: AlignParams = field(default_factory=AlignParams)
    updates: UpdateParams = field(default_factory=UpdateParams)
    device: str = "auto"
    # fitted state
    fitted_: bool = field(default=False, init=False)
    device_: torch.device = field(default=torch.device("cpu"), init=False, repr=False)
    model_: EASQNet | None = field(default=None, init=False, repr=False)
    reference_: EASQNet | None = field(default=None, init=False, repr=False)
    dense_opt_: torch.optim.Optimizer | None = field(default=None, init=False, repr=False)
    align_opt_: torch.optim.Optimizer | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    clicks_: Sequences | None = field(default=None, init=False, repr=False)
    events_: Events | None = field(default=None, init=False, repr=False)
    last_ts_: np.ndarray | None = field(default=None, init=False, repr=False)   # (n_users,) last request ts
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    n_updates_: int = field(default=0, init=False)
    update_stats_: list[UpdateStats] = field(default_factory=list, init=False, repr=False)
    table_: dict | None = field(default=None, init=False, repr=False)   # serving cache

    def __post_init__(self) -> None:
        """Every parameter is checked here, before any simulation (errors name it)."""
        self.encoder = nested("easq", "encoder", EncoderParams, self.encoder)
        self.train = nested("easq", "train", TrainParams, self.train)
        self.satisfaction = nested("easq", "satisfaction", SatisfactionParams, self.satisfaction)
        self.lora = nested("easq", "lora", LoRAParams, self.lora)
        self.align = nested("easq", "align", AlignParams, self.align)
        self.updates = nested("easq", "updates", UpdateParams, self.updates)
        try:
            check_temperature("temperature", self.temperature)
            self.fusion = weights("fusion", self.fusion, len(DENSE_TASKS) + 1)
            if not self.fusion[-1] >= 0:
                raise ParameterError(f"fusion={self.fusion}: the satisfaction weight {self.fusion[-1]} must be "
                                     ">= 0 (< 0 reverses the alignment; 0 is the click-only twin)")
            check_flag("use_lora", self.use_lora)
            check_choice("objective", self.objective, OBJECTIVES)
            check_flag("online", self.online)
            check_int_at_least("update_epochs", self.update_epochs, 0)
            check_flag("progress", self.progress)
            if self.use_lora and self.lora.rank < 1:
                raise ParameterError(f"lora.rank={self.lora.rank} must be >= 1 with use_lora=true")
        except ConfigError as err:
            raise ParameterError(f"easq: {err}") from None
        check_device_spec(self.device, "easq")

    # -- the internal configs, from the parameter groups -----------------------------------

    def _net_config(self, n_items: int, side_sizes: tuple[int, ...]) -> EASQConfig:
        """The network for a catalogue of ``n_items`` whose item features take ``side_sizes`` values."""
        return EASQConfig(encoder=self.encoder.config(n_items, side_sizes),
                          lora_rank=self.lora.rank if self.use_lora else 0, lora_alpha=self.lora.alpha,
                          isolate=self.use_lora, fusion=self.fusion)

    def _backbone_config(self) -> TrainConfig:
        """The backbone's offline training: mini-batches of windows, early stopping."""
        t = self.train
        return TrainConfig(batch_size=t.batch_size, lr=t.lr, max_epochs=t.max_epochs, patience=t.patience,
                           progress=self.progress, desc="easq backbone")

    @staticmethod
    def _stage_config(*, epochs: int, lr: float, batch_size: int, max_grad_norm: float | None) -> TrainConfig:
        """Every other stage: ``epochs`` passes without validation."""
        return TrainConfig(batch_size=batch_size, lr=lr, max_epochs=max(epochs, 1), patience=max(epochs, 1),
                           max_grad_norm=max_grad_norm, progress=False)

    # -- the protocol ----------------------------------------------------------------------

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Offline training: backbone (dense multi-task), satisfaction tower (BCE on answers),
        then the alignment objective on the LoRA path (or the whole network without LoRA).

        ``history_`` holds the offline epochs (backbone, tower, alignment).

        Raises:
            ValueError: oracle or missing columns, no impressions, or no effective view.
        """
        self.fitted_ = False                        # a refit that fails partway leaves no stale model
        check_observable(train, required=EASQ_COLUMNS)
        n_items = n_items_of(train)
        side = item_side(train.items, self.encoder.item_features, n_items, unknown=True)
        order, req_ts = page_order(train.impressions)
        frame = train.impressions.iloc[order]
        ev = frame["effective_view"].to_numpy(bool)
        if not ev.any():
            raise ValueError("train has no effective view; EASQ needs click histories to learn from")
        config = self._net_config(n_items, tuple(int(a.max()) + 1 for a in side))
        side_t = torch.from_numpy(np.stack(side)) if side else None
        self.device_ = resolve_device(self.device, "easq")
        model = build_module(lambda: EASQNet(config, side_t), rng, self.device_)
        self.model_, self.n_items_, self.history_ = model, n_items, []
        self.n_updates_, self.update_stats_ = 0, []

        max_len = self.encoder.max_len
        ctx = click_context(frame, None)
        # 1. backbone: dense multi-task on click windows, Eq. (1)
        self._fit_backbone(window_index(frame["user_id"].to_numpy(np.int64), ctx, max_len),
                           frame["item_id"].to_numpy(np.int64), dense_targets(frame), rng)
        # 2. satisfaction tower: BCE on answered questionnaires, Eq. (2)
        events = self._events(frame, ctx.histories(max_len))
        answered = np.flatnonzero(~np.isnan(events.label))
        if len(answered) and self.satisfaction.epochs:
            with trainable(model, model.satisfaction_parameters()):
                self._train(answers_of(events, answered), self._sat_loss, epochs=self.satisfaction.epochs,
                            lr=self.satisfaction.lr, rng=rng, batch_size=self.align.batch_size)
        # 3. alignment on the training logs' pairs, Eq. (4)
        self.reference_ = None if self.use_lora else self._snapshot()
        pairs, answers = self._alignment_data(events, None)
        self._align(pairs, answers, online=False, rng=rng)
        if not self.use_lora:
            self.reference_ = self._snapshot()
        # online state
        self.dense_opt_ = torch.optim.Adam(model.backbone_parameters(), lr=self.updates.lr)
        aligned = self._alignment_parameters()
        self.align_opt_ = (torch.optim.SGD(aligned, lr=self.updates.align_lr) if self.use_lora
                           else torch.optim.Adam(aligned, lr=self.updates.lr))
        self.clicks_ = tail(ctx.clicks, max_len)
        last = float(frame["ts"].max())
        recent = (events.ts >= last - self.align.pair_window_s) & (events.kind >= 0)
        self.events_ = events.take(np.flatnonzero(recent))
        users = frame["user_id"].to_numpy(np.int64)
        self.last_ts_ = np.full(max(len(train.users), int(users.max()) + 1), -np.inf)
        np.maximum.at(self.last_ts_, users, req_ts)
        self.rng_ = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))
        self._cache()
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) ranking scores, Eq. (3), of the candidates for the user's live click history
        (the feature store's ``clicks``, newest ``encoder.max_len``)."""
        check_fitted(self)
        cands = np.asarray(batch.candidates)
        check_ids(cands, self.n_items_)
        max_len = self.encoder.max_len
        length = min(max_len, getattr(batch.features, "history_length", max_len))
        hist, _ = batch.features.history("clicks", np.asarray(batch.user_ids), length)   # (B, L), PAD
        ids = to_device(to_model_ids(cands), self.device_)                               # (B, C)
        with torch.inference_mode():
            u = self.model_.encoder.encode_last(to_device(to_model_ids(hist), self.device_))   # (B, d)
            scores = self.model_.serve(u, ids, self.table_)                              # (B, C)
        return to_host(scores).astype(np.float64)

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning on the bucket's logs since the last call: ``epochs`` passes (default
        ``update_epochs``) of multi-task steps on the new impressions, then of alignment steps on
        the pairs with a new questionnaire event (docs/notes/easq.md). Does nothing with
        ``online=False`` or ``epochs=0`` (the logs are not marked as seen then).

        Rows of pages requested at or before their user's last seen page (logs that overlap or
        precede what the policy has seen) are dropped and counted in :attr:`UpdateStats.stale`.

        Raises:
            ValueError: oracle or missing columns, or item ids outside the fitted catalogue.
        """
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if not self.online or epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, required=EASQ_COLUMNS, where="new")
        order, req_ts = page_order(new.impressions)
        frame = new.impressions.iloc[order]
        items = frame["item_id"].to_numpy(np.int64)
        bad = items[(items < 0) | (items >= self.n_items_)]
        if len(bad):
            raise ValueError(f"new logs have item id {int(bad[0])} outside the fitted catalogue "
                             f"[0, {self.n_items_}); refit")
        users, ts = frame["user_id"].to_numpy(np.int64), frame["ts"].to_numpy(np.float64)
        fresh = req_ts > self._last_seen(users)
        frame, users, ts, items, req_ts = frame[fresh], users[fresh], ts[fresh], items[fresh], req_ts[fresh]
        n_stale = int((~fresh).sum())
        if len(frame) == 0:
            self.update_stats_.append(UpdateStats(impressions=0, stale=n_stale, dense=0, pairs=0, answers=0,
                                                  margin=math.nan))
            return
        ctx = click_context(frame, self.clicks_)
        hist = ctx.histories(self.encoder.max_len)                          # (N, L)
        rng, model = self.rng_, self.model_
        # (a) multi-task steps on the dense stream, Eq. (1), with the persistent Adam
        n_dense = 0
        if self.updates.dense_samples > 0 and epochs > 0:
            pick = np.sort(rng.choice(len(frame), min(len(frame), self.updates.dense_samples), replace=False))
            data = Impressions(hist[pick], to_model_ids(items[pick]), dense_targets(frame)[pick])
            with trainable(model, model.backbone_parameters()):
                self._train(data, self._impression_loss, epochs=epochs, lr=self.updates.lr, rng=rng,
                            batch_size=UPDATE_DENSE_BATCH, optimizer=self.dense_opt_)
            n_dense = len(pick)
        # (b) alignment steps on pairs with a new questionnaire event, Eq. (4), by SGD on the sum
        events = self._events(frame, hist)
        events = events.take(np.flatnonzero(events.kind >= 0))
        both = Events.concat(self.events_, events)
        is_new = np.r_[np.zeros(len(self.events_), bool), np.ones(len(events), bool)]
        pairs, answers = self._alignment_data(both, is_new)
        margin = float(self.pair_margins(pairs).mean()) if len(pairs.items) else math.nan
        self._align(pairs, answers, online=True, rng=rng, epochs=epochs)
        self.events_ = both.take(np.flatnonzero(both.ts >= float(ts.max()) - self.align.pair_window_s))
        self.clicks_ = tail(ctx.clicks, self.encoder.max_len)
        self._see(users, req_ts)
        self.n_updates_ += 1
        refresh = self.updates.ref_refresh
        if not self.use_lora and refresh and self.n_updates_ % refresh == 0:
            self.reference_ = self._snapshot()
        self._cache()
        self.update_stats_.append(UpdateStats(impressions=len(frame), stale=n_stale, dense=n_dense,
                                              pairs=len(pairs.items), answers=len(answers.items), margin=margin))

    def pair_margins(self, pairs: Pairs) -> np.ndarray:
        """(P,) margins ``(s - s_ref)(y_w) - (s - s_ref)(y_l)`` of Eq. (4) (without beta) under
        the current model and reference, in eval mode: > 0 where the model prefers y_w more than
        the reference does."""
        check_fitted(self)
        with eval_mode(self.model_), torch.no_grad():
            hist, items = to_device(pairs.hist, self.device_), to_device(pairs.items, self.device_)
            s, ref = self._pair_scores(self.model_, hist, items)
        return to_host((s[:, 0] - ref[:, 0]) - (s[:, 1] - ref[:, 1])).astype(np.float64)

    # -- training stages -------------------------------------------------------------------

    def _fit_backbone(self, index: WindowIndex, items: np.ndarray, targets: np.ndarray,
                      rng: np.random.Generator) -> None:
        """Dense multi-task training on click windows with early stopping on held-out users."""
        model = self.model_
        uniq = np.unique(index.users)
        n_valid = int(round(self.train.valid_share * len(uniq))) if len(uniq) >= 20 else 0
        valid_users = rng.choice(uniq, n_valid, replace=False) if n_valid else np.zeros(0, np.int64)
        is_valid_win = np.isin(index.users, valid_users)
        train_win, valid_win = np.flatnonzero(~is_valid_win), np.flatnonzero(is_valid_win)
        slots = self.train.impressions_per_window

        evaluate = None
        if len(valid_win):
            vw = sample_windows(index, valid_win, items, targets, slots, rng)   # drawn once per fit
            vw_data = Windows(*(to_device(getattr(vw, k), self.device_)
                                for k in ("inputs", "cols", "items", "targets", "mask")))

            def valid_score(m: EASQNet) -> float:
                return -float(self._window_loss(m, vw_data))
            evaluate = valid_score

        with trainable(model, model.backbone_parameters()):
            result = train_model(model, lambda r: sample_windows(index, train_win, items, targets, slots, r),
                                 loss_fn=self._window_loss, evaluate=evaluate, config=self._backbone_config(),
                                 rng=rng)
        self.history_ += result.history

    def _events(self, frame: pd.DataFrame, hist: np.ndarray) -> Events:
        """The questionnaire exposures of ``frame`` (rows in page order) with their contexts."""
        return questionnaire_events(frame, hist, loser_answers=self.align.loser_answers,
                                    unanswered_losers=self.align.unanswered_losers)

    def _alignment_data(self, events: Events, is_new: np.ndarray | None) -> tuple[Pairs, Answers]:
        """The DPO pairs of ``events`` (with a new event, given ``is_new``) and the (new) answers."""
        return alignment_data(events, self.align.pair_window_s, is_new)

    def _alignment_parameters(self) -> list[nn.Parameter]:
        """What the alignment objective trains: the side path, or without LoRA the whole network."""
        return self.model_.lora_parameters() if self.use_lora else list(self.model_.parameters())

    def _align(self, pairs: Pairs, answers: Answers, *, online: bool, rng: np.random.Generator,
               epochs: int | None = None) -> None:
        """The alignment objective: DPO on ``pairs`` (Eq. 4) or, w/o DPO, BCE on ``answers``.

        Offline: ``align.epochs`` of Adam on the mean loss. Online: ``epochs`` (default
        ``update_epochs``) of the persistent SGD on the loss summed over the examples
        (``updates.align_lr`` per example); w/o LoRA, of the persistent Adam on the mean loss
        (``updates.lr``).
        """
        data, loss = (pairs, self._dpo_loss) if self.objective == "dpo" else (answers, self._align_bce_loss)
        epochs = (self.update_epochs if epochs is None else epochs) if online else self.align.epochs
        if len(data.items) == 0 or epochs == 0:
            return
        batch_size = self.align.batch_size
        with trainable(self.model_, self._alignment_parameters()):
            if online and self.use_lora:
                self._train(data, summed(loss), epochs=epochs, lr=self.updates.align_lr, rng=rng,
                            batch_size=batch_size, optimizer=self.align_opt_,
                            max_grad_norm=self.updates.max_grad_norm)
            elif online:
                self._train(data, loss, epochs=epochs, lr=self.updates.lr, rng=rng, batch_size=batch_size,
                            optimizer=self.align_opt_)
            else:
                self._train(data, loss, epochs=epochs, lr=self.align.lr, rng=rng, batch_size=batch_size)

    def _train(self, data: Any, loss_fn: Callable[[EASQNet, Any], torch.Tensor], *, epochs: int, lr: float,
               rng: np.random.Generator, batch_size: int, optimizer: torch.optim.Optimizer | None = None,
               max_grad_norm: float | None = None) -> None:
        """``epochs`` passes of ``loss_fn`` over ``data`` through :func:`train_model` (no
        validation); offline (``optimizer=None``, a fresh Adam) the epochs go to ``history_``."""
        config = self._stage_config(epochs=epochs, lr=lr, batch_size=batch_size, max_grad_norm=max_grad_norm)
        result = train_model(self.model_, lambda r: data, loss_fn=loss_fn, evaluate=None, config=config, rng=rng,
                             optimizer=optimizer)
        if optimizer is None:
            self.history_ += result.history

    # -- losses ----------------------------------------------------------------------------

    def _window_loss(self, model: EASQNet, b: Windows) -> torch.Tensor:
        """Eq. (1) over window slots: one causal pass per window, each slot scored with the state
        after the last click of the user's earlier requests."""
        h = model.encoder(b.inputs)                                        # (W, L, d)
        h = torch.cat([h, h.new_zeros(h.shape[0], 1, h.shape[2])], dim=1)  # (W, L + 1, d); L = no history
        u = torch.gather(h, 1, b.cols.unsqueeze(-1).expand(-1, -1, h.shape[2]))   # (W, M, d)
        dense, _ = model.dense_logits(u, b.items)                          # (W, M, K)
        return dense_loss(dense, b.targets, b.mask, self._task_weights())

    def _impression_loss(self, model: EASQNet, b: Impressions) -> torch.Tensor:
        u = model.user_state(b.hist)                                       # (N, d)
        dense, _ = model.dense_logits(u, b.items)                          # (N, K)
        return dense_loss(dense, b.targets, torch.ones(len(b.items), device=b.items.device),
                          self._task_weights())

    def _sat_loss(self, model: EASQNet, b: Answers) -> torch.Tensor:
        """BCE of the satisfaction tower without its LoRA path (offline, Eq. 2)."""
        u = model.user_state(b.hist, frozen=True)                          # (N, d)
        _, sat = model.logits(u, b.items, lora=False, backbone_grad=False)   # (N,)
        return F.binary_cross_entropy_with_logits(sat, b.labels)

    def _align_bce_loss(self, model: EASQNet, b: Answers) -> torch.Tensor:
        """w/o DPO: BCE of the satisfaction logit with the LoRA path on."""
        isolate = self.use_lora and model.config.isolate
        u = model.user_state(b.hist, frozen=isolate)                       # (N, d)
        _, sat = model.logits(u, b.items, lora=True, backbone_grad=not isolate)   # (N,)
        return F.binary_cross_entropy_with_logits(sat, b.labels)

    def _pair_scores(self, model: EASQNet, hist: torch.Tensor,
                     items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 2) scores of the pairs' items under the model (with gradient where it trains) and
        under the reference (without): the LoRA-off network, or without LoRA the snapshot. Both
        are encoded without dropout."""
        isolate = self.use_lora and model.config.isolate
        u = model.user_state(hist, frozen=isolate, dropout=False)          # (P, d)
        s = model.score(u.unsqueeze(1), items, backbone_grad=not isolate)  # (P, 2)
        with torch.no_grad():
            if self.use_lora:
                ref = model.score(u.unsqueeze(1), items, lora=False)       # (P, 2)
            else:
                ref = self.reference_.score(self.reference_.user_state(hist, frozen=True).unsqueeze(1), items)
        return s, ref

    def _dpo_loss(self, model: EASQNet, b: Pairs) -> torch.Tensor:
        """Eq. (4): the model with its LoRA path against itself without (or against the snapshot)."""
        s, ref = self._pair_scores(model, b.hist, b.items)                 # (P, 2), (P, 2)
        return dpo_loss(s_w=s[:, 0], s_l=s[:, 1], ref_w=ref[:, 0], ref_l=ref[:, 1], beta=self.align.beta)

    # -- helpers ---------------------------------------------------------------------------

    def _task_weights(self) -> torch.Tensor:
        return torch.tensor(self.train.task_weights, dtype=torch.float32, device=self.device_)   # (K,)

    def _last_seen(self, users: np.ndarray) -> np.ndarray:
        """(N,) request time of each user's newest page seen so far (-inf: none)."""
        seen = self.last_ts_
        return np.where(users < len(seen), seen[np.minimum(users, len(seen) - 1)], -np.inf)

    def _see(self, users: np.ndarray, ts: np.ndarray) -> None:
        if users.max() >= len(self.last_ts_):
            self.last_ts_ = np.r_[self.last_ts_, np.full(int(users.max()) + 1 - len(self.last_ts_), -np.inf)]
        np.maximum.at(self.last_ts_, users, ts)

    def _snapshot(self) -> EASQNet:
        ref = copy.deepcopy(self.model_)
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def _cache(self) -> None:
        with torch.inference_mode():
            self.table_ = self.model_.serving_cache()


@contextmanager
def trainable(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Only ``params`` require gradients inside the block (the optimiser skips the others)."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p, was in saved:
            p.requires_grad_(was)


def summed(loss_fn: Callable[[EASQNet, Any], torch.Tensor]) -> Callable[[EASQNet, Any], torch.Tensor]:
    """``loss_fn`` times the mini-batch size: a mean loss turned into a sum over examples."""
    return lambda model, b: loss_fn(model, b) * len(b.items)


VARIANTS: dict[str, dict] = {
    "EASQ": {},
    "w/o LoRA": {"use_lora": False},
    "w/o DPO": {"objective": "bce"},
    "offline-only": {"online": False},
    "click-only": {"fusion": (1.0, 1.0, 1.0, 0.0)},
}
"""The ablation rows: ``make_policy("easq", **VARIANTS[row])``."""
