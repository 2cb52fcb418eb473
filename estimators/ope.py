"""Off-policy value of a new ranking policy from the logs of a stochastic logging policy.

Which propensity goes where. The impression log's ``propensity`` column is the logging policy's
*conditional* probability of the item at position j given the items above it (Plackett-Luce);
``propensity_marginal`` is its *marginal* probability of that item at position j. Estimators that
weight one position on its own need the marginal; those that weight a page prefix need the
conditional (whose product over positions 0..j is the prefix's probability). Passing the
conditional where the marginal belongs biases the estimate (below position 0 they differ).

Item-position level (:func:`ope_ips`, :func:`ope_snips`, :func:`ope_dm`, :func:`ope_dr`,
:func:`ope_sndr`, :func:`ope_switch_dr`, :func:`ope_dros`): one row per logged impression, i.e.
per (request, position) pair. The value estimated is the expected reward per impression had the
target policy served the same requests (e.g. expected watch time or satisfaction per slot),
assuming the reward at a position depends only on the item shown there. Common arguments:

- ``reward``: (n,) the logged reward of each impression.
- ``pscore``: (n,) the logging policy's *marginal* probability of the logged item at the logged
  position (the log's ``propensity_marginal`` column, not ``propensity``); in (0, 1].
- ``action_dist``: (n,) the *target* policy's marginal probability of that same item at that
  same position, in [0, 1] (0 when the target would never show it there).
- ``imputed``: (n,) a reward model's prediction ``q_hat(x, a, k)`` for the logged item ``a`` at
  the logged position ``k`` of request ``x``.
- ``imputed_target``: (n,) the same model's expected reward under the target at that row's
  request and position, ``sum_a pi_target(a at k | x) * q_hat(x, a, k)`` over the candidates
  (``pi_target(a at k | x)``: the target's marginal probability, as for ``action_dist``).
- ``max_weight``: cap on the importance weight ``w = action_dist / pscore``; ``math.inf`` (the
  default) is no clipping. Clipping lowers the variance and biases the value (towards 0 for
  non-negative rewards); the interval is then around the clipped target.
- ``alpha``: 1 - confidence level.

The model-based estimators follow Open Bandit Pipeline's definitions (Saito et al. 2021), all of
the form ``mean(imputed_target + w_hat * (reward - imputed))`` with a shrunk weight ``w_hat``:
DM (``w_hat = 0``), DR (``w_hat = w``), Switch-DR (``w * 1{w <= tau}``) and DR with optimistic
shrinkage (``lambda * w / (w**2 + lambda)``), the last two as in Su et al. 2020, "Doubly robust
off-policy evaluation with shrinkage" (ICML); SNDR divides the correction by ``mean(w)``.

Slate level (:func:`slate_standard_ips`, :func:`slate_independent_ips`, :func:`slate_rips`,
:func:`slate_snrips`): one row per page, estimating the expected page reward.

Every function returns an :class:`~estimators.base.Estimate` with ``n`` = rows (impressions or
pages), treating rows as i.i.d.; impressions of one request are not independent, so for
interval work prefer the slate-level functions or sum rows per request first.
"""

from __future__ import annotations

import math
from numbers import Real

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
    pscore: object,
    action_dist: object,
    max_weight: float,
    *,
    ndim: int = 1,
    names: tuple[str, str] = ("pscore", "action_dist"),
) -> np.ndarray:
    """Validated, clipped importance weights ``min(action_dist / pscore, max_weight)``."""
    p_name, e_name = names
    max_weight = check_max_weight(max_weight)
    p = check_pscore(p_name, as_float_array(p_name, pscore, ndim=ndim, min_len=2))
    e = as_float_array(e_name, action_dist, ndim=ndim, min_len=2)
    check_probability(e_name, e)
    if p.shape != e.shape:
        raise ValueError(
            f"{p_name} and {e_name} must have the same shape, got {p.shape} and {e.shape}"
        )
    return np.minimum(e / p, max_weight)


