"""A Gymnasium environment over satbed's world and platform: ``satbed/Feed-v0``.

Importing this module registers the id (``import simulator`` alone does not import gymnasium)::

    import gymnasium as gym
    import simulator.gym_env  # noqa: F401  (or gym.make("simulator.gym_env:satbed/Feed-v0"))
    env = gym.make("satbed/Feed-v0", reward="effective_views")
    envs = gym.make_vec("satbed/Feed-v0", num_envs=16)       # FeedVectorEnv: one platform

**Episode**: one user's session. ``reset`` opens a session for a user drawn uniformly (or
``options={"user_id": u}``); each ``step`` serves one page; the episode *terminates* when the
user quits or their time budget runs out (the platform's own quit model) and is *truncated*
after ``max_pages`` pages. ``reset(seed=s)`` restores the platform to its state after the
warm-up (:func:`simulator.feed_sessions.warm_start`: ``warmup_days`` days of the real SimPy
platform under a random policy, derived from ``config.seed`` only) with random streams drawn
from ``s``, so a seed gives the same episode; ``reset()`` without a seed keeps the platform, so
the feature store, popularity and users' fatigue carry over from episode to episode.

**Observation** (``Dict``): what a policy's :class:`~simulator.schema.RankBatch` shows, encoded
by :func:`simulator.observation.observe`: ``user`` (8 features), ``candidates`` (C x 14),
``candidate_ids`` (C), ``candidate_categories`` (C x 4: l1, l2, leaf, author) and ``history``
(the latest effective views). No oracle value and no hidden trait (interests, fatigue,
budget, quality) is in it. The observation returned with ``terminated`` shows the user's
updated features against the last page's candidates (no request follows it).

**Action** (``MultiDiscrete([C] * k)``): the page, as k candidate indices in page order. A
repeated index counts at its first position; the page is filled up at the end with the
lowest-numbered candidates not on it (:func:`simulator.observation.page_scores`);
``info["duplicates"]`` counts the repeats.

**Reward** (``reward=``): ``"watch_time"`` (seconds), ``"effective_views"``, ``"p2n"``
(positive minus negative explicit feedback), ``"survey"`` (+1 questionnaire answered satisfied,
-1 dissatisfied), or a callable ``PageOutcome -> (B, k)`` per-item rewards; the reward is the
sum over the served items. ``info`` has the page's figures, the per-item rewards and the oracle
satisfaction of the served items (``oracle_satisfaction``, ``oracle_satisfied``,
``oracle_p_satisfied``).

**Vector form**: :class:`FeedVectorEnv` serves ``num_envs`` concurrent sessions of distinct users
on one shared platform, in lockstep, with one ``Platform.consume`` per step (the platform's
batched path). The users share popularity and the feature store as real users do, so the
sub-environments are not independent copies (``gym.make_vec(..., vectorization_mode="sync")``
gives independent copies, one platform each). Autoreset is ``NEXT_STEP``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simulator.config import SimConfig
from simulator.feed_sessions import REWARDS, FeedSessions, PageOutcome, page_info, warm_start
from simulator.observation import CANDIDATE_FEATURES, CATEGORY_COLUMNS, USER_FEATURES, feature_bounds
from simulator.platform import rank_page
from simulator.schema import RankBatch

ENV_ID = "satbed/Feed-v0"
Reward = str | Callable[[PageOutcome], np.ndarray]


def default_config(seed: int = 0) -> SimConfig:
    """A small world (2000 items, 500 users) whose warm-up takes a couple of seconds."""
    base = SimConfig(seed=seed)
    return dataclasses.replace(base, catalog=dataclasses.replace(base.catalog, n_items=2000),
                               users=dataclasses.replace(base.users, n_users=500))


def observation_space(config: SimConfig, history_length: int) -> spaces.Dict:
    c, n_cand, n_items = config.catalog, config.platform.n_candidates, config.catalog.n_items
    u_low, u_high = feature_bounds(USER_FEATURES)
    c_low, c_high = feature_bounds(CANDIDATE_FEATURES)
    cat_high = np.array([c.n_l1, c.n_l1 * c.n_l2, c.n_leaves, c.n_authors], dtype=np.int64) - 1
    assert len(cat_high) == len(CATEGORY_COLUMNS)
    return spaces.Dict({
        "user": spaces.Box(u_low, u_high, dtype=np.float32),
        "candidates": spaces.Box(np.tile(c_low, (n_cand, 1)), np.tile(c_high, (n_cand, 1)), dtype=np.float32),
        "candidate_ids": spaces.Box(0, n_items - 1, shape=(n_cand,), dtype=np.int64),
        "candidate_categories": spaces.Box(np.zeros((n_cand, len(cat_high)), dtype=np.int64),
                                           np.tile(cat_high, (n_cand, 1)), dtype=np.int64),
        "history": spaces.Box(-1, n_items - 1, shape=(history_length,), dtype=np.int64),
    })


def action_space(config: SimConfig) -> spaces.MultiDiscrete:
    return spaces.MultiDiscrete(np.full(config.platform.page_size, config.platform.n_candidates))


def _reward_fn(reward: Reward) -> Callable[[PageOutcome], np.ndarray]:
    if callable(reward):
        return reward
    if reward not in REWARDS:
        raise ValueError(f"reward={reward!r} must be a callable or one of {', '.join(REWARDS)}")
    return REWARDS[reward]


def _seed_sequence(rng: np.random.Generator) -> np.random.SeedSequence:
    return np.random.SeedSequence(rng.integers(0, 2 ** 63, size=4).tolist())


class _FeedBase:
    """What FeedEnv and FeedVectorEnv share: the sessions, spaces and reward."""

    def _setup(self, n_slots: int, config: SimConfig | None, reward: Reward, warmup_days: int,
               warmup_policy: object | None, history_length: int, max_pages: int, render_mode: str | None) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r}: this environment does not render")
        if max_pages < 1:
            raise ValueError(f"max_pages={max_pages} must be >= 1")
        self.config = config if config is not None else default_config()
        self.sessions = FeedSessions(warm_start(self.config, warmup_days, warmup_policy), n_slots,
                                     history_length=history_length)
        self.reward_fn, self.max_pages = _reward_fn(reward), max_pages

    @property
    def warmup_logs(self):
        """The warm-up's impressions (observable LogData), to fit a policy that acts here."""
        return self.sessions.start.logs

    def _restart(self, seed: int | None) -> None:
        """A seeded reset (or the first) restores the warm start; otherwise the platform goes on."""
        if seed is not None or self.sessions.platform is None:
            self.sessions.restart(_seed_sequence(self.np_random))

    def _serve(self, slots: np.ndarray, actions: np.ndarray) -> tuple[PageOutcome, np.ndarray, np.ndarray]:
        out = self.sessions.serve(slots, actions)
        item_rewards = np.asarray(self.reward_fn(out), dtype=np.float64)
        if item_rewards.shape != out.pages.shape:
            raise ValueError(f"the reward function returned shape {item_rewards.shape}, expected {out.pages.shape}")
        truncated = ~out.ended & (self.sessions.pages[slots] >= self.max_pages)
        return out, item_rewards, truncated


