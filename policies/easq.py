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
   duration`` clipped to [0, 1]) on every impression.
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
   isolation; tested, also through the training loop).
3. **Ranking score and DPO alignment.** The model's output, the score the platform ranks by,
   fuses the task logits with fixed weights ``fusion = (w_ev, w_watch, w_like, w_sat)``::

       s(x, i) = sum_k w_k z_k(x, i) + w_sat z_sat(x, i)                                (3)

   Questionnaire preferences are pairs of items shown to one user at most ``pair_window_s``
   apart: ``y_w`` answered ``like`` (satisfied), ``y_l`` answered one of ``loser_answers`` or was
   shown and not answered (unanswered-exposed, with ``unanswered_losers``). With the reference
   ``s_ref`` = the same network with the side path off::

       L_DPO = -log sigma(beta [(s(x, y_w) - s_ref(x, y_w)) - (s(x, y_l) - s_ref(x, y_l))])   (4)

   The backbone is frozen in (4), so ``s - s_ref = w_sat (z_sat - z_sat|B=0)``: only the side
   path moves the score. The bracket is the pair's *margin*. A pair's context ``x`` is the
   context of the *earlier* of its two impressions, so both items are scored in one context; a
   per-context constant cancels in (4) (tested), and (4) = log 2 while ``B = 0``.

**Contexts are cut at the page request.** The platform ranks a page of items in one call and
records the page in its feature store after the user has watched it, so an impression is served
with the clicks of the user's *earlier requests* only. Every training context (the backbone's
Eq. 1 examples, the satisfaction tower's answers, the DPO pairs, and the online steps) is that
history: the user's clicks in the pages requested before the impression's page
(:func:`page_order`, :func:`_clicks_before_request`; tested against a feature store replayed
request by request). Rows are ordered by page, not by row time: a long page's later rows can be
logged after the user's next request, but the store recorded the whole page when it was served.

**Online learning.** Under ``learning = "update"`` the A/B runner calls :meth:`EASQ.update` with
the bucket's new logs every ``update_interval_s`` simulated seconds, as it calls every other
policy's. Each call takes ``epochs`` (the experiment's ``update_epochs``) passes of (a) the
multi-task loss (1) on up to ``update_dense_samples`` of the new impressions (the backbone follows
the dense stream), then (b) the alignment loss (4) on every pair with a new questionnaire event,
pairing new events with the recent ones kept in a buffer of ``pair_window_s`` seconds. The offline
satisfaction tower stays fixed online: all online questionnaire learning goes through the side
path. Pages requested at or before their user's last seen page (overlapping or older logs) are
dropped and counted (:attr:`UpdateStats.stale`), so the kept click histories stay in serving
order. ``update`` expects whole pages, as the A/B runner hands them over.

Online steps scale with the evidence:

- (b) is plain SGD on the loss *summed* over pairs (``update_align_lr`` per pair): a round with
  one pair moves the side path by one pair's gradient, a round with 500 pairs by their sum, and
  an item seen in one pair gets one pair's nudge (a fresh Adam per round would move every touched
  coordinate by exactly ``lr``, whatever the evidence: its first step is ``lr * sign(g)``). The
  summed gradient's norm is capped at ``update_max_grad_norm`` (5): the summed loss's curvature
  grows with the pairs, and without a cap SGD diverged at ``lr = 0.5`` in hours with ~100 pairs.
  ``update_align_lr = 0.3`` was chosen on the slow test's questionnaire-dense world (600 users,
  3 world seeds): at 0.1 online DPO alone moved oracle satisfaction by +0.003 (in the noise), at
  0.3 by +0.013 (sign-flipped DPO: -0.013); see docs/notes/easq.md.
- (a) runs a persistent Adam (:attr:`EASQ.dense_opt_`, made at the end of ``fit``) whose moments
  carry over between rounds, so after the first rounds a step is the gradient against its running
  scale rather than a sign step. The dense stream is large and regular (``update_dense_samples``
  impressions a round), so Adam's normalisation suits it there.

