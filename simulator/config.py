"""Configuration of a simulated world: frozen dataclasses, validated when built, loadable from TOML.

Every field carries a one-line description in its metadata (``doc``); the CLI turns those into
``--section.field`` options and ``--help`` text, so a field documented here is documented there.
A sweep makes variants with ``dataclasses.replace`` or :func:`with_overrides`. The field checks
and :class:`ConfigError` come from :mod:`simulator.checks`.
"""
from __future__ import annotations

import copy

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from simulator.checks import (ConfigError, check_beta, check_choice, check_finite, check_flag, check_int_at_least,
                              check_interval, check_nonnegative, check_positive, check_probability, is_finite_number)

TARGETING_RULES = ("none", "popular_items", "fresh_items", "active_users")


def doc_field(default: Any, doc: str) -> Any:
    """A dataclass field with a default and a documentation string."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"doc": doc})


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True, slots=True)
class CatalogConfig:
    n_items: int = doc_field(6000, "number of videos in the catalog")
    n_l1: int = doc_field(8, "level-1 categories")
    n_l2: int = doc_field(4, "level-2 categories under each level-1 category")
    n_l3: int = doc_field(4, "leaf categories under each level-2 category")
    topic_dim: int = doc_field(16, "dimension of the hidden topic vectors")
    l2_spread: float = doc_field(0.7, "spread (noise norm) of level-2 centroids around their unit-norm parent")
    l3_spread: float = doc_field(0.5, "spread of leaf centroids around their parent")
    item_noise: float = doc_field(0.35, "spread of item topics around their leaf centroid")
    n_authors: int = doc_field(800, "number of authors (items per author are Zipf-distributed)")
    duration_median_s: float = doc_field(11.1, "median video duration in seconds")
    duration_sigma: float = doc_field(0.9, "log-normal sigma of durations (heavy tail)")
    duration_min_s: float = doc_field(4.0, "shortest duration in seconds")
    duration_max_s: float = doc_field(600.0, "longest duration in seconds")
    clickbait_corr: float = doc_field(0.3, "correlation of attractiveness with quality (low = much clickbait)")
    issue_item_share: float = doc_field(0.02, "share of items with an elevated propensity, per issue type")
    issue_flagged_beta: tuple[float, float] = doc_field(
        (2.0, 3.0), "Beta(a, b) of the issue propensity of an item flagged for an issue type (mean a/(a+b))")
    issue_background_beta: tuple[float, float] = doc_field(
        (0.5, 200.0), "Beta(a, b) of the issue propensity of the other items (mean a/(a+b))")
    leaf_zipf: float = doc_field(0.6, "Zipf exponent of leaf-category sizes (0 = equal sizes; higher = crowded leaves)")
    author_zipf: float = doc_field(1.1, "Zipf exponent of items per author (higher = a few prolific authors)")
    author_quality_share: float = doc_field(0.25, "share of the variance of hidden quality that comes from the author "
                                           "(the rest is the item's own; quality is then standardised)")
    new_items_per_day: float = doc_field(0.0, "items released after day 0: Poisson(new_items_per_day) of the n_items "
                                         "get each of days 1 .. platform.days - 1 as their release_day (item "
                                         "table); recall and popularity never see an item before it; 0 = every "
                                         "item there from day 0")

    def __post_init__(self) -> None:
        for name in ("n_items", "n_l1", "n_l2", "n_l3", "topic_dim", "n_authors"):
            check_int_at_least(name, getattr(self, name), 1)
        for name in ("l2_spread", "l3_spread", "item_noise", "duration_sigma"):
            check_nonnegative(name, getattr(self, name))
        for name in ("duration_median_s", "duration_min_s", "duration_max_s"):
            check_positive(name, getattr(self, name))
        if not self.duration_min_s <= self.duration_median_s <= self.duration_max_s:
            raise ConfigError(
                f"durations must satisfy duration_min_s <= duration_median_s <= duration_max_s, got "
                f"{self.duration_min_s}, {self.duration_median_s}, {self.duration_max_s}")
        check_interval("clickbait_corr", self.clickbait_corr, -1, 1)
        check_probability("issue_item_share", self.issue_item_share)
        for name in ("issue_flagged_beta", "issue_background_beta"):
            check_beta(name, getattr(self, name))
        check_nonnegative("leaf_zipf", self.leaf_zipf)
        check_nonnegative("author_zipf", self.author_zipf)
        check_probability("author_quality_share", self.author_quality_share)
        check_nonnegative("new_items_per_day", self.new_items_per_day)

    @property
    def n_leaves(self) -> int:
        return self.n_l1 * self.n_l2 * self.n_l3


@dataclass(frozen=True, slots=True)
class UserConfig:
    n_users: int = doc_field(5000, "number of users")
    n_interests: int = doc_field(3, "sub-interests per user (K)")
    interest_concentration: float = doc_field(1.0, "Dirichlet concentration of sub-interest weights")
    interest_noise: float = doc_field(0.3, "spread of sub-interest vectors around a leaf centroid")
    active_boost: float = doc_field(0.6, "extra weight of the active sub-interest in the interest match")
    interest_switch_prob: float = doc_field(0.3, "probability that the active sub-interest changes at a session start")
    willingness_mean: float = doc_field(0.22, "mean survey willingness (Beta-distributed across users)")
    willingness_concentration: float = doc_field(2.0, "Beta concentration of willingness (low = heterogeneous)")
    random_responder_share: float = doc_field(0.05, "share of users who answer questionnaires at random")
    issue_sensitivity_mean: float = doc_field(1.0, "mean sensitivity to inappropriate content (Gamma)")
    activity_mean: float = doc_field(1.6, "mean sessions per active day")
    patience_median_s: float = doc_field(620.0, "median session time budget in seconds")
    patience_sigma: float = doc_field(0.6, "log-normal sigma of the per-session time budget")
    fatigue_rate: float = doc_field(0.25, "satisfaction penalty per recent item of the same level-2 category (decayed)")
    fatigue_decay: float = doc_field(0.8, "category fatigue decay per item watched (share kept)")
    session_fatigue_carry: float = doc_field(0.3, "share of category fatigue carried into a new session")
    interest_drift: float = doc_field(0.0, "per-session random-walk step of the sub-interest vectors (noise norm, then "
                                    "renormalised; 0 = fixed interests, ~0.3 = drift within days)")
    consumption_drift: float = doc_field(0.0, "after each page, the active sub-interest vector v moves toward the mean "
                                         "topic m of the n items the user reached and was satisfied with: v <- "
                                         "unit((1 - r)^n v + (1 - (1 - r)^n) m) with r = consumption_drift, a step "
                                         "closing r of the gap per satisfying item (0 = off; a filter bubble the "
                                         "recommender can cause)")
    issue_sensitivity_shape: float = doc_field(2.0, "Gamma shape of issue sensitivity across users (low = heterogeneous)")
    activity_shape: float = doc_field(2.0, "Gamma shape of mean sessions per active day across users (low = heterogeneous)")
    patience_user_sigma: float = doc_field(1.0, "log-normal sigma of the users' median session budgets across users")
    tenure_scale_days: float = doc_field(200.0, "scale of the observable account age in days (exponential, times "
                                         "0.5 + activity / activity_mean: active users are older)")
    diurnal: tuple[float, ...] = doc_field(
        (3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 6.0, 6.0, 6.0, 7.0, 9.0, 8.0, 6.0, 6.0, 6.0, 7.0, 9.0, 11.0, 12.0,
         12.0, 9.0, 5.0),
        "relative session-start intensity for each of the 24 hours of the day (evening peak, night trough)")
    new_users_per_day: float = doc_field(0.0, "users who join after day 0: Poisson(new_users_per_day) of the n_users "
                                         "get each of days 1 .. platform.days - 1 as their join_day (user table); "
                                         "no session before it, at least one on it; 0 = every user there from "
                                         "day 0")

    def __post_init__(self) -> None:
        check_int_at_least("n_users", self.n_users, 1)
        check_int_at_least("n_interests", self.n_interests, 1)
        for name in ("interest_concentration", "willingness_concentration", "activity_mean",
                     "patience_median_s", "issue_sensitivity_mean", "issue_sensitivity_shape", "activity_shape",
                     "tenure_scale_days"):
            check_positive(name, getattr(self, name))
        for name in ("interest_noise", "active_boost", "patience_sigma", "fatigue_rate", "interest_drift",
                     "patience_user_sigma"):
            check_nonnegative(name, getattr(self, name))
        check_probability("fatigue_decay", self.fatigue_decay)
        check_probability("consumption_drift", self.consumption_drift)
        check_probability("session_fatigue_carry", self.session_fatigue_carry)
        if not (isinstance(self.diurnal, tuple) and len(self.diurnal) == 24
                and all(is_finite_number(v) and v >= 0 for v in self.diurnal)
                and sum(self.diurnal) > 0):
            raise ConfigError(f"diurnal={self.diurnal!r} must be 24 numbers >= 0 (one per hour), not all 0")
        check_probability("active_boost", self.active_boost)
        check_probability("interest_switch_prob", self.interest_switch_prob)
        check_probability("random_responder_share", self.random_responder_share)
        check_interval("willingness_mean", self.willingness_mean, 0, 1, open_left=True, open_right=True)
        check_nonnegative("new_users_per_day", self.new_users_per_day)


@dataclass(frozen=True, slots=True)
class BehaviourConfig:
    skip_threshold_s: float = doc_field(3.0, "a view shorter than this many seconds is a skip (passive negative)")
    effective_view_fraction: float = doc_field(0.5, "watch fraction at which a view is effective (the click y)")
    sat_bias: float = doc_field(-1.1, "intercept of the satisfaction logit")
    sat_interest: float = doc_field(3.0, "weight of interest match in the satisfaction logit")
    sat_quality: float = doc_field(1.0, "weight of hidden quality in the satisfaction logit")
    engage_bias: float = doc_field(-2.72, "intercept of the engagement logit (drives skip and watch fraction)")
    engage_interest: float = doc_field(2.5, "weight of interest match in the engagement logit")
    engage_attractiveness: float = doc_field(1.0, "weight of attractiveness in the engagement logit")
    engage_quality: float = doc_field(0.2, "weight of quality in the engagement logit")
    skip_bias: float = doc_field(-3.1, "intercept of the skip logit")
    skip_engage: float = doc_field(1.0, "how much engagement lowers the skip logit")
    watch_scale: float = doc_field(0.6, "logistic scale of the watch fraction (higher = more spread)")
    replay_max: float = doc_field(3.0, "replays: the watched share of a view's part after the skip threshold is "
                                  "(1 + replay_max) times its logistic draw, so a watch ratio can exceed 1 "
                                  "(up to about 1 + replay_max); 0 = no replays, ratios below 1")
    engage_log_duration: float = doc_field(0.0, "weight of log(duration / catalog.duration_median_s) in the "
                                           "engagement logit (negative: long videos are skipped more and watched "
                                           "to a smaller fraction; 0 = watch time grows almost linearly with "
                                           "duration)")
    like_bias: float = doc_field(-5.07, "intercept of the like logit")
    positive_satisfied: float = doc_field(2.0, "like/share/comment/follow logit increase when satisfied")
    share_bias: float = doc_field(-8.08, "intercept of the share logit")
    comment_bias: float = doc_field(-7.12, "intercept of the comment logit")
    follow_bias: float = doc_field(-7.98, "intercept of the follow logit")
    dislike_bias: float = doc_field(-9.89, "intercept of the dislike logit")
    dislike_dissatisfied: float = doc_field(2.0, "dislike logit increase when dissatisfied")
    report_bias: float = doc_field(-11.39, "intercept of the report logit")
    issue_feedback: float = doc_field(3.5, "dislike and report logit increase when an issue is perceived")
    issue_scale: float = doc_field(1.0, "how strongly issue propensity times sensitivity becomes a perceived issue")
    quit_bias: float = doc_field(-4.5, "intercept of the per-item session-quit logit")
    quit_dissatisfied: float = doc_field(1.0, "quit logit increase after a dissatisfying item")
    quit_fatigue: float = doc_field(0.3, "quit logit increase per unit of category fatigue")
    return_bias: float = doc_field(0.12, "intercept of the return logit: P(a user comes back on a given day) is "
                                   "the logistic of the return logit, drawn once a day")
    return_satisfaction: float = doc_field(4.0, "return logit increase per unit of recent satisfaction above 0.5")
    return_activity: float = doc_field(1.0, "return logit increase per unit of log(activity / users.activity_mean): "
                                       "users with more sessions a day also come back more often (0 = no link)")
    return_days_away: float = doc_field(-1.0, "return logit change per unit of log(days since the last active day): "
                                        "negative = the longer away, the less likely back (a return-gap "
                                        "distribution with a longer tail than a daily coin; 0 = memoryless)")
    away_satisfaction_drift: float = doc_field(0.1, "share of the way recent satisfaction moves back toward 0.5 "
                                               "on each day the user is away (the state left behind fades; "
                                               "0 = frozen while away)")
    session_satisfaction: float = doc_field(1.0, "log-change of the mean sessions on an active day per unit of "
                                            "recent satisfaction above 0.5 (0 = sessions ignore satisfaction)")
    satisfaction_ema: float = doc_field(0.1, "weight of a page's mean satisfaction in the user's recent satisfaction "
                                      "(the return model's input)")

    def __post_init__(self) -> None:
        check_positive("skip_threshold_s", self.skip_threshold_s)
        check_probability("satisfaction_ema", self.satisfaction_ema)
        check_probability("away_satisfaction_drift", self.away_satisfaction_drift)
        check_interval("effective_view_fraction", self.effective_view_fraction, 0, 1, open_left=True)
        check_positive("watch_scale", self.watch_scale)
        check_nonnegative("replay_max", self.replay_max)
        check_nonnegative("issue_scale", self.issue_scale)
        for f in dataclasses.fields(self):
            check_finite(f.name, getattr(self, f.name))


@dataclass(frozen=True, slots=True)
class QuestionnaireConfig:
    base_rate: float = doc_field(0.072, "P(show) for an eligible impression before targeting")
    after_effective_view_only: bool = doc_field(True, "show questionnaires only after an effective view")
    targeting: str = doc_field("none", "targeting rule: none, popular_items, fresh_items or active_users")
    target_boost: float = doc_field(3.0, "multiplier of base_rate for targeted items or users")
    per_user_daily_cap: int = doc_field(3, "questionnaires shown per user per day at most")
    one_per_page: bool = doc_field(True, "at most one questionnaire per page (the first eligible position whose draw "
                                  "succeeds); false: every eligible position draws (the cap is checked per page)")
    inappropriate_share: float = doc_field(0.3, "share of shown questionnaires that are inappropriate-content surveys")
    fresh_impressions: int = doc_field(50, "targeting 'fresh_items': items with fewer impressions than this")
    active_user_impressions: int = doc_field(150, "targeting 'active_users': users with more impressions than this")
    popular_share: float = doc_field(0.1, "targeting 'popular_items': the top share of items by recent effective views")
    response_watch: float = doc_field(0.0, "engagement part (MAR given observables): submit logit increase per unit "
                                    "of watch fraction")
    response_feedback: float = doc_field(0.0, "engagement part: submit logit increase per explicit feedback event on "
                                       "the item (like, share, comment, follow, dislike, report)")
    response_depth: float = doc_field(0.0, "engagement part: submit logit change per unit of log(1 + items watched "
                                    "earlier in the session)")
    response_bias: float = doc_field(1.0, "self-masking part (MNAR): submit logit increase when satisfied (or an "
                                   "issue is perceived)")
    extremity_bias: float = doc_field(0.5, "self-masking part (MNAR): submit logit increase per unit of satisfaction "
                                    "extremity |2p-1|")
    neutral_share: float = doc_field(0.35, "share of dissatisfied respondents who answer 'neutral', not 'dislike'")
    adults_only_share: float = doc_field(0.4, "share of sexual/violent-only issues answered 'adults only'")
    time_s: float = doc_field(0.0, "cost: seconds a shown questionnaire takes from the session, answered or not "
                              "(after the item it follows, before the next)")
    quit_prob: float = doc_field(0.0, "cost: chance that a shown questionnaire ends the session (on top of the "
                                 "item's own quit hazard)")
    response_fatigue: float = doc_field(0.0, "cost: willingness fatigue, the submit logit decrease per questionnaire "
                                        "shown to the user recently (a count that decays by "
                                        "response_fatigue_decay per day)")
    response_fatigue_decay: float = doc_field(0.5, "share of the user's recent-questionnaire count kept from one day "
                                              "to the next (willingness fatigue's memory)")

    def __post_init__(self) -> None:
        check_probability("base_rate", self.base_rate)
        check_choice("targeting", self.targeting, TARGETING_RULES)
        check_nonnegative("target_boost", self.target_boost)
        check_int_at_least("per_user_daily_cap", self.per_user_daily_cap, 0)
        check_probability("inappropriate_share", self.inappropriate_share)
        check_int_at_least("fresh_impressions", self.fresh_impressions, 0)
        check_int_at_least("active_user_impressions", self.active_user_impressions, 0)
        check_probability("popular_share", self.popular_share)
        for name in ("response_watch", "response_feedback", "response_depth", "response_bias", "extremity_bias"):
            check_finite(name, getattr(self, name))
        check_probability("neutral_share", self.neutral_share)
        check_probability("adults_only_share", self.adults_only_share)
        check_nonnegative("time_s", self.time_s)
        check_probability("quit_prob", self.quit_prob)
        check_nonnegative("response_fatigue", self.response_fatigue)
        check_probability("response_fatigue_decay", self.response_fatigue_decay)

    @property
    def engagement_on(self) -> bool:
        """Whether the response model's engagement part is on (any of its three knobs non-zero)."""
        return bool(self.response_watch or self.response_feedback or self.response_depth)


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    days: int = doc_field(7, "simulated days")
    page_size: int = doc_field(10, "items per page request (k)")
    n_candidates: int = doc_field(200, "candidates per request from recall (C)")
    recall_popular: float = doc_field(0.3, "share of candidates from the popular pool")
    recall_interest: float = doc_field(0.5, "share of candidates from the categories of the user's recent clicks")
    popular_pool: int = doc_field(500, "size of the popular pool recall draws from")
    tick_s: float = doc_field(60.0, "simulated seconds between advances of due users (the serving window)")
    max_batch: int = doc_field(128, "requests per policy call at most")
    page_gap_s: float = doc_field(2.0, "seconds between the end of a page and the next request")
    policy: str = doc_field("production", "serving policy of `satbed simulate` (a registered policy name)")
    temperature: float = doc_field(1.0, "softmax temperature of the production policy's stochastic ranking")
    recall_history: int = doc_field(20, "recent effective views whose leaf categories feed interest recall")
    history_length: int = doc_field(50, "events kept per user and history in the feature store")
    popularity_decay: float = doc_field(0.5, "daily decay of the items' recent effective-view counts (popularity)")
    leaf_click_decay: float = doc_field(0.7, "daily decay of the users' per-category click counts (a ~3-day memory)")
    log_candidates: bool = doc_field(False, "write each request's candidates and the logging policy's scores and "
                                     "temperature (candidates/ next to logs/), and the impressions' "
                                     "propensity_marginal: what off-policy evaluation needs (opt-in: ~2 ms "
                                     "and ~2 KB per request)")

    def __post_init__(self) -> None:
        check_int_at_least("days", self.days, 1)
        check_int_at_least("page_size", self.page_size, 1)
        check_int_at_least("n_candidates", self.n_candidates, 1)
        check_int_at_least("popular_pool", self.popular_pool, 1)
        check_int_at_least("max_batch", self.max_batch, 1)
        if self.n_candidates < self.page_size:
            raise ConfigError(f"n_candidates={self.n_candidates} must be >= page_size={self.page_size}")
        check_probability("recall_popular", self.recall_popular)
        check_probability("recall_interest", self.recall_interest)
        if self.recall_popular + self.recall_interest > 1.0:
            raise ConfigError(
                f"recall_popular + recall_interest = {self.recall_popular + self.recall_interest} "
                "must be <= 1 (the rest is random)")
        check_positive("tick_s", self.tick_s)
        check_nonnegative("page_gap_s", self.page_gap_s)
        check_positive("temperature", self.temperature)
        check_int_at_least("recall_history", self.recall_history, 1)
        check_int_at_least("history_length", self.history_length, 1)
        check_probability("popularity_decay", self.popularity_decay)
        check_probability("leaf_click_decay", self.leaf_click_decay)
        if not self.policy:
            raise ConfigError("policy='' must name a registered policy")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The whole world and platform; the seed is part of the config so a run is reproducible."""
    seed: int = doc_field(0, "run seed; every random stream derives from it")
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    users: UserConfig = field(default_factory=UserConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    questionnaire: QuestionnaireConfig = field(default_factory=QuestionnaireConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)

    def __post_init__(self) -> None:
        check_int_at_least("seed", self.seed, 0)
        if self.catalog.duration_min_s <= self.behaviour.skip_threshold_s:
            raise ConfigError(
                f"catalog.duration_min_s={self.catalog.duration_min_s} must be > "
                f"behaviour.skip_threshold_s={self.behaviour.skip_threshold_s} (a shorter video "
                "could only ever be a skip)")
        self._check_arrivals()

    def _check_arrivals(self) -> None:
        """The expected arrivals over days 1 .. platform.days - 1 fit the population and the catalog
        (recall needs platform.n_candidates items from day 0)."""
        later = self.platform.days - 1
        users, items = self.users.new_users_per_day * later, self.catalog.new_items_per_day * later
        if users > self.users.n_users:
            raise ConfigError(
                f"users.new_users_per_day={self.users.new_users_per_day} over platform.days - 1 = {later} days "
                f"is {users:g} new users, more than users.n_users={self.users.n_users}")
        room = self.catalog.n_items - self.platform.n_candidates
        if self.catalog.new_items_per_day and items > room:
            raise ConfigError(
                f"catalog.new_items_per_day={self.catalog.new_items_per_day} over platform.days - 1 = {later} days "
                f"is {items:g} new items, more than catalog.n_items - platform.n_candidates = {room} (recall "
                "needs n_candidates items from day 0)")


# ----------------------------------------------------------------------------- (de)serialisation
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(path: str, value: Any, tp: Any) -> Any:
    """Check a TOML value against a field's annotation, converting lists to tuples and int to float."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a table, got {type(value).__name__}")
        return from_dict(tp, value, prefix=path + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(path, value, args[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {type(value).__name__}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_coerce(f"{path}[{i}]", v, inner) for i, v in enumerate(value))
    if tp is bool:
        check_flag(path, value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}={value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={value!r} must be a string")
        return value
    return value


RENAMED = {"retrain_daily": 'replaced by ab.learning = "refit" (true) or ab.learning = "frozen" (false); '
                            'policies with update() learn online only with ab.learning = "update"',
           **{k: f"the A/B settings moved to the [ab] table: ab.{k}" for k in
              ("pre_days", "days", "learning", "update_interval_s", "update_epochs", "alpha", "correction")}}
"""Keys of older configs, with what replaced them (named in the unknown-key error)."""


SCENARIO_KEY = "scenario"
"""In a world's table (a SimConfig file's top level, an experiment's or a study's ``[world]``), this key
names a registered scenario (:mod:`simulator.scenarios`) whose overrides become the base that the
table's other keys override."""


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in: tables merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _resolve_scenario(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A world's table with its ``scenario`` key replaced by the scenario's overrides, under the rest."""
    from simulator.scenarios import scenario_overrides   # lazy: the registry builds on this module
    name = data[SCENARIO_KEY]
    if not isinstance(name, str):
        raise ConfigError(f"{prefix}{SCENARIO_KEY}={name!r} must be a scenario name (satbed scenarios)")
    try:
        base = scenario_overrides(name)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{SCENARIO_KEY}: {err}") from None
    return deep_merge(base, {k: v for k, v in data.items() if k != SCENARIO_KEY})


def from_dict(cls: type, data: dict[str, Any], *, prefix: str = "") -> Any:
    """Build a config dataclass from nested dicts; an unknown key is an error, not ignored.

    A world's table (:class:`SimConfig`) may name a scenario (``scenario = "NAME"``): its overrides
    are the base, and the table's other keys override them.
    """
    if cls is SimConfig and SCENARIO_KEY in data:
        data = _resolve_scenario(data, prefix)
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        moved = "".join(f"; {prefix + u}: {RENAMED[u]}" for u in unknown if u in RENAMED)
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + u for u in unknown)}{moved}; "
            f"valid keys in {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}" if prefix else str(err)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (tuples become lists), ready for TOML."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        elif isinstance(value, dict):
            out[f.name] = copy.deepcopy(value)         # a plain dict the caller may edit (bucket params)
        elif value is not None:
            out[f.name] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file, naming the file if it is missing or not TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def world_key(cls: type) -> str | None:
    """Where a config class keeps its world: ``""`` for :class:`SimConfig` itself, the name of its one
    ``SimConfig`` field (``"world"`` for experiments and studies), or None if it has none."""
    if cls is SimConfig:
        return ""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls) if hints[f.name] is SimConfig]
    return names[0] if len(names) == 1 else None


def with_scenario(cls: type, data: Mapping[str, Any], scenario: str) -> dict[str, Any]:
    """A copy of the raw tables ``data`` of a ``cls`` config whose world starts from ``scenario``
    (replacing any scenario the tables name; their own world keys still override it)."""
    key = world_key(cls)
    if key is None:
        raise ConfigError(f"{cls.__name__} has no world, so it cannot take a scenario")
    if key == "":
        return {**data, SCENARIO_KEY: scenario}
    world = data.get(key, {})
    if not isinstance(world, Mapping):
        raise ConfigError(f"{key} must be a table, got {type(world).__name__}")
    return {**data, key: {**world, SCENARIO_KEY: scenario}}


def load_toml(cls: type, path: str | Path | None, *, scenario: str | None = None) -> Any:
    """Load a config dataclass from a TOML file, naming the file in any error.

    Args:
        cls: the config class.
        path: the file; None for no file (only the defaults, or the scenario).
        scenario: a registered scenario that the world starts from (the lowest precedence: the
            file's world keys override it); replaces a scenario the file names.
    """
    data = read_toml(path) if path is not None else {}
    if scenario is not None:
        data = with_scenario(cls, data, scenario)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None


def dump_toml(config: Any, path: str | Path) -> None:
    """Write the resolved config as TOML (atomically)."""
    from simulator.atomic import atomic_write_bytes
    atomic_write_bytes(Path(path), tomli_w.dumps(to_dict(config)).encode())


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted name, field, annotation) for every scalar field in a config tree."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, prefix + f.name + ".")
        else:
            yield prefix + f.name, f, tp


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted = "a.b"``, creating the tables on the way.

    A list of tables (``buckets``, ``policies``) is entered by an element's ``name`` or its index:
    ``buckets.easq.params.temperature`` or ``buckets.3.params.temperature``.
    """
    node: Any = data
    *parents, leaf = dotted.split(".")
    for i, p in enumerate(parents):
        node = _list_element(node, p, ".".join(parents[:i])) if isinstance(node, list) else node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{dotted}: {'.'.join(parents[:i + 1])} is a value, not a table")
    if isinstance(node, list):
        node = _list_element(node, leaf, ".".join(parents))
        raise ConfigError(f"{dotted} names a whole table; set one of its keys ({dotted}.KEY=VALUE)")
    node[leaf] = value


def _list_element(items: list, key: str, where: str) -> dict[str, Any]:
    """The table of ``items`` whose ``name`` is ``key``, or whose index it is."""
    named = [x for x in items if isinstance(x, dict) and x.get("name") == key]
    if named:
        return named[0]
    if key.isdigit() and int(key) < len(items):
        return items[int(key)]
    names = [str(x.get("name")) for x in items if isinstance(x, dict) and "name" in x]
    raise ConfigError(f"{where} has no element {key!r}; names: {', '.join(names) or 'none'} "
                      f"(or an index below {len(items)})")


def parse_value(text: str) -> Any:
    """A command-line value as TOML (``3``, ``0.5``, ``true``, ``[0, 1]``, ``"x"``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments as dotted overrides (values parsed by :func:`parse_value`)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} must be KEY=VALUE (e.g. --set world.users.n_users=500)")
        out[key.strip()] = parse_value(value.strip())
    return out


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of ``config`` with dotted-name overrides applied and validated.

    A ``scenario`` key is refused: a built config sets every field, so a scenario (a base that
    explicit keys override) would change nothing; name it where the config is read instead
    (``--scenario``, a file's ``scenario`` key, :func:`simulator.scenarios.load_scenario`).
    """
    for dotted in overrides:
        if dotted.split(".")[-1] == SCENARIO_KEY and _node_type(type(config), dotted) is SimConfig:
            raise ConfigError(
                f"{dotted} cannot be applied to a built config (it would change nothing); name the scenario "
                "where the config is read: --scenario NAME, a config file's scenario key, or load_scenario()")
    data = to_dict(config)
    for dotted, value in overrides.items():
        set_dotted(data, dotted, value)
    return from_dict(type(config), data)


def _node_type(cls: type, dotted: str) -> type | None:
    """The config class holding the last part of ``dotted`` (None if the path leaves the config tree)."""
    for part in dotted.split(".")[:-1]:
        tp = _field_types(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if not dataclasses.is_dataclass(tp):
            return None
        cls = tp
    return cls
