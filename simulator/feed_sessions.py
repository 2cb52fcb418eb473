"""Feed sessions served one page at a time: the gymnasium-free core of :mod:`simulator.gym_env`.

:func:`warm_start` runs the platform (``Platform.run``, the real SimPy day) for a few warm-up days
under a background policy, so that the feature store holds histories and popularity, and keeps
that state. :class:`FeedSessions` then serves ``n`` slots, each holding one user's session, on
a fresh :class:`~simulator.platform.Platform` restored from it: per step, the slots' pages go
through the platform's own ranking (``rank_page``) and user model (``Platform.consume``: watching,
feedback, quitting, questionnaires, fatigue, the feature store), and recall
(``Platform.recall``) draws each continuing user's next candidates. Nothing here re-implements
the user model; the env only decides which users are served, and when.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.config import SimConfig
from simulator.features import FeatureStore
from simulator.logs import columns_to_table
from simulator.platform import DAY_S, Bucket, Platform, RankedPages, rank_page
from simulator.questionnaire import DISSATISFIED_CODES, SATISFIED_CODES
from simulator.schema import (CATEGORIES, NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK, LogData, RankBatch, observe,
                              page_scores, strip_oracle)
from simulator.world import World


class UniformRanking:
    """The default warm-up policy: a uniformly random page (every score 0, Plackett-Luce at T = 1)."""
    name = "random"
    temperature = 1.0

    def score(self, batch: RankBatch) -> np.ndarray:
        return np.zeros(batch.candidates.shape)


@dataclass(frozen=True)
class _Agent:
    """What the platform's bucket and logs know of the agent that picks the pages."""
    name: str = "gym_agent"
    temperature: float | None = None


