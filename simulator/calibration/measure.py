"""The figures of a run that a targets table can name, each computed from the run's logs.

A figure is a plain function of a :class:`~simulator.schema.LogData` (the impressions, with the
item and user tables as :mod:`simulator.simulate` writes them), registered in :data:`FIGURES`
with what it means and the impression columns it reads. Each is counted the way its public
source counts it; ``docs/calibration.md`` gives the source of each.

A figure whose denominator is empty in a run is NaN (not 0, not a guess): a run too small to
have a dislike has no positive-to-negative ratio.

:func:`over_seeds` turns the figures of several seeds (common random numbers: the same seeds
for every world compared) into a mean with a Student-t interval, the seeds being the unit.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from estimators.pooling import mean_ci
from simulator.schema import NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK, LogData

WATCH_RATIO_MAX = 5.0
"""Plays with a watch ratio above this are left out of the watch-ratio figures, as KuaiRec's
statistics notebook leaves them out (``watch_ratio <= 5``)."""


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def count(logs: pd.DataFrame, *columns: str) -> int:
    """Impressions where the boolean column is true, summed over ``columns``."""
    return int(sum(logs[c].to_numpy(bool).sum() for c in columns))


def survey_answers(logs: pd.DataFrame) -> tuple[int, int]:
    """(likes, dislikes): submitted satisfaction questionnaires answered "like" and "dislike"
    ("neutral" and the inappropriate-content survey's answers are neither)."""
    answer = logs["survey_answer"].to_numpy(object)
    return int((answer == "like").sum()), int((answer == "dislike").sum())


def watch_ratio(logs: pd.DataFrame) -> np.ndarray:
    """Seconds watched over the video's duration, per play, the plays above :data:`WATCH_RATIO_MAX` left out."""
    r = logs["watch_time"].to_numpy(float) / logs["duration"].to_numpy(float)
    return r[r <= WATCH_RATIO_MAX]


def plays_per_user_day(logs: pd.DataFrame) -> np.ndarray:
    """Impressions of each (user, day) with at least one: KuaiRec's ``groupby(['user_id', 'date']).size()``."""
    return logs.groupby(["user_id", "day"], observed=True).size().to_numpy(float)


def return_gaps(logs: pd.DataFrame) -> np.ndarray:
    """Days between a user's consecutive active days (days with an impression), over every user.

    KuaiSim's KuaiRand notebook counts the same gaps (``get_return_day_distribution``). A run's
    last gap is censored by its end, so gaps are comparable only between runs of similar length.
    """
    active = logs[["user_id", "day"]].drop_duplicates().sort_values(["user_id", "day"])
    user, day = active["user_id"].to_numpy(), active["day"].to_numpy(np.int64)
    same_user = user[1:] == user[:-1]
    return np.diff(day)[same_user]


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if len(values) else float("nan")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


@dataclass(frozen=True)
class Figure:
    """One figure: its name, what it is, the impression columns it reads and how it is computed."""
    name: str
    meaning: str
    columns: tuple[str, ...]
    compute: Callable[[LogData], float]


def _per_impression(*columns: str) -> Callable[[LogData], float]:
    return lambda run: ratio(count(run.impressions, *columns), len(run.impressions))


def _answered_per_effective_view(run: LogData) -> float:
    return ratio(count(run.impressions, "survey_submitted"), count(run.impressions, "effective_view"))


def _survey_like_per_dislike(run: LogData) -> float:
    return ratio(*survey_answers(run.impressions))


_FIGURES = (
    Figure("like_rate", "likes per impression", ("like",), _per_impression("like")),
    Figure("negative_rate", "explicit negatives (dislikes + reports) per impression", NEGATIVE_FEEDBACK,
           _per_impression(*NEGATIVE_FEEDBACK)),
    Figure("positive_per_negative", "explicit positives (likes + shares + comments + follows) per explicit "
           "negative (dislikes + reports): the A/B metric P2N", POSITIVE_FEEDBACK + NEGATIVE_FEEDBACK,
           lambda run: ratio(count(run.impressions, *POSITIVE_FEEDBACK), count(run.impressions, *NEGATIVE_FEEDBACK))),
    Figure("share_rate", "shares per impression", ("share",), _per_impression("share")),
    Figure("comment_rate", "comments per impression", ("comment",), _per_impression("comment")),
    Figure("follow_rate", "follows per impression", ("follow",), _per_impression("follow")),
    Figure("watch_ratio_q1", "first quartile of seconds watched / duration over plays", ("watch_time", "duration"),
           lambda run: _quantile(watch_ratio(run.impressions), 0.25)),
    Figure("watch_ratio_median", "median of seconds watched / duration over plays", ("watch_time", "duration"),
           lambda run: _quantile(watch_ratio(run.impressions), 0.5)),
    Figure("watch_ratio_mean", "mean of seconds watched / duration over plays", ("watch_time", "duration"),
           lambda run: _mean(watch_ratio(run.impressions))),
    Figure("watch_ratio_q3", "third quartile of seconds watched / duration over plays", ("watch_time", "duration"),
           lambda run: _quantile(watch_ratio(run.impressions), 0.75)),
    Figure("duration_median_s", "median duration of the videos played, over plays (not over the catalog)",
           ("duration",), lambda run: _quantile(run.impressions["duration"].to_numpy(float), 0.5)),
    Figure("plays_per_user_day_mean", "mean impressions per active user-day", ("user_id", "day"),
           lambda run: _mean(plays_per_user_day(run.impressions))),
    Figure("plays_per_user_day_median", "median impressions per active user-day", ("user_id", "day"),
           lambda run: _quantile(plays_per_user_day(run.impressions), 0.5)),
    Figure("answered_per_effective_view", "submitted questionnaires (either survey) per effective view",
           ("survey_submitted", "effective_view"), _answered_per_effective_view),
    Figure("survey_like_per_dislike", "satisfaction questionnaires answered like per one answered dislike",
           ("survey_answer",), _survey_like_per_dislike),
    Figure("effective_views_per_skip", "effective views (watched at least half) per skip (under 3 s)",
           ("effective_view", "skip"),
           lambda run: ratio(count(run.impressions, "effective_view"), count(run.impressions, "skip"))),
    Figure("return_gap_one_day_share", "share of the gaps between a user's consecutive active days that are one day",
           ("user_id", "day"), lambda run: _mean(return_gaps(run.impressions) == 1)),
)
FIGURES: dict[str, Figure] = {f.name: f for f in _FIGURES}
"""Every figure a targets table may name, by name."""


def columns_for(names: Sequence[str]) -> list[str]:
    """The impression columns the figures ``names`` read (to read no more of a log than needed)."""
    return sorted({c for name in names for c in FIGURES[name].columns})


def measure(run: LogData, names: Sequence[str] | None = None) -> dict[str, float]:
    """The figures ``names`` (all of :data:`FIGURES` by default) of one run.

    Args:
        run: the run's impressions (at least :func:`columns_for` ``names``) and its item and user tables.
        names: figures to compute, each a key of :data:`FIGURES`.
    """
    names = list(FIGURES) if names is None else list(names)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise KeyError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    return {name: FIGURES[name].compute(run) for name in names}


def over_seeds(per_seed: Sequence[Mapping[str, float]], *, alpha: float = 0.05) -> pd.DataFrame:
    """Each figure's mean over seeds with its two-sided Student-t interval.

    Args:
        per_seed: one :func:`measure` dict per seed, all with the same figures.
        alpha: 1 - the interval's coverage.
    Returns:
        One row per figure: ``figure``, ``measured`` (the mean of its finite values), ``ci_low``,
        ``ci_high`` (NaN with fewer than two finite values) and ``n_seeds`` (the finite ones).
    """
    rows = []
    for name in per_seed[0]:
        m, low, high, n = mean_ci([s[name] for s in per_seed], alpha)
        rows.append({"figure": name, "measured": m, "ci_low": low, "ci_high": high, "n_seeds": n})
    return pd.DataFrame(rows)
