"""To and from Open Bandit Pipeline's ``bandit_feedback`` dict, without depending on obp.

obp (Saito et al. 2021) passes logged bandit feedback around as a dict with the keys
``n_rounds``, ``n_actions``, ``action``, ``position``, ``reward``, ``pscore``, ``context`` and
``action_context`` (those of ``OpenBanditDataset``), and optionally ``pi_b`` and
``expected_reward`` (those of ``SyntheticBanditDataset``). Here the same data is a checked,
frozen :class:`BanditFeedback`; :func:`to_bandit_feedback` and :func:`from_bandit_feedback`
convert between the two, and :meth:`BanditFeedback.to_ope_data` gives the item-position
:class:`~estimators.registry.OPEData` that this package's estimators take. The target policy's
``action_dist`` (n_rounds, n_actions, len_list), which obp passes to its estimators separately,
travels in the dict under ``action_dist``.

In obp's position-based setting ``pscore`` is the logging policy's *marginal* probability of
the action at its position: satbed's ``propensity_marginal``, not ``propensity``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Integral

import numpy as np

from ._validation import as_float_array, as_index_array, check_probability, check_pscore
from .registry import OPEData

#: keys of obp's ``OpenBanditDataset`` feedback, plus the target's ``action_dist``; always written
CORE_KEYS = ("n_rounds", "n_actions", "action", "position", "reward", "pscore", "context",
             "action_context", "action_dist")
#: keys of obp's synthetic feedback; written only when given
OPTIONAL_KEYS = ("pi_b", "expected_reward")

_SUM_TOLERANCE = 1e-6  # how far a distribution's sum over actions may be from 1 (float error)


@dataclass(frozen=True, eq=False, kw_only=True)
class BanditFeedback:
    """Logged bandit feedback in obp's layout, checked when built; arrays are read-only copies.

    Attributes:
        n_actions: number of actions (items), >= 2.
        action: (n_rounds,) int in [0, n_actions), the logged action.
        reward: (n_rounds,) the logged reward.
        pscore: (n_rounds,) in (0, 1], the logging policy's probability of the logged action at
            the logged position (marginal; satbed's ``propensity_marginal``).
        position: (n_rounds,) int in [0, len_list); None is read as all 0, as obp does.
        context: (n_rounds, dim_context) or None.
        action_context: (n_actions, dim_action_context) or None.
        action_dist: (n_rounds, n_actions, len_list) the target policy's probability of each
            action at each position; sums to 1 over actions. None if no target is attached.
        pi_b: (n_rounds, n_actions, len_list) the logging policy's, likewise, or None.
        expected_reward: (n_rounds, n_actions) the true mean reward, or None.
    """

    n_actions: int
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    position: np.ndarray | None = None
    context: np.ndarray | None = None
    action_context: np.ndarray | None = None
    action_dist: np.ndarray | None = None
    pi_b: np.ndarray | None = None
    expected_reward: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_actions, Integral) or isinstance(self.n_actions, bool) \
                or self.n_actions < 2:
            raise ValueError(f"n_actions must be an integer >= 2, got {self.n_actions!r}")
        n_actions = int(self.n_actions)
        for name in ("action", "reward", "pscore"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} must be given (an array), got None")
        action = as_index_array("action", self.action, bound=n_actions, bound_name="n_actions")
        n = len(action)
        checked: dict[str, object] = {
            "n_actions": n_actions,
            "action": action,
            "reward": _floats("reward", self.reward, (n,)),
            "pscore": check_pscore("pscore", _floats("pscore", self.pscore, (n,))),
        }
        if self.context is not None:
            checked["context"] = _floats("context", self.context, (n, None))
        if self.action_context is not None:
            checked["action_context"] = _floats(
                "action_context", self.action_context, (n_actions, None))
        if self.expected_reward is not None:
            checked["expected_reward"] = _floats(
                "expected_reward", self.expected_reward, (n, n_actions))
        len_list = None
        for name in ("action_dist", "pi_b"):
            if getattr(self, name) is not None:
                checked[name] = _distribution(name, getattr(self, name), (n, n_actions, len_list))
                len_list = checked[name].shape[2]
        position = np.zeros(n, dtype=np.int64) if self.position is None else self.position
        position = as_index_array("position", position, bound=len_list, bound_name="len_list")
        if len(position) != n:
            raise ValueError(
                f"action and position must have the same length, got {n} and {len(position)}")
        checked["position"] = position
        for name, value in checked.items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def n_rounds(self) -> int:
        return len(self.action)

    @property
    def len_list(self) -> int:
        """Positions per list: ``action_dist``'s (or ``pi_b``'s) last axis, else max position+1."""
        for dist in (self.action_dist, self.pi_b):
            if dist is not None:
                return dist.shape[2]
        return int(self.position.max()) + 1

    def to_dict(self) -> dict[str, object]:
        """obp's ``bandit_feedback`` dict: :data:`CORE_KEYS` always, :data:`OPTIONAL_KEYS` if set.

        The arrays are fresh writable copies (obp code may write into them).
        """
        out: dict[str, object] = {"n_rounds": self.n_rounds}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in OPTIONAL_KEYS and value is None:
                continue
            out[f.name] = value.copy() if isinstance(value, np.ndarray) else value
        return {key: out[key] for key in (*CORE_KEYS, *OPTIONAL_KEYS) if key in out}

    def to_ope_data(self, estimated_rewards: object | None = None) -> OPEData:
        """The item-position :class:`OPEData` of these rounds, one row per round.

        ``pscore`` is kept, ``action_dist`` becomes the target's probability of the logged
        action at the logged position, and ``position`` is kept.

        Args:
            estimated_rewards: (n_rounds, n_actions, len_list) a reward model's ``q_hat`` of
                every action at every position (obp's ``estimated_rewards_by_reg_model``); if
                given, ``imputed`` is its value at the logged action and ``imputed_target`` its
                mean under ``action_dist`` at the logged position.

        Raises:
            ValueError: no ``action_dist`` is attached, or ``estimated_rewards`` has the wrong
                shape or non-finite values.
        """
        if self.action_dist is None:
            raise ValueError("to_ope_data needs the target's action_dist; this feedback has none")
        rows = np.arange(self.n_rounds)
        arrays = {"action_dist": self.action_dist[rows, self.action, self.position]}
        if estimated_rewards is not None:
            q_hat = _floats("estimated_rewards", estimated_rewards, self.action_dist.shape)
            arrays["imputed"] = q_hat[rows, self.action, self.position]
            target_at_position = self.action_dist[rows, :, self.position]  # (n, n_actions)
            arrays["imputed_target"] = (target_at_position * q_hat[rows, :, self.position]).sum(1)
        return OPEData(reward=self.reward, pscore=self.pscore, position=self.position, **arrays)


def to_bandit_feedback(
    *,
    n_actions: int,
    action: object,
    reward: object,
    pscore: object,
    position: object | None = None,
    context: object | None = None,
    action_context: object | None = None,
    action_dist: object | None = None,
    pi_b: object | None = None,
    expected_reward: object | None = None,
) -> dict[str, object]:
    """obp's ``bandit_feedback`` dict from named arrays (see :class:`BanditFeedback` for each).

    Raises:
        ValueError: naming the array and the problem (shape, range, sum over actions).
    """
    return BanditFeedback(
        n_actions=n_actions, action=action, reward=reward, pscore=pscore, position=position,
        context=context, action_context=action_context, action_dist=action_dist, pi_b=pi_b,
        expected_reward=expected_reward,
    ).to_dict()


def from_bandit_feedback(feedback: Mapping[str, object]) -> BanditFeedback:
    """A checked :class:`BanditFeedback` from obp's ``bandit_feedback`` dict.

    Raises:
        TypeError: ``feedback`` is not a mapping.
        ValueError: a required key is missing, a key is unknown, ``n_rounds`` disagrees with
            the arrays, or an array is invalid (see :class:`BanditFeedback`).
    """
    if not isinstance(feedback, Mapping):
        raise TypeError(f"feedback must be a dict (obp's bandit_feedback), got "
                        f"{type(feedback).__name__}")
    missing = [k for k in ("n_rounds", "n_actions", "action", "reward", "pscore")
               if k not in feedback]
    if missing:
        raise ValueError(f"feedback lacks key(s) {', '.join(missing)}")
    unknown = sorted(set(feedback) - set(CORE_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ValueError(f"feedback has unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join((*CORE_KEYS, *OPTIONAL_KEYS))}")
    result = BanditFeedback(**{k: v for k, v in feedback.items() if k != "n_rounds"})
    n_rounds = feedback["n_rounds"]
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, Integral) \
            or n_rounds != result.n_rounds:
        raise ValueError(f"n_rounds must equal the length of action, {result.n_rounds}, "
                         f"got {n_rounds!r}")
    return result


def _floats(name: str, value: object, shape: tuple[int | None, ...]) -> np.ndarray:
    """A float64 copy of ``value`` of ``shape``'s length and sizes (None: any size)."""
    arr = as_float_array(name, value, ndim=len(shape)).copy()
    if any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        sizes = ["*" if s is None else str(s) for s in shape]
        wanted = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
        raise ValueError(f"{name} must have shape {wanted}, got {arr.shape}")
    return arr


def _distribution(name: str, value: object, shape: tuple[int | None, ...]) -> np.ndarray:
    """A (n_rounds, n_actions, len_list) float64 copy whose every [i, :, k] is a distribution."""
    dist = check_probability(name, _floats(name, value, shape))
    off = np.abs(dist.sum(axis=1) - 1) > _SUM_TOLERANCE  # (n_rounds, len_list)
    if off.any():
        i, k = (int(j[0]) for j in np.nonzero(off))
        raise ValueError(
            f"{name} must sum to 1 over actions (axis 1), got {float(dist[i, :, k].sum())!r} "
            f"at round {i}, position {k}"
        )
    return dist
