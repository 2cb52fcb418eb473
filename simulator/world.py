"""The world: a catalog and a user population with hidden traits, and the ground-truth functions.

Everything here is generated from a config and an explicit ``numpy.random.Generator`` and is
fixed for a run. The ground-truth functions are pure and vectorised over many (user, item)
pairs; the probability behind every random outcome is returned so that it can be logged in
the oracle (``true_*``) columns.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from simulator.config import SimConfig
from simulator.schema import ISSUE_TYPES

# uniforms per impression in sample_behaviour: skip, watch fraction, skip time, satisfaction, one per
# issue type, then like, share, comment, follow, dislike, report
BEHAVIOUR_DRAWS = 4 + len(ISSUE_TYPES) + 6

# u-quantiles of the standard logistic distribution, for E[sigmoid(mu + s*L)] by the midpoint rule
_QUAD_U = (np.arange(64) + 0.5) / 64
_QUAD_L = logit(_QUAD_U)
_GRID = np.linspace(-20.0, 20.0, 4001)


def _mean_sigmoid_table(scale: float) -> np.ndarray:
    """E[sigmoid(mu + scale * L)], L standard logistic, on _GRID (interpolated at use: error < 1e-6)."""
    return expit(_GRID[:, None] + scale * _QUAD_L[None, :]).mean(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Catalog:
    """Items: observable attributes and hidden traits, each an array over items."""
    l1: np.ndarray            # (N,) int16 level-1 category
    l2: np.ndarray            # (N,) int16 level-2 category, global index
    leaf: np.ndarray          # (N,) int16 leaf category, global index
    author: np.ndarray        # (N,) int32
    duration: np.ndarray      # (N,) float32 seconds
    topic: np.ndarray         # (N, d) float32 unit vectors (hidden)
    quality: np.ndarray       # (N,) float32 (hidden)
    attractiveness: np.ndarray  # (N,) float32 (hidden)
    issue: np.ndarray         # (N, len(ISSUE_TYPES)) float32 propensities (hidden)
    leaf_centroids: np.ndarray  # (n_leaves, d) unit vectors (hidden)
    release_day: np.ndarray | None = None  # (N,) int16 first day the item can be served; None: all from day 0

    @property
    def n_items(self) -> int:
        return len(self.l1)

    def table(self) -> pd.DataFrame:
        """The item table (:data:`simulator.schema.ITEM_COLUMNS`), hidden traits as ``true_*``;
        ``release_day`` only with releases (``catalog.new_items_per_day`` > 0)."""
        frame = pd.DataFrame({
            "item_id": np.arange(self.n_items, dtype=np.int32), "l1": self.l1, "l2": self.l2,
            "leaf": self.leaf, "author_id": self.author, "duration": self.duration,
            "true_quality": self.quality, "true_attractiveness": self.attractiveness})
        for j, t in enumerate(ISSUE_TYPES):
            frame[f"true_issue_{t}"] = self.issue[:, j]
        if self.release_day is not None:
            frame["release_day"] = self.release_day
        return frame


@dataclass(frozen=True)
class Population:
    """Users: hidden traits, each an array over users."""
    interests: np.ndarray     # (U, K, d) unit sub-interest vectors (move in place with users.interest_drift or consumption_drift)
    weights: np.ndarray       # (U, K) sub-interest weights, rows sum to 1
    willingness: np.ndarray   # (U,) base P(answer a questionnaire)
    random_responder: np.ndarray  # (U,) bool
    sensitivity: np.ndarray   # (U,) issue sensitivity
    activity: np.ndarray      # (U,) mean sessions per active day
    patience: np.ndarray      # (U,) median session budget, seconds
    tenure_days: np.ndarray   # (U,) observable account age on the user's first day (day 0, or join_day)
    join_day: np.ndarray | None = None  # (U,) int16 first day the user can be active; None: all from day 0

    @property
    def n_users(self) -> int:
        return len(self.willingness)

    def table(self) -> pd.DataFrame:
        """The user table (:data:`simulator.schema.USER_COLUMNS`), hidden traits as ``true_*``;
        ``join_day`` only with joins (``users.new_users_per_day`` > 0)."""
        frame = pd.DataFrame({
            "user_id": np.arange(self.n_users, dtype=np.int32), "tenure_days": self.tenure_days,
            "true_willingness": self.willingness, "true_random_responder": self.random_responder,
            "true_issue_sensitivity": self.sensitivity, "true_activity": self.activity,
            "true_patience_s": self.patience})
        if self.join_day is not None:
            frame["join_day"] = self.join_day
        return frame

    def present(self, active: np.ndarray, day: int) -> np.ndarray:
        """``active`` (U,) bool of a day's returning users, for the users there on ``day``: none
        before their join day, and every user who joins on it (signing up is a visit)."""
        if self.join_day is None:
            return active
        return (active & (self.join_day <= day)) | ((self.join_day == day) & (day > 0))

    def joined(self, day: int) -> np.ndarray:
        """(U,) bool: the users who have joined by ``day`` (every user without joins)."""
        if self.join_day is None:
            return np.ones(self.n_users, dtype=bool)
        return self.join_day <= day


@dataclass(frozen=True)
class Probabilities:
    """Ground truth for a set of (user, item) impressions, before any outcome is drawn."""
    interest: np.ndarray
    active_interest: np.ndarray
    fatigue: np.ndarray
    p_issue_type: np.ndarray  # (n, n_types) P(perceive issue of each type)
    p_issue: np.ndarray
    p_satisfied: np.ndarray
    engagement: np.ndarray    # logit-scale location of the watch fraction (and of the skip logit)
    p_skip: np.ndarray
    p_effective_view: np.ndarray
    expected_watch_time: np.ndarray


@dataclass(frozen=True)
class Behaviour:
    """Drawn outcomes of impressions plus the probabilities of the explicit-feedback draws."""
    skip: np.ndarray
    watch_fraction: np.ndarray  # watch time / duration: above 1 for a replay (behaviour.replay_max > 0)
    watch_time: np.ndarray
    effective_view: np.ndarray
    issue_types: np.ndarray   # (n, n_types) bool
    issue: np.ndarray
    satisfied: np.ndarray
    p_like: np.ndarray
    p_share: np.ndarray
    p_comment: np.ndarray
    p_follow: np.ndarray
    p_dislike: np.ndarray
    p_report: np.ndarray
    like: np.ndarray
    share: np.ndarray
    comment: np.ndarray
    follow: np.ndarray
    dislike: np.ndarray
    report: np.ndarray


class World:
    """A catalog and a population generated from a config; ground-truth functions over them."""

    def __init__(self, config: SimConfig, catalog: Catalog, users: Population):
        self.config = config
        self.catalog = catalog
        self.users = users
        self._mean_fraction_table = _mean_sigmoid_table(config.behaviour.watch_scale)

    @classmethod
    def generate(cls, config: SimConfig, rng: np.random.Generator) -> World:
        catalog = _generate_catalog(config, rng)
        users = _generate_users(config, catalog, rng)
        catalog, users = _with_arrivals(config, catalog, users, rng)
        return cls(config, catalog, users)

    # ------------------------------------------------------------------ ground truth
    def interest(self, users: np.ndarray, items: np.ndarray,
                 active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interest match of users with items: weighted over sub-interests, and with the active one.

        Args:
            users, items: (n,) int indices of the pairs.
            active: (n,) int active sub-interest of each pair's user.
        Returns:
            (match, active_match), each (n,) cosine-scale in [-1, 1].
        """
        sims = np.einsum("nkd,nd->nk", self.users.interests[users], self.catalog.topic[items])
        boost = self.config.users.active_boost
        w = (1.0 - boost) * self.users.weights[users]
        rows = np.arange(len(users))
        w[rows, active] += boost
        return (w * sims).sum(axis=1), sims[rows, active]

    def probabilities(self, users: np.ndarray, items: np.ndarray, active: np.ndarray,
                      fatigue: np.ndarray) -> Probabilities:
        """Ground-truth probabilities of (user, item) impressions given user state.

        Args:
            users, items: (n,) int indices of the pairs.
            active: (n,) int active sub-interest of each pair's user.
            fatigue: (n,) float recent same-category items (decayed) at the impression.
        """
        b, cat = self.config.behaviour, self.catalog
        match, active_match = self.interest(users, items, active)
        quality, attract = cat.quality[items], cat.attractiveness[items]
        fat = self.config.users.fatigue_rate * fatigue
        # issues: each type perceived with 1 - exp(-scale * sensitivity * propensity)
        p_type = -np.expm1(-b.issue_scale * self.users.sensitivity[users, None] * cat.issue[items])
        p_issue = 1.0 - np.prod(1.0 - p_type, axis=1)
        # satisfied = base satisfaction and no perceived issue (so E[satisfied] = p_satisfied)
        p_base = expit(b.sat_bias + b.sat_interest * match + b.sat_quality * quality - fat)
        p_sat = p_base * (1.0 - p_issue)
        duration = cat.duration[items].astype(np.float64)
        engage = (b.engage_bias + b.engage_interest * match + b.engage_attractiveness * attract
                  + b.engage_quality * quality - fat)
        if b.engage_log_duration:
            engage = engage + b.engage_log_duration * np.log(duration / self.config.catalog.duration_median_s)
        p_skip = expit(b.skip_bias - b.skip_engage * engage)
        q = self._effective_fraction_threshold(duration)
        p_reach = expit((engage - logit(q)) / b.watch_scale)
        skip_watch = 0.5 * np.minimum(b.skip_threshold_s, duration)
        # E[F] for F = (1 + replay_max) * sigmoid(engage + watch_scale * L), L standard logistic
        mean_fraction = (1.0 + b.replay_max) * np.interp(engage, _GRID, self._mean_fraction_table)
        full_watch = b.skip_threshold_s + (duration - b.skip_threshold_s) * mean_fraction
        return Probabilities(
            interest=match, active_interest=active_match, fatigue=fatigue, p_issue_type=p_type,
            p_issue=p_issue, p_satisfied=p_sat, engagement=engage, p_skip=p_skip,
            p_effective_view=(1.0 - p_skip) * p_reach,
            expected_watch_time=p_skip * skip_watch + (1.0 - p_skip) * full_watch)

    def _effective_fraction_threshold(self, duration: np.ndarray) -> np.ndarray:
        """The logistic draw sigmoid(engage + watch_scale * L) at which a view is effective: the
        watch fraction F of the part after the skip threshold, divided by 1 + replay_max."""
        b = self.config.behaviour
        q = (b.effective_view_fraction * duration - b.skip_threshold_s) / (duration - b.skip_threshold_s)
        return np.clip(q / (1.0 + b.replay_max), 1e-12, 1.0 - 1e-12)

    def sample_behaviour(self, items: np.ndarray, probs: Probabilities,
                         rng: np.random.Generator) -> Behaviour:
        """Draw watching, satisfaction, issues and explicit feedback for impressions."""
        return self.behaviour_from_uniforms(items, probs, rng.random((len(items), BEHAVIOUR_DRAWS)))

    def behaviour_from_uniforms(self, items: np.ndarray, probs: Probabilities,
                                u: np.ndarray) -> Behaviour:
        """:meth:`sample_behaviour` given its uniform draws, ``u`` of shape (n, BEHAVIOUR_DRAWS).

        The platform draws ``u`` per bucket and page batch, then computes many batches at once.
        """
        b = self.config.behaviour
        n = len(items)
        if u.shape != (n, BEHAVIOUR_DRAWS):
            raise ValueError(f"u has shape {u.shape}, expected ({n}, {BEHAVIOUR_DRAWS})")
        duration = self.catalog.duration[items].astype(np.float64)
        skip = u[:, 0] < probs.p_skip
        # the watched share of the part after the skip threshold: above 1 is a replay (replay_max > 0)
        fraction = (1.0 + b.replay_max) * expit(
            probs.engagement + b.watch_scale * logit(np.clip(u[:, 1], 1e-12, 1 - 1e-12)))
        watched = b.skip_threshold_s + (duration - b.skip_threshold_s) * fraction
        skip_time = u[:, 2] * np.minimum(b.skip_threshold_s, duration) * 0.999
        watch_time = np.where(skip, skip_time, watched)
        fraction = np.where(skip, skip_time / duration, watch_time / duration)
        effective = ~skip & (watch_time >= b.effective_view_fraction * duration)
        k = probs.p_issue_type.shape[1]
        issue_types = u[:, 4:4 + k] < probs.p_issue_type
        issue = issue_types.any(axis=1)
        p_base = np.divide(probs.p_satisfied, 1.0 - probs.p_issue,
                           out=np.zeros_like(probs.p_satisfied), where=probs.p_issue < 1.0)
        satisfied = (u[:, 3] < p_base) & ~issue
        s, nonskip = satisfied.astype(np.float64), (~skip).astype(np.float64)
        pos = b.positive_satisfied * s
        p_like = nonskip * expit(b.like_bias + pos)
        p_share = nonskip * expit(b.share_bias + pos)
        p_comment = nonskip * expit(b.comment_bias + pos)
        p_follow = nonskip * expit(b.follow_bias + pos)
        p_dislike = expit(b.dislike_bias + b.dislike_dissatisfied * (1.0 - s) + b.issue_feedback * issue)
        p_report = expit(b.report_bias + b.issue_feedback * issue)
        draws = u[:, 4 + k:]
        return Behaviour(
            skip=skip, watch_fraction=fraction, watch_time=watch_time, effective_view=effective,
            issue_types=issue_types, issue=issue, satisfied=satisfied,
            p_like=p_like, p_share=p_share, p_comment=p_comment, p_follow=p_follow,
            p_dislike=p_dislike, p_report=p_report,
            like=draws[:, 0] < p_like, share=draws[:, 1] < p_share, comment=draws[:, 2] < p_comment,
            follow=draws[:, 3] < p_follow, dislike=draws[:, 4] < p_dislike,
            report=draws[:, 5] < p_report)


