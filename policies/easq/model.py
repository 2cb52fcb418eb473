"""EASQ's network: a multi-task backbone, a satisfaction tower with a LoRA side path, the losses.

Eq. (1)-(4) are those of docs/notes/easq.md, which describes the model and every choice made;
the policy that trains and serves it is :mod:`policies.easq.policy`.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from policies.encoders import EncoderConfig, SequenceEncoder
from simulator.checks import check_int_at_least

DENSE_TASKS = ("effective_view", "watch_fraction", "like")
"""The dense tasks k of Eq. (1), in the order of the (..., K) logits."""

# ----------------------------------------------------------------------------- the network

class LoRALinear(nn.Module):
    """A linear layer with a low-rank side path: ``h = W0 x + (alpha / r) B A x`` (Hu et al.,
    2021, Eq. 3).

    ``A`` (r, d_in) starts random (Kaiming-uniform, as in LoRA), ``B`` (d_out, r) starts at zero,
    so the layer starts equal to its base ``W0``. ``rank=0`` is a plain linear layer.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, bias: bool = True):
        super().__init__()
        check_int_at_least("rank", rank, 0)
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
        check_int_at_least("sat_hidden", self.sat_hidden, 1)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (no dropout) inside the block, its own mode after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class EASQNet(nn.Module):
    """Backbone (encoder, item embeddings, dense towers) + satisfaction tower with a LoRA path."""

    def __init__(self, config: EASQConfig, item_side: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        d, n = config.encoder.d_model, config.encoder.n_items
        K = len(DENSE_TASKS)
        # backbone, Eq. (1)
        self.encoder = SequenceEncoder(config.encoder, item_side)
        self.dense_proj = nn.Linear(d, K * d)                              # the K task towers P_k: d -> (K, d)
        self.dense_bias = nn.Embedding(n + 1, K, padding_idx=0)            # b_k[i]: (n + 1, K)
        nn.init.zeros_(self.dense_bias.weight)
        # satisfaction tower, Eq. (2): the LoRA path wraps its input layer
        self.sat_in = LoRALinear(3 * d + K, config.sat_hidden, rank=config.lora_rank,
                                 alpha=config.lora_alpha)                  # W_in (+ B A): 3d + K -> h
        self.sat_out = nn.Linear(config.sat_hidden, 1)                     # w_out: h -> 1
        self.sat_bias = nn.Embedding(n + 1, 1, padding_idx=0)              # b_sat[i]: (n + 1, 1)
        nn.init.zeros_(self.sat_bias.weight)
        # ... and the satisfaction tower's view of the item embedding
        self.item_lora = LoRAEmbedding(n + 1, d, rank=config.lora_rank, alpha=config.lora_alpha)   # Delta e_i: (d,)
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
        with eval_mode(self.encoder), torch.set_grad_enabled(not frozen and torch.is_grad_enabled()):
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
        e_sat = table + (self.item_lora(torch.arange(n1, device=table.device)) if self.item_lora.rank else 0.0)
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


# ----------------------------------------------------------------------------- the losses

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
