"""The log schema and the request types: the one module that both the simulator and policies import.

Every column is defined once here, with its Arrow type, meaning and unit. Columns whose name
starts with ``true_`` are oracle columns: ground truth kept for tests and evaluation, stripped
from everything a policy is given (:meth:`LogData.observable`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

# the Gymnasium observation of a RankBatch and a page as scores, re-exported here because policies
# import nothing from the simulator but this module (policies.gym_adapter, simulator.gym_env)
from simulator.observation import (CANDIDATE_FEATURES, CATEGORY_COLUMNS, USER_FEATURES,  # noqa: F401
                                   observe, page_scores)

if TYPE_CHECKING:  # the feature store is read by policies through RankBatch, never imported
    from simulator.features import FeatureStore

ORACLE_PREFIX = "true_"
PAD = -1
"""Item id of an empty history slot in the feature store's histories."""
HISTORIES = ("clicks", "skips", "satisfied", "dissatisfied", "mixed")
"""Per-user histories the feature store keeps (see simulator.features)."""
ISSUE_TYPES = ("sexual", "violent", "spam")
SURVEY_TYPES = ("satisfaction", "inappropriate")
SATISFACTION_ANSWERS = ("like", "neutral", "dislike")
INAPPROPRIATE_ANSWERS = ("suitable", "unsuitable", "adults_only")
SURVEY_ANSWERS = SATISFACTION_ANSWERS + INAPPROPRIATE_ANSWERS
# What answers mean, the one home of it: the feature store's histories, the metrics and the policies read these.
SATISFIED_ANSWERS = ("like",)
"""Answers that say the user was satisfied (the ``satisfied`` history; EASQ's preferred items)."""
DISSATISFIED_ANSWERS = ("dislike", "unsuitable", "adults_only")
"""Answers that say the user was not (the ``dissatisfied`` history)."""
ISSUE_ANSWERS = ("unsuitable", "adults_only")
"""Answers of an inappropriate questionnaire that report an issue."""
# every non-empty set of issue types, joined by ","; the code of a set is its bit mask - 1
SURVEY_REASONS = tuple(
    ",".join(t for b, t in enumerate(ISSUE_TYPES) if mask >> b & 1)
    for mask in range(1, 2 ** len(ISSUE_TYPES)))


