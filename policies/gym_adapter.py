"""A trained Gymnasium agent serving as a satbed policy: the ``gym_agent`` policy.

The agent is any callable ``observation -> action`` trained in ``satbed/Feed-v0``
(:mod:`simulator.gym_env`). Per request, it gets the observation the environment would give
(:func:`simulator.schema.observe` of the request's RankBatch) and returns a page of candidate
indices; the policy turns that page into scores whose top-k ranking is the page
(:func:`simulator.schema.page_scores`, duplicates handled as in the environment) and ranks
deterministically. A bucket of an A/B test then serves exactly the agent's pages::

    from policies import make_policy              # "gym_agent" is registered with the others
    make_policy("gym_agent", agent=my_agent)                  # a callable, or in a config:
    # [[buckets]] name = "rl", policy = "gym_agent", params = {agent = "mypackage.agents:trained"}

The agent should be trained with the platform's page size and history length. The reverse
adapter, a satbed policy acting in the environment, is :class:`simulator.gym_env.PolicyAgent`
(it ranks with the platform's ``rank_page``; policies import nothing from the simulator but the
schema).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from policies.base import check_fitted, register_policy
from policies.data import check_observable
from simulator.schema import LogData, RankBatch, observe, page_scores


def load_agent(agent: Callable[[Any], Any] | str) -> Callable[[Any], Any]:
    """``agent`` itself if callable, else the callable named by ``"module:attribute"``."""
    if callable(agent):
        return agent
    module, sep, attr = str(agent).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"agent={agent!r} must be a callable or 'module:attribute'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"agent {agent!r} is not callable")
    return obj


@register_policy("gym_agent", "a trained Gymnasium agent (observation -> page of candidate indices) from "
                              "satbed/Feed-v0, serving deterministically")
@dataclass
class GymAgentPolicy:
    """Serve ``agent``'s pages.

    Args:
        agent: a callable ``observation -> action`` or ``"module:attribute"`` naming one; None
            serves the candidates in recall order (a placeholder, so the registry can build it).
        history_length: the observation's history length (the environment's ``history_length``).
        batched: the agent takes the whole batch (observations with a leading B axis) and
            returns (B, k) actions; otherwise it is called once per request.
    """
    agent: Callable[[Any], Any] | str | None = None
    history_length: int = 20
    batched: bool = False
    fitted_: bool = field(default=False, init=False)
    agent_: Callable[[Any], Any] | None = field(default=None, init=False, repr=False)
    temperature = None          # the agent's page, ranked deterministically

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        """Check the logs (the agent learns nothing from them) and load the agent."""
        check_observable(train, required=(), allow_empty=True)
        self.agent_ = None if self.agent is None else load_agent(self.agent)
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        check_fitted(self)
        b, c = batch.candidates.shape
        if self.agent_ is None:
            return page_scores(np.zeros((b, 0), dtype=np.int64), c)
        obs = observe(batch, self.history_length)
        if self.batched:
            actions = np.asarray(self.agent_(obs))
        else:
            actions = np.stack([np.asarray(self.agent_({key: v[i] for key, v in obs.items()})) for i in range(b)])
        return page_scores(actions, c)
