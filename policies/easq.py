"""EASQ: end-to-end alignment of user satisfaction via questionnaires (Kuaishou, 2026).

Only the abstract of the paper is public (``papers/easq_2026_abstract.txt``). It names three
parts, all implemented here behind switches; everything the abstract leaves open is a choice
listed at the end of this docstring. Equation numbers are this module's (the abstract has none).

1. **Multi-task backbone on dense behaviour.** A causal transformer
   (:class:`policies.encoders.SequenceEncoder`) reads the user's click (effective-view) history
   ``x`` into a state ``u(x)``; an item is embedded by its id plus its observable categories and
   author (``e_i``, the encoder's input embedding, shared). Each dense task ``k`` (effective
   view, watch fraction, like) has its own tower, a user projection ``P_k`` and a per-item bias::

       z_k(x, i) = <P_k u(x), e_i> + b_k[i]                                            (1)

   trained by binary cross-entropy (a soft label for the watch fraction, ``watch_time /
   duration`` clipped to [0, 1]) on every impression, scored with the click history before it.
2. **A separate satisfaction task with a LoRA side path.** The satisfaction tower is a small MLP
   on the backbone's features (the state, the item, their product and the dense logits), read
   through a stop-gradient ``sg``::

       f(x, i)     = [sg u, sg e_i + Delta e_i, sg u * (sg e_i + Delta e_i), sg z(x, i)]
       z_sat(x, i) = w_out . gelu(W_in f + (alpha / r) B A f) + b_sat[i]                  (2)

   ``W_in``, ``w_out`` and ``b_sat`` are fitted offline by BCE on answered questionnaires
   (``like`` = 1, ``loser_answers`` = 0). The LoRA side path has two parts, both
   ``h = W0 x + B A x`` with ``B`` initialised to 0: ``B A`` on the tower's input layer
   (:class:`LoRALinear`) and ``Delta e_i = (alpha / r) B' A'[:, i]`` on the tower's view of the
   item embedding (:class:`LoRAEmbedding`, an embedding being a linear layer on one-hot ids), so
   that questionnaires can correct single items. With ``B = B' = 0`` the model equals the backbone
   plus its offline satisfaction tower; the side path is trained *only* by the alignment
   objective below. Because of ``sg``, no questionnaire loss reaches the backbone (parameter
   isolation; tested).
3. **Ranking score and DPO alignment.** The model's output, the score the platform ranks by,
   fuses the task logits with fixed weights ``fusion = (w_ev, w_watch, w_like, w_sat)``::

       s(x, i) = sum_k w_k z_k(x, i) + w_sat z_sat(x, i)                                (3)

   Questionnaire preferences are pairs of items shown to one user at most ``pair_window_s``
   apart: ``y_w`` answered ``like`` (satisfied), ``y_l`` answered one of ``loser_answers`` or was
   shown and not answered (unanswered-exposed, with ``unanswered_losers``). With the reference
   ``s_ref`` = the same network with the side path off::

       L_DPO = -log sigma(beta [(s(x, y_w) - s_ref(x, y_w)) - (s(x, y_l) - s_ref(x, y_l))])   (4)

   The backbone is frozen in (4), so ``s - s_ref = w_sat (z_sat - z_sat|B=0)``: only the side
   path moves the score. A pair's context ``x`` is the user's click history before the *earlier*
   of its two impressions, so both items are scored in one context and neither is in it; a
   per-context constant cancels in (4) (tested), and (4) = log 2 while ``B = 0``.

**Online learning.** The A/B runner calls :meth:`EASQ.update` with the bucket's new logs every
``update_interval_s`` simulated seconds. Each call takes ``update_epochs`` passes of (a) the
multi-task loss (1) on up to ``update_dense_samples`` of the new impressions (the backbone follows
the dense stream), then (b) the alignment loss (4) on every pair with a new questionnaire event,
pairing new events with the recent ones kept in a buffer of ``pair_window_s`` seconds. The offline
satisfaction tower stays fixed online: all online questionnaire learning goes through the side
path.

Switches (:data:`VARIANTS`):

- ``use_lora=False`` ("w/o LoRA"): no side path and no stop-gradient; (4) is applied to the whole
  network (backbone included), against a frozen snapshot of the network taken at the end of the
  offline fit and refreshed every ``ref_refresh`` updates.
- ``objective="bce"`` ("w/o DPO"): the side path is trained by BCE of ``z_sat`` (side path on) on
  answered questionnaires instead of (4); unanswered exposures are not used.
- ``online=False`` ("offline-only"): the same offline fit; ``update`` does nothing.

Choices where the abstract is silent:

- "neutral" answers are losers by default (``like`` is preferred to ``neutral`` in a
  like / neutral / dislike survey); "suitable" on the inappropriate-content survey says nothing
  about satisfaction and is ignored. Unanswered exposures of either survey type are losers.
- The satisfaction tower is an MLP that reads the dense logits: satisfaction is learned *on top
  of* the behaviour model from a few thousand answers, not from scratch. (A dot-product tower
  like (1) on ``sg u``, ``sg e`` reached a satisfaction AUC among clicks of 0.607 against the
  MLP's 0.645, alone, on a 2,000-user world with questionnaires after half the effective views.)
- Offline, after the backbone and the satisfaction tower, the side path is aligned on the
  training logs' pairs (``align_epochs``), so the offline model is complete and the online steps
  continue the same objective.
- The backbone is trained on windows of each user's click sequence (``max_len`` clicks; one
  causal pass gives the state after every click; each impression is attached to the state after
  the last click before it; ``impressions_per_window`` of them are sampled per window and
  epoch), 30x cheaper than one pass per impression; early stopping on the dense loss of a
  held-out share of users. As in SASRec's training, a state inside a window has that window's
  positions and only the window's earlier clicks, while serving (and the online steps, which
  encode each impression's own history) reads the newest ``max_len`` clicks ending at the last
  position.
- Fusion by a weighted sum of logits (3) with fixed weights, so that (4) is linear in each task.
- Online steps run through :func:`policies.train.train_model` like every other training step, so
  each ``update`` starts a fresh Adam (no optimiser state is carried between serving rounds).
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import check_fitted, register_policy
from policies.data import (REQUIRED_COLUMNS, SATISFIED_ANSWERS, Sequences, check_observable,
                           chronological_order, merge, n_items_of, to_model_ids)
from policies.encoders import EncoderConfig, SequenceEncoder
from policies.train import EpochRecord, TrainConfig, build_module, train_model
from simulator.schema import LogData, RankBatch

DENSE_TASKS = ("effective_view", "watch_fraction", "like")
OBJECTIVES = ("dpo", "bce")
EASQ_COLUMNS = REQUIRED_COLUMNS + ("watch_time", "duration", "like", "survey_shown", "survey_submitted")
"""Impression columns EASQ reads."""


# ----------------------------------------------------------------------------- the network

class LoRALinear(nn.Module):
    """A linear layer with a low-rank side path: ``h = W0 x + (alpha / r) B A x`` (Hu et al.,
    2021, Eq. 3).

    ``A`` (r, d_in) starts random (Kaiming-uniform, as in LoRA), ``B`` (d_out, r) starts at zero,
    so the layer starts equal to its base ``W0``. ``rank=0`` is a plain linear layer.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, bias: bool = True):
        super().__init__()
        if rank < 0:
            raise ValueError(f"rank={rank} must be >= 0")
        self.base = nn.Linear(d_in, d_out, bias=bias)
        self.rank = rank
        self.scale = alpha / rank if rank else 0.0
        self.lora_A = nn.Parameter(torch.empty(rank, d_in))
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
        if rank:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, lora: bool = True) -> torch.Tensor:
        y = self.base(x)                                                   # (..., d_out)
        if lora and self.rank:
            y = y + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)   # (..., r) -> (..., d_out)
        return y

    def lora_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B] if self.rank else []


