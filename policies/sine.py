"""SINE: sub-interest learning with passive-negative feedback (Pan et al., RecSys 2023, Sec. 4).

The model reads a user's *mixed* sequence (effective views labelled 1 and skips labelled 0, in
the order the feature store records them; :func:`policies.data.request_sequences` ``"mixed"`` in
training and the feature store's ``history("mixed", ...)`` at serving) and scores candidates with
K user sub-interests:

1. **Embeddings** (Eq. 1-3). A :class:`~policies.encoders.SequenceEncoder` (SASRec) is the
   backbone; its item embedding E (item id plus the observable categories, as in ``sasrec``)
   embeds both kinds of event. K learned prototypes ``Z = (z_1 .. z_K)`` stand for the aspects of
   interest (style, author, ...) whose mismatch makes a user skip.
2. **Sub-interest assignment** (Eq. 4-5): every click is assigned to the prototype with the
   largest gap ``e_+ . z_k - e_- . z_k`` between the clicked item and the *recent* skip, the
   event just before the click if that event is a skip (a click after a click has no recent
   skip and is assigned by ``e_+ . z_k`` alone, as the paper says). Assignments are an argmax
   (no gradient) recomputed from the current parameters in every forward pass, inside the window,
   so training and serving assign identically.
3. **Sub-interest-reweighted attention** (Eq. 6-10): the encoder's attention probabilities alpha
   are multiplied by ``beta_1`` for keys assigned to the same sub-interest as the query's latest
   click (``z^{s+_|s+|}``) and by ``beta_2 = 1 - beta_1`` otherwise, through the encoder's
   ``reweight`` hook, in every layer.
4. **Projection into K sub-interests** (Eq. 11): ``o_k = o + sigmoid(o * z_k) * o``.
5. **Adaptive fusion** (Eq. 12-14): ``r_k = sigmoid(W [e_i; o_k] + b)``, ``gamma_k = r_k / sum r``,
   ``score(u, i) = sum_k gamma_k <o_k, e_i>``. ``W [e_i; o_k]`` splits into an item term and a
   user term, so serving caches the item term in the item table and costs O(B C K), not
   O(B C K d).
6. **Joint loss** (Eq. 15-16): ``lambda1 L1 + lambda2 L2 + lambda3 L_dis``, L1 the BPR loss of the
   next click against a uniformly sampled negative, L2 the BPR loss of a click against an observed
   skip, L_dis the mean distance correlation (Szekely et al. 2007) over pairs of prototypes.

Switches (the rows of Table 4 and Fig. 4, see :data:`VARIANTS`): ``adaptive_fusion=False`` ("w/o
AF"), ``negative_feedback=False`` ("w/o NF"), ``n_interests`` = K ("K=1" .. "K=10"); and "K=1,
w/o NF", which is SASRec trained with BPR on the click sequence.

**Every target is scored from the history its page was ranked with.** The platform ranks a page
in one call from the feature store and records the page only when it serves it, so no event is
ever scored with an event of its own page in the history. Training does the same: a target
(click or skip) is scored from the encoder state at the last event of an *earlier* request
(:class:`Paged`, :func:`mixed_windows`; tested against a feature store replayed request by
request), and so are the validation targets and the online updates. Without the cut, 88% of
the targets on the interest-driven test world had an event of their own page just before
them, a context serving never has.

Choices where the paper is ambiguous (and where it differs from the authors' code,
github.com/tsinghua-fib-lab/RecSys2023-SINE):

- *Training pairs.* Windows of ``max_len`` consecutive mixed events (page order); every later
  event whose page was ranked after an event of the window is a target of that window, scored
  from the state at the last event before its page (so about 7.5 targets share a state on these
  logs, one page's worth). A click is the positive of an L1 pair (against a fresh uniform
  negative each epoch, never one of the user's clicks); a skip is the negative of an L2 pair
  whose positive is the user's first click after that skip, both scored from the skip's
  context. Both items of every pair lie in the future of the history, as clicks and skips do at
  serving time. With the default ``window_stride = max_len`` the windows tile each user's
  sequence and every event after the user's first page is a target exactly once (events of a
  first page have no history to be scored from); ``window_stride=None`` keeps only each user's
  newest window (about a third fewer targets on the test world, and 0.008-0.02 lower AUC).
  Skipped items the user also clicked are not used as negatives (as in ``sasrec_n``). The
  authors' code encodes clicks only and pairs each target click with the skip just before it.
- *"Recent skip" differs between Eq. 4 and SASRec-N.* Eq. 4's e_- is the event *immediately*
  before the click if it is a skip (no skip in between means no recent skip); ``sasrec_n``
  pairs a click with the latest skip of the pages requested before the click's page, however
  many clicks lie in between. L2 pairs a skip with the *next* click after it.
- *The encoder reads skips.* Eq. 6 writes ``X = E^u + P``; with skips in the sequence the
  encoder must tell them from clicks. A skip's input embedding is ``s * e_item + t``, with a
  learned per-dimension scale s initialised at -1 (a skip enters as the *negated* item) and a
  learned feedback-type vector t (initialised at 0); clicks get ``e_item`` unchanged, so a
  click-only sequence is embedded exactly as SASRec embeds it, and the output (target)
  embedding is E. With s initialised at +1 (a skip looks like a click at first) the mixed
  sequence trained worse than the click sequence alone (clicks-vs-skips AUC 0.593 against 0.662
  on the interest-driven test world); at -1 it matches or beats it.
- *Sub-interest of a skip.* Eq. 4-5 assign clicks only; a skip is assigned to its best-matching
  prototype ``argmax_k e_- . z_k`` (it met that aspect, and failed on another).
- *Reference sub-interest, causal.* Eq. 8 compares each key with the sub-interest of the last
  click ``z^{s+_|s+|}``; at position t this is the latest click at or before t (a query with no
  click yet uses ``beta_1`` everywhere). The authors' code instead compares with the *target's*
  sub-interest during training (which depends on the label) and drops the reweighting at test
  time; here training and serving use the same causal rule.
- *beta.* Eq. 9 multiplies alpha by beta; the rows are then renormalised to sum to 1 (a weighted
  softmax), so a uniform beta changes nothing and only ``beta_1 / beta_2`` matters. ``beta_1`` is
  learned (``beta_1 = sigmoid(theta)``, theta initialised at ``logit(beta)``) unless
  ``learn_beta=False``; theta is stored divided by :data:`BETA_SCALE` so that Adam, whose steps
  are about ``lr`` in parameter space, can move this one scalar as far as the weights move in a
  few hundred steps (stored plainly it stayed within 0.01 of its initial value).
- *Eq. 11* is read element-wise (``*`` in the paper, as in the authors' code).
- *K = 1 has no sub-interest layers* (Sec. 5.4.1: "the model is regressed to the original SASRec
  model"): one prototype carries no sub-interest distinction, every assignment is the same (beta
  is uniform), gamma = 1, and Eq. 11 is skipped, so the score is the backbone's ``<o, e_i>``;
  L_dis has no pair and is 0. It is the SASRec *encoder* on the mixed sequence trained with BPR +
  L2, not the ``sasrec`` policy (which reads clicks only, trains with BCE, at batch 256, and stops
  early on NDCG@10). "K=1, w/o NF" (clicks only, L1 only) is SASRec with a BPR loss.
- *w/o AF* keeps one sub-interest per item, the best-scoring one (``max_k <o_k, e_i>``, as
  multi-interest models do): "there is always one specific sub-interest activated".
- *Eq. 12 as written is weakly item-dependent*: ``W [e_i; o_k] + b = w_e . e_i + w_o . o_k + b``,
  so the item shifts every ``r_k`` by the same scalar; the order of the gamma_k is the same for
  every item and only their spread depends on it (with the softmax over k of the authors' code
  the item term cancels). Implemented as written.
- *w/o NF* removes every use of passive negatives: the sequence is the click history (training
  and serving), L2 is off (``lambda2`` must be 0) and assignments use ``e_+ . z_k`` only. It keeps
  the K prototypes, beta and the fusion (a deviation: Sec. 5.3.2 says that without NF "the
  sub-interest design will not exist" and the model "degenerate[s] into a basic model"; that
  reading is the "K=1, w/o NF" row).
- *lambda.* The paper constrains ``lambda1 + lambda2 + lambda3 = 1`` and gives no values (they
  are in the authors' released settings, which this code does not use); the defaults
  ``(0.5, 0.4, 0.1)`` are this implementation's choice, not tuned. Other non-negative values are
  used as given. With ``lambda1 = 0`` only L2 learns, so ``fit`` refuses logs without a skip
  followed by a click. L_dis is the *mean* over the K(K-1)/2 pairs, so its
  scale does not grow with K (the authors' code sums).
- *Loss reduction.* L1 and L2 are means over their pairs in the mini-batch; a batch without
  any L2 pair has L2 = 0.
- *Validation* for early stopping follows the authors' protocol: each user's last click is
  ranked against the skips that came after their penultimate click (the held-out tail; the
  training windows end at the penultimate click), scored after the history the tail's first
  page was ranked with; the metric is the mean per-user AUC (``metric="gauc"``). As in
  ``sasrec``, the held-out tail is never trained on. ``metric="ndcg@10"`` / ``"hr@10"``
  rank the last click against sampled items instead, as ``sasrec`` does.
- *Batch size.* 64 by default (the paper found small batches best, 32 of
  {32, ..., 1024}); at 256 a 1,000-user world gives a handful of Adam steps per epoch.
- *Online updates* (``update(new, epochs=...)``, by default ``update_epochs``; the A/B runner's
  ``learning = "update"`` passes its own) append the new pages to the stored sequences; pages
  requested at or before the user's latest stored page (overlapping or older logs) are dropped
  and counted in ``stale_``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import check_fitted, check_ids, register_policy, resolve_update_epochs
from policies.data import (Sequences, check_observable, item_side, merge, n_items_of, pad, positive_keys,
                           request_sequences, request_times, sample_negatives, to_model_ids)
from policies.encoders import EncoderConfig, ItemEmbedding, Reweight, SequenceEncoder
from policies.train import EpochRecord, TrainConfig, build_module, sampled_metrics, train_model
from simulator.schema import LogData, RankBatch

METRICS = ("gauc", "ndcg@10", "hr@10")
SKIP_SCALE_INIT = -1.0
"""Initial per-dimension scale of a skipped item's input embedding (see FeedbackItemEmbedding)."""
BETA_SCALE = 20.0
"""beta_1's logit is stored divided by this (see SINEModel)."""