class FeedEnv(_FeedBase, gym.Env):
    """One user's session per episode; see the module docstring."""
    metadata = {"render_modes": []}
    SLOT = np.array([0])

    def __init__(self, config: SimConfig | None = None, *, reward: Reward = "watch_time", warmup_days: int = 1,
                 warmup_policy: object | None = None, history_length: int = 20, max_pages: int = 200,
                 render_mode: str | None = None):
        self._setup(1, config, reward, warmup_days, warmup_policy, history_length, max_pages, render_mode)
        self.observation_space = observation_space(self.config, history_length)
        self.action_space = action_space(self.config)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._restart(seed)
        user = (options or {}).get("user_id")
        n_users = self.config.users.n_users
        if user is None:                 # a user who has joined by today (users.new_users_per_day)
            joined = self.sessions.joined_users()
            user = int(joined[self.np_random.integers(len(joined))])
        user = int(user)
        if not 0 <= user < n_users:
            raise ValueError(f"options['user_id']={user} must be in [0, {n_users})")
        self.sessions.open(self.SLOT, [user])
        return self._observation(), {"user_id": user, "day": int(self.sessions.platform.day)}

    def step(self, action):
        out, item_rewards, truncated = self._serve(self.SLOT, np.asarray(action).reshape(1, -1))
        info = {key: value[0].item() if value[0].ndim == 0 else value[0]
                for key, value in page_info(out, item_rewards).items()}
        return self._observation(), float(item_rewards.sum()), bool(out.ended[0]), bool(truncated[0]), info

    def request_batch(self) -> RankBatch:
        """The pending request as a policy would be given it (after the last step or reset)."""
        return self.sessions.batch(self.SLOT)

    def _observation(self) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.sessions.observe(self.SLOT).items()}


