"""USM's examples from the logs: point-in-time features, survey labels, IPW weights, Eq. 8's filter.

Every model reads the same serving-time :class:`Inputs` (ids, categories, dense feature-store
features), computed from the logs as the feature store held them at each request
(:func:`logged_inputs`) and from the store at serving (:func:`serving_inputs`). Design:
docs/notes/usm.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from policies.data import ORDER_COLUMNS, chronological_order
from simulator.schema import ISSUE_ANSWERS, ISSUE_TYPES, SURVEY_TYPES, LogData

SURVEY_HEADS = ("dislike", "inappropriate", *ISSUE_TYPES)
"""Heads of the in-feed survey model (one per survey option, §3.1)."""
HEAD_SURVEY = {"dislike": "satisfaction", **{h: "inappropriate" for h in ("inappropriate", *ISSUE_TYPES)}}
"""The survey type whose answers label each head."""
ENGAGEMENT_HEADS = ("effective_view", "like", "share")
"""Heads of the engagement model (Eq. 3's ``other_s``)."""
SUBMIT_HEADS = SURVEY_TYPES
"""Heads of the survey-submit model: one per survey type (§3.2)."""
POSTERIOR = ("watch_fraction", "effective_view", "skip", "like", "share", "comment", "follow", "dislike",
             "report")
"""Posterior behaviour features (teacher, and the submit model with ``submit.posterior``)."""
DENSE = ("user_log_impressions", "user_click_rate", "user_skip_rate", "user_like_rate",
         "user_log_answered", "user_log_tenure", "item_log_impressions", "item_click_rate",
         "item_skip_rate", "item_like_rate", "item_log_duration", "click_history_fill",
         "click_share_leaf", "click_share_l2", "click_share_l1", "skip_history_fill",
         "skip_share_leaf", "skip_share_l2")
"""Dense serving-time features, all read from the feature store (the ``tenure`` from the users table)."""
SUBMIT_HISTORY = ("log_shown_before", "log_submitted_before", "submit_rate_logit")
"""The user's questionnaire history before the impression (submit model only)."""
REQUIRED = (*ORDER_COLUMNS, "item_id", "watch_time", "duration", "effective_view", "skip", "like", "share",
            "comment", "follow", "dislike", "report", "survey_shown", "survey_type", "survey_submitted",
            "survey_answer", "survey_reasons")
"""Impression columns USM reads."""
# smoothing of the counter rates: (count + strength * prior) / (n + strength)
_PRIORS = {"click": 0.6, "skip": 0.3, "like": 0.03}
_USER_STRENGTH, _ITEM_STRENGTH = 10.0, 20.0


# ============================================================================ features
@dataclass(frozen=True)
class Inputs:
    """Model inputs of n (user, item) pairs.

    Attributes:
        ids: (n, 3) int64 ``[user + 1, item + 1, author + 1]`` (0 = unknown).
        cats: (n, 3) int64 ``[l1 + 1, l2 + 1, leaf + 1]``.
        dense: (n, D) float32 raw dense features (:data:`DENSE`, maybe more columns appended);
            the network standardises them.
    """
    ids: np.ndarray
    cats: np.ndarray
    dense: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> Inputs:
        return Inputs(self.ids[idx], self.cats[idx], self.dense[idx])

    def with_dense(self, extra: np.ndarray) -> Inputs:
        return Inputs(self.ids, self.cats, np.concatenate([self.dense, extra.astype(np.float32)], axis=1))


@dataclass(frozen=True)
class Catalogue:
    """Observable item attributes indexed by item id, and the users' tenure."""
    l1: np.ndarray
    l2: np.ndarray
    leaf: np.ndarray
    author: np.ndarray
    duration: np.ndarray
    tenure: np.ndarray          # (n_users,) days since sign-up

    @property
    def n_items(self) -> int:
        return len(self.l1)

    @property
    def n_users(self) -> int:
        return len(self.tenure)

    @property
    def vocab(self) -> dict[str, Any]:
        """The id and category vocabularies of a :class:`NetConfig`."""
        return dict(n_users=self.n_users, n_items=self.n_items, n_authors=int(self.author.max()) + 1,
                    n_cats=(int(self.l1.max()) + 1, int(self.l2.max()) + 1, int(self.leaf.max()) + 1))

    @classmethod
    def from_logs(cls, data: LogData) -> Catalogue:
        it, us, imp = data.items, data.users, data.impressions
        n_items = int(max(it["item_id"].max() if len(it) else -1,
                          imp["item_id"].max() if len(imp) else -1)) + 1
        n_users = int(max(us["user_id"].max() if len(us) else -1,
                          imp["user_id"].max() if len(imp) else -1)) + 1
        ids = it["item_id"].to_numpy()

        def column(name: str, dtype: Any) -> np.ndarray:
            out = np.zeros(n_items, dtype)
            out[ids] = it[name].to_numpy()
            return out

        tenure = np.zeros(n_users, np.float64)
        if "tenure_days" in us.columns:
            tenure[us["user_id"].to_numpy()] = us["tenure_days"].to_numpy()
        duration = column("duration", np.float64)
        duration[duration <= 0] = 1.0
        return cls(column("l1", np.int64), column("l2", np.int64), column("leaf", np.int64),
                   column("author_id", np.int64), duration, tenure)


def _rate(count: np.ndarray, n: np.ndarray, kind: str, strength: float) -> np.ndarray:
    return (count + strength * _PRIORS[kind]) / (n + strength)


def _dense(user: np.ndarray, item: np.ndarray, *, tenure: np.ndarray, duration: np.ndarray,
           click_match: np.ndarray, click_valid: np.ndarray, skip_match: np.ndarray,
           skip_valid: np.ndarray, length: int) -> np.ndarray:
    """The :data:`DENSE` features from raw counters, shared by training and serving.

    Args:
        user: (n, 5) counts before the request: impressions, clicks, skips, likes, answered.
        item: (n, 4) counts: impressions, clicks, skips, likes.
        tenure, duration: (n,).
        click_match: (n, 3) items of the click history window in the same leaf / l2 / l1.
        click_valid: (n,) filled slots of the click history window (at most ``length``).
        skip_match: (n, 2) skip-history items in the same leaf / l2; skip_valid likewise.
    """
    cv, sv = np.maximum(click_valid, 1)[:, None], np.maximum(skip_valid, 1)[:, None]
    cols = [np.log1p(user[:, 0]), _rate(user[:, 1], user[:, 0], "click", _USER_STRENGTH),
            _rate(user[:, 2], user[:, 0], "skip", _USER_STRENGTH),
            _rate(user[:, 3], user[:, 0], "like", _USER_STRENGTH), np.log1p(user[:, 4]), np.log1p(tenure),
            np.log1p(item[:, 0]), _rate(item[:, 1], item[:, 0], "click", _ITEM_STRENGTH),
            _rate(item[:, 2], item[:, 0], "skip", _ITEM_STRENGTH),
            _rate(item[:, 3], item[:, 0], "like", _ITEM_STRENGTH), np.log(duration),
            click_valid / length, *(click_match / cv).T, skip_valid / length, *(skip_match / sv).T]
    return np.stack(cols, axis=1).astype(np.float32)                                  # (n, D)


def serving_inputs(users: np.ndarray, candidates: np.ndarray, store: Any, catalogue: Catalogue,
                   length: int) -> Inputs:
    """Inputs of every (request, candidate) pair from the feature store, flattened to B * C rows.

    Args:
        users: (B,) requesting users.
        candidates: (B, C) item ids.
        store: the feature store (``batch.features``): counters and histories.
        catalogue: item attributes and tenure from fit.
        length: history window read from the store.
    """
    b, c = candidates.shape
    u = np.repeat(np.asarray(users, np.int64), c)                                    # (B*C,)
    i = candidates.reshape(-1).astype(np.int64)                                      # (B*C,)
    user = np.stack([store.user_impressions, store.user_clicks, store.user_skips, store.user_likes,
                     store.user_surveys_answered], axis=1)[u].astype(np.float64)     # (B*C, 5)
    item = np.stack([store.item_impressions, store.item_clicks, store.item_skips,
                     store.item_likes], axis=1)[i].astype(np.float64)                # (B*C, 4)
    cat = catalogue
    out = []
    for name, attrs in (("clicks", (cat.leaf, cat.l2, cat.l1)), ("skips", (cat.leaf, cat.l2))):
        hist, _ = store.history(name, np.asarray(users), length)                      # (B, L), PAD = -1
        real = hist >= 0
        safe = np.where(real, hist, 0)
        match = [((a[candidates][:, :, None] == a[safe][:, None, :]) & real[:, None, :]).sum(-1)
                 for a in attrs]                                                      # each (B, C)
        out.append((np.stack([m.reshape(-1) for m in match], axis=1).astype(np.float64),
                    np.repeat(real.sum(1), c).astype(np.float64)))
    (cm, cv), (sm, sv) = out
    dense = _dense(user, item, tenure=cat.tenure[u], duration=cat.duration[i], click_match=cm, click_valid=cv,
                   skip_match=sm, skip_valid=sv, length=length)
    return Inputs(np.stack([u + 1, i + 1, cat.author[i] + 1], axis=1),
                  np.stack([cat.l1[i] + 1, cat.l2[i] + 1, cat.leaf[i] + 1], axis=1), dense)


def _run_start(new: np.ndarray) -> np.ndarray:
    """(n,) index of the first row of each row's run, from (n,) bool "a new run starts here"."""
    return np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))


