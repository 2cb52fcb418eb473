"""SAQRec (Zhang et al., CIKM'24): aligning a sequential recommender to questionnaire satisfaction.

Algorithm 1, with every stage trained by :func:`policies.train.train_model`:

0. **Click model** (the "pre-trained recommendation model" of Sec. 4.2.2): the main network
   below with only ``[h_r, v_u]`` switched on in the fusion (the public code's ``Base``),
   trained on the next-click loss (Eq. 15). Its user and item embeddings are frozen into
   stages 1 and 2, and stage 3 continues from its weights.
1. **Propensity model** rho (Eq. 5): ``o_hat = P(o = 1 | u, i)`` with BCE on *every click row*
   of the training logs.
2. **Satisfaction model** g (Eq. 1): ``s_hat = g(u, i)``, an MLP over ``v_u (+) v_i`` whose
   embeddings are the click model's, frozen; trained on the answered rows with the clipped IPS
   loss (Eq. 4, 6) or, for "w/o Unbiased", the naive loss (Eq. 3).
3. **Main model** f: three causal transformers (:class:`policies.encoders.SequenceEncoder`,
   one shared item look-up table) over the click, satisfied and dissatisfied histories
   (Eq. 7-8); SID attention with the newest satisfied / dissatisfied state as query (Eq. 9-10);
   MLSE grouping of the clicked items into ``n_levels`` satisfaction levels by g's scores
   (Eq. 11-12); fusion of ``[u_s+, u_s-, h_r, u_MLSE, v_u]`` (Eq. 13); click and satisfaction
   heads (Eq. 14); loss ``L_C + beta * L_S^final`` (Eq. 15-19) with g's outputs as pseudo
   labels and adaptive label correction from epoch ``n_mix`` on (Eq. 17-18).

Serving (``score``): the live ``clicks``, ``satisfied`` and ``dissatisfied`` histories from the
feature store; only the newest position is computed (SID and MLSE for the last prefix only,
the feedback encoders with ``last_only``); item tables and g's first layer are cached. The score
is ``logit(y_hat) + sat_weight * logit(s_f_hat)`` = ``u_f . v_i + sat_weight * u_f . MLP_s(v_i)``,
i.e. the odds of a click times the odds of satisfaction to the power ``sat_weight``; the
default ``sat_weight = 0`` ranks by ``y_hat`` as the paper does.

Choices where the paper is silent or ambiguous (this simulator's conventions):

- **What "observed" means (Stage 1).** Here a questionnaire label exists only when a
  *satisfaction* questionnaire was shown **and** submitted; ``o = 1`` for exactly those click
  rows, so rho models the full observation probability ``P(shown and submitted | click, u, i)``
  over the population the satisfaction model is applied to (clicked items: MLSE scores the click
  history, the pseudo-labels are on next-click samples). Label ``s = 1`` for "like", 0 for
  "neutral" / "dislike". Inappropriate-content surveys are not satisfaction labels ("suitable"
  says nothing about satisfaction); their unsuitable / adults-only answers still enter the
  dissatisfied history, the feature store's convention, that SID reads.
- **rho's inputs.** Eq. 5 is a model over ``(u, i)``; the click model's embeddings (frozen, as
  in g) carry interest and popularity but nothing about a user's willingness to answer, so rho
  adds a trainable per-user and per-item logit offset (``BIAS_SCALE`` x a zero-initialised
  embedding, so Adam moves it by logits, not hundredths, per epoch): the per-user answer rate
  and per-item targeting that drive observation. A propensity of (u, i) can only correct
  selection that runs through (u, i) (Theorem 4.1's assumption): when the answer itself
  depends on the satisfaction (the simulator's ``response_bias``, missing not at random), IPS
  with any (u, i) propensity stays biased, as does the naive loss.
- **Stages 1-2 training.** The MLP's last layer starts at zero and its bias at the logit of the
  (IPS-weighted) mean label, so epoch 0 is the best constant model (what early stopping falls
  back to when the answers carry no learnable signal, e.g. on the default world); early stopping uses the self-normalised
  weighted loss on a random ``aux_valid_share`` of the rows (the same objective with less
  variance than Eq. 6's plain mean over few, heavily weighted rows). When g keeps the constant
  (best epoch 0, or no answered row at all) MLSE ties every item and the pseudo labels are one
  value, so SAQRec is its click model plus noise and "w/o Unbiased" compares a learned g with a
  constant one: ``diagnostics_["constant_satisfaction"]`` records it and :meth:`SAQRec.fit`
  warns (likewise ``"constant_propensity"`` for rho, which makes IPS the naive loss).
- **Stage 0 -> stage 3.** One network: in stage 0 the fusion softmax is restricted to
  ``[h_r, v_u]``; the satisfaction parts' inputs and outputs of ``MLP_f`` start at zero with
  logits ``FUSION_INIT_GAP`` below, so switching them on changes ``u_f`` by ~1% and stage 3
  starts from the click model's quality and keeps a change only where it helps
  (re-initialising the fusion made the main model's first epochs worse than the click model).
- **Stage 3's early stopping** watches the held-out value of the objective stage 3 trains
  (Eq. 19 per candidate: click BCE + ``beta`` x the satisfaction head's BCE against g), not click
  NDCG alone: on NDCG no stage-3 epoch usually beat the stage-0 model it starts from, so its
  weights were restored and the policy served an untrained satisfaction head (measured: within-
  user sd 0.064 of the satisfaction logit, correlation -0.009 with the oracle). The paper states
  early stopping but not its criterion. A stage 3 that still ends at epoch 0 warns
  (``diagnostics_["main_best_epoch"]``).
- **beta = 1** by default (the public code's ``weight_2``; the paper's Fig. 4(c) sweeps
  1e-5..1e-1). With beta = 0.1 the satisfaction head had not absorbed the teacher (AUC 0.57 vs
  g's 0.72 on the clickbait world of the tests) when early stopping ended training.
- **Clip M (Eq. 6)** is ``propensity_clip`` times the mean observation rate of the training
  clicks (the questionnaire rate is a simulator knob; a fixed M would mean different things in
  different worlds). ``max(o_hat, M)`` as in Eq. 6.
- **Embedding scale.** The frozen tables given to rho and g are divided by their RMS (a fixed
  scalar), so the MLPs see unit-scale inputs.
- **SID attention** (Eq. 9) is scaled by ``1 / sqrt(d)``; the MLPs of Eq. 10, 12, 13 are
  two-layer (hidden ``mix_hidden`` = 16: they output 2-9 weights, and a d-wide hidden layer
  over ``N_I * d`` inputs at every position cost a third of a training step) followed by a
  softmax, so every set of fusion weights sums to 1.
- **Empty satisfied / dissatisfied history** (most users: questionnaires are ~1% of views): the
  history state ``h_s+`` / ``h_s-`` is a learned "no answer yet" vector instead of the encoder
  output at a padding slot (the public code gathers index -1, i.e. a padded position).
- **Training sees what serving saw (the page rule).** The platform ranks a whole page from the
  feature store *before* the page's request and records the page's clicks and answers only
  after serving it. So every training and validation target is scored from the clicks of pages
  requested *before* the target's page (none of its own page, even those above it) and from the
  satisfied / dissatisfied answers of earlier pages only; events are ordered as the store
  records them (user, request time, ``request_id``, position; :func:`policies.data.page_order`). The main
  model trains on every position of a click window (SASRec style): the query of position t is
  the click state at the newest input column from an earlier page (``query``; the SID and MLSE
  keys are the columns up to it), and a target with no earlier-page click in its window gives
  no example (validation drops such held-out clicks). Future items never change earlier
  outputs, and the inputs of every example equal a feature store replayed request by request
  (both tested). The feedback encoders run once per window (its last target's page) and are
  gathered per position.
- **MLSE groups.** Valid (non-padding) items of the prefix sorted by score, descending; the
  item at rank r of n goes to level ``floor(r * n_levels / n)`` (sizes differ by at most one;
  with fewer items than levels some levels are empty and get weight 0 in Eq. 12). Items with
  *tied* scores (scores compared after rounding to 2^-16, so repeated clicks of one item tie
  exactly) share the ranks of their tie block: membership = fraction of the block's ranks that
  fall into each level. Memberships of every valid item sum to 1, padding has none, and the
  result does not depend on the order of the history (tested); without ties it is the paper's
  hard grouping. The public code's quantile grouping counts padding in the first group and
  merges tied items into one group, leaving others empty.
- **Pseudo labels** are applied to the target and to the sampled negatives of every position
  (as the public code does). Eq. 17's per-sample loss is min-max normalised over the
  mini-batch's valid samples; when it is constant (e.g. a batch of one) lambda = 1 (the
  teacher's label), where the public code divides by ~0. lambda = Beta(0.5, 0.5) CDF =
  ``(2 / pi) asin(sqrt(x))``. Epochs are counted from 1; mixing starts at epoch ``n_mix``.
- **No ``squeeze()`` on batch dimensions**, so a batch of one works (tested).
- **Regularisation gamma** (Eq. 19) is Adam's ``weight_decay``.

Ablations (:data:`VARIANTS`): "w/o Unbiased" (g trained with Eq. 3, no stage 1), "w/o SID"
(no satisfied / dissatisfied encoders, no ``u_s+``, ``u_s-``), "w/o MLSE" (no ``u_MLSE``),
"w/o MTL" (``L_C`` only).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import (NotFittedError, append_logs, check_fitted, check_ids, register_policy,
                           resolve_update_epochs)
from policies.data import (REQUIRED_COLUMNS, Sequences, check_observable,
                           holdout_last, item_side, n_items_of, next_item_windows, pad, page_order, page_starts,
                           positive_keys, sample_negatives, to_model_ids, user_sequences)
from policies.encoders import EncoderConfig, SequenceEncoder
from policies.train import TrainConfig, TrainResult, build_module, sampled_metrics, train_model
from simulator.schema import (PAD, SATISFACTION_ANSWERS, SATISFIED_ANSWERS, LogData,
                              RankBatch)

SAT_SURVEY = "satisfaction"
BIAS_SCALE = 3.0
"""rho's per-user / per-item logit offsets are this times a zero-initialised embedding."""
FUSION_INIT_GAP = 4.0
"""Initial fusion logit of the satisfaction parts below the click parts (see SAQRecNet)."""
TIE_RESOLUTION = 2.0 ** -16
"""MLSE compares satisfaction scores after rounding to this grid (so equal scores tie exactly)."""
SAQREC_COLUMNS = REQUIRED_COLUMNS + ("survey_type", "survey_submitted")

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


