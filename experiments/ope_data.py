"""From a run logged with ``platform.log_candidates`` to the arrays off-policy estimators take.

A logged impression is an item at a position of a page drawn by the logging policy from the
request's candidates. A *target* policy is any registered policy ranked stochastically: a
Plackett-Luce draw from softmax(its scores / ``temperature``) over the same candidates
(``make_policy(name, temperature=T)`` serves exactly that online). Its scores of every logged
request come from the run itself: the platform scores each request with the shadow targets too
(:meth:`simulator.platform.Platform.set_shadow`) and logs them next to the candidates, so the
target's distribution is the one it would have had with the user's state at that moment.

:func:`logged_pages` joins the impressions to their candidates; :func:`propensities` gives, for
every logged impression, the conditional P(item at j | the logged items above it) and the marginal
P(item at j) under the logging policy (``"logging"``) or a target. Item-position IPS divides the
target's marginal by the logging marginal; cascade / RIPS estimators take products of the
conditionals down the page.

From there to the estimators of :mod:`estimators` (:func:`estimators.list_estimators`):
:func:`ope_data` gives the :class:`~estimators.OPEData` of one target and one reward (impression
or page level); :class:`ItemMeanReward` is a deliberately simple reward model for the direct method
and the doubly robust family, and :func:`imputed_rewards` gives its ``imputed`` and
``imputed_target`` arrays (the second by a seeded Monte-Carlo over the target's pages);
:func:`satbed_ope_datasets` turns a finished A/B run with shadow targets into ``(data, truth)``
pairs for :func:`estimators.check_estimator`, the truth being each target's value *online*, in its
own bucket of the same run; :func:`bandit_feedback` gives Open Bandit Pipeline's dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, Sequence

import numpy as np
import pandas as pd

from estimators import Estimate, OPEData, ratio_estimate, to_bandit_feedback
from simulator.logs import read_candidates, read_impressions
from simulator.plackett_luce import log_weights, marginal_propensities

CHUNK = 512
"""Requests per call of :func:`~simulator.plackett_luce.marginal_propensities` (bounds memory)."""


@dataclass(frozen=True)
class LoggedPages:
    """A run's impressions joined to their requests' candidates.

    Attributes:
        impressions: the impressions, sorted by request and position (a served page is a prefix).
        requests: one row per request (:func:`simulator.logs.read_candidates`).
        candidates: (R, C) item ids per request.
        scores: (R, C) scores per request: ``"logging"`` and each shadow target.
        row: (n,) each impression's request, a row of ``requests``.
        col: (n,) each impression's item, a column of ``candidates``.
    """
    impressions: pd.DataFrame
    requests: pd.DataFrame
    candidates: np.ndarray
    scores: dict[str, np.ndarray]
    row: np.ndarray
    col: np.ndarray

    @property
    def targets(self) -> list[str]:
        return [name for name in self.scores if name != "logging"]


def logged_pages(run_dir: str | Path, *, bucket: str | None = None, days: Sequence[int] | None = None,
                 columns: Sequence[str] | None = None) -> LoggedPages:
    """Read a run's impressions (``columns``, or all) and candidates, joined.

    Raises:
        FileNotFoundError: the run was not logged with ``platform.log_candidates``.
        ValueError: an impression's item is not among its request's candidates.
    """
    buckets = [bucket] if bucket is not None else None
    requests, candidates, scores = read_candidates(run_dir, days=days, buckets=buckets)
    need = {"request_id", "position", "item_id"}
    cols = None if columns is None else list(dict.fromkeys([*need, *columns]))
    logs = read_impressions(Path(run_dir) / "logs", days=days, buckets=buckets, columns=cols)
    logs = logs.sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    row = np.searchsorted(requests["request_id"].to_numpy(), logs["request_id"].to_numpy())
    if (row >= len(requests)).any() or (requests["request_id"].to_numpy()[np.minimum(row, len(requests) - 1)]
                                        != logs["request_id"].to_numpy()).any():
        raise ValueError("some impressions have no logged candidates (were the logs and candidates written by "
                         "the same run?)")
    hit = candidates[row] == logs["item_id"].to_numpy()[:, None]
    if not hit.any(axis=1).all():
        raise ValueError("some logged items are not among their request's candidates")
    return LoggedPages(logs, requests, candidates, scores, row, hit.argmax(axis=1))


def propensities(pages: LoggedPages, policy: str = "logging", temperature: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(conditional, marginal) probability of every logged impression under ``policy``.

    Args:
        pages: :func:`logged_pages`.
        policy: ``"logging"`` or a shadow target's name.
        temperature: of the Plackett-Luce ranking; default the logged temperature for
            ``"logging"`` (required for a target).
    Returns:
        (n,) arrays: P(item at j | the logged items above it) and P(item at j).
    """
    if policy not in pages.scores:
        raise ValueError(f"no scores of {policy!r} in this run; it has: {', '.join(pages.scores)}")
    if temperature is None:
        if policy != "logging":
            raise ValueError(f"give the temperature of target {policy!r}")
        temps = pages.requests["temperature"].to_numpy()
        if np.isnan(temps).any() or not (temps == temps[0]).all():
            raise ValueError("the logging policy ranked deterministically or at several temperatures; "
                             "give temperature=")
        temperature = float(temps[0])
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    logits = log_weights(pages.scores[policy], temperature)
    position = pages.impressions["position"].to_numpy().astype(np.int64)
    # conditional: the weights of the logged items above, summed within each request
    w = np.exp(logits[pages.row, pages.col])
    first = np.flatnonzero(np.r_[True, pages.row[1:] != pages.row[:-1]])     # each request's first row
    length = np.diff(np.r_[first, len(w)])
    if not (position == np.arange(len(w)) - np.repeat(first, length)).all():
        raise ValueError("every logged page must be a prefix (positions 0, 1, ...) of its request")
    group = np.repeat(np.arange(len(first)), length)
    grid = np.zeros((len(first), int(position.max()) + 1))
    grid[group, position] = w
    above = (np.cumsum(grid, axis=1) - grid)[group, position]               # logged items above, same request
    conditional = w / (np.exp(logits).sum(axis=1)[pages.row] - above)
    # marginal: each request's served prefix, grouped by its length
    marginal = np.empty(len(w))
    for n in np.unique(length):
        starts = first[length == n]
        for chunk in range(0, len(starts), CHUNK):
            s = starts[chunk:chunk + CHUNK]
            idx = s[:, None] + np.arange(n)[None, :]
            marginal[idx] = marginal_propensities(logits[pages.row[s]], pages.col[idx])
    return conditional, marginal


