"""Questionnaires: which impressions get one (exposure) and who answers what (response).

Exposure follows a configurable rule (base rate, targeting, only after an effective view, at most
one per page, a per-user daily cap); its probability is recorded as ``true_p_show``.

Response has four named parts, each a config knob, and a cost; ``true_p_submit`` records its probability:

- **willingness** (``users.willingness_mean`` / ``willingness_concentration``): a user trait, the
  base submit probability; the user's own answer history reveals it;
- **engagement** (``questionnaire.response_watch``, ``response_feedback``, ``response_depth``):
  users answer more after views they engaged with (watch fraction, explicit feedback) and less
  deep into a session. Every input is in the logs, so this part is missing at random *given
  observables*: a submit model fitted on them removes the bias it causes;
- **self-masking** (``questionnaire.response_bias``, ``extremity_bias``): the submit logit rises
  with the realised satisfaction itself (or a perceived issue) and with how extreme P(satisfied)
  is. Missing not at random: no observable undoes it;
- **random responders** (``users.random_responder_share``): users who answer uniformly at random,
  whatever their experience (self-masking does not apply to them; engagement does);
- **willingness fatigue** (``questionnaire.response_fatigue``, ``response_fatigue_decay``): users
  asked often answer less; the logit falls with the questionnaires shown to the user recently (a
  count decayed per day), for every user. The other costs of a questionnaire, its time and its
  chance to end the session (``questionnaire.time_s``, ``quit_prob``), are the platform's.

The submit logit is ``logit(willingness) + engagement + self_masking - fatigue``; see :func:`submit_logit`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from simulator.config import QuestionnaireConfig
from simulator.features import FeatureStore
from simulator.schema import (DISSATISFIED_ANSWERS, INAPPROPRIATE_ANSWERS, ISSUE_TYPES, SATISFACTION_ANSWERS,
                              SATISFIED_ANSWERS, SURVEY_ANSWERS)

SAT, INAPPROPRIATE = 0, 1                      # survey_type codes (schema.SURVEY_TYPES order)
LIKE, NEUTRAL, DISLIKE = (SURVEY_ANSWERS.index(a) for a in SATISFACTION_ANSWERS)
SUITABLE, UNSUITABLE, ADULTS_ONLY = (SURVEY_ANSWERS.index(a) for a in INAPPROPRIATE_ANSWERS)
SATISFIED_CODES = np.array([SURVEY_ANSWERS.index(a) for a in SATISFIED_ANSWERS])          # survey_answer codes
DISSATISFIED_CODES = np.array([SURVEY_ANSWERS.index(a) for a in DISSATISFIED_ANSWERS])
_ADULT_MASK = sum(1 << ISSUE_TYPES.index(t) for t in ("sexual", "violent"))
RESPONSE_DRAWS = 5           # uniforms per impression in respond()


def exposure_probability(config: QuestionnaireConfig, users: np.ndarray, items: np.ndarray,
                         features: FeatureStore) -> np.ndarray:
    """P(show) for impressions that are eligible (before the one-per-page rule and the cap)."""
    rate = np.full(len(items), config.base_rate)
    if config.targeting == "popular_items":
        popular = features.popular(max(1, int(config.popular_share * features.items.n_items)))
        targeted = np.isin(items, popular)
    elif config.targeting == "fresh_items":
        targeted = features.item_impressions[items] < config.fresh_impressions
    elif config.targeting == "active_users":
        targeted = features.user_impressions[users] > config.active_user_impressions
    else:
        return rate
    return np.minimum(1.0, np.where(targeted, rate * config.target_boost, rate))


def draw_exposure(p_show: np.ndarray, eligible: np.ndarray, rng: np.random.Generator, *,
                  one_per_page: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """At most one questionnaire per page: the first eligible position whose draw succeeds
    (``one_per_page``, the default); otherwise every eligible position draws independently.

    Args:
        p_show: (B, k) P(show) if eligible.
        eligible: (B, k) bool (shown impression, effective view if required, user under cap).
    Returns:
        (shown, p_recorded): (B, k) bool and the probability of showing at each position given
        that no earlier position on the page showed one (0 after a shown one); without
        ``one_per_page``, P(show) of every eligible position.
    """
    return exposure_from_uniforms(p_show, eligible, rng.random(p_show.shape), one_per_page=one_per_page)


def exposure_from_uniforms(p_show: np.ndarray, eligible: np.ndarray, u: np.ndarray, *,
                           one_per_page: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`draw_exposure` given its uniform draws ``u`` (B, k)."""
    p = np.where(eligible, p_show, 0.0)
    hit = u < p
    if not one_per_page:
        return hit, p
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


