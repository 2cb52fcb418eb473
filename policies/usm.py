"""USM (Yu et al., 2024): an unbiased in-feed survey model fused into the ranking score.

Four models, each a small feed-forward network over the same serving-time inputs, all trained by
:func:`policies.train.train_model`:

1. **Engagement model** (the ``other_s`` of Eq. 3): heads ``effective_view``, ``like``, ``share``,
   trained on a sample of all impressions. It is identical in every variant.
2. **Survey-submit model** (§3.2): the backbone without LHUC, one head per survey type
   (``satisfaction``, ``inappropriate``), trained on every shown questionnaire with "submitted"
   as the label. ``1 / max(P̂(submit | shown), min_propensity)`` is the IPW weight of a labelled
   sample (Eq. 4-6; clipped as in SAQRec Eq. 6); the same P̂ serves Eq. 13.
3. **In-feed survey model** (§3.1, Fig. 3): one head per survey option (Eq. 3's ``p(survey_i)``):
   ``dislike`` (satisfaction survey answered "dislike"; every other answer is a negative),
   ``inappropriate`` (inappropriate survey answered unsuitable or adults-only) and one head per
   reason of the survey's second page (``sexual``, ``violent``, ``spam``: 1 if selected). A row
   only trains the heads of its own survey type (the survey id of §3.1).
4. With ``distillation`` (§3.3, Fig. 4): a **teacher** (the survey model plus the posterior
   behaviour features like / share / comment / follow / dislike / report / watch fraction /
   effective view / skip, Eq. 7) trained on the labelled samples, whose soft predictions on
   impressions without a questionnaire are the pseudo labels, kept per head only outside the
   uncertain band ``(tau_n, tau_p)`` (Eq. 8); the **student** (the survey model's inputs, no
   posterior feature, the same architecture) is trained on ``CE(pseudo) + alpha * CE(real)``
   (Eq. 9) and serves.

Ranking (Eq. 3): ``score = sum_i w_i p(survey_i) + sum_j v_j p(engagement_j)`` with the weights
of :data:`DEFAULT_WEIGHTS` (negative for the dissatisfaction and issue heads), overridable by
``weights``. The weights combine probabilities, as in the paper (``combine="logit"`` combines
logits instead). A survey head with fewer than ``min_head_labels`` positive or negative training
labels gets weight 0, with a warning that names it: its tower never saw a label, and with its
paper weight its random output would reorder pages (a pre-period with no inappropriate answer
made four of the five survey heads such noise). :meth:`USM.term_spread` reports how much each
term varies within a request. The four rows of USM Tables 1-3 are :data:`VARIANTS`.

Architecture (Fig. 3): the backbone input is the concatenation of user, item and author
embeddings, embeddings of the item's l1 / l2 / leaf category and standardised dense observable
features (:data:`DENSE`); three fully connected layers (``hidden``; the paper's {512, 256, 128},
here {128, 64, 32} by default for the CPU budget) whose *inputs* are each multiplied by an LHUC
gate ``2 * sigmoid(W2 relu(W1 [e_user, e_item, e_author]) + b2)`` computed from separate id
embeddings (the id features "not integrated into the backbone"); a squeeze-and-excitation block
on the last layer's output; one tower per head (``head_hidden`` then 1; the paper's {64, 16, 1},
here {16, 8, 1}).

Choices where the paper is silent or ambiguous (each can be changed by a parameter):

- *LHUC identity.* The final linear layer of every gate starts at zero, so every gate is
  ``2 * sigmoid(0) = 1`` and the network starts as the plain backbone (an exact identity).
- *SE on a vector.* The last hidden vector (B, d) is cut into ``se_groups`` channels of
  ``d / se_groups`` units; squeeze = the channel mean, excitation = ``sigmoid(W2 relu(W1 z))``,
  one gate per channel (Hu et al.'s SE with the spatial mean replaced by the channel mean). With
  zero weights every gate is ``sigmoid(0) = 0.5``.
- *Submit-model features.* The submit model is never used at serving time (it only weights
  training and evaluation), so besides the serving features it reads the user's questionnaire
  history before the impression (shown / submitted counts: "the number of user history
  submissions", §3.2) and, with ``submit_posterior`` (default), the posterior behaviour. This
  matters: a submit model conditioned only on the survey model's own inputs gives weights that
  are constant within every input cell, which cannot change the survey model's target
  (P(answer | inputs)) in the limit. The simulator's response is missing not at random (satisfied
  users answer more, ``simulator/questionnaire.py``), and only features correlated with the
  answer, such as likes and watch fraction, let the weights undo part of it.
- *IPW weights* are normalised to mean 1 over the training rows (the optimum is unchanged, the
  learning rate keeps its meaning); validation (early stopping) uses the same weights
  ("training and evaluation weighted", §3.2).
- *Eq. 9 scale.* Each CE is a mean over its own sample stream, so ``alpha = 1`` gives labelled
  and pseudo-labelled samples equal total weight whatever their counts. Pseudo labels are soft
  (the teacher's probabilities).
- *Eq. 8 thresholds.* The paper gives no values. One absolute band cannot suit heads whose base
  rates differ tenfold (dislike ~30% of satisfaction answers, each reason ~3% of inappropriate
  answers): a band such as (0.1, 0.6) drops nearly every informative pseudo label of a rare
  head (a teacher seldom predicts a rare issue above 0.6, even after a posterior dislike). By
  default the band is ``(b / 2, 2 b)`` around each head's labelled base rate ``b``
  (``tau_band = 2``); ``tau_n`` / ``tau_p`` set absolute values, for all heads or per head.
- *Pseudo-labelled impressions* are those without a questionnaire shown ("videos for which
  surveys have not been distributed"), by default only within the exposure support (where the
  teacher saw labelled samples: ``pseudo_support``), at most ``max_pseudo`` of them (a seeded
  sample), ``pseudo_per_epoch`` drawn per epoch.
- *Debiased pseudo labels* (Table 3's last row, "distillation + response debias"): the teacher
  is trained with the IPW weights (``debias_pseudo``, default = ``response_debias``), and the
  student's labelled term is weighted too.
- *Point-in-time features.* Training features are recomputed from the logs as the platform's
  feature store held them when each page was requested (counters before the request; the
  click / skip history windows of length ``history_length``); ``tests/policies/test_usm.py``
  checks that they equal what :meth:`USM.score` reads from a feature store.

The submit model is fitted in every variant (it is cheap), so that every variant can report
IPW-weighted evaluation (:func:`labelled_metrics`) and Eq. 13 (:meth:`USM.submit_propensity`);
only ``response_debias`` uses its weights in training. Each component draws from its own
random stream, so that the submit and engagement models are identical across the variants fitted
with the same seed. The engagement model is skipped when Eq. 3 gives its heads weight 0.

Regularisation for few labels (measured, see docs/notes/usm.md): with a few thousand answered
questionnaires the id embeddings memorise the training rows within a few epochs, so the models
trained on questionnaires use a strong L2 penalty (``weight_decay``); every head's output bias
starts at the logit of its base rate; He initialisation avoids a long initial plateau; early
stopping on the held-out (latest) questionnaires never keeps the untrained network.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.special import logit
from torch import nn

from policies.base import append_logs, check_fitted, check_ids, register_policy, resolve_update_epochs
from policies.data import ORDER_COLUMNS, check_observable, chronological_order
from policies.train import EpochRecord, TrainConfig, build_module, train_model
from simulator.schema import ISSUE_ANSWERS, ISSUE_TYPES, SURVEY_TYPES, LogData, RankBatch

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
"""Posterior behaviour features (teacher, and the submit model with ``submit_posterior``)."""
DENSE = ("user_log_impressions", "user_click_rate", "user_skip_rate", "user_like_rate",
         "user_log_answered", "user_log_tenure", "item_log_impressions", "item_click_rate",
         "item_skip_rate", "item_like_rate", "item_log_duration", "click_history_fill",
         "click_share_leaf", "click_share_l2", "click_share_l1", "skip_history_fill",
         "skip_share_leaf", "skip_share_l2")
"""Dense serving-time features, all read from the feature store (the ``tenure`` from the users table)."""
SUBMIT_HISTORY = ("log_shown_before", "log_submitted_before", "submit_rate_logit")
"""The user's questionnaire history before the impression (submit model only)."""
DEFAULT_WEIGHTS: dict[str, float] = {
    "effective_view": 1.0, "like": 2.0, "share": 2.0,            # other_s (Eq. 3)
    "dislike": -1.0, "inappropriate": -2.0, "sexual": -1.0, "violent": -1.0, "spam": -1.0}