def _counts_before(values: np.ndarray, group_start: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per row, the sum of ``values`` (n, k) over the rows of its group before row ``at``."""
    before = np.cumsum(values, axis=0) - values                                       # (n, k) exclusive
    return before[at] - before[group_start]


def _window_matches(users: np.ndarray, attr: np.ndarray, *, event: np.ndarray, rank: np.ndarray,
                    n_before: np.ndarray, length: int) -> np.ndarray:
    """Events of the user's last ``length`` events before the request that share the row's attribute.

    Args:
        users: (n,) user of each row (sorted by user, chronologically within a user).
        attr: (n,) attribute value (e.g. leaf) of each row's item: the row's own, and the
            event's where ``event``.
        event: (n,) bool, the row is an event of the history (a click or a skip).
        rank: (n,) 0-based index of each event among the user's events (read where ``event``).
        n_before: (n,) the user's events before the row's request.
    """
    n_attr = int(attr.max()) + 1
    span = int(n_before.max() + event.sum() + 1)
    keys = np.sort((users[event] * n_attr + attr[event]) * span + rank[event])             # (E,)
    base = (users * n_attr + attr) * span                                                   # (n,)
    hi = np.searchsorted(keys, base + n_before)
    lo = np.searchsorted(keys, base + np.maximum(n_before - length, 0))
    return (hi - lo).astype(np.float64)


def logged_inputs(frame: pd.DataFrame, catalogue: Catalogue, length: int) -> Inputs:
    """Inputs of every logged impression as the feature store held them at its request.

    User counters and histories count the user's events of earlier requests (the store records a
    page after it is watched); item counters count earlier impressions of the item. Rows are
    aligned with ``frame``'s rows.
    """
    n = len(frame)
    order = chronological_order(frame)
    u = frame["user_id"].to_numpy(np.int64)[order]
    i = frame["item_id"].to_numpy(np.int64)[order]
    req = frame["request_id"].to_numpy(np.int64)[order]
    ev = frame["effective_view"].to_numpy(bool)[order]
    skip = frame["skip"].to_numpy(bool)[order]
    like = frame["like"].to_numpy(bool)[order]
    sub = frame["survey_submitted"].to_numpy(bool)[order]
    new_user = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
    user_start = _run_start(new_user)
    req_start = _run_start(new_user | np.r_[True, req[1:] != req[:-1]]) if n else user_start
    events = np.stack([np.ones(n), ev, skip, like, sub], axis=1).astype(np.int64)      # (n, 5)
    user = _counts_before(events, user_start, req_start).astype(np.float64)           # (n, 5)
    rank = _counts_before(events[:, 1:3], user_start, np.arange(n))                   # (n, 2) ranks
    cat = catalogue
    cm = np.stack([_window_matches(u, a[i], event=ev, rank=rank[:, 0], n_before=user[:, 1], length=length)
                   for a in (cat.leaf, cat.l2, cat.l1)], axis=1)                      # (n, 3)
    sm = np.stack([_window_matches(u, a[i], event=skip, rank=rank[:, 1], n_before=user[:, 2], length=length)
                   for a in (cat.leaf, cat.l2)], axis=1)                              # (n, 2)
    cv, sv = np.minimum(user[:, 1], length), np.minimum(user[:, 2], length)
    # item counters: earlier impressions of the same item, by time
    by_item = np.lexsort((frame["position"].to_numpy()[order], req, frame["ts"].to_numpy()[order], i))
    ii = i[by_item]
    new_item = np.r_[True, ii[1:] != ii[:-1]] if n else np.zeros(0, bool)
    item_sorted = _counts_before(events[by_item][:, :4], _run_start(new_item), np.arange(n))
    item = np.empty((n, 4))
    item[by_item] = item_sorted
    dense = _dense(user, item, tenure=cat.tenure[u], duration=cat.duration[i], click_match=cm, click_valid=cv,
                   skip_match=sm, skip_valid=sv, length=length)
    out = np.empty_like(dense)
    out[order] = dense
    ids = np.empty((n, 3), np.int64)
    ids[order] = np.stack([u + 1, i + 1, cat.author[i] + 1], axis=1)
    cats = np.empty((n, 3), np.int64)
    cats[order] = np.stack([cat.l1[i] + 1, cat.l2[i] + 1, cat.leaf[i] + 1], axis=1)
    return Inputs(ids, cats, out)


def posterior_features(frame: pd.DataFrame) -> np.ndarray:
    """(n, len(POSTERIOR)) behaviour after the impression: unavailable at serving time."""
    fraction = np.clip(frame["watch_time"].to_numpy(np.float64) / np.maximum(frame["duration"].to_numpy(np.float64),
                                                                              1e-6), 0.0, 1.0)
    cols = [fraction] + [frame[c].to_numpy(np.float64) for c in POSTERIOR[1:]]
    return np.stack(cols, axis=1).astype(np.float32)


def submit_history(frame: pd.DataFrame) -> np.ndarray:
    """(n, len(SUBMIT_HISTORY)) the user's questionnaires shown / submitted before the request."""
    n = len(frame)
    order = chronological_order(frame)
    u = frame["user_id"].to_numpy(np.int64)[order]
    req = frame["request_id"].to_numpy(np.int64)[order]
    new_user = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
    req_start = _run_start(new_user | np.r_[True, req[1:] != req[:-1]]) if n else np.zeros(0, np.int64)
    events = np.stack([frame["survey_shown"].to_numpy(bool), frame["survey_submitted"].to_numpy(bool)],
                      axis=1)[order].astype(np.int64)
    c = _counts_before(events, _run_start(new_user), req_start).astype(np.float64)     # (n, 2)
    rate = (c[:, 1] + 1.0) / (c[:, 0] + 4.0)           # smoothed towards 1/4
    out = np.empty((n, 3), np.float32)
    out[order] = np.stack([np.log1p(c[:, 0]), np.log1p(c[:, 1]), np.log(rate / (1 - rate))], axis=1)
    return out