class _Capture:
    """Stands in for the LogWriter: keeps the last page batch's columns (all positions and the
    mask of the served ones) and, with ``keep_rows``, every served row."""

    def __init__(self, keep_rows: bool = False):
        self.keep_rows, self.rows, self.last = keep_rows, [], None

    def append(self, bucket: int, policy: str, keep: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        self.last = (keep, columns)
        if self.keep_rows:
            self.rows.append({name: np.asarray(col)[keep] for name, col in columns.items()})

    def append_candidates(self, bucket: int, policy: str, columns: dict[str, np.ndarray]) -> None:
        pass

    def flush_day(self, day: int) -> None:
        pass

    def log_data(self, world: World, policy: str) -> LogData:
        """The kept rows as observable LogData (as ``read_run(...).observable()`` would give)."""
        items, users = strip_oracle(world.catalog.table()), strip_oracle(world.users.table())
        if not self.rows:
            return LogData(pd.DataFrame(), items, users)
        merged = {name: np.concatenate([r[name] for r in self.rows]) for name in self.rows[0]}
        frame = columns_to_table(merged, bucket="warmup", policy=policy).to_pandas()
        for name in ("bucket", "policy", *CATEGORIES):
            if not isinstance(frame[name].dtype, pd.CategoricalDtype):
                frame[name] = frame[name].astype("category")
        return LogData(strip_oracle(frame), items, users)


@dataclass(frozen=True)
class WarmStart:
    """The platform's state after the warm-up: never changed, copied into each new platform."""
    world: World
    features: FeatureStore
    active: np.ndarray
    fatigue: np.ndarray
    recent_satisfaction: np.ndarray
    recent_questionnaires: np.ndarray
    interests: np.ndarray
    day: int
    logs: LogData
    """The warm-up's impressions, observable columns only (to fit a policy that acts in the env)."""


_WARM_CACHE: dict[tuple[SimConfig, int], WarmStart] = {}


def warm_start(config: SimConfig, days: int = 1, policy: object | None = None) -> WarmStart:
    """The world of ``config`` (the same world as ``satbed simulate`` with its seed) after ``days``
    days served by ``policy`` (default :class:`UniformRanking`); cached per (config, days) for the
    default policy, since every draw derives from ``config.seed``."""
    if days < 0:
        raise ValueError(f"warmup days={days} must be >= 0")
    key = (config, days)
    if policy is None and key in _WARM_CACHE:
        return _WARM_CACHE[key]
    # the streams of simulator.simulate.seed_streams: world, arrivals, policy, buckets
    world_seed, arrivals, _, buckets = np.random.SeedSequence(config.seed).spawn(4)
    world = World.generate(config, np.random.default_rng(world_seed))
    served = policy if policy is not None else UniformRanking()
    capture = _Capture(keep_rows=True)
    platform = Platform(world, [Bucket.from_seed("warmup", served, 0, buckets)],
                        np.zeros(world.users.n_users, dtype=np.int64), capture, arrivals)
    if days:
        platform.run(days)
    start = WarmStart(world, platform.features, platform.active.copy(), platform.fatigue.copy(),
                      platform.recent_satisfaction.copy(), platform.recent_questionnaires.copy(),
                      world.users.interests.copy(), days,
                      capture.log_data(world, served.name))
    if policy is None:
        while len(_WARM_CACHE) >= 4:
            _WARM_CACHE.pop(next(iter(_WARM_CACHE)))
        _WARM_CACHE[key] = start
    return start


@dataclass(frozen=True)
class PageOutcome:
    """One serving round: (B,) users, (B, k) pages (item ids), the (B, k) mask of the items the
    user reached, the platform's log columns reshaped to (B, k) (oracle ``true_*`` included),
    whether each session ended, and how many requested indices each page repeated."""
    users: np.ndarray
    pages: np.ndarray
    served: np.ndarray
    columns: dict[str, np.ndarray]
    ended: np.ndarray
    duplicates: np.ndarray

    def where_served(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.served, values, 0.0)


# rewards: (B, k) per item (0 where not served); the page reward is the sum over the page
def watch_time_reward(o: PageOutcome) -> np.ndarray:
    """Seconds watched."""
    return o.where_served(o.columns["watch_time"])


def effective_view_reward(o: PageOutcome) -> np.ndarray:
    """1 per effective view."""
    return o.where_served(o.columns["effective_view"])


def p2n_reward(o: PageOutcome) -> np.ndarray:
    """Explicit positive minus negative feedback events (P2N's numerator minus its denominator:
    the ratio itself is defined over a period, not per page)."""
    pos = sum(o.columns[c].astype(np.float64) for c in POSITIVE_FEEDBACK)
    neg = sum(o.columns[c].astype(np.float64) for c in NEGATIVE_FEEDBACK)
    return o.where_served(pos - neg)


def survey_reward(o: PageOutcome) -> np.ndarray:
    """+1 per questionnaire answered satisfied, -1 per one answered dissatisfied (schema's
    SATISFIED_ANSWERS / DISSATISFIED_ANSWERS: the feature store's satisfied / dissatisfied labels)."""
    answer = o.columns["survey_answer"]
    return o.where_served(np.isin(answer, SATISFIED_CODES).astype(np.float64) - np.isin(answer, DISSATISFIED_CODES))


REWARDS: dict[str, Callable[[PageOutcome], np.ndarray]] = {
    "watch_time": watch_time_reward, "effective_views": effective_view_reward, "p2n": p2n_reward,
    "survey": survey_reward}


def page_info(o: PageOutcome, item_rewards: np.ndarray) -> dict[str, np.ndarray]:
    """Per-page figures (B leading), observable and oracle (``oracle_*``: allowed in info only)."""
    c, served = o.columns, o.served
    n = served.sum(axis=1)
    answer = c["survey_answer"]
    p_sat = np.where(served, c["true_p_satisfied"], 0.0)            # 0 past the items the user reached
    return {
        "user_id": o.users.copy(), "page": o.pages.astype(np.int64), "served": n, "duplicates": o.duplicates,
        "item_rewards": item_rewards.astype(np.float64),
        "watch_time": o.where_served(c["watch_time"]).sum(axis=1),
        "effective_views": (served & c["effective_view"]).sum(axis=1),
        "positives": sum((served & c[f]).sum(axis=1) for f in POSITIVE_FEEDBACK),
        "negatives": sum((served & c[f]).sum(axis=1) for f in NEGATIVE_FEEDBACK),
        "survey_satisfied": (served & np.isin(answer, SATISFIED_CODES)).sum(axis=1),
        "survey_dissatisfied": (served & np.isin(answer, DISSATISFIED_CODES)).sum(axis=1),
        "oracle_satisfaction": p_sat.sum(axis=1) / np.maximum(n, 1),
        "oracle_satisfied": (served & c["true_satisfied"]).sum(axis=1),
        "oracle_p_satisfied": p_sat.astype(np.float64),
    }


class FeedSessions:
    """``n_slots`` concurrent sessions, one user each, on one platform restored from a warm start.

    Slots are served in lockstep: a round serves every given slot's page with one
    ``Platform.consume`` call at the clock's time, then the clock moves on by the longest time spent
    on a page (watching, and questionnaires with ``questionnaire.time_s``) plus ``platform.page_gap_s`` (rolling the platform's days over at midnight:
    ``finish_day`` / ``start_day``, so popularity decays and the questionnaire cap resets).
    """

    def __init__(self, start: WarmStart, n_slots: int, *, history_length: int = 20):
        cfg = start.world.config
        if not 1 <= n_slots <= start.world.users.n_users:
            raise ValueError(f"n_slots={n_slots} must be in [1, n_users={start.world.users.n_users}]")
        if not 1 <= history_length <= cfg.platform.history_length:
            raise ValueError(f"history_length={history_length} must be in [1, platform.history_length="
                             f"{cfg.platform.history_length}]")
        self.start, self.config, self.history_length = start, cfg, history_length
        self.page_size, self.n_candidates = cfg.platform.page_size, cfg.platform.n_candidates
        self.platform: Platform | None = None          # built by restart()
        self.bucket: Bucket | None = None
        self.users = np.full(n_slots, -1, dtype=np.int64)
        self.is_open = np.zeros(n_slots, dtype=bool)
        self.pages = np.zeros(n_slots, dtype=np.int64)     # pages served in each slot's session
        self.candidates = np.zeros((n_slots, self.n_candidates), dtype=np.int32)
        self._capture = _Capture()
        self.now = 0.0

    def restart(self, seed: np.random.SeedSequence) -> None:
        """A new platform in the warm-start state, its random streams drawn from ``seed``."""
        s = self.start
        world = s.world
        # interest and consumption drift move interests in place: each platform gets the warm start's copy
        if self.config.users.interest_drift > 0 or self.config.users.consumption_drift > 0:
            users = dataclasses.replace(s.world.users, interests=s.interests.copy())
            world = World(s.world.config, s.world.catalog, users)
        arrivals, streams = seed.spawn(2)
        self.bucket = Bucket.from_seed("gym", _Agent(), 0, streams)
        p = Platform(world, [self.bucket], np.zeros(world.users.n_users, dtype=np.int64), self._capture, arrivals,
                     features=copy.deepcopy(s.features), start_day=s.day)
        p.active[:], p.fatigue[:], p.recent_satisfaction[:] = s.active, s.fatigue, s.recent_satisfaction
        p.recent_questionnaires[:] = s.recent_questionnaires
        p.start_day(s.day)
        self.platform, self.now = p, s.day * DAY_S
        self.users[:], self.is_open[:], self.pages[:] = -1, False, 0

    def joined_users(self) -> np.ndarray:
        """Ids of the users who have joined by the platform's day (all of them without
        ``users.new_users_per_day``): the users a session may be opened for."""
        return np.flatnonzero(self.start.world.users.joined(self.platform.day))

    def open(self, slots: np.ndarray, users: np.ndarray) -> None:
        """Start a session for each of ``users`` (distinct, in no open slot, joined) in ``slots``."""
        users = np.asarray(users, dtype=np.int64)
        early = users[~self.start.world.users.joined(self.platform.day)[users]]
        if early.size:
            raise ValueError(f"user(s) {early.tolist()} join after day {self.platform.day} (the user table's "
                             "join_day): no session before it")
        self.close(slots)
        self.platform.open_sessions(users, self.now)
        self.platform.active_today[users] = True
        self.users[slots], self.is_open[slots], self.pages[slots] = users, True, 0
        self._recall(slots)

    def close(self, slots: np.ndarray) -> None:
        """End the sessions of ``slots`` that are still open (e.g. at a truncation)."""
        still = np.asarray(slots)[self.is_open[slots]]
        self.platform.in_session[self.users[still]] = False
        self.is_open[still] = False

    def batch(self, slots: np.ndarray) -> RankBatch:
        """The slots' pending requests, as a policy would be given them."""
        return RankBatch(self.users[slots].copy(), self.candidates[slots].copy(), self.now, self.platform.day,
                         self.platform.features)

    def observe(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return observe(self.batch(slots), self.history_length)

    def serve(self, slots: np.ndarray, actions: np.ndarray) -> PageOutcome:
        """Serve each slot the page of candidate indices ``actions`` (B, k) asks for."""
        slots = np.asarray(slots)
        if not self.is_open[slots].all():
            raise RuntimeError("a session has ended (terminated or truncated): reset it before stepping")
        actions = np.asarray(actions)
        k, p = self.page_size, self.platform
        if actions.shape != (len(slots), k):
            raise ValueError(f"expected actions of shape {(len(slots), k)} (page_size={k} candidate "
                             f"indices per page), got {actions.shape}")
        scores = page_scores(actions, self.n_candidates)
        positions, _ = rank_page(scores, k, None, self.bucket.rank_rng)     # top-k: no draw
        users = self.users[slots]
        pages = np.take_along_axis(self.candidates[slots], positions, axis=1)
        nan = np.full(pages.shape, np.nan)
        page_time = p.consume([RankedPages(self.bucket, users, pages, np.take_along_axis(scores, positions, axis=1),
                                           nan, nan)], self.now)
        keep, columns = self._capture.last
        served = keep.reshape(pages.shape)
        columns = {name: np.asarray(col).reshape(pages.shape) for name, col in columns.items()}
        ended = ~p.in_session[users]
        self.pages[slots] += 1
        self.is_open[slots] = ~ended
        self._advance(self.now + page_time.max() + self.config.platform.page_gap_s)
        live = slots[~ended]
        if live.size:
            self._recall(live)
        duplicates = k - np.array([len(np.unique(a)) for a in actions])
        return PageOutcome(users, pages, served, columns, ended, duplicates)

    def _recall(self, slots: np.ndarray) -> None:
        self.platform.features.begin_tick()
        self.candidates[slots] = self.platform.recall(self.users[slots], self.bucket.recall_rng)

    def _advance(self, t: float) -> None:
        p = self.platform
        while t >= (p.day + 1) * DAY_S:
            p.finish_day(p.day)
            p.start_day(p.day + 1)
            p.active_today[self.users[self.is_open]] = True
        self.now = t

