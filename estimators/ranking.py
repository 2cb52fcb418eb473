"""Offline ranking metrics: HR@k, NDCG@k, MRR (one positive + sampled negatives); AUC, GAUC, UAUC.

Sampled-negative protocol (SAQRec Sec. 5.1.2: the held-out item against 99 sampled negatives).
Common arguments of :func:`hit_rate`, :func:`ndcg` and :func:`mrr`:

- ``positive_score``: (n_users,) the model's score of each user's positive item.
- ``negative_scores``: (n_users, n_negatives) its scores of that user's sampled negatives.
- ``ties``: where the positive goes among negatives with exactly its score.
  ``"expected"`` (default) averages the metric over a uniformly random order of the tied
  items, so a model that gives every item the same score gets the chance level
  (HR@k = k / (n_negatives + 1)) rather than a perfect or a zero score; ``"pessimistic"``
  puts the positive after all its ties, ``"optimistic"`` before them.

With the positive at 1-based rank r: HR@k = [r <= k], NDCG@k = [r <= k] / log2(r + 1) (one
relevant item, so the ideal DCG is 1), MRR = 1 / r. Each returns the mean over users as an
:class:`~estimators.base.Estimate` (n = users, at least 2).

Per-user AUC metrics (:func:`gauc`, :func:`uauc`, :func:`per_user_auc`) take long-format rows
``user`` (n,), ``label`` (n,) 0/1 and ``score`` (n,). A user whose rows are all one class has no
pair to rank and is skipped (not counted, not NaN). Ties between a positive and a negative
score count one half, in every AUC here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from ._validation import (
    as_binary,
    as_float_array,
    check_choice,
    check_nonnegative,
    check_positive_int,
    check_same_length,
)
from .base import Estimate

_TIES = ("expected", "pessimistic", "optimistic")


def _rank_metric(
    positive_score: object,
    negative_scores: object,
    gain: Callable[[np.ndarray], np.ndarray],
    ties: str,
    alpha: float,
) -> Estimate:
    """Mean over users of ``gain(rank of the positive)`` under the chosen tie rule."""
    pos = as_float_array("positive_score", positive_score, min_len=2)
    neg = as_float_array("negative_scores", negative_scores, ndim=2)
    check_same_length({"positive_score": pos, "negative_scores": neg})
    if neg.shape[1] == 0:
        raise ValueError("negative_scores must have at least one column (negative), got 0")
    ties = check_choice("ties", ties, _TIES)
    above = (neg > pos[:, None]).sum(axis=1)  # (n_users,) negatives strictly ahead
    tied = (neg == pos[:, None]).sum(axis=1)  # (n_users,)
    if ties == "pessimistic":
        values = gain(1 + above + tied)
    elif ties == "optimistic":
        values = gain(1 + above)
    else:
        # mean of gain(r) for r uniform on [1 + above, 1 + above + tied], via a prefix sum of
        # gain over every possible rank 1 .. n_negatives + 1
        ranks = np.arange(1, neg.shape[1] + 2)
        cum = np.concatenate(([0.0], np.cumsum(gain(ranks))))  # cum[r] = sum_{j<=r} gain(j)
        values = (cum[1 + above + tied] - cum[above]) / (tied + 1)
    return Estimate.from_terms(values, alpha=alpha)


def hit_rate(
    positive_score: object,
    negative_scores: object,
    *,
    k: int,
    ties: str = "expected",
    alpha: float = 0.05,
) -> Estimate:
    """HR@k: share of users whose positive ranks in the top ``k`` (k >= 1)."""
    k = check_positive_int("k", k)
    return _rank_metric(
        positive_score, negative_scores, lambda r: (r <= k).astype(np.float64), ties, alpha
    )


def ndcg(
    positive_score: object,
    negative_scores: object,
    *,
    k: int,
    ties: str = "expected",
    alpha: float = 0.05,
) -> Estimate:
    """NDCG@k with a single relevant item: ``1 / log2(r + 1)`` if r <= k else 0 (k >= 1)."""
    k = check_positive_int("k", k)
    return _rank_metric(
        positive_score,
        negative_scores,
        lambda r: np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0),
        ties,
        alpha,
    )


def mrr(
    positive_score: object,
    negative_scores: object,
    *,
    ties: str = "expected",
    alpha: float = 0.05,
) -> Estimate:
    """Mean reciprocal rank ``1 / r`` of the positive."""
    return _rank_metric(positive_score, negative_scores, lambda r: 1.0 / r, ties, alpha)


def auc(label: object, score: object, *, alpha: float = 0.05) -> Estimate:
    """ROC AUC, P(score of a random positive > that of a random negative), DeLong stderr.

    Computed from mid-ranks (Sun & Xu's fast DeLong): O(n log n). With a single positive (or
    negative) its variance component cannot be estimated and is taken as 0, so the interval
    covers only the sampling of the other class.

    Args:
        label: (n,) 0/1, both classes present.
        score: (n,) model scores.
        alpha: 1 - confidence level.

    Returns:
        The AUC with ``n`` = number of rows.
    """
    y = as_binary("label", label)
    s = as_float_array("score", score)
    check_same_length({"label": y, "score": s})
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"label must contain both 0 and 1, got {n_pos} ones and {n_neg} zeros")
    pos, neg = s[y], s[~y]
    both = stats.rankdata(np.concatenate([pos, neg]))  # mid-ranks among all rows
    # for each positive: share of negatives below it (+ half the ties); likewise for negatives
    v_pos = (both[:n_pos] - stats.rankdata(pos)) / n_neg  # (n_pos,)
    v_neg = 1.0 - (both[n_pos:] - stats.rankdata(neg)) / n_pos  # (n_neg,)
    var = 0.0
    if n_pos > 1:
        var += v_pos.var(ddof=1) / n_pos
    if n_neg > 1:
        var += v_neg.var(ddof=1) / n_neg
    return Estimate.normal(float(v_pos.mean()), float(np.sqrt(var)), len(y), alpha=alpha)


def per_user_auc(user: object, label: object, score: object) -> pd.DataFrame:
    """AUC of each user who has both a positive and a negative row.

    Args:
        user: (n,) user id per row (any hashable dtype, no missing values).
        label: (n,) 0/1 per row.
        score: (n,) model score per row.

    Returns:
        DataFrame with columns ``user``, ``auc``, ``n_pos``, ``n_neg``, one row per user
        with both classes, sorted by user; users with a single class are left out.
    """
    users = np.asarray(user)
    if users.ndim != 1:
        raise ValueError(f"user must be 1-D, got shape {users.shape}")
    if len(users) == 0:
        raise ValueError("user must not be empty")
    missing = pd.isna(users)
    if missing.any():
        i = int(np.argmax(missing))
        raise ValueError(f"user must not contain missing ids, got one at index {i}")
    y = as_binary("label", label)
    s = as_float_array("score", score)
    check_same_length({"user": users, "label": y, "score": s})
    frame = pd.DataFrame({"user": users, "label": y, "score": s})
    frame["rank"] = frame.groupby("user")["score"].rank(method="average")  # mid-ranks per user
    frame["pos_rank"] = frame["rank"].where(frame["label"], 0.0)
    per = frame.groupby("user", sort=True).agg(
        n_pos=("label", "sum"), n=("label", "size"), pos_rank=("pos_rank", "sum")
    )
    per["n_neg"] = per["n"] - per["n_pos"]
    per = per[(per["n_pos"] > 0) & (per["n_neg"] > 0)]
    # Mann-Whitney: AUC_u = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)
    per["auc"] = (per["pos_rank"] - per["n_pos"] * (per["n_pos"] + 1) / 2) / (
        per["n_pos"] * per["n_neg"]
    )
    return per.reset_index()[["user", "auc", "n_pos", "n_neg"]].astype(
        {"n_pos": np.int64, "n_neg": np.int64}
    )


def gauc(
    user: object,
    label: object,
    score: object,
    *,
    weighted: bool = True,
    alpha: float = 0.05,
) -> Estimate:
    """Group AUC: per-user AUCs averaged over users with both classes.

    Args:
        user, label, score: (n,) long-format rows, see :func:`per_user_auc`.
        weighted: weight each user's AUC by their number of rows (the usual GAUC, as in DIN);
            False gives the plain mean over users, i.e. USM's UAUC (:func:`uauc`).
        alpha: 1 - confidence level.

    Returns:
        The (weighted) mean AUC, with ``n`` = number of users counted (at least 2); the
        standard error treats users as i.i.d. (ratio-of-means delta method when weighted).
    """
    per = per_user_auc(user, label, score)
    if len(per) < 2:
        raise ValueError(
            f"gauc needs at least 2 users with both a positive and a negative row, got {len(per)}"
        )
    a = per["auc"].to_numpy()
    if not weighted:
        return Estimate.from_terms(a, alpha=alpha)
    w = (per["n_pos"] + per["n_neg"]).to_numpy(dtype=np.float64)
    return Estimate.from_ratio(w * a, w, alpha=alpha)


def uauc(user: object, label: object, score: object, *, alpha: float = 0.05) -> Estimate:
    """USM's Neg/Pos-feedback UAUC (Eq. 11-12): the unweighted mean of per-user AUCs.

    ``label`` marks the feedback of interest: for Nfb UAUC, 1 = disliked or reported and
    0 = exposed without either; for Pfb UAUC, 1 = liked / shared / favourited. Eq. 11 as printed
    scores a tie 0; here it scores one half, so a constant predictor gets 0.5, not 0.
    """
    return gauc(user, label, score, weighted=False, alpha=alpha)


def weighted_auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """ROC AUC with sample weights: weighted share of (positive, negative) pairs ordered right,
    ties counting one half. NaN if a class is missing.

    A plain float (one sort, O(n log n)); :func:`auc` is the unweighted value with its interval.
    Without weights the two agree (tested).
    """
    y, s = as_binary("label", label, min_len=0), as_float_array("score", score, min_len=0)   # empty: NaN
    w = np.ones(len(y)) if weight is None else \
        check_nonnegative("weight", as_float_array("weight", weight, min_len=0))
    check_same_length({"label": y, "score": s, "weight": w})
    wp, wn = w[y].sum(), w[~y].sum()
    if wp <= 0 or wn <= 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    new = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(new) - 1                                                 # tie groups
    neg_in_group = np.bincount(group, weights=w * ~y)
    neg_below = np.cumsum(neg_in_group) - neg_in_group                         # negatives with a lower score
    pos = y
    correct = (w[pos] * (neg_below[group[pos]] + 0.5 * neg_in_group[group[pos]])).sum()
    return float(correct / (wp * wn))


def sampled_rank_metrics(scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k from scores of one positive (column 0) and sampled negatives.

    Ties between the positive and negatives count as a uniformly random order of the tied items
    (the expected metric), so a constant scorer gets the chance level, as in
    :func:`hit_rate` (``ties="expected"``). Written for training loops: one pass over an
    (n, 1 + K) array, no per-row Estimate.

    Args:
        scores: (n, 1 + K), column 0 the positive.
        k: cut-off.

    Returns:
        (HR@k, NDCG@k), each a mean over the n rows.
    """
    k = check_positive_int("k", k)
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] < 2 or s.shape[0] < 1:
        raise ValueError(f"scores must have shape (n >= 1, 1 + K >= 2), got {s.shape}")
    pos, neg = s[:, :1], s[:, 1:]
    above = (neg > pos).sum(axis=1)
    tied = (neg == pos).sum(axis=1)
    ranks = np.arange(1, s.shape[1] + 1)
    out = []
    for gain in (ranks <= k).astype(float), np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0):
        cum = np.r_[0.0, np.cumsum(gain)]                          # cum[r] = sum of gain over ranks <= r
        out.append(float(np.mean((cum[1 + above + tied] - cum[above]) / (tied + 1))))
    return out[0], out[1]
