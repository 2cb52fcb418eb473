"""Questionnaire and satisfaction rates from biased logs.

Setting shared by every function here: there are ``n`` units (impressions eligible for a
questionnaire, or questionnaires shown) and we want the mean of an outcome ``reward`` (1 if the
user is satisfied, or a graded score) over all ``n`` of them. The outcome is only seen where
``observed`` is 1 (the questionnaire was shown and answered), and unit ``i`` is observed with
probability ``pscore[i]``. Responses are missing not at random (MNAR) when that probability
depends on the outcome itself (satisfied users answer more). The weighting estimators stay
unbiased as long as ``pscore[i]`` is unit i's true probability of being observed, outcome and
all; the simulator records it (``true_p_show * true_p_submit``).

Common arguments (shapes and meaning are the same in every function of this module):

- ``reward``: (n,) outcome per unit. Only read where ``observed`` is 1; elsewhere any value,
  NaN included, is ignored (an unanswered questionnaire has no answer).
- ``observed``: (n,) 0/1 or bool, whether the outcome was observed.
- ``pscore``: (n,) probability that the unit is observed, in (0, 1] for *every* unit: a unit
  that could never be observed makes every weighting estimator biased, so a zero is an error.
  With a two-stage funnel, pass ``P(shown) * P(submitted | shown)``. A fitted propensity (see
  :mod:`estimators.propensity`) can be passed as is; the standard error then treats it as known.
- ``alpha``: 1 - confidence level of the returned interval.

Every function returns an :class:`~estimators.base.Estimate` whose ``n`` is the number of units
the mean is over (the respondents for :func:`naive`, all ``n`` units for the others).
"""

from __future__ import annotations

import numpy as np

from ._validation import (
    as_binary,
    as_float_array,
    check_max_weight,
    check_pscore,
    check_same_length,
)
from .base import Estimate


