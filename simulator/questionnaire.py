"""Questionnaires: which impressions get one (exposure) and who answers what (response).

Exposure follows a configurable rule (base rate, targeting, only after an effective view, at most
one per page, a per-user daily cap); its probability is recorded as ``true_p_show``. Response is
missing not at random: the submit probability rises with the user's willingness, with being
satisfied (or perceiving an issue) and with how extreme the satisfaction is; a share of users
answer at random. Its probability is recorded as ``true_p_submit``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from simulator.config import QuestionnaireConfig
from simulator.features import FeatureStore
from simulator.schema import INAPPROPRIATE_ANSWERS, ISSUE_TYPES, SATISFACTION_ANSWERS, SURVEY_ANSWERS

SAT, INAPPROPRIATE = 0, 1                      # survey_type codes (schema.SURVEY_TYPES order)
LIKE, NEUTRAL, DISLIKE = (SURVEY_ANSWERS.index(a) for a in SATISFACTION_ANSWERS)
SUITABLE, UNSUITABLE, ADULTS_ONLY = (SURVEY_ANSWERS.index(a) for a in INAPPROPRIATE_ANSWERS)
_ADULT_MASK = sum(1 << ISSUE_TYPES.index(t) for t in ("sexual", "violent"))
FRESH_IMPRESSIONS = 50       # items with fewer impressions are "fresh"
ACTIVE_USER_IMPRESSIONS = 150  # users with more impressions are "active"
POPULAR_SHARE = 0.1          # the top 10% of items by recent effective views are "popular"
RESPONSE_DRAWS = 5           # uniforms per impression in respond()


def exposure_probability(config: QuestionnaireConfig, users: np.ndarray, items: np.ndarray,
                         features: FeatureStore) -> np.ndarray:
    """P(show) for impressions that are eligible (before the one-per-page rule and the cap)."""
    rate = np.full(len(items), config.base_rate)
    if config.targeting == "popular_items":
        popular = features.popular(max(1, int(POPULAR_SHARE * features.items.n_items)))
        targeted = np.isin(items, popular)
    elif config.targeting == "fresh_items":
        targeted = features.item_impressions[items] < FRESH_IMPRESSIONS
    elif config.targeting == "active_users":
        targeted = features.user_impressions[users] > ACTIVE_USER_IMPRESSIONS
    else:
        return rate
    return np.minimum(1.0, np.where(targeted, rate * config.target_boost, rate))


def draw_exposure(p_show: np.ndarray, eligible: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most one questionnaire per page: the first eligible position whose draw succeeds.

    Args:
        p_show: (B, k) P(show) if eligible.
        eligible: (B, k) bool (shown impression, effective view if required, user under cap).
    Returns:
        (shown, p_recorded): (B, k) bool and the probability of showing at each position given
        that no earlier position on the page showed one (0 after a shown one).
    """
    return exposure_from_uniforms(p_show, eligible, rng.random(p_show.shape))


def exposure_from_uniforms(p_show: np.ndarray, eligible: np.ndarray,
                           u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`draw_exposure` given its uniform draws ``u`` (B, k)."""
    p = np.where(eligible, p_show, 0.0)
    hit = u < p
    first = np.cumsum(hit, axis=1)
    shown = hit & (first == 1)
    before = np.concatenate([np.zeros((p.shape[0], 1), dtype=np.int64), first[:, :-1]], axis=1)
    return shown, np.where(before == 0, p, 0.0)


@dataclass(frozen=True)
class Responses:
    survey_type: np.ndarray   # (n,) int8 code, -1 if not shown
    p_submit: np.ndarray      # (n,) 0 if not shown
    submitted: np.ndarray     # (n,) bool
    answer: np.ndarray        # (n,) int8 code into SURVEY_ANSWERS, -1 if not submitted
    reasons: np.ndarray       # (n,) int8 code into SURVEY_REASONS, -1 if none


def respond(config: QuestionnaireConfig, shown: np.ndarray, *, willingness: np.ndarray,
            random_responder: np.ndarray, satisfied: np.ndarray, p_satisfied: np.ndarray,
            issue_types: np.ndarray, rng: np.random.Generator) -> Responses:
    """Survey type, submission and answer for every impression (arrays over impressions)."""
    return respond_from_uniforms(config, shown, willingness=willingness, random_responder=random_responder,
                                 satisfied=satisfied, p_satisfied=p_satisfied, issue_types=issue_types,
                                 u=rng.random((len(shown), RESPONSE_DRAWS)))


def respond_from_uniforms(config: QuestionnaireConfig, shown: np.ndarray, *, willingness: np.ndarray,
                          random_responder: np.ndarray, satisfied: np.ndarray, p_satisfied: np.ndarray,
                          issue_types: np.ndarray, u: np.ndarray) -> Responses:
    """:func:`respond` given its uniform draws ``u`` (n, RESPONSE_DRAWS): survey type, submit,
    answer, random answer, random reason."""
    n = len(shown)
    if u.shape != (n, RESPONSE_DRAWS):
        raise ValueError(f"u has shape {u.shape}, expected ({n}, {RESPONSE_DRAWS})")
    stype = np.where(shown, np.where(u[:, 0] < config.inappropriate_share, INAPPROPRIATE, SAT), -1)
    issue = issue_types.any(axis=1)
    w = np.clip(willingness, 1e-6, 1 - 1e-6)
    lift = np.where(stype == SAT,
                    config.response_bias * satisfied + config.extremity_bias * np.abs(2 * p_satisfied - 1),
                    config.response_bias * issue)
    # random responders answer without regard to their experience
    logit_submit = logit(w) + np.where(random_responder, 0.0, lift - 0.5 * config.response_bias)
    p_submit = np.where(shown, expit(logit_submit), 0.0)
    submitted = shown & (u[:, 1] < p_submit)

    mask = (issue_types.astype(np.int64) << np.arange(issue_types.shape[1])).sum(axis=1)
    sat_answer = np.where(satisfied, LIKE, np.where(u[:, 2] < config.neutral_share, NEUTRAL, DISLIKE))
    adult_only = (mask & ~_ADULT_MASK) == 0
    bad_answer = np.where(adult_only & (u[:, 2] < config.adults_only_share), ADULTS_ONLY, UNSUITABLE)
    inap_answer = np.where(issue, bad_answer, SUITABLE)
    # random responders: uniform over the survey's three options, one random reason if any
    random_choice = (u[:, 3] * 3).astype(np.int64)
    random_answer = np.where(stype == SAT, LIKE + random_choice, SUITABLE + random_choice)
    random_mask = 1 << (u[:, 4] * len(ISSUE_TYPES)).astype(np.int64)
    answer = np.where(random_responder, random_answer, np.where(stype == SAT, sat_answer, inap_answer))
    reason_mask = np.where(random_responder, random_mask, mask)
    answer = np.where(submitted, answer, -1)
    reasons = np.where(submitted & ((answer == UNSUITABLE) | (answer == ADULTS_ONLY)), reason_mask - 1, -1)
    return Responses(survey_type=stype.astype(np.int8), p_submit=p_submit, submitted=submitted,
                     answer=answer.astype(np.int8), reasons=reasons.astype(np.int8))