"""Eq. 3 weights: positive for engagement heads, negative for dissatisfaction / issue heads."""
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


def _dense(user: np.ndarray, item: np.ndarray, tenure: np.ndarray, duration: np.ndarray,
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
    dense = _dense(user, item, cat.tenure[u], cat.duration[i], cm, cv, sm, sv, length)
    return Inputs(np.stack([u + 1, i + 1, cat.author[i] + 1], axis=1),
                  np.stack([cat.l1[i] + 1, cat.l2[i] + 1, cat.leaf[i] + 1], axis=1), dense)


def _run_start(new: np.ndarray) -> np.ndarray:
    """(n,) index of the first row of each row's run, from (n,) bool "a new run starts here"."""
    return np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))


def _counts_before(values: np.ndarray, group_start: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per row, the sum of ``values`` (n, k) over the rows of its group before row ``at``."""
    before = np.cumsum(values, axis=0) - values                                       # (n, k) exclusive
    return before[at] - before[group_start]


def _window_matches(users: np.ndarray, attr_rows: np.ndarray, event: np.ndarray, attr_events: np.ndarray,
                    rank: np.ndarray, n_before: np.ndarray, length: int) -> np.ndarray:
    """Events of the user's last ``length`` events before the request that share the row's attribute.

    Args:
        users: (n,) user of each row (sorted by user, chronologically within a user).
        attr_rows: (n,) the row item's attribute value (e.g. leaf).
        event: (n,) bool, the row is an event of the history (a click or a skip).
        attr_events: (n,) attribute of each row's item (read where ``event``).
        rank: (n,) 0-based index of each event among the user's events (read where ``event``).
        n_before: (n,) the user's events before the row's request.
    """
    n_attr = int(max(attr_rows.max(), attr_events.max())) + 1
    span = int(n_before.max() + event.sum() + 1)
    keys = np.sort((users[event] * n_attr + attr_events[event]) * span + rank[event])     # (E,)
    base = (users * n_attr + attr_rows) * span                                              # (n,)
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
    cm = np.stack([_window_matches(u, a[i], ev, a[i], rank[:, 0], user[:, 1], length)
                   for a in (cat.leaf, cat.l2, cat.l1)], axis=1)
    sm = np.stack([_window_matches(u, a[i], skip, a[i], rank[:, 1], user[:, 2], length)
                   for a in (cat.leaf, cat.l2)], axis=1)
    cv, sv = np.minimum(user[:, 1], length), np.minimum(user[:, 2], length)
    # item counters: earlier impressions of the same item, by time
    by_item = np.lexsort((frame["position"].to_numpy()[order], req, frame["ts"].to_numpy()[order], i))
    ii = i[by_item]
    new_item = np.r_[True, ii[1:] != ii[:-1]] if n else np.zeros(0, bool)
    item_sorted = _counts_before(events[by_item][:, :4], _run_start(new_item), np.arange(n))
    item = np.empty((n, 4))
    item[by_item] = item_sorted
    dense = _dense(user, item, cat.tenure[u], cat.duration[i], cm, cv, sm, sv, length)
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


# ============================================================================ metrics
def weighted_auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """ROC AUC with sample weights: weighted share of (positive, negative) pairs ordered right,
    ties counting one half. NaN if a class is missing."""
    y = np.asarray(label).astype(bool)
    s = np.asarray(score, np.float64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, np.float64)
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


def calibration(prob: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> float:
    """USM Eq. 10, ``avg(p) / avg(y) - 1`` (weighted averages with ``weight``); NaN if no positive."""
    p, y = np.asarray(prob, np.float64), np.asarray(label, np.float64)
    w = np.ones(len(p)) if weight is None else np.asarray(weight, np.float64)
    den = (w * y).sum()
    return float((w * p).sum() / den - 1.0) if den > 0 else float("nan")


def labelled_metrics(prob: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """AUC and calibration (Eq. 10) of a head on labelled samples (USM Tables 1-2).

    With ``weight = 1 / P̂(submit | shown)`` (:func:`ipw_weights`) both are the IPW-weighted
    variants: estimates over every shown questionnaire, answered or not, rather than over the
    respondents.
    """
    return {"auc": weighted_auc(label, prob, weight), "calibration": calibration(prob, label, weight),
            "n": int(len(label)), "positives": int(np.asarray(label).sum())}


# ============================================================================ model
@dataclass(frozen=True)
class NetConfig:
    """Shape of a :class:`SurveyNet` (Fig. 3).

    Attributes:
        n_users, n_items, n_authors: id vocabularies (each embedding has one more row: 0 = unknown).
        n_cats: sizes of the l1 / l2 / leaf vocabularies (without the unknown row).
        n_dense: dense input features.
        heads: names of the output heads.
        d_emb: embedding size of every id and category.
        hidden: backbone FC layer sizes (paper: 512, 256, 128).
        head_hidden: hidden sizes of each head's tower, before its output unit (paper: 64, 16).
        lhuc: gate the input of every backbone layer by the user / item / author ids.
        lhuc_dim: embedding size of the LHUC ids; lhuc_hidden: hidden units of each gate net.
        se: squeeze-and-excitation on the backbone output; se_groups channels, se_reduction.
        dropout: after each backbone layer.
        id_dropout: in training, each user / item / author id is replaced by "unknown" (0) with
            this probability, so that the network cannot lean on memorised ids alone.
    """
    n_users: int
    n_items: int
    n_authors: int
    n_cats: tuple[int, int, int]
    n_dense: int
    heads: tuple[str, ...]
    d_emb: int = 16
    hidden: tuple[int, ...] = (128, 64, 32)
    head_hidden: tuple[int, ...] = (16, 8)
    lhuc: bool = True
    lhuc_dim: int = 8
    lhuc_hidden: int = 16
    se: bool = True
    se_groups: int = 8
    se_reduction: int = 2
    dropout: float = 0.1
    id_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_authors", "d_emb", "lhuc_dim", "lhuc_hidden", "se_groups",
                     "se_reduction"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.hidden or min(self.hidden) < 1 or (self.head_hidden and min(self.head_hidden) < 1):
            raise ValueError(f"hidden={self.hidden} and head_hidden={self.head_hidden} must be positive sizes")
        if not self.heads:
            raise ValueError("heads must name at least one head")
        if self.se and self.hidden[-1] % self.se_groups:
            raise ValueError(f"hidden[-1]={self.hidden[-1]} must be divisible by se_groups={self.se_groups}")
        for name in ("dropout", "id_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")


class LHUC(nn.Module):
    """Learning hidden unit contributions (Swietojanski et al.): a per-example gate in (0, 2)^d.

    ``gate(e) = 2 * sigmoid(W2 relu(W1 e + b1) + b2)``. ``W2`` and ``b2`` (the final gate layer)
    start at zero, so every gate starts at ``2 * sigmoid(0) = 1``: multiplying by it is then the
    identity, exactly.
    """

    def __init__(self, d_ids: int, d_out: int, d_hidden: int):
        super().__init__()
        self.inner = nn.Linear(d_ids, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:       # (B, d_ids) -> (B, d_out)
        return 2.0 * torch.sigmoid(self.out(F.relu(self.inner(e))))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation on a (B, d) vector cut into ``groups`` channels of ``d / groups``.

    squeeze ``z = mean over each channel`` (B, G); excitation ``s = sigmoid(W2 relu(W1 z))``
    (B, G); output ``h * s`` broadcast over each channel's units. Zero weights give every gate
    ``sigmoid(0) = 0.5``.
    """

    def __init__(self, d: int, groups: int, reduction: int):
        super().__init__()
        if d % groups:
            raise ValueError(f"d={d} must be divisible by groups={groups}")
        self.groups = groups
        self.down = nn.Linear(groups, max(1, groups // reduction))
        self.up = nn.Linear(max(1, groups // reduction), groups)

    def gates(self, h: torch.Tensor) -> torch.Tensor:          # (B, d) -> (B, G)
        z = h.view(h.shape[0], self.groups, -1).mean(-1)       # (B, G) squeeze
        return torch.sigmoid(self.up(F.relu(self.down(z))))    # (B, G) excitation

    def forward(self, h: torch.Tensor) -> torch.Tensor:        # (B, d) -> (B, d)
        s = self.gates(h)                                      # (B, G)
        return (h.view(h.shape[0], self.groups, -1) * s.unsqueeze(-1)).view_as(h)


class SurveyNet(nn.Module):
    """USM's multi-head network (Fig. 3): embeddings + dense -> LHUC-gated FC backbone -> SE -> heads.

    Args:
        config: the shape.
        mean, std: (n_dense,) standardisation of the dense inputs (from the training rows).
    """

    def __init__(self, config: NetConfig, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        c = self.config = config
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        sizes = (c.n_users, c.n_items, c.n_authors, *c.n_cats)
        self.emb = nn.ModuleList(nn.Embedding(n + 1, c.d_emb) for n in sizes)       # user item author l1 l2 leaf
        d_in = len(sizes) * c.d_emb + c.n_dense
        dims = (d_in, *c.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if c.lhuc:
            self.lhuc_emb = nn.ModuleList(nn.Embedding(n + 1, c.lhuc_dim) for n in sizes[:3])
            self.gates = nn.ModuleList(LHUC(3 * c.lhuc_dim, d, c.lhuc_hidden) for d in dims[:-1])
        self.se = SqueezeExcite(c.hidden[-1], c.se_groups, c.se_reduction) if c.se else nn.Identity()
        self.drop = nn.Dropout(c.dropout)
        tower = (c.hidden[-1], *c.head_hidden)
        self.heads = nn.ModuleList(
            nn.Sequential(*[m for a, b in zip(tower[:-1], tower[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                          nn.Linear(tower[-1], 1))
            for _ in c.heads)
        embs = list(self.emb) + (list(self.lhuc_emb) if c.lhuc else [])
        for e in embs:
            nn.init.normal_(e.weight, std=0.01)   # an id unseen in training stays near zero
        # He initialisation keeps the signal's scale through the ReLU stack (PyTorch's default
        # shrinks it about threefold per layer, and eight layers start on a long plateau)
        towers = [layer for head in self.heads for layer in head if isinstance(layer, nn.Linear)]
        for layer in [*self.layers, *towers]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, ids: torch.Tensor, cats: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """(B, 3) ids, (B, 3) categories, (B, n_dense) raw dense -> (B, H) logits."""
        if self.training and self.config.id_dropout > 0:
            ids = ids * (torch.rand(ids.shape) >= self.config.id_dropout)             # (B, 3) 0 = unknown
        cols = torch.cat([ids, cats], dim=1)                                          # (B, 6)
        x = torch.cat([e(cols[:, k]) for k, e in enumerate(self.emb)]
                      + [(dense - self.mean) / self.std], dim=1)                      # (B, d_in)
        if self.config.lhuc:
            g = torch.cat([e(ids[:, k]) for k, e in enumerate(self.lhuc_emb)], dim=1)  # (B, 3 * lhuc_dim)
        for k, layer in enumerate(self.layers):
            if self.config.lhuc:
                x = x * self.gates[k](g)                                              # (B, d_k) gated input
            x = self.drop(F.relu(layer(x)))                                           # (B, hidden[k])
        x = self.se(x)                                                                # (B, hidden[-1])
        return torch.cat([head(x) for head in self.heads], dim=1)                     # (B, H)


# ============================================================================ training
@dataclass(frozen=True)
class _Rows:
    """Training rows of one model; ``train_model`` slices every array field."""
    ids: np.ndarray       # (n, 3)
    cats: np.ndarray      # (n, 3)
    dense: np.ndarray     # (n, D)
    target: np.ndarray    # (n, H) labels or soft labels in [0, 1]
    mask: np.ndarray      # (n, H) 1 where the head is trained on the row
    weight: np.ndarray    # (n,) sample weight

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> _Rows:
        return _Rows(*(getattr(self, f)[idx] for f in ("ids", "cats", "dense", "target", "mask", "weight")))

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("ids", "cats", "dense", "target", "mask", "weight")))


def _rows(x: Inputs, target: np.ndarray, mask: np.ndarray, weight: np.ndarray | None = None) -> _Rows:
    w = np.ones(len(x)) if weight is None else weight
    return _Rows(x.ids, x.cats, x.dense, target.astype(np.float32), mask.astype(np.float32),
                 np.asarray(w, np.float32))


def _data_loss(model: SurveyNet, b: _Rows) -> torch.Tensor:
    """Masked, weighted BCE summed over heads, averaged over the rows of the batch."""
    logits = model(b.ids, b.cats, b.dense)                                                     # (B, H)
    bce = F.binary_cross_entropy_with_logits(logits, b.target, reduction="none")              # (B, H)
    return ((bce * b.mask).sum(1) * b.weight).sum() / len(b.weight)


def _base_rate(rows: _Rows) -> np.ndarray:
    """(H,) weighted mean target of every head over the rows that train it (0.5 if none)."""
    w = rows.mask * rows.weight[:, None]
    den = w.sum(0)
    return np.where(den > 0, (w * rows.target).sum(0) / np.maximum(den, 1e-12), 0.5)


def _validation(rows: _Rows | None) -> Callable[[SurveyNet], float] | None:
    """The early-stopping metric: minus the weighted BCE of :func:`_data_loss` on held-out rows.

    The untrained network (epoch 0) is never kept: on a few hundred held-out questionnaires
    whose answer rates drift between days, chance can make it the best, and ``train_model``
    would then return a model that never learned.
    """
    if rows is None or len(rows) == 0 or float(rows.mask.sum()) == 0:
        return None
    t = {f: torch.from_numpy(np.ascontiguousarray(getattr(rows, f)))
         for f in ("ids", "cats", "dense", "target", "mask", "weight")}
    calls = [0]

    def evaluate(model: SurveyNet) -> float:
        calls[0] += 1
        if calls[0] == 1:
            return -math.inf
        total = 0.0
        for s in range(0, len(rows), 16384):
            b = _Rows(**{k: v[s:s + 16384] for k, v in t.items()})
            total += float(_data_loss(model, b)) * len(b.weight)
        return -total / len(rows)                # higher is better

    return evaluate


def predict(model: SurveyNet, x: Inputs, chunk: int = 32768) -> np.ndarray:
    """(n, H) head probabilities of ``model`` for inputs ``x``."""
    out = np.empty((len(x), len(model.config.heads)), np.float32)
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(x), chunk):
            logits = model(torch.from_numpy(x.ids[s:s + chunk]), torch.from_numpy(x.cats[s:s + chunk]),
                           torch.from_numpy(x.dense[s:s + chunk]))
            out[s:s + chunk] = torch.sigmoid(logits).numpy()
    return out


def _time_split(ts: np.ndarray, share: float) -> np.ndarray:
    """(n,) bool: the latest ``share`` of the rows (by time) are validation rows."""
    if len(ts) < 10 or share <= 0:
        return np.zeros(len(ts), bool)
    cut = np.quantile(ts, 1.0 - share)
    return ts > cut


# ============================================================================ the policy
@register_policy("usm", "USM (2024): multi-head in-feed survey model (LHUC, SE), survey-submit IPW, "
                        "pseudo-label distillation, fused with engagement heads (Eq. 3); deterministic")
@dataclass
class USM:
    """USM ranking policy (see the module docstring).

    Args:
        temperature: None ranks by the score (deterministic top-k).
        combine: what Eq. 3 weighs: ``"probability"`` (the paper: ``sum_i w_i p_i``) or
            ``"logit"`` (``sum_i w_i logit(p_i)``, which lets a rare head's relative changes
            count as much as a common head's).
        min_head_labels: a survey head enters Eq. 3 only if its training rows hold at least this
            many positive and this many negative labels. A head below it (e.g. no inappropriate
            answer in the pre-period) would rank with a tower that never saw a label; it gets
            weight 0, a warning names it and ``stats_["unestimable_heads"]`` records its counts,
            and with ``distillation`` it gets no pseudo labels.
        response_debias: weight the labelled samples by ``1 / max(P̂(submit | shown),
            min_propensity)`` in training and validation (§3.2).
        distillation: teacher with posterior features -> filtered soft pseudo labels -> student
            (§3.3).
        debias_pseudo: train the teacher with the IPW weights (Table 3's last row); None: as
            ``response_debias``.
        weights: Eq. 3 weights by head name, merged over :data:`DEFAULT_WEIGHTS`.
        min_propensity: IPW clip (weights at most ``1 / min_propensity``).
        submit_posterior: the submit model also reads the posterior behaviour (training only).
        tau_n, tau_p: Eq. 8 thresholds on the teacher's soft labels: a float for every head, a
            mapping from head name to threshold (other heads keep the default), or None: the
            band ``(b / tau_band, b * tau_band)`` around each head's labelled base rate ``b``.
        tau_band: width factor of the default band (>= 1; 1 keeps every pseudo label except
            those exactly at the base rate).
        alpha: Eq. 9 weight of the labelled CE relative to the pseudo-labelled CE (each a mean).
        pseudo_support: which impressions without a questionnaire get pseudo labels: ``"all"``
            (the paper's "all video exposures"), or ``"surveyable"`` (default): those whose
            effective-view / skip outcome occurs among the shown questionnaires, where the
            teacher has seen labelled examples (the simulator shows questionnaires after
            effective views only; a teacher trained there extrapolates badly to skips).
        max_pseudo: impressions given pseudo labels at most (a seeded sample).
        pseudo_per_epoch: pseudo-labelled rows drawn per student epoch.
        engagement_per_epoch: impressions drawn per epoch of the engagement model.
        epoch_rows: a smaller training set (the questionnaires: a few thousand) is repeated to
            at least this many rows per epoch, so that an epoch is a useful number of Adam steps.
        d_emb, hidden, head_hidden, lhuc, lhuc_dim, se, se_groups, se_reduction, dropout: the
            network (:class:`NetConfig`).
        batch_size, lr, max_epochs: training (:class:`TrainConfig`), shared by every model.
        weight_decay, id_dropout, patience: Adam's L2 penalty, the id dropout of
            :class:`NetConfig` and the early-stopping patience of the models trained on
            questionnaires only (submit, survey, teacher: a few thousand rows, which id
            embeddings memorise within a few epochs).
        weight_decay_large, id_dropout_large, patience_large: the same for the models trained on
            impressions (engagement, student: tens of thousands of rows per epoch).
        valid_share: latest share of each model's rows (by time) held out for early stopping.
        history_length: click / skip history window (capped by the feature store's length).
        update_epochs: passes of :meth:`update` when the caller gives none (0: ``update`` does
            nothing; the A/B runner's ``learning = "update"`` passes its own).
        progress: tqdm bars while training.
    """
    temperature: float | None = None
    combine: str = "probability"
    min_head_labels: int = 10
    response_debias: bool = False
    distillation: bool = False
    debias_pseudo: bool | None = None
    weights: dict = field(default_factory=dict)
    min_propensity: float = 0.05
    submit_posterior: bool = True
    tau_n: Any = None
    tau_p: Any = None
    tau_band: float = 2.0
    alpha: float = 1.0
    pseudo_support: str = "surveyable"
    max_pseudo: int = 300_000
    pseudo_per_epoch: int = 60_000
    engagement_per_epoch: int = 60_000
    epoch_rows: int = 4096
    d_emb: int = 16
    hidden: tuple = (128, 64, 32)
    head_hidden: tuple = (16, 8)
    lhuc: bool = True
    lhuc_dim: int = 8
    se: bool = True
    se_groups: int = 8
    se_reduction: int = 2
    dropout: float = 0.1
    batch_size: int = 512
    lr: float = 2e-3
    max_epochs: int = 40
    weight_decay: float = 3e-3
    id_dropout: float = 0.0
    patience: int = 4
    weight_decay_large: float = 1e-4
    id_dropout_large: float = 0.3
    patience_large: int = 2
    valid_share: float = 0.15
    history_length: int = 50
    update_epochs: int = 0
    progress: bool = False
    # fitted state
    fitted_: bool = field(default=False, init=False)
    train_: pd.DataFrame | None = field(default=None, init=False, repr=False)    # the logs seen so far
    estimable_: np.ndarray | None = field(default=None, init=False, repr=False)  # (H,) heads in Eq. 3
    rng_: np.random.Generator | None = field(default=None, init=False, repr=False)
    catalogue_: Catalogue | None = field(default=None, init=False, repr=False)
    submit_: SurveyNet | None = field(default=None, init=False, repr=False)
    engagement_: SurveyNet | None = field(default=None, init=False, repr=False)
    survey_: SurveyNet | None = field(default=None, init=False, repr=False)    # serves: survey model or student
    teacher_: SurveyNet | None = field(default=None, init=False, repr=False)
    weights_: dict = field(default_factory=dict, init=False, repr=False)
    history_: dict[str, list[EpochRecord]] = field(default_factory=dict, init=False, repr=False)
    stats_: dict = field(default_factory=dict, init=False, repr=False)

    # -- public API ------------------------------------------------------------------------------
    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Fit the submit, engagement and survey models (and the teacher) on observable logs.

        Raises:
            ValueError: oracle columns, missing columns, no impressions, fewer than two answered
                questionnaires, or a bad parameter.
        """
        check_observable(train, required=REQUIRED)
        weights = self._check_params()
        imp = train.impressions
        labels, lmask = survey_labels(imp)                                               # (n, H) each
        labelled = lmask.any(axis=1)
        if labelled.sum() < 2:
            raise ValueError(f"train has {int(labelled.sum())} answered questionnaire(s); USM needs at least 2")
        # independent streams: each component is the same whatever the switches
        r_submit, r_engage, r_survey = rng.spawn(3)
        self.catalogue_, self.history_, self.stats_ = Catalogue.from_logs(train), {}, {}
        x = logged_inputs(imp, self.catalogue_, self.history_length)                     # (n, D)
        post = posterior_features(imp)                                                   # (n, P)
        hist = submit_history(imp)                                                       # (n, 3)
        ts = imp["ts"].to_numpy(np.float64)
        shown = imp["survey_shown"].to_numpy(bool)

        # 1. survey-submit model on every shown questionnaire; IPW weights of the labelled rows (§3.2)
        self.submit_ = self._fit_submit(imp, x, hist, post, shown, ts, r_submit)
        idx = np.flatnonzero(labelled)
        pscore = self._submit_pscore(imp.iloc[idx], x.take(idx), hist[idx], post[idx])  # (m,)
        ipw = ipw_weights(pscore, self.min_propensity)
        ipw /= ipw.mean()
        self.stats_.update(labelled=len(idx), shown=int(shown.sum()),
                           ipw_max=round(float(ipw.max()), 3), pscore_mean=round(float(pscore.mean()), 4))

        # 2. engagement heads (other_s of Eq. 3); not fitted when Eq. 3 gives them all weight 0
        fit_engagement = any(weights[h] != 0.0 for h in ENGAGEMENT_HEADS)
        self.engagement_ = self._fit_engagement(imp, x, ts, r_engage) if fit_engagement else None

        # 3. the survey model: on the labelled samples, or teacher -> pseudo labels -> student
        valid = _time_split(ts[idx], self.valid_share)                                  # (m,)
        estimable = self._estimable_heads(labels[idx][~valid], lmask[idx][~valid], weights)  # (H,)
        weights = {h: (0.0 if h in SURVEY_HEADS and not estimable[SURVEY_HEADS.index(h)] else w)
                   for h, w in weights.items()}
        real = _rows(x.take(idx), labels[idx], lmask[idx], ipw if self.response_debias else None)
        if self.distillation:
            self.survey_, self.teacher_ = self._fit_distilled(imp, x, post, labels, lmask, idx, valid, ipw, real,
                                                              shown, ts, r_survey, estimable)
        else:
            self.survey_ = self._fit_net(real.take(np.flatnonzero(~valid)), real.take(np.flatnonzero(valid)),
                                         x.dense, SURVEY_HEADS, r_survey, "survey")
            self.teacher_ = None
        self.weights_ = weights
        self.train_, self.estimable_ = imp, estimable
        self.rng_ = rng.spawn(1)[0]                      # online updates; the fit's draws are unchanged
        self.fitted_ = True
        return self

    def update(self, new: LogData, *, epochs: int | None = None) -> None:
        """Online learning between serving rounds: ``epochs`` passes (default ``update_epochs``;
        0 does nothing) of the engagement model over the new impressions, and of the serving
        survey model (or student) over the new answered questionnaires, weighted by the fitted
        submit model's IPW with ``response_debias``. Features are point-in-time over every log
        seen so far. The submit model and the teacher stay fixed (no new pseudo labels), and the
        heads that were unestimable at fit time stay out of Eq. 3 and untrained."""
        check_fitted(self)
        epochs = resolve_update_epochs(epochs, self.update_epochs)
        if epochs == 0 or len(new.impressions) == 0:
            return
        check_observable(new, required=REQUIRED, where="new")
        start = len(self.train_)
        frame = append_logs(self.train_, new.impressions)
        self.train_ = frame
        fresh = np.arange(start, len(frame))
        x = logged_inputs(frame, self.catalogue_, self.history_length).take(fresh)          # (m, D)
        imp = frame.iloc[fresh]
        r_engage, r_survey = self.rng_.spawn(2)
        if self.engagement_ is not None:
            target = np.stack([imp[h].to_numpy(bool) for h in ENGAGEMENT_HEADS], axis=1).astype(np.float32)
            self._fine_tune(self.engagement_, _rows(x, target, np.ones_like(target)), epochs, r_engage, True)
        labels, lmask = survey_labels(imp)                                                 # (m, H) each
        lmask = lmask * self.estimable_[None, :]                                            # unestimable heads stay untrained
        idx = np.flatnonzero(lmask.any(axis=1))
        if len(idx):
            weight = None
            if self.response_debias:
                sub = frame.iloc[start:]
                pscore = self._submit_pscore(sub.iloc[idx], x.take(idx), submit_history(frame)[start:][idx],
                                             posterior_features(sub.iloc[idx]))
                weight = ipw_weights(pscore, self.min_propensity)
                weight = weight / weight.mean()              # as in fit: mean 1
            self._fine_tune(self.survey_, _rows(x.take(idx), labels[idx], lmask[idx], weight), epochs, r_survey,
                            self.distillation)

    def _fine_tune(self, model: SurveyNet, rows: _Rows, epochs: int, rng: np.random.Generator, large: bool) -> None:
        tc = TrainConfig(batch_size=self.batch_size, lr=self.lr, max_epochs=epochs, patience=epochs,
                         weight_decay=self.weight_decay_large if large else self.weight_decay, max_grad_norm=5.0,
                         progress=False, desc="usm update")
        result = train_model(model, lambda r: rows, _data_loss, None, tc, rng)
        self.history_.setdefault("updates", []).extend(result.history)

    def score(self, batch: RankBatch) -> np.ndarray:
        """(B, C) Eq. 3: ``sum_i w_i p(survey_i) + sum_j v_j p(engagement_j)`` (with
        ``combine="logit"``, each ``p`` replaced by its logit); heads of weight 0 are not computed."""
        return sum(self.terms(batch).values(), np.zeros(np.shape(batch.candidates), np.float64))

    def terms(self, batch: RankBatch) -> dict[str, np.ndarray]:
        """``{head: (B, C) w_h * p_h}`` (or ``w_h * logit(p_h)``): the terms of Eq. 3 that
        :meth:`score` adds, for every head of non-zero weight."""
        check_fitted(self)
        need = tuple(h for h, w in self.weights_.items() if w != 0.0)
        heads = self.predict_heads(batch.user_ids, batch.candidates, batch.features, heads=need)
        if self.combine == "logit":
            heads = {h: logit(np.clip(p, 1e-6, 1 - 1e-6)) for h, p in heads.items()}
        return {h: self.weights_[h] * heads[h] for h in need}

    def term_spread(self, batch: RankBatch) -> dict[str, float]:
        """``{head: mean over requests of the within-request sd of its Eq. 3 term}``: how much
        each term can reorder a page (a term that is constant within a request ranks nothing)."""
        return {h: float(t.std(axis=1).mean()) for h, t in self.terms(batch).items()}

    def predict_heads(self, users: np.ndarray, candidates: np.ndarray, store: Any,
                      heads: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Probabilities of the serving survey heads (student or survey model) and of the
        engagement heads for every (request, candidate) pair.

        Args:
            users: (B,) users.
            candidates: (B, C) item ids.
            store: the feature store (``RankBatch.features``).
            heads: heads to compute; default every one of :data:`SURVEY_HEADS` and
                :data:`ENGAGEMENT_HEADS`.

        Returns:
            ``{head: (B, C) float64}``; the engagement heads are missing if they were not fitted
            (all their Eq. 3 weights are 0).
        """
        check_fitted(self)
        cands = np.asarray(candidates)
        cat = self.catalogue_
        check_ids(cands, cat.n_items)
        users = np.asarray(users)
        check_ids(users, cat.n_users, "user id", "users")
        heads = SURVEY_HEADS + ENGAGEMENT_HEADS if heads is None else heads
        length = min(self.history_length, getattr(store, "history_length", self.history_length))
        x = serving_inputs(users, cands, store, cat, length)                             # (B * C, D)
        out: dict[str, np.ndarray] = {}
        for model in (self.survey_, self.engagement_):
            names = () if model is None else model.config.heads
            if any(h in names for h in heads):
                p = predict(model, x).astype(np.float64)                                  # (B * C, H)
                out.update({h: p[:, k].reshape(cands.shape) for k, h in enumerate(names) if h in heads})
        return out

    def submit_propensity(self, frame: pd.DataFrame) -> np.ndarray:
        """P̂(submit | shown) of every row of an observable impressions frame (NaN where no
        questionnaire was shown), usable as ``submit_pscore`` of Eq. 13
        (:func:`estimators.usm_debiased_rate`) and as IPW weights of :func:`labelled_metrics`.

        Point-in-time features are computed within ``frame``: pass the earlier logs along
        (e.g. train and test impressions concatenated) and select the rows wanted.
        """
        check_fitted(self)
        check_observable(LogData(frame, pd.DataFrame(), pd.DataFrame()), required=REQUIRED, where="frame",
                         allow_empty=True)
        out = np.full(len(frame), np.nan)
        rows = np.flatnonzero(frame["survey_shown"].to_numpy(bool))
        if len(rows):
            x = logged_inputs(frame, self.catalogue_, self.history_length).take(rows)
            out[rows] = self._submit_pscore(frame.iloc[rows], x, submit_history(frame)[rows],
                                            posterior_features(frame.iloc[rows]))
        return out

    # -- components ------------------------------------------------------------------------------
    def _fit_submit(self, imp: pd.DataFrame, x: Inputs, hist: np.ndarray, post: np.ndarray, shown: np.ndarray,
                    ts: np.ndarray, rng: np.random.Generator) -> SurveyNet:
        """§3.2: P(submit | shown), one head per survey type, no LHUC."""
        idx = np.flatnonzero(shown)
        stype = imp["survey_type"].astype(object).to_numpy()[idx]
        mask = np.stack([stype == t for t in SUBMIT_HEADS], axis=1).astype(np.float32)      # (m, 2)
        target = mask * imp["survey_submitted"].to_numpy(bool)[idx, None]
        xs = self._submit_inputs(x.take(idx), hist[idx], post[idx])
        rows = _rows(xs, target, mask)
        valid = _time_split(ts[idx], self.valid_share)
        return self._fit_net(rows.take(np.flatnonzero(~valid)), rows.take(np.flatnonzero(valid)), xs.dense,
                             SUBMIT_HEADS, rng, "submit", lhuc=False)

    def _submit_inputs(self, x: Inputs, hist: np.ndarray, post: np.ndarray) -> Inputs:
        x = x.with_dense(hist)
        return x.with_dense(post) if self.submit_posterior else x

    def _submit_pscore(self, frame: pd.DataFrame, x: Inputs, hist: np.ndarray, post: np.ndarray) -> np.ndarray:
        """(m,) P̂(submit | shown) of shown rows: the head of each row's survey type."""
        p = predict(self.submit_, self._submit_inputs(x, hist, post))                     # (m, 2)
        col = (frame["survey_type"].astype(object).to_numpy() == SUBMIT_HEADS[1]).astype(np.int64)
        return p[np.arange(len(p)), col].astype(np.float64)

    def _fit_engagement(self, imp: pd.DataFrame, x: Inputs, ts: np.ndarray, rng: np.random.Generator) -> SurveyNet:
        """Eq. 3's other heads (effective view, like, share) on impressions sampled per epoch."""
        target = np.stack([imp[h].to_numpy(bool) for h in ENGAGEMENT_HEADS], axis=1).astype(np.float32)
        rows = _rows(x, target, np.ones_like(target))
        valid = _time_split(ts, self.valid_share)
        pool, held = np.flatnonzero(~valid), np.flatnonzero(valid)
        held = held[np.sort(rng.permutation(len(held))[:20_000])]
        per_epoch = min(self.engagement_per_epoch, len(pool))

        def make_epoch(r: np.random.Generator) -> _Rows:
            return rows.take(pool[r.choice(len(pool), per_epoch, replace=False)])

        return self._fit_net(make_epoch, rows.take(held), x.dense, ENGAGEMENT_HEADS, rng, "engagement",
                             prior=target.mean(axis=0), large=True)

    def _fit_distilled(self, imp: pd.DataFrame, x: Inputs, post: np.ndarray, labels: np.ndarray,
                       lmask: np.ndarray, idx: np.ndarray, valid: np.ndarray, ipw: np.ndarray, real: _Rows,
                       shown: np.ndarray, ts: np.ndarray, rng: np.random.Generator,
                       estimable: np.ndarray) -> tuple[SurveyNet, SurveyNet]:
        """§3.3: teacher (Eq. 7) -> soft pseudo labels filtered by Eq. 8 -> student on Eq. 9.

        Returns:
            (student, teacher).
        """
        r_teacher, r_pool, r_student = rng.spawn(3)
        debias_pseudo = self.response_debias if self.debias_pseudo is None else self.debias_pseudo
        xt = x.with_dense(post)                                                          # (n, D + P)
        taught = _rows(xt.take(idx), labels[idx], lmask[idx], ipw if debias_pseudo else None)
        teacher = self._fit_net(taught.take(np.flatnonzero(~valid)), taught.take(np.flatnonzero(valid)), xt.dense,
                                SURVEY_HEADS, r_teacher, "teacher")
        # soft pseudo labels on impressions without a questionnaire (within the exposure support)
        candidate = ~shown
        if self.pseudo_support == "surveyable":
            outcome = imp["effective_view"].to_numpy(np.int64) * 2 + imp["skip"].to_numpy(np.int64)
            candidate &= np.isin(outcome, np.unique(outcome[shown]))
        unl = np.flatnonzero(candidate)
        if len(unl) > self.max_pseudo:
            unl = np.sort(r_pool.choice(unl, self.max_pseudo, replace=False))
        soft = predict(teacher, xt.take(unl))                                            # (u, H)
        tau_n, tau_p = self._thresholds(_base_rate(taught))
        keep = pseudo_label_mask(soft, tau_n, tau_p) & estimable[None, :]                # (u, H) Eq. 8
        self.stats_.update(pseudo_candidates=len(unl), tau_n=tau_n.round(4).tolist(), tau_p=tau_p.round(4).tolist(),
                           pseudo_kept=keep.mean(axis=0).round(4).tolist())
        has = keep.any(axis=1)
        unl, soft, keep = unl[has], soft[has], keep[has]
        pseudo = _rows(x.take(unl), soft * keep, keep)
        # Eq. 9 with each CE a mean over its stream: a labelled row weighs alpha * n_pseudo / n_real
        p_valid = _time_split(ts[unl], self.valid_share)
        p_pool, p_held = np.flatnonzero(~p_valid), np.flatnonzero(p_valid)
        p_held = p_held[np.sort(r_pool.permutation(len(p_held))[:20_000])]
        per_epoch = min(self.pseudo_per_epoch, len(p_pool))
        r_train, r_held = real.take(np.flatnonzero(~valid)), real.take(np.flatnonzero(valid))

        def scaled(part: _Rows, n_pseudo: int) -> _Rows:
            factor = self.alpha * n_pseudo / max(len(part), 1)
            return replace(part, weight=(part.weight * factor).astype(np.float32))

        r_train_s = scaled(r_train, per_epoch)
        held = _Rows.concat([pseudo.take(p_held), scaled(r_held, len(p_held))]) if len(p_held) else r_held

        def make_epoch(r: np.random.Generator) -> _Rows:
            if per_epoch == 0:        # every pseudo label fell in the uncertain band: labelled rows only
                return r_train
            return _Rows.concat([pseudo.take(p_pool[r.choice(len(p_pool), per_epoch, replace=False)]), r_train_s])

        student = self._fit_net(make_epoch, held, x.dense, SURVEY_HEADS, r_student, "student",
                                prior=_base_rate(_Rows.concat([pseudo, r_train])), large=True)
        return student, teacher

    def _fit_net(self, train: _Rows | Callable[[np.random.Generator], _Rows], valid: _Rows | None,
                 dense_pool: np.ndarray, heads: tuple[str, ...], rng: np.random.Generator, desc: str, *,
                 lhuc: bool | None = None, prior: np.ndarray | None = None, large: bool = False) -> SurveyNet:
        """Build a SurveyNet (dense inputs standardised with ``dense_pool``'s statistics), train it.

        Args:
            train: the training rows, or ``make_epoch(rng)`` drawing each epoch's rows.
            valid: held-out rows for early stopping (None: every epoch runs).
            prior: (H,) base rates: each head's output bias starts at their logit (default:
                the weighted label mean of ``train`` when it is a fixed set).
            large: the regularisation of the models trained on impressions (``*_large``).
        """
        mean = dense_pool.mean(axis=0)
        std = dense_pool.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        if prior is None and not callable(train):
            prior = _base_rate(train)
        cat = self.catalogue_
        config = NetConfig(
            n_users=cat.n_users, n_items=cat.n_items, n_authors=int(cat.author.max()) + 1,
            n_cats=(int(cat.l1.max()) + 1, int(cat.l2.max()) + 1, int(cat.leaf.max()) + 1),
            n_dense=dense_pool.shape[1], heads=heads, d_emb=self.d_emb, hidden=tuple(self.hidden),
            head_hidden=tuple(self.head_hidden), lhuc=self.lhuc if lhuc is None else lhuc, lhuc_dim=self.lhuc_dim,
            se=self.se, se_groups=self.se_groups, se_reduction=self.se_reduction, dropout=self.dropout,
            id_dropout=self.id_dropout_large if large else self.id_dropout)
        model = build_module(lambda: SurveyNet(config, mean, std), rng)
        if prior is not None:   # every head starts at its base rate: calibrated in the mean from step 0
            with torch.no_grad():
                for tower, rate in zip(model.heads, np.clip(prior, 1e-4, 1 - 1e-4)):
                    tower[-1].bias.fill_(float(np.log(rate / (1 - rate))))
        if callable(train):
            make_epoch = train
        else:   # a small set is repeated, so that an epoch has at least epoch_rows rows (Adam steps)
            reps = max(1, math.ceil(self.epoch_rows / max(len(train), 1)))
            fixed = _Rows.concat([train] * reps) if reps > 1 else train

            def make_epoch(r: np.random.Generator) -> _Rows:
                return fixed

        tc = TrainConfig(batch_size=self.batch_size, lr=self.lr, max_epochs=self.max_epochs,
                         weight_decay=self.weight_decay_large if large else self.weight_decay,
                         patience=self.patience_large if large else self.patience, max_grad_norm=5.0,
                         progress=self.progress, desc=f"usm {desc}")
        result = train_model(model, make_epoch, _data_loss, _validation(valid), tc, rng)
        self.history_[desc] = result.history
        return model

    def _estimable_heads(self, labels: np.ndarray, mask: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
        """(H,) bool: survey heads with ``min_head_labels`` positive and negative training labels
        (``labels``, ``mask``: (m, H) of the training rows); warns naming the others that Eq. 3
        would weigh (a head of weight 0 ranks nothing either way)."""
        positives = (labels * mask).sum(axis=0)                                          # (H,)
        negatives = mask.sum(axis=0) - positives
        ok = (positives >= self.min_head_labels) & (negatives >= self.min_head_labels)
        dropped = {h: {"rows": int(mask[:, k].sum()), "positives": int(positives[k])}
                   for k, h in enumerate(SURVEY_HEADS) if not ok[k] and weights[h] != 0.0}
        self.stats_["unestimable_heads"] = dropped
        if dropped:
            named = ", ".join(f"{h} ({c['rows']} rows, {c['positives']} positive)" for h, c in dropped.items())
            warnings.warn(f"USM: survey head(s) {named} have fewer than min_head_labels={self.min_head_labels} "
                          "positive or negative training labels; they get weight 0 in Eq. 3 "
                          "(stats_['unestimable_heads'])", stacklevel=3)
        return ok

    def _check_params(self) -> dict[str, float]:
        """Validate the parameters; returns the Eq. 3 weights of every head."""
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 or None")
        if self.combine not in ("probability", "logit"):
            raise ValueError(f"combine={self.combine!r} must be 'probability' or 'logit'")
        if isinstance(self.min_head_labels, bool) or not isinstance(self.min_head_labels, int) \
                or self.min_head_labels < 1:
            raise ValueError(f"min_head_labels={self.min_head_labels!r} must be an integer >= 1")
        if not isinstance(self.weights, Mapping):
            raise ValueError(f"weights={self.weights!r} must be a mapping of head name to weight")
        unknown = sorted(set(self.weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"weights has unknown head(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(DEFAULT_WEIGHTS)}")
        weights = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in self.weights.items()}}
        if not all(math.isfinite(v) for v in weights.values()):
            raise ValueError(f"weights must be finite, got {weights}")
        ipw_weights(np.zeros(0), self.min_propensity)                          # validates min_propensity
        if not self.tau_band >= 1.0:
            raise ValueError(f"tau_band={self.tau_band} must be >= 1")
        pseudo_label_mask(np.zeros((0, len(SURVEY_HEADS))), *self._thresholds(np.full(len(SURVEY_HEADS), 0.5)))
        if not self.alpha >= 0:
            raise ValueError(f"alpha={self.alpha} must be >= 0")
        for name in ("max_pseudo", "pseudo_per_epoch", "engagement_per_epoch", "epoch_rows", "history_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.pseudo_support not in ("surveyable", "all"):
            raise ValueError(f"pseudo_support={self.pseudo_support!r} must be 'surveyable' or 'all'")
        if not 0.0 <= self.valid_share < 0.5:
            raise ValueError(f"valid_share={self.valid_share} must be in [0, 0.5)")
        return weights

    def _thresholds(self, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H,) tau_n and tau_p of every survey head; ``base`` (H,) is each head's labelled base
        rate, which sets the default band ``(base / tau_band, base * tau_band)``."""
        default = (base / self.tau_band, np.minimum(base * self.tau_band, 1.0))
        out = []
        for name, fallback in zip(("tau_n", "tau_p"), default):
            value = getattr(self, name)
            if value is None:
                out.append(np.asarray(fallback, np.float64))
            elif isinstance(value, Mapping):
                unknown = sorted(set(value) - set(SURVEY_HEADS))
                if unknown:
                    raise ValueError(f"{name} has unknown head(s) {', '.join(map(repr, unknown))}; "
                                     f"known: {', '.join(SURVEY_HEADS)}")
                out.append(np.array([float(value[h]) if h in value else fallback[k]
                                     for k, h in enumerate(SURVEY_HEADS)]))
            else:
                out.append(np.full(len(SURVEY_HEADS), float(value)))
        return out[0], out[1]


VARIANTS: dict[str, dict] = {
    "baseline": {},
    "response debias": {"response_debias": True},
    "distillation": {"distillation": True},
    "distillation + response debias": {"distillation": True, "response_debias": True},
    "engagement only": {"weights": {h: 0.0 for h in SURVEY_HEADS}},
    "w/o LHUC": {"lhuc": False},
    "w/o SE": {"se": False},
}
"""``make_policy("usm", **params)`` of the rows of USM Tables 1-3 (the first four), the online
control without the survey model ("engagement only": Eq. 3 with zero survey weights), and two
architecture ablations."""
