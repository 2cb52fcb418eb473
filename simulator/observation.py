"""The Gymnasium observation of a page request, and a page of candidate indices as scores.

Both read only what a :class:`simulator.schema.RankBatch` gives a policy (the request's users
and candidates, and the feature store's observable counters, histories and item attributes),
so :mod:`simulator.gym_env` (an agent's view) and :mod:`policies.gym_adapter` (a trained agent
serving as a policy) compute the same thing. This module imports nothing from the simulator:
:mod:`simulator.schema` re-exports it, and policies import nothing from the simulator but the
schema.
"""
from __future__ import annotations

import numpy as np

USER_FEATURES = ("log_impressions", "log_effective_views", "effective_view_rate", "skip_rate", "like_rate",
                 "log_surveys_answered", "log_active_days", "log_recent_category_clicks")
"""Columns of ``observation["user"]``: the user's counters in the feature store (rates smoothed
towards the platform's mean over ``SMOOTHING`` pseudo-impressions)."""
CANDIDATE_FEATURES = ("log_impressions", "effective_view_rate", "skip_rate", "like_lift", "popularity",
                      "log_duration", "leaf_share", "l2_share", "l1_share", "clicked_before", "skipped_before",
                      "leaf_satisfied", "leaf_dissatisfied", "author_share")
"""Columns of ``observation["candidates"]``: the item's counters (``like_lift`` = log of its
smoothed like rate over the mean; ``popularity`` = log1p(recent effective views) over the
largest), its duration, the user's share of recent (decayed) clicks in its leaf, level-2 and
level-1 category, whether the item is in the user's recent effective views or skips, whether
its leaf is in the user's recent questionnaire-satisfied or -dissatisfied items, and the share
of the user's recent effective views by its author."""
CATEGORY_COLUMNS = ("l1", "l2", "leaf", "author")
"""Columns of ``observation["candidate_categories"]``."""
SMOOTHING = 20.0
LOG_MAX = 25.0            # log1p features are clipped here (an int64 counter stays below e^44)
LIFT_MAX = 10.0


