"""The ``sine`` policy: fit on the mixed click/skip sequences, score from the live mixed history,
fine-tune online (``update``).

Hyperparameters are the groups of :mod:`policies.sine.params`, checked when the policy is built;
the design and every choice the paper leaves open: docs/notes/sine.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np
import pandas as pd
import torch

from policies.base import check_fitted, check_ids, register_policy, resolve_update_epochs
from policies.data import (check_observable, item_side, n_items_of, pad, positive_keys, request_times,
                           sample_negatives, to_model_ids)
from policies.device import check_device_spec, resolve_device, to_device, to_host
from policies.encoders import EncoderConfig
from policies.params import ParameterError, nested
from policies.sine.model import SINEConfig, SINEModel, bpr, prototype_dcor
from policies.sine.params import EncoderParams, InterestParams, LossParams, TrainParams
from policies.sine.windows import Examples, Paged, Validation, Windows, holdout_tail, mixed_windows, tokens_of
from policies.train import EpochRecord, TrainConfig, build_module, sampled_metrics, train_model
from simulator.checks import ConfigError, check_flag, check_int_at_least, check_temperature
from simulator.schema import LogData, RankBatch


@register_policy("sine", "SINE (RecSys'23): K sub-interests from the mixed click/skip history, "
                         "BPR vs sampled and vs observed skips (deterministic)")
@dataclass
class SINE:
    """SINE (docs/notes/sine.md).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        adaptive_fusion: Eq. 12-14 (False: "w/o AF", the best sub-interest per item).
        negative_feedback: read and learn from skips (False: "w/o NF", clicks only; needs
            ``loss.lambda2 = 0``).
        encoder: the backbone (:class:`~policies.sine.params.EncoderParams`: max_len, d_model,
            n_layers, n_heads, dropout, pre_ln, item_features, item_bias).
        interests: the sub-interest layers (:class:`~policies.sine.params.InterestParams`:
            n_interests, beta, learn_beta).
        loss: Eq. 16's weights (:class:`~policies.sine.params.LossParams`: lambda1, lambda2,
            lambda3).
        train: training and early stopping (:class:`~policies.sine.params.TrainParams`:
            batch_size, lr, weight_decay, max_epochs, patience, window_stride, metric,
            eval_negatives).
        update_epochs: epochs of fine-tuning on the users of each ``update()``'s logs when the
            caller gives none (0: no-op; serving reads the live mixed history anyway); the A/B
            runner's ``learning = "update"`` passes its own.
        progress: show a tqdm bar while training.
        device: where the model trains and scores (:mod:`policies.device`): "auto" (a CUDA GPU
            when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N".

    A group is given as its dataclass or as a table (dict) of some of its fields; a bad value
    raises :class:`~policies.params.ParameterError` naming it (``sine: train.lr=-1.0 must be > 0``).
    """
    temperature: float | None = None
    adaptive_fusion: bool = True
    negative_feedback: bool = True
    encoder: EncoderParams = field(default_factory=EncoderParams)
    interests: InterestParams = field(default_factory=InterestParams)
    loss: LossParams = field(default_factory=LossParams)
    train: TrainParams = field(default_factory=TrainParams)
    update_epochs: int = 0
    progress: bool = False
    device: str = "auto"
    # fitted state
    fitted_: bool = field(default=False, init=False)
    device_: torch.device | None = field(default=None, init=False, repr=False)
    model_: SINEModel | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    best_epoch_: int = field(default=0, init=False)
    mixed_: Paged | None = field(default=None, init=False, repr=False)
    last_request_: np.ndarray | None = field(default=None, init=False, repr=False)  # (users,) request time
    stale_: int = field(default=0, init=False)                             # update() rows dropped
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    table_: tuple | None = field(default=None, init=False, repr=False)     # serving cache

    def __post_init__(self) -> None:
        check_device_spec(self.device, self.name)
        self.encoder = nested(self.name, "encoder", EncoderParams, self.encoder)
        self.interests = nested(self.name, "interests", InterestParams, self.interests)
        self.loss = nested(self.name, "loss", LossParams, self.loss)
        self.train = nested(self.name, "train", TrainParams, self.train)
        try:
            check_temperature("temperature", self.temperature)
            check_flag("adaptive_fusion", self.adaptive_fusion)
            check_flag("negative_feedback", self.negative_feedback)
            check_int_at_least("update_epochs", self.update_epochs, 0)
            check_flag("progress", self.progress)
        except ConfigError as err:
            raise ParameterError(f"{self.name}: {err}") from None
        if not self.negative_feedback and self.loss.lambda2 != 0:
            raise ParameterError(f"{self.name}: loss.lambda2={self.loss.lambda2} must be 0 with "
                                 "negative_feedback=False (w/o NF learns from no skip)")

    @property
    def history_kind(self) -> str:
        """The feature-store history the model reads: ``mixed``, or ``clicks`` for w/o NF."""
        return "mixed" if self.negative_feedback else "clicks"

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Train on the mixed sequences of ``train``; each user's last click is held out for
        early stopping.

        Every target is scored from the user's history before its page request, as the platform
        ranks it (:class:`~policies.sine.windows.Paged`, :func:`~policies.sine.windows.mixed_windows`).

        Args:
            train: observable logs (impressions with :data:`policies.data.REQUIRED_COLUMNS`;
                the item table with ``encoder.item_features``).
            rng: the only source of randomness (initialisation, negatives, batches, dropout).

        Returns:
            self, fitted.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, or no user with two
                events to learn from.
        """
        check_observable(train)
        n_items = n_items_of(train)
        side = item_side(train.items, self.encoder.item_features, n_items)
        enc = self._encoder_config(n_items, side)
        cfg = self._sine_config()
        mixed = Paged.of(train, "mixed")
        exclude = positive_keys(mixed.seqs, n_items)
        rest, valid = holdout_tail(mixed, n_items, exclude)
        windows = mixed_windows(self._sequence(rest), self.encoder.max_len, n_items, exclude,
                                stride=self.train.window_stride)
        learns = self.loss.lambda1 > 0
        if not ((windows.targets > 0).any() if learns else (windows.skip_neg > 0).any()):
            raise ValueError("train has no user with an effective view in a page after an earlier event"
                             + ("" if learns else " preceded by a skip (lambda1=0: only L2 learns)")
                             + "; SINE needs click/skip sequences to learn from")
        side_t = torch.from_numpy(np.stack(side)) if side else None
        device = resolve_device(self.device, self.name)
        model = build_module(lambda: SINEModel(enc, cfg, side_t), rng, device)
        evaluate = self._validation(valid, n_items, exclude, rng, device) if len(valid) else None
        result = train_model(model, lambda r: self._examples(windows, n_items, exclude, r), self._loss,
                             evaluate, self._train_config(self.train.max_epochs, self.train.patience), rng)
        self.model_, self.n_items_, self.mixed_, self.device_ = model, n_items, mixed, device
        self.last_request_, self.stale_ = _last_requests(train.impressions, None), 0
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        self.rng_ = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))
        self._cache_items()
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) SINE scores (Eq. 14) of the candidates after the user's live mixed history
        (``clicks`` for w/o NF), the newest ``min(max_len, history_length)`` events. A user
        without history scores every candidate 0 (plus the item bias): a tie the platform breaks."""
        check_fitted(self)
        cands = np.asarray(batch.candidates)
        check_ids(cands, self.n_items_)
        max_len = self.encoder.max_len
        length = min(max_len, getattr(batch.features, "history_length", max_len))
        items, labels = batch.features.history(self.history_kind, np.asarray(batch.user_ids), length)
        labels = labels if self.negative_feedback else None                 # the clicks ring has no labels
        tokens = to_device(tokens_of(items, labels, self.n_items_), self.device_)   # (B, L)
        ids = to_device(to_model_ids(cands), self.device_)                  # (B, C)
        with torch.inference_mode():
            s = self.model_.score_last(tokens, ids, self.table_)            # (B, C)
        return to_host(s).astype(np.float64)

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning between serving rounds: with ``epochs`` (default ``update_epochs``)
        > 0, append ``new`` to the stored sequences and fine-tune for that many epochs on the
        users in ``new`` (no validation); with 0 (the default), do nothing.

        ``new`` must hold whole pages. Pages requested at or before their user's latest page seen
        so far (overlapping or older logs) are dropped and counted in :attr:`stale_`, so the
        stored sequences stay in the feature store's order.
        """
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, where="new")
        imp = new.impressions
        users = imp["user_id"].to_numpy(np.int64)
        seen = np.full(len(users), -np.inf)
        known = users < len(self.last_request_)
        seen[known] = self.last_request_[users[known]]
        fresh_rows = request_times(imp) > seen
        self.stale_ += int((~fresh_rows).sum())
        if not fresh_rows.any():
            return
        imp = imp[fresh_rows]
        self.last_request_ = _last_requests(imp, self.last_request_)
        fresh = Paged.of(LogData(imp, new.items, new.users), "mixed")
        self.mixed_ = self.mixed_.append(fresh)
        touched = self.mixed_.select(np.isin(self.mixed_.seqs.event_users, fresh.seqs.users))
        exclude = positive_keys(self.mixed_.seqs, self.n_items_)
        windows = mixed_windows(self._sequence(touched), self.encoder.max_len, self.n_items_, exclude,
                                stride=self.train.window_stride)
        if not ((windows.targets > 0).any() or (self.loss.lambda2 > 0 and (windows.skip_neg > 0).any())):
            return
        result = train_model(self.model_, lambda r: self._examples(windows, self.n_items_, exclude, r),
                             self._loss, None, self._train_config(epochs, epochs), self.rng_)
        self.history_ = self.history_ + result.history
        self._cache_items()

    # -- the internal configurations, built from the groups here only ---------------------

    def _encoder_config(self, n_items: int, side: list[np.ndarray]) -> EncoderConfig:
        """The backbone for a catalogue of ``n_items`` with the item features ``side`` (both known
        from the logs only)."""
        e = self.encoder
        return EncoderConfig(n_items=n_items, max_len=e.max_len, d_model=e.d_model, n_layers=e.n_layers,
                             n_heads=e.n_heads, dropout=e.dropout, pre_ln=e.pre_ln,
                             side_sizes=tuple(int(a.max()) + 1 for a in side), item_bias=e.item_bias)

    def _sine_config(self) -> SINEConfig:
        i = self.interests
        return SINEConfig(n_interests=i.n_interests, adaptive_fusion=self.adaptive_fusion, beta=i.beta,
                          learn_beta=i.learn_beta)

    def _train_config(self, epochs: int, patience: int) -> TrainConfig:
        t = self.train
        return TrainConfig(batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, max_epochs=epochs,
                           patience=patience, progress=self.progress, desc=self.name)

    # -- training --------------------------------------------------------------------------

    def _sequence(self, mixed: Paged) -> Paged:
        return mixed if self.negative_feedback else mixed.positives()

    def _cache_items(self) -> None:
        with torch.inference_mode():
            self.table_ = self.model_.item_table()

    def _examples(self, w: Windows, n_items: int, exclude: np.ndarray, rng: np.random.Generator) -> Examples:
        """The epoch's examples: the windows plus a fresh uniform negative per target slot."""
        neg = to_model_ids(sample_negatives(rng, w.users, w.targets.shape[1], n_items=n_items,
                                            exclude=exclude))              # (n, M)
        return w.with_negatives(neg)

    def _loss(self, model: SINEModel, b: Examples) -> torch.Tensor:
        """Eq. 16: lambda1 L1 + lambda2 L2 + lambda3 L_dis, every target scored after its context
        ``b.ctx`` (only the item columns of the terms that are on)."""
        lam = self.loss
        pairs = [(lam.lambda1, b.targets, b.negatives, b.targets > 0)] if lam.lambda1 > 0 else []   # L1
        if lam.lambda2 > 0:
            pairs.append((lam.lambda2, b.skip_pos, b.skip_neg, b.skip_neg > 0))   # L2 (Eq. 15)
        ids = torch.stack([c for _, pos, neg, _ in pairs for c in (pos, neg)], dim=-1)   # (B, M, 2 or 4)
        s = model.scores(b.tokens, ids, at=b.ctx)                          # (B, M, 2 or 4)
        loss = sum(w * bpr(s[..., 2 * i], s[..., 2 * i + 1], mask) for i, (w, _, _, mask) in enumerate(pairs))
        if lam.lambda3 > 0:
            loss = loss + lam.lambda3 * prototype_dcor(model.prototypes)   # L_dis
        return loss

    # -- early stopping --------------------------------------------------------------------

    def _validation(self, valid: Validation, n_items: int, exclude: np.ndarray, rng: np.random.Generator,
                    device: torch.device):
        """A function of the model computing the validation metric (``train.metric``), each
        held-out click scored after the history its tail's first page was ranked with
        (negatives drawn once per fit)."""
        max_len = self.encoder.max_len
        hist = self._sequence(valid.history).seqs
        rows = hist.rows_of(valid.users)
        if not (rows >= 0).all():                                          # w/o NF: no click before
            keep = rows >= 0
            valid = Validation(users=valid.users[keep], items=valid.items[keep], skips=valid.skips[keep],
                               history=valid.history)
            rows = rows[keep]
            if not len(valid):
                return None
        tokens = tokens_of(pad(hist, max_len, rows=rows),
                           pad(hist, max_len, values=hist.labels, fill=1, rows=rows), n_items)   # (n, L)
        metric = self.train.metric
        if metric == "gauc" and not (valid.skips >= 0).any():
            metric = "ndcg@10"                                             # no held-out skip to rank
        if metric == "gauc":
            negs = valid.skips                                             # (n, M), PAD
        else:
            negs = sample_negatives(rng, valid.users, self.train.eval_negatives, n_items=n_items,
                                    exclude=exclude, distinct=True)        # (n, M)
        cands = to_model_ids(np.concatenate([valid.items[:, None], negs], axis=1))   # (n, 1 + M)
        tok, cand = to_device(tokens, device), to_device(cands, device)     # moved once per fit

        def evaluate(model: SINEModel) -> float:
            s = torch.cat([model.score_last(tok[i:i + 1024], cand[i:i + 1024])
                           for i in range(0, len(tok), 1024)])                 # (n, 1 + M)
            if metric == "gauc":
                return skip_gauc(s, cand > 0)
            hr, ndcg = sampled_metrics(s, k=10)
            return ndcg if metric.startswith("ndcg") else hr

        return evaluate


def skip_gauc(scores: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over users of the AUC of the click (column 0) against the observed skips (the other
    columns where ``valid``); ties count half; users without a skip are left out."""
    pos, neg = scores[:, :1], scores[:, 1:]
    m = valid[:, 1:].to(scores.dtype)
    wins = ((neg < pos).to(scores.dtype) + 0.5 * (neg == pos).to(scores.dtype)) * m
    n = m.sum(dim=1)
    has = n > 0
    return float((wins.sum(dim=1)[has] / n[has]).mean()) if bool(has.any()) else float("nan")


def _last_requests(impressions: pd.DataFrame, seen: np.ndarray | None) -> np.ndarray:
    """(users,) each user's latest request time in ``impressions`` or ``seen`` (-inf: none)."""
    users = impressions["user_id"].to_numpy(np.int64)
    size = max(len(seen) if seen is not None else 0, int(users.max()) + 1 if len(users) else 0)
    out = np.full(size, -np.inf)
    if seen is not None:
        out[:len(seen)] = seen
    np.maximum.at(out, users, request_times(impressions))
    return out
