"""The Gym adapters: a trained agent as the ``gym_agent`` policy (check_policy, A/B buckets) and a
satbed policy acting in satbed/Feed-v0 (simulator.gym_env.PolicyAgent), and their round trip."""
from __future__ import annotations

import numpy as np
import pytest

import simulator.gym_env as ge
from policies import make_policy
from policies.checks import check_policy
from policies.gym_adapter import GymAgentPolicy
from simulator.logs import LogWriter, read_impressions
from simulator.observation import CANDIDATE_FEATURES
from simulator.platform import Bucket, Platform
from simulator.schema import observe
from tests_support import tiny

CONFIG = tiny(n_users=300, n_items=1500)
K = CONFIG.platform.page_size
W = np.zeros(len(CANDIDATE_FEATURES))
W[[CANDIDATE_FEATURES.index("effective_view_rate"), CANDIDATE_FEATURES.index("leaf_share")]] = 1.0


def linear_agent(obs):
    """A fixed linear agent: the top-k candidates by two observed features."""
    return np.argsort(-(obs["candidates"] @ W), kind="stable")[:K]


def batched_agent(obs):
    return np.argsort(-(obs["candidates"] @ W), axis=1, kind="stable")[:, :K]


@pytest.fixture(scope="module")
def envs():
    return ge.FeedEnv(CONFIG), ge.FeedVectorEnv(6, CONFIG)


def fitted(policy, env):
    return policy.fit(env.warmup_logs, rng=np.random.default_rng(0))


def test_gym_agent_passes_the_policy_conformance_battery(envs):
    env, vec = envs
    vec.reset(seed=0)
    for params in ({"agent": linear_agent}, {"agent": batched_agent, "batched": True}, {}):
        check_policy(lambda: make_policy("gym_agent", **params), env.warmup_logs, vec.request_batch())


def test_agent_to_policy_to_agent_round_trip(envs):
    """agent -> GymAgentPolicy -> PolicyAgent picks the agent's own pages, in both env forms."""
    env, vec = envs
    single = ge.PolicyAgent(fitted(GymAgentPolicy(linear_agent), env), env)
    obs, _ = env.reset(seed=1)
    for _ in range(5):
        assert np.array_equal(single(obs), linear_agent(obs))
        obs, _, terminated, truncated, _ = env.step(single(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    for policy in (GymAgentPolicy(linear_agent), GymAgentPolicy(batched_agent, batched=True)):
        agent = ge.PolicyAgent(fitted(policy, vec), vec)
        obs, _ = vec.reset(seed=2)
        for _ in range(3):
            assert np.array_equal(agent(obs), batched_agent(obs))
            obs = vec.step(agent(obs))[0]


def test_registered_policies_act_in_the_env(envs):
    env, _ = envs
    production = fitted(make_policy("production", temperature=None), env)
    agent = ge.PolicyAgent(production, env)
    obs, _ = env.reset(seed=3)
    scores = production.score(env.request_batch())[0]
    assert np.array_equal(agent(obs), np.argsort(-scores, kind="stable")[:K])
    done, pages = False, 0
    while not done:
        obs, _, terminated, truncated, _ = env.step(agent(obs))
        done, pages = terminated or truncated, pages + 1
    assert pages >= 1
    popular = ge.PolicyAgent(fitted(make_policy("most_popular"), env), env)
    obs, _ = env.reset(seed=3)
    assert env.step(popular(obs))[4]["served"] >= 1
    # a stochastic policy draws its page from the given generator: the same seed, the same page
    stochastic = fitted(make_policy("production"), env)
    obs, _ = env.reset(seed=3)
    with pytest.raises(ValueError, match="pass rng"):
        ge.PolicyAgent(stochastic, env)
    pages = [ge.PolicyAgent(stochastic, env, rng=np.random.default_rng(s))(obs) for s in (7, 7, 8)]
    assert np.array_equal(pages[0], pages[1]) and not np.array_equal(pages[0], pages[2])
    stale = dict(obs, candidate_ids=np.roll(obs["candidate_ids"], 1))
    with pytest.raises(ValueError, match="not the environment's pending request"):
        agent(stale)


def test_gym_agent_serves_an_ab_bucket(envs, tmp_path):
    env, _ = envs
    world = env.sessions.start.world
    calls = []

    def recording_agent(obs):
        action = linear_agent(obs)
        calls.append(obs["candidate_ids"][action])
        return action

    buckets = [Bucket.from_seed("control", fitted(make_policy("production"), env), 0, np.random.SeedSequence(1)),
               Bucket.from_seed("rl", fitted(make_policy("gym_agent", agent=recording_agent), env), 1,
                                np.random.SeedSequence(2))]
    assignment = np.arange(world.users.n_users) % 2
    platform = Platform(world, buckets, assignment, LogWriter(tmp_path / "logs", ["control", "rl"]),
                        np.random.SeedSequence(3))
    # the platform's serving function gives the agent's page for each request
    users = np.flatnonzero(assignment == 1)[:5]
    ranked = platform.serve(buckets[1], users, 0.0)
    assert np.array_equal(ranked.pages, np.stack(calls))
    # and a day of the A/B test serves both buckets, the agent's bucket only with its pages
    calls.clear()
    platform.run(1)
    logs = read_impressions(tmp_path / "logs")
    assert set(logs["bucket"].unique()) == {"control", "rl"}
    rl = logs[logs["bucket"] == "rl"]
    assert set(rl["policy"].unique()) == {"gym_agent"} and (rl["user_id"] % 2 == 1).all()
    assert set(rl["item_id"]) <= set(np.concatenate(calls).tolist())


def test_the_agent_can_be_named_by_module_and_attribute(envs):
    env, _ = envs
    env.reset(seed=4)
    batch = env.request_batch()
    policy = fitted(make_policy("gym_agent", agent=f"{__name__}:linear_agent"), env)
    page = np.argsort(-policy.score(batch)[0], kind="stable")[:K]
    assert np.array_equal(page, linear_agent({key: v[0] for key, v in observe(batch).items()}))
    for bad in ("no_colon", f"{__name__}:W"):
        with pytest.raises(ValueError, match="must be a callable|is not callable"):
            fitted(make_policy("gym_agent", agent=bad), env)