Each update records an :class:`UpdateStats`, including the mean margin of its new pairs *before*
the step: a prequential (not yet trained on) measure of what the side path has learned.

Switches (:data:`VARIANTS`):

- ``use_lora=False`` ("w/o LoRA"): no side path and no stop-gradient; (4) is applied to the whole
  network (backbone included), against a frozen snapshot of the network taken at the end of the
  offline fit and refreshed every ``ref_refresh`` updates. Its online alignment steps use a
  persistent Adam at ``update_lr`` (as the dense steps) instead of the side path's SGD: SGD at
  ``update_align_lr`` moves the backbone's small-scale embeddings (initial std 0.02) by steps of
  order 1 and wrecked it within the first experiment day (oracle satisfaction 0.35 against
  production's 0.45 in the 2,000-user A/B of docs/notes/easq.md). Both sides of (4) are encoded with
  dropout off, so that the implicit reward carries no dropout noise and (4) = log 2 at θ = ref.
- ``objective="bce"`` ("w/o DPO"): the side path is trained by BCE of ``z_sat`` (side path on) on
  answered questionnaires instead of (4); unanswered exposures are not used.
- ``online=False`` ("offline-only"): the same offline fit; ``update`` does nothing.
- ``fusion=(1, 1, 1, 0)`` ("click-only"): the satisfaction task does not reach the score: EASQ without
  its questionnaire parts, learning online the same way (the twin of the positive control).

Choices where the abstract is silent:

- "neutral" answers are losers by default (``like`` is preferred to ``neutral`` in a
  like / neutral / dislike survey); "suitable" on the inappropriate-content survey says nothing
  about satisfaction and is ignored. Unanswered exposures of either survey type are losers.
- The satisfaction tower is an MLP that reads the dense logits: satisfaction is learned *on top
  of* the behaviour model from a few thousand answers, not from scratch. (A dot-product tower
  like (1) on ``sg u``, ``sg e`` reached a satisfaction AUC among clicks of 0.607 against the
  MLP's 0.645, alone, on a 2,000-user world with questionnaires after half the effective views.)
- Offline, after the backbone and the satisfaction tower, the side path is aligned on the
  training logs' pairs (``align_epochs``, Adam), so the offline model is complete and the online
  steps continue the same objective.
- The backbone is trained on windows of each user's click sequence (``max_len`` clicks; one
  causal pass gives the state after every click; each impression is attached to the state after
  the last click of the user's earlier requests; ``impressions_per_window`` of them are sampled
  per window and epoch), 30x cheaper than one pass per impression; early stopping on the dense
  loss of a held-out share of users. As in SASRec's training, a state inside a window has that
  window's positions and only the window's earlier clicks, while serving (and the online steps,
  which encode each impression's own history) reads the newest ``max_len`` clicks ending at the
  last position.
- Fusion by a weighted sum of logits (3) with fixed weights, so that (4) is linear in each task.
- Items the item table lacks get a dedicated "unknown" value of each attribute (not a real
  category).
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
from policies.data import (REQUIRED_COLUMNS, Sequences, check_observable, item_side, merge,
                           n_items_of, page_order, page_starts, to_model_ids)
from policies.encoders import EncoderConfig, SequenceEncoder
from policies.train import EpochRecord, TrainConfig, build_module, train_model
from simulator.schema import SATISFIED_ANSWERS, LogData, RankBatch

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
            # (..., d_in) -> (..., r) -> (..., d_out)
            y = y + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)
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
        self.lora_A = nn.Parameter(torch.randn(n, rank) / math.sqrt(max(rank, 1)))   # A^T: a row per id
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
        return [*self.encoder.parameters(), *self.dense_proj.parameters(),
                *self.dense_bias.parameters()]

    def satisfaction_parameters(self) -> list[nn.Parameter]:
        """The satisfaction tower without its LoRA path: ``W_in``, ``W_out`` and ``b_sat``."""
        return [*self.sat_in.base.parameters(), *self.sat_out.parameters(), *self.sat_bias.parameters()]

    def lora_parameters(self) -> list[nn.Parameter]:
        return [*self.sat_in.lora_parameters(), *self.item_lora.lora_parameters()]

    def user_state(self, hist: torch.Tensor, *, frozen: bool = False, dropout: bool = True) -> torch.Tensor:
        """(N, d) state of (N, L) click histories (model ids).

        Args:
            hist: (N, L) model ids, right-aligned.
            frozen: the backbone in eval mode without gradient (what questionnaire losses see
                under isolation).
            dropout: with ``frozen=False``, False encodes in eval mode but with gradient (both
                sides of the w/o LoRA DPO loss, so that the implicit reward has no dropout noise).
        """
        if not frozen and dropout:
            return self.encoder.encode_last(hist)
        with _eval_mode(self.encoder), torch.set_grad_enabled(not frozen and torch.is_grad_enabled()):
            return self.encoder.encode_last(hist)

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
        item_in = e_sat @ w_e.T + self.sat_in.base.bias                   # (n + 1, h)
        return {"table": table, "e_sat": e_sat, "item_in": item_in, "w_u": w_u, "w_ue": w_ue, "w_z": w_z}

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
    cols: np.ndarray       # (W, M) state of each slot: index into the window's positions, L = empty
    items: np.ndarray      # (W, M) model ids of the impressions (0 = empty slot)
    targets: np.ndarray    # (W, M, K) float32 labels of the dense tasks
    mask: np.ndarray       # (W, M) float32, 1 for a real slot


@dataclass(frozen=True)
class _WindowIndex:
    """Click windows of ``max_len`` (per user newest first, right-aligned) and where each
    impression's state is: the window position of the last click before its request."""
    inputs: np.ndarray     # (W, L) model ids
    users: np.ndarray      # (W,) user of each window
    imp_win: np.ndarray    # (N,) window of each impression
    imp_col: np.ndarray    # (N,) position in it (L = no click before the request)


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
    hist: np.ndarray       # (P, L) context of the earlier of the two impressions
    items: np.ndarray      # (P, 2) model ids (y_w, y_l)


_EVENT_FIELDS = ("users", "items", "ts", "kind", "label", "hist")


@dataclass(frozen=True)
class _Events:
    """Questionnaire exposures with their contexts (kept as a buffer between updates)."""
    users: np.ndarray      # (n,) int64
    items: np.ndarray      # (n,) int64 item ids
    ts: np.ndarray         # (n,) float64
    kind: np.ndarray       # (n,) int8: 1 winner (like), 0 loser, -1 neither
    label: np.ndarray      # (n,) float32 satisfaction (1 like, 0 loser answer, nan unanswered/other)
    hist: np.ndarray       # (n, L) model ids of the click history at the impression's request

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx: np.ndarray) -> _Events:
        return _Events(*(getattr(self, f)[idx] for f in _EVENT_FIELDS))

    @staticmethod
    def concat(a: _Events, b: _Events) -> _Events:
        return _Events(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in _EVENT_FIELDS))


