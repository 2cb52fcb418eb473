"""SINE's networks: the feedback-aware item embedding, the sub-interest model and its losses.

Reads top to bottom as the paper's Sec. 4: embeddings (Eq. 1-3), sub-interest assignment (Eq. 4-5),
reweighted attention (Eq. 6-10), projection (Eq. 11), adaptive fusion (Eq. 12-14) and the loss
terms (Eq. 15-16). Shapes: B batch, T sequence, M targets per window, C candidates, K sub-interests,
d model size. The design and every choice the paper leaves open: docs/notes/sine.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from policies.encoders import EncoderConfig, ItemEmbedding, Reweight, SequenceEncoder
from simulator.checks import check_int_at_least, check_interval

SKIP_SCALE_INIT = -1.0
"""Initial per-dimension scale of a skipped item's input embedding (see FeedbackItemEmbedding)."""
BETA_SCALE = 20.0
"""beta_1's logit is stored divided by this (see SINEModel)."""


# ------------------------------------------------------------------------- Eq. 1-3: embeddings

@dataclass(frozen=True)
class SINEConfig:
    """The sub-interest layers on top of the encoder (docs/notes/sine.md).

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
        check_int_at_least("n_interests", self.n_interests, 1)
        check_interval("beta", self.beta, 0, 1, open_left=True, open_right=True)


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


# ---------------------------------------------------------------------------------- the model

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


# ------------------------------------------------------------------------- Eq. 15-16: losses

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
    i, j = torch.triu_indices(K, K, offset=1, device=z.device)
    return distance_correlation(z)[i, j].mean()


def bpr(pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``-ln sigmoid(pos - neg)`` where ``mask`` (Eq. 15); 0 (not NaN) if nothing is masked in."""
    m = mask.to(pos.dtype)
    return (F.softplus(neg - pos) * m).sum() / m.sum().clamp(min=1.0)