# ---------------------------------------------------------------------------------------------
# losses and pure functions (unit-tested against closed forms)

def ips_bce(logits: torch.Tensor, labels: torch.Tensor, propensity: torch.Tensor | None = None,
            clip: float = 0.0) -> torch.Tensor:
    """Satisfaction-model loss over the observed rows O.

    ``propensity=None``: the naive loss (Eq. 3), the mean BCE. Otherwise the clipped IPS loss
    (Eq. 6; Eq. 4 with ``clip=0``): ``mean(BCE / max(o_hat, M))``, so a row's weight is at most
    ``1 / M``.

    Args:
        logits: (n,) satisfaction logits ``logit(s_hat)``.
        labels: (n,) observed satisfaction in {0, 1}.
        propensity: (n,) estimated ``P(o = 1)`` of each row, or None.
        clip: M in [0, 1].
    """
    if not 0.0 <= clip <= 1.0:
        raise ValueError(f"clip={clip} must be in [0, 1]")
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")   # (n,)
    if propensity is None:
        return loss.mean()
    return (loss / propensity.clamp(min=clip)).mean()


def beta_half_cdf(x: torch.Tensor) -> torch.Tensor:
    """CDF of Beta(0.5, 0.5) (the arcsine distribution): ``(2 / pi) asin(sqrt(x))`` on [0, 1]."""
    return (2.0 / math.pi) * torch.asin(torch.sqrt(x.clamp(0.0, 1.0)))


