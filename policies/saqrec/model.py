"""SAQRec's networks: the propensity / satisfaction MLPs of stages 1-2 and the main network f.

Top to bottom: MLSE's grouping (Eq. 11), :class:`PairMLP` (rho, Eq. 5, and g, Eq. 1),
:class:`NetConfig` and :class:`SAQRecNet` (Sec. 4.3-4.4, Eq. 7-14), then the losses (Eq. 3-6,
16-18). Why each piece is built as it is: ``docs/notes/saqrec.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.device import module_device, to_device, to_host
from policies.encoders import EncoderConfig, SequenceEncoder

BIAS_SCALE = 3.0
"""rho's per-user / per-item logit offsets are this times a zero-initialised embedding."""
FUSION_INIT_GAP = 4.0
"""Initial fusion logit of the satisfaction parts below the click parts (see SAQRecNet)."""
TIE_RESOLUTION = 2.0 ** -16
"""MLSE compares satisfaction scores after rounding to this grid (so equal scores tie exactly)."""


# ---------------------------------------------------------------------------------------------
# pure functions of the main network (unit-tested against closed forms)

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

    def from_tables(self, user_part: torch.Tensor, item_part: torch.Tensor, users: torch.Tensor,
                    items: torch.Tensor) -> torch.Tensor:
        """Logits from gathered first-layer parts (broadcastable to (..., h)), plus the offsets of
        ``users`` / ``items`` (ids broadcastable to the output) when the model has them."""
        out = self.head(user_part + item_part).squeeze(-1)
        if self.user_bias is not None:
            out = out + BIAS_SCALE * (self.user_bias(users) + self.item_bias(items)).squeeze(-1)
        return out

    def predict(self, users: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``sigmoid`` of the logits, float32 numpy, no gradient, in chunks of 4096 users: (n,)
        user ids and (n, ...) item model ids -> (n, ...). As g this is the teacher ``s_hat``."""
        out = np.empty(ids.shape, np.float32)
        device = module_device(self)
        with torch.no_grad():
            up, ip = self.tables()                                              # (n_users, h), (n_items + 1, h)
            for s in range(0, len(users), 4096):
                u = to_device(users[s:s + 4096], device)                        # (b,)
                i = to_device(ids[s:s + 4096], device)                          # (b, ...)
                shape = (len(u),) + (1,) * (i.dim() - 1) + (-1,)
                out[s:s + 4096] = to_host(torch.sigmoid(self.from_tables(up[u].view(shape), ip[i],
                                                                         u.view(shape[:-1]), i)))
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

    def forward(self, clicks: torch.Tensor, users: torch.Tensor, *, sat: torch.Tensor | None = None,
                sat_idx: torch.Tensor | None = None, dis: torch.Tensor | None = None,
                dis_idx: torch.Tensor | None = None, scores: torch.Tensor | None = None,
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
        e = self.item_emb(torch.arange(self.config.n_items + 1, device=module_device(self.item_emb)))
        return F.pad(e, (0, 1)), self.sat_proj(e)


# ---------------------------------------------------------------------------------------------
# losses (unit-tested against closed forms)

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