@dataclass(frozen=True)
class _ClickContext:
    """Each impression's click history as the feature store held it at the impression's request."""
    clicks: Sequences      # every user's clicks (kept ones first), chronological
    rows: np.ndarray       # (N,) row of each impression's user in ``clicks`` (-1: none)
    before: np.ndarray     # (N,) the user's clicks before the impression's request

    def histories(self, length: int) -> np.ndarray:
        """(N, length) model ids, right-aligned, 0 = padding."""
        return _histories(self.clicks, self.rows, self.before, length)


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


def _clicks_before_request(users: np.ndarray, requests: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """(N,) the user's clicks in requests before each row's request: what the feature store held
    when the row's page was ranked (it records a page after the page is watched)."""
    return _clicks_before(users, ev)[page_starts(users, requests)]


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
def _trainable(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
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


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (no dropout) inside the block, its own mode after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _summed(loss_fn: Callable[[EASQNet, Any], torch.Tensor]) -> Callable[[EASQNet, Any], torch.Tensor]:
    """``loss_fn`` times the mini-batch size: a mean loss turned into a sum over examples."""
    return lambda model, b: loss_fn(model, b) * len(b.items)


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
        fusion: (w_ev, w_watch, w_like, w_sat), the ranking score, Eq. (3); w_sat >= 0. With
            w_sat = 0 (:data:`VARIANTS` "click-only") no questionnaire reaches the score: the
            twin that the positive control compares EASQ with, learning online the same way.
        impressions_per_window: impression slots sampled per click window and epoch.
        batch_size, lr, max_epochs, patience: backbone training (windows per mini-batch).
        valid_share: share of users held out for the backbone's early stopping.
        sat_epochs, sat_lr: the satisfaction tower's offline BCE.
        use_lora: the LoRA side path (False: "w/o LoRA", alignment on the whole network).
        lora_rank, lora_alpha: rank r and scale alpha > 0 of the side path.
        objective: "dpo" (Eq. 4) or "bce" ("w/o DPO": BCE of the LoRA-on satisfaction logit).
        beta: DPO inverse temperature.
        pair_window_s: the two questionnaire events of a pair are at most this far apart.
        loser_answers: answers that make an item the rejected one of a pair (and label 0).
        unanswered_losers: shown-but-unanswered questionnaires are rejected items too.
        align_epochs, align_lr: offline alignment (Adam) on the training logs' pairs.
        align_batch_size: pairs (or answers) per mini-batch.
        online: False = "offline-only" (``update`` does nothing).
        update_epochs: passes over each update's new examples (multi-task and alignment).
        update_lr: learning rate of the online multi-task steps (the persistent Adam).
        update_align_lr: SGD learning rate of the online side-path steps, per pair (w/o DPO: per
            answer); the loss is summed over the examples, so a round's step grows with them
            (w/o LoRA steps the whole network with Adam at ``update_lr`` instead).
        update_dense_samples: new impressions used by one online multi-task step at most
            (0 = no online multi-task step).
        update_max_grad_norm: cap on the norm of an online alignment step's summed gradient
            (None: no cap); a round's step grows with its pairs up to this bound, which keeps
            SGD stable in rounds with many pairs (the summed loss's curvature grows with them).
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
    update_align_lr: float = 0.3
    update_dense_samples: int = 2048
    update_max_grad_norm: float | None = 5.0
    ref_refresh: int = 24
    progress: bool = False
    # fitted state
    fitted_: bool = field(default=False, init=False)
    model_: EASQNet | None = field(default=None, init=False, repr=False)
    reference_: EASQNet | None = field(default=None, init=False, repr=False)
    dense_opt_: torch.optim.Optimizer | None = field(default=None, init=False, repr=False)
    align_opt_: torch.optim.Optimizer | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    clicks_: Sequences | None = field(default=None, init=False, repr=False)
    events_: _Events | None = field(default=None, init=False, repr=False)
    last_ts_: np.ndarray | None = field(default=None, init=False, repr=False)   # (n_users,) last request ts
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    n_updates_: int = field(default=0, init=False)
    update_stats_: list[UpdateStats] = field(default_factory=list, init=False, repr=False)
    table_: dict | None = field(default=None, init=False, repr=False)   # serving cache

    def __post_init__(self) -> None:
        self._validate()

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
        side = item_side(train.items, self.item_features, n_items, unknown=True)
        order, req_ts = page_order(train.impressions)
        frame = train.impressions.iloc[order]
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

        ctx = self._click_context(frame, None)
        # 1. backbone: dense multi-task on click windows, Eq. (1)
        self._fit_backbone(self._window_index(frame["user_id"].to_numpy(np.int64), ctx),
                           frame["item_id"].to_numpy(np.int64), self._dense_targets(frame), rng)
        # 2. satisfaction tower: BCE on answered questionnaires, Eq. (2)
        events = self._events(frame, ctx.histories(self.max_len))
        answered = np.flatnonzero(~np.isnan(events.label))
        if len(answered) and self.sat_epochs:
            with _trainable(model, model.satisfaction_parameters()):
                self._train(self._answers(events, answered), self._sat_loss, self.sat_epochs, self.sat_lr,
                            rng, batch_size=self.align_batch_size)
        # 3. alignment on the training logs' pairs, Eq. (4)
        self.reference_ = None if self.use_lora else self._snapshot()
        pairs, answers = self._alignment_data(events, None)
        self._align(pairs, answers, online=False, rng=rng)
        if not self.use_lora:
            self.reference_ = self._snapshot()
        # online state
        self.dense_opt_ = torch.optim.Adam(model.backbone_parameters(), lr=self.update_lr)
        aligned = self._alignment_parameters()
        self.align_opt_ = (torch.optim.SGD(aligned, lr=self.update_align_lr) if self.use_lora
                           else torch.optim.Adam(aligned, lr=self.update_lr))
        self.clicks_ = _tail(ctx.clicks, self.max_len)
        last = float(frame["ts"].max())
        recent = (events.ts >= last - self.pair_window_s) & (events.kind >= 0)
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
        (the feature store's ``clicks``, newest ``max_len``)."""
        check_fitted(self)
        cands = np.asarray(batch.candidates)
        check_ids(cands, self.n_items_)
        length = min(self.max_len, getattr(batch.features, "history_length", self.max_len))
        hist, _ = batch.features.history("clicks", np.asarray(batch.user_ids), length)   # (B, L), PAD
        ids = torch.from_numpy(to_model_ids(cands))                                      # (B, C)
        with torch.inference_mode():
            u = self.model_.encoder.encode_last(torch.from_numpy(to_model_ids(hist)))   # (B, d)
            scores = self.model_.serve(u, ids, self.table_)                              # (B, C)
        return scores.numpy().astype(np.float64)

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning on the bucket's logs since the last call: ``epochs`` passes (default
        ``update_epochs``) of multi-task steps on the new impressions, then of alignment steps on
        the pairs with a new questionnaire event (see the module docstring). Does nothing with
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
            self.update_stats_.append(UpdateStats(0, n_stale, 0, 0, 0, math.nan))
            return
        ctx = self._click_context(frame, self.clicks_)
        hist = ctx.histories(self.max_len)                                  # (N, L)
        rng, model = self.rng_, self.model_
        # (a) multi-task steps on the dense stream, Eq. (1), with the persistent Adam
        n_dense = 0
        if self.update_dense_samples > 0 and epochs > 0:
            pick = np.sort(rng.choice(len(frame), min(len(frame), self.update_dense_samples), replace=False))
            data = _Impressions(hist[pick], to_model_ids(items[pick]), self._dense_targets(frame)[pick])
            with _trainable(model, model.backbone_parameters()):
                self._train(data, self._impression_loss, epochs, self.update_lr, rng,
                            batch_size=512, optimizer=self.dense_opt_)
            n_dense = len(pick)
        # (b) alignment steps on pairs with a new questionnaire event, Eq. (4), by SGD on the sum
        events = self._events(frame, hist)
        events = events.take(np.flatnonzero(events.kind >= 0))
        both = _Events.concat(self.events_, events)
        is_new = np.r_[np.zeros(len(self.events_), bool), np.ones(len(events), bool)]
        pairs, answers = self._alignment_data(both, is_new)
        margin = float(self.pair_margins(pairs).mean()) if len(pairs.items) else math.nan
        self._align(pairs, answers, online=True, rng=rng, epochs=epochs)
        self.events_ = both.take(np.flatnonzero(both.ts >= float(ts.max()) - self.pair_window_s))
        self.clicks_ = _tail(ctx.clicks, self.max_len)
        self._see(users, req_ts)
        self.n_updates_ += 1
        if not self.use_lora and self.ref_refresh and self.n_updates_ % self.ref_refresh == 0:
            self.reference_ = self._snapshot()
        self._cache()
        self.update_stats_.append(UpdateStats(len(frame), n_stale, n_dense, len(pairs.items),
                                              len(answers.items), margin))

    def pair_margins(self, pairs: _Pairs) -> np.ndarray:
        """(P,) margins ``(s - s_ref)(y_w) - (s - s_ref)(y_l)`` of Eq. (4) (without beta) under
        the current model and reference, in eval mode: > 0 where the model prefers y_w more than
        the reference does."""
        check_fitted(self)
        with _eval_mode(self.model_), torch.no_grad():
            hist, items = torch.from_numpy(pairs.hist), torch.from_numpy(pairs.items)
            s, ref = self._pair_scores(self.model_, hist, items)
        return ((s[:, 0] - ref[:, 0]) - (s[:, 1] - ref[:, 1])).numpy().astype(np.float64)

    # -- training stages -------------------------------------------------------------------

    def _fit_backbone(self, index: _WindowIndex, items: np.ndarray, targets: np.ndarray,
                      rng: np.random.Generator) -> None:
        """Dense multi-task training on click windows with early stopping on held-out users."""
        model = self.model_
        uniq = np.unique(index.users)
        n_valid = int(round(self.valid_share * len(uniq))) if len(uniq) >= 20 else 0
        valid_users = rng.choice(uniq, n_valid, replace=False) if n_valid else np.zeros(0, np.int64)
        is_valid_win = np.isin(index.users, valid_users)
        train_win, valid_win = np.flatnonzero(~is_valid_win), np.flatnonzero(is_valid_win)
        M = self.impressions_per_window

        def make(win: np.ndarray, r: np.random.Generator, slots: int) -> _Windows:
            renum = np.full(len(index.inputs), -1, np.int64)
            renum[win] = np.arange(len(win))
            w_of = renum[index.imp_win]                                    # (N,) -1 = other split
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
            cols[w_sorted, rank] = index.imp_col[order]
            its[w_sorted, rank] = items[order] + 1
            tg[w_sorted, rank] = targets[order]
            mask[w_sorted, rank] = 1.0
            return _Windows(index.inputs[win], cols, its, tg, mask)

        evaluate = None
        if len(valid_win):
            vw = make(valid_win, rng, M)                        # drawn once per fit
            vw_data = _Windows(*(torch.from_numpy(getattr(vw, k))
                                 for k in ("inputs", "cols", "items", "targets", "mask")))

            def evaluate(m: EASQNet) -> float:
                return -float(self._window_loss(m, vw_data))

        config = TrainConfig(batch_size=self.batch_size, lr=self.lr, max_epochs=self.max_epochs,
                             patience=self.patience, progress=self.progress, desc="easq backbone")
        with _trainable(model, model.backbone_parameters()):
            result = train_model(model, lambda r: make(train_win, r, M), self._window_loss, evaluate,
                                 config, rng)
        self.history_ += result.history

    def _alignment_data(self, events: _Events, is_new: np.ndarray | None) -> tuple[_Pairs, _Answers]:
        """The DPO pairs of ``events`` (with a new event, given ``is_new``) in the context of their
        earlier impression, and the (new) answered questionnaires."""
        iw, il = _pairs(events, self.pair_window_s, is_new)
        ctx = np.where(events.ts[iw] <= events.ts[il], iw, il)            # the earlier event's context
        pairs = _Pairs(events.hist[ctx], to_model_ids(np.c_[events.items[iw], events.items[il]]))
        answered = ~np.isnan(events.label) & (True if is_new is None else is_new)
        return pairs, self._answers(events, np.flatnonzero(answered))

    def _alignment_parameters(self) -> list[nn.Parameter]:
        """What the alignment objective trains: the side path, or without LoRA the whole network."""
        return self.model_.lora_parameters() if self.use_lora else list(self.model_.parameters())

    def _align(self, pairs: _Pairs, answers: _Answers, *, online: bool, rng: np.random.Generator,
               epochs: int | None = None) -> None:
        """The alignment objective: DPO on ``pairs`` (Eq. 4) or, w/o DPO, BCE on ``answers``.

        Offline: ``align_epochs`` of Adam on the mean loss. Online: ``epochs`` (default
        ``update_epochs``) of the
        persistent SGD on the loss summed over the examples (``update_align_lr`` per example);
        w/o LoRA, of the persistent Adam on the mean loss (``update_lr``).
        """
        data, loss = (pairs, self._dpo_loss) if self.objective == "dpo" else (answers, self._align_bce_loss)
        epochs = (self.update_epochs if epochs is None else epochs) if online else self.align_epochs
        if len(data.items) == 0 or epochs == 0:
            return
        with _trainable(self.model_, self._alignment_parameters()):
            if online and self.use_lora:
                self._train(data, _summed(loss), epochs, self.update_align_lr, rng,
                            batch_size=self.align_batch_size, optimizer=self.align_opt_,
                            max_grad_norm=self.update_max_grad_norm)
            elif online:
                self._train(data, loss, epochs, self.update_lr, rng, batch_size=self.align_batch_size,
                            optimizer=self.align_opt_)
            else:
                self._train(data, loss, epochs, self.align_lr, rng, batch_size=self.align_batch_size)

    def _train(self, data: Any, loss_fn: Callable[[EASQNet, Any], torch.Tensor], epochs: int, lr: float,
               rng: np.random.Generator, *, batch_size: int, optimizer: torch.optim.Optimizer | None = None,
               max_grad_norm: float | None = None) -> None:
        """``epochs`` passes of ``loss_fn`` over ``data`` through :func:`train_model` (no
        validation); offline (``optimizer=None``, a fresh Adam) the epochs go to ``history_``."""
        config = TrainConfig(batch_size=batch_size, lr=lr, max_epochs=max(epochs, 1),
                             patience=max(epochs, 1), max_grad_norm=max_grad_norm, progress=False)
        result = train_model(self.model_, lambda r: data, loss_fn, None, config, rng, optimizer=optimizer)
        if optimizer is None:
            self.history_ += result.history

    # -- losses ----------------------------------------------------------------------------

    def _window_loss(self, model: EASQNet, b: _Windows) -> torch.Tensor:
        """Eq. (1) over window slots: one causal pass per window, each slot scored with the state
        after the last click of the user's earlier requests."""
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
        u = model.user_state(b.hist, frozen=True)                          # (N, d)
        _, sat = model.logits(u, b.items, lora=False, backbone_grad=False)   # (N,)
        return F.binary_cross_entropy_with_logits(sat, b.labels)

    def _align_bce_loss(self, model: EASQNet, b: _Answers) -> torch.Tensor:
        """w/o DPO: BCE of the satisfaction logit with the LoRA path on."""
        isolate = self.use_lora and model.config.isolate
        u = model.user_state(b.hist, frozen=isolate)
        _, sat = model.logits(u, b.items, lora=True, backbone_grad=not isolate)
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

    def _dpo_loss(self, model: EASQNet, b: _Pairs) -> torch.Tensor:
        """Eq. (4): the model with its LoRA path against itself without (or against the snapshot)."""
        s, ref = self._pair_scores(model, b.hist, b.items)
        return dpo_loss(s[:, 0], s[:, 1], ref[:, 0], ref[:, 1], self.beta)

    # -- data ------------------------------------------------------------------------------

    def _click_context(self, frame: pd.DataFrame, kept: Sequences | None) -> _ClickContext:
        """Each row's click history at its request: ``kept`` (the clicks seen before ``frame``,
        None in ``fit``) then the user's clicks in earlier requests of ``frame`` (chronological)."""
        users = frame["user_id"].to_numpy(np.int64)
        ev = frame["effective_view"].to_numpy(bool)
        fresh = Sequences.from_events(users[ev], frame["item_id"].to_numpy(np.int64)[ev])
        n_kept = np.zeros(len(users), np.int64)
        if kept is not None:
            r = kept.rows_of(users)
            n_kept[r >= 0] = kept.lengths[r[r >= 0]]
        clicks = fresh if kept is None else merge(kept, fresh)
        before = n_kept + _clicks_before_request(users, frame["request_id"].to_numpy(np.int64), ev)
        return _ClickContext(clicks, clicks.rows_of(users), before)

    def _window_index(self, users: np.ndarray, ctx: _ClickContext) -> _WindowIndex:
        """Cut every user's clicks into windows of ``max_len`` (newest window first) and attach
        each impression (``users``, rows of ``ctx``) to the state after the last click before its
        request."""
        L, clicks = self.max_len, ctx.clicks
        all_users = np.unique(users)
        n_clicks = np.zeros(len(all_users), np.int64)
        r = clicks.rows_of(all_users)
        n_clicks[r >= 0] = clicks.lengths[r[r >= 0]]
        n_win = np.maximum((n_clicks + L - 1) // L, 1)                      # no click: one empty window
        win_user_idx = np.repeat(np.arange(len(all_users)), n_win)
        k = np.arange(len(win_user_idx)) - np.repeat(np.cumsum(n_win) - n_win, n_win)   # 0 = newest
        ends = n_clicks[win_user_idx] - k * L                               # exclusive end (click index)
        inputs = _histories(clicks, r[win_user_idx], np.maximum(ends, 0), L)   # (W, L)
        first_win = np.cumsum(n_win) - n_win                                # each user's newest window
        u_idx = np.searchsorted(all_users, users)                           # (N,)
        j = ctx.before - 1                                                  # state after click j (-1: none)
        n = n_clicks[u_idx]
        kk = np.where(j >= 0, (n - 1 - j) // L, n_win[u_idx] - 1)
        imp_col = np.where(j >= 0, L - (n - kk * L - j), L)
        return _WindowIndex(inputs, all_users[win_user_idx], first_win[u_idx] + kk, imp_col)

    @staticmethod
    def _dense_targets(frame: pd.DataFrame) -> np.ndarray:
        """(N, K) labels: effective view, watch fraction in [0, 1], like."""
        duration = np.maximum(frame["duration"].to_numpy(np.float64), 1e-9)
        frac = np.clip(frame["watch_time"].to_numpy(np.float64) / duration, 0.0, 1.0)
        return np.stack([frame["effective_view"].to_numpy(np.float32), frac.astype(np.float32),
                         frame["like"].to_numpy(np.float32)], axis=1)

    def _events(self, frame: pd.DataFrame, hist: np.ndarray) -> _Events:
        """The questionnaire exposures of ``frame`` (chronological) with their contexts."""
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

    # -- helpers ---------------------------------------------------------------------------

    def _task_weights(self) -> torch.Tensor:
        return torch.tensor(tuple(self.task_weights), dtype=torch.float32)

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

    def _validate(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 or None")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} must be one of {', '.join(OBJECTIVES)}")
        if len(tuple(self.task_weights)) != len(DENSE_TASKS):
            raise ValueError(f"task_weights={tuple(self.task_weights)} must have {len(DENSE_TASKS)} weights")
        if len(tuple(self.fusion)) != len(DENSE_TASKS) + 1:
            raise ValueError(f"fusion={tuple(self.fusion)} must have {len(DENSE_TASKS) + 1} weights")
        if not self.fusion[-1] >= 0:
            raise ValueError(f"fusion={tuple(self.fusion)}: the satisfaction weight {self.fusion[-1]} "
                             "must be >= 0 (< 0 reverses the alignment; 0 is the click-only twin)")
        for name in ("max_len", "d_model", "n_layers", "n_heads", "impressions_per_window", "batch_size",
                     "max_epochs", "patience", "align_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.use_lora and self.lora_rank < 1:
            raise ValueError(f"lora_rank={self.lora_rank} must be >= 1 with use_lora=True")
        for name in ("beta", "pair_window_s", "lora_alpha", "lr", "sat_lr", "align_lr", "update_lr",
                     "update_align_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("sat_epochs", "align_epochs", "update_epochs", "update_dense_samples", "ref_refresh"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.update_max_grad_norm is not None and not self.update_max_grad_norm > 0:
            raise ValueError(f"update_max_grad_norm={self.update_max_grad_norm} must be > 0 or None")
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
    "click-only": {"fusion": (1.0, 1.0, 1.0, 0.0)},
}
"""The ablation rows: ``make_policy("easq", **VARIANTS[row])``."""
