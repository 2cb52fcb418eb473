"""The SimPy platform: sessions, batched serving, watching, questionnaires and logging.

Per-user state lives in arrays (structure of arrays), not objects. SimPy drives time:

* ``day_process`` at each midnight flushes the finished day's logs and draws who comes back
  today (retention from recent satisfaction) and when their sessions start (diurnal);
* ``clock`` gathers every user whose next page is due, once per tick, hands the requests to each
  bucket's ranking service, waits until every service has ranked its pages, and then lets all
  the users of the tick watch their pages in one vectorised step (``consume``);
* ``ranking_service`` (one process per bucket) asks recall for candidates, scores them in batches
  of at most ``max_batch`` with one call of the bucket's policy, and ranks them.

Every request of a tick is ranked against the feature store as it was at the start of the tick,
whatever its bucket or batch: shared state (popularity counters, the feature store) is up to one
tick stale, as on a real platform, and no bucket sees another's events of the same tick. Each
bucket has its own random streams (ranking, behaviour, questionnaires, recall), drawn per batch
in a fixed order, so one arm's draws never shift another's, the order in which the buckets are
listed changes nothing, and watching all buckets' pages at once gives the same draws as watching
them batch by batch.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import simpy
from scipy.special import expit

from simulator.features import FeatureStore, ItemAttributes
from simulator.logs import LogWriter
from simulator.plackett_luce import conditional_propensities, log_weights, marginal_propensities
from simulator.questionnaire import DISSATISFIED_CODES, RESPONSE_DRAWS, SATISFIED_CODES, Engagement, \
    exposure_from_uniforms, exposure_probability, respond_from_uniforms
from simulator.recall import Recall
from simulator.schema import NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK, RankBatch
from simulator.world import BEHAVIOUR_DRAWS, World

DAY_S = 86400.0
# The world's knobs (diurnal profile, fatigue decay and carry, the satisfaction EMA, interest drift, consumption
# drift) are config fields: users.diurnal, users.fatigue_decay, users.session_fatigue_carry,
# behaviour.satisfaction_ema, users.interest_drift, users.consumption_drift.
DRIFT_STREAM_KEY = 0x6472696674   # spawn-key suffix of the interest-drift stream (far from real spawn indices)


@dataclass
class Bucket:
    """One arm: a name, its serving policy and its own random streams."""
    name: str
    policy: object
    index: int
    rank_rng: np.random.Generator
    behaviour_rng: np.random.Generator
    survey_rng: np.random.Generator
    recall_rng: np.random.Generator

    @classmethod
    def from_seed(cls, name: str, policy: object, index: int, seed: np.random.SeedSequence) -> Bucket:
        rank, behaviour, survey, recall = (np.random.default_rng(s) for s in seed.spawn(4))
        return cls(name, policy, index, rank, behaviour, survey, recall)


@dataclass(frozen=True)
class RankedPages:
    """One policy call's ranked pages, waiting to be watched: (B,) distinct users, (B, k) items,
    their scores and their logged propensities (conditional and, with ``log_candidates``,
    marginal), and with ``log_candidates`` the (B, C) candidates and their scores."""
    bucket: Bucket
    users: np.ndarray
    pages: np.ndarray
    scores: np.ndarray
    propensity: np.ndarray
    marginal: np.ndarray
    candidates: np.ndarray | None = None
    candidate_scores: np.ndarray | None = None
    shadow_scores: dict[str, np.ndarray] | None = None


def rank_page(scores: np.ndarray, k: int, temperature: float | None,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick k of C candidates per row: top-k, or a Plackett-Luce draw from softmax(score / T).

    Returns:
        (positions, propensity): (B, k) column indices into the candidates, and
        P(candidate at position j | those above it) under the ranking (NaN if deterministic).
    """
    b, c = scores.shape
    if temperature is None:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.full((b, k), np.nan)
    logits = log_weights(scores, temperature)
    keys = logits + rng.gumbel(size=logits.shape)       # Gumbel top-k = Plackett-Luce sample
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
    return top, conditional_propensities(logits, top)


