"""Off-policy value of a new ranking policy from the logs of a stochastic logging policy.

Item-position level (:func:`ope_ips`, :func:`ope_snips`, :func:`ope_dr`): one row per logged
impression, i.e. per (request, position) pair. The value estimated is the expected reward per
impression had the target policy served the same requests (e.g. expected watch time or
satisfaction per slot), assuming the reward at a position depends only on the item shown there.
Common arguments:

- ``reward``: (n,) the logged reward of each impression.
- ``pscore``: (n,) the logging policy's probability of the logged item at the logged position
  (the log's ``propensity`` column); in (0, 1].
- ``action_dist``: (n,) the *target* policy's probability of that same item at that same
  position, in [0, 1] (0 when the target would never show it there).
- ``max_weight``: cap on the importance weight ``action_dist / pscore``; ``math.inf`` (the
  default) is no clipping. Clipping lowers the variance and biases the value (towards 0 for
  non-negative rewards); the interval is then around the clipped target.
- ``alpha``: 1 - confidence level.

Slate level (:func:`slate_standard_ips`, :func:`slate_independent_ips`): one row per page,
estimating the expected page reward.

Every function returns an :class:`~estimators.base.Estimate` with ``n`` = rows (impressions or
pages), treating rows as i.i.d.; impressions of one request are not independent, so for
interval work prefer the slate-level functions or sum rows per request first.
"""

from __future__ import annotations

import numpy as np

from ._validation import (
    as_float_array,
    check_max_weight,
    check_probability,
    check_pscore,
    check_same_length,
)
from .base import Estimate


def _weights(
    pscore: object, action_dist: object, max_weight: float, *, ndim: int = 1
) -> np.ndarray:
    """Validated, clipped importance weights ``min(action_dist / pscore, max_weight)``."""
    max_weight = check_max_weight(max_weight)
    p = check_pscore("pscore", as_float_array("pscore", pscore, ndim=ndim, min_len=2))
    e = as_float_array("action_dist", action_dist, ndim=ndim, min_len=2)
    check_probability("action_dist", e)
    if p.shape != e.shape:
        raise ValueError(
            f"pscore and action_dist must have the same shape, got {p.shape} and {e.shape}"
        )
    return np.minimum(e / p, max_weight)


def _reward(reward: object, weight: np.ndarray, *, ndim: int = 1) -> np.ndarray:
    r = as_float_array("reward", reward, ndim=ndim, min_len=2)
    check_same_length({"reward": r, "pscore": weight})
    if r.shape != weight.shape:
        raise ValueError(
            f"reward and pscore must have the same shape, got {r.shape} and {weight.shape}"
        )
    return r


def ope_ips(
    reward: object,
    pscore: object,
    action_dist: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Inverse propensity scoring: ``mean(w * reward)``, ``w = action_dist / pscore``.

    Unbiased (unclipped) when ``pscore`` is the logging probability and is > 0 wherever the
    target policy puts mass. Target = logging policy gives the logged mean reward.
    """
    w = _weights(pscore, action_dist, max_weight)
    r = _reward(reward, w)
    return Estimate.from_terms(w * r, alpha=alpha)


def ope_snips(
    reward: object,
    pscore: object,
    action_dist: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Self-normalised IPS: ``sum(w * reward) / sum(w)``, delta-method stderr.

    Raises:
        ValueError: if every weight is 0 (the target never shows a logged item where it was
            logged, so the logs say nothing about it).
    """
    w = _weights(pscore, action_dist, max_weight)
    r = _reward(reward, w)
    if not w.any():
        raise ValueError("action_dist must be > 0 for at least one row (SNIPS divides by sum(w))")
    return Estimate.from_ratio(w * r, w, alpha=alpha)


def ope_dr(
    reward: object,
    pscore: object,
    action_dist: object,
    imputed: object,
    imputed_target: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust: ``mean(imputed_target + w * (reward - imputed))``.

    Args:
        imputed: (n,) a reward model's prediction for the logged item at the logged position.
        imputed_target: (n,) the same model's expected reward under the target policy for that
            row's request and position, ``sum_a action_dist(a) * reward_model(a)`` over the
            candidate items (the direct-method term).

    Unbiased when either the weights or the reward model are right; with a reward model equal
    to the true (deterministic) reward of every candidate it returns the true value exactly.
    """
    w = _weights(pscore, action_dist, max_weight)
    r = _reward(reward, w)
    q = as_float_array("imputed", imputed, min_len=2)
    q_target = as_float_array("imputed_target", imputed_target, min_len=2)
    check_same_length({"reward": r, "imputed": q, "imputed_target": q_target})
    return Estimate.from_terms(q_target + w * (r - q), alpha=alpha)


def slate_standard_ips(
    reward: object,
    pscore: object,
    action_dist: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Standard slate IPS: page reward weighted by the whole page's probability ratio.

    Valid for any page reward (it need not add up over positions), at the price of a weight
    that is a product over positions and grows quickly with the page length.

    Args:
        reward: (n_pages,) the page-level reward (e.g. total watch time of the page).
        pscore: (n_pages,) the logging policy's probability of the whole logged page, or
            (n_pages, page_len) factors whose product along axis 1 is that probability: the
            probability of each position's item given the items above it (for independent
            positions, simply each position's probability).
        action_dist: the target policy's probabilities, same shape and meaning as ``pscore``.
        max_weight: cap on the page weight; ``math.inf`` for none.
        alpha: 1 - confidence level.
    """
    ndim = np.ndim(pscore)
    if ndim not in (1, 2):
        raise ValueError(
            "pscore must be 1-D (page probabilities) or 2-D (per-position factors), "
            f"got shape {np.shape(pscore)}"
        )
    if ndim == 2:
        # the ratio of the products is the product of the per-position ratios
        page_ratio = _weights(pscore, action_dist, np.inf, ndim=2).prod(axis=1)  # (n_pages,)
        w = np.minimum(page_ratio, check_max_weight(max_weight))
    else:
        w = _weights(pscore, action_dist, max_weight)
    r = _reward(reward, w)
    return Estimate.from_terms(w * r, alpha=alpha)


def slate_independent_ips(
    reward: object,
    pscore: object,
    action_dist: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Independent IPS for the page reward ``sum_k reward[:, k]``.

    Each position's reward is weighted by its own marginal ratio, which is unbiased only if the
    reward at a position depends on the item there and not on the rest of the page; much lower
    variance than :func:`slate_standard_ips` when that holds.

    Args:
        reward: (n_pages, page_len) per-position rewards.
        pscore: (n_pages, page_len) logging policy's marginal probability of the logged item at
            each position (the log's ``propensity`` column, reshaped).
        action_dist: (n_pages, page_len) the target policy's marginal probabilities of the same.
        max_weight: cap on each position's weight; ``math.inf`` for none.
        alpha: 1 - confidence level.
    """
    w = _weights(pscore, action_dist, max_weight, ndim=2)  # (n_pages, page_len)
    r = _reward(reward, w, ndim=2)
    return Estimate.from_terms((w * r).sum(axis=1), alpha=alpha)
