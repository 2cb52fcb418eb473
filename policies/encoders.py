"""Shared sequence encoders: a SASRec-style causal transformer over item-id sequences.

Conventions (see :mod:`policies.data`): inputs are (B, T) int64 *model ids* (``item_id + 1``;
0 = padding), right-aligned, oldest first, so the newest event is in the last column. Position
embeddings are aligned to the end of the window (the newest event always gets position
``max_len - 1``), so a serving history shorter than ``max_len`` is encoded like a training
window of the same content.

The encoder is meant to be reused by later models (SAQRec's history encoders, SINE's
sub-interest attention): every forward takes an optional additive attention bias and an
optional ``reweight`` hook that rescales the attention probabilities of each layer (SINE
Eq. 7-10 multiplies attention weights by sub-interest assignments), and ``last_only`` computes
only the newest position in the final layer for serving (the other positions of the last
layer are never read there; 1.43x faster at 16-128 requests of length 50 with 2 layers, the
same scores; DESIGN.md measured 1.56x).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from policies.params import heads_divide
from simulator.checks import check_int_at_least, check_probability, check_sizes

Reweight = Callable[[torch.Tensor, int], torch.Tensor]
"""``reweight(weights, layer) -> weights``: (B, h, Tq, T) attention probabilities of one layer
(rows sum to 1 over allowed keys) in, the weights to apply to the values out."""


@dataclass(frozen=True)
class EncoderConfig:
    """Shape and regularisation of a :class:`SequenceEncoder`.

    Attributes:
        n_items: catalogue size; the embedding has ``n_items + 1`` rows (row 0 = padding).
        max_len: longest sequence (number of position embeddings).
        d_model: embedding and hidden size d.
        n_layers: transformer blocks.
        n_heads: attention heads (must divide d_model).
        dropout: on embeddings, attention probabilities and block outputs.
        ffn_mult: hidden size of the feed-forward layer is ``ffn_mult * d_model`` (SASRec: 1).
        pre_ln: LayerNorm before attention / feed-forward (GPT-2 style, and a final LayerNorm)
            instead of after (the original Transformer / SASRec's "post" variant).
        side_sizes: number of values of each categorical item attribute (e.g. leaf category)
            whose embedding is added to the item-id embedding; () for ids only.
        item_bias: add a learned per-item scalar to :meth:`SequenceEncoder.score_items` (a
            popularity term, so the dot product is left to model the user's interest).
    """
    n_items: int
    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    ffn_mult: int = 1
    pre_ln: bool = True
    side_sizes: tuple[int, ...] = ()
    item_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("n_items", "max_len", "d_model", "n_layers", "n_heads", "ffn_mult"):
            check_int_at_least(name, getattr(self, name), 1)
        heads_divide(self.d_model, self.n_heads)
        check_sizes("side_sizes", self.side_sizes, allow_empty=True)
        check_probability("dropout", self.dropout, open_right=True)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, *, bias: torch.Tensor | None = None,
                reweight: Reweight | None = None, layer: int = 0, last_only: bool = False) -> torch.Tensor:
        """Attention over ``x`` (B, T, d) where ``allowed`` (B, 1, Tq, T) is True; Tq = 1 with
        ``last_only`` (then only the newest position is computed)."""
        B, T, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).split(d, dim=2)                              # (B, T, d) each
        if last_only:
            q = q[:, -1:]                                                  # (B, 1, d)
        Tq = q.shape[1]
        q = q.view(B, Tq, h, d // h).transpose(1, 2)                       # (B, h, Tq, d/h)
        k = k.view(B, T, h, d // h).transpose(1, 2)                        # (B, h, T, d/h)
        v = v.view(B, T, h, d // h).transpose(1, 2)
        p = self.attn_dropout if self.training else 0.0
        if reweight is None:
            mask = allowed if bias is None else torch.where(allowed, bias, float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)   # (B, h, Tq, d/h)
        else:
            att = q @ k.transpose(-2, -1) / math.sqrt(d // h)               # (B, h, Tq, T)
            if bias is not None:
                att = att + bias
            att = att.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            att = reweight(att, layer).masked_fill(~allowed, 0.0)
            y = F.dropout(att, p, self.training) @ v                       # (B, h, Tq, d/h)
        y = y.transpose(1, 2).reshape(B, Tq, d)                            # (B, Tq, d)
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        hidden = config.ffn_mult * config.d_model
        self.net = nn.Sequential(nn.Linear(config.d_model, hidden), nn.GELU(),
                                 nn.Linear(hidden, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pre_ln = config.pre_ln
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, *, bias: torch.Tensor | None = None,
                reweight: Reweight | None = None, layer: int = 0, last_only: bool = False) -> torch.Tensor:
        kw = dict(bias=bias, reweight=reweight, layer=layer, last_only=last_only)
        res = x[:, -1:] if last_only else x                                # (B, Tq, d)
        if self.pre_ln:
            x = res + self.attn(self.ln1(x), allowed, **kw)
            return x + self.ffn(self.ln2(x))
        x = self.ln1(res + self.attn(x, allowed, **kw))
        return self.ln2(x + self.ffn(x))


class ItemEmbedding(nn.Module):
    """Item representation: id embedding plus the embeddings of the item's categorical attributes.

    The attributes (``item_side``, (n_side, n_items) int64 values, e.g. l1 / l2 / leaf category)
    let items with few or no training events share what is learned about their categories. Row 0
    (padding) is the zero vector.
    """

    def __init__(self, config: EncoderConfig, item_side: torch.Tensor | None = None):
        super().__init__()
        d = config.d_model
        self.ids = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        # small initial embeddings (GPT-2's 0.02): the scores start near 0; with unit-scale
        # embeddings the summed attribute embeddings gave large initial logits and the BCE
        # training stalled on the simulator's logs
        nn.init.normal_(self.ids.weight, std=0.02)
        sizes = config.side_sizes
        if item_side is None:
            item_side = torch.zeros(len(sizes), config.n_items, dtype=torch.long)
        if tuple(item_side.shape) != (len(sizes), config.n_items):
            raise ValueError(f"item_side must have shape ({len(sizes)}, {config.n_items}), "
                             f"got {tuple(item_side.shape)}")
        # model id -> attribute value + 1 (0 = padding), one row per attribute
        self.register_buffer("side", torch.cat([torch.zeros(len(sizes), 1, dtype=torch.long),
                                                item_side.long() + 1], dim=1))   # (n_side, n_items + 1)
        self.side_emb = nn.ModuleList(nn.Embedding(n + 1, d, padding_idx=0) for n in sizes)
        for emb in self.side_emb:
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.ids.weight[0].zero_()
            for emb in self.side_emb:
                emb.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.ids(ids)                                                  # (..., d)
        for k, emb in enumerate(self.side_emb):
            x = x + emb(self.side[k][ids])
        return x


class SequenceEncoder(nn.Module):
    """Item + learned position embeddings, then causal transformer blocks (SASRec).

    ``forward(seq)`` returns one d-vector per position: the representation of the sequence up to
    and including that position, which SASRec scores against the next item's embedding.
    """

    def __init__(self, config: EncoderConfig, item_side: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.item_emb = ItemEmbedding(config, item_side)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model) if config.pre_ln else nn.Identity()
        self.bias = nn.Embedding(config.n_items + 1, 1, padding_idx=0) if config.item_bias else None
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)

    def forward(self, seq: torch.Tensor, *, last_only: bool = False, bias: torch.Tensor | None = None,
                reweight: Reweight | None = None) -> torch.Tensor:
        """Encode (B, T) model ids (0 = padding, right-aligned, T <= max_len).

        Args:
            seq: (B, T) int64.
            last_only: compute only the newest position in the final layer; returns (B, d).
            bias: optional additive attention logits, broadcastable to (B, h, T, T).
            reweight: optional hook rescaling each layer's attention probabilities.

        Returns:
            (B, T, d) hidden states (zero at padding positions), or (B, d) with ``last_only``.
        """
        B, T = seq.shape
        if T > self.config.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.config.max_len}")
        real = seq > 0                                                     # (B, T)
        pos = torch.arange(self.config.max_len - T, self.config.max_len, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.config.d_model) + self.pos_emb(pos)   # (B, T, d)
        x = self.drop(x) * real.unsqueeze(-1)
        causal = torch.ones(T, T, dtype=torch.bool, device=seq.device).tril()        # (T, T)
        # a query attends to earlier real items and always to itself, so that padded queries
        # (whose outputs are discarded) never have an empty softmax
        allowed = (causal & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=seq.device)
        allowed = allowed.unsqueeze(1)                                     # (B, 1, T, T)
        for i, block in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1
            if last:
                allowed = allowed[:, :, -1:]                               # (B, 1, 1, T)
                if bias is not None:
                    bias = bias[..., -1:, :]
            x = block(x, allowed, bias=bias, reweight=reweight, layer=i, last_only=last)
            x = x * (real[:, -1:] if last else real).unsqueeze(-1)
        x = self.ln_f(x)                                                   # (B, T, d) or (B, 1, d)
        x = x * (real[:, -1:] if last_only else real).unsqueeze(-1)
        return x[:, -1] if last_only else x

    def item_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., d) embeddings of model ids (the output layer shares the input embedding)."""
        return self.item_emb(ids)

    def score_items(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Scores of items ``ids`` for hidden states ``h``: ``<h, e_item>`` (+ the item bias).

        Args:
            h: (..., d) hidden states.
            ids: (..., C) model ids, the leading dimensions matching ``h``'s.

        Returns:
            (..., C) scores.
        """
        e = self.item_emb(ids)                                             # (..., C, d)
        s = (e @ h.unsqueeze(-1)).squeeze(-1)                              # (..., C)
        if self.bias is not None:
            s = s + self.bias(ids).squeeze(-1)
        return s

    def item_table(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every item's embedding (n_items + 1, d) and bias (n_items + 1,) or None, for serving
        with fixed weights: ``table[ids] @ h (+ bias[ids])`` equals :meth:`score_items` with one
        gather instead of one per item attribute."""
        ids = torch.arange(self.config.n_items + 1, device=self.pos_emb.weight.device)
        return self.item_emb(ids), (None if self.bias is None else self.bias(ids).squeeze(-1))

    def encode_last(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, d) representation of each whole sequence, for serving (newest position only)."""
        return self.forward(seq, last_only=True)