def consumption_pull(interest: np.ndarray, topics: np.ndarray, satisfied: np.ndarray, rate: float) -> np.ndarray:
    """Consumption drift (``users.consumption_drift``): sub-interests pulled toward satisfying content.

    With n satisfying items on the page and m the mean of their topics, the interest closes a share
    ``rate`` of its gap to m per item, then is renormalised: ``unit((1 - rate)^n v + (1 - (1 - rate)^n) m)``
    (n convex steps toward m, one per item). A row with n = 0 keeps v; so does a row whose
    combination is the zero vector (opposite topics at ``rate`` = 1), having no direction to take.

    Args:
        interest: (B, d) unit sub-interest vectors v.
        topics: (B, k, d) topic vectors of the page's items.
        satisfied: (B, k) bool, the items the user reached and was satisfied with.
        rate: share of the gap closed per satisfying item, in [0, 1].
    Returns:
        (B, d) the moved unit vectors (float64).
    """
    n = satisfied.sum(axis=1)                                              # (B,)
    mean = np.einsum("bk,bkd->bd", satisfied.astype(np.float64), topics) / np.maximum(n, 1)[:, None]
    keep = (1.0 - rate) ** n                                               # (B,)
    moved = keep[:, None] * interest + (1.0 - keep)[:, None] * mean        # (B, d)
    norm = np.linalg.norm(moved, axis=1, keepdims=True)
    return np.where((n[:, None] > 0) & (norm > 1e-12), moved / np.maximum(norm, 1e-12), interest)


@dataclass(frozen=True)
class _Draws:
    """The uniforms of one tick, drawn per batch from its bucket's streams, in serving order."""
    behaviour: np.ndarray          # (B*k, BEHAVIOUR_DRAWS)
    quit: np.ndarray               # (B, k)
    show: np.ndarray               # (B, k)
    respond: np.ndarray            # (B*k, RESPONSE_DRAWS)

    @classmethod
    def take(cls, ranked: Sequence[RankedPages]) -> _Draws:
        behaviour, quit_, show, respond = [], [], [], []
        for r in ranked:
            n = r.pages.size
            behaviour.append(r.bucket.behaviour_rng.random((n, BEHAVIOUR_DRAWS)))
            quit_.append(r.bucket.behaviour_rng.random(r.pages.shape))
            show.append(r.bucket.survey_rng.random(r.pages.shape))
            respond.append(r.bucket.survey_rng.random((n, RESPONSE_DRAWS)))
        return cls(np.concatenate(behaviour), np.concatenate(quit_), np.concatenate(show), np.concatenate(respond))


@dataclass
class _Tick:
    """What :meth:`Platform.consume` works out for a tick's pages, step by step ((B, k) unless flat)."""
    users: np.ndarray              # (B,)
    pages: np.ndarray              # (B, k) item ids
    uu: np.ndarray = None          # (B*k,) user of each slot
    ii: np.ndarray = None          # (B*k,) item of each slot
    cat2: np.ndarray = None        # level-2 category of each slot
    j: np.ndarray = None           # (k,) positions
    fatigue: np.ndarray = None
    probs: object = None           # the world's probabilities (flat)
    beh: object = None             # the realised behaviour (flat)
    watch: np.ndarray = None
    satisfied: np.ndarray = None
    effective_view: np.ndarray = None
    offered: np.ndarray = None     # a questionnaire follows the slot if the user reaches it
    p_offer: np.ndarray = None     # its recorded P(show) (true_p_show) if the user reaches it
    spent: np.ndarray = None       # seconds at the slot: its watch time plus an offered questionnaire's time
    cum: np.ndarray = None         # cumulative time spent along the page
    ended: np.ndarray = None       # (B,) the session ends on this page
    served: np.ndarray = None      # the user reached the slot
    shown: np.ndarray = None       # a questionnaire was shown (offered and served)
    p_show: np.ndarray = None
    resp: object = None            # the questionnaire responses (flat)
    page_time: np.ndarray = None   # (B,) seconds spent on the page (served slots)


