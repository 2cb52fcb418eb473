"""USM's network (Fig. 3): embeddings + dense -> LHUC-gated FC backbone -> squeeze-and-excitation -> one tower per head.

Also the loss every USM model trains on (masked, weighted BCE over its heads) and its held-out
version for early stopping. Design: docs/notes/usm.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.device import module_device, to_device, to_host
from policies.usm.examples import Inputs, Rows
from simulator.checks import check_int_at_least, check_probability, check_sizes


@dataclass(frozen=True)
class NetConfig:
    """Shape of a :class:`SurveyNet` (Fig. 3).

    Attributes:
        n_users, n_items, n_authors: id vocabularies (each embedding has one more row: 0 = unknown).
        n_cats: sizes of the l1 / l2 / leaf vocabularies (without the unknown row).
        n_dense: dense input features.
        heads: names of the output heads.
        d_emb: embedding size of every id and category.
        hidden: backbone FC layer sizes (paper: 512, 256, 128).
        head_hidden: hidden sizes of each head's tower, before its output unit (paper: 64, 16).
        lhuc: gate the input of every backbone layer by the user / item / author ids.
        lhuc_dim: embedding size of the LHUC ids; lhuc_hidden: hidden units of each gate net.
        se: squeeze-and-excitation on the backbone output; se_groups channels, se_reduction.
        dropout: after each backbone layer.
        id_dropout: in training, each user / item / author id is replaced by "unknown" (0) with
            this probability, so that the network cannot lean on memorised ids alone.
    """
    n_users: int
    n_items: int
    n_authors: int
    n_cats: tuple[int, int, int]
    n_dense: int
    heads: tuple[str, ...]
    d_emb: int = 16
    hidden: tuple[int, ...] = (128, 64, 32)
    head_hidden: tuple[int, ...] = (16, 8)
    lhuc: bool = True
    lhuc_dim: int = 8
    lhuc_hidden: int = 16
    se: bool = True
    se_groups: int = 8
    se_reduction: int = 2
    dropout: float = 0.1
    id_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_authors", "d_emb", "lhuc_dim", "lhuc_hidden", "se_groups",
                     "se_reduction"):
            check_int_at_least(name, getattr(self, name), 1)
        check_sizes("hidden", self.hidden)
        check_sizes("head_hidden", self.head_hidden, allow_empty=True)
        if not self.heads:
            raise ValueError("heads must name at least one head")
        if self.se and self.hidden[-1] % self.se_groups:
            raise ValueError(f"hidden[-1]={self.hidden[-1]} must be divisible by se_groups={self.se_groups}")
        for name in ("dropout", "id_dropout"):
            check_probability(name, getattr(self, name), open_right=True)


class LHUC(nn.Module):
    """Learning hidden unit contributions (Swietojanski et al.): a per-example gate in (0, 2)^d.

    ``gate(e) = 2 * sigmoid(W2 relu(W1 e + b1) + b2)``. ``W2`` and ``b2`` (the final gate layer)
    start at zero, so every gate starts at ``2 * sigmoid(0) = 1``: multiplying by it is then the
    identity, exactly.
    """

    def __init__(self, d_ids: int, d_out: int, d_hidden: int):
        super().__init__()
        self.inner = nn.Linear(d_ids, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:       # (B, d_ids) -> (B, d_out)
        return 2.0 * torch.sigmoid(self.out(F.relu(self.inner(e))))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation on a (B, d) vector cut into ``groups`` channels of ``d / groups``.

    squeeze ``z = mean over each channel`` (B, G); excitation ``s = sigmoid(W2 relu(W1 z))``
    (B, G); output ``h * s`` broadcast over each channel's units. Zero weights give every gate
    ``sigmoid(0) = 0.5``.
    """

    def __init__(self, d: int, groups: int, reduction: int):
        super().__init__()
        if d % groups:
            raise ValueError(f"d={d} must be divisible by groups={groups}")
        self.groups = groups
        self.down = nn.Linear(groups, max(1, groups // reduction))
        self.up = nn.Linear(max(1, groups // reduction), groups)

    def gates(self, h: torch.Tensor) -> torch.Tensor:          # (B, d) -> (B, G)
        z = h.view(h.shape[0], self.groups, -1).mean(-1)       # (B, G) squeeze
        return torch.sigmoid(self.up(F.relu(self.down(z))))    # (B, G) excitation

    def forward(self, h: torch.Tensor) -> torch.Tensor:        # (B, d) -> (B, d)
        s = self.gates(h)                                      # (B, G)
        return (h.view(h.shape[0], self.groups, -1) * s.unsqueeze(-1)).view_as(h)


class SurveyNet(nn.Module):
    """USM's multi-head network (Fig. 3): embeddings + dense -> LHUC-gated FC backbone -> SE -> heads.

    Args:
        config: the shape.
        mean, std: (n_dense,) standardisation of the dense inputs (from the training rows).
    """

    def __init__(self, config: NetConfig, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        c = self.config = config
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        sizes = (c.n_users, c.n_items, c.n_authors, *c.n_cats)
        self.emb = nn.ModuleList(nn.Embedding(n + 1, c.d_emb) for n in sizes)       # user item author l1 l2 leaf
        d_in = len(sizes) * c.d_emb + c.n_dense
        dims = (d_in, *c.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if c.lhuc:
            self.lhuc_emb = nn.ModuleList(nn.Embedding(n + 1, c.lhuc_dim) for n in sizes[:3])
            self.gates = nn.ModuleList(LHUC(3 * c.lhuc_dim, d, c.lhuc_hidden) for d in dims[:-1])
        self.se = SqueezeExcite(c.hidden[-1], c.se_groups, c.se_reduction) if c.se else nn.Identity()
        self.drop = nn.Dropout(c.dropout)
        tower = (c.hidden[-1], *c.head_hidden)
        self.heads = nn.ModuleList(
            nn.Sequential(*[m for a, b in zip(tower[:-1], tower[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                          nn.Linear(tower[-1], 1))
            for _ in c.heads)
        embs = list(self.emb) + (list(self.lhuc_emb) if c.lhuc else [])
        for e in embs:
            nn.init.normal_(e.weight, std=0.01)   # an id unseen in training stays near zero
        # He initialisation keeps the signal's scale through the ReLU stack (PyTorch's default
        # shrinks it about threefold per layer, and eight layers start on a long plateau)
        towers = [layer for head in self.heads for layer in head if isinstance(layer, nn.Linear)]
        for layer in [*self.layers, *towers]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, ids: torch.Tensor, cats: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """(B, 3) ids, (B, 3) categories, (B, n_dense) raw dense -> (B, H) logits."""
        if self.training and self.config.id_dropout > 0:
            ids = ids * (torch.rand(ids.shape, device=ids.device) >= self.config.id_dropout)             # (B, 3) 0 = unknown
        cols = torch.cat([ids, cats], dim=1)                                          # (B, 6)
        x = torch.cat([e(cols[:, k]) for k, e in enumerate(self.emb)]
                      + [(dense - self.mean) / self.std], dim=1)                      # (B, d_in)
        if self.config.lhuc:
            g = torch.cat([e(ids[:, k]) for k, e in enumerate(self.lhuc_emb)], dim=1)  # (B, 3 * lhuc_dim)
        for k, layer in enumerate(self.layers):
            if self.config.lhuc:
                x = x * self.gates[k](g)                                              # (B, d_k) gated input
            x = self.drop(F.relu(layer(x)))                                           # (B, hidden[k])
        x = self.se(x)                                                                # (B, hidden[-1])
        return torch.cat([head(x) for head in self.heads], dim=1)                     # (B, H)


def predict(model: SurveyNet, x: Inputs, chunk: int = 32768) -> np.ndarray:
    """(n, H) head probabilities of ``model`` for inputs ``x``."""
    out = np.empty((len(x), len(model.config.heads)), np.float32)
    model.eval()
    device = module_device(model)
    with torch.inference_mode():
        for s in range(0, len(x), chunk):
            logits = model(to_device(x.ids[s:s + chunk], device), to_device(x.cats[s:s + chunk], device),
                           to_device(x.dense[s:s + chunk], device))                   # (b, H)
            out[s:s + chunk] = to_host(torch.sigmoid(logits))
    return out


# ============================================================================ loss
def data_loss(model: SurveyNet, b: Rows) -> torch.Tensor:
    """Masked, weighted BCE summed over heads, averaged over the rows of the batch."""
    logits = model(b.ids, b.cats, b.dense)                                                     # (B, H)
    bce = F.binary_cross_entropy_with_logits(logits, b.target, reduction="none")              # (B, H)
    return ((bce * b.mask).sum(1) * b.weight).sum() / len(b.weight)


class HeldOutLoss:
    """The early-stopping metric: minus the weighted BCE of :func:`data_loss` on held-out rows.

    The untrained network (the first call, epoch 0) is never kept: on a few hundred held-out
    questionnaires whose answer rates drift between days, chance can make it the best, and
    ``train_model`` would then return a model that never learned.
    """
    CHUNK = 16384

    def __init__(self, rows: Rows):
        self.n = len(rows)
        self.tensors = {f: torch.from_numpy(np.ascontiguousarray(getattr(rows, f))) for f in Rows.FIELDS}
        self.calls = 0

    @classmethod
    def of(cls, rows: Rows) -> HeldOutLoss | None:
        """The metric on ``rows``, or None (every epoch runs) if they train no head."""
        if len(rows) == 0 or float(rows.mask.sum()) == 0:
            return None
        return cls(rows)

    def __call__(self, model: SurveyNet) -> float:
        self.calls += 1
        if self.calls == 1:
            return -math.inf
        total = 0.0
        device = module_device(model)
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}     # once: a no-op after
        for s in range(0, self.n, self.CHUNK):
            b = Rows(**{k: v[s:s + self.CHUNK] for k, v in self.tensors.items()})
            total += float(data_loss(model, b)) * len(b.weight)
        return -total / self.n                   # higher is better
