"""SINE's hyperparameter groups (frozen, checked when built) and the paper's rows (VARIANTS).

The groups follow the paper's Sec. 4: the SASRec backbone (``encoder``), the sub-interest layers
(``interests``, Eq. 3-11), the joint loss (``loss``, Eq. 16) and training with early stopping
(``train``). In a config: ``params = { encoder = { d_model = 16 }, train = { max_epochs = 1 } }``.
What each choice means: docs/notes/sine.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from policies.params import ParameterError, column_names, heads_divide
from simulator.checks import (check_choice, check_flag, check_int_at_least, check_interval, check_nonnegative,
                              check_positive, check_probability)

METRICS = ("gauc", "ndcg@10", "hr@10")
"""Validation metrics for early stopping (``train.metric``)."""


@dataclass(frozen=True)
class EncoderParams:
    """The SASRec backbone over the mixed sequence (Eq. 1, 6-10; :class:`~policies.encoders.EncoderConfig`).

    Attributes:
        max_len: longest mixed history read (capped at the feature store's history length), and
            the length of the training windows.
        d_model, n_layers, n_heads, dropout, pre_ln: the encoder's size and regularisation.
        item_features: item-table columns whose embeddings are added to the item-id embedding.
        item_bias: add a learned per-item score offset.
    """
    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    pre_ln: bool = True
    item_features: tuple[str, ...] = ("l1", "l2", "leaf")
    item_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("max_len", "d_model", "n_layers", "n_heads"):
            check_int_at_least(name, getattr(self, name), 1)
        heads_divide(self.d_model, self.n_heads)
        check_probability("dropout", self.dropout, open_right=True)
        check_flag("pre_ln", self.pre_ln)
        check_flag("item_bias", self.item_bias)
        object.__setattr__(self, "item_features", column_names("item_features", self.item_features))  # a TOML list


@dataclass(frozen=True)
class InterestParams:
    """The sub-interest layers (Eq. 3-11).

    Attributes:
        n_interests: K prototypes / user sub-interests (1: no sub-interest layers, the SASRec
            encoder on the mixed sequence, trained with BPR + L2).
        beta: initial ``beta_1`` of Eq. 8, in (0, 1); ``beta_2 = 1 - beta_1``.
        learn_beta: learn ``beta_1`` (else it stays ``beta``).
    """
    n_interests: int = 4
    beta: float = 0.7
    learn_beta: bool = True

    def __post_init__(self) -> None:
        check_int_at_least("n_interests", self.n_interests, 1)
        check_interval("beta", self.beta, 0, 1, open_left=True, open_right=True)
        check_flag("learn_beta", self.learn_beta)


@dataclass(frozen=True)
class LossParams:
    """The joint loss, Eq. 16: ``lambda1 L1 + lambda2 L2 + lambda3 L_dis``.

    Attributes:
        lambda1: weight of L1, BPR of the next click against a sampled negative.
        lambda2: weight of L2, BPR of a click against the observed skip before it (0 without
            negative feedback).
        lambda3: weight of L_dis, the prototypes' mean distance correlation.
    """
    lambda1: float = 0.5
    lambda2: float = 0.4
    lambda3: float = 0.1

    def __post_init__(self) -> None:
        for name in ("lambda1", "lambda2", "lambda3"):
            check_nonnegative(name, getattr(self, name))
        if not self.lambda1 + self.lambda2 > 0:
            raise ParameterError(f"lambda1={self.lambda1} and lambda2={self.lambda2} must not both be 0 "
                                 "(nothing would be learned about the items)")


@dataclass(frozen=True)
class TrainParams:
    """Training (:class:`~policies.train.TrainConfig`), its windows and early stopping.

    Attributes:
        batch_size, lr, weight_decay, max_epochs, patience: Adam mini-batches and early stopping.
        window_stride: None trains on the targets whose history is in each user's newest
            window of ``encoder.max_len`` events; an int adds windows ending every
            ``window_stride`` events earlier, so that (for ``window_stride <= max_len``) every
            event after a user's first page is a target once
            (:func:`~policies.sine.windows.mixed_windows`).
        metric: validation metric for early stopping: "gauc", each user's last click against the
            skips after their penultimate click (the authors' protocol; "ndcg@10" if no user has
            such a skip); "ndcg@10" / "hr@10", the last click against ``eval_negatives`` sampled
            items (SASRec's).
        eval_negatives: sampled negatives per validation target ("ndcg@10", "hr@10").
    """
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 10
    patience: int = 3
    window_stride: int | None = 50
    metric: str = "gauc"
    eval_negatives: int = 99

    def __post_init__(self) -> None:
        check_int_at_least("batch_size", self.batch_size, 1)
        check_positive("lr", self.lr)
        check_nonnegative("weight_decay", self.weight_decay)
        check_int_at_least("max_epochs", self.max_epochs, 1)
        check_int_at_least("patience", self.patience, 1)
        if self.window_stride is not None:
            check_int_at_least("window_stride", self.window_stride, 1)
        check_choice("metric", self.metric, METRICS)
        check_int_at_least("eval_negatives", self.eval_negatives, 1)


VARIANTS: dict[str, dict] = {
    "SINE": {},
    "w/o AF": dict(adaptive_fusion=False),
    "w/o NF": dict(negative_feedback=False, loss=dict(lambda1=0.9, lambda2=0.0, lambda3=0.1)),
    **{f"K={k}": dict(interests=dict(n_interests=k)) for k in range(1, 11)},
    "K=1, w/o NF": dict(negative_feedback=False, interests=dict(n_interests=1),
                        loss=dict(lambda1=1.0, lambda2=0.0, lambda3=0.0)),
}
"""Table 4 and Fig. 4 rows: ``make_policy("sine", **VARIANTS[row])`` (docs/notes/sine.md)."""