VARIANTS: dict[str, dict] = {
    "SINE": {},
    "w/o AF": dict(adaptive_fusion=False),
    "w/o NF": dict(negative_feedback=False, lambda1=0.9, lambda2=0.0, lambda3=0.1),
    **{f"K={k}": dict(n_interests=k) for k in range(1, 11)},
    "K=1, w/o NF": dict(n_interests=1, negative_feedback=False, lambda1=1.0, lambda2=0.0, lambda3=0.0),
}
"""Table 4 and Fig. 4 rows: ``make_policy("sine", **VARIANTS[row])``. "w/o NF" moves L2's weight
to L1 (lambda1 + lambda3 = 1, the paper's constraint). "K=1, w/o NF" is SASRec with a BPR loss
(the "basic model" Sec. 5.3.2 says w/o NF degenerates into)."""


# ----------------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class SINEConfig:
    """The sub-interest layers on top of the encoder (see the module docstring).

    Attributes:
        n_interests: K, the number of prototypes / user sub-interests.
        adaptive_fusion: Eq. 12-14; False keeps the best sub-interest per item ("w/o AF").
        beta: initial ``beta_1`` of Eq. 8, in (0, 1); ``beta_2 = 1 - beta_1``.
        learn_beta: learn ``beta_1`` (else it stays ``beta``).
    """
    n_interests: int = 4
    adaptive_fusion: bool = True
    beta: float = 0.7
    learn_beta: bool = True

    def __post_init__(self) -> None:
        if self.n_interests < 1:
            raise ValueError(f"n_interests={self.n_interests} must be >= 1")
        if not 0.0 < self.beta < 1.0:
            raise ValueError(f"beta={self.beta} must be in (0, 1)")


