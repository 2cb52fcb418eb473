"""The registered SAQRec policy: Algorithm 1's four stages (``fit``), online updates and serving.

Stage 0 trains the click model, stage 1 the propensity model rho, stage 2 the satisfaction model g,
stage 3 the main network f from the click model's weights (networks: :mod:`policies.saqrec.model`;
examples: :mod:`policies.saqrec.windows`; hyperparameters: :mod:`policies.saqrec.params`). The
design and every choice where the paper is silent: ``docs/notes/saqrec.md``.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, fields
from typing import Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from policies.base import (NotFittedError, append_logs, check_fitted, check_ids, register_policy,
                           resolve_update_epochs)
from policies.data import (check_observable, holdout_last, item_side, n_items_of, positive_keys, to_model_ids)
from policies.device import check_device_spec, module_device, resolve_device, to_device, to_host
from policies.params import ParameterError, nested
from policies.saqrec.model import NetConfig, PairMLP, SAQRecNet, ips_bce, satisfaction_labels
from policies.saqrec.params import AUX_PATIENCE, AlignmentParams, AuxParams, EncoderParams, TrainParams
from policies.saqrec.windows import (SAQREC_COLUMNS, ClickWindows, Examples, ExampleStream, Pairs, PreparedLogs,
                                     Teacher, click_windows, prepare_logs, validation_inputs)
from policies.train import TrainConfig, TrainResult, build_module, sampled_metrics, train_model
from simulator.checks import ConfigError, check_flag, check_int_at_least, check_nonnegative, check_temperature
from simulator.schema import LogData, RankBatch

NAME = "saqrec"
STAGE_DESC = {"pretrain": "saqrec:clicks", "propensity": "saqrec:propensity", "satisfaction": "saqrec:satisfaction",
              "main": "saqrec", "update": "saqrec:update"}
"""The progress-bar label of each training stage."""


@register_policy(NAME, "SAQRec (CIKM'24): IPS satisfaction model from questionnaires, SID + MLSE over "
                       "click / satisfied / dissatisfied histories, pseudo-label MTL (deterministic)")
@dataclass
class SAQRec:
    """SAQRec (``docs/notes/saqrec.md`` for the stages and the choices made).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        encoder: the main network (:class:`EncoderParams`; a table in a config).
        train: training of stages 0 and 3 and of the updates (:class:`TrainParams`).
        alignment: stage 3's satisfaction loss, beta and N_mix (:class:`AlignmentParams`).
        aux: the propensity and satisfaction models of stages 1-2 (:class:`AuxParams`).
        unbiased: IPS (Eq. 6) for the satisfaction model; False: naive (Eq. 3), "w/o Unbiased".
        sid, mlse, mtl: the SID / MLSE modules and the satisfaction loss (False: ablations).
        sat_weight: serving score ``logit(y_hat) + sat_weight * logit(s_f_hat)`` (needs ``mtl``).
        update_epochs: passes of :meth:`update` when the caller gives none (0: ``update`` does
            nothing; the A/B runner's ``learning = "update"`` passes its own).
        progress: tqdm bars.
        device: where the networks train and score (:mod:`policies.device`): "auto" (a CUDA GPU
            when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N".

    Raises:
        ParameterError: a bad parameter (at construction), naming it: ``saqrec: train.lr=-1.0 must be > 0``.
    """
    temperature: float | None = None
    encoder: EncoderParams = field(default_factory=EncoderParams)
    train: TrainParams = field(default_factory=TrainParams)
    alignment: AlignmentParams = field(default_factory=AlignmentParams)
    aux: AuxParams = field(default_factory=AuxParams)
    unbiased: bool = True
    sid: bool = True
    mlse: bool = True
    mtl: bool = True
    sat_weight: float = 0.0
    update_epochs: int = 0
    progress: bool = False
    device: str = "auto"
    # fitted state
    fitted_: bool = field(default=False, init=False)
    device_: torch.device = field(default=torch.device("cpu"), init=False, repr=False)
    net_: SAQRecNet | None = field(default=None, init=False, repr=False)
    train_: pd.DataFrame | None = field(default=None, init=False, repr=False)   # the logs seen so far
    sat_table_: torch.Tensor | None = field(default=None, init=False, repr=False)  # satisfaction head table
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    click_tables_: tuple | None = field(default=None, init=False, repr=False)   # stage-0 embeddings
    propensity_: PairMLP | None = field(default=None, init=False, repr=False)
    satisfaction_: PairMLP | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    n_users_: int = field(default=0, init=False)
    clip_: float = field(default=0.0, init=False)
    results_: dict[str, TrainResult] = field(default_factory=dict, init=False, repr=False)
    seconds_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    diagnostics_: dict[str, object] = field(default_factory=dict, init=False, repr=False)
    tables_: tuple | None = field(default=None, init=False, repr=False)   # serving cache

    def __post_init__(self) -> None:
        self.encoder = nested(NAME, "encoder", EncoderParams, self.encoder)
        self.train = nested(NAME, "train", TrainParams, self.train)
        self.alignment = nested(NAME, "alignment", AlignmentParams, self.alignment)
        self.aux = nested(NAME, "aux", AuxParams, self.aux)
        try:
            check_temperature("temperature", self.temperature)
            for name in ("unbiased", "sid", "mlse", "mtl", "progress"):
                check_flag(name, getattr(self, name))
            check_nonnegative("sat_weight", self.sat_weight)
            check_int_at_least("update_epochs", self.update_epochs, 0)
            if self.sat_weight and not self.mtl:
                raise ParameterError(f"sat_weight={self.sat_weight} needs mtl=True: without the satisfaction loss "
                                     "the satisfaction head is untrained")
        except ConfigError as err:
            raise ParameterError(f"{NAME}: {err}") from None
        check_device_spec(self.device, NAME)

    @property
    def reads_answers(self) -> bool:
        """Whether any questionnaire answer reaches the model (False: :data:`CLICK_ONLY`)."""
        return self.sid or self.mlse or self.mtl

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Stages 0-3 of Algorithm 1 on ``train``; each user's last click is held out for early
        stopping of the click models.

        Raises:
            ValueError: oracle columns, missing columns, no impressions or no user with two clicks.
        """
        return self._fit(train, rng, main=True)

    def fit_satisfaction(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Stages 0-2 only (click model, propensity model, satisfaction model), for studies of
        the satisfaction model (:meth:`predict_satisfaction`); the policy cannot score after it."""
        return self._fit(train, rng, main=False)

    def predict_satisfaction(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n,) ``s_hat = g(u, i)`` of the fitted satisfaction model for user and item ids."""
        if self.satisfaction_ is None:
            raise NotFittedError(f"policy {self.name!r} must be fitted before predict_satisfaction(); "
                                 "call fit() or fit_satisfaction() first")
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        return self._teacher_fn(self.satisfaction_)(users, to_model_ids(items))

    def predict_propensity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n,) ``o_hat = rho(u, i)`` of the fitted propensity model (unclipped; None-variant:
        "w/o Unbiased" fits none and raises)."""
        if self.propensity_ is None:
            raise NotFittedError(f"policy {self.name!r} has no propensity model (unbiased=False or not fitted)")
        with torch.no_grad():
            return to_host(torch.sigmoid(self.propensity_(to_device(np.asarray(users, np.int64), self.device_),
                                                          to_device(to_model_ids(items), self.device_))))

    def _fit(self, train: LogData, rng: np.random.Generator, *, main: bool) -> Self:
        check_observable(train, required=SAQREC_COLUMNS)
        self.fitted_ = False
        self.results_, self.seconds_, self.propensity_, self.satisfaction_ = {}, {}, None, None
        self.diagnostics_ = {}
        self.device_ = device = resolve_device(self.device, NAME)
        t0 = time.perf_counter()
        n_items = n_items_of(train)
        n_users = int(max(train.users["user_id"].max() + 1 if "user_id" in train.users and len(train.users) else 0,
                          train.impressions["user_id"].max() + 1))
        data = prepare_logs(train)
        rest, valid = holdout_last(data.clicks)
        windows = click_windows(rest, self.encoder.max_len, data.page_start, self.train.window_stride)
        if len(windows) == 0:
            raise ValueError("train has no user with at least two effective views; SAQRec needs click "
                             "sequences to learn from")
        side = item_side(train.items, self.encoder.item_features, n_items)
        side_t = torch.from_numpy(np.stack(side)) if side else None
        exclude = positive_keys(data.clicks, n_items)
        base = self._net_config(n_items, n_users, tuple(int(a.max()) + 1 for a in side))
        self.seconds_["prepare"] = time.perf_counter() - t0
        val = self._validation_inputs(data, valid, n_items, exclude, rng) if len(valid) else None

        # stage 0: the click model, i.e. the main network with only [h_r, v_u] in the fusion;
        # its embeddings are frozen into rho and g, and stage 3 continues from it
        t = time.perf_counter()
        net = build_module(lambda: SAQRecNet(base, side_t), rng, device)
        net.click_only = True
        examples = self._examples_fn(windows, data, n_items, exclude, teacher=None)
        self.results_["pretrain"] = train_model(net, examples, self._loss_fn(mtl=False), self._evaluate_fn(val),
                                                self._train_config("pretrain"), rng)
        net.click_only = False
        self.seconds_["pretrain"] = time.perf_counter() - t
        with torch.no_grad():
            users_t = net.user_emb.weight.detach().clone()                       # (n_users, d)
            items_t = net.item_emb(torch.arange(n_items + 1, device=device)).detach().clone()   # (n_items + 1, d)
        self.click_tables_ = (users_t.clone(), items_t.clone())
        users_t = users_t / users_t.pow(2).mean().sqrt().clamp(min=1e-12)
        items_t = items_t / items_t[1:].pow(2).mean().sqrt().clamp(min=1e-12)
        items_t[0] = 0.0
        a = self.aux

        # stage 1: propensity of observing a questionnaire label on a click (Eq. 5)
        t = time.perf_counter()
        rate = float(data.observed.mean()) if len(data.observed) else 0.0
        self.clip_ = a.propensity_clip * rate
        propensity = None
        if self.unbiased and self.reads_answers:
            rho = build_module(lambda: PairMLP(users_t, items_t, a.hidden, a.dropout, biases=True), rng, device)
            pairs = Pairs(data.click_users, to_model_ids(data.click_items), data.observed.astype(np.float32))
            self.results_["propensity"] = self._fit_pairs(rho, pairs, rng, "propensity", ips=False)
            self.propensity_ = rho
            with torch.no_grad():
                obs = data.observed
                propensity = to_host(torch.sigmoid(rho(to_device(data.click_users[obs], device),
                                                       to_device(to_model_ids(data.click_items[obs]), device))))
        self.seconds_["propensity"] = time.perf_counter() - t

        # stage 2: the satisfaction model on the answered clicks (Eq. 6, or Eq. 3)
        t = time.perf_counter()
        g = build_module(lambda: PairMLP(users_t, items_t, a.hidden, a.dropout, biases=a.satisfaction_biases),
                         rng, device)
        obs = data.observed
        pairs = Pairs(data.click_users[obs], to_model_ids(data.click_items[obs]),
                      data.satisfied_label[obs].astype(np.float32),
                      None if propensity is None else np.maximum(propensity, self.clip_).astype(np.float32))
        if len(pairs.users) and self.reads_answers:
            self.results_["satisfaction"] = self._fit_pairs(g, pairs, rng, "satisfaction", ips=self.unbiased)
        else:   # no answered questionnaire, or the click-only twin: g is the constant 0.5 (unused by the twin)
            with torch.no_grad():
                for p in g.head.parameters():
                    p.zero_()
        g.eval()
        self.satisfaction_ = g
        self.seconds_["satisfaction"] = time.perf_counter() - t
        self._diagnose(len(pairs.users))

        self.n_items_, self.n_users_, self.net_ = n_items, n_users, net
        if not main:
            return self

        # stage 3: the main model, continuing from the click model (Eq. 19)
        t = time.perf_counter()
        teacher = self._teacher_fn(g)
        val_main = self._with_teacher(val, teacher)
        examples = self._examples_fn(windows, data, n_items, exclude, teacher=teacher)
        self.results_["main"] = train_model(net, examples, self._loss_fn(mtl=self.mtl),
                                            self._objective_fn(val_main, teacher), self._train_config("main"), rng)
        self.seconds_["main"] = time.perf_counter() - t
        self._diagnose_main(val_main)
        self.seconds_["total"] = time.perf_counter() - t0
        self._cache_tables()
        self.train_ = train.impressions
        self.rng_ = rng.spawn(1)[0]                      # online updates; the fit's draws are unchanged
        self.fitted_ = True
        return self

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning between serving rounds: stage 3 continued for ``epochs`` passes
        (default ``update_epochs``; 0 does nothing) over the click windows of the users in
        ``new``, built from every log seen so far (the fit's and each update's), with g's
        imputed satisfaction as the pseudo labels (rho and g stay fixed; no validation). Each
        update counts its epochs from 1, so label mixing (Eq. 17-18) starts at its epoch
        ``alignment.n_mix``, as in stage 3."""
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, required=SAQREC_COLUMNS, where="new")
        frame = append_logs(self.train_, new.impressions)
        data = prepare_logs(LogData(frame, new.items, new.users))
        touched = np.unique(new.impressions["user_id"].to_numpy(np.int64))
        clicks = data.clicks.select(np.isin(data.clicks.event_users, touched))
        windows = click_windows(clicks, self.encoder.max_len, data.page_start, self.train.window_stride)
        self.train_ = frame
        if len(windows) == 0:
            return
        examples = self._examples_fn(windows, data, self.n_items_, positive_keys(data.clicks, self.n_items_),
                                     teacher=self._teacher_fn(self.satisfaction_))
        result = train_model(self.net_, examples, self._loss_fn(mtl=self.mtl), None,
                             self._train_config("update", epochs), self.rng_)
        self.results_.setdefault("updates", TrainResult([], 0, math.nan, False)).history.extend(result.history)
        self._cache_tables()

    # -- score ----------------------------------------------------------------------------------

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) ``logit(y_hat) + sat_weight * logit(s_f_hat)`` of each candidate (Eq. 14), with the
        user's live click, satisfied and dissatisfied histories from the feature store."""
        check_fitted(self)
        return self._serve(batch, self.tables_[0])

    def satisfaction_logits(self, batch: RankBatch) -> np.ndarray:
        """(B, C) ``logit(s_f_hat)``: the served model's satisfaction head (Eq. 14's second
        output, the one stage 3 trains on g's imputed satisfaction), whatever ``sat_weight``."""
        check_fitted(self)
        return self._serve(batch, self.sat_table_)

    def _serve(self, batch: RankBatch, table: torch.Tensor) -> np.ndarray:
        """(B, C) ``[u_f, 1] . table[candidate]`` with the users' live histories."""
        cands = np.asarray(batch.candidates)
        users = np.asarray(batch.user_ids, dtype=np.int64)
        check_ids(cands, self.n_items_)
        check_ids(users, self.n_users_, "user id", "user table")
        store = batch.features
        e = self.encoder
        cap = getattr(store, "history_length", e.max_len)
        hist = {name: store.history(name, users, min(length, cap))[0] for name, length in (
            ("clicks", e.max_len), ("satisfied", e.max_len_satisfied), ("dissatisfied", e.max_len_dissatisfied))}
        _, user_part, item_part = self.tables_
        device = self.device_
        users_t = to_device(users, device)                                       # (B,)
        clicks = to_device(to_model_ids(hist["clicks"]), device)                # (B, L)
        with torch.inference_mode():
            s = None
            if self.mlse:   # g's scores of the clicked items, from the cached first layer
                s = torch.sigmoid(self.satisfaction_.from_tables(user_part[users_t][:, None], item_part[clicks],
                                                                 users_t[:, None], clicks))                # (B, L)
            u = self.net_(clicks, users_t, sat=to_device(to_model_ids(hist["satisfied"]), device),
                          dis=to_device(to_model_ids(hist["dissatisfied"]), device), scores=s,
                          last_only=True)                                        # (B, d)
            ids = to_device(to_model_ids(cands), device)                         # (B, C)
            u = F.pad(u, (0, 1), value=1.0)                                      # (B, d + 1): [u_f, 1]
            scores = torch.bmm(table[ids], u.unsqueeze(-1)).squeeze(-1)        # (B, C)
        return to_host(scores).astype(np.float64)

    # -- configs of the networks and the training stages ---------------------------------------------

    def _net_config(self, n_items: int, n_users: int, side_sizes: tuple[int, ...]) -> NetConfig:
        """The main network's shape: the ``encoder`` group (less ``item_features``, whose sizes are
        ``side_sizes``), the catalogue and the SID / MLSE switches."""
        shape = {f.name: getattr(self.encoder, f.name) for f in fields(self.encoder) if f.name != "item_features"}
        return NetConfig(n_items=n_items, n_users=n_users, side_sizes=side_sizes, sid=self.sid, mlse=self.mlse,
                         **shape)

    def _train_config(self, stage: str, epochs: int | None = None) -> TrainConfig:
        """The training settings of ``stage``: "pretrain" (stage 0), "propensity" (1),
        "satisfaction" (2), "main" (3; patience ``train.patience + alignment.n_mix``, so early
        stopping cannot end training before label correction has run for ``patience`` epochs) or
        "update" (``epochs`` passes, no early stopping). Every stage uses ``train.weight_decay``."""
        t, a = self.train, self.aux
        max_epochs, patience, batch_size, lr = {
            "pretrain": lambda: (t.pretrain_epochs, t.patience, t.batch_size, t.lr),
            "propensity": lambda: (a.epochs, AUX_PATIENCE, a.propensity_batch_size, a.lr),
            "satisfaction": lambda: (a.epochs, AUX_PATIENCE, a.satisfaction_batch_size, a.lr),
            "main": lambda: (t.max_epochs, t.patience + self.alignment.n_mix, t.batch_size, t.lr),
            "update": lambda: (epochs, epochs, t.batch_size, t.lr),
        }[stage]()
        return TrainConfig(batch_size=batch_size, lr=lr, weight_decay=t.weight_decay, max_epochs=max_epochs,
                           patience=patience, progress=self.progress, desc=STAGE_DESC[stage])

    # -- stages 1 and 2 -------------------------------------------------------------------------

    def _fit_pairs(self, model: PairMLP, pairs: Pairs, rng: np.random.Generator, stage: str,
                   ips: bool) -> TrainResult:
        """Stage 1 (BCE, Eq. 5) or stage 2 (Eq. 6 with ``ips``, else Eq. 3) on (user, item) rows.

        The last layer starts at zero and its bias at the logit of the (IPS-weighted) mean label,
        so epoch 0 is the best constant model and training has to beat it on the held-out rows;
        early stopping uses the self-normalised weighted loss there (sum w l / sum w,
        w = 1 / max(o_hat, M)), the lower-variance form of the same objective.
        """
        n = len(pairs.users)
        n_val = int(round(self.aux.valid_share * n)) if n >= 20 else 0
        perm = rng.permutation(n)
        fit_rows, val_rows = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        weight = (1.0 / pairs.propensity) if ips and pairs.propensity is not None else np.ones(n, np.float32)
        mean = float(np.sum(weight[fit_rows] * pairs.labels[fit_rows]) / max(np.sum(weight[fit_rows]), 1e-12))
        with torch.no_grad():   # epoch 0 = the constant model: zero last layer, bias at the mean
            model.head[-1].weight.zero_()
            model.head[-1].bias.fill_(math.log(max(mean, 1e-4) / max(1.0 - mean, 1e-4)))

        def take(rows: np.ndarray) -> Pairs:
            return Pairs(pairs.users[rows], pairs.items[rows], pairs.labels[rows],
                         None if pairs.propensity is None else pairs.propensity[rows])

        def loss(m: PairMLP, b: Pairs) -> torch.Tensor:
            return ips_bce(m(b.users, b.items), b.labels, b.propensity if ips else None, self.clip_)

        evaluate = None
        if n_val:
            v = take(val_rows)
            device = module_device(model)
            vu, vi, vl = (to_device(a, device) for a in (v.users, v.items, v.labels))
            vw = to_device(weight[val_rows].astype(np.float32), device)

            def evaluate(m: PairMLP) -> float:
                bce = F.binary_cross_entropy_with_logits(m(vu, vi), vl, reduction="none")
                return -float((vw * bce).sum() / vw.sum())
        fit_part = take(fit_rows)
        return train_model(model, lambda r: fit_part, loss, evaluate, self._train_config(stage), rng)

    def _diagnose(self, n_answered: int) -> None:
        """Record (``diagnostics_``) and warn where stage 1 or 2 kept its constant epoch-0 model:
        then MLSE ties every item and the pseudo labels are one value (g), or IPS is the naive
        loss (rho), and the variants that differ there compare noise."""
        d = self.diagnostics_
        d["answered_rows"] = int(n_answered)
        sat = self.results_.get("satisfaction")
        d["constant_satisfaction"] = sat is None or sat.best_epoch == 0
        prop = self.results_.get("propensity")
        d["constant_propensity"] = prop is not None and prop.best_epoch == 0
        if not self.reads_answers:      # the click-only twin: g is unused, nothing to warn about
            return
        if d["constant_satisfaction"]:
            why = "no answered satisfaction questionnaire" if sat is None else \
                f"no epoch beat it on the held-out answers, best epoch 0 of {n_answered} answered rows"
            warnings.warn(f"SAQRec: the satisfaction model g is a constant ({why}); MLSE ties every item and "
                          "the pseudo labels are one value, so the policy is close to its click model "
                          "(diagnostics_['constant_satisfaction'])", stacklevel=4)
        if d["constant_propensity"]:
            warnings.warn("SAQRec: the propensity model rho is a constant (best epoch 0): the IPS loss equals "
                          "the naive loss up to scale (diagnostics_['constant_propensity'])", stacklevel=4)

    @staticmethod
    def _teacher_fn(g: PairMLP) -> Teacher:
        """``(users (n,), model ids (n, ...)) -> s_hat`` float32 numpy, no gradient."""
        return g.predict

    # -- stages 0 and 3 -------------------------------------------------------------------------

    def _examples_fn(self, w: ClickWindows, data: PreparedLogs, n_items: int, exclude: np.ndarray,
                     teacher: Teacher | None) -> ExampleStream:
        """``make_epoch``: the click windows with this epoch's negatives (and, for the main model,
        the feedback windows, teacher scores and pseudo labels)."""
        e = self.encoder
        return ExampleStream(w, data, n_items, exclude, teacher, max_len=e.max_len,
                             max_len_satisfied=e.max_len_satisfied, max_len_dissatisfied=e.max_len_dissatisfied,
                             n_negatives=self.train.n_negatives, labels=self.mtl)

    def _loss_fn(self, mtl: bool):
        beta, n_mix = self.alignment.beta, self.alignment.n_mix

        def loss(net: SAQRecNet, b: Examples) -> torch.Tensor:
            """L_C (Eq. 15) + beta * L_S^final (Eq. 16-18), averaged over the valid positions."""
            u = net(b.inputs, b.users, sat=b.sat, sat_idx=b.sat_idx, dis=b.dis, dis_idx=b.dis_idx, scores=b.scores,
                    query=b.query)                                                  # (B, T, d)
            mask = ((b.targets > 0) & (b.query >= 0)).float()                      # (B, T)
            items = torch.cat([b.targets.unsqueeze(-1), b.negatives], dim=-1)       # (B, T, 1 + K)
            logits = net.click_logits(u, items)                                     # (B, T, 1 + K)
            labels = torch.zeros_like(logits)
            labels[..., 0] = 1.0
            n = mask.sum().clamp(min=1.0)
            lc = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(-1)   # (B, T)
            total = (lc * mask).sum() / n
            if mtl and beta > 0 and b.teacher is not None:
                sl = net.sat_logits(u, items)                                       # (B, T, 1 + K)
                valid = mask.bool().unsqueeze(-1).expand_as(sl)
                target, _ = satisfaction_labels(b.teacher, torch.sigmoid(sl).detach(), b.epoch, n_mix, valid)
                ls = F.binary_cross_entropy_with_logits(sl, target, reduction="none").sum(-1)   # (B, T)
                total = total + beta * (ls * mask).sum() / n
            return total
        return loss

    def _validation_inputs(self, data: PreparedLogs, valid, n_items: int, exclude: np.ndarray,
                           rng: np.random.Generator) -> dict | None:
        """Serving inputs at each held-out click (:func:`policies.saqrec.windows.validation_inputs`)."""
        e = self.encoder
        return validation_inputs(data, valid, n_items, exclude, rng, max_len=e.max_len,
                                 max_len_satisfied=e.max_len_satisfied, max_len_dissatisfied=e.max_len_dissatisfied,
                                 eval_negatives=self.train.eval_negatives)

    @staticmethod
    def _with_teacher(val: dict | None, teacher: Teacher) -> dict | None:
        if val is None:
            return None
        return {**val, "scores": teacher(val["users"], val["clicks"])}

    @staticmethod
    def _held_out_states(net: SAQRecNet, t: dict[str, torch.Tensor]):
        """Yield ``(rows, u_f)`` over the held-out targets in chunks: the serving path's user state
        (newest position only), (b, d)."""
        for s in range(0, len(t["users"]), 1024):
            sl = slice(s, s + 1024)
            yield sl, net(t["clicks"][sl], t["users"][sl], sat=t["sat"][sl], dis=t["dis"][sl],
                          scores=t["scores"][sl] if "scores" in t else None, last_only=True)

    def _evaluate_fn(self, val: dict | None):
        """NDCG@10 of the held-out clicks ranked by the click head with the serving path: stage 0's
        early-stopping metric (the click model)."""
        if val is None:
            return None
        t = {k: to_device(v, self.device_) for k, v in val.items()}

        def evaluate(net: SAQRecNet) -> float:
            scores = [net.click_logits(u, t["cands"][sl]) for sl, u in self._held_out_states(net, t)]  # (b, 1 + K)
            return sampled_metrics(torch.cat(scores), k=10)[1]
        return evaluate

    def _objective_fn(self, val: dict | None, teacher: Teacher):
        """Stage 3's early-stopping metric: minus the held-out value of the kind of objective it
        trains (Eq. 19, without the label mixing of Eq. 17): per candidate, the BCE of the click
        head (the held-out click against its ``eval_negatives`` sampled negatives, where training
        uses ``n_negatives``) plus ``beta`` times the BCE of the satisfaction head against g's
        imputed satisfaction (w/o MTL: the click term only). Why not click NDCG: the note."""
        if val is None:
            return None
        t = {k: to_device(v, self.device_) for k, v in val.items()}
        beta = self.alignment.beta
        use_sat = self.mtl and beta > 0
        s_hat = to_device(teacher(val["users"], val["cands"]), self.device_) if use_sat else None   # (n, 1 + K)
        labels = torch.zeros(t["cands"].shape, device=self.device_)
        labels[:, 0] = 1.0

        def evaluate(net: SAQRecNet) -> float:
            total = 0.0
            for sl, u in self._held_out_states(net, t):
                lc = F.binary_cross_entropy_with_logits(net.click_logits(u, t["cands"][sl]), labels[sl])
                total += float(lc) * len(u)
                if use_sat:
                    ls = F.binary_cross_entropy_with_logits(net.sat_logits(u, t["cands"][sl]), s_hat[sl])
                    total += beta * float(ls) * len(u)
            return -total / len(t["users"])                                     # higher is better
        return evaluate

    def _diagnose_main(self, val: dict | None) -> None:
        """Record the selected epoch and the held-out click NDCG@10 of the stage-0 and the served
        model (the early-stopping objective trades some click ranking for the satisfaction head),
        and warn when stage 3 kept its initial weights (the stage-0 click model, whose
        satisfaction head is untrained): then the policy serves the click model."""
        main = self.results_["main"]
        self.diagnostics_["main_best_epoch"] = main.best_epoch
        self.diagnostics_["pretrain_ndcg10"] = self.results_["pretrain"].best_metric
        if val is not None:
            self.net_.eval()
            with torch.no_grad():
                self.diagnostics_["main_ndcg10"] = self._evaluate_fn(val)(self.net_)
        if main.best_epoch == 0 and main.history:
            warnings.warn(f"SAQRec: no epoch of the main model (stage 3) beat the stage-0 click model on the "
                          f"held-out objective in {len(main.history)} epoch(s); it serves the click model with an "
                          "untrained satisfaction head (diagnostics_['main_best_epoch'] = 0)", stacklevel=4)

    def _cache_tables(self) -> None:
        with torch.inference_mode():
            e, es = self.net_.item_tables()                                      # (n_items + 1, d + 1) each
            table = e + self.sat_weight * es if self.sat_weight else e
            user_part, item_part = self.satisfaction_.tables()
        self.tables_ = (table, user_part, item_part)
        self.sat_table_ = es
