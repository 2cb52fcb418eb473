"""Plackett-Luce pages: the probabilities a stochastic ranker gives each logged item.

A stochastic ranker draws a page of ``k`` of ``C`` candidates from softmax(logits): the first
item with probability ``w_i / W`` (``w = exp(logits)``, ``W = sum(w)``), the next from the rest,
and so on. Two probabilities of a logged item ``i`` at position ``j`` matter for off-policy
evaluation:

- **conditional**: P(i at j | the items above it) = ``w_i / (W - sum of the weights above)``,
  what the impression log's ``propensity`` column holds; the product over a page's first ``j + 1``
  positions is the probability of that prefix (cascade / RIPS estimators);
- **marginal**: P(i at j), over every page the ranker could have drawn (``propensity_marginal``),
  what item-position IPS divides by.

The marginal has no closed form past position 0: summing over the ordered prefixes above ``j``
costs ``C^j``. It is one integral, though. Drawing a Plackett-Luce ranking is the same as letting
every candidate ring an exponential clock of rate ``w_a`` and ranking by ringing time, so::

    P(i at j) = integral_0^inf  w_i exp(-w_i t)  PB_j(t) dt

where ``PB_j(t)`` is the probability that exactly ``j`` of the other candidates rang before ``t``
(a Poisson-binomial over ``p_a(t) = 1 - exp(-w_a t)``). :func:`marginal_propensities` evaluates
it by Gauss-Legendre quadrature in ``log t`` over the range that holds all but ``1e-12`` of the
mass, with ``PB_j`` by the usual dynamic programme truncated at ``j < k``. The tests check it
against exact enumeration of every page on small problems (relative error below ``1e-8`` for
logits spread with sd up to 2, ``1e-6`` at 3 and ``2e-4`` at an extreme 6) and against a seeded
Monte-Carlo estimate at the platform's size.
The integral is written by hand: scipy's ``quad`` does one integral per call (a Python loop over
every impression); this evaluates all pages of a batch at once.
"""
from __future__ import annotations

import itertools
from functools import cache

import numpy as np

NODES = 96
"""Default Gauss-Legendre nodes of :func:`marginal_propensities` (accuracy in the module docstring)."""

LOW = 1e-5
"""Lower end of the range, ``LOW / W``: below it, the integrand of positions >= 1 holds less than
``LOW**2`` of the mass (position 0 is exact)."""
TAIL = 1e-13
"""Upper end: where both the slowest logged clock and the chance that fewer than ``k`` of the
candidates off the page rang are below ``TAIL`` (a Chernoff bound on the Poisson binomial)."""


def _range(w_rest: np.ndarray, total: np.ndarray, w_page: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of log t per page."""
    lo = np.log(LOW / total)
    hi = np.log(-np.log(TAIL) / w_page.min(axis=1))
    grid = np.exp(lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, 65)[None, :])     # (B, G)
    mu = (-np.expm1(-w_rest[:, None, :] * grid[:, :, None])).sum(axis=2)                  # expected rings
    m = k - 1
    with np.errstate(divide="ignore"):
        log_bound = np.where(mu > m, -mu + m * (1 + np.log(np.maximum(mu, 1e-300) / max(m, 1))), 0.0)
    ok = log_bound < np.log(TAIL)
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), grid.shape[1] - 1)
    return lo, np.minimum(hi, np.log(grid[np.arange(len(grid)), first]))


def log_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """(B, C) logits ``scores / temperature`` shifted so each row's largest is 0 (``w <= 1``)."""
    logits = np.asarray(scores, dtype=np.float64) / temperature
    return logits - logits.max(axis=1, keepdims=True)


def conditional_propensities(logits: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(B, k) P(order[:, j] at j | order[:, :j] above it) of pages drawn from softmax(logits).

    Args:
        logits: (B, C) shifted logits (:func:`log_weights`).
        order: (B, k) column indices into the candidates, top of the page first.
    """
    weights = np.exp(logits)
    chosen = np.take_along_axis(weights, order, axis=1)
    remaining = weights.sum(axis=1, keepdims=True) - np.cumsum(chosen, axis=1) + chosen
    return chosen / np.maximum(remaining, np.finfo(float).tiny)


@cache
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(nodes)
    return (x + 1) / 2, w / 2                     # on [0, 1]


def marginal_propensities(logits: np.ndarray, order: np.ndarray, *, nodes: int = NODES) -> np.ndarray:
    """(B, k) P(order[:, j] at position j) of pages drawn from softmax(logits), over all pages.

    Position 0 is exact (``w_i / W``); the others by the quadrature of the module docstring.

    Args:
        logits: (B, C) shifted logits (:func:`log_weights`).
        order: (B, k) column indices of the logged page into the candidates.
        nodes: Gauss-Legendre nodes in ``log t``.
    """
    b, k = order.shape
    w = np.exp(logits)                                                       # (B, C), max 1
    total = w.sum(axis=1)
    w_page = np.take_along_axis(w, order, axis=1)                            # (B, k)
    rest = np.ones_like(w, dtype=bool)
    np.put_along_axis(rest, order, False, axis=1)
    lo, hi = _range(np.where(rest, w, 0.0), total, w_page, k)
    x, qw = _legendre(nodes)
    t = np.exp(lo[:, None] + (hi - lo)[:, None] * x[None, :])              # (B, T), even in log t
    dz = (hi - lo)[:, None] * qw[None, :]                                    # d(log t) weights
    # PB_m(t), m < k, over the candidates not on the page ...
    pb = np.zeros((b, nodes, k))
    pb[:, :, 0] = 1.0
    for a in range(w.shape[1]):
        p = np.where(rest[:, a, None], -np.expm1(-w[:, a, None] * t), 0.0)[:, :, None]   # (B, T, 1)
        pb[:, :, 1:] = pb[:, :, 1:] * (1 - p) + pb[:, :, :-1] * p
        pb[:, :, 0] *= 1 - p[:, :, 0]
    # ... then, for each logged item, with the page's other items added
    out = np.empty((b, k))
    ring = -np.expm1(-w_page[:, None, :] * t[:, :, None])                   # (B, T, k)
    out[:, 0] = w_page[:, 0] / total                                         # position 0: exact
    for i in range(1, k):
        f = pb.copy()
        for a in range(k):
            if a != i:
                p = ring[:, :, a, None]
                f[:, :, 1:] = f[:, :, 1:] * (1 - p) + f[:, :, :-1] * p
                f[:, :, 0] *= 1 - p[:, :, 0]
        density = w_page[:, i, None] * t * np.exp(-w_page[:, i, None] * t)  # w e^{-wt} dt = (w t e^{-wt}) dlog t
        out[:, i] = (density * f[:, :, i] * dz).sum(axis=1)
    return out


def exact_marginals(logits: np.ndarray, k: int) -> np.ndarray:
    """(C, k) P(candidate c at position j) of one row of logits, by enumerating every page.

    ``C! / (C - k)!`` pages: for tests on small problems only.
    """
    w = np.exp(np.asarray(logits, dtype=np.float64))
    c = len(w)
    out = np.zeros((c, k))
    for page in itertools.permutations(range(c), k):
        left, p = w.sum(), 1.0
        for item in page:
            p *= w[item] / left
            left -= w[item]
        for j, item in enumerate(page):
            out[item, j] += p
    return out