# --------------------------------------------------------------------------- estimator inputs
REWARDS = {
    "watch_time": "seconds watched (observable)",
    "effective_view": "an effective view, 0/1 (observable; the click y)",
    "true_satisfied": "the realised latent satisfaction, 0/1 (ORACLE: no platform observes it)",
}
"""Impression columns :func:`ope_data` and :func:`satbed_ope_datasets` take as the reward."""

MARGINAL_TOLERANCE = 1e-6
"""How far above 1 a quadrature marginal (:func:`~simulator.plackett_luce.marginal_propensities`,
relative error below 1e-9) may come out before it is an error rather than rounding; within it, it
is set to 1."""


def _check_reward_name(reward: str) -> None:
    if reward not in REWARDS:
        raise ValueError(f"reward={reward!r} must be one of {', '.join(REWARDS)}")


def _reward(pages: LoggedPages, reward: str) -> np.ndarray:
    _check_reward_name(reward)
    if reward not in pages.impressions:
        raise ValueError(f"reward {reward!r} is not among the impressions' columns (read it with columns=)")
    return pages.impressions[reward].to_numpy(np.float64)


def _probability(name: str, p: np.ndarray) -> np.ndarray:
    """Quadrature probabilities in [0, 1]: rounding above 1 (at most MARGINAL_TOLERANCE) set to 1."""
    if (p > 1 + MARGINAL_TOLERANCE).any() or (p < 0).any():
        i = int(np.flatnonzero((p > 1 + MARGINAL_TOLERANCE) | (p < 0))[0])
        raise ValueError(f"{name} is {p[i]!r} at row {i}, outside [0, 1] by more than quadrature error")
    return np.minimum(p, 1.0)