@dataclass(frozen=True)
class Engagement:
    """What the user did with the item a questionnaire follows: the observable inputs of the
    engagement part of the response model (arrays over impressions)."""
    watch_fraction: np.ndarray   # (n,) watch time / duration, clipped to [0, 1] (a replay counts as 1)
    feedback_events: np.ndarray  # (n,) explicit feedback events on the item (0..6)
    session_depth: np.ndarray    # (n,) items watched earlier in the same session

    @staticmethod
    def none(n: int) -> "Engagement":
        """No engagement (a shallow, unwatched view without feedback): for callers that do not track it."""
        return Engagement(np.zeros(n), np.zeros(n), np.zeros(n))


def engagement_logit(config: QuestionnaireConfig, engagement: Engagement) -> np.ndarray | float:
    """The engagement part of the submit logit (0.0 when its three knobs are 0)."""
    if not config.engagement_on:
        return 0.0
    return (config.response_watch * engagement.watch_fraction
            + config.response_feedback * engagement.feedback_events
            + config.response_depth * np.log1p(engagement.session_depth))


def submit_logit(config: QuestionnaireConfig, survey_type: np.ndarray, *, willingness: np.ndarray,
                 random_responder: np.ndarray, satisfied: np.ndarray, p_satisfied: np.ndarray,
                 issue: np.ndarray, engagement: Engagement, recent: np.ndarray | float = 0.0) -> np.ndarray:
    """logit P(submit | shown): willingness + engagement + self-masking (not for random responders)
    - willingness fatigue (``response_fatigue`` times ``recent``, the questionnaires shown to the
    user recently: a count decayed by ``response_fatigue_decay`` per day, this one excluded)."""
    w = np.clip(willingness, 1e-6, 1 - 1e-6)
    self_masking = np.where(
        survey_type == SAT,
        config.response_bias * satisfied + config.extremity_bias * np.abs(2 * p_satisfied - 1),
        config.response_bias * issue) - 0.5 * config.response_bias
    # random responders answer without regard to their experience
    out = logit(w) + engagement_logit(config, engagement) + np.where(random_responder, 0.0, self_masking)
    return out - config.response_fatigue * recent if config.response_fatigue else out


def respond(config: QuestionnaireConfig, shown: np.ndarray, *, willingness: np.ndarray,
            random_responder: np.ndarray, satisfied: np.ndarray, p_satisfied: np.ndarray,
            issue_types: np.ndarray, engagement: Engagement, rng: np.random.Generator,
            recent: np.ndarray | float = 0.0) -> Responses:
    """Survey type, submission and answer for every impression (arrays over impressions);
    ``recent``: the questionnaires shown to each user recently (:func:`submit_logit`)."""
    return respond_from_uniforms(config, shown, willingness=willingness, random_responder=random_responder,
                                 satisfied=satisfied, p_satisfied=p_satisfied, issue_types=issue_types,
                                 engagement=engagement, recent=recent, u=rng.random((len(shown), RESPONSE_DRAWS)))


def respond_from_uniforms(config: QuestionnaireConfig, shown: np.ndarray, *, willingness: np.ndarray,
                          random_responder: np.ndarray, satisfied: np.ndarray, p_satisfied: np.ndarray,
                          issue_types: np.ndarray, engagement: Engagement, u: np.ndarray,
                          recent: np.ndarray | float = 0.0) -> Responses:
    """:func:`respond` given its uniform draws ``u`` (n, RESPONSE_DRAWS): survey type, submit,
    answer, random answer, random reason."""
    n = len(shown)
    if u.shape != (n, RESPONSE_DRAWS):
        raise ValueError(f"u has shape {u.shape}, expected ({n}, {RESPONSE_DRAWS})")
    stype = np.where(shown, np.where(u[:, 0] < config.inappropriate_share, INAPPROPRIATE, SAT), -1)
    issue = issue_types.any(axis=1)
    logit_submit = submit_logit(config, stype, willingness=willingness, random_responder=random_responder,
                                satisfied=satisfied, p_satisfied=p_satisfied, issue=issue, engagement=engagement,
                                recent=recent)
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