def feature_bounds(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of each feature, for the observation space."""
    low = np.array([-LIFT_MAX if n == "like_lift" else 0.0 for n in names], dtype=np.float32)
    high = np.array([LOG_MAX if n.startswith("log_") else LIFT_MAX if n == "like_lift" else 1.0
                     for n in names], dtype=np.float32)
    return low, high


def _rate(count: np.ndarray, n: np.ndarray, prior: float) -> np.ndarray:
    return (count + SMOOTHING * prior) / (n + SMOOTHING)


def _log(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.log1p(np.asarray(x, dtype=np.float64)), LOG_MAX)


def _share(hist: np.ndarray, attr: np.ndarray, cand_attr: np.ndarray) -> np.ndarray:
    """(B, C): share of each row's valid history items whose attribute equals the candidate's."""
    valid = hist >= 0                                                    # empty slots are negative
    same = (attr[np.maximum(hist, 0)][:, None, :] == cand_attr[:, :, None]) & valid[:, None, :]
    return same.sum(axis=2) / np.maximum(valid.sum(axis=1), 1)[:, None]


def _seen(hist: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(B, C) 0/1: the candidate's value occurs among the row's valid history entries."""
    return ((hist[:, None, :] == values[:, :, None]) & (hist >= 0)[:, None, :]).any(axis=2)


def observe(batch, history_length: int = 20) -> dict[str, np.ndarray]:
    """The observation of each request of ``batch`` (a :class:`~simulator.schema.RankBatch`).

    Returns new arrays (B leading): ``user`` (B, 8) float32 (:data:`USER_FEATURES`),
    ``candidates`` (B, C, 14) float32 (:data:`CANDIDATE_FEATURES`), ``candidate_ids`` (B, C)
    int64, ``candidate_categories`` (B, C, 4) int64 (:data:`CATEGORY_COLUMNS`) and ``history``
    (B, history_length) int64, the user's latest effective views, oldest first, -1 where empty.
    """
    fs, users, cands = batch.features, np.asarray(batch.user_ids), np.asarray(batch.candidates)
    items = fs.items
    rows = np.arange(len(users))[:, None]
    g_view = (fs.item_clicks.sum() + 1.0) / (fs.item_impressions.sum() + 2.0)
    g_skip = (fs.item_skips.sum() + 1.0) / (fs.item_impressions.sum() + 2.0)
    g_like = (fs.item_likes.sum() + 1.0) / (fs.item_impressions.sum() + 2.0)
    leaf_clicks = fs.leaf_clicks[users].astype(np.float64)                  # (B, n_leaves)
    total = leaf_clicks.sum(axis=1)
    n_imp = fs.user_impressions[users]
    user = np.stack([_log(n_imp), _log(fs.user_clicks[users]), _rate(fs.user_clicks[users], n_imp, g_view),
                     _rate(fs.user_skips[users], n_imp, g_skip), _rate(fs.user_likes[users], n_imp, g_like),
                     _log(fs.user_surveys_answered[users]), _log(fs.user_active_days[users]), _log(total)], axis=1)

    def group_share(of_leaf: np.ndarray, cand_group: np.ndarray) -> np.ndarray:
        grouped = np.zeros((len(users), int(of_leaf.max()) + 1))
        np.add.at(grouped.T, of_leaf, leaf_clicks.T)
        return grouped[rows, cand_group] / np.maximum(total, 1e-12)[:, None]

    n_leaves = leaf_clicks.shape[1]
    leaf_l2, leaf_l1 = np.zeros(n_leaves, np.int64), np.zeros(n_leaves, np.int64)
    leaf_l2[items.leaf], leaf_l1[items.leaf] = items.l2, items.l1
    c_imp = fs.item_impressions[cands]
    like_rate = _rate(fs.item_likes[cands], c_imp, g_like)
    recent = fs.item_recent_clicks
    clicks, _ = fs.history("clicks", users, history_length)
    skips, _ = fs.history("skips", users, history_length)
    satisfied, _ = fs.history("satisfied", users, history_length)
    dissatisfied, _ = fs.history("dissatisfied", users, history_length)
    leaf = items.leaf[cands]

    def leaves(hist: np.ndarray) -> np.ndarray:
        return np.where(hist >= 0, items.leaf[np.maximum(hist, 0)], -1)

    candidates = np.stack([
        _log(c_imp), _rate(fs.item_clicks[cands], c_imp, g_view), _rate(fs.item_skips[cands], c_imp, g_skip),
        np.clip(np.log(like_rate / g_like), -LIFT_MAX, LIFT_MAX),
        np.log1p(recent[cands]) / max(np.log1p(recent.max()), 1e-12),
        _log(items.duration[cands]),
        leaf_clicks[rows, leaf] / np.maximum(total, 1e-12)[:, None],
        group_share(leaf_l2, items.l2[cands]), group_share(leaf_l1, items.l1[cands]),
        _seen(clicks, cands), _seen(skips, cands), _seen(leaves(satisfied), leaf), _seen(leaves(dissatisfied), leaf),
        _share(clicks, items.author, items.author[cands]),
    ], axis=2)
    categories = np.stack([items.l1[cands], items.l2[cands], leaf, items.author[cands]], axis=2)
    return {"user": user.astype(np.float32), "candidates": candidates.astype(np.float32),
            "candidate_ids": cands.astype(np.int64), "candidate_categories": categories.astype(np.int64),
            "history": np.where(clicks >= 0, clicks, -1).astype(np.int64)}


def page_scores(actions: np.ndarray, n_candidates: int) -> np.ndarray:
    """(B, C) scores whose top-k ranking is the page that each row of ``actions`` asks for.

    ``actions`` (B, k) holds candidate indices in page order. A repeated index counts at its
    first position only; the page is then filled, after the distinct chosen candidates and in
    index order, with the lowest-numbered candidates not already on it. The chosen candidate at
    position j scores k - j (>= 1); every other candidate scores in (-1, 0), lower indices higher.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[1] > n_candidates or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be a (B, k) integer array of candidate indices with k <= "
                         f"{n_candidates}, got {actions.dtype} of shape {actions.shape}")
    if actions.size and (actions.min() < 0 or actions.max() >= n_candidates):
        raise ValueError(f"candidate indices must be in [0, {n_candidates}), got {actions.min()}..{actions.max()}")
    b, k = actions.shape
    scores = np.tile(-(np.arange(n_candidates) + 1.0) / (n_candidates + 1.0), (b, 1))
    rows = np.arange(b)
    for j in reversed(range(k)):          # the first occurrence of an index is written last, so it wins
        scores[rows, actions[:, j]] = k - j
    return scores