def satisfaction_labels(teacher: torch.Tensor, student: torch.Tensor, epoch: int, n_mix: int,
                        valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo labels of the satisfaction head (Eq. 16-18).

    Before epoch ``n_mix`` the label is the teacher's ``s_hat`` (Eq. 16). From ``n_mix`` on it is
    ``s_mix = lambda * s_hat + (1 - lambda) * s_f_hat`` (Eq. 17) with ``lambda`` the Beta(0.5, 0.5)
    CDF of the per-sample loss ``BCE(s_f_hat, s_hat)`` min-max normalised over the ``valid``
    samples of the batch: a sample the student already fits (small loss) leans on the student.
    A constant loss (one sample, or all equal) gives lambda = 1.

    Args:
        teacher: (...) ``s_hat`` from the frozen satisfaction model, in [0, 1].
        student: (...) ``s_f_hat`` of the main model (detached), in [0, 1].
        epoch: current epoch, counted from 1.
        n_mix: first epoch with label correction (N_mix).
        valid: (...) bool, the samples that count (default all).

    Returns:
        (labels, lam), both shaped like ``teacher``; lam is 1 before ``n_mix``.
    """
    if epoch < n_mix:
        return teacher, torch.ones_like(teacher)
    valid = torch.ones_like(teacher, dtype=torch.bool) if valid is None else valid
    eps = 1e-7
    p = student.clamp(eps, 1.0 - eps)
    loss = -(teacher * torch.log(p) + (1.0 - teacher) * torch.log(1.0 - p))   # (...) Eq. 16 per sample
    if not bool(valid.any()):
        return teacher, torch.ones_like(teacher)
    lo, hi = loss[valid].min(), loss[valid].max()
    if float(hi - lo) <= 1e-8:
        lam = torch.ones_like(teacher)
    else:
        lam = beta_half_cdf((loss - lo) / (hi - lo))
    lam = torch.where(valid, lam, torch.ones_like(lam))
    return lam * teacher + (1.0 - lam) * student, lam


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the entries where ``mask`` is True; 0 elsewhere, and all 0 in a row with no
    allowed entry (never NaN)."""
    w = torch.softmax(logits.masked_fill(~mask, -1e9), dim=dim) * mask
    return w / w.sum(dim, keepdim=True).clamp(min=1e-30)


def mlse_membership(scores: torch.Tensor, valid: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Membership of every item in every satisfaction level (MLSE grouping, Sec. 4.3.3).

    For each query q (a prefix of the history, or the whole history), the items valid for it are
    sorted by satisfaction score (descending) and the item at rank r of n goes to level
    ``floor(r * n_levels / n)``. A block of items with tied scores (on the 2^-16 grid) spreads
    each item's membership over the levels its block's ranks fall into, so the result is
    invariant to the order of the history.

    Args:
        scores: (B, T) satisfaction scores of the history items.
        valid: (B, Q, T) bool, which items belong to query q (not padding, not in the future).
        n_levels: N_I.

    Returns:
        (B, Q, T, N_I) memberships in [0, 1]; each valid item's sum to 1, others are 0.
    """
    s = torch.round(scores / TIE_RESOLUTION)                                   # (B, T)
    v = valid.float()                                                          # (B, Q, T)
    above = (s[:, None, :] > s[:, :, None]).float()                            # (B, T_j, T_k): s_k > s_j
    tied = (s[:, None, :] == s[:, :, None]).float()
    a = (v @ above.transpose(1, 2)).unsqueeze(-1)                              # (B, Q, T, 1) valid items above j
    k = (v @ tied.transpose(1, 2)).unsqueeze(-1)                               # (B, Q, T, 1) its tie block (incl. j)
    n = v.sum(-1, keepdim=True).unsqueeze(-1)                                  # (B, Q, 1, 1)
    g = torch.arange(n_levels + 1, dtype=torch.float32, device=scores.device)  # level boundaries
    edges = torch.ceil(g * n / n_levels - 1e-4)                                # (B, Q, 1, N + 1) first rank of each level
    # ranks [a, a + k) of j's block intersected with [edges[g], edges[g + 1]) of level g; all
    # counts are small integers, exact in float32
    overlap = (torch.minimum(a + k, edges[..., 1:]) - torch.maximum(a, edges[..., :-1])).clamp(min=0.0)
    return overlap / k.clamp(min=1.0) * valid.unsqueeze(-1)                    # (B, Q, T, N)


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


# ---------------------------------------------------------------------------------------------
# stage 1 and 2 models

class PairMLP(nn.Module):
    """``MLP(v_u (+) v_i)`` over frozen pre-trained embeddings: the propensity model rho (Eq. 5,
    with ``biases``) and the satisfaction model g (Eq. 1). Returns logits.

    The first layer is split by input (``W [v_u; v_i] = W_u v_u + W_i v_i``), the same function,
    so serving can cache ``W_i v_i`` for every item.
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, hidden: tuple[int, ...],
                 dropout: float = 0.0, biases: bool = False):
        super().__init__()
        d = users.shape[1]
        self.user_emb = nn.Embedding.from_pretrained(users, freeze=True)      # (n_users, d) frozen
        self.item_emb = nn.Embedding.from_pretrained(items, freeze=True)      # (n_items + 1, d) frozen
        self.user_proj = nn.Linear(d, hidden[0])
        self.item_proj = nn.Linear(d, hidden[0], bias=False)
        layers: list[nn.Module] = []
        for h_in, h_out in zip(hidden, (*hidden[1:], 1)):
            layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(h_in, h_out)]
        self.head = nn.Sequential(*layers)
        self.user_bias = nn.Embedding(users.shape[0], 1) if biases else None
        self.item_bias = nn.Embedding(items.shape[0], 1) if biases else None
        for emb in (self.user_bias, self.item_bias):
            if emb is not None:
                nn.init.zeros_(emb.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(...) user ids and (...) item model ids -> (...) logits."""
        x = self.user_proj(self.user_emb(users)) + self.item_proj(self.item_emb(items))   # (..., h)
        out = self.head(x).squeeze(-1)                                          # (...)
        if self.user_bias is not None:
            # the offsets are BIAS_SCALE x an embedding: Adam's step (~lr per step) would otherwise
            # take hundreds of steps to move a per-user / per-item rate by a few logits
            out = out + BIAS_SCALE * (self.user_bias(users) + self.item_bias(items)).squeeze(-1)
        return out

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """First-layer pre-activations of every user (n_users, h) and item (n_items + 1, h)."""
        return self.user_proj(self.user_emb.weight), self.item_proj(self.item_emb.weight)

    def from_tables(self, user_part: torch.Tensor, item_part: torch.Tensor, users: torch.Tensor | None = None,
                    items: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from gathered first-layer parts (broadcastable to (..., h)), plus the offsets of
        ``users`` / ``items`` (ids broadcastable to the output) when the model has them."""
        out = self.head(user_part + item_part).squeeze(-1)
        if self.user_bias is not None:
            out = out + BIAS_SCALE * (self.user_bias(users) + self.item_bias(items)).squeeze(-1)
        return out


# ---------------------------------------------------------------------------------------------
# stage 0 and 3: the main network

@dataclass(frozen=True)
class NetConfig:
    """Shape of :class:`SAQRecNet` (stage 0 is the same network with ``sid = mlse = False``)."""
    n_items: int
    n_users: int
    max_len: int = 50
    max_len_satisfied: int = 10
    max_len_dissatisfied: int = 5
    d_model: int = 64
    n_layers: int = 2
    n_layers_feedback: int = 1
    n_heads: int = 1
    dropout: float = 0.2
    side_sizes: tuple[int, ...] = ()
    n_levels: int = 9
    mix_hidden: int = 16
    user_dropout: float = 0.0
    sid: bool = True
    mlse: bool = True

    @property
    def n_parts(self) -> int:
        """Vectors fused by Eq. 13."""
        return 2 + 2 * self.sid + self.mlse


class SAQRecNet(nn.Module):
    """The main model f (Sec. 4.3-4.4): user representation ``u_f`` and the two heads (Eq. 14)."""

    def __init__(self, config: NetConfig, item_side: torch.Tensor | None = None):
        super().__init__()
        c = config
        self.config = c
        d = c.d_model

        def encoder(max_len: int, n_layers: int) -> SequenceEncoder:
            return SequenceEncoder(EncoderConfig(n_items=c.n_items, max_len=max_len, d_model=d,
                                                 n_layers=n_layers, n_heads=c.n_heads, dropout=c.dropout,
                                                 side_sizes=c.side_sizes), item_side)

        self.clicks = encoder(c.max_len, c.n_layers)                          # Trm_r
        self.item_emb = self.clicks.item_emb                                  # one look-up table (Sec. 4.3.1)
        self.user_emb = nn.Embedding(c.n_users, d)                            # v_u
        nn.init.normal_(self.user_emb.weight, std=0.02)
        if c.sid:
            self.satisfied = encoder(c.max_len_satisfied, c.n_layers_feedback)        # Trm_s+
            self.dissatisfied = encoder(c.max_len_dissatisfied, c.n_layers_feedback)  # Trm_s-
            self.satisfied.item_emb = self.item_emb
            self.dissatisfied.item_emb = self.item_emb
            self.empty = nn.Parameter(torch.randn(2, d) * 0.02)              # h_s+ / h_s- of no answer yet
            self.mix_pos = _mlp(2 * d, 2, c.mix_hidden)                       # MLP_s+ (Eq. 10)
            self.mix_neg = _mlp(2 * d, 2, c.mix_hidden)                       # MLP_s-
        if c.mlse:
            self.levels = _mlp(c.n_levels * d, c.n_levels, c.mix_hidden)      # MLP_MLSE (Eq. 12)
        self.fusion = _mlp(c.n_parts * d, c.n_parts, c.mix_hidden)            # MLP_f (Eq. 13)
        self.sat_proj = _mlp(d, d + 1, d)                                     # MLP_s (Eq. 14), + an offset
        # the fusion starts as the click model's: the satisfaction parts' inputs and outputs of
        # MLP_f are zero and their logits -FUSION_INIT_GAP, so switching them on after stage 0
        # changes u_f by ~1%, and training grows them where they help
        self.click_only = False                                               # stage 0: [h_r, v_u] only
        new_parts = torch.tensor([n not in ("h_r", "v_u") for n in self._part_names()])
        self.register_buffer("new_parts", new_parts, persistent=False)       # (K,)
        with torch.no_grad():
            cols = new_parts.repeat_interleave(d)                             # (K d,)
            self.fusion[0].weight[:, cols] = 0.0
            self.fusion[2].weight[new_parts] = 0.0
            self.fusion[2].bias[new_parts] = -FUSION_INIT_GAP

    def _part_names(self) -> list[str]:
        c = self.config
        return [*(("u_s+", "u_s-") if c.sid else ()), "h_r", *(("u_MLSE",) if c.mlse else ()), "v_u"]

    def forward(self, clicks: torch.Tensor, users: torch.Tensor, sat: torch.Tensor | None = None,
                sat_idx: torch.Tensor | None = None, dis: torch.Tensor | None = None,
                dis_idx: torch.Tensor | None = None, scores: torch.Tensor | None = None, *,
                query: torch.Tensor | None = None, last_only: bool = False,
                weights: dict | None = None) -> torch.Tensor:
        """User representation ``u_f`` at every position of the click window, or the newest one.

        Args:
            clicks: (B, T) model ids of the click history (right-aligned, 0 = padding).
            users: (B,) user ids.
            sat, dis: (B, S), (B, D) model ids of the satisfied / dissatisfied histories.
            sat_idx, dis_idx: (B, T) index into ``sat`` / ``dis`` of the newest answer each
                position may see (-1: none). Ignored with ``last_only`` (the newest slot is used).
            scores: (B, T) satisfaction-model scores of the clicked items (MLSE).
            query: (B, T) the column of the newest click each position may see (its ``h_r``; the
                SID / MLSE keys are the columns up to it), -1: none (the output is then only
                ``v_u`` and the ``empty`` states, and training masks it out). Default: the
                position itself (``t``). Ignored with ``last_only`` (the newest column).
            last_only: compute only the newest position (serving); returns (B, d).
            weights: a dict to fill with the attention / fusion weights (for tests).

        Returns:
            (B, T, d), or (B, d) with ``last_only``.
        """
        c = self.config
        B, T = clicks.shape
        real = clicks > 0                                                     # (B, T)
        H = self.clicks(clicks)                                               # (B, T, d)  Eq. 7-8
        if last_only:
            h_r = H[:, -1:]                                                   # (B, 1, d)
            valid = real[:, None, :]                                          # (B, 1, T)
        else:
            cols = torch.arange(T, device=clicks.device)
            q = cols.expand(B, T) if query is None else query                 # (B, T)
            got = H.gather(1, q.clamp(min=0).unsqueeze(-1).expand(-1, -1, H.shape[-1]))   # (B, T, d)
            h_r = torch.where((q >= 0).unsqueeze(-1), got, torch.zeros_like(got))
            valid = (cols[None, None, :] <= q[:, :, None]) & real[:, None, :]  # (B, T, T) keys j <= q_t
        Q = h_r.shape[1]
        parts = []
        if c.sid and self.click_only:
            parts += [torch.zeros_like(h_r)] * 2
        elif c.sid:
            for k, (enc, seq, idx, mix, name) in enumerate((
                    (self.satisfied, sat, sat_idx, self.mix_pos, "pos"),
                    (self.dissatisfied, dis, dis_idx, self.mix_neg, "neg"))):
                h = self._history_state(enc, seq, idx, k, last_only)          # (B, Q, d)
                att = masked_softmax(h @ H.transpose(1, 2) / math.sqrt(c.d_model), valid)   # (B, Q, T) Eq. 9
                u_r = att @ H                                                 # (B, Q, d)
                mw = torch.softmax(mix(torch.cat([h, u_r], dim=-1)), dim=-1)  # (B, Q, 2)    Eq. 10
                parts.append(mw[..., :1] * h + mw[..., 1:] * u_r)            # (B, Q, d)
                if weights is not None:
                    weights[f"sid_{name}"], weights[f"mix_{name}"] = att, mw
        parts.append(h_r)
        if c.mlse:
            parts.append(torch.zeros_like(h_r) if self.click_only else self._mlse(H, valid, scores, weights))
        v_u = F.dropout(self.user_emb(users), c.user_dropout, self.training) * math.sqrt(c.d_model)   # (B, d)
        parts.append(v_u[:, None, :].expand(B, Q, -1))
        X = torch.stack(parts, dim=2)                                         # (B, Q, K, d)
        logits = self.fusion(X.flatten(2))                                    # (B, Q, K)
        if self.click_only:
            logits = logits.masked_fill(self.new_parts, float("-inf"))
        w = torch.softmax(logits, dim=-1)                                     # (B, Q, K)      Eq. 13
        if weights is not None:
            weights["fusion"] = w
        u = (w.unsqueeze(-1) * X).sum(2)                                      # (B, Q, d)
        return u[:, 0] if last_only else u

    def _history_state(self, enc: SequenceEncoder, seq: torch.Tensor, idx: torch.Tensor | None, k: int,
                       last_only: bool) -> torch.Tensor:
        """h_s+ / h_s- per query: the feedback encoder's state at the newest answer the query may
        see, or the learned "no answer yet" vector."""
        if last_only:
            h = enc(seq, last_only=True)                                      # (B, d)
            h = torch.where((seq[:, -1] > 0)[:, None], h, self.empty[k])
            return h[:, None]                                                 # (B, 1, d)
        Hs = enc(seq)                                                         # (B, S, d)
        got = Hs.gather(1, idx.clamp(min=0).unsqueeze(-1).expand(-1, -1, Hs.shape[-1]))   # (B, T, d)
        return torch.where((idx >= 0).unsqueeze(-1), got, self.empty[k])

    def _mlse(self, H: torch.Tensor, valid: torch.Tensor, scores: torch.Tensor,
              weights: dict | None) -> torch.Tensor:
        """u_MLSE (Eq. 11-12) for each query's valid items."""
        m = mlse_membership(scores, valid, self.config.n_levels)              # (B, Q, T, N)
        mass = m.transpose(2, 3) * torch.exp(scores)[:, None, None, :]        # (B, Q, N, T)
        total = mass.sum(-1, keepdim=True)                                    # (B, Q, N, 1)
        within = mass / total.clamp(min=1e-30)                                # (B, Q, N, T)   Eq. 11
        B, Q, N, T = within.shape
        levels = torch.bmm(within.reshape(B, Q * N, T), H).view(B, Q, N, -1)  # (B, Q, N, d)
        alpha = masked_softmax(self.levels(levels.flatten(2)), total.squeeze(-1) > 0)   # (B, Q, N) Eq. 12
        if weights is not None:
            weights["membership"], weights["mlse_within"], weights["mlse_levels"] = m, within, alpha
        return (alpha.unsqueeze(-1) * levels).sum(2)                          # (B, Q, d)

    def click_logits(self, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``logit(y_hat) = u_f . v_i`` (Eq. 14): (..., d), (..., C) -> (..., C)."""
        return (self.item_emb(ids) * u.unsqueeze(-2)).sum(-1)

    def sat_logits(self, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``logit(s_f_hat) = [u_f, 1] . MLP_s(v_i)`` (Eq. 14 with a constant 1 appended to u_f, so
        MLP_s can also express a user-independent satisfaction of the item): (..., d), (..., C)
        -> (..., C)."""
        p = self.sat_proj(self.item_emb(ids))                                 # (..., C, d + 1)
        return (p[..., :-1] * u.unsqueeze(-2)).sum(-1) + p[..., -1]

    def item_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[v_i, 0]`` and ``MLP_s(v_i)`` of every model id, (n_items + 1, d + 1) each: dotted with
        ``[u_f, 1]`` they give the click and satisfaction logits."""
        e = self.item_emb(torch.arange(self.config.n_items + 1))
        return F.pad(e, (0, 1)), self.sat_proj(e)


# ---------------------------------------------------------------------------------------------
# training examples

@dataclass(frozen=True)
class _Examples:
    """A mini-batchable set of click windows (arrays sliced by the training loop; None fields and
    ``epoch`` pass through)."""
    users: np.ndarray                  # (n,)
    inputs: np.ndarray                 # (n, T) model ids
    targets: np.ndarray                # (n, T) next click (0 = none)
    negatives: np.ndarray              # (n, T, K) sampled negatives
    query: np.ndarray                  # (n, T) column of the newest earlier-page click, -1 none
    sat: np.ndarray | None = None      # (n, S)
    sat_idx: np.ndarray | None = None  # (n, T)
    dis: np.ndarray | None = None      # (n, D)
    dis_idx: np.ndarray | None = None  # (n, T)
    scores: np.ndarray | None = None   # (n, T) float32 teacher scores of the inputs
    teacher: np.ndarray | None = None  # (n, T, 1 + K) float32 teacher labels of target + negatives
    epoch: int = 0


@dataclass(frozen=True)
class _Pairs:
    """(user, item) rows of stages 1 and 2."""
    users: np.ndarray                      # (n,)
    items: np.ndarray                      # (n,) model ids
    labels: np.ndarray                     # (n,) float32
    propensity: np.ndarray | None = None   # (n,) float32, clipped o_hat (stage 2, IPS)


@dataclass(frozen=True)
class _Prepared:
    """The training logs as the stages need them; every ``ts`` is the impression's rank in the
    order the feature store records impressions (:func:`policies.data.page_order`), so events of different
    histories compare exactly, and "recorded before the page of rank r was ranked" is
    ``ts < page_start[r]``."""
    clicks: Sequences
    satisfied: Sequences
    dissatisfied: Sequences
    page_start: np.ndarray       # (N,) rank of the first impression of each rank's page
    click_users: np.ndarray      # (N_c,) every click row
    click_items: np.ndarray      # (N_c,) item ids
    observed: np.ndarray         # (N_c,) bool, a satisfaction questionnaire was answered (o)
    satisfied_label: np.ndarray  # (N_c,) bool, the answer was "like" (s; meaningful where observed)


def _prepare(train: LogData) -> _Prepared:
    imp = train.impressions
    order, _ = page_order(imp)
    page_start = page_starts(imp["user_id"].to_numpy(np.int64)[order],
                             imp["request_id"].to_numpy(np.int64)[order])
    rank = np.empty(len(imp), np.float64)
    rank[order] = np.arange(len(imp), dtype=np.float64)
    slim = pd.DataFrame({c: imp[c].to_numpy() for c in REQUIRED_COLUMNS if c != "ts"})
    slim["ts"] = rank
    seqs = {k: user_sequences(slim, k) for k in ("clicks", "satisfied", "dissatisfied")}
    f = imp.iloc[order]
    ev = f["effective_view"].to_numpy(bool)
    answer = f["survey_answer"].astype(object).to_numpy()[ev]
    observed = ((f["survey_type"].astype(object).to_numpy()[ev] == SAT_SURVEY)
                & f["survey_submitted"].to_numpy(bool)[ev] & np.isin(answer, SATISFACTION_ANSWERS))
    return _Prepared(clicks=seqs["clicks"], satisfied=seqs["satisfied"], dissatisfied=seqs["dissatisfied"],
                     page_start=page_start,
                     click_users=f["user_id"].to_numpy(np.int64)[ev], click_items=f["item_id"].to_numpy(np.int64)[ev],
                     observed=observed, satisfied_label=observed & np.isin(answer, SATISFIED_ANSWERS))


def _before(seqs: Sequences, users: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(...) number of each user's events ranked before ``ranks`` (same shape as ``ranks``;
    ``users`` broadcast to it)."""
    users = np.broadcast_to(users, ranks.shape)
    rows = seqs.rows_of(users.ravel()).reshape(ranks.shape)
    r = np.maximum(rows, 0)
    start, stop = seqs.offsets[r], seqs.offsets[r + 1]
    # ranks are global and user-major, so the search over all events lands in the user's segment
    # for the user's own ranks; clipping makes any rank safe
    end = np.clip(np.searchsorted(seqs.ts, ranks, side="left"), start, stop)
    return np.where(rows >= 0, end - start, 0).astype(np.int64)


def _feedback_window(seqs: Sequences, users: np.ndarray, ranks: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``length`` events of each user ranked before ``ranks`` (n,), right-aligned with PAD
    (what the feature store would hold then), and how many events precede (n,)."""
    count = _before(seqs, users, ranks)                                       # (n,)
    rows = seqs.rows_of(users)
    start = np.where(rows >= 0, seqs.offsets[np.maximum(rows, 0)], 0)
    col = np.arange(length)[None, :]
    idx = (start + count)[:, None] - length + col                             # (n, L) event index
    ok = col >= length - np.minimum(count, length)[:, None]
    out = np.full((len(users), length), PAD, np.int64)
    out[ok] = seqs.items[idx[ok]]
    return out, count


@dataclass(frozen=True)
class _ClickWindows:
    """Next-click windows (:func:`policies.data.next_item_windows`) with what each target's page
    was ranked with."""
    users: np.ndarray     # (n,)
    inputs: np.ndarray    # (n, T) model ids, 0 = padding
    targets: np.ndarray   # (n, T) the click at each position, 0 = none
    page: np.ndarray      # (n, T) rank of the first impression of the target's page, -1 = none
    query: np.ndarray     # (n, T) newest input column ranked before ``page``, -1 = none

    def __len__(self) -> int:
        return len(self.users)


def _click_windows(clicks: Sequences, max_len: int, page_start: np.ndarray,
                   stride: int | None = None) -> _ClickWindows:
    """The click windows of ``clicks`` (``ts`` = ranks, :class:`_Prepared`) and, per target, the
    newest input column whose click was recorded before the target's page was requested: the
    store held exactly the window's inputs up to that column (and older clicks) then."""
    rank = clicks.ts.astype(np.int64)
    prev = np.r_[-1, rank[:-1]] if len(rank) else rank
    prev[clicks.offsets[:-1][clicks.lengths > 0]] = -1                      # a user's first click
    w = next_item_windows(clicks, max_len, extra=rank, stride=stride)
    input_rank = next_item_windows(clicks, max_len, extra=prev, stride=stride).extra   # (n, T), -1 = none
    target_rank = w.extra                                                   # (n, T), -1 = none
    page = np.where(target_rank >= 0, page_start[np.maximum(target_rank, 0)], -1)
    # each row's input ranks increase (padding -1 first), and the input after a target is the
    # target itself (rank >= its page's start), so the newest input before the page is found by
    # one sorted search over all rows, offset per row
    n, T = page.shape
    span = int(rank.max()) + 2 if len(rank) else 1
    off = np.arange(n, dtype=np.int64)[:, None] * span
    q = np.searchsorted((input_rank + 1 + off).ravel(), (page + 1 + off).ravel(), side="left")
    q = q.reshape(n, T) - np.arange(n)[:, None] * T - 1                     # (n, T) column, or -1
    ok = (page >= 0) & (q >= 0) & (np.take_along_axis(input_rank, np.maximum(q, 0), 1) >= 0)
    return _ClickWindows(w.users, w.inputs, w.targets, page, np.where(ok, q, -1).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# the policy

@register_policy("saqrec", "SAQRec (CIKM'24): IPS satisfaction model from questionnaires, SID + MLSE over "
                           "click / satisfied / dissatisfied histories, pseudo-label MTL (deterministic)")
@dataclass
class SAQRec:
    """SAQRec (see the module docstring for the stages and the choices made).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        max_len, max_len_satisfied, max_len_dissatisfied: history lengths read (clicks,
            satisfied, dissatisfied; capped at the feature store's history length).
        d_model, n_layers, n_layers_feedback, n_heads, dropout: encoders (click encoder with
            ``n_layers``; satisfied / dissatisfied encoders with ``n_layers_feedback``).
        item_features: item-table columns whose embeddings are added to the item-id embedding.
        n_levels: N_I, the MLSE satisfaction levels.
        n_negatives: sampled negatives per position (click loss, Eq. 15).
        beta: weight of the satisfaction loss (Eq. 19).
        n_mix: N_mix, first epoch (from 1) with adaptive label correction (Eq. 18).
        unbiased: IPS (Eq. 6) for the satisfaction model; False: naive (Eq. 3), "w/o Unbiased".
        sid, mlse, mtl: the SID / MLSE modules and the satisfaction loss (False: ablations).
        propensity_clip: M of Eq. 6 as a multiple of the mean observation rate of the clicks.
        sat_weight: serving score ``logit(y_hat) + sat_weight * logit(s_f_hat)``.
        aux_hidden, aux_dropout: hidden sizes / dropout of the propensity and satisfaction MLPs.
        batch_size, lr, weight_decay, max_epochs, patience: training of the click models
            (weight_decay is gamma of Eq. 19). The main model's patience is ``patience + n_mix``,
            so early stopping cannot end training before label correction (Eq. 18) has run for
            ``patience`` epochs.
        window_stride: None trains on one click window per user (its newest ``max_len + 1``
            clicks, as SASRec does by default); an int adds windows ending ``window_stride``,
            ``2 * window_stride``, ... clicks earlier (``max_len``: every click is a target once).
        pretrain_epochs: at most this many epochs of the stage-0 click model (same patience).
        satisfaction_biases: g also gets a trainable per-user and per-item logit offset (as rho
            has), so that dense answers can teach it an item's satisfaction, which the frozen
            click embeddings need not carry. Off by default (the paper's g reads the frozen
            embeddings only); on the dense-answer world of the tests it raised g's held-out AUC
            for the simulator's realised satisfaction from 0.565 to 0.587 (seed 0).
        update_epochs: passes of :meth:`update` when the caller gives none (0: ``update`` does
            nothing; the A/B runner's ``learning = "update"`` passes its own).
        aux_epochs, aux_lr: stages 1 and 2 (patience 3, validation on a random ``aux_valid_share``
            of the rows).
        propensity_batch_size, satisfaction_batch_size: their mini-batches (all click rows vs
            the few answered ones).
        eval_negatives: sampled negatives per validation target (early stopping on NDCG@10).
        progress: tqdm bars.
    """
    temperature: float | None = None
    max_len: int = 50
    max_len_satisfied: int = 10
    max_len_dissatisfied: int = 5
    d_model: int = 64
    n_layers: int = 2
    n_layers_feedback: int = 1
    n_heads: int = 1
    dropout: float = 0.2
    item_features: tuple[str, ...] = ("l1", "l2", "leaf")
    n_levels: int = 9
    user_dropout: float = 0.0
    n_negatives: int = 1
    beta: float = 1.0
    n_mix: int = 3
    unbiased: bool = True
    sid: bool = True
    mlse: bool = True
    mtl: bool = True
    propensity_clip: float = 0.2
    sat_weight: float = 0.0
    aux_hidden: tuple[int, ...] = (64, 32)
    aux_dropout: float = 0.1
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 20
    patience: int = 3
    window_stride: int | None = None
    pretrain_epochs: int = 20
    aux_epochs: int = 20
    propensity_batch_size: int = 1024
    satisfaction_batch_size: int = 128
    aux_lr: float = 3e-3
    aux_valid_share: float = 0.2
    eval_negatives: int = 99
    update_epochs: int = 0
    satisfaction_biases: bool = False
    progress: bool = False
    # fitted state
    fitted_: bool = field(default=False, init=False)
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

    @property
    def reads_answers(self) -> bool:
        """Whether any questionnaire answer reaches the model (False: :data:`CLICK_ONLY`)."""
        return self.sid or self.mlse or self.mtl

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Stages 0-3 of Algorithm 1 on ``train``; each user's last click is held out for early
        stopping of the click models.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, no user with two clicks,
                or a bad parameter.
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
            return torch.sigmoid(self.propensity_(torch.from_numpy(np.asarray(users, np.int64)),
                                                  torch.from_numpy(to_model_ids(items)))).numpy()

    def _fit(self, train: LogData, rng: np.random.Generator, *, main: bool) -> Self:
        check_observable(train, required=SAQREC_COLUMNS)
        self._check_params()
        self.fitted_ = False
        self.results_, self.seconds_, self.propensity_, self.satisfaction_ = {}, {}, None, None
        self.diagnostics_ = {}
        t0 = time.perf_counter()
        n_items = n_items_of(train)
        n_users = int(max(train.users["user_id"].max() + 1 if "user_id" in train.users and len(train.users) else 0,
                          train.impressions["user_id"].max() + 1))
        data = _prepare(train)
        rest, valid = holdout_last(data.clicks)
        windows = _click_windows(rest, self.max_len, data.page_start, self.window_stride)
        if len(windows) == 0:
            raise ValueError("train has no user with at least two effective views; SAQRec needs click "
                             "sequences to learn from")
        side = item_side(train.items, self.item_features, n_items)
        side_t = torch.from_numpy(np.stack(side)) if side else None
        exclude = positive_keys(data.clicks, n_items)
        base = NetConfig(n_items=n_items, n_users=n_users, max_len=self.max_len,
                         max_len_satisfied=self.max_len_satisfied, max_len_dissatisfied=self.max_len_dissatisfied,
                         d_model=self.d_model, n_layers=self.n_layers, n_layers_feedback=self.n_layers_feedback,
                         n_heads=self.n_heads, dropout=self.dropout,
                         side_sizes=tuple(int(a.max()) + 1 for a in side), n_levels=self.n_levels,
                         user_dropout=self.user_dropout,
                         sid=self.sid, mlse=self.mlse)
        self.seconds_["prepare"] = time.perf_counter() - t0
        val = self._validation_inputs(data, valid, n_items, exclude, rng) if len(valid) else None

        # stage 0: the click model, i.e. the main network with only [h_r, v_u] in the fusion;
        # its embeddings are frozen into rho and g, and stage 3 continues from it
        t = time.perf_counter()
        net = build_module(lambda: SAQRecNet(base, side_t), rng)
        net.click_only = True
        examples = self._examples_fn(windows, data, n_items, exclude, teacher=None)
        self.results_["pretrain"] = train_model(
            net, examples, self._loss_fn(mtl=False), self._evaluate_fn(val),
            self._config(self.pretrain_epochs, self.patience, self.batch_size, self.lr, "saqrec:clicks"), rng)
        net.click_only = False
        self.seconds_["pretrain"] = time.perf_counter() - t
        with torch.no_grad():
            users_t = net.user_emb.weight.detach().clone()
            items_t = net.item_emb(torch.arange(n_items + 1)).detach().clone()
        self.click_tables_ = (users_t.clone(), items_t.clone())
        users_t = users_t / users_t.pow(2).mean().sqrt().clamp(min=1e-12)
        items_t = items_t / items_t[1:].pow(2).mean().sqrt().clamp(min=1e-12)
        items_t[0] = 0.0

        # stage 1: propensity of observing a questionnaire label on a click (Eq. 5)
        t = time.perf_counter()
        rate = float(data.observed.mean()) if len(data.observed) else 0.0
        self.clip_ = self.propensity_clip * rate
        propensity = None
        if self.unbiased and self.reads_answers:
            rho = build_module(lambda: PairMLP(users_t, items_t, self.aux_hidden, self.aux_dropout, biases=True), rng)
            pairs = _Pairs(data.click_users, to_model_ids(data.click_items), data.observed.astype(np.float32))
            self.results_["propensity"] = self._fit_pairs(rho, pairs, rng, "saqrec:propensity", ips=False,
                                                          batch_size=self.propensity_batch_size)
            self.propensity_ = rho
            with torch.no_grad():
                obs = data.observed
                propensity = torch.sigmoid(rho(torch.from_numpy(data.click_users[obs]),
                                               torch.from_numpy(to_model_ids(data.click_items[obs])))).numpy()
        self.seconds_["propensity"] = time.perf_counter() - t

        # stage 2: the satisfaction model on the answered clicks (Eq. 6, or Eq. 3)
        t = time.perf_counter()
        g = build_module(lambda: PairMLP(users_t, items_t, self.aux_hidden, self.aux_dropout,
                                         biases=self.satisfaction_biases), rng)
        obs = data.observed
        pairs = _Pairs(data.click_users[obs], to_model_ids(data.click_items[obs]),
                       data.satisfied_label[obs].astype(np.float32),
                       None if propensity is None else np.maximum(propensity, self.clip_).astype(np.float32))
        if len(pairs.users) and self.reads_answers:
            self.results_["satisfaction"] = self._fit_pairs(g, pairs, rng, "saqrec:satisfaction", ips=self.unbiased,
                                                            batch_size=self.satisfaction_batch_size)
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
        self.results_["main"] = train_model(
            net, examples, self._loss_fn(mtl=self.mtl), self._objective_fn(val_main, teacher),
            self._config(self.max_epochs, self.patience + self.n_mix, self.batch_size, self.lr, "saqrec"), rng)
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
        ``n_mix``, as in stage 3."""
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, required=SAQREC_COLUMNS, where="new")
        frame = append_logs(self.train_, new.impressions)
        data = _prepare(LogData(frame, new.items, new.users))
        touched = np.unique(new.impressions["user_id"].to_numpy(np.int64))
        clicks = data.clicks.select(np.isin(data.clicks.event_users, touched))
        windows = _click_windows(clicks, self.max_len, data.page_start, self.window_stride)
        self.train_ = frame
        if len(windows) == 0:
            return
        examples = self._examples_fn(windows, data, self.n_items_, positive_keys(data.clicks, self.n_items_),
                                     teacher=self._teacher_fn(self.satisfaction_))
        result = train_model(self.net_, examples, self._loss_fn(mtl=self.mtl), None,
                             self._config(epochs, epochs, self.batch_size, self.lr, "saqrec:update"), self.rng_)
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
        cap = getattr(store, "history_length", self.max_len)
        hist = {name: store.history(name, users, min(length, cap))[0] for name, length in (
            ("clicks", self.max_len), ("satisfied", self.max_len_satisfied),
            ("dissatisfied", self.max_len_dissatisfied))}
        _, user_part, item_part = self.tables_
        users_t = torch.from_numpy(users)
        clicks = torch.from_numpy(to_model_ids(hist["clicks"]))                 # (B, L)
        with torch.inference_mode():
            s = None
            if self.mlse:   # g's scores of the clicked items, from the cached first layer
                s = torch.sigmoid(self.satisfaction_.from_tables(user_part[users_t][:, None], item_part[clicks],
                                                                 users_t[:, None], clicks))                # (B, L)
            u = self.net_(clicks, users_t, torch.from_numpy(to_model_ids(hist["satisfied"])), None,
                          torch.from_numpy(to_model_ids(hist["dissatisfied"])), None, s, last_only=True)  # (B, d)
            ids = torch.from_numpy(to_model_ids(cands))
            u = F.pad(u, (0, 1), value=1.0)                                      # (B, d + 1): [u_f, 1]
            scores = torch.bmm(table[ids], u.unsqueeze(-1)).squeeze(-1)        # (B, C)
        return scores.numpy().astype(np.float64)

    # -- internals ------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 or None")
        if self.window_stride is not None and self.window_stride < 1:
            raise ValueError(f"window_stride={self.window_stride} must be >= 1 or None")
        for name in ("max_len", "max_len_satisfied", "max_len_dissatisfied", "n_levels", "n_negatives",
                     "n_mix", "pretrain_epochs", "aux_epochs", "propensity_batch_size",
                     "satisfaction_batch_size", "eval_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0")
        if self.sat_weight and not self.mtl:
            raise ValueError(f"sat_weight={self.sat_weight} needs mtl=True: without the satisfaction loss the "
                             "satisfaction head is untrained")
        if not (math.isfinite(self.propensity_clip) and self.propensity_clip > 0):
            raise ValueError(f"propensity_clip={self.propensity_clip} must be > 0")
        if not 0.0 <= self.aux_valid_share < 1.0:
            raise ValueError(f"aux_valid_share={self.aux_valid_share} must be in [0, 1)")
        if not self.aux_hidden or min(self.aux_hidden) < 1:
            raise ValueError(f"aux_hidden={self.aux_hidden} must be non-empty sizes >= 1")

    def _config(self, epochs: int, patience: int, batch_size: int, lr: float, desc: str) -> TrainConfig:
        return TrainConfig(batch_size=batch_size, lr=lr, weight_decay=self.weight_decay, max_epochs=epochs,
                           patience=patience, progress=self.progress, desc=desc)

    def _fit_pairs(self, model: PairMLP, pairs: _Pairs, rng: np.random.Generator, desc: str,
                   ips: bool, batch_size: int) -> TrainResult:
        """Stage 1 (BCE, Eq. 5) or stage 2 (Eq. 6 with ``ips``, else Eq. 3) on (user, item) rows.

        The last layer starts at zero and its bias at the logit of the (IPS-weighted) mean label,
        so epoch 0 is the best constant model and training has to beat it on the held-out rows; early stopping uses
        the self-normalised weighted loss there (sum w l / sum w, w = 1 / max(o_hat, M)), the
        lower-variance form of the same objective.
        """
        n = len(pairs.users)
        n_val = int(round(self.aux_valid_share * n)) if n >= 20 else 0
        perm = rng.permutation(n)
        fit_rows, val_rows = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        weight = (1.0 / pairs.propensity) if ips and pairs.propensity is not None else np.ones(n, np.float32)
        mean = float(np.sum(weight[fit_rows] * pairs.labels[fit_rows]) / max(np.sum(weight[fit_rows]), 1e-12))
        with torch.no_grad():   # epoch 0 = the constant model: zero last layer, bias at the mean
            model.head[-1].weight.zero_()
            model.head[-1].bias.fill_(math.log(max(mean, 1e-4) / max(1.0 - mean, 1e-4)))

        def take(rows: np.ndarray) -> _Pairs:
            return _Pairs(pairs.users[rows], pairs.items[rows], pairs.labels[rows],
                          None if pairs.propensity is None else pairs.propensity[rows])

        def loss(m: PairMLP, b: _Pairs) -> torch.Tensor:
            return ips_bce(m(b.users, b.items), b.labels, b.propensity if ips else None, self.clip_)

        evaluate = None
        if n_val:
            v = take(val_rows)
            vu, vi, vl = (torch.from_numpy(a) for a in (v.users, v.items, v.labels))
            vw = torch.from_numpy(weight[val_rows].astype(np.float32))

            def evaluate(m: PairMLP) -> float:
                bce = F.binary_cross_entropy_with_logits(m(vu, vi), vl, reduction="none")
                return -float((vw * bce).sum() / vw.sum())
        fit_part = take(fit_rows)
        return train_model(model, lambda r: fit_part, loss, evaluate,
                           self._config(self.aux_epochs, 3, batch_size, self.aux_lr, desc), rng)

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

    def _teacher_fn(self, g: PairMLP):
        """``(users (n,), model ids (n, ...)) -> s_hat`` float32 numpy, no gradient."""
        def teacher(users: np.ndarray, ids: np.ndarray) -> np.ndarray:
            out = np.empty(ids.shape, np.float32)
            with torch.no_grad():
                up, ip = g.tables()
                for s in range(0, len(users), 4096):
                    u = torch.from_numpy(users[s:s + 4096])
                    i = torch.from_numpy(ids[s:s + 4096])
                    shape = (len(u),) + (1,) * (i.dim() - 1) + (-1,)
                    out[s:s + 4096] = torch.sigmoid(g.from_tables(up[u].view(shape), ip[i], u.view(shape[:-1]),
                                                                  i)).numpy()
            return out
        return teacher

    def _examples_fn(self, w, data: _Prepared, n_items: int, exclude: np.ndarray, teacher):
        """``make_epoch``: the click windows with this epoch's negatives (and, for the main model,
        the feedback windows, teacher scores and pseudo labels)."""
        T = self.max_len
        page = w.page                                                            # (n, T) -1 = none
        fixed = {}
        if teacher is not None:
            last = page[:, -1]                                                   # the window's last page
            for name, seqs, length in (("sat", data.satisfied, self.max_len_satisfied),
                                       ("dis", data.dissatisfied, self.max_len_dissatisfied)):
                window, count = _feedback_window(seqs, w.users, last, length)    # (n, L), (n,)
                k = _before(seqs, w.users[:, None], np.maximum(page, 0))         # (n, T) answers before the page
                back = count[:, None] - k                                       # answers after the position's page
                idx = np.where((page >= 0) & (k >= 1) & (back < length), length - 1 - back, -1)
                fixed[name], fixed[f"{name}_idx"] = to_model_ids(window), idx.astype(np.int64)
            fixed["scores"] = teacher(w.users, w.inputs)                         # (n, T)
        state = {"epoch": 0}

        def make_epoch(rng: np.random.Generator) -> _Examples:
            state["epoch"] += 1
            neg = sample_negatives(rng, w.users, T * self.n_negatives, n_items=n_items, exclude=exclude)
            neg = to_model_ids(neg).reshape(len(w.users), T, self.n_negatives)    # (n, T, K)
            lab = None
            if teacher is not None and self.mtl:
                lab = teacher(w.users, np.concatenate([w.targets[..., None], neg], axis=-1))   # (n, T, 1 + K)
            return _Examples(w.users, w.inputs, w.targets, neg, w.query, teacher=lab, epoch=state["epoch"],
                             **fixed)
        return make_epoch

    def _loss_fn(self, mtl: bool):
        beta, n_mix = self.beta, self.n_mix

        def loss(net: SAQRecNet, b: _Examples) -> torch.Tensor:
            """L_C (Eq. 15) + beta * L_S^final (Eq. 16-18), averaged over the valid positions."""
            u = net(b.inputs, b.users, b.sat, b.sat_idx, b.dis, b.dis_idx, b.scores, query=b.query)   # (B, T, d)
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

    def _validation_inputs(self, data: _Prepared, valid, n_items: int, exclude: np.ndarray,
                           rng: np.random.Generator) -> dict:
        """Serving inputs at each held-out click: the histories recorded before its page was
        requested (held-out clicks with no earlier-page click are dropped, as in training), and
        the target with ``eval_negatives`` sampled negatives. None if no target is left."""
        ranks = data.page_start[valid.ts.astype(np.int64)]                       # (n,) its page's start
        h = valid.history
        hist = h.select(h.ts < np.repeat(ranks, h.lengths))
        rows = hist.rows_of(valid.users)
        keep = rows >= 0
        if not keep.any():
            return None
        users, items, ranks, rows = valid.users[keep].astype(np.int64), valid.items[keep], ranks[keep], rows[keep]
        out = {"users": users, "clicks": to_model_ids(pad(hist, self.max_len, rows=rows))}
        out["sat"] = to_model_ids(_feedback_window(data.satisfied, users, ranks, self.max_len_satisfied)[0])
        out["dis"] = to_model_ids(_feedback_window(data.dissatisfied, users, ranks, self.max_len_dissatisfied)[0])
        negs = sample_negatives(rng, users, self.eval_negatives, n_items=n_items, exclude=exclude, distinct=True)
        out["cands"] = to_model_ids(np.concatenate([items[:, None], negs], axis=1))   # (n, 1 + K)
        return out

    def _with_teacher(self, val: dict | None, teacher) -> dict | None:
        if val is None:
            return None
        return {**val, "scores": teacher(val["users"], val["clicks"])}

    @staticmethod
    def _held_out_states(net: SAQRecNet, t: dict[str, torch.Tensor]):
        """Yield ``(rows, u_f)`` over the held-out targets in chunks: the serving path's user state
        (newest position only), (b, d)."""
        for s in range(0, len(t["users"]), 1024):
            sl = slice(s, s + 1024)
            yield sl, net(t["clicks"][sl], t["users"][sl], t["sat"][sl], None, t["dis"][sl], None,
                          t["scores"][sl] if "scores" in t else None, last_only=True)

    def _evaluate_fn(self, val: dict | None):
        """NDCG@10 of the held-out clicks ranked by the click head with the serving path: stage 0's
        early-stopping metric (the click model)."""
        if val is None:
            return None
        t = {k: torch.from_numpy(v) for k, v in val.items()}

        def evaluate(net: SAQRecNet) -> float:
            scores = [net.click_logits(u, t["cands"][sl]) for sl, u in self._held_out_states(net, t)]  # (b, 1 + K)
            return sampled_metrics(torch.cat(scores), k=10)[1]
        return evaluate

    def _objective_fn(self, val: dict | None, teacher):
        """Stage 3's early-stopping metric: minus the held-out value of the kind of objective it
        trains (Eq. 19, without the label mixing of Eq. 17): per candidate, the BCE of the click
        head (the held-out click against its ``eval_negatives`` sampled negatives, where training
        uses ``n_negatives``) plus ``beta`` times the BCE of the satisfaction head against g's
        imputed satisfaction (w/o MTL: the click term only).

        Selecting stage 3's epochs on click NDCG alone restored the stage-0 click model whenever
        no epoch beat its NDCG (most runs: stage 3 starts from it), which served an untrained
        satisfaction head and threw the questionnaires' training away. The paper states early
        stopping but not its criterion."""
        if val is None:
            return None
        t = {k: torch.from_numpy(v) for k, v in val.items()}
        use_sat = self.mtl and self.beta > 0
        s_hat = torch.from_numpy(teacher(val["users"], val["cands"])) if use_sat else None   # (n, 1 + K)
        labels = torch.zeros(t["cands"].shape)
        labels[:, 0] = 1.0

        def evaluate(net: SAQRecNet) -> float:
            total = 0.0
            for sl, u in self._held_out_states(net, t):
                lc = F.binary_cross_entropy_with_logits(net.click_logits(u, t["cands"][sl]), labels[sl])
                total += float(lc) * len(u)
                if use_sat:
                    ls = F.binary_cross_entropy_with_logits(net.sat_logits(u, t["cands"][sl]), s_hat[sl])
                    total += self.beta * float(ls) * len(u)
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
