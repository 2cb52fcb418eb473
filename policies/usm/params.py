"""USM's hyperparameters: the groups the policy holds (``network``, ``train``, ``submit``, ``distill``),
Eq. 3's default weights and the variants of the paper's tables.

In a config: ``params = { distillation = true, network = { hidden = [32, 16, 8] }, train = {
max_epochs = 2 } }``. Every value is checked when the policy is built (:mod:`policies.params`).
Design: docs/notes/usm.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.params import ParameterError
from policies.train import TrainConfig
from policies.usm.examples import SURVEY_HEADS, pseudo_label_mask
from policies.usm.model import NetConfig
from simulator.checks import (check_choice, check_finite, check_flag, check_int_at_least, check_interval,
                              check_nonnegative, check_positive, check_probability, check_sizes)

DEFAULT_WEIGHTS: dict[str, float] = {
    "effective_view": 1.0, "like": 2.0, "share": 2.0,            # other_s (Eq. 3)
    "dislike": -1.0, "inappropriate": -2.0, "sexual": -1.0, "violent": -1.0, "spam": -1.0}
"""Eq. 3 weights: positive for engagement heads, negative for dissatisfaction / issue heads."""


def eq3_weights(weights: Any) -> dict[str, float]:
    """The Eq. 3 weight of every head: ``weights`` (head name -> weight) merged over
    :data:`DEFAULT_WEIGHTS`; a ConfigError for an unknown head or a weight that is no finite number."""
    if not isinstance(weights, Mapping):
        raise ParameterError(f"weights={weights!r} must be a mapping of head name to weight")
    unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise ParameterError(f"weights has unknown head(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(DEFAULT_WEIGHTS)}")
    for head, value in weights.items():
        check_finite(f"weights.{head}", value)
    return {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.items()}}


# ----------------------------------------------------------------------------- the network (Fig. 3)
@dataclass(frozen=True)
class NetworkParams:
    """The network of every USM model (:class:`NetConfig`; Fig. 3) and its inputs.

    Attributes:
        d_emb: embedding size of every id and category.
        hidden: backbone FC layer sizes (the paper's 512, 256, 128; smaller here for the CPU budget).
        head_hidden: hidden sizes of each head's tower before its output unit (the paper's 64, 16).
        lhuc_dim: embedding size of the ids that feed the LHUC gates.
        se_groups, se_reduction: the squeeze-and-excitation block's channels (``hidden[-1]`` must
            be divisible by ``se_groups``) and the reduction of its bottleneck.
        dropout: after each backbone layer.
        history_length: click / skip history window of the dense features (capped at serving by
            the feature store's length).
    """
    d_emb: int = 16
    hidden: tuple[int, ...] = (128, 64, 32)
    head_hidden: tuple[int, ...] = (16, 8)
    lhuc_dim: int = 8
    se_groups: int = 8
    se_reduction: int = 2
    dropout: float = 0.1
    history_length: int = 50

    def __post_init__(self) -> None:
        check_int_at_least("d_emb", self.d_emb, 1)
        check_sizes("hidden", self.hidden)
        check_sizes("head_hidden", self.head_hidden, allow_empty=True)
        for name in ("lhuc_dim", "se_groups", "se_reduction", "history_length"):
            check_int_at_least(name, getattr(self, name), 1)
        check_probability("dropout", self.dropout, open_right=True)
        object.__setattr__(self, "hidden", tuple(self.hidden))          # a TOML list
        object.__setattr__(self, "head_hidden", tuple(self.head_hidden))

    def net_config(self, *, vocab: dict[str, Any], n_dense: int, heads: tuple[str, ...], lhuc: bool, se: bool,
                   id_dropout: float) -> NetConfig:
        """The :class:`NetConfig` of one model: ``vocab`` (n_users, n_items, n_authors, n_cats) from
        the catalogue, its dense width and heads, the policy's switches and the id dropout of its size."""
        return NetConfig(**vocab, n_dense=n_dense, heads=heads, d_emb=self.d_emb, hidden=self.hidden,
                         head_hidden=self.head_hidden, lhuc=lhuc, lhuc_dim=self.lhuc_dim, se=se,
                         se_groups=self.se_groups, se_reduction=self.se_reduction, dropout=self.dropout,
                         id_dropout=id_dropout)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainParams:
    """Training of every USM model (:class:`policies.train.TrainConfig`).

    Two regularisation settings: the plain ones for the models trained on questionnaires only
    (submit, survey, teacher: a few thousand rows, which id embeddings memorise within a few
    epochs), ``*_large`` for those trained on impressions (engagement, student: tens of
    thousands of rows per epoch).

    Attributes:
        batch_size, lr, max_epochs: Adam's mini-batch, learning rate and epoch bound.
        weight_decay, patience, id_dropout: Adam's L2 penalty, the early-stopping patience and
            the id dropout (in training, each user / item / author id is replaced by "unknown"
            with this probability) of the models trained on questionnaires.
        weight_decay_large, patience_large, id_dropout_large: the same for those trained on impressions.
        valid_share: latest share of each model's rows (by time) held out for early stopping.
        epoch_rows: a smaller training set (the questionnaires) is repeated to at least this many
            rows per epoch, so that an epoch is a useful number of Adam steps.
        engagement_per_epoch: impressions drawn per epoch of the engagement model.
    """
    batch_size: int = 512
    lr: float = 2e-3
    max_epochs: int = 40
    weight_decay: float = 3e-3
    patience: int = 4
    id_dropout: float = 0.0
    weight_decay_large: float = 1e-4
    patience_large: int = 2
    id_dropout_large: float = 0.3
    valid_share: float = 0.15
    epoch_rows: int = 4096
    engagement_per_epoch: int = 60_000

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "patience", "patience_large", "epoch_rows", "engagement_per_epoch"):
            check_int_at_least(name, getattr(self, name), 1)
        check_positive("lr", self.lr)
        check_nonnegative("weight_decay", self.weight_decay)
        check_nonnegative("weight_decay_large", self.weight_decay_large)
        check_probability("id_dropout", self.id_dropout, open_right=True)
        check_probability("id_dropout_large", self.id_dropout_large, open_right=True)
        check_interval("valid_share", self.valid_share, 0, 0.5, open_right=True)

    def id_dropout_of(self, large: bool) -> float:
        return self.id_dropout_large if large else self.id_dropout

    def config(self, *, large: bool, desc: str, progress: bool) -> TrainConfig:
        """The :class:`TrainConfig` of a model's fit (``large``: trained on impressions)."""
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, max_epochs=self.max_epochs,
                           weight_decay=self.weight_decay_large if large else self.weight_decay,
                           patience=self.patience_large if large else self.patience, max_grad_norm=5.0,
                           progress=progress, desc=f"usm {desc}")

    def update_config(self, *, large: bool, epochs: int) -> TrainConfig:
        """The :class:`TrainConfig` of an online update: ``epochs`` passes, no early stopping."""
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, max_epochs=epochs, patience=epochs,
                           weight_decay=self.weight_decay_large if large else self.weight_decay, max_grad_norm=5.0,
                           progress=False, desc="usm update")