def survey_labels(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the survey heads (§3.1) for every row.

    Returns:
        (labels, mask): (n, len(SURVEY_HEADS)) float32; ``mask`` is 1 where the row is a submitted
        questionnaire of the head's survey type (the head is trained on it), 0 elsewhere.
    """
    sub = frame["survey_submitted"].to_numpy(bool)
    stype = frame["survey_type"].astype(object).to_numpy()
    answer = frame["survey_answer"].astype(object).to_numpy()
    reasons = frame["survey_reasons"].astype(object).to_numpy()
    labels = np.zeros((len(frame), len(SURVEY_HEADS)), np.float32)
    mask = np.zeros_like(labels)
    rows = np.flatnonzero(sub)
    picked = {t: np.array([isinstance(r, str) and t in r.split(",") for r in reasons[rows]], bool)
              for t in ISSUE_TYPES}
    for h, head in enumerate(SURVEY_HEADS):
        mask[rows, h] = stype[rows] == HEAD_SURVEY[head]
        if head == "dislike":
            labels[rows, h] = answer[rows] == "dislike"
        elif head == "inappropriate":
            labels[rows, h] = np.isin(answer[rows], ISSUE_ANSWERS)
        else:
            labels[rows, h] = picked[head]
    return labels * mask, mask


# ============================================================================ debiasing
def ipw_weights(pscore: np.ndarray, min_propensity: float) -> np.ndarray:
    """IPW weights of labelled samples: ``1 / max(pscore, min_propensity)`` (USM §3.2, Eq. 4-6).

    Args:
        pscore: (n,) P̂(submit | shown) of each labelled sample.
        min_propensity: clip in (0, 1]; the weight is at most ``1 / min_propensity``.
    """
    if not 0.0 < min_propensity <= 1.0:
        raise ValueError(f"min_propensity={min_propensity} must be in (0, 1]")
    p = np.asarray(pscore, np.float64)
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1):
        raise ValueError("pscore must be probabilities in [0, 1]")
    return 1.0 / np.maximum(p, min_propensity)


def pseudo_label_mask(pseudo: np.ndarray, tau_n: float | np.ndarray, tau_p: float | np.ndarray) -> np.ndarray:
    """Eq. 8: ``g = 1`` where the teacher's soft label is below ``tau_n`` or above ``tau_p``.

    Args:
        pseudo: (n, H) teacher probabilities.
        tau_n, tau_p: thresholds, scalars or (H,) per head, with ``0 <= tau_n <= tau_p <= 1``.

    Returns:
        (n, H) bool: the pseudo labels kept for training (the band's ends are excluded).
    """
    lo, hi = np.asarray(tau_n, np.float64), np.asarray(tau_p, np.float64)
    if not (np.all(0.0 <= lo) and np.all(lo <= hi) and np.all(hi <= 1.0)):
        raise ValueError(f"thresholds must satisfy 0 <= tau_n <= tau_p <= 1, got tau_n={tau_n}, tau_p={tau_p}")
    y = np.asarray(pseudo)
    return (y < lo) | (y > hi)


# ============================================================================ training rows
@dataclass(frozen=True)
class Rows:
    """Training rows of one model; ``train_model`` slices every array field."""
    ids: np.ndarray       # (n, 3)
    cats: np.ndarray      # (n, 3)
    dense: np.ndarray     # (n, D)
    target: np.ndarray    # (n, H) labels or soft labels in [0, 1]
    mask: np.ndarray      # (n, H) 1 where the head is trained on the row
    weight: np.ndarray    # (n,) sample weight

    FIELDS = ("ids", "cats", "dense", "target", "mask", "weight")

    @classmethod
    def of(cls, x: Inputs, target: np.ndarray, mask: np.ndarray, weight: np.ndarray | None = None) -> Rows:
        """The rows of inputs ``x`` with (n, H) ``target`` and ``mask``, and (n,) ``weight`` (default 1)."""
        w = np.ones(len(x)) if weight is None else weight
        return cls(x.ids, x.cats, x.dense, target.astype(np.float32), mask.astype(np.float32),
                   np.asarray(w, np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(*(getattr(self, f)[idx] for f in self.FIELDS))

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in Rows.FIELDS))


def base_rate(rows: Rows) -> np.ndarray:
    """(H,) weighted mean target of every head over the rows that train it (0.5 if none)."""
    w = rows.mask * rows.weight[:, None]
    den = w.sum(0)
    return np.where(den > 0, (w * rows.target).sum(0) / np.maximum(den, 1e-12), 0.5)


def time_split(ts: np.ndarray, share: float) -> np.ndarray:
    """(n,) bool: the latest ``share`` of the rows (by time) are validation rows."""
    if len(ts) < 10 or share <= 0:
        return np.zeros(len(ts), bool)
    cut = np.quantile(ts, 1.0 - share)
    return ts > cut