def ope_data(pages: LoggedPages, target: str, temperature: float, reward: str, *,
             imputed: np.ndarray | None = None, imputed_target: np.ndarray | None = None,
             level: str = "impression",
             target_propensities: tuple[np.ndarray, np.ndarray] | None = None) -> OPEData:
    """The :class:`~estimators.OPEData` of shadow target ``target`` at ``temperature`` for ``reward``.

    Impression level, one row per logged impression: ``pscore`` the logging policy's marginal
    (the log's ``propensity_marginal``), ``action_dist`` the target's marginal of the same item at
    the same position, ``pscore_cascade`` / ``action_dist_cascade`` the conditionals given the
    logged items above, ``position``, and ``page_id`` = ``request_id``. Page level: the same,
    one row per logged page (:meth:`~estimators.OPEData.to_pages` with ``pad=True``: a page the
    user left early is padded with reward 0 and probability 1, exact for every slate estimator
    but SNRIPS, whose per-position normalisers then count the padded pages).

    Args:
        pages: :func:`logged_pages` of the logging bucket, read with the ``reward`` column.
        target: a shadow target (``pages.targets``).
        temperature: the target's Plackett-Luce temperature.
        reward: a column of :data:`REWARDS`.
        imputed, imputed_target: (n,) a reward model's arrays (:func:`imputed_rewards`), for the
            direct method and the doubly robust family; None leaves them out.
        level: ``"impression"`` or ``"page"``.
        target_propensities: the target's ``propensities(pages, target, temperature)`` if already
            computed (the quadrature is the costly part; one target serves several rewards).
    """
    if level not in ("impression", "page"):
        raise ValueError(f"level={level!r} must be 'impression' or 'page'")
    if target not in pages.targets:
        raise ValueError(f"target={target!r} is not a shadow target of these logs; they have: "
                         f"{', '.join(pages.targets) or 'none'}")
    r = _reward(pages, reward)
    frame = pages.impressions
    if {"propensity", "propensity_marginal"} <= set(frame.columns):
        cond = frame["propensity"].to_numpy(np.float64)
        marg = frame["propensity_marginal"].to_numpy(np.float64)
    else:
        cond, marg = propensities(pages)
    t_cond, t_marg = (target_propensities if target_propensities is not None
                      else propensities(pages, target, temperature))
    data = OPEData(reward=r, pscore=_probability("pscore", marg), action_dist=_probability("action_dist", t_marg),
                   pscore_cascade=cond, action_dist_cascade=_probability("action_dist_cascade", t_cond),
                   imputed=imputed, imputed_target=imputed_target,
                   position=frame["position"].to_numpy(np.int64), page_id=frame["request_id"].to_numpy(np.int64))
    return data if level == "impression" else data.to_pages(pad=True)


@dataclass
class ItemMeanReward:
    """A deliberately simple reward model: each item's mean reward, shrunk to the global mean.

    ``q_hat(item) = (sum of the item's rewards + m * global mean) / (its impressions + m)`` with
    ``m = prior_count`` pseudo-impressions; an item never seen gets the global mean. It knows
    nothing of the user or the position (the same prediction at every slot), so the direct method
    built on it is biased wherever the target's value depends on *who* is shown an item or
    *where*; the doubly robust estimators correct that bias with the importance weights. Fit it
    on logs other than the ones being evaluated (e.g. the pre-period), or DR's correction term
    and the model share the same noise.

    Args:
        prior_count: ``m``, pseudo-impressions at the global mean (>= 0).
    """
    prior_count: float = 20.0
    mean_: float = field(default=float("nan"), init=False)
    values_: np.ndarray | None = field(default=None, init=False, repr=False)   # (n_items_seen,)

    def fit(self, item_id: np.ndarray, reward: np.ndarray) -> Self:
        """Fit on (n,) item ids and their (n,) rewards."""
        if not (np.isfinite(self.prior_count) and self.prior_count >= 0):
            raise ValueError(f"prior_count={self.prior_count!r} must be >= 0")
        item_id, reward = np.asarray(item_id, np.int64), np.asarray(reward, np.float64)
        if item_id.shape != reward.shape or item_id.ndim != 1 or len(item_id) == 0:
            raise ValueError(f"item_id and reward must be non-empty 1-D arrays of one length, got shapes "
                             f"{item_id.shape} and {reward.shape}")
        if (item_id < 0).any() or not np.isfinite(reward).all():
            raise ValueError("item ids must be >= 0 and rewards finite")
        self.mean_ = float(reward.mean())
        total = np.bincount(item_id, weights=reward)
        count = np.bincount(item_id)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.values_ = (total + self.prior_count * self.mean_) / (count + self.prior_count)
        self.values_[count == 0] = self.mean_
        return self

    def predict(self, item_id: np.ndarray) -> np.ndarray:
        """q_hat of each item id (any shape)."""
        if self.values_ is None:
            raise RuntimeError("ItemMeanReward must be fitted before predict(); call fit() first")
        item_id = np.asarray(item_id, np.int64)
        known = item_id < len(self.values_)
        return np.where(known, self.values_[np.where(known, item_id, 0)], self.mean_)


