"""The USM policy (Yu et al., 2024): four small networks fitted on observable logs, fused by Eq. 3.

``fit``: 1. the survey-submit model (§3.2) and the IPW weights of the answered questionnaires;
2. the engagement heads; 3. the in-feed survey model on the answered questionnaires, or with
``distillation`` a teacher -> pseudo labels -> student (§3.3). ``score``: Eq. 3 over the heads.
Design, choices where the paper is silent, and measurements: docs/notes/usm.md.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
from scipy.special import logit

from policies.base import append_logs, check_fitted, check_ids, register_policy, resolve_update_epochs
from policies.data import check_observable
from policies.device import check_device_spec, resolve_device
from policies.params import ParameterError, nested
from policies.train import EpochRecord, build_module, train_model
from policies.usm.examples import (ENGAGEMENT_HEADS, REQUIRED, SUBMIT_HEADS, SURVEY_HEADS, Catalogue, Inputs, Rows,
                                   base_rate, ipw_weights, logged_inputs, posterior_features, pseudo_label_mask,
                                   serving_inputs, submit_history, survey_labels, time_split)
from policies.usm.model import HeldOutLoss, SurveyNet, data_loss, predict
from policies.usm.params import DistillParams, NetworkParams, SubmitParams, TrainParams, eq3_weights
from simulator.checks import ConfigError, check_choice, check_flag, check_int_at_least, check_temperature
from simulator.schema import LogData, RankBatch


@dataclass(frozen=True)
class _Logs:
    """What every model of a fit reads, aligned with the n training impressions."""
    imp: pd.DataFrame
    x: Inputs              # (n, D) serving-time inputs, as the feature store held them at each request
    post: np.ndarray       # (n, P) posterior behaviour (teacher, submit model)
    hist: np.ndarray       # (n, 3) the user's questionnaires before the request (submit model)
    ts: np.ndarray         # (n,) request time
    shown: np.ndarray      # (n,) bool, a questionnaire was shown
    labels: np.ndarray     # (n, H) survey-head labels
    lmask: np.ndarray      # (n, H) 1 where the row trains the head


@dataclass(frozen=True)
class _Labelled:
    """The m answered questionnaires of a fit."""
    idx: np.ndarray        # (m,) their rows in _Logs
    valid: np.ndarray      # (m,) bool, held out for early stopping (the latest)
    ipw: np.ndarray        # (m,) IPW weights, mean 1
    real: Rows             # (m,) the survey model's rows (IPW-weighted with response_debias)


@register_policy("usm", "USM (2024): multi-head in-feed survey model (LHUC, SE), survey-submit IPW, "
                        "pseudo-label distillation, fused with engagement heads (Eq. 3); deterministic")
@dataclass
class USM:
    """USM ranking policy (see docs/notes/usm.md). The hyperparameter groups are documented in
    :mod:`policies.usm.params`; in a config they are tables (``train = { max_epochs = 2 }``).

    Args:
        temperature: None ranks by the score (deterministic top-k).
        combine: what Eq. 3 weighs: ``"probability"`` (the paper: ``sum_i w_i p_i``) or
            ``"logit"`` (``sum_i w_i logit(p_i)``, which lets a rare head's relative changes
            count as much as a common head's).
        min_head_labels: a survey head enters Eq. 3 only if its training rows hold at least this
            many positive and this many negative labels. A head below it (e.g. no inappropriate
            answer in the pre-period) would rank with a tower that never saw a label; it gets
            weight 0, a warning names it and ``stats_["unestimable_heads"]`` records its counts,
            and with ``distillation`` it gets no pseudo labels.
        weights: Eq. 3 weights by head name, merged over :data:`DEFAULT_WEIGHTS`.
        response_debias: weight the labelled samples by ``1 / max(P̂(submit | shown),
            submit.min_propensity)`` in training and validation (§3.2).
        distillation: teacher with posterior features -> filtered soft pseudo labels -> student
            (§3.3; settings in ``distill``).
        lhuc, se: the LHUC gates and the squeeze-and-excitation block of Fig. 3 (ablations).
        network: :class:`NetworkParams`, the network of every model.
        train: :class:`TrainParams`, the training of every model.
        submit: :class:`SubmitParams`, the survey-submit model and IPW clip (§3.2).
        distill: :class:`DistillParams`, teacher, pseudo labels and student (§3.3).
        update_epochs: passes of :meth:`update` when the caller gives none (0: ``update`` does
            nothing; the A/B runner's ``learning = "update"`` passes its own).
        progress: tqdm bars while training.
        device: where the networks train and score (:mod:`policies.device`): "auto" (a CUDA GPU
            when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N".
    """
    temperature: float | None = None
    combine: str = "probability"
    min_head_labels: int = 10
    weights: dict = field(default_factory=dict)
    response_debias: bool = False
    distillation: bool = False
    lhuc: bool = True
    se: bool = True
    network: NetworkParams = field(default_factory=NetworkParams)
    train: TrainParams = field(default_factory=TrainParams)
    submit: SubmitParams = field(default_factory=SubmitParams)
    distill: DistillParams = field(default_factory=DistillParams)
    update_epochs: int = 0
    progress: bool = False
    device: str = "auto"
    # fitted state
    fitted_: bool = field(default=False, init=False)
    device_: torch.device = field(default=torch.device("cpu"), init=False, repr=False)
    train_: pd.DataFrame | None = field(default=None, init=False, repr=False)    # the logs seen so far
    estimable_: np.ndarray | None = field(default=None, init=False, repr=False)  # (H,) heads in Eq. 3
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    catalogue_: Catalogue | None = field(default=None, init=False, repr=False)
    submit_: SurveyNet | None = field(default=None, init=False, repr=False)
    engagement_: SurveyNet | None = field(default=None, init=False, repr=False)
    survey_: SurveyNet | None = field(default=None, init=False, repr=False)    # serves: survey model or student
    teacher_: SurveyNet | None = field(default=None, init=False, repr=False)
    weights_: dict = field(default_factory=dict, init=False, repr=False)
    history_: dict[str, list[EpochRecord]] = field(default_factory=dict, init=False, repr=False)
    stats_: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.network = nested("usm", "network", NetworkParams, self.network)
        self.train = nested("usm", "train", TrainParams, self.train)
        self.submit = nested("usm", "submit", SubmitParams, self.submit)
        self.distill = nested("usm", "distill", DistillParams, self.distill)
        try:
            check_temperature("temperature", self.temperature)
            check_choice("combine", self.combine, ("probability", "logit"))
            check_int_at_least("min_head_labels", self.min_head_labels, 1)
            eq3_weights(self.weights)
            for name in ("response_debias", "distillation", "lhuc", "se", "progress"):
                check_flag(name, getattr(self, name))
            check_int_at_least("update_epochs", self.update_epochs, 0)
            if self.se and self.network.hidden[-1] % self.network.se_groups:
                raise ParameterError(f"network.hidden[-1]={self.network.hidden[-1]} must be divisible by "
                                     f"network.se_groups={self.network.se_groups} (or se=false)")
        except ConfigError as err:
            raise ParameterError(f"usm: {err}") from None
        check_device_spec(self.device, "usm")

    # -- public API ------------------------------------------------------------------------------
    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Fit the submit, engagement and survey models (and the teacher) on observable logs.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, or fewer than two
                answered questionnaires.
        """
        check_observable(train, required=REQUIRED)
        weights = eq3_weights(self.weights)
        imp = train.impressions
        labels, lmask = survey_labels(imp)                                               # (n, H) each
        labelled = lmask.any(axis=1)
        if labelled.sum() < 2:
            raise ValueError(f"train has {int(labelled.sum())} answered questionnaire(s); USM needs at least 2")
        # independent streams: each component is the same whatever the switches
        r_submit, r_engage, r_survey = rng.spawn(3)
        self.catalogue_, self.history_, self.stats_ = Catalogue.from_logs(train), {}, {}
        self.device_ = resolve_device(self.device, "usm")
        logs = _Logs(imp, x=logged_inputs(imp, self.catalogue_, self.network.history_length),
                     post=posterior_features(imp), hist=submit_history(imp), ts=imp["ts"].to_numpy(np.float64),
                     shown=imp["survey_shown"].to_numpy(bool), labels=labels, lmask=lmask)

        # 1. survey-submit model on every shown questionnaire; IPW weights of the labelled rows (§3.2)
        self.submit_ = self._fit_submit(logs, r_submit)
        idx = np.flatnonzero(labelled)
        pscore = self._submit_pscore(imp.iloc[idx], logs.x.take(idx), logs.hist[idx], logs.post[idx])  # (m,)
        ipw = ipw_weights(pscore, self.submit.min_propensity)
        ipw /= ipw.mean()
        self.stats_.update(labelled=len(idx), shown=int(logs.shown.sum()),
                           ipw_max=round(float(ipw.max()), 3), pscore_mean=round(float(pscore.mean()), 4))

        # 2. engagement heads (other_s of Eq. 3); not fitted when Eq. 3 gives them all weight 0
        fit_engagement = any(weights[h] != 0.0 for h in ENGAGEMENT_HEADS)
        self.engagement_ = self._fit_engagement(logs, r_engage) if fit_engagement else None

        # 3. the survey model: on the labelled samples, or teacher -> pseudo labels -> student
        valid = time_split(logs.ts[idx], self.train.valid_share)                        # (m,)
        estimable = self._estimable_heads(labels[idx][~valid], lmask[idx][~valid], weights)  # (H,)
        weights = {h: (0.0 if h in SURVEY_HEADS and not estimable[SURVEY_HEADS.index(h)] else w)
                   for h, w in weights.items()}
        real = Rows.of(logs.x.take(idx), labels[idx], lmask[idx], ipw if self.response_debias else None)
        if self.distillation:
            self.survey_, self.teacher_ = self._fit_distilled(logs, _Labelled(idx, valid, ipw, real), estimable,
                                                              r_survey)
        else:
            self.survey_ = self._fit_net(real.take(np.flatnonzero(~valid)), real.take(np.flatnonzero(valid)),
                                         dense_pool=logs.x.dense, heads=SURVEY_HEADS, rng=r_survey, desc="survey")
            self.teacher_ = None
        self.weights_ = weights
        self.train_, self.estimable_ = imp, estimable
        self.rng_ = rng.spawn(1)[0]                      # online updates; the fit's draws are unchanged
        self.fitted_ = True
        return self

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning between serving rounds: ``epochs`` passes (default ``update_epochs``;
        0 does nothing) of the engagement model over the new impressions, and of the serving
        survey model (or student) over the new answered questionnaires, weighted by the fitted
        submit model's IPW with ``response_debias``. Features are point-in-time over every log
        seen so far. The submit model and the teacher stay fixed (no new pseudo labels), and the
        heads that were unestimable at fit time stay out of Eq. 3 and untrained."""
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, required=REQUIRED, where="new")
        start = len(self.train_)
        frame = append_logs(self.train_, new.impressions)
        self.train_ = frame
        fresh = np.arange(start, len(frame))
        x = logged_inputs(frame, self.catalogue_, self.network.history_length).take(fresh)  # (m, D)
        imp = frame.iloc[fresh]
        r_engage, r_survey = self.rng_.spawn(2)
        if self.engagement_ is not None:
            target = np.stack([imp[h].to_numpy(bool) for h in ENGAGEMENT_HEADS], axis=1).astype(np.float32)
            self._fine_tune(self.engagement_, Rows.of(x, target, np.ones_like(target)), epochs, r_engage, True)
        labels, lmask = survey_labels(imp)                                                 # (m, H) each
        lmask = lmask * self.estimable_[None, :]                    # unestimable heads stay untrained
        idx = np.flatnonzero(lmask.any(axis=1))
        if len(idx):
            weight = None
            if self.response_debias:
                sub = frame.iloc[start:]
                pscore = self._submit_pscore(sub.iloc[idx], x.take(idx), submit_history(frame)[start:][idx],
                                             posterior_features(sub.iloc[idx]))
                weight = ipw_weights(pscore, self.submit.min_propensity)
                weight = weight / weight.mean()              # as in fit: mean 1
            self._fine_tune(self.survey_, Rows.of(x.take(idx), labels[idx], lmask[idx], weight), epochs, r_survey,
                            self.distillation)

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) Eq. 3: ``sum_i w_i p(survey_i) + sum_j v_j p(engagement_j)`` (with
        ``combine="logit"``, each ``p`` replaced by its logit); heads of weight 0 are not computed."""
        return sum(self.terms(batch).values(), np.zeros(np.shape(batch.candidates), np.float64))

    def terms(self, batch: RankBatch) -> dict[str, np.ndarray]:
        """``{head: (B, C) w_h * p_h}`` (or ``w_h * logit(p_h)``): the terms of Eq. 3 that
        :meth:`score` adds, for every head of non-zero weight."""
        check_fitted(self)
        need = tuple(h for h, w in self.weights_.items() if w != 0.0)
        heads = self.predict_heads(batch.user_ids, batch.candidates, batch.features, heads=need)
        if self.combine == "logit":
            heads = {h: logit(np.clip(p, 1e-6, 1 - 1e-6)) for h, p in heads.items()}
        return {h: self.weights_[h] * heads[h] for h in need}

    def term_spread(self, batch: RankBatch) -> dict[str, float]:
        """``{head: mean over requests of the within-request sd of its Eq. 3 term}``: how much
        each term can reorder a page (a term that is constant within a request ranks nothing)."""
        return {h: float(t.std(axis=1).mean()) for h, t in self.terms(batch).items()}

    def predict_heads(self, users: np.ndarray, candidates: np.ndarray, store: Any,
                      heads: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Probabilities of the serving survey heads (student or survey model) and of the
        engagement heads for every (request, candidate) pair.

        Args:
            users: (B,) users.
            candidates: (B, C) item ids.
            store: the feature store (``RankBatch.features``).
            heads: heads to compute; default every one of :data:`SURVEY_HEADS` and
                :data:`ENGAGEMENT_HEADS`.

        Returns:
            ``{head: (B, C) float64}``; the engagement heads are missing if they were not fitted
            (all their Eq. 3 weights are 0).
        """
        check_fitted(self)
        cands = np.asarray(candidates)
        cat = self.catalogue_
        check_ids(cands, cat.n_items)
        users = np.asarray(users)
        check_ids(users, cat.n_users, "user id", "users")
        heads = SURVEY_HEADS + ENGAGEMENT_HEADS if heads is None else heads
        length = min(self.network.history_length, getattr(store, "history_length", self.network.history_length))
        x = serving_inputs(users, cands, store, cat, length)                             # (B * C, D)
        out: dict[str, np.ndarray] = {}
        for model in (self.survey_, self.engagement_):
            names = () if model is None else model.config.heads
            if any(h in names for h in heads):
                p = predict(model, x).astype(np.float64)                                  # (B * C, H)
                out.update({h: p[:, k].reshape(cands.shape) for k, h in enumerate(names) if h in heads})
        return out

    def submit_propensity(self, frame: pd.DataFrame) -> np.ndarray:
        """P̂(submit | shown) of every row of an observable impressions frame (NaN where no
        questionnaire was shown), usable as ``submit_pscore`` of Eq. 13
        (:func:`estimators.usm_debiased_rate`) and as IPW weights of :func:`labelled_metrics`.

        Point-in-time features are computed within ``frame``: pass the earlier logs along
        (e.g. train and test impressions concatenated) and select the rows wanted.
        """
        check_fitted(self)
        check_observable(LogData(frame, pd.DataFrame(), pd.DataFrame()), required=REQUIRED, where="frame",
                         allow_empty=True)
        out = np.full(len(frame), np.nan)
        rows = np.flatnonzero(frame["survey_shown"].to_numpy(bool))
        if len(rows):
            x = logged_inputs(frame, self.catalogue_, self.network.history_length).take(rows)
            out[rows] = self._submit_pscore(frame.iloc[rows], x, submit_history(frame)[rows],
                                            posterior_features(frame.iloc[rows]))
        return out

    # -- components ------------------------------------------------------------------------------
    def _fit_submit(self, logs: _Logs, rng: np.random.Generator) -> SurveyNet:
        """§3.2: P(submit | shown), one head per survey type, no LHUC."""
        idx = np.flatnonzero(logs.shown)
        stype = logs.imp["survey_type"].astype(object).to_numpy()[idx]
        mask = np.stack([stype == t for t in SUBMIT_HEADS], axis=1).astype(np.float32)      # (m, 2)
        target = mask * logs.imp["survey_submitted"].to_numpy(bool)[idx, None]
        xs = self._submit_inputs(logs.x.take(idx), logs.hist[idx], logs.post[idx])
        rows = Rows.of(xs, target, mask)
        valid = time_split(logs.ts[idx], self.train.valid_share)
        return self._fit_net(rows.take(np.flatnonzero(~valid)), rows.take(np.flatnonzero(valid)),
                             dense_pool=xs.dense, heads=SUBMIT_HEADS, rng=rng, desc="submit", lhuc=False)

    def _submit_inputs(self, x: Inputs, hist: np.ndarray, post: np.ndarray) -> Inputs:
        x = x.with_dense(hist)
        return x.with_dense(post) if self.submit.posterior else x

    def _submit_pscore(self, frame: pd.DataFrame, x: Inputs, hist: np.ndarray, post: np.ndarray) -> np.ndarray:
        """(m,) P̂(submit | shown) of shown rows: the head of each row's survey type."""
        p = predict(self.submit_, self._submit_inputs(x, hist, post))                     # (m, 2)
        col = (frame["survey_type"].astype(object).to_numpy() == SUBMIT_HEADS[1]).astype(np.int64)
        return p[np.arange(len(p)), col].astype(np.float64)

    def _fit_engagement(self, logs: _Logs, rng: np.random.Generator) -> SurveyNet:
        """Eq. 3's other heads (effective view, like, share) on impressions sampled per epoch."""
        target = np.stack([logs.imp[h].to_numpy(bool) for h in ENGAGEMENT_HEADS], axis=1).astype(np.float32)
        rows = Rows.of(logs.x, target, np.ones_like(target))
        valid = time_split(logs.ts, self.train.valid_share)
        pool, held = np.flatnonzero(~valid), np.flatnonzero(valid)
        held = held[np.sort(rng.permutation(len(held))[:20_000])]
        per_epoch = min(self.train.engagement_per_epoch, len(pool))

        def make_epoch(r: np.random.Generator) -> Rows:
            return rows.take(pool[r.choice(len(pool), per_epoch, replace=False)])

        return self._fit_net(make_epoch, rows.take(held), dense_pool=logs.x.dense, heads=ENGAGEMENT_HEADS, rng=rng,
                             desc="engagement", prior=target.mean(axis=0), large=True)

    def _fit_distilled(self, logs: _Logs, labelled: _Labelled, estimable: np.ndarray,
                       rng: np.random.Generator) -> tuple[SurveyNet, SurveyNet]:
        """§3.3: teacher (Eq. 7) -> soft pseudo labels filtered by Eq. 8 -> student on Eq. 9.

        Args:
            estimable: (H,) the survey heads that get pseudo labels.

        Returns:
            (student, teacher).
        """
        r_teacher, r_pool, r_student = rng.spawn(3)
        d = self.distill
        idx, valid = labelled.idx, labelled.valid
        debias_pseudo = self.response_debias if d.debias_pseudo is None else d.debias_pseudo
        xt = logs.x.with_dense(logs.post)                                                # (n, D + P)
        taught = Rows.of(xt.take(idx), logs.labels[idx], logs.lmask[idx], labelled.ipw if debias_pseudo else None)
        teacher = self._fit_net(taught.take(np.flatnonzero(~valid)), taught.take(np.flatnonzero(valid)),
                                dense_pool=xt.dense, heads=SURVEY_HEADS, rng=r_teacher, desc="teacher")
        # soft pseudo labels on impressions without a questionnaire (within the exposure support)
        candidate = ~logs.shown
        if d.pseudo_support == "surveyable":
            outcome = logs.imp["effective_view"].to_numpy(np.int64) * 2 + logs.imp["skip"].to_numpy(np.int64)
            candidate &= np.isin(outcome, np.unique(outcome[logs.shown]))
        unl = np.flatnonzero(candidate)
        if len(unl) > d.max_pseudo:
            unl = np.sort(r_pool.choice(unl, d.max_pseudo, replace=False))
        soft = predict(teacher, xt.take(unl))                                            # (u, H)
        tau_n, tau_p = d.thresholds(base_rate(taught))
        keep = pseudo_label_mask(soft, tau_n, tau_p) & estimable[None, :]                # (u, H) Eq. 8
        self.stats_.update(pseudo_candidates=len(unl), tau_n=tau_n.round(4).tolist(), tau_p=tau_p.round(4).tolist(),
                           pseudo_kept=keep.mean(axis=0).round(4).tolist())
        has = keep.any(axis=1)
        unl, soft, keep = unl[has], soft[has], keep[has]
        pseudo = Rows.of(logs.x.take(unl), soft * keep, keep)
        # Eq. 9 with each CE a mean over its stream: a labelled row weighs alpha * n_pseudo / n_real
        p_valid = time_split(logs.ts[unl], self.train.valid_share)
        p_pool, p_held = np.flatnonzero(~p_valid), np.flatnonzero(p_valid)
        p_held = p_held[np.sort(r_pool.permutation(len(p_held))[:20_000])]
        per_epoch = min(d.pseudo_per_epoch, len(p_pool))
        r_train, r_held = labelled.real.take(np.flatnonzero(~valid)), labelled.real.take(np.flatnonzero(valid))

        def scaled(part: Rows, n_pseudo: int) -> Rows:
            factor = d.alpha * n_pseudo / max(len(part), 1)
            return replace(part, weight=(part.weight * factor).astype(np.float32))

        r_train_s = scaled(r_train, per_epoch)
        held = Rows.concat([pseudo.take(p_held), scaled(r_held, len(p_held))]) if len(p_held) else r_held

        def make_epoch(r: np.random.Generator) -> Rows:
            if per_epoch == 0:        # every pseudo label fell in the uncertain band: labelled rows only
                return r_train
            return Rows.concat([pseudo.take(p_pool[r.choice(len(p_pool), per_epoch, replace=False)]), r_train_s])

        student = self._fit_net(make_epoch, held, dense_pool=logs.x.dense, heads=SURVEY_HEADS, rng=r_student,
                                desc="student", prior=base_rate(Rows.concat([pseudo, r_train])), large=True)
        return student, teacher

    def _fit_net(self, train: Rows | Callable[[np.random.Generator], Rows], valid: Rows, *, dense_pool: np.ndarray,
                 heads: tuple[str, ...], rng: np.random.Generator, desc: str, lhuc: bool | None = None,
                 prior: np.ndarray | None = None, large: bool = False) -> SurveyNet:
        """Build a SurveyNet (dense inputs standardised with ``dense_pool``'s statistics), train it.

        Args:
            train: the training rows, or ``make_epoch(rng)`` drawing each epoch's rows.
            valid: held-out rows for early stopping (none that train a head: every epoch runs).
            lhuc: LHUC gates (default: the policy's ``lhuc``).
            prior: (H,) base rates: each head's output bias starts at their logit (default:
                the weighted label mean of ``train`` when it is a fixed set).
            large: the regularisation of the models trained on impressions (``train.*_large``).
        """
        mean = dense_pool.mean(axis=0)
        std = dense_pool.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        if prior is None and not callable(train):
            prior = base_rate(train)
        config = self.network.net_config(vocab=self.catalogue_.vocab, n_dense=dense_pool.shape[1], heads=heads,
                                         lhuc=self.lhuc if lhuc is None else lhuc, se=self.se,
                                         id_dropout=self.train.id_dropout_of(large))
        model = build_module(lambda: SurveyNet(config, mean, std), rng, self.device_)
        if prior is not None:   # every head starts at its base rate: calibrated in the mean from step 0
            with torch.no_grad():
                for tower, rate in zip(model.heads, np.clip(prior, 1e-4, 1 - 1e-4)):
                    tower[-1].bias.fill_(float(np.log(rate / (1 - rate))))
        if callable(train):
            make_epoch = train
        else:   # a small set is repeated, so that an epoch has at least epoch_rows rows (Adam steps)
            reps = max(1, math.ceil(self.train.epoch_rows / max(len(train), 1)))
            fixed = Rows.concat([train] * reps) if reps > 1 else train

            def make_epoch(r: np.random.Generator) -> Rows:
                return fixed

        tc = self.train.config(large=large, desc=desc, progress=self.progress)
        result = train_model(model, make_epoch, data_loss, HeldOutLoss.of(valid), tc, rng)
        self.history_[desc] = result.history
        return model

    def _fine_tune(self, model: SurveyNet, rows: Rows, epochs: int, rng: np.random.Generator, large: bool) -> None:
        tc = self.train.update_config(large=large, epochs=epochs)
        result = train_model(model, lambda r: rows, data_loss, None, tc, rng)
        self.history_.setdefault("updates", []).extend(result.history)

    def _estimable_heads(self, labels: np.ndarray, mask: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
        """(H,) bool: survey heads with ``min_head_labels`` positive and negative training labels
        (``labels``, ``mask``: (m, H) of the training rows); warns naming the others that Eq. 3
        would weigh (a head of weight 0 ranks nothing either way)."""
        positives = (labels * mask).sum(axis=0)                                          # (H,)
        negatives = mask.sum(axis=0) - positives
        ok = (positives >= self.min_head_labels) & (negatives >= self.min_head_labels)
        dropped = {h: {"rows": int(mask[:, k].sum()), "positives": int(positives[k])}
                   for k, h in enumerate(SURVEY_HEADS) if not ok[k] and weights[h] != 0.0}
        self.stats_["unestimable_heads"] = dropped
        if dropped:
            named = ", ".join(f"{h} ({c['rows']} rows, {c['positives']} positive)" for h, c in dropped.items())
            warnings.warn(f"USM: survey head(s) {named} have fewer than min_head_labels={self.min_head_labels} "
                          "positive or negative training labels; they get weight 0 in Eq. 3 "
                          "(stats_['unestimable_heads'])", stacklevel=3)
        return ok