class FeedbackItemEmbedding(ItemEmbedding):
    """Input embedding of mixed-sequence *tokens*: a click of item i is token ``i + 1`` (its model
    id), a skip is ``i + 1 + (n_items + 1)``; 0 is padding. A skip embeds as
    ``skip_scale * e_item + skip`` (learned, initialised at -1 and 0: the negated item); model ids
    (< n_items + 1) embed as in ItemEmbedding, so the output layer (``score_items``,
    ``item_table``) is unchanged."""

    def __init__(self, config: EncoderConfig, item_side: torch.Tensor | None = None):
        super().__init__(config, item_side)
        self.n_ids = config.n_items + 1
        self.skip = nn.Parameter(torch.zeros(config.d_model))
        self.skip_scale = nn.Parameter(torch.full((config.d_model,), float(SKIP_SCALE_INIT)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        skip = (tokens >= self.n_ids).unsqueeze(-1)                        # (..., 1)
        x = super().forward(torch.where(skip.squeeze(-1), tokens - self.n_ids, tokens))   # (..., d)
        return torch.where(skip, x * self.skip_scale + self.skip, x)


class SINEModel(nn.Module):
    """Backbone encoder + prototypes + reweighted attention + projection + fusion (Eq. 1-14)."""

    def __init__(self, enc: EncoderConfig, cfg: SINEConfig, item_side: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = SequenceEncoder(enc, item_side)                     # SASRec, Eq. 6-10
        self.encoder.item_emb = FeedbackItemEmbedding(enc, item_side)      # Eq. 1 on the mixed sequence
        self.n_ids = enc.n_items + 1
        d, K = enc.d_model, cfg.n_interests
        self.prototypes = nn.Parameter(torch.randn(K, d) / math.sqrt(d))   # Z, Eq. 3: (K, d)
        self.gate = nn.Linear(2 * d, 1)                                    # W, b of Eq. 12
        theta = math.log(cfg.beta / (1.0 - cfg.beta))
        # stored divided by BETA_SCALE: one Adam step moves the logit by ~BETA_SCALE * lr, so the
        # single scalar can travel as far as the weights do in a short training run
        self.beta_logit = nn.Parameter(torch.tensor(theta / BETA_SCALE), requires_grad=cfg.learn_beta)

    @property
    def beta1(self) -> torch.Tensor:
        """``beta_1`` of Eq. 8 (``beta_2 = 1 - beta_1``)."""
        return torch.sigmoid(BETA_SCALE * self.beta_logit)

    # -- Eq. 4-5, 8: sub-interests of the events and the attention weights ------------------

    @torch.no_grad()
    def assign(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, T) sub-interest index of every event (Eq. 4-5).

        A click right after a skip takes ``argmax_k (e_+ - e_-) . z_k``; any other event (a click
        after a click, the window's first event, a skip) ``argmax_k e . z_k``.
        """
        skip = tokens >= self.n_ids                                        # (B, T)
        items = torch.where(skip, tokens - self.n_ids, tokens)
        e = ItemEmbedding.forward(self.encoder.item_emb, items)            # (B, T, d)
        match = e @ self.prototypes.T                                      # (B, T, K)
        recent = F.pad(skip[:, :-1], (1, 0)) & ~skip & (tokens > 0)        # a click after a skip
        before = F.pad(match[:, :-1], (0, 0, 1, 0))                        # (B, T, K) the event before
        return (match - recent.unsqueeze(-1) * before).argmax(dim=-1)      # (B, T)

    def attention_beta(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, 1, T, T) beta of Eq. 8 for every (query, key): ``beta_1`` where the
        key's sub-interest is the one of the query's latest click (or the query has no click
        yet), ``beta_2`` otherwise."""
        B, T = tokens.shape
        z = self.assign(tokens)                                            # (B, T)
        click = (tokens > 0) & (tokens < self.n_ids)
        pos = torch.arange(T, device=tokens.device).expand(B, T)
        last = torch.where(click, pos, -1).cummax(dim=1).values           # (B, T) latest click <= t
        ref = z.gather(1, last.clamp(min=0))                               # (B, T) its sub-interest
        same = (z[:, None, :] == ref[:, :, None]) | (last < 0)[:, :, None]  # (B, Tq, Tk)
        b1 = self.beta1
        return torch.where(same, b1, 1.0 - b1).unsqueeze(1)               # (B, 1, T, T)

    # -- Eq. 6-11: user sub-interests ------------------------------------------------------

    def interests(self, tokens: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """(B, T) tokens -> (B, T, K, d) user sub-interests at every position (Eq. 11), or
        (B, K, d) at the newest position with ``last_only``; zero at padding. K = 1: the
        encoder's output (SASRec)."""
        if self.cfg.n_interests == 1:
            o = self.encoder(tokens, last_only=last_only)                  # (B, T, d) or (B, d)
            return o.unsqueeze(-2)
        o = self.encoder(tokens, last_only=last_only, reweight=self.reweighter(tokens)).unsqueeze(-2)
        return o + torch.sigmoid(o * self.prototypes) * o                  # (..., K, d) Eq. 11

    def reweighter(self, tokens: torch.Tensor) -> Reweight:
        """The encoder's ``reweight`` hook for ``tokens`` (B, T): Eq. 9, ``alpha * beta``, rows
        renormalised to sum to 1 (keys the encoder masks, padding and the future, stay 0)."""
        beta = self.attention_beta(tokens)                                 # (B, 1, T, T)

        def reweight(att: torch.Tensor, layer: int) -> torch.Tensor:
            w = att * beta[..., -att.shape[-2]:, :]                        # (B, h, Tq, T)
            return w / w.sum(dim=-1, keepdim=True)

        return reweight

    # -- Eq. 12-14: fusion and scores ------------------------------------------------------

    def gate_item_term(self, e: torch.Tensor) -> torch.Tensor:
        """The item part of Eq. 12, ``W_e . e_i + b``: (..., d) -> (...)."""
        d = e.shape[-1]
        return e @ self.gate.weight[0, :d] + self.gate.bias[0]

    def fuse(self, sub: torch.Tensor, e: torch.Tensor, item_term: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of items for users' sub-interests (Eq. 12-14).

        Args:
            sub: (..., K, d) user sub-interests.
            e: (..., C, d) item embeddings.
            item_term: (..., C) :meth:`gate_item_term` of the items.

        Returns:
            (scores (..., C), weights gamma (..., C, K), rows summing to 1).
        """
        logits = e @ sub.transpose(-1, -2)                                 # (..., C, K) <o_k, e_i>
        K = sub.shape[-2]
        if K == 1:
            return logits.squeeze(-1), torch.ones_like(logits)
        if self.cfg.adaptive_fusion:
            d = sub.shape[-1]
            user_term = sub @ self.gate.weight[0, d:]                      # (..., K)
            r = torch.sigmoid(item_term.unsqueeze(-1) + user_term.unsqueeze(-2))   # (..., C, K) Eq. 12
            gamma = r / r.sum(dim=-1, keepdim=True)                        # Eq. 13
        else:                                                              # w/o AF: the best one
            gamma = F.one_hot(logits.argmax(dim=-1), K).to(logits.dtype)
        return (gamma * logits).sum(dim=-1), gamma                        # Eq. 14

    def scores(self, tokens: torch.Tensor, ids: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of items ``ids`` (B, M, C) after position ``at`` (B, M) of ``tokens`` (B, T):
        (B, M, C). ``at=None``: after every position (M = T)."""
        sub = self.interests(tokens)                                       # (B, T, K, d)
        if at is not None:                                                 # the states at ``at``
            sub = sub.gather(1, at[:, :, None, None].expand(-1, -1, *sub.shape[2:]))   # (B, M, K, d)
        e = self.encoder.item_embeddings(ids)                              # (B, M, C, d)
        s, _ = self.fuse(sub, e, self.gate_item_term(e))
        if self.encoder.bias is not None:
            s = s + self.encoder.bias(ids).squeeze(-1)
        return s

    def score_last(self, tokens: torch.Tensor, ids: torch.Tensor, table: tuple | None = None) -> torch.Tensor:
        """Scores of items ``ids`` (B, C) after the whole of ``tokens`` (B, T): (B, C). ``table``
        is :meth:`item_table`'s cache (serving) or None (recomputed, training)."""
        sub = self.interests(tokens, last_only=True)                       # (B, K, d)
        if table is None:
            e = self.encoder.item_embeddings(ids)                          # (B, C, d)
            term = self.gate_item_term(e)
            bias = None if self.encoder.bias is None else self.encoder.bias(ids).squeeze(-1)
        else:
            emb, item_term, item_bias = table
            e, term = emb[ids], item_term[ids]                             # (B, C, d), (B, C)
            bias = None if item_bias is None else item_bias[ids]
        s, _ = self.fuse(sub, e, term)
        return s if bias is None else s + bias

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every item's embedding (n + 1, d), gate item term (n + 1,) and bias (n + 1,) or None."""
        emb, bias = self.encoder.item_table()
        return emb, self.gate_item_term(emb), bias


def distance_correlation(x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1e-12) -> torch.Tensor:
    """Distance correlation (Szekely, Rizzo & Bakirov 2007) between the rows of ``x``.

    Each row is a sample of n scalars (a prototype's d coordinates, as in the authors' code);
    ``dCor(a, b) = sqrt(dCov^2(a, b) / sqrt(dVar^2(a) dVar^2(b)))`` with the double-centred
    distance matrices of the V-statistic. dCor is in [0, 1], symmetric, 1 for ``b = s a + c``
    (s != 0), and 0 when a row is constant (defined so; it has no spread).

    Args:
        x: (K, n), or (n,) with ``y`` (n,).
        y: optional second vector; then the scalar ``dCor(x, y)`` is returned.

    Returns:
        (K, K) matrix of dCor between rows, or a scalar.
    """
    rows = torch.stack([x, y]) if y is not None else x                     # (K, n)
    a = (rows.unsqueeze(-1) - rows.unsqueeze(-2)).abs()                    # (K, n, n)
    A = a - a.mean(dim=-1, keepdim=True) - a.mean(dim=-2, keepdim=True) + a.mean(dim=(-1, -2), keepdim=True)
    dcov2 = torch.einsum("inm,jnm->ij", A, A).clamp(min=0.0) / rows.shape[-1] ** 2   # (K, K)
    dvar2 = dcov2.diagonal()                                               # (K,)
    denom = (dvar2[:, None] * dvar2[None, :]).sqrt()                       # (K, K)
    ok = denom > eps
    dcor2 = torch.where(ok, dcov2 / denom.clamp(min=eps), torch.zeros_like(dcov2))
    dcor2 = dcor2.clamp(min=0.0, max=1.0)
    dcor = torch.where(dcor2 > eps, dcor2.clamp(min=eps).sqrt(), torch.zeros_like(dcor2))   # finite gradient at 0
    return dcor[0, 1] if y is not None else dcor


def prototype_dcor(z: torch.Tensor) -> torch.Tensor:
    """L_dis of Eq. 16: mean dCor over the K(K - 1)/2 pairs of prototypes (0 when K = 1)."""
    K = z.shape[0]
    if K < 2:
        return z.sum() * 0.0
    i, j = torch.triu_indices(K, K, offset=1)
    return distance_correlation(z)[i, j].mean()


def bpr(pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``-ln sigmoid(pos - neg)`` where ``mask`` (Eq. 15); 0 (not NaN) if nothing is masked in."""
    m = mask.to(pos.dtype)
    return (F.softplus(neg - pos) * m).sum() / m.sum().clamp(min=1.0)


# ------------------------------------------------------------------------------ training data

@dataclass(frozen=True)
class Paged:
    """Per-user sequences in page order, with the page boundary of every event
    (:func:`policies.data.request_sequences`).

    Attributes:
        seqs: the events (mixed, or clicks only), grouped by user, in the order the feature
            store records them.
        before: (N,) int64 the user's events in pages requested before the event's page, i.e.
            the length of the history the event's page was ranked with.
    """
    seqs: Sequences
    before: np.ndarray

    @classmethod
    def of(cls, data: LogData, kind: str = "mixed") -> Paged:
        return cls(*request_sequences(data, kind))

    def select(self, events: np.ndarray) -> Paged:
        """The events where the (N,) boolean mask ``events`` is true; ``before`` counts the kept
        events of earlier pages."""
        kept_before = np.r_[0, np.cumsum(events, dtype=np.int64)]          # (N + 1,) kept in [0, i)
        user_first = np.repeat(self.seqs.offsets[:-1], self.seqs.lengths)  # (N,)
        before = kept_before[user_first + self.before] - kept_before[user_first]
        return Paged(self.seqs.select(events), before[events])

    def positives(self) -> Paged:
        """The clicks (``labels == 1``)."""
        return self.select(self.seqs.labels == 1)

    def head(self, keep: np.ndarray) -> Paged:
        """The first ``keep[r]`` events of each row."""
        return self.select(self.seqs.event_rank < np.repeat(np.asarray(keep, np.int64), self.seqs.lengths))

    def append(self, new: Paged) -> Paged:
        """``new``'s events after this one's, user by user (``new``'s pages must be newer)."""
        rows = self.seqs.rows_of(new.seqs.users)
        n_old = np.where(rows >= 0, self.seqs.lengths[np.maximum(rows, 0)], 0) if len(self.seqs) \
            else np.zeros(len(new.seqs), np.int64)
        users = np.r_[self.seqs.event_users, new.seqs.event_users]
        order = np.argsort(users, kind="stable")                            # as merge() orders them
        before = np.r_[self.before, new.before + np.repeat(n_old, new.seqs.lengths)]
        return Paged(merge(self.seqs, new.seqs), before[order].astype(np.int64))


@dataclass(frozen=True)
class _Windows:
    """Training windows; ``users`` (n,), ``tokens`` (n, L), every other array (n, M).

    ``tokens`` are the inputs (see :class:`FeedbackItemEmbedding`), a stretch of a user's events.
    Each of the M target slots is one later event, scored from the state at column ``ctx`` of
    the window: the last event before the target's page (the history its page was ranked
    with). The event is either a click (``targets`` > 0, an L1 positive) or a skip (``skip_neg``
    > 0, an L2 negative, with ``skip_pos`` the user's first click after it; 0 if there is none or
    the skipped item is also one of the user's clicks); empty slots are 0 in all four. ``events``
    is the index of each slot's event in the sequences (-1: empty)."""
    users: np.ndarray
    tokens: np.ndarray
    ctx: np.ndarray
    targets: np.ndarray
    skip_pos: np.ndarray
    skip_neg: np.ndarray
    events: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class _Examples:
    """One epoch of training examples: :class:`_Windows`' arrays plus ``negatives`` (n, M), a
    sampled negative (model id) per target slot."""
    users: np.ndarray
    tokens: np.ndarray
    ctx: np.ndarray
    targets: np.ndarray
    skip_pos: np.ndarray
    skip_neg: np.ndarray
    negatives: np.ndarray


def tokens_of(items: np.ndarray, labels: np.ndarray | None, n_items: int) -> np.ndarray:
    """Mixed-sequence tokens from item ids (PAD = -1) and labels (1 click, 0 skip; None: all
    clicks): a click is ``item + 1``, a skip ``item + 1 + n_items + 1``, padding 0."""
    ids = to_model_ids(items)                                              # PAD -> 0
    if labels is None:
        return ids
    return np.where((np.asarray(labels) == 0) & (ids > 0), ids + n_items + 1, ids)


def next_click_after(seqs: Sequences) -> np.ndarray:
    """(N,) index of each event's user's first click strictly after it, -1 if none."""
    n = len(seqs.items)
    idx = np.where(seqs.labels == 1, np.arange(n), n)
    first = np.minimum.accumulate(idx[::-1])[::-1] if n else idx          # first click at or after
    after = np.r_[first[1:], n]
    end = np.repeat(seqs.offsets[1:], seqs.lengths)
    return np.where(after < end, after, -1)


def mixed_windows(paged: Paged, max_len: int, n_items: int, exclude: np.ndarray, *,
                  stride: int | None = None) -> _Windows:
    """Windows of ``max_len`` events of ``paged`` (mixed, or clicks only) with the targets of
    :class:`_Windows`, every target scored from the history its page was ranked with.

    A user's *contexts* are the events before their last page. With ``stride=None`` there is one
    window per user, over the newest ``max_len`` contexts; with an int, also windows ending
    ``stride``, ``2 * stride``, ... events earlier. A target is placed in the window that holds
    its context (the last event before its page) at the latest column, so with ``stride <=
    max_len`` every event after the user's first page is a target exactly once; with
    ``stride=None`` only those whose context is in the newest window are. Events of the user's
    first page (no history) are no targets.
    """
    seqs, before = paged.seqs, paged.before
    lens = seqs.lengths
    U = len(seqs)
    m = np.where(lens > 0, before[np.maximum(seqs.offsets[1:] - 1, 0)], 0) if U else np.zeros(0, np.int64)
    if stride is None:
        n_win = (m >= 1).astype(np.int64)
        step = 0
    else:
        n_win = np.where(m >= 1, (m - 1) // stride + 1, 0)
        step = stride
    rows = np.repeat(np.arange(U), n_win)                                  # (n,)
    k = np.arange(len(rows)) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # 0 = the newest window
    end = m[rows] - k * step                                               # exclusive, within the user
    start = end - max_len                                                  # column 0 (may be < 0: padding)
    lo = np.maximum(start, 0) if stride is None else np.maximum(np.maximum(start, end - stride), 0)
    # the targets of a window are the events whose context (before - 1) is in [lo, end): a range
    big = int(lens.max()) + 2 if U else 2
    key = np.repeat(np.arange(U), lens) * big + before                     # sorted
    first = np.searchsorted(key, rows * big + lo + 1)
    count = np.searchsorted(key, rows * big + end + 1) - first             # (n,)
    has = count > 0
    rows, start, end, first, count = rows[has], start[has], end[has], first[has], count[has]
    M = int(count.max()) if len(count) else 1
    slot = np.arange(M)[None, :]
    real = slot < count[:, None]                                           # (n, M)
    nx = np.where(real, first[:, None] + slot, 0)                          # (n, M) index of the target
    ctx = np.where(real, before[nx] - 1 - start[:, None], 0)              # column of its context
    col = np.arange(max_len)[None, :]
    local = start[:, None] + col                                           # (n, L) index within the user
    inside = local >= 0
    idx = np.where(inside, seqs.offsets[rows][:, None] + local, 0)
    tokens = np.where(inside, tokens_of(seqs.items[idx], seqs.labels[idx], n_items), 0)
    users = seqs.users[rows]
    click = real & (seqs.labels[nx] == 1)
    targets = np.where(click, seqs.items[nx] + 1, 0)
    after = next_click_after(seqs)[nx]                                     # (n, M)
    skipped = seqs.items[nx]
    own = np.isin(users[:, None] * n_items + skipped, exclude)            # skipped item also clicked
    pair = real & (seqs.labels[nx] == 0) & (after >= 0) & ~own
    skip_neg = np.where(pair, skipped + 1, 0)
    skip_pos = np.where(pair, seqs.items[np.maximum(after, 0)] + 1, 0)
    return _Windows(users, tokens.astype(np.int64), ctx.astype(np.int64), targets.astype(np.int64),
                    skip_pos.astype(np.int64), skip_neg.astype(np.int64), np.where(real, nx, -1))


@dataclass(frozen=True)
class _Validation:
    """Held-out tails (see :func:`holdout_tail`): per user, the last click and the skips after the
    penultimate click, after the history the tail's first page was ranked with.

    Attributes:
        users: (n,) int64.
        items: (n,) int64 the last click of each user.
        skips: (n, M) int64 the skipped items of the tail, PAD-padded (M >= 1).
        history: the events before the page of the tail's first event, rows aligned with
            ``users`` (every user here has at least one).
    """
    users: np.ndarray
    items: np.ndarray
    skips: np.ndarray
    history: Paged

    def __len__(self) -> int:
        return len(self.users)


def holdout_tail(paged: Paged, n_items: int, exclude: np.ndarray) -> tuple[Paged, _Validation]:
    """Hold out each user's *tail*: the events after their penultimate click (users with >= 2
    clicks; the others keep everything).

    The tail's last click is the validation target; its skips, unless the user clicked the item
    (``exclude`` keys), are the observed negatives it is ranked against, as in the authors' code.
    They are scored after the history the platform ranked the tail's first page with: the events
    before that page (users whose tail starts on their first page have none and are left out).

    Returns:
        (rest, validation): ``rest`` is every user's events up to and including the penultimate
        click (or all of them).
    """
    seqs = paged.seqs
    n, U = len(seqs.items), len(seqs)
    row = np.repeat(np.arange(U), seqs.lengths)                           # (N,)
    click = np.flatnonzero(seqs.labels == 1)
    last = np.full(U, -1, np.int64)
    np.maximum.at(last, row[click], click)
    earlier = click[click != last[row[click]]]
    prev = np.full(U, -1, np.int64)
    np.maximum.at(prev, row[earlier], earlier)                            # penultimate click
    cut = np.where(prev >= 0, paged.before[np.minimum(prev + 1, max(n - 1, 0))], 0)   # (U,) history length
    ok = (prev >= 0) & (cut > 0)                                           # (U,) >= 2 clicks, a history
    rest = paged.head(np.where(prev >= 0, prev - seqs.offsets[:-1] + 1, seqs.lengths))
    tail = ok[row] & (np.arange(n) > prev[row])
    keys = seqs.event_users * n_items + seqs.items
    neg = tail & (seqs.labels == 0) & ~np.isin(keys, exclude)
    negs = seqs.select(neg)
    users = seqs.users[ok]
    width = max(1, int(negs.lengths.max()) if len(negs) else 1)
    skips = pad(negs, width, rows=negs.rows_of(users))                     # (n, M), PAD
    history = paged.head(np.where(ok, cut, 0))
    return rest, _Validation(users, seqs.items[last[ok]], skips, history)


def skip_gauc(scores: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over users of the AUC of the click (column 0) against the observed skips (the other
    columns where ``valid``); ties count half; users without a skip are left out."""
    pos, neg = scores[:, :1], scores[:, 1:]
    m = valid[:, 1:].to(scores.dtype)
    wins = ((neg < pos).to(scores.dtype) + 0.5 * (neg == pos).to(scores.dtype)) * m
    n = m.sum(dim=1)
    has = n > 0
    return float((wins.sum(dim=1)[has] / n[has]).mean()) if bool(has.any()) else float("nan")


# ------------------------------------------------------------------------------------ policy

@register_policy("sine", "SINE (RecSys'23): K sub-interests from the mixed click/skip history, "
                         "BPR vs sampled and vs observed skips (deterministic)")
@dataclass
class SINE:
    """SINE (see the module docstring).

    Args:
        temperature: None ranks by the scores (deterministic top-k).
        n_interests: K prototypes / user sub-interests (1: no sub-interest layers, the SASRec
            encoder on the mixed sequence, trained with BPR + L2).
        adaptive_fusion: Eq. 12-14 (False: "w/o AF", the best sub-interest per item).
        negative_feedback: read and learn from skips (False: "w/o NF", clicks only; needs
            ``lambda2 = 0``).
        lambda1, lambda2, lambda3: weights of L1 (vs sampled negatives), L2 (vs observed skips)
            and L_dis (prototype dCor), Eq. 16.
        beta, learn_beta: initial ``beta_1`` of Eq. 8 and whether it is learned.
        max_len: longest mixed history read (capped at the feature store's history length).
        d_model, n_layers, n_heads, dropout, pre_ln: the encoder (:class:`EncoderConfig`).
        batch_size, lr, weight_decay, max_epochs, patience: training (:class:`TrainConfig`).
        window_stride: None trains on the targets whose history is in each user's newest
            window of ``max_len`` events; an int adds windows ending every ``window_stride``
            events earlier, so that (for ``window_stride <= max_len``) every event after a
            user's first page is a target once (:func:`mixed_windows`).
        item_features: item-table columns whose embeddings are added to the item-id embedding.
        item_bias: add a learned per-item score offset.
        eval_negatives: sampled negatives per validation target ("ndcg@10", "hr@10").
        metric: validation metric for early stopping: "gauc", each user's last click against the
            skips after their penultimate click (the authors' protocol; "ndcg@10" if no user has
            such a skip); "ndcg@10" / "hr@10", the last click against ``eval_negatives`` sampled
            items (SASRec's).
        update_epochs: epochs of fine-tuning on the users of each ``update()``'s logs when the
            caller gives none (0: no-op; serving reads the live mixed history anyway); the A/B
            runner's ``learning = "update"`` passes its own.
        progress: show a tqdm bar while training.
    """
    temperature: float | None = None
    n_interests: int = 4
    adaptive_fusion: bool = True
    negative_feedback: bool = True
    lambda1: float = 0.5
    lambda2: float = 0.4
    lambda3: float = 0.1
    beta: float = 0.7
    learn_beta: bool = True
    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    pre_ln: bool = True
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 10
    patience: int = 3
    window_stride: int | None = 50
    item_features: tuple[str, ...] = ("l1", "l2", "leaf")
    item_bias: bool = False
    eval_negatives: int = 99
    metric: str = "gauc"
    update_epochs: int = 0
    progress: bool = False
    # fitted state
    fitted_: bool = field(default=False, init=False)
    model_: SINEModel | None = field(default=None, init=False, repr=False)
    n_items_: int = field(default=0, init=False)
    history_: list[EpochRecord] = field(default_factory=list, init=False, repr=False)
    best_epoch_: int = field(default=0, init=False)
    mixed_: Paged | None = field(default=None, init=False, repr=False)
    last_request_: np.ndarray | None = field(default=None, init=False, repr=False)  # (users,) request time
    stale_: int = field(default=0, init=False)                             # update() rows dropped
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    table_: tuple | None = field(default=None, init=False, repr=False)     # serving cache

    @property
    def history_kind(self) -> str:
        """The feature-store history the model reads: ``mixed``, or ``clicks`` for w/o NF."""
        return "mixed" if self.negative_feedback else "clicks"

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Train on the mixed sequences of ``train``; each user's last click is held out for
        early stopping.

        Every target is scored from the user's history before its page request, as the platform
        ranks it (:class:`Paged`, :func:`mixed_windows`).

        Args:
            train: observable logs (impressions with :data:`policies.data.REQUIRED_COLUMNS`;
                the item table with ``item_features``).
            rng: the only source of randomness (initialisation, negatives, batches, dropout).

        Returns:
            self, fitted.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, no user with two
                events to learn from, or a bad parameter.
        """
        check_observable(train)
        self._check_params()
        n_items = n_items_of(train)
        side = item_side(train.items, self.item_features, n_items)
        enc = EncoderConfig(n_items=n_items, max_len=self.max_len, d_model=self.d_model,
                            n_layers=self.n_layers, n_heads=self.n_heads, dropout=self.dropout,
                            pre_ln=self.pre_ln, side_sizes=tuple(int(a.max()) + 1 for a in side),
                            item_bias=self.item_bias)
        cfg = SINEConfig(n_interests=self.n_interests, adaptive_fusion=self.adaptive_fusion,
                         beta=self.beta, learn_beta=self.learn_beta)
        mixed = Paged.of(train, "mixed")
        exclude = positive_keys(mixed.seqs, n_items)
        rest, valid = holdout_tail(mixed, n_items, exclude)
        windows = mixed_windows(self._sequence(rest), self.max_len, n_items, exclude, stride=self.window_stride)
        if not ((windows.targets > 0).any() if self.lambda1 > 0 else (windows.skip_neg > 0).any()):
            raise ValueError("train has no user with an effective view in a page after an earlier event"
                             + ("" if self.lambda1 > 0 else " preceded by a skip (lambda1=0: only L2 learns)")
                             + "; SINE needs click/skip sequences to learn from")
        side_t = torch.from_numpy(np.stack(side)) if side else None
        model = build_module(lambda: SINEModel(enc, cfg, side_t), rng)
        evaluate = self._validation(valid, n_items, exclude, rng) if len(valid) else None
        result = train_model(model, lambda r: self._examples(windows, n_items, exclude, r), self._loss,
                             evaluate, self._train_config(self.max_epochs, self.patience), rng)
        self.model_, self.n_items_, self.mixed_ = model, n_items, mixed
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
        length = min(self.max_len, getattr(batch.features, "history_length", self.max_len))
        items, labels = batch.features.history(self.history_kind, np.asarray(batch.user_ids), length)
        labels = labels if self.negative_feedback else None                 # the clicks ring has no labels
        tokens = torch.from_numpy(tokens_of(items, labels, self.n_items_))   # (B, L)
        ids = torch.from_numpy(to_model_ids(cands))                         # (B, C)
        with torch.inference_mode():
            s = self.model_.score_last(tokens, ids, self.table_)            # (B, C)
        return s.numpy().astype(np.float64)

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
        windows = mixed_windows(self._sequence(touched), self.max_len, self.n_items_, exclude,
                                stride=self.window_stride)
        if not ((windows.targets > 0).any() or (self.lambda2 > 0 and (windows.skip_neg > 0).any())):
            return
        result = train_model(self.model_, lambda r: self._examples(windows, self.n_items_, exclude, r),
                             self._loss, None, self._train_config(epochs, epochs),
                             self.rng_)
        self.history_ = self.history_ + result.history
        self._cache_items()

    # -- internals -------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 or None")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} must be one of {', '.join(METRICS)}")
        for name in ("lambda1", "lambda2", "lambda3"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not self.lambda1 + self.lambda2 > 0:
            raise ValueError(f"lambda1={self.lambda1} and lambda2={self.lambda2} must not both be 0 "
                             "(nothing would be learned about the items)")
        if not self.negative_feedback and self.lambda2 != 0:
            raise ValueError(f"lambda2={self.lambda2} must be 0 with negative_feedback=False (w/o NF "
                             "learns from no skip)")
        if self.eval_negatives < 1:
            raise ValueError(f"eval_negatives={self.eval_negatives} must be >= 1")
        SINEConfig(n_interests=self.n_interests, beta=self.beta)          # validates both

    def _sequence(self, mixed: Paged) -> Paged:
        return mixed if self.negative_feedback else mixed.positives()

    def _cache_items(self) -> None:
        with torch.inference_mode():
            self.table_ = self.model_.item_table()

    def _train_config(self, epochs: int, patience: int) -> TrainConfig:
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           max_epochs=epochs, patience=patience, progress=self.progress, desc=self.name)

    def _examples(self, w: _Windows, n_items: int, exclude: np.ndarray, rng: np.random.Generator) -> _Examples:
        """The epoch's examples: the windows plus a fresh uniform negative per target slot."""
        neg = to_model_ids(sample_negatives(rng, w.users, w.targets.shape[1], n_items=n_items,
                                            exclude=exclude))              # (n, M)
        return _Examples(w.users, w.tokens, w.ctx, w.targets, w.skip_pos, w.skip_neg, neg)

    def _loss(self, model: SINEModel, b: _Examples) -> torch.Tensor:
        """Eq. 16: lambda1 L1 + lambda2 L2 + lambda3 L_dis, every target scored after its context
        ``b.ctx`` (only the item columns of the terms that are on)."""
        pairs = [(self.lambda1, b.targets, b.negatives, b.targets > 0)] if self.lambda1 > 0 else []   # L1
        if self.lambda2 > 0:
            pairs.append((self.lambda2, b.skip_pos, b.skip_neg, b.skip_neg > 0))   # L2 (Eq. 15)
        ids = torch.stack([c for _, pos, neg, _ in pairs for c in (pos, neg)], dim=-1)   # (B, M, 2 or 4)
        s = model.scores(b.tokens, ids, at=b.ctx)                          # (B, M, 2 or 4)
        loss = sum(w * bpr(s[..., 2 * i], s[..., 2 * i + 1], mask) for i, (w, _, _, mask) in enumerate(pairs))
        if self.lambda3 > 0:
            loss = loss + self.lambda3 * prototype_dcor(model.prototypes)  # L_dis
        return loss

    def _validation(self, valid: _Validation, n_items: int, exclude: np.ndarray, rng: np.random.Generator):
        """A closure computing the validation metric (see ``metric``), each held-out click scored
        after the history its tail's first page was ranked with (negatives drawn once per fit)."""
        hist = self._sequence(valid.history).seqs
        rows = hist.rows_of(valid.users)
        if not (rows >= 0).all():                                          # w/o NF: no click before
            keep = rows >= 0
            valid = _Validation(valid.users[keep], valid.items[keep], valid.skips[keep], valid.history)
            rows = rows[keep]
            if not len(valid):
                return None
        tokens = tokens_of(pad(hist, self.max_len, rows=rows),
                           pad(hist, self.max_len, values=hist.labels, fill=1, rows=rows), n_items)
        metric = self.metric
        if metric == "gauc" and not (valid.skips >= 0).any():
            metric = "ndcg@10"                                             # no held-out skip to rank
        if metric == "gauc":
            negs = valid.skips                                             # (n, M), PAD
        else:
            negs = sample_negatives(rng, valid.users, self.eval_negatives, n_items=n_items,
                                    exclude=exclude, distinct=True)
        cands = to_model_ids(np.concatenate([valid.items[:, None], negs], axis=1))   # (n, 1 + M)
        tok_t, cands_t = torch.from_numpy(tokens), torch.from_numpy(cands)

        def evaluate(model: SINEModel) -> float:
            s = torch.cat([model.score_last(tok_t[i:i + 1024], cands_t[i:i + 1024])
                           for i in range(0, len(tok_t), 1024)])               # (n, 1 + M)
            if metric == "gauc":
                return skip_gauc(s, cands_t > 0)
            hr, ndcg = sampled_metrics(s, k=10)
            return ndcg if metric.startswith("ndcg") else hr

        return evaluate


def _last_requests(impressions: pd.DataFrame, seen: np.ndarray | None) -> np.ndarray:
    """(users,) each user's latest request time in ``impressions`` or ``seen`` (-inf: none)."""
    users = impressions["user_id"].to_numpy(np.int64)
    size = max(len(seen) if seen is not None else 0, int(users.max()) + 1 if len(users) else 0)
    out = np.full(size, -np.inf)
    if seen is not None:
        out[:len(seen)] = seen
    np.maximum.at(out, users, request_times(impressions))
    return out