def _reward(
    reward: object, weight: np.ndarray, *, ndim: int = 1, pscore_name: str = "pscore"
) -> np.ndarray:
    r = as_float_array("reward", reward, ndim=ndim, min_len=2)
    check_same_length({"reward": r, pscore_name: weight})
    if r.shape != weight.shape:
        raise ValueError(
            f"reward and {pscore_name} must have the same shape, got {r.shape} and {weight.shape}"
        )
    return r


def _model_terms(
    reward: object,
    pscore: object,
    action_dist: object,
    imputed: object,
    imputed_target: object,
    max_weight: float = math.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(w, reward - imputed, imputed_target)`` of the DR family, each (n,)."""
    w = _weights(pscore, action_dist, max_weight)
    r = _reward(reward, w)
    q = as_float_array("imputed", imputed, min_len=2)
    q_target = as_float_array("imputed_target", imputed_target, min_len=2)
    check_same_length({"reward": r, "imputed": q, "imputed_target": q_target})
    return w, r - q, q_target


def _check_threshold(name: str, value: object, meaning: str) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 ({meaning}), got {value!r}")
    return float(value)


def _ratio_sum_estimate(
    constant: np.ndarray, numerator: np.ndarray, denominator: np.ndarray, *, alpha: float
) -> Estimate:
    """``mean(constant) + sum_k sum_i numerator[i, k] / sum_i denominator[i, k]``, delta method.

    :meth:`Estimate.from_ratio` covers one ratio; SNDR adds a mean to it and SNRIPS sums one
    ratio per position, so the linearisation is written out here: unit i's influence term is
    ``constant_i + sum_k (numerator_ik - R_k * denominator_ik) / mean_i(denominator_ik)``.

    Args:
        constant: (n,) terms whose plain mean is added (zeros for none).
        numerator: (n, K) numerators, one column per ratio.
        denominator: (n, K) denominators; no column may sum to 0.
        alpha: 1 - confidence level.
    """
    den_mean = denominator.mean(axis=0)  # (K,)
    ratio = numerator.sum(axis=0) / denominator.sum(axis=0)  # (K,)
    linear = constant + ((numerator - ratio * denominator) / den_mean).sum(axis=1)  # (n,)
    stderr = Estimate.from_terms(linear, alpha=alpha).stderr
    return Estimate.normal(constant.mean() + ratio.sum(), stderr, len(linear), alpha=alpha)


# --- item-position level -----------------------------------------------------------------------


def ope_ips(
    reward: object,
    pscore: object,
    action_dist: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Inverse propensity scoring: ``mean(w * reward)``, ``w = action_dist / pscore``.

    ``pscore`` is the log's ``propensity_marginal`` (see the module docstring). Unbiased
    (unclipped) when ``pscore`` is the logging policy's marginal probability and is > 0 wherever
    the target policy puts mass. Target = logging policy gives the logged mean reward.
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

    ``pscore`` is the log's ``propensity_marginal``. Biased in small samples, consistent, and
    never outside the range of the observed rewards.

    Raises:
        ValueError: if every weight is 0 (the target never shows a logged item where it was
            logged, so the logs say nothing about it).
    """
    w = _weights(pscore, action_dist, max_weight)
    r = _reward(reward, w)
    if not w.any():
        raise ValueError("action_dist must be > 0 for at least one row (SNIPS divides by sum(w))")
    return Estimate.from_ratio(w * r, w, alpha=alpha)


def ope_dm(imputed_target: object, *, alpha: float = 0.05) -> Estimate:
    """Direct method: ``mean(imputed_target)``, the reward model's value of the target.

    Needs no propensity. Low variance, and biased by exactly the reward model's error under
    the target policy; its interval covers the model's value, not the true one.

    Args:
        imputed_target: (n,) per row, ``sum_a pi_target(a at k | x) * q_hat(x, a, k)``.
        alpha: 1 - confidence level.
    """
    q_target = as_float_array("imputed_target", imputed_target, min_len=2)
    return Estimate.from_terms(q_target, alpha=alpha)


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

    ``pscore`` is the log's ``propensity_marginal``; the other arguments are as in the module
    docstring. Unbiased when either the weights or the reward model are right; with a reward
    model equal to the true (deterministic) reward of every candidate it returns the true
    value exactly.
    """
    w, residual, q_target = _model_terms(
        reward, pscore, action_dist, imputed, imputed_target, max_weight
    )
    return Estimate.from_terms(q_target + w * residual, alpha=alpha)


def ope_sndr(
    reward: object,
    pscore: object,
    action_dist: object,
    imputed: object,
    imputed_target: object,
    *,
    alpha: float = 0.05,
) -> Estimate:
    """Self-normalised DR: ``mean(imputed_target) + sum(w * (reward - imputed)) / sum(w)``.

    ``pscore`` is the log's ``propensity_marginal``. The correction term of :func:`ope_dr` is
    divided by ``mean(w)`` instead of 1 (obp's ``SelfNormalizedDoublyRobust``; Kallus & Uehara
    2019), which bounds it by the largest residual. Consistent, slightly biased in small
    samples; the stderr is the delta method's.

    Raises:
        ValueError: if every weight is 0.
    """
    w, residual, q_target = _model_terms(reward, pscore, action_dist, imputed, imputed_target)
    if not w.any():
        raise ValueError("action_dist must be > 0 for at least one row (SNDR divides by sum(w))")
    return _ratio_sum_estimate(q_target, (w * residual)[:, None], w[:, None], alpha=alpha)


def ope_switch_dr(
    reward: object,
    pscore: object,
    action_dist: object,
    imputed: object,
    imputed_target: object,
    *,
    tau: float,
    alpha: float = 0.05,
) -> Estimate:
    """Switch-DR: DR where ``w <= tau``, the direct method alone where ``w > tau``.

    ``mean(imputed_target + w * 1{w <= tau} * (reward - imputed))``, Su et al. 2020's form, as
    in obp's ``SwitchDoublyRobust``. ``pscore`` is the log's ``propensity_marginal``.
    ``tau = inf`` is :func:`ope_dr`; ``tau = 0`` is :func:`ope_dm` (a weight is never < 0, and a
    0 weight adds nothing).

    Args:
        tau: weight threshold, >= 0 (``math.inf`` for plain DR).
    """
    tau = _check_threshold("tau", tau, "inf for plain DR")
    w, residual, q_target = _model_terms(reward, pscore, action_dist, imputed, imputed_target)
    w_hat = np.where(w <= tau, w, 0.0)
    return Estimate.from_terms(q_target + w_hat * residual, alpha=alpha)


def ope_dros(
    reward: object,
    pscore: object,
    action_dist: object,
    imputed: object,
    imputed_target: object,
    *,
    lambda_: float,
    alpha: float = 0.05,
) -> Estimate:
    """DR with optimistic shrinkage (DRos; Su et al. 2020; obp's ``DoublyRobustWithShrinkage``).

    ``mean(imputed_target + w_hat * (reward - imputed))`` with
    ``w_hat = lambda_ * w / (w**2 + lambda_)``, which is below ``w`` and largest (``sqrt(lambda_)
    / 2``) at ``w = sqrt(lambda_)``. ``pscore`` is the log's ``propensity_marginal``.
    ``lambda_ = inf`` is :func:`ope_dr`; ``lambda_ = 0`` is :func:`ope_dm`.

    Args:
        lambda_: shrinkage, >= 0 (``math.inf`` for plain DR).
    """
    lambda_ = _check_threshold("lambda_", lambda_, "inf for plain DR")
    w, residual, q_target = _model_terms(reward, pscore, action_dist, imputed, imputed_target)
    if math.isinf(lambda_):
        w_hat = w
    else:
        # w = 0 gives 0 / lambda_ = 0, except at lambda_ = 0 where 0 / 0 must also read 0
        denominator = w**2 + lambda_
        w_hat = np.divide(lambda_ * w, denominator, out=np.zeros_like(w), where=denominator > 0)
    return Estimate.from_terms(q_target + w_hat * residual, alpha=alpha)


# --- slate level -------------------------------------------------------------------------------
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
        pscore: (n_pages,) the logging policy's probability of the whole logged page, i.e. the
            product of the log's ``propensity`` (conditional) column over the page's positions;
            or (n_pages, page_len) factors whose product along axis 1 is that probability: the
            ``propensity`` column itself, each position's probability given the items above it
            (for independent positions, simply each position's probability). Not
            ``propensity_marginal``: a product of marginals is not the page's probability.
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
        pscore: (n_pages, page_len) logging policy's *marginal* probability of the logged item
            at each position (the log's ``propensity_marginal`` column, reshaped; not
            ``propensity``, which is conditional on the items above).
        action_dist: (n_pages, page_len) the target policy's marginal probabilities of the same.
        max_weight: cap on each position's weight; ``math.inf`` for none.
        alpha: 1 - confidence level.
    """
    w = _weights(pscore, action_dist, max_weight, ndim=2)  # (n_pages, page_len)
    r = _reward(reward, w, ndim=2)
    return Estimate.from_terms((w * r).sum(axis=1), alpha=alpha)


def _cascade_weights(
    reward: object, pscore_cascade: object, action_dist_cascade: object, max_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(w, reward)``, ``w[:, k]`` the clipped prefix ratio of positions 0..k."""
    names = ("pscore_cascade", "action_dist_cascade")
    ratio = _weights(pscore_cascade, action_dist_cascade, np.inf, ndim=2, names=names)
    # the prefix's probability is the product of the conditionals above and at k
    w = np.minimum(np.cumprod(ratio, axis=1), check_max_weight(max_weight))  # (n_pages, L)
    r = _reward(reward, w, ndim=2, pscore_name="pscore_cascade")
    return w, r


def slate_rips(
    reward: object,
    pscore_cascade: object,
    action_dist_cascade: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Reward-interaction IPS (RIPS; McInerney et al. 2020, obp's ``SlateRewardInteractionIPS``).

    ``mean_i sum_k w_ik * reward_ik`` with ``w_ik = prod_{j <= k} action_dist_cascade_ij /
    pscore_cascade_ij``, the ratio of the page prefix down to position k. Unbiased for the
    expected page reward ``sum_k reward_k`` when the reward at a position depends on the items
    at and above it, not below (the cascade assumption); between :func:`slate_independent_ips`
    and :func:`slate_standard_ips` in both assumption and variance.

    Args:
        reward: (n_pages, page_len) per-position rewards.
        pscore_cascade: (n_pages, page_len) the logging policy's probability of the logged item
            at each position given the items above it: the log's ``propensity`` column,
            reshaped. (obp takes the running product of these instead.)
        action_dist_cascade: (n_pages, page_len) the target policy's conditional probability of
            the same item at the same position given the same items above it.
        max_weight: cap on each prefix weight ``w_ik``; ``math.inf`` for none.
        alpha: 1 - confidence level.
    """
    w, r = _cascade_weights(reward, pscore_cascade, action_dist_cascade, max_weight)
    return Estimate.from_terms((w * r).sum(axis=1), alpha=alpha)


def slate_snrips(
    reward: object,
    pscore_cascade: object,
    action_dist_cascade: object,
    *,
    max_weight: float = np.inf,
    alpha: float = 0.05,
) -> Estimate:
    """Self-normalised RIPS: ``sum_k sum_i w_ik * reward_ik / sum_i w_ik``, delta-method stderr.

    Each position's weights are normalised by their own mean, as in obp's
    ``SelfNormalizedSlateRewardInteractionIPS``; arguments as in :func:`slate_rips` (the log's
    ``propensity`` column for ``pscore_cascade``).

    Raises:
        ValueError: if some position's weights are all 0.
    """
    w, r = _cascade_weights(reward, pscore_cascade, action_dist_cascade, max_weight)
    empty = ~w.any(axis=0)
    if empty.any():
        raise ValueError(
            "action_dist_cascade must be > 0 for at least one page at every position "
            f"(SNRIPS divides by each position's sum of weights), got none at position "
            f"{int(np.argmax(empty))}"
        )
    return _ratio_sum_estimate(np.zeros(len(w)), w * r, w, alpha=alpha)
