"""A/B metrics: per-user aggregates of a bucket's logs, and their analysis with `estimators`.

Users are the randomisation unit, so every metric is built from per-user sums over the period
analysed (all of the bucket's assigned users, with zeros for those who never came: intent to
treat). A "mean" metric is compared with Welch's test on per-user values; a "ratio" metric
(sum of a numerator over sum of a denominator, whose unit is not the user) with the delta method.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from estimators import (adjust_pvalues, fit_submit_propensity, mean_difference, mean_estimate,
                        ratio_difference, ratio_estimate, srm_test)
from simulator.schema import ISSUE_ANSWERS, NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK

SUBMIT_WEIGHT_CAP = 20.0   # inverse submit propensities are clipped here (USM §3.2)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    label: str
    kind: str                  # "mean" (per user) or "ratio" (sum num / sum den)
    num: str
    den: str | None = None
    unit: str = ""
    higher_is_better: bool = True
    oracle: bool = False       # computed from ground truth a real platform never has


METRICS: tuple[Metric, ...] = (
    Metric("aut", "average user watch time per day (AUT)", "mean", "watch_per_day", unit="s"),
    Metric("avt", "average video watch time (AVT)", "ratio", "watch_time", "impressions", unit="s"),
    Metric("p2n", "positive-to-negative feedback ratio (P2N)", "ratio", "positives", "negatives"),
    Metric("effective_view_rate", "effective-view rate", "ratio", "effective_views", "impressions"),
    Metric("skip_rate", "skip rate", "ratio", "skips", "impressions", higher_is_better=False),
    Metric("like_rate", "like rate", "ratio", "likes", "impressions"),
    Metric("dislike_rate", "dislike rate", "ratio", "dislikes", "impressions", higher_is_better=False),
    Metric("report_rate", "report rate", "ratio", "reports", "impressions", higher_is_better=False),
    Metric("survey_like_rate", "survey like rate (respondents)", "ratio", "sat_likes", "sat_answered"),
    Metric("survey_like_rate_debiased", "survey like rate, response-debiased (USM Eq. 13)", "ratio",
           "sat_likes_w", "sat_answered_w"),
    Metric("survey_issue_rate", "survey issue rate (respondents)", "ratio", "issues", "inap_answered",
           higher_is_better=False),
    Metric("survey_issue_rate_debiased", "survey issue rate, response-debiased (USM Eq. 13)", "ratio",
           "issues_w", "inap_answered_w", higher_is_better=False),
    Metric("active_day_rate", "active days per user-day (DAU / users)", "mean", "active_share"),
    Metric("oracle_satisfaction", "oracle mean satisfaction", "ratio", "p_satisfied", "impressions",
           oracle=True),
)
METRICS_BY_NAME = {m.name: m for m in METRICS}

_USER_SUMS = ("watch_time", "impressions", "positives", "negatives", "effective_views", "skips", "likes",
              "dislikes", "reports", "sat_likes", "sat_answered", "sat_likes_w", "sat_answered_w",
              "issues", "inap_answered", "issues_w", "inap_answered_w", "p_satisfied", "active_days")


def session_depth(logs: pd.DataFrame) -> np.ndarray:
    """Items watched earlier in the same session, for every row (from ``session_id``, ``ts`` and
    ``position``: what the response model's engagement part calls session depth)."""
    order = np.lexsort((logs["position"].to_numpy(), logs["ts"].to_numpy(), logs["session_id"].to_numpy()))
    depth = np.empty(len(logs), dtype=np.int64)
    depth[order] = pd.Series(logs["session_id"].to_numpy()[order]).groupby(
        logs["session_id"].to_numpy()[order], sort=False).cumcount().to_numpy()
    return depth


def submit_features(logs: pd.DataFrame, users: pd.DataFrame) -> np.ndarray:
    """(n, 14) observable features of the survey-submit model, for every row.

    Watch fraction, each explicit feedback flag, survey type, log tenure, log(1 + session depth)
    (the inputs of the response model's engagement part), and the user's answer history before
    this questionnaire (their willingness, as their history reveals it: USM says history matters
    most): the logit of their smoothed answer rate, log(1 + questionnaires shown before), and
    the product of the two, so the model learns that a rate over more questionnaires says more.
    Without the last two, IPS with this model kept a -0.012 bias (2.0 SE) over 20 worlds with
    heterogeneous willingness (tests/simulator/test_response_model.py).
    """
    shown = logs["survey_shown"].to_numpy()
    submitted = logs["survey_submitted"].to_numpy()
    order = np.lexsort((logs["ts"].to_numpy(), logs["user_id"].to_numpy()))
    hist = pd.DataFrame({"u": logs["user_id"].to_numpy()[order], "s": shown[order].astype(float),
                         "a": submitted[order].astype(float)})
    prior = hist.groupby("u")[["s", "a"]].cumsum() - hist[["s", "a"]]
    rate, n_before = np.empty(len(logs)), np.empty(len(logs))
    rate[order] = ((prior["a"] + 1.0) / (prior["s"] + 4.0)).to_numpy()
    n_before[order] = prior["s"].to_numpy()
    tenure = users.set_index("user_id")["tenure_days"].reindex(logs["user_id"].to_numpy()).to_numpy()
    history = np.log(rate / (1 - rate))
    return np.column_stack([
        np.clip(logs["watch_time"].to_numpy() / logs["duration"].to_numpy(), 0, 1),
        *(logs[c].to_numpy(dtype=float) for c in (*POSITIVE_FEEDBACK, *NEGATIVE_FEEDBACK)),
        (logs["survey_type"] == "inappropriate").to_numpy(dtype=float),
        np.log1p(tenure), np.log1p(session_depth(logs)), history, np.log1p(n_before),
        history * np.log1p(n_before)])


def submit_propensity(logs: pd.DataFrame, users: pd.DataFrame) -> np.ndarray:
    """P̂(submitted | shown) from the fitted survey-submit model, for every row (0 where no
    questionnaire was shown; 1 where fewer than 20 were shown, too few to fit).

    The model (USM §3.2) is a logistic regression on :func:`submit_features`, observable
    behaviour only. It removes the bias of the response model's willingness and engagement
    parts; the self-masking part, driven by the latent satisfaction itself, it cannot (the
    oracle columns show how much remains).
    """
    shown = logs["survey_shown"].to_numpy()
    p = np.zeros(len(logs))
    if shown.sum() < 20:
        p[shown] = 1.0
        return p
    features = submit_features(logs, users)[shown]
    model = fit_submit_propensity(features, np.ones(shown.sum()), logs["survey_submitted"].to_numpy()[shown])
    p[shown] = model.predict_proba(features)
    return p


def submit_weights(logs: pd.DataFrame, users: pd.DataFrame) -> np.ndarray:
    """1 / P̂(submitted | shown) from :func:`submit_propensity`, clipped at ``SUBMIT_WEIGHT_CAP``
    (0 where no questionnaire was shown)."""
    p = submit_propensity(logs, users)
    shown = logs["survey_shown"].to_numpy()
    weights = np.zeros(len(logs))
    weights[shown] = np.minimum(1.0 / np.maximum(p[shown], 1e-6), SUBMIT_WEIGHT_CAP)
    return weights


def user_sums(logs: pd.DataFrame, user_ids: np.ndarray, n_days: int, weights: np.ndarray) -> pd.DataFrame:
    """Per-user sums over ``logs`` for the users ``user_ids`` (zeros for users without rows).

    Args:
        logs: impressions of one bucket over the period analysed (oracle columns allowed).
        user_ids: (n,) every user assigned to the bucket.
        n_days: days in the period (for per-day metrics).
        weights: (len(logs),) inverse submit propensities from :func:`submit_weights`.
    """
    answer = logs["survey_answer"].astype(object).to_numpy()
    submitted = logs["survey_submitted"].to_numpy()
    sat = (logs["survey_type"] == "satisfaction").to_numpy() & submitted
    inap = (logs["survey_type"] == "inappropriate").to_numpy() & submitted
    like = sat & (answer == "like")
    issue = inap & np.isin(answer, ISSUE_ANSWERS)
    frame = pd.DataFrame({
        "user_id": logs["user_id"].to_numpy(),
        "watch_time": logs["watch_time"].to_numpy(dtype=float),
        "impressions": 1.0,
        "positives": sum(logs[c].to_numpy(dtype=float) for c in POSITIVE_FEEDBACK),
        "negatives": sum(logs[c].to_numpy(dtype=float) for c in NEGATIVE_FEEDBACK),
        "effective_views": logs["effective_view"].to_numpy(dtype=float),
        "skips": logs["skip"].to_numpy(dtype=float),
        "likes": logs["like"].to_numpy(dtype=float),
        "dislikes": logs["dislike"].to_numpy(dtype=float),
        "reports": logs["report"].to_numpy(dtype=float),
        "sat_likes": like.astype(float), "sat_answered": sat.astype(float),
        "sat_likes_w": like * weights, "sat_answered_w": sat * weights,
        "issues": issue.astype(float), "inap_answered": inap.astype(float),
        "issues_w": issue * weights, "inap_answered_w": inap * weights,
        "p_satisfied": (logs["true_p_satisfied"].to_numpy(dtype=float) if "true_p_satisfied" in logs
                        else np.nan),
    })
    sums = frame.groupby("user_id").sum()
    sums["active_days"] = logs.groupby("user_id")["day"].nunique()
    sums = sums.reindex(np.asarray(user_ids), fill_value=0.0)
    sums["watch_per_day"] = sums["watch_time"] / n_days
    sums["active_share"] = sums["active_days"] / n_days
    return sums


def metric_values(sums: pd.DataFrame, alpha: float = 0.05) -> dict[str, float]:
    """Each metric's value for one bucket (plain numbers, for the per-day table)."""
    out = {}
    for m in METRICS:
        if m.kind == "mean":
            out[m.name] = float(sums[m.num].mean())
        else:
            den = sums[m.den].sum()
            out[m.name] = float(sums[m.num].sum() / den) if den > 0 else float("nan")
    out["users"] = int(len(sums))
    out["active_users"] = int((sums["impressions"] > 0).sum())
    return out


def compare(control: pd.DataFrame, treatment: pd.DataFrame, metric: Metric, *, alpha: float = 0.05):
    """ABResult of ``treatment`` vs ``control`` for one metric, or None if it is undefined
    (e.g. no questionnaire answered in an arm)."""
    try:
        if metric.kind == "mean":
            return mean_difference(control[metric.num].to_numpy(), treatment[metric.num].to_numpy(), alpha=alpha)
        if control[metric.den].sum() <= 0 or treatment[metric.den].sum() <= 0:
            return None
        return ratio_difference(control[metric.num].to_numpy(), control[metric.den].to_numpy(),
                                treatment[metric.num].to_numpy(), treatment[metric.den].to_numpy(), alpha=alpha)
    except ValueError:
        return None


def lift_table(sums: dict[str, pd.DataFrame], control: str, *, alpha: float = 0.05,
               correction: str = "holm") -> pd.DataFrame:
    """Every treatment bucket vs control on every metric, with corrected p-values.

    The correction runs over all (bucket, metric) tests of the table, oracle metrics excluded
    (they are not hypotheses a real platform could test).
    """
    rows = []
    for bucket, s in sums.items():
        if bucket == control:
            continue
        for m in METRICS:
            r = compare(sums[control], s, m, alpha=alpha)
            if r is None:
                rows.append({"bucket": bucket, "metric": m.name, "oracle": m.oracle})
                continue
            rows.append({
                "bucket": bucket, "metric": m.name, "oracle": m.oracle, "method": r.method,
                "control": r.control, "treatment": r.treatment,
                "difference": r.difference.value, "diff_ci_low": r.difference.ci_low,
                "diff_ci_high": r.difference.ci_high,
                "lift": r.lift.value if r.lift else np.nan,
                "lift_ci_low": r.lift.ci_low if r.lift else np.nan,
                "lift_ci_high": r.lift.ci_high if r.lift else np.nan,
                "p_value": r.p_value, "n_control": r.n_control, "n_treatment": r.n_treatment})
    table = pd.DataFrame(rows)
    table["p_adjusted"] = np.nan
    testable = (~table["oracle"]) & table["p_value"].notna() if "p_value" in table else pd.Series(False)
    if testable.any():
        table.loc[testable, "p_adjusted"] = adjust_pvalues(table.loc[testable, "p_value"].to_numpy(), correction)
    table["significant"] = table["p_adjusted"] < alpha
    return table


def srm(assigned: dict[str, int], shares: dict[str, float]):
    """Sample-ratio-mismatch test of assigned user counts against the configured shares."""
    names = list(assigned)
    return srm_test(np.array([assigned[n] for n in names], dtype=float),
                    np.array([shares[n] for n in names], dtype=float))


def bucket_estimates(sums: pd.DataFrame, alpha: float = 0.05) -> dict[str, object]:
    """Each metric of one bucket as an Estimate (value with CI), for the report."""
    out = {}
    for m in METRICS:
        try:
            out[m.name] = (mean_estimate(sums[m.num].to_numpy(), alpha=alpha) if m.kind == "mean"
                           else ratio_estimate(sums[m.num].to_numpy(), sums[m.den].to_numpy(), alpha=alpha))
        except ValueError:
            out[m.name] = None
    return out
