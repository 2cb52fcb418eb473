"""SAQRec's hyperparameter groups, one per part of the paper, each checked when it is built.

In a config: ``params = { encoder = { d_model = 16 }, train = { max_epochs = 1 } }``; the policy
(:class:`policies.saqrec.policy.SAQRec`) turns each table into its group with
:func:`policies.params.nested`. The choices behind the defaults are in ``docs/notes/saqrec.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

from policies.params import column_names, heads_divide
from simulator.checks import (check_flag, check_int_at_least, check_nonnegative, check_positive, check_probability,
                              check_sizes)

AUX_PATIENCE = 3
"""Early-stopping patience of stages 1 and 2 (rho and g)."""


@dataclass(frozen=True)
class EncoderParams:
    """The main network f (Sec. 4.3) and, through stage 0, the click model.

    Attributes:
        max_len, max_len_satisfied, max_len_dissatisfied: history lengths read (clicks,
            satisfied, dissatisfied; capped at the feature store's history length).
        d_model: embedding and hidden size d of the three transformers.
        n_layers: blocks of the click encoder (Trm_r).
        n_layers_feedback: blocks of the satisfied / dissatisfied encoders (Trm_s+, Trm_s-).
        n_heads: attention heads (must divide ``d_model``).
        dropout: of the encoders.
        user_dropout: dropout on the user embedding v_u in the fusion (Eq. 13).
        n_levels: N_I, the MLSE satisfaction levels (Eq. 11-12).
        item_features: item-table columns whose embeddings are added to the item-id embedding.
    """
    max_len: int = 50
    max_len_satisfied: int = 10
    max_len_dissatisfied: int = 5
    d_model: int = 64
    n_layers: int = 2
    n_layers_feedback: int = 1
    n_heads: int = 1
    dropout: float = 0.2
    user_dropout: float = 0.0
    n_levels: int = 9
    item_features: tuple[str, ...] = ("l1", "l2", "leaf")

    def __post_init__(self) -> None:
        for name in ("max_len", "max_len_satisfied", "max_len_dissatisfied", "d_model", "n_layers",
                     "n_layers_feedback", "n_heads", "n_levels"):
            check_int_at_least(name, getattr(self, name), 1)
        heads_divide(self.d_model, self.n_heads)
        check_probability("dropout", self.dropout, open_right=True)
        check_probability("user_dropout", self.user_dropout, open_right=True)
        object.__setattr__(self, "item_features", column_names("item_features", self.item_features))


@dataclass(frozen=True)
class TrainParams:
    """Training of the click model (stage 0), the main model (stage 3) and the online updates.

    Attributes:
        batch_size, lr: Adam's mini-batches and learning rate.
        weight_decay: Adam's L2 penalty, gamma of Eq. 19 (stages 1 and 2 use it too).
        max_epochs: at most this many epochs of stage 3.
        pretrain_epochs: at most this many epochs of stage 0.
        patience: early stopping of stage 0; stage 3 waits ``patience + alignment.n_mix`` epochs.
        n_negatives: sampled negatives per position (click loss, Eq. 15).
        eval_negatives: sampled negatives per held-out click (early stopping).
        window_stride: None: one click window per user (its newest ``max_len + 1`` clicks); an
            int adds windows ending that many clicks earlier, and so on (``max_len``: every click
            is a target once).
    """
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 20
    pretrain_epochs: int = 20
    patience: int = 3
    n_negatives: int = 1
    eval_negatives: int = 99
    window_stride: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_epochs", "pretrain_epochs", "patience", "n_negatives", "eval_negatives"):
            check_int_at_least(name, getattr(self, name), 1)
        check_positive("lr", self.lr)
        check_nonnegative("weight_decay", self.weight_decay)
        if self.window_stride is not None:
            check_int_at_least("window_stride", self.window_stride, 1)


@dataclass(frozen=True)
class AlignmentParams:
    """The satisfaction loss of stage 3 (Sec. 4.4, Eq. 15-19): g's pseudo labels with adaptive
    label correction.

    Attributes:
        beta: weight of the satisfaction loss (Eq. 19; the public code's ``weight_2``).
        n_mix: N_mix, the first epoch (counted from 1) with label correction (Eq. 17-18).
    """
    beta: float = 1.0
    n_mix: int = 3

    def __post_init__(self) -> None:
        check_nonnegative("beta", self.beta)
        check_int_at_least("n_mix", self.n_mix, 1)


@dataclass(frozen=True)
class AuxParams:
    """The auxiliary models of stages 1 and 2 (Sec. 4.2): the propensity model rho (Eq. 5) and
    the satisfaction model g (Eq. 1), MLPs over the click model's frozen embeddings.

    Attributes:
        hidden, dropout: hidden sizes and dropout of both MLPs.
        epochs, lr: their training (patience :data:`AUX_PATIENCE`).
        propensity_batch_size, satisfaction_batch_size: mini-batches of rho (every click row) and
            g (the few answered ones).
        valid_share: random share of the rows held out for early stopping.
        propensity_clip: M of Eq. 6 as a multiple of the mean observation rate of the clicks.
        satisfaction_biases: g also gets a trainable per-user and per-item logit offset, as rho
            has (not the paper's g).
    """
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    epochs: int = 20
    lr: float = 3e-3
    propensity_batch_size: int = 1024
    satisfaction_batch_size: int = 128
    valid_share: float = 0.2
    propensity_clip: float = 0.2
    satisfaction_biases: bool = False

    def __post_init__(self) -> None:
        check_sizes("hidden", self.hidden)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        check_probability("dropout", self.dropout, open_right=True)
        for name in ("epochs", "propensity_batch_size", "satisfaction_batch_size"):
            check_int_at_least(name, getattr(self, name), 1)
        check_positive("lr", self.lr)
        check_probability("valid_share", self.valid_share, open_right=True)
        check_positive("propensity_clip", self.propensity_clip)
        check_flag("satisfaction_biases", self.satisfaction_biases)


VARIANTS: dict[str, dict] = {
    "SAQRec": {},
    "w/o Unbiased": {"unbiased": False},
    "w/o SID": {"sid": False},
    "w/o MLSE": {"mlse": False},
    "w/o MTL": {"mtl": False},
}
"""The paper's ablation rows (Table 3) as ``make_policy("saqrec", **params)`` parameters."""

CLICK_ONLY: dict[str, bool] = {"sid": False, "mlse": False, "mtl": False}
"""SAQRec's click-only twin: the same network, data windows and training without SID, MLSE and
the satisfaction loss, so no questionnaire answer reaches it (stages 1-2 are skipped). The twin a
questionnaire effect is measured against: SASRec differs from it in its click backbone too."""