# ----------------------------------------------------------------------------- §3.2 survey-submit model
@dataclass(frozen=True)
class SubmitParams:
    """The survey-submit model and its IPW weights (§3.2, Eq. 4-6).

    Attributes:
        min_propensity: IPW clip in (0, 1]: a labelled sample weighs ``1 / max(P̂(submit | shown),
            min_propensity)``, at most ``1 / min_propensity``.
        posterior: the submit model also reads the posterior behaviour (it never serves).
    """
    min_propensity: float = 0.05
    posterior: bool = True

    def __post_init__(self) -> None:
        check_interval("min_propensity", self.min_propensity, 0, 1, open_left=True)
        check_flag("posterior", self.posterior)


# ----------------------------------------------------------------------------- §3.3 distillation
@dataclass(frozen=True)
class DistillParams:
    """Teacher, pseudo labels and student (§3.3, Eq. 7-9), used with ``distillation``.

    Attributes:
        debias_pseudo: train the teacher with the IPW weights (Table 3's last row); None: as
            ``response_debias``.
        tau_n, tau_p: Eq. 8 thresholds on the teacher's soft labels: a number for every head, a
            mapping from head name to threshold (other heads keep the default), or None: the band
            ``(b / tau_band, b * tau_band)`` around each head's labelled base rate ``b``.
        tau_band: width factor of the default band (>= 1; 1 keeps every pseudo label except
            those exactly at the base rate).
        alpha: Eq. 9 weight of the labelled CE relative to the pseudo-labelled CE (each a mean).
        pseudo_support: which impressions without a questionnaire get pseudo labels: ``"all"``
            (the paper's "all video exposures"), or ``"surveyable"``: those whose effective-view /
            skip outcome occurs among the shown questionnaires, where the teacher saw labels.
        max_pseudo: impressions given pseudo labels at most (a seeded sample).
        pseudo_per_epoch: pseudo-labelled rows drawn per student epoch.
    """
    debias_pseudo: bool | None = None
    tau_n: float | Mapping[str, float] | None = None
    tau_p: float | Mapping[str, float] | None = None
    tau_band: float = 2.0
    alpha: float = 1.0
    pseudo_support: str = "surveyable"
    max_pseudo: int = 300_000
    pseudo_per_epoch: int = 60_000

    def __post_init__(self) -> None:
        if self.debias_pseudo is not None:
            check_flag("debias_pseudo", self.debias_pseudo)
        for name in ("tau_n", "tau_p"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                unknown = sorted(set(value) - set(SURVEY_HEADS))
                if unknown:
                    raise ParameterError(f"{name} has unknown head(s) {', '.join(map(repr, unknown))}; "
                                         f"known: {', '.join(SURVEY_HEADS)}")
                for head, v in value.items():
                    check_probability(f"{name}.{head}", v)
            elif value is not None:
                check_probability(name, value)
        check_finite("tau_band", self.tau_band)
        if not self.tau_band >= 1.0:
            raise ParameterError(f"tau_band={self.tau_band!r} must be >= 1")
        check_nonnegative("alpha", self.alpha)
        check_choice("pseudo_support", self.pseudo_support, ("surveyable", "all"))
        check_int_at_least("max_pseudo", self.max_pseudo, 1)
        check_int_at_least("pseudo_per_epoch", self.pseudo_per_epoch, 1)
        try:           # the band around a base rate of 0.5 (the rates themselves are known at fit time)
            pseudo_label_mask(np.zeros((0, len(SURVEY_HEADS))), *self.thresholds(np.full(len(SURVEY_HEADS), 0.5)))
        except ValueError:
            raise ParameterError(f"tau_n={self.tau_n!r}, tau_p={self.tau_p!r} must satisfy "
                                 "0 <= tau_n <= tau_p <= 1 for every head") from None

    def thresholds(self, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H,) tau_n and tau_p of every survey head; ``base`` (H,) is each head's labelled base
        rate, which sets the default band ``(base / tau_band, base * tau_band)``."""
        default = (base / self.tau_band, np.minimum(base * self.tau_band, 1.0))
        out = []
        for value, fallback in zip((self.tau_n, self.tau_p), default):
            if value is None:
                out.append(np.asarray(fallback, np.float64))
            elif isinstance(value, Mapping):
                out.append(np.array([float(value[h]) if h in value else fallback[k]
                                     for k, h in enumerate(SURVEY_HEADS)]))
            else:
                out.append(np.full(len(SURVEY_HEADS), float(value)))
        return out[0], out[1]


VARIANTS: dict[str, dict] = {
    "baseline": {},
    "response debias": {"response_debias": True},
    "distillation": {"distillation": True},
    "distillation + response debias": {"distillation": True, "response_debias": True},
    "engagement only": {"weights": {h: 0.0 for h in SURVEY_HEADS}},
    "w/o LHUC": {"lhuc": False},
    "w/o SE": {"se": False},
}
"""``make_policy("usm", **params)`` of the rows of USM Tables 1-3 (the first four), the online
control without the survey model ("engagement only": Eq. 3 with zero survey weights), and two
architecture ablations."""