def _inputs(
    reward: object,
    observed: object,
    pscore: object | None = None,
    *,
    names: tuple[str, str, str] = ("reward", "observed", "pscore"),
    **extra: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """Validate the common arguments; return reward with unobserved entries set to 0.

    ``names`` are the argument names used in messages (USM's functions call them differently).
    """
    r_name, o_name, p_name = names
    reward_arr = as_float_array(r_name, reward, allow_nan=True, min_len=2)
    obs = as_binary(o_name, observed, min_len=2)
    arrays = {r_name: reward_arr, o_name: obs}
    p = None
    if pscore is not None:
        p = check_pscore(p_name, as_float_array(p_name, pscore, min_len=2))
        arrays[p_name] = p
    checked = {k: as_float_array(k, v, min_len=2) for k, v in extra.items()}
    check_same_length(arrays | checked)
    if not obs.any():
        raise ValueError(f"{o_name} must mark at least one observed unit, got none")
    nan_obs = np.isnan(reward_arr) & obs
    if nan_obs.any():
        i = int(np.flatnonzero(nan_obs)[0])
        raise ValueError(f"{r_name} must be finite where {o_name} is 1, got nan at index {i}")
    return np.where(obs, reward_arr, 0.0), obs, p, checked


def naive(reward: object, observed: object, *, alpha: float = 0.05) -> Estimate:
    """Mean outcome among respondents only (USM Eq. 1, 2 and 6): biased under MNAR.

    Args:
        reward: (n,) outcome, read where ``observed`` is 1.
        observed: (n,) 0/1 response indicator; at least 2 responses.
        alpha: 1 - confidence level.

    Returns:
        The respondents' mean, with ``n`` = number of respondents.
    """
    r, obs, _, _ = _inputs(reward, observed)
    if obs.sum() < 2:
        raise ValueError(f"observed must mark at least 2 responses, got {int(obs.sum())}")
    return Estimate.from_terms(r[obs], alpha=alpha)


def ips(reward: object, observed: object, pscore: object, *, alpha: float = 0.05) -> Estimate:
    """Inverse propensity scoring: ``mean(observed * reward / pscore)`` over all n units.

    Unbiased for the all-unit mean when ``pscore`` is the true observation probability
    (the estimator behind SAQRec Eq. 4). With every ``pscore`` equal to 1 it is the plain mean.
    """
    r, obs, p, _ = _inputs(reward, observed, pscore)
    return Estimate.from_terms(obs * r / p, alpha=alpha)


def clipped_ips(
    reward: object,
    observed: object,
    pscore: object,
    *,
    max_weight: float,
    alpha: float = 0.05,
) -> Estimate:
    """IPS with each weight ``1 / pscore`` capped at ``max_weight``.

    SAQRec Eq. 6 divides by ``max(pscore, M)``, which is ``max_weight = 1 / M``. Clipping trades
    variance for bias: weights only shrink, so a non-negative outcome is underestimated.
    ``max_weight=math.inf`` is :func:`ips`. The interval is around the clipped (biased) target,
    not the all-unit mean.

    Args:
        max_weight: cap on the weight, > 0; ``math.inf`` for none.
    """
    max_weight = check_max_weight(max_weight)
    r, obs, p, _ = _inputs(reward, observed, pscore)
    weight = np.minimum(1.0 / p, max_weight)
    return Estimate.from_terms(obs * r * weight, alpha=alpha)


def snips(reward: object, observed: object, pscore: object, *, alpha: float = 0.05) -> Estimate:
    """Self-normalised IPS: ``sum(o r / p) / sum(o / p)``; delta-method standard error.

    Slightly biased (O(1/n)), but always within the range of the observed outcomes, and a
    constant outcome is estimated exactly. Whether it is less variable than IPS depends on the
    data: with a 0/1 outcome whose zeros carry the small propensities, it can be more
    variable (``tests/estimators/test_estimators_rates.py`` measures both).
    """
    r, obs, p, _ = _inputs(reward, observed, pscore)
    weight = obs / p
    return Estimate.from_ratio(weight * r, weight, alpha=alpha)


def doubly_robust(
    reward: object,
    observed: object,
    pscore: object,
    imputed: object,
    *,
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust: ``mean(imputed + observed * (reward - imputed) / pscore)``.

    Unbiased if either ``pscore`` or ``imputed`` is right; with correct propensities a better
    imputation model only lowers the variance. If ``imputed`` equals every unit's realised
    outcome the estimate is exactly the all-unit mean.

    Args:
        imputed: (n,) an outcome model's prediction for every unit (observed or not), e.g. a
            satisfaction model's P(satisfied) (SAQRec's imputed satisfaction).
    """
    r, obs, p, extra = _inputs(reward, observed, pscore, imputed=imputed)
    q = extra["imputed"]
    return Estimate.from_terms(q + obs * (r - q) / p, alpha=alpha)


def usm_debiased_rate(
    answer: object, submitted: object, submit_pscore: object, *, alpha: float = 0.05
) -> Estimate:
    """USM's response-debiased survey rate (USM Eq. 13), for issues or likes.

    ``sum(submitted * answer / submit_pscore) / sum(submitted / submit_pscore)`` over the shown
    questionnaires: each submission is weighted by the inverse of the survey-submit model's
    prediction, so reluctant responders count as much as eager ones. It estimates the rate over
    all shown questionnaires, as if every one had been answered (the average over survey shows
    of USM Eq. 5), where the raw rate (USM Eq. 1, 2, 6; :func:`naive`) averages respondents
    only. Numerically it is :func:`snips` over the shown questionnaires.

    Args:
        answer: (n,) 1 if the submitted answer reports the issue (or "like"), 0 otherwise;
            read where ``submitted`` is 1.
        submitted: (n,) 0/1 whether each shown questionnaire was submitted.
        submit_pscore: (n,) P(submitted | shown), e.g. from :func:`fit_submit_propensity`.
        alpha: 1 - confidence level.
    """
    a, sub, p, _ = _inputs(
        answer, submitted, submit_pscore, names=("answer", "submitted", "submit_pscore")
    )
    weight = sub / p
    return Estimate.from_ratio(weight * a, weight, alpha=alpha)