class Platform:
    """The simulated platform serving one or more buckets of users."""

    def __init__(self, world: World, buckets: Sequence[Bucket], assignment: np.ndarray,
                 log_writer: LogWriter, seed: np.random.SeedSequence, *,
                 on_day_end: Callable[[int], None] | None = None,
                 features: FeatureStore | None = None, start_day: int = 0):
        cfg = world.config
        self.world, self.config = world, cfg
        self.buckets = list(buckets)
        n_users = world.users.n_users
        assignment = np.asarray(assignment)
        if assignment.shape != (n_users,) or assignment.min() < 0 or assignment.max() >= len(self.buckets):
            raise ValueError(f"assignment must be an array of {n_users} bucket indices in "
                             f"[0, {len(self.buckets)}), got shape {assignment.shape}")
        self.assignment = assignment
        self._shadow: dict[int, dict[str, object]] = {}          # bucket index -> shadow targets
        self.log = log_writer
        self.on_day_end = on_day_end
        cat = world.catalog
        self.features = features or FeatureStore(
            n_users, ItemAttributes(cat.l1, cat.l2, cat.leaf, cat.author, cat.duration, cat.release_day),
            n_leaves=cfg.catalog.n_leaves, history_length=cfg.platform.history_length,
            popularity_decay=cfg.platform.popularity_decay, leaf_click_decay=cfg.platform.leaf_click_decay)
        self.recall = Recall(cfg.platform, self.features)
        self.arrival_rng = np.random.default_rng(seed)
        diurnal = np.asarray(cfg.users.diurnal, dtype=float)
        self._hour_p = diurnal / diurnal.sum()
        # interest drift has its own stream, derived from the arrival seed without spawning from it
        # (which would shift the caller's later spawns); none exists, and nothing is drawn, when off
        self.drift_rng = None
        if cfg.users.interest_drift > 0:
            root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
            self.drift_rng = np.random.default_rng(np.random.SeedSequence(
                root.entropy, spawn_key=(*root.spawn_key, DRIFT_STREAM_KEY)))
        self.first_day = start_day
        # per-user state, structure of arrays
        self.in_session = np.zeros(n_users, dtype=bool)
        self.next_due = np.full(n_users, np.inf)
        self.session_id = np.full(n_users, -1, dtype=np.int64)
        self.session_budget = np.zeros(n_users)
        self.session_elapsed = np.zeros(n_users)
        self.session_items = np.zeros(n_users, dtype=np.int64)   # items watched so far in the session
        self.active = self.arrival_rng.integers(0, cfg.users.n_interests, n_users)
        self.fatigue = np.zeros((n_users, cfg.catalog.n_l1 * cfg.catalog.n_l2))   # per level-2 category
        self.recent_satisfaction = np.full(n_users, 0.5)
        self.shown_today = np.zeros(n_users, dtype=np.int64)
        # questionnaires shown recently, decayed by questionnaire.response_fatigue_decay per day
        self.recent_questionnaires = np.zeros(n_users)
        self.active_today = np.zeros(n_users, dtype=bool)
        self.days_away = np.zeros(n_users, dtype=np.int64)   # days since the last active day (1 = yesterday)
        self.p_return = np.zeros(n_users)                    # today's P(return), set by start_day
        self.day = start_day
        self._pending_t = np.empty(0)
        self._pending_u = np.empty(0, dtype=np.int64)
        self._pending_i = 0
        self._next_session = 0
        self._next_request = 0
        self._position_buffer = np.empty(0, dtype=np.int8)   # see _positions
        self.env = simpy.Environment(initial_time=start_day * DAY_S)
        self._stores = [simpy.Store(self.env) for _ in self.buckets]
        self._started = False

    def set_shadow(self, bucket: str, targets: dict[str, object]) -> None:
        """Score every request of ``bucket`` with each of ``targets`` too (policies that serve
        nothing) and log their scores next to the candidates (``candidates`` column
        ``target_<name>``), so off-policy estimators get each target's exact distribution over the
        logged requests. Needs ``platform.log_candidates``; call it when ``bucket`` exists."""
        if not self.config.platform.log_candidates:
            raise ValueError("shadow targets need platform.log_candidates = true (their scores are logged "
                             "with the candidates)")
        names = [b.name for b in self.buckets]
        if bucket not in names:
            raise ValueError(f"bucket {bucket!r} is not one of the platform's buckets: {', '.join(names)}")
        for name in targets:
            if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
                raise ValueError(f"shadow target name {name!r} must be letters, digits, '_' or '-'")
        self._shadow = {names.index(bucket): dict(targets)}

    def set_buckets(self, buckets: Sequence[Bucket], assignment: np.ndarray) -> None:
        """Switch the arms (e.g. from the pre-period to the experiment) between two serving rounds.

        Call it from ``on_day_end``; the new buckets' ranking services start at once.
        """
        assignment = np.asarray(assignment)
        n_users = self.world.users.n_users
        if assignment.shape != (n_users,) or assignment.min() < 0 or assignment.max() >= len(buckets):
            raise ValueError(f"assignment must be an array of {n_users} bucket indices in "
                             f"[0, {len(buckets)}), got shape {assignment.shape}")
        self.buckets, self.assignment = list(buckets), assignment
        self._shadow = {}
        self._stores = [simpy.Store(self.env) for _ in self.buckets]
        if self._started:
            for bucket, store in zip(self.buckets, self._stores):
                self.env.process(self.ranking_service(self.env, bucket, store))

    def add_process(self, make: Callable[[simpy.Environment], object]) -> None:
        """Start an extra SimPy process (a generator ``make(env)``), e.g. online policy updates."""
        self.env.process(make(self.env))

    # ------------------------------------------------------------------ processes
    def run(self, days: int, progress: Callable[[int], None] | None = None) -> None:
        """Simulate ``days`` days from the start day; logs of each day are flushed at its end."""
        if days < 1:
            raise ValueError(f"days={days} must be >= 1")
        if self._started:
            raise RuntimeError("Platform.run can be called once; switch buckets with set_buckets()")
        self._started = True
        end = (self.first_day + days) * DAY_S
        self.env.process(self.day_process(self.env, progress))
        self.env.process(self.clock(self.env))
        for bucket, store in zip(self.buckets, self._stores):
            self.env.process(self.ranking_service(self.env, bucket, store))
        self.env.run(until=end)
        self.finish_day(self.day)
        if progress:
            progress(self.day)

    def day_process(self, env: simpy.Environment, progress: Callable[[int], None] | None):
        self.start_day(self.first_day)
        while True:
            yield env.timeout(DAY_S)
            self.finish_day(self.day)
            if progress:
                progress(self.day)
            self.start_day(self.day + 1)

    def clock(self, env: simpy.Environment):
        tick = self.config.platform.tick_s
        while True:
            now = env.now
            self.start_sessions(now)
            due = np.flatnonzero(self.in_session & (self.next_due <= now))
            wait = max(tick, self.next_wakeup(now) - now)
            if due.size:
                self.features.begin_tick()
                arm = self.assignment[due]
                ranked = []
                for b, store in enumerate(self._stores):
                    users = due[arm == b]
                    if users.size:
                        done = env.event()
                        store.put((users, done))
                        ranked.append(done)
                yield env.all_of(ranked)
                self.consume([pages for done in ranked for pages in done.value], now)
            yield env.timeout(wait)

    def ranking_service(self, env: simpy.Environment, bucket: Bucket, store: simpy.Store):
        """Rank each tick's requests of the bucket in policy calls of at most ``max_batch``."""
        max_batch = self.config.platform.max_batch
        while True:
            users, done = yield store.get()
            done.succeed([self.serve(bucket, users[start:start + max_batch], env.now)
                          for start in range(0, len(users), max_batch)])

    # ------------------------------------------------------------------ days and sessions
    def start_day(self, day: int) -> None:
        """Draw who returns today and when their sessions start; release the day's new items and
        admit its new users (``catalog.new_items_per_day``, ``users.new_users_per_day``)."""
        cfg, rng = self.config, self.arrival_rng
        n = self.world.users.n_users
        b = cfg.behaviour
        self.day = day
        self.shown_today[:] = 0
        self.recent_questionnaires *= cfg.questionnaire.response_fatigue_decay
        self.days_away = np.where(self.active_today, 1, self.days_away + 1)
        if b.away_satisfaction_drift:      # the state of yesterday's absent users fades toward 0.5
            away = ~self.active_today
            self.recent_satisfaction[away] += b.away_satisfaction_drift * (0.5 - self.recent_satisfaction[away])
        self.p_return = self.return_probability()
        self.active_today = rng.random(n) < self.p_return
        self.active_today = self.world.users.present(self.active_today, day)     # none before joining
        self.features.start_day(day)
        sessions = rng.poisson(self.mean_sessions())
        sessions = np.where(self.active_today, np.maximum(sessions, 1), 0)
        users = np.repeat(np.arange(n), sessions)
        hour = rng.choice(24, size=len(users), p=self._hour_p)
        t = day * DAY_S + (hour + rng.random(len(users))) * 3600.0
        order = np.argsort(t, kind="stable")
        self._pending_t, self._pending_u, self._pending_i = t[order], users[order], 0

    def return_probability(self) -> np.ndarray:
        """P(each user comes back today): the logistic of the return logit, a discrete-time hazard of
        the return point process. It rises with recent satisfaction (``behaviour.return_satisfaction``)
        and, if set, with the user's activity (``return_activity``) and falls with the days since the
        last active day (``return_days_away`` < 0), so gaps are not geometric: the longer a user has
        been away, the less likely they come back the next day."""
        b, users = self.config.behaviour, self.world.users
        logit_ = b.return_bias + b.return_satisfaction * (self.recent_satisfaction - 0.5)
        if b.return_activity:
            logit_ = logit_ + b.return_activity * np.log(users.activity / self.config.users.activity_mean)
        if b.return_days_away:
            logit_ = logit_ + b.return_days_away * np.log(self.days_away)
        return expit(logit_)

    def mean_sessions(self) -> np.ndarray:
        """Each user's mean sessions if active today (Poisson, at least one is drawn): the user's
        activity, scaled by exp(``behaviour.session_satisfaction`` * (recent satisfaction - 0.5))."""
        b, activity = self.config.behaviour, self.world.users.activity
        if not b.session_satisfaction:
            return activity
        return activity * np.exp(b.session_satisfaction * (self.recent_satisfaction - 0.5))

    def finish_day(self, day: int) -> None:
        self.log.flush_day(day)
        self.features.end_day(np.flatnonzero(self.active_today))
        if self.on_day_end:
            self.on_day_end(day)

    def start_sessions(self, now: float) -> None:
        """Start the sessions whose start time has come; a user already in a session skips it."""
        end = np.searchsorted(self._pending_t, now, side="right")
        if end <= self._pending_i:
            return
        users = np.unique(self._pending_u[self._pending_i:end])
        self._pending_i = end
        self.open_sessions(users[~self.in_session[users]], now)

    def open_sessions(self, users: np.ndarray, now: float) -> None:
        """Open a session at ``now`` for each of ``users`` (distinct): a time budget, the carried-in
        category fatigue, a possible switch of the active sub-interest and (if on) interest drift,
        drawn from the arrival stream in this order. :meth:`start_sessions` calls it for the due
        sessions; :mod:`simulator.gym_env` calls it for the sessions it serves step by step."""
        if not users.size:
            return
        cfg, rng = self.config, self.arrival_rng
        n = len(users)
        self.in_session[users] = True
        self.next_due[users] = now
        self.session_id[users] = self._next_session + np.arange(n)
        self._next_session += n
        self.session_elapsed[users] = 0.0
        self.session_items[users] = 0
        self.session_budget[users] = self.world.users.patience[users] * np.exp(
            cfg.users.patience_sigma * rng.standard_normal(n))
        self.fatigue[users] *= cfg.users.session_fatigue_carry
        switch = rng.random(n) < cfg.users.interest_switch_prob
        cum = np.cumsum(self.world.users.weights[users], axis=1)
        drawn = (rng.random((n, 1)) > cum).sum(axis=1)
        self.active[users] = np.where(switch, np.minimum(drawn, cum.shape[1] - 1), self.active[users])
        if self.drift_rng is not None:
            self.drift_interests(users, self.drift_rng)

    def drift_interests(self, users: np.ndarray, rng: np.random.Generator) -> None:
        """Interest drift (``users.interest_drift`` > 0), at each session start: every sub-interest
        vector of the starting users takes a random-walk step of noise norm about ``interest_drift``
        and is renormalised.

        The world's interest vectors change in place, so the ground truth (and the oracle, which
        reads it) follows the users' current interests; policies see the drift only through
        behaviour. The (user-table) traits do not change.
        """
        interests = self.world.users.interests                    # (U, K, d)
        _, k, d = interests.shape
        step = self.config.users.interest_drift / np.sqrt(d) * rng.standard_normal((len(users), k, d))
        moved = interests[users] + step                             # (n, K, d)
        interests[users] = moved / np.linalg.norm(moved, axis=-1, keepdims=True)

    def next_wakeup(self, now: float) -> float:
        nxt = (np.floor(now / DAY_S) + 1) * DAY_S
        if self._pending_i < len(self._pending_t):
            nxt = min(nxt, self._pending_t[self._pending_i])
        if self.in_session.any():
            nxt = min(nxt, self.next_due[self.in_session].min())
        return nxt

    # ------------------------------------------------------------------ serving
    @staticmethod
    @functools.cache
    def _fatigue_kernel(k: int, fatigue_decay: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, the (k, k) decay of item j' seen before item j (0 unless j' < j), and the
        decay of the carried-in fatigue at each position."""
        j = np.arange(k)
        lag = j[:, None] - 1 - j[None, :]                                # items between j' and j
        decay = np.where(lag >= 0, fatigue_decay ** np.maximum(lag, 0), 0.0)
        return j, decay, fatigue_decay ** j

    def _log_candidates(self, ranked: Sequence[RankedPages], request: np.ndarray, now: float) -> None:
        """One row per request: its candidates, the logging policy's scores and temperature
        (``platform.log_candidates``), enough to recompute the logging distribution exactly."""
        row = 0
        for r in ranked:
            n = len(r.users)
            temperature = r.bucket.policy.temperature
            self.log.append_candidates(r.bucket.index, r.bucket.policy.name, {
                "day": np.full(n, self.day, dtype=np.int16), "ts": np.full(n, now), "user_id": r.users,
                "request_id": request[row:row + n], "temperature": np.full(n, np.nan if temperature is None
                                                                           else float(temperature)),
                "candidates": r.candidates, "scores": r.candidate_scores,
                **{f"target_{name}": v for name, v in (r.shadow_scores or {}).items()}})
            row += n

    def _positions(self, k: int, n: int) -> np.ndarray:
        """Page positions 0..k-1 repeated for n pages: a read-only view of one buffer, grown
        (doubled) when a tick has more pages than any before, and shared by the log chunks."""
        if len(self._position_buffer) < n * k:
            self._position_buffer = np.tile(np.arange(k, dtype=np.int8), max(n, 2 * len(self._position_buffer) // k))
            self._position_buffer.flags.writeable = False
        return self._position_buffer[:n * k]

    def serve(self, bucket: Bucket, users: np.ndarray, now: float) -> RankedPages:
        """Recall, score in one policy call and rank: the pages the users will watch."""
        cfg = self.config.platform
        cands = self.recall(users, bucket.recall_rng)
        batch = RankBatch(user_ids=users, candidates=cands, ts=now, day=self.day, features=self.features)
        scores = self._check_scores(bucket.policy, np.asarray(bucket.policy.score(batch), dtype=np.float64), cands)
        temperature = bucket.policy.temperature
        pos, propensity = rank_page(scores, cfg.page_size, temperature, bucket.rank_rng)
        pages, page_scores = np.take_along_axis(cands, pos, axis=1), np.take_along_axis(scores, pos, axis=1)
        if not cfg.log_candidates:
            return RankedPages(bucket, users, pages, page_scores, propensity, np.full(pos.shape, np.nan))
        marginal = (np.full(pos.shape, np.nan) if temperature is None
                    else marginal_propensities(log_weights(scores, temperature), pos))
        shadow = {name: self._check_scores(target, np.asarray(target.score(batch), dtype=np.float64), cands)
                  for name, target in self._shadow.get(bucket.index, {}).items()}
        return RankedPages(bucket, users, pages, page_scores, propensity, marginal, cands, scores, shadow)

    @staticmethod
    def _check_scores(policy, scores: np.ndarray, cands: np.ndarray) -> np.ndarray:
        if scores.shape != cands.shape:
            raise ValueError(f"policy {policy.name!r} returned scores of shape {scores.shape}, "
                             f"expected {cands.shape}")
        if not np.isfinite(scores).all():
            raise ValueError(f"policy {policy.name!r} returned non-finite scores")
        return scores

    def _engagement(self, beh, items: np.ndarray, users: np.ndarray, j: np.ndarray) -> Engagement:
        """The observable inputs of the response model's engagement part, per impression (B*k)."""
        if not self.config.questionnaire.engagement_on:
            return Engagement.none(len(items))
        feedback = sum(getattr(beh, c).astype(np.int64) for c in (*POSITIVE_FEEDBACK, *NEGATIVE_FEEDBACK))
        depth = (self.session_items[users][:, None] + j[None, :]).ravel()
        return Engagement(np.clip(beh.watch_time / self.world.catalog.duration[items], 0.0, 1.0), feedback, depth)

    def consume(self, ranked: Sequence[RankedPages], now: float) -> np.ndarray:
        """Users watch their pages in order; everything happens in arrays over all pages of the tick.

        The random draws are taken per batch from its bucket's streams, in the order a batch-by-batch
        loop would take them, so the outcome does not depend on how batches are grouped here.

        Returns:
            (B,) seconds each user spent on their page (watching, and questionnaires with
            ``questionnaire.time_s``), in the order of ``ranked``'s users.
        """
        tick = _Tick(users=np.concatenate([r.users for r in ranked]), pages=np.concatenate([r.pages for r in ranked]))
        draws = _Draws.take(ranked)
        self._watch(tick, draws)
        self._offer(tick, draws)
        self._quit(tick, draws)
        self._questionnaires(tick, draws)
        self._update_state(tick, now)
        self._record(ranked, tick, now)
        return tick.page_time

    def _watch(self, t: _Tick, draws: _Draws) -> None:
        """Category fatigue along the page, then the ground-truth probabilities and behaviour."""
        world, decay_rate = self.world, self.config.users.fatigue_decay
        b, k = t.pages.shape
        t.uu, t.ii, t.cat2 = np.repeat(t.users, k), t.pages.ravel(), world.catalog.l2[t.pages]
        # fatigue: same-category items seen before, each decayed by users.fatigue_decay per later item
        t.j, decay, carry = self._fatigue_kernel(k, decay_rate)
        same = t.cat2[:, :, None] == t.cat2[:, None, :]                        # (B, k, k)
        t.fatigue = self.fatigue[t.users[:, None], t.cat2] * carry + (same * decay).sum(axis=2)
        t.probs = world.probabilities(t.uu, t.ii, self.active[t.uu], t.fatigue.ravel())
        t.beh = world.behaviour_from_uniforms(t.ii, t.probs, draws.behaviour)
        t.watch = t.beh.watch_time.reshape(b, k)                               # (B, k)
        t.satisfied = t.beh.satisfied.reshape(b, k)
        t.effective_view = t.beh.effective_view.reshape(b, k)

    def _offer(self, t: _Tick, draws: _Draws) -> None:
        """Exposure: the slots a questionnaire would follow if the user reaches them. Where the
        session ends is drawn next (a questionnaire's time and quit chance are part of it); the
        served slots then keep their draws, which are those of exposure among the served slots,
        since the served slots are a prefix of the page and one per page means the first hit."""
        q, (b, k) = self.config.questionnaire, t.pages.shape
        eligible = np.broadcast_to((self.shown_today[t.users] < q.per_user_daily_cap)[:, None], (b, k))
        if q.after_effective_view_only:
            eligible = eligible & t.effective_view
        p_show = exposure_probability(q, t.uu, t.ii, self.features).reshape(b, k)
        t.offered, t.p_offer = exposure_from_uniforms(p_show, eligible, draws.show, one_per_page=q.one_per_page)

    def _quit(self, t: _Tick, draws: _Draws) -> None:
        """Quitting after an item: a dissatisfaction / fatigue hazard, the chance that the
        questionnaire after it ends the session (``questionnaire.quit_prob``), or the time budget
        runs out (watch time and questionnaire time)."""
        bc, q, k = self.config.behaviour, self.config.questionnaire, t.pages.shape[1]
        p_quit = expit(bc.quit_bias + bc.quit_dissatisfied * ~t.satisfied + bc.quit_fatigue * t.fatigue)
        if q.quit_prob:           # one uniform per slot: P(quit) = 1 - (1 - p_quit) * (1 - quit_prob)
            p_quit = np.where(t.offered, p_quit + q.quit_prob * (1.0 - p_quit), p_quit)
        t.spent = t.watch + q.time_s * t.offered if q.time_s else t.watch
        t.cum = np.cumsum(t.spent, axis=1)
        stop = (draws.quit < p_quit) | \
            (self.session_elapsed[t.users, None] + t.cum >= self.session_budget[t.users, None])
        t.ended = stop.any(axis=1)
        last = np.where(t.ended, stop.argmax(axis=1), k - 1)
        t.served = t.j[None, :] <= last[:, None]                              # (B, k)

    def _questionnaires(self, t: _Tick, draws: _Draws) -> None:
        """The questionnaires of the served slots (exposure) and who answers what (response)."""
        q = self.config.questionnaire
        t.shown, t.p_show = t.offered & t.served, np.where(t.served, t.p_offer, 0.0)
        recent = 0.0
        if q.response_fatigue:    # shown before the page, plus those earlier on it (one_per_page = false)
            recent = (self.recent_questionnaires[t.users, None] + np.cumsum(t.shown, axis=1) - t.shown).ravel()
        pop = self.world.users
        t.resp = respond_from_uniforms(
            q, t.shown.ravel(), willingness=pop.willingness[t.uu], random_responder=pop.random_responder[t.uu],
            satisfied=t.beh.satisfied, p_satisfied=t.probs.p_satisfied, issue_types=t.beh.issue_types,
            engagement=self._engagement(t.beh, t.ii, t.users, t.j), recent=recent, u=draws.respond)

    def _update_state(self, t: _Tick, now: float) -> None:
        """Session time and items, questionnaires today and recently, fatigue, recent satisfaction, next
        request, and (``users.consumption_drift`` > 0) the active sub-interest pulled toward the page's
        satisfying items (:func:`consumption_pull`, in place like ``drift_interests``; no draw)."""
        users, served, (b, k) = t.users, t.served, t.pages.shape
        decay_rate, bc = self.config.users.fatigue_decay, self.config.behaviour
        t.page_time = page_time = np.where(served, t.spent, 0.0).sum(axis=1)
        self.session_elapsed[users] += page_time
        n_served = served.sum(axis=1)
        self.session_items[users] += n_served
        self.shown_today[users] += t.shown.sum(axis=1)
        self.recent_questionnaires[users] += t.shown.sum(axis=1)
        # carry fatigue past the served items: decay by the page length, add each item decayed
        weight = np.where(served, decay_rate ** np.maximum(n_served[:, None] - 1 - t.j[None, :], 0), 0.0)
        counts = np.zeros((b, self.fatigue.shape[1]))
        np.add.at(counts, (np.repeat(np.arange(b), k), t.cat2.ravel()), weight.ravel())
        self.fatigue[users] = self.fatigue[users] * decay_rate ** n_served[:, None] + counts
        page_sat = np.where(served, t.satisfied, False).sum(axis=1) / n_served
        self.recent_satisfaction[users] += bc.satisfaction_ema * (page_sat - self.recent_satisfaction[users])
        self.next_due[users] = np.where(t.ended, np.inf, now + page_time + self.config.platform.page_gap_s)
        self.in_session[users[t.ended]] = False
        rate = self.config.users.consumption_drift
        if rate > 0:              # users are distinct within a tick: one write per (user, active sub-interest)
            liked = served & t.satisfied                                       # (B, k)
            pulled = liked.any(axis=1)
            who, active = users[pulled], self.active[users[pulled]]
            interests = self.world.users.interests                            # (U, K, d)
            interests[who, active] = consumption_pull(interests[who, active], self.world.catalog.topic[t.pages[pulled]],
                                                      liked[pulled], rate)

    def _record(self, ranked: Sequence[RankedPages], t: _Tick, now: float) -> None:
        """Observable events into the feature store; everything, oracle columns included, into the logs."""
        b, k = t.pages.shape
        beh, probs, resp = t.beh, t.probs, t.resp
        answer = resp.answer.reshape(b, k)
        self.features.record_pages(
            t.users, t.pages, served=t.served, effective_view=t.effective_view, skip=beh.skip.reshape(b, k),
            like=beh.like.reshape(b, k), survey_satisfied=np.isin(answer, SATISFIED_CODES),
            survey_dissatisfied=np.isin(answer, DISSATISFIED_CODES),
            survey_submitted=resp.submitted.reshape(b, k))
        start = (t.cum - t.spent).ravel()
        request = self._next_request + np.arange(b)
        self._next_request += b
        uu, ii = t.uu, t.ii
        # full (B*k) arrays; the writer drops the unserved rows once per day, in bulk
        columns = {
            "day": np.full(b * k, self.day, dtype=np.int16), "ts": now + start, "user_id": uu, "item_id": ii,
            "session_id": self.session_id[uu], "request_id": np.repeat(request, k),
            "position": self._positions(k, b), "score": np.concatenate([r.scores for r in ranked]).ravel(),
            "propensity": np.concatenate([r.propensity for r in ranked]).ravel(),
            "propensity_marginal": np.concatenate([r.marginal for r in ranked]).ravel(),
            "watch_time": beh.watch_time, "duration": self.world.catalog.duration[ii],
            "effective_view": beh.effective_view, "skip": beh.skip, "like": beh.like, "share": beh.share,
            "comment": beh.comment, "follow": beh.follow, "dislike": beh.dislike, "report": beh.report,
            "survey_shown": t.shown.ravel(), "survey_type": resp.survey_type,
            "survey_submitted": resp.submitted, "survey_answer": resp.answer, "survey_reasons": resp.reasons,
            "true_p_satisfied": probs.p_satisfied, "true_satisfied": beh.satisfied,
            "true_interest": probs.interest, "true_active_interest": probs.active_interest,
            "true_fatigue": probs.fatigue, "true_p_skip": probs.p_skip,
            "true_p_effective_view": probs.p_effective_view,
            "true_expected_watch_time": probs.expected_watch_time, "true_p_issue": probs.p_issue,
            "true_issue": beh.issue, "true_p_like": beh.p_like, "true_p_share": beh.p_share,
            "true_p_comment": beh.p_comment, "true_p_follow": beh.p_follow,
            "true_p_dislike": beh.p_dislike, "true_p_report": beh.p_report,
            "true_p_show": t.p_show.ravel(), "true_p_submit": resp.p_submit,
        }
        m = t.served.ravel()
        if self.config.platform.log_candidates:
            self._log_candidates(ranked, request, now)
        if len(ranked) == 1:
            self.log.append(ranked[0].bucket.index, ranked[0].bucket.policy.name, m, columns)
            return
        row = 0
        for r in ranked:     # one log chunk per batch, in serving order
            rows = slice(row * k, (row + len(r.users)) * k)
            row += len(r.users)
            self.log.append(r.bucket.index, r.bucket.policy.name, m[rows],
                            {name: col[rows] for name, col in columns.items()})
