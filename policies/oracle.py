"""The item-wise oracle: ranks by the ground truth, item by item, flagged as such in every report.

It scores each candidate alone (no fatigue within the page it builds), so it is a reference,
not a strict upper bound: a page-aware ranking of the same truth could beat it.

It is the one policy that reads hidden state. It imports nothing from the simulator: the A/B
runner hands it the world and a read-only view of the users' state through :meth:`attach`,
because it has ``requires_world = True``. Every other policy sees observable data only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from policies.base import NotFittedError, register_policy
from policies.data import check_observable
from simulator.checks import check_choice
from simulator.schema import LogData, RankBatch

TARGETS = ("satisfaction", "watch_time")


@register_policy("oracle", "ITEM-WISE ORACLE, reads the ground truth: ranks each item by true P(satisfied) (or E[watch time])")
@dataclass
class OraclePolicy:
    """Scores each candidate by the world's ground-truth function for the user's current state.

    Args:
        target: "satisfaction" ranks by ``p_satisfied``; "watch_time" by the expected watch time.
    """
    target: str = "satisfaction"
    temperature: float | None = None
    requires_world: ClassVar[bool] = True
    is_oracle: ClassVar[bool] = True
    world_: Any = field(default=None, init=False, repr=False)
    state_: Any = field(default=None, init=False, repr=False)
    fitted_: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_choice("target", self.target, TARGETS)

    def attach(self, world: Any, state: Any) -> Self:
        """Give the oracle the world (ground-truth functions) and the users' state (active
        sub-interest and category fatigue arrays)."""
        self.world_, self.state_ = world, state
        return self

    def fit(self, train: LogData, *, rng: np.random.Generator) -> Self:
        # learns nothing from logs, but is given observable data like every other policy: the
        # ground truth reaches it only through attach()
        check_observable(train, required=(), allow_empty=True)
        self.fitted_ = True
        return self

    def score(self, batch: RankBatch) -> np.ndarray:
        if not self.fitted_:
            raise NotFittedError("policy 'oracle' must be fitted before score(); call fit() first")
        if self.world_ is None:
            raise NotFittedError("policy 'oracle' needs attach(world, state) before score()")
        b, c = batch.candidates.shape
        users = np.repeat(batch.user_ids, c)
        items = batch.candidates.ravel()
        fatigue = self.state_.fatigue[users, self.world_.catalog.l2[items]]
        probs = self.world_.probabilities(users, items, self.state_.active[users], fatigue)
        value = probs.p_satisfied if self.target == "satisfaction" else probs.expected_watch_time
        return value.reshape(b, c)