class FeedVectorEnv(_FeedBase, VectorEnv):
    """``num_envs`` concurrent sessions of distinct users on one platform; see the module docstring."""
    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 8, config: SimConfig | None = None, *, reward: Reward = "watch_time",
                 warmup_days: int = 1, warmup_policy: object | None = None, history_length: int = 20,
                 max_pages: int = 200, render_mode: str | None = None):
        self._setup(num_envs, config, reward, warmup_days, warmup_policy, history_length, max_pages, render_mode)
        self.num_envs = num_envs
        self.single_observation_space = observation_space(self.config, history_length)
        self.single_action_space = action_space(self.config)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._all = np.arange(num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._restart(seed)
        users = self._draw_users(self.num_envs, exclude=np.empty(0, dtype=np.int64))
        self.sessions.open(self._all, users)
        self._autoreset[:] = False
        return self.sessions.observe(self._all), {"user_id": users, "_user_id": np.ones(self.num_envs, dtype=bool)}

    def step(self, actions):
        actions = np.asarray(actions)
        n = self.num_envs
        rewards, terminated, truncated = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        stepped, restart = self._all[~self._autoreset], self._all[self._autoreset]
        infos: dict[str, np.ndarray] = {}
        if stepped.size:
            out, item_rewards, trunc = self._serve(stepped, actions[stepped])
            rewards[stepped], terminated[stepped], truncated[stepped] = item_rewards.sum(axis=1), out.ended, trunc
            for key, value in page_info(out, item_rewards).items():
                infos[key] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
                infos[key][stepped] = value
                infos[f"_{key}"] = ~self._autoreset
        if restart.size:          # next-step autoreset: these slots ended last step; their actions are ignored
            users = self._draw_users(len(restart), exclude=self.sessions.users[self._all])
            self.sessions.open(restart, users)
            infos.setdefault("user_id", np.zeros(n, dtype=np.int64))[restart] = users
            infos["_user_id"] = np.ones(n, dtype=bool)
        self._autoreset = terminated | truncated
        return self.sessions.observe(self._all), rewards, terminated, truncated, infos

    def request_batch(self) -> RankBatch:
        """Every slot's pending request (a slot awaiting its autoreset shows its last one)."""
        return self.sessions.batch(self._all)

    def _draw_users(self, m: int, *, exclude: np.ndarray) -> np.ndarray:
        """``m`` distinct users, none of ``exclude``, who have joined by today."""
        free = np.setdiff1d(self.sessions.joined_users(), exclude)
        if len(free) < m:
            raise ValueError(f"{m} session(s) to open but only {len(free)} joined user(s) free on day "
                             f"{self.sessions.platform.day} (users.new_users_per_day: fewer users so far)")
        return self.np_random.choice(free, size=m, replace=False)


class PolicyAgent:
    """A satbed policy (``score(RankBatch)`` and ``temperature``, fitted) acting in FeedEnv or
    FeedVectorEnv: ``agent(observation) -> action``, the page the policy's ranking gives the
    environment's pending request (top-k, or a Plackett-Luce draw from ``rng`` for a stochastic
    policy, as the platform ranks).

    It reads the request from the environment (policies read the feature store, which the
    observation encodes but does not hold), so call it with the latest observation.
    """

    def __init__(self, policy: object, env: gym.Env | VectorEnv, *, rng: np.random.Generator | None = None):
        if policy.temperature is not None and rng is None:
            raise ValueError(f"policy {policy.name!r} ranks stochastically (temperature={policy.temperature}): "
                             "pass rng=np.random.default_rng(seed)")
        self.policy, self.env, self.rng = policy, env.unwrapped, rng

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        batch = self.env.request_batch()
        if not np.array_equal(np.asarray(observation["candidate_ids"]).reshape(batch.candidates.shape),
                              batch.candidates):
            raise ValueError("the observation is not the environment's pending request: pass the latest one")
        scores = np.asarray(self.policy.score(batch), dtype=np.float64)
        positions, _ = rank_page(scores, self.env.sessions.page_size, self.policy.temperature, self.rng)
        return positions[0] if np.ndim(observation["candidate_ids"]) == 1 else positions


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="simulator.gym_env:FeedEnv", vector_entry_point="simulator.gym_env:FeedVectorEnv")