def sample_pages(logits: np.ndarray, k: int, n_samples: int, rng: np.random.Generator,
                 *, chunk: int = 128) -> np.ndarray:
    """(R, M, k) column indices of ``M = n_samples`` Plackett-Luce pages per row of ``logits``.

    Gumbel top-k: the ``k`` largest of ``logits + Gumbel noise``, in order, is a Plackett-Luce
    draw of a ``k``-item page (as :func:`simulator.platform.rank_page` serves it).

    Args:
        logits: (R, C) log weights (:func:`~simulator.plackett_luce.log_weights`).
        k: items per page, <= C.
        n_samples: pages per row, >= 1.
        rng: the only source of randomness.
        chunk: rows per batch (bounds memory at ``chunk * M * C`` floats).
    """
    r, c = logits.shape
    if not 1 <= k <= c:
        raise ValueError(f"k={k} must be in [1, {c}] (the candidates per request)")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r} must be an integer >= 1")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out = np.empty((r, n_samples, k), dtype=np.int32)
    for start in range(0, r, chunk):
        keys = logits[start:start + chunk, None, :] + rng.gumbel(size=(min(chunk, r - start), n_samples, c))
        top = np.argpartition(-keys, k - 1, axis=2)[:, :, :k]                  # (b, M, k), unordered
        order = np.argsort(-np.take_along_axis(keys, top, axis=2), axis=2)
        out[start:start + chunk] = np.take_along_axis(top, order, axis=2)
    return out


