"""EASQ's hyperparameter groups, one per part of the model (docs/notes/easq.md), each checked when built.

In a config they are tables of the policy's params, e.g. ``params = { encoder = { d_model = 16 },
train = { max_epochs = 1 }, align = { epochs = 1 } }``; a bad value raises
:class:`policies.params.ParameterError` naming it (``easq: train.lr=-1.0 must be > 0``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from policies.encoders import EncoderConfig
from policies.params import ParameterError, column_names, heads_divide
from simulator.checks import (check_flag, check_int_at_least, check_nonnegative, check_positive, check_probability,
                              is_finite_number)
from simulator.schema import SATISFIED_ANSWERS, SURVEY_ANSWERS


def weights(name: str, value: Any, n: int) -> tuple[float, ...]:
    """``value`` as ``n`` finite weights (a TOML list or a tuple)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != n:
        raise ParameterError(f"{name}={tuple(value) if isinstance(value, list) else value!r} must have {n} weights")
    if not all(is_finite_number(w) for w in value):
        raise ParameterError(f"{name}={tuple(value)!r} must be {n} finite numbers")
    return tuple(float(w) for w in value)


def names(name: str, value: Any, options: tuple[str, ...]) -> tuple[str, ...]:
    """``value`` as a tuple of strings from ``options`` (a TOML list or a tuple)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ParameterError(f"{name}={value!r} must be a list of names")
    for v in value:
        if v not in options:
            raise ParameterError(f"{name}={tuple(value)!r}: {v!r} is not one of {', '.join(map(repr, options))}")
    return tuple(value)


@dataclass(frozen=True)
class EncoderParams:
    """The backbone's causal transformer (:class:`policies.encoders.EncoderConfig`) and its items.

    Attributes:
        max_len: clicks of history read (capped by the feature store's history length).
        d_model, n_layers, n_heads, dropout: the encoder (n_heads divides d_model).
        item_features: item-table columns whose embeddings are added to the item-id embedding
            (checked against the item table in ``fit``).
    """
    max_len: int = 30
    d_model: int = 32
    n_layers: int = 1
    n_heads: int = 1
    dropout: float = 0.1
    item_features: tuple[str, ...] = ("l1", "l2", "leaf", "author_id")

    def __post_init__(self) -> None:
        for name in ("max_len", "d_model", "n_layers", "n_heads"):
            check_int_at_least(name, getattr(self, name), 1)
        heads_divide(self.d_model, self.n_heads)
        check_probability("dropout", self.dropout, open_right=True)
        object.__setattr__(self, "item_features", column_names("item_features", self.item_features))

    def config(self, n_items: int, side_sizes: tuple[int, ...]) -> EncoderConfig:
        """The encoder of a catalogue of ``n_items`` whose item features take ``side_sizes`` values."""
        shape = {k: v for k, v in asdict(self).items() if k != "item_features"}
        return EncoderConfig(n_items=n_items, side_sizes=side_sizes, **shape)


@dataclass(frozen=True)
class TrainParams:
    """The backbone's offline training: the dense multi-task loss, Eq. (1), on click windows.

    Attributes:
        task_weights: weights (>= 0) of the dense losses (effective view, watch fraction, like);
            the online multi-task steps use them too.
        impressions_per_window: impression slots sampled per click window and epoch.
        batch_size: click windows per mini-batch.
        lr, max_epochs, patience: Adam and early stopping on the held-out users' dense loss.
        valid_share: share of users held out for early stopping (none with fewer than 20 users).
    """
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    impressions_per_window: int = 64
    batch_size: int = 64
    lr: float = 2e-3
    max_epochs: int = 6
    patience: int = 1
    valid_share: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_weights", weights("task_weights", self.task_weights, 3))
        for i, w in enumerate(self.task_weights):
            check_nonnegative(f"task_weights[{i}]", w)
        for name in ("impressions_per_window", "batch_size", "max_epochs", "patience"):
            check_int_at_least(name, getattr(self, name), 1)
        check_positive("lr", self.lr)
        check_probability("valid_share", self.valid_share, open_right=True)


@dataclass(frozen=True)
class SatisfactionParams:
    """The satisfaction tower's offline BCE on answered questionnaires, Eq. (2) (side path off).

    Attributes:
        epochs: passes over the answers (0: the tower keeps its initial weights).
        lr: Adam learning rate. Its mini-batches are ``align.batch_size`` answers.
    """
    epochs: int = 20
    lr: float = 3e-3

    def __post_init__(self) -> None:
        check_int_at_least("epochs", self.epochs, 0)
        check_positive("lr", self.lr)


@dataclass(frozen=True)
class LoRAParams:
    """The side path ``(alpha / r) B A`` of the satisfaction tower (unused with ``use_lora=false``).

    Attributes:
        rank: rank r (>= 1 with ``use_lora``).
        alpha: scale numerator.
    """
    rank: int = 4
    alpha: float = 4.0

    def __post_init__(self) -> None:
        check_int_at_least("rank", self.rank, 0)
        check_positive("alpha", self.alpha)


@dataclass(frozen=True)
class AlignParams:
    """The questionnaire pairs and the offline alignment, Eq. (4) (w/o DPO: BCE on the answers).

    Attributes:
        beta: DPO inverse temperature.
        pair_window_s: the two questionnaire events of a pair are at most this far apart; the
            online buffer of recent events keeps this much.
        loser_answers: answers that make an item the rejected one of a pair (and label 0).
        unanswered_losers: shown-but-unanswered questionnaires are rejected items too.
        epochs, lr: offline alignment (Adam) on the training logs' pairs.
        batch_size: pairs (or answers) per mini-batch, offline and online; also the satisfaction
            tower's answers per mini-batch.
    """
    beta: float = 1.0
    pair_window_s: float = 86400.0
    loser_answers: tuple[str, ...] = ("neutral", "dislike", "unsuitable", "adults_only")
    unanswered_losers: bool = True
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_positive("beta", self.beta)
        check_positive("pair_window_s", self.pair_window_s)
        object.__setattr__(self, "loser_answers", names("loser_answers", self.loser_answers, SURVEY_ANSWERS))
        bad = [a for a in self.loser_answers if a in SATISFIED_ANSWERS]
        if bad:
            raise ParameterError(f"loser_answers={self.loser_answers} must not contain {bad}")
        check_flag("unanswered_losers", self.unanswered_losers)
        check_int_at_least("epochs", self.epochs, 0)
        check_positive("lr", self.lr)
        check_int_at_least("batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class UpdateParams:
    """The online steps of ``update()``: (a) multi-task on the new impressions, (b) alignment on the
    pairs with a new questionnaire event (their passes are the policy's ``update_epochs``).

    Attributes:
        lr: Adam learning rate of (a), the persistent Adam (w/o LoRA: of (b) too).
        align_lr: SGD learning rate of (b) on the side path, per pair (w/o DPO: per answer); the
            loss is summed over the examples, so a round's step grows with them.
        dense_samples: new impressions in one (a) step at most (0: no (a) step).
        max_grad_norm: cap on the norm of (b)'s summed gradient (None: no cap); it keeps SGD
            stable in rounds with many pairs (the summed loss's curvature grows with them).
        ref_refresh: updates between refreshes of the reference snapshot (w/o LoRA only; 0 =
            never refreshed).
    """
    lr: float = 1e-3
    align_lr: float = 0.3
    dense_samples: int = 2048
    max_grad_norm: float | None = 5.0
    ref_refresh: int = 24

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_positive("align_lr", self.align_lr)
        check_int_at_least("dense_samples", self.dense_samples, 0)
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)
        check_int_at_least("ref_refresh", self.ref_refresh, 0)