class LoRAEmbedding(nn.Module):
    """The LoRA side path of an embedding table: ``Delta e_i = (alpha / r) B A[:, i]``.

    An embedding lookup is a linear layer on one-hot ids, ``e_i = W0 onehot(i)``; its LoRA path
    is ``B A onehot(i)`` with ``A`` (r, n) random and ``B`` (d, r) zero at init (as
    :class:`LoRALinear`), so the path starts at zero. Only the offset is computed here: the base
    table belongs to the backbone.
    """

    def __init__(self, n: int, d: int, rank: int, alpha: float):
        super().__init__()
        self.rank = rank
        self.scale = alpha / rank if rank else 0.0
        self.lora_A = nn.Parameter(torch.randn(n, rank) / math.sqrt(max(rank, 1)))   # A^T, one row per id
        self.lora_B = nn.Parameter(torch.zeros(d, rank))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) ids -> (..., d) offsets."""
        return self.scale * F.linear(self.lora_A[ids], self.lora_B)        # (..., r) -> (..., d)

    def lora_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B] if self.rank else []


@dataclass(frozen=True)
class EASQConfig:
    """Shape of an :class:`EASQNet`.

    Attributes:
        encoder: the backbone's sequence encoder (its item embedding is the item tower).
        sat_hidden: hidden width of the satisfaction tower.
        lora_rank: rank r of the side path (0 = none).
        lora_alpha: LoRA scale numerator (the path is multiplied by alpha / r).
        isolate: questionnaire losses see the backbone through a stop-gradient (Eq. 2).
        fusion: weights (w_ev, w_watch, w_like, w_sat) of the ranking score (Eq. 3).
    """
    encoder: EncoderConfig
    sat_hidden: int = 32
    lora_rank: int = 4
    lora_alpha: float = 4.0
    isolate: bool = True
    fusion: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.fusion) != len(DENSE_TASKS) + 1:
            raise ValueError(f"fusion={self.fusion} must have {len(DENSE_TASKS) + 1} weights "
                             f"({', '.join(DENSE_TASKS)}, satisfaction)")
        if self.sat_hidden < 1:
            raise ValueError(f"sat_hidden={self.sat_hidden} must be >= 1")


class EASQNet(nn.Module):
    """Backbone (encoder, item embeddings, dense towers) + satisfaction tower with a LoRA path."""

    def __init__(self, config: EASQConfig, item_side: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        d, n = config.encoder.d_model, config.encoder.n_items
        K = len(DENSE_TASKS)
        # backbone, Eq. (1)
        self.encoder = SequenceEncoder(config.encoder, item_side)
        self.dense_proj = nn.Linear(d, K * d)                              # the K task towers P_k
        self.dense_bias = nn.Embedding(n + 1, K, padding_idx=0)
        nn.init.zeros_(self.dense_bias.weight)
        # satisfaction tower, Eq. (2): the LoRA path wraps its input layer
        self.sat_in = LoRALinear(3 * d + K, config.sat_hidden, config.lora_rank, config.lora_alpha)
        self.sat_out = nn.Linear(config.sat_hidden, 1)
        self.sat_bias = nn.Embedding(n + 1, 1, padding_idx=0)
        nn.init.zeros_(self.sat_bias.weight)
        # ... and the satisfaction tower's view of the item embedding
        self.item_lora = LoRAEmbedding(n + 1, d, config.lora_rank, config.lora_alpha)
        self.register_buffer("fusion", torch.tensor(config.fusion, dtype=torch.float32))   # (K + 1,)

    # parameter groups
    def backbone_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.dense_proj.parameters(), *self.dense_bias.parameters()]

    def satisfaction_parameters(self) -> list[nn.Parameter]:
        """The satisfaction tower without its LoRA path: ``W_in``, ``W_out`` and ``b_sat``."""
        return [*self.sat_in.base.parameters(), *self.sat_out.parameters(), *self.sat_bias.parameters()]

    def lora_parameters(self) -> list[nn.Parameter]:
        return [*self.sat_in.lora_parameters(), *self.item_lora.lora_parameters()]

    def user_state(self, hist: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
        """(N, d) state of (N, L) click histories (model ids); ``frozen``: the backbone in eval
        mode without gradient (what questionnaire losses see under isolation)."""
        if not frozen:
            return self.encoder.encode_last(hist)
        was = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            u = self.encoder.encode_last(hist)
        self.encoder.train(was)
        return u

    def dense_logits(self, u: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (1): (..., d) states and (...) ids -> (..., K) dense logits and the (..., d) item
        embeddings."""
        e = self.encoder.item_embeddings(ids)                              # (..., d)
        q = self.dense_proj(u).unflatten(-1, (len(DENSE_TASKS), u.shape[-1]))   # (..., K, d)
        return (q * e.unsqueeze(-2)).sum(-1) + self.dense_bias(ids), e     # (..., K)

    def logits(self, u: torch.Tensor, ids: torch.Tensor, *, lora: bool = True,
               backbone_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Task logits of items ``ids`` for states ``u``.

        Args:
            u: (..., d) user states, broadcastable against ``ids`` with a trailing d
                (e.g. (B, 1, d) for B requests of C items, or (N, d) for one item each).
            ids: (...) item model ids.
            lora: with the LoRA path (False: the reference network of Eq. 4).
            backbone_grad: False computes the backbone's part without gradient.

        Returns:
            (dense (..., K), sat (...)): Eq. (1) for the K dense tasks and Eq. (2).
        """
        with torch.set_grad_enabled(backbone_grad and torch.is_grad_enabled()):
            dense, e = self.dense_logits(u, ids)                           # (..., K), (..., d)
        if self.config.isolate:                                            # sg[.] of Eq. (2)
            u, e, feats = u.detach(), e.detach(), dense.detach()
        else:
            feats = dense
        if lora and self.item_lora.rank:
            e = e + self.item_lora(ids)                                    # (..., d)
        x = torch.cat([u.expand_as(e), e, u * e, feats], dim=-1)           # (..., 3d + K)
        hidden = F.gelu(self.sat_in(x, lora))                              # (..., h)
        sat = self.sat_out(hidden).squeeze(-1) + self.sat_bias(ids).squeeze(-1)   # (...)
        return dense, sat

    def fused(self, dense: torch.Tensor, sat: torch.Tensor) -> torch.Tensor:
        """The ranking score, Eq. (3): (..., K) and (...) logits -> (...)."""
        return dense @ self.fusion[:-1] + self.fusion[-1] * sat

    def score(self, u: torch.Tensor, ids: torch.Tensor, *, lora: bool = True,
              backbone_grad: bool = True) -> torch.Tensor:
        """Eq. (3) for states ``u`` and items ``ids`` (shapes as in :meth:`logits`)."""
        return self.fused(*self.logits(u, ids, lora=lora, backbone_grad=backbone_grad))


    def serving_cache(self) -> dict[str, torch.Tensor]:
        """Per-item tables that make :meth:`serve` equal :meth:`score` (side path on) at a fraction
        of its cost: the tower's input layer is linear, so its item part is computed once per item
        and its state part once per request."""
        K, d = len(DENSE_TASKS), self.config.encoder.d_model
        n1 = self.config.encoder.n_items + 1
        table, _ = self.encoder.item_table()                               # (n + 1, d)
        e_sat = table + (self.item_lora(torch.arange(n1)) if self.item_lora.rank else 0.0)
        w = self.sat_in.base.weight
        if self.sat_in.rank:
            w = w + self.sat_in.scale * self.sat_in.lora_B @ self.sat_in.lora_A   # (h, 3d + K)
        w_u, w_e, w_ue, w_z = w.split([d, d, d, K], dim=1)
        return {"table": table, "e_sat": e_sat, "item_in": e_sat @ w_e.T + self.sat_in.base.bias,   # (n + 1, h)
                "w_u": w_u, "w_ue": w_ue, "w_z": w_z}

    def serve(self, u: torch.Tensor, ids: torch.Tensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. (3) for B requests: (B, d) states, (B, C) item ids -> (B, C) scores."""
        B, d = u.shape
        e = cache["table"][ids]                                            # (B, C, d)
        q = self.dense_proj(u).view(B, len(DENSE_TASKS), d)                # (B, K, d)
        dense = e @ q.transpose(1, 2) + self.dense_bias(ids)               # (B, C, K)
        w_ue = cache["w_ue"].unsqueeze(0) * u.unsqueeze(1)                 # (B, h, d): W_ue diag(u)
        pre = cache["item_in"][ids] + (u @ cache["w_u"].T).unsqueeze(1) \
            + cache["e_sat"][ids] @ w_ue.transpose(1, 2) + dense @ cache["w_z"].T   # (B, C, h)
        sat = self.sat_out(F.gelu(pre)).squeeze(-1) + self.sat_bias(ids).squeeze(-1)   # (B, C)
        return self.fused(dense, sat)


def dpo_loss(s_w: torch.Tensor, s_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Mean DPO loss, Eq. (4): ``-log sigma(beta [(s_w - ref_w) - (s_l - ref_l)])``.

    Args:
        s_w, s_l: (P,) policy scores of the preferred and the rejected item of each pair.
        ref_w, ref_l: (P,) the reference's scores of the same items in the same contexts.
        beta: inverse temperature of the implicit reward.
    """
    return -F.logsigmoid(beta * ((s_w - ref_w) - (s_l - ref_l))).mean()


def dense_loss(dense: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
    """Masked multi-task BCE: (..., K) logits and targets in [0, 1], (...) mask, (K,) weights."""
    bce = F.binary_cross_entropy_with_logits(dense, targets, reduction="none")   # (..., K)
    return ((bce @ weights) * mask).sum() / mask.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------- training examples

@dataclass(frozen=True)
class _Windows:
    """One epoch of backbone examples: W windows of clicks, M impression slots each."""
    inputs: np.ndarray     # (W, L) model ids of the window's clicks
    cols: np.ndarray       # (W, M) state of each slot: index into the window's positions, L = empty history
    items: np.ndarray      # (W, M) model ids of the impressions (0 = empty slot)
    targets: np.ndarray    # (W, M, K) float32 labels of the dense tasks
    mask: np.ndarray       # (W, M) float32, 1 for a real slot


@dataclass(frozen=True)
class _Impressions:
    """Impressions with their own histories (online multi-task steps)."""
    hist: np.ndarray       # (N, L)
    items: np.ndarray      # (N,)
    targets: np.ndarray    # (N, K)


@dataclass(frozen=True)
class _Answers:
    """Answered questionnaires: satisfaction BCE (tower, or the LoRA path for w/o DPO)."""
    hist: np.ndarray       # (N, L)
    items: np.ndarray      # (N,)
    labels: np.ndarray     # (N,) float32, 1 = like


@dataclass(frozen=True)
class _Pairs:
    """DPO preference pairs in one context each."""
    hist: np.ndarray       # (P, L) history before the earlier of the two impressions
    items: np.ndarray      # (P, 2) model ids (y_w, y_l)


@dataclass(frozen=True)
class _Events:
    """Questionnaire exposures with their contexts (kept as a buffer between updates)."""
    users: np.ndarray      # (n,) int64
    items: np.ndarray      # (n,) int64 item ids
    ts: np.ndarray         # (n,) float64
    kind: np.ndarray       # (n,) int8: 1 winner (like), 0 loser, -1 neither
    label: np.ndarray      # (n,) float32 satisfaction label (1 like, 0 loser answer, nan unanswered/other)
    hist: np.ndarray       # (n, L) model ids of the click history before the impression

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx: np.ndarray) -> _Events:
        return _Events(*(getattr(self, f)[idx] for f in ("users", "items", "ts", "kind", "label", "hist")))

    @staticmethod
    def concat(a: _Events, b: _Events) -> _Events:
        return _Events(*(np.concatenate([getattr(a, f), getattr(b, f)])
                         for f in ("users", "items", "ts", "kind", "label", "hist")))


def _histories(clicks: Sequences, rows: np.ndarray, before: np.ndarray, length: int) -> np.ndarray:
    """(N, length) model ids of the last ``length`` of the first ``before[n]`` clicks of row
    ``rows[n]`` of ``clicks`` (right-aligned, 0 = padding; row -1 = no clicks)."""
    ok = rows >= 0
    r = np.where(ok, rows, 0)
    lens = np.where(ok, np.minimum(before, length), 0)                    # (N,)
    ends = (clicks.offsets[r] + before) if len(clicks) else np.zeros(len(rows), np.int64)
    col = np.arange(length)[None, :]
    idx = ends[:, None] - length + col                                     # (N, L)
    valid = col >= length - lens[:, None]
    out = np.zeros((len(rows), length), np.int64)
    out[valid] = clicks.items[idx[valid]] + 1
    return out


def _clicks_before(users: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """(N,) clicks of the same user strictly before each event (events sorted by user, time)."""
    c = np.cumsum(ev, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    first = np.repeat(c[starts] - ev[starts], np.diff(np.r_[starts, len(users)]))
    return c - ev - first


def _tail(seqs: Sequences, length: int) -> Sequences:
    """The newest ``length`` events of each row."""
    return seqs.select(seqs.event_rank >= np.repeat(seqs.lengths - length, seqs.lengths))


def _pairs(events: _Events, window_s: float, new: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(winner index, loser index) of every pair of one user within ``window_s`` seconds (and, with
    ``new``, with at least one new event); same-item pairs are dropped."""
    w = pd.DataFrame({"u": events.users[events.kind == 1], "iw": np.flatnonzero(events.kind == 1)})
    lo = pd.DataFrame({"u": events.users[events.kind == 0], "il": np.flatnonzero(events.kind == 0)})
    m = w.merge(lo, on="u")
    iw, il = m["iw"].to_numpy(np.int64), m["il"].to_numpy(np.int64)
    keep = (np.abs(events.ts[iw] - events.ts[il]) <= window_s) & (events.items[iw] != events.items[il])
    if new is not None:
        keep &= new[iw] | new[il]
    return iw[keep], il[keep]


@contextmanager
def _trainable(model: nn.Module, params: list[nn.Parameter]):
    """Only ``params`` require gradients inside the block (the optimiser skips the others)."""
    keep = {id(p) for p in params}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


# ----------------------------------------------------------------------------- the policy

@register_policy("easq", "EASQ: multi-task backbone + LoRA satisfaction path aligned online by DPO on "
                         "questionnaire pairs (deterministic)")
@dataclass
class EASQ:
    """EASQ (see the module docstring for the model, the equations and the choices made).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        max_len: clicks of history read (capped by the feature store's history length).
        d_model, n_layers, n_heads, dropout: the backbone encoder (:class:`EncoderConfig`).
        item_features: item-table columns whose embeddings are added to the item-id embedding.
        task_weights: weights of the dense losses (effective view, watch fraction, like).
        fusion: (w_ev, w_watch, w_like, w_sat), the ranking score, Eq. (3).
        impressions_per_window: impression slots sampled per click window and epoch.
        batch_size, lr, max_epochs, patience: backbone training (windows per mini-batch).
        valid_share: share of users held out for the backbone's early stopping.
        sat_epochs, sat_lr: the satisfaction tower's offline BCE.
        use_lora: the LoRA side path (False: "w/o LoRA", alignment on the whole network).
        lora_rank, lora_alpha: rank r and scale alpha of the side path.
        objective: "dpo" (Eq. 4) or "bce" ("w/o DPO": BCE of the LoRA-on satisfaction logit).
        beta: DPO inverse temperature.
        pair_window_s: the two questionnaire events of a pair are at most this far apart.
        loser_answers: answers that make an item the rejected one of a pair (and label 0).
        unanswered_losers: shown-but-unanswered questionnaires are rejected items too.
        align_epochs, align_lr: offline alignment on the training logs' pairs.
        align_batch_size: pairs per mini-batch.
        online: False = "offline-only" (``update`` does nothing).
        update_epochs: passes over each update's new examples (multi-task and alignment).
        update_lr: learning rate of the online multi-task steps.
        update_align_lr: learning rate of the online alignment steps.
        update_dense_samples: new impressions used by one online multi-task step at most
            (0 = no online multi-task step).
        ref_refresh: updates between refreshes of the reference snapshot (w/o LoRA only; 0 =
            never refreshed).
        progress: tqdm bars while training.
    """
    temperature: float | None = None
    max_len: int = 30
    d_model: int = 32
    n_layers: int = 1
    n_heads: int = 1
    dropout: float = 0.1
    item_features: tuple[str, ...] = ("l1", "l2", "leaf", "author_id")
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    fusion: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    impressions_per_window: int = 64
    batch_size: int = 64
    lr: float = 2e-3
    max_epochs: int = 6
    patience: int = 1
    valid_share: float = 0.05
    sat_epochs: int = 20
    sat_lr: float = 3e-3
    use_lora: bool = True
    lora_rank: int = 4
    lora_alpha: float = 4.0
    objective: str = "dpo"
    beta: float = 1.0
    pair_window_s: float = 86400.0
    loser_answers: tuple[str, ...] = ("neutral", "dislike", "unsuitable", "adults_only")
    unanswered_losers: bool = True
    align_epochs: int = 10
    align_lr: float = 1e-3
    align_batch_size: int = 256
    online: bool = True
    update_epochs: int = 1
    update_lr: float = 1e-3
    update_align_lr: float = 3e-3
    update_dense_samples: int = 2048
    ref_refresh: int = 24
    progress: bool = False
    # fitted state
    fitted_: bool = field(default=False, init=False)
    model_: EASQNet | None = field(default=None, init=False, repr=False)
    reference_: EASQNet | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    clicks_: Sequences | None = field(default=None, init=False, repr=False)
    events_: _Events | None = field(default=None, init=False, repr=False)
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    n_updates_: int = field(default=0, init=False)
    update_stats_: list[dict] = field(default_factory=list, init=False, repr=False)
    table_: dict | None = field(default=None, init=False, repr=False)   # serving cache

    # -- the protocol ----------------------------------------------------------------------

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Offline training: backbone (dense multi-task), satisfaction tower (BCE on answers),
        then the alignment objective on the LoRA path (or the whole network without LoRA).

        Raises:
            ValueError: oracle or missing columns, no impressions, no effective view, or a bad
                parameter.
        """
        check_observable(train, required=EASQ_COLUMNS)
        self._validate()
        n_items = n_items_of(train)
        side = self._item_side(train, n_items)
        frame = train.impressions.iloc[chronological_order(train.impressions)]
        ev = frame["effective_view"].to_numpy(bool)
        if not ev.any():
            raise ValueError("train has no effective view; EASQ needs click histories to learn from")
        config = EASQConfig(
            encoder=EncoderConfig(n_items=n_items, max_len=self.max_len, d_model=self.d_model,
                                  n_layers=self.n_layers, n_heads=self.n_heads, dropout=self.dropout,
                                  side_sizes=tuple(int(a.max()) + 1 for a in side)),
            lora_rank=self.lora_rank if self.use_lora else 0, lora_alpha=self.lora_alpha,
            isolate=self.use_lora, fusion=tuple(float(w) for w in self.fusion))
        side_t = torch.from_numpy(np.stack(side)) if side else None
        model = build_module(lambda: EASQNet(config, side_t), rng)
        self.model_, self.n_items_, self.history_ = model, n_items, []
        self.n_updates_, self.update_stats_ = 0, []

        users = frame["user_id"].to_numpy(np.int64)
        clicks = Sequences.from_events(users[ev], frame["item_id"].to_numpy(np.int64)[ev])
        before = _clicks_before(users, ev)
        rows = clicks.rows_of(users)
        # 1. backbone: dense multi-task on click windows, Eq. (1)
        windows = self._window_index(users, clicks, rows, before)
        targets = self._dense_targets(frame)
        self._fit_backbone(windows, frame["item_id"].to_numpy(np.int64), targets, rng)
        # 2. satisfaction tower: BCE on answered questionnaires, Eq. (2)
        events = self._events(frame, _histories(clicks, rows, before, self.max_len))
        answered = np.flatnonzero(~np.isnan(events.label))
        if len(answered) and self.sat_epochs:
            with _trainable(model, model.satisfaction_parameters()):
                self._train(self._answers(events, answered), self._sat_loss, self.sat_epochs, self.sat_lr,
                            rng, batch_size=self.align_batch_size)
        # 3. alignment on the training logs' pairs, Eq. (4)
        self.reference_ = None if self.use_lora else self._snapshot()
        self._align(events, None, self.align_epochs, self.align_lr, rng)
        if not self.use_lora:
            self.reference_ = self._snapshot()
        self.clicks_ = _tail(clicks, self.max_len)
        last = float(frame["ts"].max())
        self.events_ = events.take(np.flatnonzero((events.ts >= last - self.pair_window_s) & (events.kind >= 0)))
        self.rng_ = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))
        self._cache()
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) ranking scores, Eq. (3), of the candidates for the user's live click history
        (the feature store's ``clicks``, newest ``max_len``)."""
        check_fitted(self)
        cands = np.asarray(batch.candidates)
        if cands.size and (cands.min() < 0 or cands.max() >= self.n_items_):
            bad = cands[(cands < 0) | (cands >= self.n_items_)]
            raise ValueError(f"candidate item id {int(bad[0])} is outside the fitted catalogue "
                             f"[0, {self.n_items_})")
        length = min(self.max_len, getattr(batch.features, "history_length", self.max_len))
        hist, _ = batch.features.history("clicks", np.asarray(batch.user_ids), length)   # (B, L), PAD
        ids = torch.from_numpy(to_model_ids(cands))                                      # (B, C)
        with torch.inference_mode():
            u = self.model_.encoder.encode_last(torch.from_numpy(to_model_ids(hist)))   # (B, d)
            scores = self.model_.serve(u, ids, self.table_)                              # (B, C)
        return scores.numpy().astype(np.float64)

    def update(self, new: LogData) -> None:
        """Online learning on the bucket's logs since the last call: multi-task steps on the new
        impressions, then alignment steps on the pairs with a new questionnaire event (see the
        module docstring). Does nothing with ``online=False``."""
        check_fitted(self)
        if not self.online or len(new.impressions) == 0:
            return
        check_observable(new, required=EASQ_COLUMNS, where="new")
        frame = new.impressions.iloc[chronological_order(new.impressions)]
        items = frame["item_id"].to_numpy(np.int64)
        bad = items[(items < 0) | (items >= self.n_items_)]
        if len(bad):
            raise ValueError(f"new logs have item id {int(bad[0])} outside the fitted catalogue "
                             f"[0, {self.n_items_}); refit")
        users = frame["user_id"].to_numpy(np.int64)
        ev = frame["effective_view"].to_numpy(bool)
        fresh = Sequences.from_events(users[ev], items[ev])
        old = self.clicks_
        n_old = np.zeros(len(users), np.int64)
        r_old = old.rows_of(users)
        n_old[r_old >= 0] = old.lengths[r_old[r_old >= 0]]
        clicks = merge(old, fresh)
        before = n_old + _clicks_before(users, ev)
        hist = _histories(clicks, clicks.rows_of(users), before, self.max_len)        # (N, L)
        rng = self.rng_
        stats = {"impressions": len(frame)}
        # (a) multi-task steps on the dense stream, Eq. (1)
        if self.update_dense_samples > 0 and self.update_epochs > 0:
            pick = np.sort(rng.choice(len(frame), min(len(frame), self.update_dense_samples), replace=False))
            data = _Impressions(hist[pick], to_model_ids(items[pick]), self._dense_targets(frame)[pick])
            with _trainable(self.model_, self.model_.backbone_parameters()):
                self._train(data, self._impression_loss, self.update_epochs, self.update_lr, rng,
                            batch_size=512)
        # (b) alignment steps on pairs with a new questionnaire event, Eq. (4)
        events = self._events(frame, hist)
        events = events.take(np.flatnonzero(events.kind >= 0))
        buffer = self.events_
        both = _Events.concat(buffer, events)
        is_new = np.r_[np.zeros(len(buffer), bool), np.ones(len(events), bool)]
        stats.update(self._align(both, is_new, self.update_epochs, self.update_align_lr, rng))
        last = float(frame["ts"].max())
        self.events_ = both.take(np.flatnonzero(both.ts >= last - self.pair_window_s))
        self.clicks_ = _tail(clicks, self.max_len)
        self.n_updates_ += 1
        if not self.use_lora and self.ref_refresh and self.n_updates_ % self.ref_refresh == 0:
            self.reference_ = self._snapshot()
        self._cache()
        self.update_stats_.append(stats)

    # -- training stages -------------------------------------------------------------------

    def _fit_backbone(self, windows: tuple, items: np.ndarray, targets: np.ndarray,
                      rng: np.random.Generator) -> None:
        """Dense multi-task training on click windows with early stopping on held-out users."""
        inputs, win_users, imp_win, imp_col = windows
        model = self.model_
        uniq = np.unique(win_users)
        n_valid = int(round(self.valid_share * len(uniq))) if len(uniq) >= 20 else 0
        valid_users = rng.choice(uniq, n_valid, replace=False) if n_valid else np.zeros(0, np.int64)
        is_valid_win = np.isin(win_users, valid_users)
        train_win, valid_win = np.flatnonzero(~is_valid_win), np.flatnonzero(is_valid_win)
        M = self.impressions_per_window

        def make(win: np.ndarray, r: np.random.Generator, slots: int) -> _Windows:
            renum = np.full(len(inputs), -1, np.int64)
            renum[win] = np.arange(len(win))
            w_of = renum[imp_win]                                          # (N,) -1 = other split
            sel = np.flatnonzero(w_of >= 0)
            key = r.random(len(sel))
            order = sel[np.lexsort((key, w_of[sel]))]
            w_sorted = w_of[order]
            starts = np.flatnonzero(np.r_[True, w_sorted[1:] != w_sorted[:-1]]) if len(order) else order
            rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            keep = rank < slots
            order, w_sorted, rank = order[keep], w_sorted[keep], rank[keep]
            cols = np.full((len(win), slots), self.max_len, np.int64)
            its = np.zeros((len(win), slots), np.int64)
            tg = np.zeros((len(win), slots, len(DENSE_TASKS)), np.float32)
            mask = np.zeros((len(win), slots), np.float32)
            cols[w_sorted, rank] = imp_col[order]
            its[w_sorted, rank] = items[order] + 1
            tg[w_sorted, rank] = targets[order]
            mask[w_sorted, rank] = 1.0
            return _Windows(inputs[win], cols, its, tg, mask)

        evaluate = None
        if len(valid_win):
            vw = make(valid_win, rng, M)                        # drawn once per fit
            vt = {k: torch.from_numpy(getattr(vw, k)) for k in ("inputs", "cols", "items", "targets", "mask")}
            vw_data = _Windows(**vt)

            def evaluate(m: EASQNet) -> float:
                return -float(self._window_loss(m, vw_data))

        config = TrainConfig(batch_size=self.batch_size, lr=self.lr, max_epochs=self.max_epochs,
                             patience=self.patience, progress=self.progress, desc="easq backbone")
        with _trainable(model, model.backbone_parameters()):
            result = train_model(model, lambda r: make(train_win, r, M), self._window_loss, evaluate, config, rng)
        self.history_ += result.history

    def _align(self, events: _Events, is_new: np.ndarray | None, epochs: int, lr: float,
               rng: np.random.Generator) -> dict:
        """The alignment objective on ``events``: DPO pairs (Eq. 4) or BCE on answers (w/o DPO),
        on the LoRA path or, without LoRA, on the whole network."""
        model = self.model_
        if self.use_lora and model.config.lora_rank == 0:
            return {"pairs": 0}
        params = model.lora_parameters() if self.use_lora else list(model.parameters())
        if self.objective == "bce":
            idx = np.flatnonzero(~np.isnan(events.label) & (True if is_new is None else is_new))
            if len(idx) == 0 or epochs == 0:
                return {"answers": int(len(idx))}
            with _trainable(model, params):
                self._train(self._answers(events, idx), self._align_bce_loss, epochs, lr, rng,
                            batch_size=self.align_batch_size)
            return {"answers": int(len(idx))}
        iw, il = _pairs(events, self.pair_window_s, is_new)
        if len(iw) == 0 or epochs == 0:
            return {"pairs": int(len(iw))}
        ctx = np.where(events.ts[iw] <= events.ts[il], iw, il)            # the earlier event's history
        data = _Pairs(events.hist[ctx], to_model_ids(np.c_[events.items[iw], events.items[il]]))
        with _trainable(model, params):
            self._train(data, self._dpo_loss, epochs, lr, rng, batch_size=self.align_batch_size)
        return {"pairs": int(len(iw))}

    def _train(self, data, loss_fn, epochs: int, lr: float, rng: np.random.Generator, *, batch_size: int) -> None:
        config = TrainConfig(batch_size=batch_size, lr=lr, max_epochs=max(epochs, 1), patience=max(epochs, 1),
                             progress=False)
        result = train_model(self.model_, lambda r: data, loss_fn, None, config, rng)
        self.history_ += result.history

    # -- losses ----------------------------------------------------------------------------

    def _window_loss(self, model: EASQNet, b: _Windows) -> torch.Tensor:
        """Eq. (1) over window slots: one causal pass per window, each slot scored with the state
        after the last click before it."""
        h = model.encoder(b.inputs)                                        # (W, L, d)
        h = torch.cat([h, h.new_zeros(h.shape[0], 1, h.shape[2])], dim=1)  # (W, L + 1, d); L = no history
        u = torch.gather(h, 1, b.cols.unsqueeze(-1).expand(-1, -1, h.shape[2]))   # (W, M, d)
        dense, _ = model.dense_logits(u, b.items)                          # (W, M, K)
        return dense_loss(dense, b.targets, b.mask, self._task_weights())

    def _impression_loss(self, model: EASQNet, b: _Impressions) -> torch.Tensor:
        u = model.user_state(b.hist)                                       # (N, d)
        dense, _ = model.dense_logits(u, b.items)                          # (N, K)
        return dense_loss(dense, b.targets, torch.ones(len(b.items)), self._task_weights())

    def _sat_loss(self, model: EASQNet, b: _Answers) -> torch.Tensor:
        """BCE of the satisfaction tower without its LoRA path (offline, Eq. 2)."""
        u = model.user_state(b.hist, frozen=True)                         # (N, d)
        _, sat = model.logits(u, b.items, lora=False, backbone_grad=False)   # (N,)
        return F.binary_cross_entropy_with_logits(sat, b.labels)

    def _align_bce_loss(self, model: EASQNet, b: _Answers) -> torch.Tensor:
        """w/o DPO: BCE of the satisfaction logit with the LoRA path on."""
        isolate = self.use_lora and model.config.isolate
        u = model.user_state(b.hist, frozen=isolate)
        _, sat = model.logits(u, b.items, lora=True, backbone_grad=not isolate)
        return F.binary_cross_entropy_with_logits(sat, b.labels)

    def _dpo_loss(self, model: EASQNet, b: _Pairs) -> torch.Tensor:
        """Eq. (4): the model with its LoRA path against itself without (or against the snapshot)."""
        isolate = self.use_lora and model.config.isolate
        u = model.user_state(b.hist, frozen=isolate)                       # (P, d)
        s = model.score(u.unsqueeze(1), b.items, backbone_grad=not isolate)   # (P, 2)
        with torch.no_grad():
            if self.use_lora:
                ref = model.score(u.unsqueeze(1), b.items, lora=False)     # (P, 2)
            else:
                ref = self.reference_.score(self.reference_.user_state(b.hist).unsqueeze(1), b.items)
        return dpo_loss(s[:, 0], s[:, 1], ref[:, 0], ref[:, 1], self.beta)

    # -- data ------------------------------------------------------------------------------

    def _window_index(self, users: np.ndarray, clicks: Sequences, rows: np.ndarray, before: np.ndarray):
        """Click windows of ``max_len`` (newest first, right-aligned) and each impression's window
        and state column.

        Returns:
            inputs (W, L) model ids, win_users (W,), imp_win (N,), imp_col (N,).
        """
        L = self.max_len
        all_users = np.unique(users)
        n_clicks = np.zeros(len(all_users), np.int64)
        r = clicks.rows_of(all_users)
        n_clicks[r >= 0] = clicks.lengths[r[r >= 0]]
        n_win = np.maximum((n_clicks + L - 1) // L, 1)                      # no click: one empty window
        win_user_idx = np.repeat(np.arange(len(all_users)), n_win)
        k = np.arange(len(win_user_idx)) - np.repeat(np.cumsum(n_win) - n_win, n_win)   # 0 = newest window
        ends = n_clicks[win_user_idx] - k * L                               # exclusive end (click index)
        inputs = _histories(clicks, r[win_user_idx], np.maximum(ends, 0), L)   # (W, L)
        first_win = np.cumsum(n_win) - n_win                                # index of each user's newest window
        u_idx = np.searchsorted(all_users, users)                           # (N,)
        j = before - 1                                                      # state after click j (-1: none)
        n = n_clicks[u_idx]
        kk = np.where(j >= 0, (n - 1 - j) // L, n_win[u_idx] - 1)
        imp_win = first_win[u_idx] + kk
        imp_col = np.where(j >= 0, L - (n - kk * L - j), L)
        return inputs, all_users[win_user_idx], imp_win, imp_col

    @staticmethod
    def _dense_targets(frame: pd.DataFrame) -> np.ndarray:
        """(N, K) labels: effective view, watch fraction in [0, 1], like."""
        duration = np.maximum(frame["duration"].to_numpy(np.float64), 1e-9)
        frac = np.clip(frame["watch_time"].to_numpy(np.float64) / duration, 0.0, 1.0)
        return np.stack([frame["effective_view"].to_numpy(np.float32), frac.astype(np.float32),
                         frame["like"].to_numpy(np.float32)], axis=1)

    def _events(self, frame: pd.DataFrame, hist: np.ndarray) -> _Events:
        """The questionnaire exposures of ``frame`` (chronological) with their histories."""
        shown = frame["survey_shown"].to_numpy(bool)
        answer = frame["survey_answer"].astype(object).to_numpy()[shown]
        submitted = frame["survey_submitted"].to_numpy(bool)[shown]
        win = submitted & np.isin(answer, SATISFIED_ANSWERS)
        lose_answer = submitted & np.isin(answer, tuple(self.loser_answers))
        lose = lose_answer | (~submitted if self.unanswered_losers else False)
        kind = np.where(win, 1, np.where(lose, 0, -1)).astype(np.int8)
        label = np.where(win, 1.0, np.where(lose_answer, 0.0, np.nan)).astype(np.float32)
        return _Events(frame["user_id"].to_numpy(np.int64)[shown], frame["item_id"].to_numpy(np.int64)[shown],
                       frame["ts"].to_numpy(np.float64)[shown], kind, label, hist[shown])

    @staticmethod
    def _answers(events: _Events, idx: np.ndarray) -> _Answers:
        return _Answers(events.hist[idx], to_model_ids(events.items[idx]), events.label[idx])

    def _item_side(self, train: LogData, n_items: int) -> list[np.ndarray]:
        items = train.items
        missing = [f for f in (*self.item_features, "item_id") if f not in items.columns]
        if self.item_features and missing:
            raise ValueError(f"item_features={tuple(self.item_features)}: the item table has no column(s) "
                             f"{', '.join(map(repr, missing))}")
        out = []
        for f in self.item_features:
            values = np.zeros(n_items, np.int64)
            values[items["item_id"].to_numpy()] = items[f].to_numpy()
            out.append(values)
        return out

    # -- helpers ---------------------------------------------------------------------------

    def _task_weights(self) -> torch.Tensor:
        return torch.tensor(tuple(self.task_weights), dtype=torch.float32)

    def _snapshot(self) -> EASQNet:
        ref = copy.deepcopy(self.model_)
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def _cache(self) -> None:
        with torch.inference_mode():
            self.table_ = self.model_.serving_cache()

    def _validate(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 or None")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} must be one of {', '.join(OBJECTIVES)}")
        if len(tuple(self.task_weights)) != len(DENSE_TASKS):
            raise ValueError(f"task_weights={tuple(self.task_weights)} must have {len(DENSE_TASKS)} weights")
        if len(tuple(self.fusion)) != len(DENSE_TASKS) + 1:
            raise ValueError(f"fusion={tuple(self.fusion)} must have {len(DENSE_TASKS) + 1} weights")
        for name in ("max_len", "impressions_per_window", "batch_size", "align_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.use_lora and self.lora_rank < 1:
            raise ValueError(f"lora_rank={self.lora_rank} must be >= 1 with use_lora=True")
        for name in ("beta", "pair_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("sat_epochs", "align_epochs", "update_epochs", "update_dense_samples", "ref_refresh"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.valid_share < 1:
            raise ValueError(f"valid_share={self.valid_share} must be in [0, 1)")
        bad = [a for a in self.loser_answers if a in SATISFIED_ANSWERS]
        if bad:
            raise ValueError(f"loser_answers={tuple(self.loser_answers)} must not contain {bad}")


VARIANTS: dict[str, dict] = {
    "EASQ": {},
    "w/o LoRA": {"use_lora": False},
    "w/o DPO": {"objective": "bce"},
    "offline-only": {"online": False},
}
"""The ablation rows: ``make_policy("easq", **VARIANTS[row])``."""