# ---------------------------------------------------------------------------- generation
def _generate_catalog(config: SimConfig, rng: np.random.Generator) -> Catalog:
    c = config.catalog
    d = c.topic_dim
    l1_centroids = _unit(rng.standard_normal((c.n_l1, d)))
    l2_centroids = _unit(np.repeat(l1_centroids, c.n_l2, axis=0)
                         + c.l2_spread / np.sqrt(d) * rng.standard_normal((c.n_l1 * c.n_l2, d)))
    leaf_centroids = _unit(np.repeat(l2_centroids, c.n_l3, axis=0)
                           + c.l3_spread / np.sqrt(d) * rng.standard_normal((c.n_leaves, d)))
    # leaf popularity is uneven (Zipf-like), so some categories are crowded
    leaf_weight = 1.0 / np.arange(1, c.n_leaves + 1) ** c.leaf_zipf
    leaf_weight = rng.permutation(leaf_weight / leaf_weight.sum())
    leaf = rng.choice(c.n_leaves, size=c.n_items, p=leaf_weight).astype(np.int16)
    l2 = (leaf // c.n_l3).astype(np.int16)
    l1 = (l2 // c.n_l2).astype(np.int16)
    topic = _unit(leaf_centroids[leaf] + c.item_noise / np.sqrt(d) * rng.standard_normal((c.n_items, d)))
    author_weight = 1.0 / np.arange(1, c.n_authors + 1) ** c.author_zipf
    author = rng.choice(c.n_authors, size=c.n_items, p=author_weight / author_weight.sum())
    author_quality = rng.normal(0.0, np.sqrt(c.author_quality_share), size=c.n_authors)
    quality = author_quality[author] + rng.normal(0.0, np.sqrt(1.0 - c.author_quality_share), size=c.n_items)
    quality = (quality - quality.mean()) / quality.std()
    rho = c.clickbait_corr
    attract = rho * quality + np.sqrt(1.0 - rho ** 2) * rng.standard_normal(c.n_items)
    duration = np.clip(c.duration_median_s * np.exp(c.duration_sigma * rng.standard_normal(c.n_items)),
                       c.duration_min_s, c.duration_max_s)
    issue = np.empty((c.n_items, len(ISSUE_TYPES)))
    for j in range(len(ISSUE_TYPES)):
        flagged = rng.random(c.n_items) < c.issue_item_share
        issue[:, j] = np.where(flagged, rng.beta(*c.issue_flagged_beta, c.n_items),
                               rng.beta(*c.issue_background_beta, c.n_items))
    return Catalog(l1=l1, l2=l2, leaf=leaf, author=author.astype(np.int32),
                   duration=duration.astype(np.float32), topic=topic.astype(np.float32),
                   quality=quality.astype(np.float32), attractiveness=attract.astype(np.float32),
                   issue=issue.astype(np.float32), leaf_centroids=leaf_centroids.astype(np.float32))


def _generate_users(config: SimConfig, catalog: Catalog, rng: np.random.Generator) -> Population:
    u = config.users
    n, k, d = u.n_users, u.n_interests, config.catalog.topic_dim
    # each sub-interest sits near a leaf centroid; leaves are drawn by their item counts
    leaf_counts = np.bincount(catalog.leaf, minlength=len(catalog.leaf_centroids)).astype(float)
    leaves = rng.choice(len(leaf_counts), size=(n, k), p=leaf_counts / leaf_counts.sum())
    interests = _unit(catalog.leaf_centroids[leaves] + u.interest_noise / np.sqrt(d) * rng.standard_normal((n, k, d)))
    weights = rng.dirichlet(np.full(k, u.interest_concentration), size=n)
    willingness = rng.beta(u.willingness_mean * u.willingness_concentration,
                           (1.0 - u.willingness_mean) * u.willingness_concentration, n)
    random_responder = rng.random(n) < u.random_responder_share
    sensitivity = rng.gamma(u.issue_sensitivity_shape, u.issue_sensitivity_mean / u.issue_sensitivity_shape, n)
    activity = rng.gamma(u.activity_shape, u.activity_mean / u.activity_shape, n)
    patience = u.patience_median_s * np.exp(u.patience_user_sigma * rng.standard_normal(n))
    tenure = np.floor(rng.exponential(u.tenure_scale_days, n) * (0.5 + activity / u.activity_mean)).astype(np.int32)
    return Population(interests=interests.astype(np.float32), weights=weights, willingness=willingness,
                      random_responder=random_responder, sensitivity=sensitivity, activity=activity,
                      patience=patience, tenure_days=tenure)


def _with_arrivals(config: SimConfig, catalog: Catalog, users: Population,
                   rng: np.random.Generator) -> tuple[Catalog, Population]:
    """Release days of new items and join days of new users (``catalog.new_items_per_day``,
    ``users.new_users_per_day``), drawn after everything else and only when a knob is on, so the
    world without arrivals is the same draw for draw. Each knob has its own child stream: turning
    one on leaves the other's days alone. A new user's tenure is 0: ``tenure_days`` is the account
    age on the user's first day (day 0, or the join day)."""
    c, u, days = config.catalog, config.users, config.platform.days
    if not (c.new_items_per_day or u.new_users_per_day):
        return catalog, users
    item_rng, user_rng = rng.spawn(2)
    if c.new_items_per_day:
        release = arrival_days(catalog.n_items, c.new_items_per_day, days,
                               catalog.n_items - config.platform.n_candidates, item_rng)
        catalog = replace(catalog, release_day=release)
    if u.new_users_per_day:
        join = arrival_days(users.n_users, u.new_users_per_day, days, users.n_users, user_rng)
        users = replace(users, join_day=join, tenure_days=np.where(join > 0, 0, users.tenure_days).astype(np.int32))
    return catalog, users


def arrival_days(n: int, rate: float, days: int, most: int, rng: np.random.Generator) -> np.ndarray:
    """First day of each of ``n`` users or items: Poisson(``rate``) arrivals on each of days
    1 .. ``days`` - 1, at most ``most`` in all (the latest dropped if the draws exceed it), given
    to a uniformly random subset; the rest are there from day 0.

    Returns:
        (n,) int16 days in [0, days).
    """
    counts = rng.poisson(rate, days - 1)                           # (days - 1,) arrivals on days 1 ..
    arrivals = np.repeat(np.arange(1, days, dtype=np.int16), counts)[:most]
    out = np.zeros(n, dtype=np.int16)
    out[rng.permutation(n)[:len(arrivals)]] = arrivals
    return out