def imputed_rewards(pages: LoggedPages, model: ItemMeanReward, target: str, temperature: float, *,
                    n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reward model's ``imputed`` and ``imputed_target`` for every logged impression.

    ``imputed`` is ``q_hat`` of the logged item. ``imputed_target`` of an impression at position
    ``j`` of request ``x`` is ``sum_a P_target(a at j | x) q_hat(a)``, the model's expected reward
    of the target's item at that slot. The target's marginals over every candidate have no cheap
    closed form (:mod:`simulator.plackett_luce`), so it is a Monte-Carlo mean over ``n_samples``
    target pages per request (:func:`sample_pages`, Gumbel top-k of the target's logits from its
    logged scores). Its error per impression is the returned ``mc_stderr`` (the sd of ``q_hat``
    at that slot over the samples / sqrt(M)); the samples of different requests are independent,
    so in a mean over N impressions of n_requests requests it shrinks roughly as
    ``mean(mc_stderr) / sqrt(n_requests)``, far below the estimators' own sampling error.

    Args:
        pages: :func:`logged_pages`.
        model: a fitted :class:`ItemMeanReward`.
        target: a shadow target (or ``"logging"``).
        temperature: the target's temperature.
        n_samples: target pages per request, >= 1.
        rng: the Monte-Carlo's only source of randomness.

    Returns:
        (n,) ``imputed``, (n,) ``imputed_target`` and (n,) its Monte-Carlo standard error.
    """
    if target not in pages.scores:
        raise ValueError(f"no scores of {target!r} in this run; it has: {', '.join(pages.scores)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    position = pages.impressions["position"].to_numpy(np.int64)
    k = int(position.max()) + 1
    sampled = sample_pages(log_weights(pages.scores[target], temperature), k, n_samples, rng)   # (R, M, k)
    q_cand = model.predict(pages.candidates)                                                   # (R, C)
    q_slot = q_cand[np.arange(len(q_cand))[:, None, None], sampled]                            # (R, M, k)
    at = q_slot[pages.row, :, position]                                                         # (n, M)
    se = at.std(axis=1, ddof=1) / np.sqrt(n_samples) if n_samples > 1 else np.full(len(at), np.nan)
    imputed = model.predict(pages.impressions["item_id"].to_numpy())
    return imputed, at.mean(axis=1), se


# --------------------------------------------------------------------------- ground truth from a run
def online_value(run_dir: str | Path, bucket: str, reward: str, *, days: Sequence[int],
                 level: str = "impression", alpha: float = 0.05) -> Estimate:
    """A bucket's value *online*: its mean reward per impression (or per page) over ``days``.

    ``sum of the users' rewards / sum of their impressions`` (pages: requests with at least one
    impression), a ratio of per-user sums with its delta-method interval
    (:func:`estimators.ratio_estimate`): users are the randomised unit, so the interval is
    clustered by user. Only users with an impression on those days count.
    """
    if level not in ("impression", "page"):
        raise ValueError(f"level={level!r} must be 'impression' or 'page'")
    _check_reward_name(reward)
    logs = read_impressions(Path(run_dir) / "logs", days=days, buckets=[bucket],
                            columns=["user_id", "request_id", reward])
    logs[reward] = logs[reward].astype(np.float64)
    per_user = logs.groupby("user_id").agg(total=(reward, "sum"), impressions=(reward, "size"),
                                          pages=("request_id", "nunique"))
    units = per_user["impressions" if level == "impression" else "pages"]
    return ratio_estimate(per_user["total"].to_numpy(), units.to_numpy(np.float64), alpha=alpha)


@dataclass(frozen=True)
class SatbedDataset:
    """One target, reward and level of a satbed run: the estimators' data and the truth.

    Attributes:
        target: the shadow bucket (its name in the run).
        policy, temperature: the target's registered policy and Plackett-Luce temperature.
        reward: the reward column (:data:`REWARDS`).
        level: ``"impression"`` (value per impression) or ``"page"`` (per page).
        data: the logging (control) bucket's experiment-day logs as seen by the target.
        truth: the target's value online, in its own bucket of the same run, over the same days
            (:func:`online_value`; its interval is the truth's own sampling error).
        logged: the control's own value, measured the same way (what the logs average).
        mc_stderr: mean Monte-Carlo error per row of ``imputed_target``.
    """
    target: str
    policy: str
    temperature: float
    reward: str
    level: str
    data: OPEData
    truth: Estimate
    logged: Estimate
    mc_stderr: float

    @property
    def pair(self) -> tuple[OPEData, float]:
        """``(data, truth.value)``, what :func:`estimators.check_estimator` takes."""
        return self.data, self.truth.value


def satbed_ope_datasets(run_dir: str | Path, rewards: Sequence[str] = ("watch_time",), *,
                        levels: Sequence[str] = ("impression",), n_samples: int = 32, seed: int = 0,
                        prior_count: float = 20.0, alpha: float = 0.05) -> list[SatbedDataset]:
    """Off-policy datasets with a known truth from a finished A/B run with shadow targets.

    The run (:func:`experiments.runner.run_experiment`) must log candidates
    (``world.platform.log_candidates``) and list its treatment buckets in ``shadow``, each served by
    a stochastic policy (a ``temperature`` in its params). For every shadow bucket, reward and
    level: the control's experiment-day impressions with the target's propensities
    (:func:`ope_data`), the reward model :class:`ItemMeanReward` fitted on the pre-period's logs and
    its arrays (:func:`imputed_rewards`), and the truth, the target bucket's own value online
    (:func:`online_value`). Under ``learning = "frozen"`` the shadow model is exactly the one that
    serves the target bucket; otherwise the buckets learn apart and the truth drifts from it.

    The truth is what a platform would see by shipping the target, which is not quite what a
    per-impression estimator estimates: the logs fix the sessions (who came back, how deep each
    user scrolled), and the target changes them. That gap is the point of comparing against it.

    Args:
        run_dir: the run's directory (its ``config.toml`` says the buckets and days).
        rewards: columns of :data:`REWARDS`.
        levels: ``"impression"`` and / or ``"page"``.
        n_samples: Monte-Carlo target pages per request for ``imputed_target``.
        seed: seed of the Monte-Carlo (one stream per target, spawned from it).
        prior_count: the reward model's pseudo-counts.
        alpha: 1 - the truth's confidence level.

    Returns:
        One dataset per (target, reward, level), in the run's shadow order, then rewards, then levels.
    """
    from simulator.config import from_dict, read_toml
    from experiments.config import ExperimentConfig
    run_dir = Path(run_dir)
    config = from_dict(ExperimentConfig, read_toml(run_dir / "config.toml"))
    if not config.shadow:
        raise ValueError(f"the run in {run_dir} has no shadow targets (ExperimentConfig.shadow)")
    for name in rewards:
        _check_reward_name(name)
    buckets = {b.name: b for b in config.buckets}
    temperature = {}
    for name in config.shadow:
        t = buckets[name].params.get("temperature")
        if t is None:
            raise ValueError(f"shadow bucket {name!r} ranks deterministically (no temperature in its params): "
                             "a deterministic target has no importance weight")
        temperature[name] = float(t)
    days = list(config.ab.experiment_days)
    pages = logged_pages(run_dir, bucket=config.control, days=days,
                         columns=["propensity", "propensity_marginal", *rewards])
    pre = read_impressions(run_dir / "logs", days=range(config.ab.pre_days), columns=["item_id", *rewards])
    models = {r: ItemMeanReward(prior_count).fit(pre["item_id"].to_numpy(), pre[r].to_numpy(np.float64))
              for r in rewards}
    streams = np.random.SeedSequence(seed).spawn(len(config.shadow))
    logged = {(r, lev): online_value(run_dir, config.control, r, days=days, level=lev, alpha=alpha)
              for r in rewards for lev in levels}
    out = []
    for name, stream in zip(config.shadow, streams):
        t = temperature[name]
        probs = propensities(pages, name, t)
        rng = np.random.default_rng(stream)
        for r in rewards:
            imputed, imputed_target, mc = imputed_rewards(pages, models[r], name, t, n_samples=n_samples, rng=rng)
            for lev in levels:
                data = ope_data(pages, name, t, r, imputed=imputed, imputed_target=imputed_target, level=lev,
                                target_propensities=probs)
                truth = online_value(run_dir, name, r, days=days, level=lev, alpha=alpha)
                out.append(SatbedDataset(name, buckets[name].policy, t, r, lev, data, truth, logged[(r, lev)],
                                         float(np.mean(mc))))
    return out


def bandit_feedback(pages: LoggedPages, reward: str, *, n_actions: int | None = None) -> dict[str, object]:
    """Open Bandit Pipeline's ``bandit_feedback`` dict of the logged impressions.

    One round per impression: ``action`` the item id, ``position``, ``reward`` and ``pscore`` the
    logging policy's marginal (``propensity_marginal``, what obp's position-based estimators divide
    by). No ``action_dist``: obp's (n_rounds, n_actions, len_list) array would hold every item of
    the catalogue at every position for every impression; the target's probability of the logged
    action is :func:`propensities`' marginal (pass it to obp's estimators as needed).

    Args:
        pages: :func:`logged_pages`, read with the ``reward`` column.
        reward: a column of :data:`REWARDS`.
        n_actions: the catalogue size; default the largest candidate id + 1.
    """
    r = _reward(pages, reward)
    frame = pages.impressions
    marg = (frame["propensity_marginal"].to_numpy(np.float64) if "propensity_marginal" in frame
            else propensities(pages)[1])
    n_actions = int(pages.candidates.max()) + 1 if n_actions is None else n_actions
    return to_bandit_feedback(n_actions=n_actions, action=frame["item_id"].to_numpy(np.int64), reward=r,
                              pscore=_probability("pscore", marg), position=frame["position"].to_numpy(np.int64))