class SchemaError(ValueError):
    """A table or log file does not match the schema; the message names the column."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: pa.DataType
    meaning: str
    unit: str = ""
    nullable: bool = False
    optional: bool = False
    """Written only when its world mechanism is on (a table without it is still valid)."""

    @property
    def oracle(self) -> bool:
        return self.name.startswith(ORACLE_PREFIX)


def _cat(index: pa.DataType = pa.int16()) -> pa.DataType:
    return pa.dictionary(index, pa.string())


IMPRESSION_COLUMNS: tuple[Column, ...] = (
    # keys
    Column("day", pa.int16(), "simulated day, 0-based", "day"),
    Column("ts", pa.float64(), "time the item started playing, since the start of the run (on a page: the previous "
           "item's ts plus its watch time and, with questionnaire.time_s, its questionnaire's time)", "s"),
    Column("user_id", pa.int32(), "user index into the user table"),
    Column("item_id", pa.int32(), "item index into the item table"),
    Column("session_id", pa.int64(), "session, unique within a run"),
    Column("request_id", pa.int64(), "page request, unique within a run"),
    Column("position", pa.int8(), "0-based position on the page"),
    Column("bucket", _cat(), "A/B bucket that served the request"),
    Column("policy", _cat(), "registered name of the serving policy"),
    # logging
    Column("score", pa.float32(), "serving policy's score for the item"),
    Column("propensity", pa.float64(),
           "P(this item at this position | items above it) under a stochastic (Plackett-Luce) "
           "ranking; the product over positions 0..j is the probability of the page prefix; "
           "null when the policy ranks deterministically", "probability", nullable=True),
    Column("propensity_marginal", pa.float64(),
           "P(this item at this position) under the stochastic ranking, over every page it could have "
           "drawn from the request's candidates (item-position IPS divides by it); null unless "
           "platform.log_candidates, and for a deterministic ranker", "probability", nullable=True),
    # behaviour
    Column("watch_time", pa.float32(), "seconds watched, replays included: above the duration (a watch ratio "
           "above 1) when behaviour.replay_max > 0", "s"),
    Column("duration", pa.float32(), "video duration", "s"),
    Column("effective_view", pa.bool_(), "not a skip and watched at least the effective-view fraction (the click y)"),
    Column("skip", pa.bool_(), "watched less than the skip threshold (passive negative)"),
    Column("like", pa.bool_(), "explicit like"),
    Column("share", pa.bool_(), "explicit share"),
    Column("comment", pa.bool_(), "explicit comment"),
    Column("follow", pa.bool_(), "followed the author"),
    Column("dislike", pa.bool_(), "explicit dislike (active negative)"),
    Column("report", pa.bool_(), "reported the video (active negative)"),
    # questionnaire
    Column("survey_shown", pa.bool_(), "a questionnaire was shown after this item"),
    Column("survey_type", _cat(pa.int8()), f"one of {SURVEY_TYPES}; null if not shown", nullable=True),
    Column("survey_submitted", pa.bool_(), "the shown questionnaire was answered"),
    Column("survey_answer", _cat(pa.int8()), f"one of {SURVEY_ANSWERS}; null if not submitted",
           nullable=True),
    Column("survey_reasons", _cat(pa.int8()),
           "comma-separated issue types given with an unsuitable/adults-only answer", nullable=True),
    # oracle
    Column("true_p_satisfied", pa.float32(), "P(satisfied) given user state and item", "probability"),
    Column("true_satisfied", pa.bool_(), "the realised latent satisfaction"),
    Column("true_interest", pa.float32(), "interest match with the user's weighted sub-interests", "cosine"),
    Column("true_active_interest", pa.float32(), "match with the user's active sub-interest", "cosine"),
    Column("true_fatigue", pa.float32(), "category fatigue at this impression", "items"),
    Column("true_p_skip", pa.float32(), "P(skip)", "probability"),
    Column("true_p_effective_view", pa.float32(), "P(effective view)", "probability"),
    Column("true_expected_watch_time", pa.float32(), "E[watch time], replays included", "s"),
    Column("true_p_issue", pa.float32(), "P(the user perceives an issue)", "probability"),
    Column("true_issue", pa.bool_(), "an issue was perceived"),
    Column("true_p_like", pa.float32(), "P(like | realised state)", "probability"),
    Column("true_p_share", pa.float32(), "P(share | realised state)", "probability"),
    Column("true_p_comment", pa.float32(), "P(comment | realised state)", "probability"),
    Column("true_p_follow", pa.float32(), "P(follow | realised state)", "probability"),
    Column("true_p_dislike", pa.float32(), "P(dislike | realised state)", "probability"),
    Column("true_p_report", pa.float32(), "P(report | realised state)", "probability"),
    Column("true_p_show", pa.float32(), "P(questionnaire shown | state, exposure rule)", "probability"),
    Column("true_p_submit", pa.float32(), "P(submitted | shown, realised state), willingness fatigue from the "
           "user's recent questionnaires included; 0 if not shown", "probability"),
)

ITEM_COLUMNS: tuple[Column, ...] = (
    Column("item_id", pa.int32(), "item index"),
    Column("l1", pa.int16(), "level-1 category"),
    Column("l2", pa.int16(), "level-2 category (global index)"),
    Column("leaf", pa.int16(), "leaf category (global index)"),
    Column("author_id", pa.int32(), "author"),
    Column("duration", pa.float32(), "duration", "s"),
    Column("true_quality", pa.float32(), "hidden quality (drives satisfaction)", "z-score"),
    Column("true_attractiveness", pa.float32(), "hidden attractiveness (drives watching)", "z-score"),
    *(Column(f"true_issue_{t}", pa.float32(), f"propensity of {t} content", "probability")
      for t in ISSUE_TYPES),
    Column("release_day", pa.int16(), "first day the item can be recalled and served (0 = there from the start); "
           "only when catalog.new_items_per_day > 0", "day", optional=True),
)

USER_COLUMNS: tuple[Column, ...] = (
    Column("user_id", pa.int32(), "user index"),
    Column("tenure_days", pa.int32(), "days since sign-up on the user's first day in the run: day 0, or join_day "
           "(0 for a user who joins later); observable, correlates with activity", "day"),
    Column("true_willingness", pa.float32(), "base probability of answering a questionnaire", "probability"),
    Column("true_random_responder", pa.bool_(), "answers questionnaires at random"),
    Column("true_issue_sensitivity", pa.float32(), "sensitivity to inappropriate content"),
    Column("true_activity", pa.float32(), "mean sessions per active day"),
    Column("true_patience_s", pa.float32(), "median session time budget", "s"),
    Column("join_day", pa.int16(), "day the user joins the platform, the first with sessions (0 = there from the "
           "start); only when users.new_users_per_day > 0", "day", optional=True),
)

CANDIDATE_COLUMNS: tuple[Column, ...] = (
    Column("day", pa.int16(), "simulated day (0-based)"),
    Column("ts", pa.float64(), "time of the serving round, since the start of the run", "s"),
    Column("user_id", pa.int32(), "user making the request"),
    Column("request_id", pa.int64(), "page request (joins the impression log's request_id)"),
    Column("bucket", pa.string(), "A/B bucket that served the request"),
    Column("policy", pa.string(), "registered name of the logging policy"),
    Column("temperature", pa.float64(),
           "softmax temperature of the logging policy's Plackett-Luce ranking; NaN when it ranks "
           "deterministically", "", nullable=True),
    Column("candidates", pa.list_(pa.int32()), "the request's candidate item ids from recall, in recall order"),
    Column("scores", pa.list_(pa.float64()),
           "the logging policy's score of each candidate (full precision: softmax(scores / temperature) "
           "is the logging distribution)"),
)
"""One row per page request (``platform.log_candidates``): ``<run>/candidates/day-DDDD/bucket-NAME/``."""

IMPRESSION_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in IMPRESSION_COLUMNS])
ITEM_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in ITEM_COLUMNS])
USER_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in USER_COLUMNS])
CANDIDATE_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in CANDIDATE_COLUMNS])
COLUMNS_BY_NAME = {c.name: c for c in itertools.chain(IMPRESSION_COLUMNS)}

# categorical columns: their dictionaries, in code order
CATEGORIES: dict[str, tuple[str, ...]] = {
    "survey_type": SURVEY_TYPES,
    "survey_answer": SURVEY_ANSWERS,
    "survey_reasons": SURVEY_REASONS,
}


def observable_names(columns: tuple[Column, ...] = IMPRESSION_COLUMNS) -> list[str]:
    return [c.name for c in columns if not c.oracle]


def oracle_names(columns: tuple[Column, ...] = IMPRESSION_COLUMNS) -> list[str]:
    return [c.name for c in columns if c.oracle]


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_dictionary(expected):
        if pa.types.is_dictionary(actual):
            return actual.value_type in (pa.string(), pa.large_string())
        return actual in (pa.string(), pa.large_string())
    return actual == expected


def validate_schema(schema: pa.Schema, columns: tuple[Column, ...], *, where: str,
                    require_oracle: bool = True) -> None:
    """Raise :class:`SchemaError` naming every missing or mistyped column of ``schema`` (an
    optional column may be missing)."""
    expected = [c for c in columns if require_oracle or not c.oracle]
    missing = [c.name for c in expected if c.name not in schema.names and not c.optional]
    if missing:
        raise SchemaError(f"{where} is missing column(s) {', '.join(repr(m) for m in missing)}")
    expected = [c for c in expected if c.name in schema.names]
    wrong = [f"{c.name!r} has type {schema.field(c.name).type}, expected {c.type}"
             for c in expected if not _same_type(schema.field(c.name).type, c.type)]
    if wrong:
        raise SchemaError(f"{where}: column " + "; column ".join(wrong))


def strip_oracle(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.startswith(ORACLE_PREFIX)])


@dataclass(frozen=True)
class LogData:
    """Impressions plus the item and user tables of one run (or of one bucket's share of it).

    ``impressions`` has one row per impression (columns of :data:`IMPRESSION_COLUMNS`),
    ``items`` and ``users`` the rows of :data:`ITEM_COLUMNS` / :data:`USER_COLUMNS`.
    """
    impressions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    @property
    def has_oracle(self) -> bool:
        return any(c.startswith(ORACLE_PREFIX) for df in (self.impressions, self.items, self.users)
                   for c in df.columns)

    def observable(self) -> LogData:
        """The same data with every oracle (``true_*``) column removed: what a policy may see."""
        return LogData(strip_oracle(self.impressions), strip_oracle(self.items), strip_oracle(self.users))

    def where(self, mask: Any) -> LogData:
        """Rows of ``impressions`` selected by a boolean mask; tables unchanged."""
        return LogData(self.impressions.loc[np.asarray(mask)].reset_index(drop=True), self.items, self.users)

    def __len__(self) -> int:
        return len(self.impressions)


@dataclass(frozen=True)
class RankBatch:
    """B page requests to score, each against C candidates.

    Attributes:
        user_ids: (B,) int users making the requests.
        candidates: (B, C) int item ids from recall; no duplicates within a row.
        ts: simulated time of the serving round, in seconds.
        day: simulated day of the serving round.
        features: the platform's feature store (observable histories and counters, and the
            observable item attributes); never holds oracle values.
    """
    user_ids: np.ndarray
    candidates: np.ndarray
    ts: float
    day: int
    features: FeatureStore

    def __post_init__(self) -> None:
        if self.candidates.ndim != 2 or self.candidates.shape[0] != self.user_ids.shape[0]:
            raise ValueError(
                f"candidates must have shape (B, C) with B = len(user_ids) = {self.user_ids.shape[0]}, "
                f"got {self.candidates.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.candidates.shape  # type: ignore[return-value]

POSITIVE_FEEDBACK = ("like", "share", "comment", "follow")
"""Explicit positive feedback columns: the numerator of the positive-to-negative ratio (P2N)."""
NEGATIVE_FEEDBACK = ("dislike", "report")
"""Explicit (active) negative feedback columns: the denominator of P2N."""


def markdown_table(columns: tuple[Column, ...] = IMPRESSION_COLUMNS) -> str:
    """The schema as a markdown table (used in docs/schema.md: ``python -m simulator.schema``)."""
    rows = ["| column | type | unit | meaning |", "|---|---|---|---|"]
    for c in columns:
        tp = "category" if pa.types.is_dictionary(c.type) else str(c.type)
        rows.append(f"| `{c.name}` | {tp}{' (nullable)' if c.nullable else ''} | {c.unit} | {c.meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
