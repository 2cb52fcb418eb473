"""Seeded synthetic off-policy datasets whose target value is known exactly.

Each call draws one small world from the seed (a few context types with known frequencies,
items, true mean rewards, a logging and a target policy) and then ``n_datasets`` independent
logs of it. The truth is the target's population value, computed in closed form over the context
types, not a sample mean, so an unbiased estimator's error averages to 0 and its intervals cover
it at their nominal rate. Used to unit-test :func:`estimators.checks.check_estimator`; satbed's
own logs give datasets of the same form.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
from scipy.special import expit, log_softmax, logsumexp, softmax

from ._validation import check_choice, check_positive_int
from .registry import LEVELS, OPEData

_N_CONTEXTS = 8  # context types, each with its own frequency


def synthetic_ope_datasets(
    n_datasets: int,
    n: int,
    seed: int,
    *,
    level: str = "impression",
    n_actions: int = 5,
    page_len: int = 3,
) -> list[tuple[OPEData, float]]:
    """``n_datasets`` seeded logs of one synthetic world, each with the target's exact value.

    ``"impression"``: a contextual bandit with ``n_actions`` actions and a 0/1 reward. Each row has
    ``reward``, ``pscore``, ``action_dist``, and a deliberately wrong reward model (shrunk
    towards 0.35, so DM is biased and DR is not) as ``imputed`` and ``imputed_target``. The truth
    is the target's expected reward per row.

    ``"page"``: pages of ``page_len`` of ``n_actions`` items, ranked by a Plackett-Luce logging
    policy; the target is another Plackett-Luce policy. The click at a position has probability
    ``relevance(context, item) / (1 + position)``, so it depends only on the item there and every
    slate estimator is unbiased with the right propensities. Each row has ``reward`` (clicks),
    ``pscore`` and ``action_dist`` (marginal, computed exactly over all ordered pages), and
    ``pscore_cascade`` and ``action_dist_cascade`` (given the items above). The truth is the
    target's expected clicks per page.

    Args:
        n_datasets: independent logs (dataset i does not depend on ``n_datasets``).
        n: rows per log (impressions or pages), >= 2.
        seed: seed of the world and of the logs.
        level: ``"impression"`` or ``"page"``.
        n_actions: actions (items), >= 2; at level ``"page"`` at most 8 (pages are enumerated).
        page_len: positions per page, <= ``n_actions`` (level ``"page"`` only).

    Returns:
        ``[(data, truth), ...]``, every truth the same float.
    """
    n_datasets = check_positive_int("n_datasets", n_datasets)
    n = check_positive_int("n", n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    check_choice("level", level, LEVELS)
    n_actions = check_positive_int("n_actions", n_actions)
    if n_actions < 2:
        raise ValueError(f"n_actions must be >= 2, got {n_actions}")
    world_seq, data_seq = np.random.SeedSequence(seed).spawn(2)
    world = np.random.default_rng(world_seq)
    context_prob = world.dirichlet(np.full(_N_CONTEXTS, 5.0))  # (X,)
    affinity = world.normal(size=(_N_CONTEXTS, 2)) @ world.normal(size=(2, n_actions))  # (X, A)
    logging_logit = 0.5 * world.normal(size=(_N_CONTEXTS, n_actions))  # unrelated to reward
    target_logit = 1.5 * affinity  # prefers the relevant items
    rngs = [np.random.default_rng(s) for s in data_seq.spawn(n_datasets)]
    if level == "impression":
        return _bandit(rngs, n, context_prob, expit(affinity), logging_logit, target_logit)
    page_len = check_positive_int("page_len", page_len)
    if page_len > n_actions or n_actions > 8:
        raise ValueError(
            f"page level needs page_len <= n_actions <= 8, got page_len={page_len}, "
            f"n_actions={n_actions}"
        )
    return _slates(rngs, n, context_prob, expit(affinity), logging_logit, target_logit, page_len)


def _bandit(
    rngs: list[np.random.Generator],
    n: int,
    context_prob: np.ndarray,
    relevance: np.ndarray,
    logging_logit: np.ndarray,
    target_logit: np.ndarray,
) -> list[tuple[OPEData, float]]:
    logging, target = softmax(logging_logit, axis=1), softmax(target_logit, axis=1)  # (X, A)
    q_hat = 0.5 * relevance + 0.5 * 0.35  # a wrong model: halfway to a constant 0.35
    q_hat_target = (target * q_hat).sum(axis=1)  # (X,)
    truth = float(context_prob @ (target * relevance).sum(axis=1))
    out = []
    for rng in rngs:
        x = rng.choice(len(context_prob), size=n, p=context_prob)  # (n,)
        a = _draw(rng, logging[x])  # (n,)
        reward = (rng.random(n) < relevance[x, a]).astype(np.float64)
        data = OPEData(reward=reward, pscore=logging[x, a], action_dist=target[x, a],
                       imputed=q_hat[x, a], imputed_target=q_hat_target[x])
        out.append((data, truth))
    return out


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (n, A), by inverting the row's cumulative distribution."""
    u = rng.random((len(probs), 1))
    return np.minimum((u > probs.cumsum(axis=1)).sum(axis=1), probs.shape[1] - 1)


def _slates(
    rngs: list[np.random.Generator],
    n: int,
    context_prob: np.ndarray,
    relevance: np.ndarray,
    logging_logit: np.ndarray,
    target_logit: np.ndarray,
    page_len: int,
) -> list[tuple[OPEData, float]]:
    examination = 1.0 / (1.0 + np.arange(page_len))  # (L,)
    click = relevance[:, None, :] * examination[:, None]  # (X, L, A)
    logging_marginal = _plackett_luce_marginals(logging_logit, page_len)  # (X, L, A)
    target_marginal = _plackett_luce_marginals(target_logit, page_len)
    truth = float(context_prob @ (target_marginal * click).sum(axis=(1, 2)))
    positions = np.arange(page_len)
    out = []
    for rng in rngs:
        x = rng.choice(len(context_prob), size=n, p=context_prob)  # (n,)
        # Gumbel-max: sorting logits + Gumbel noise draws a Plackett-Luce ranking
        noisy = logging_logit[x] + rng.gumbel(size=(n, logging_logit.shape[1]))
        items = np.argsort(-noisy, axis=1)[:, :page_len]  # (n, L)
        reward = (rng.random((n, page_len)) < click[x[:, None], positions, items]).astype(float)
        data = OPEData(
            level="page",
            reward=reward,
            pscore=logging_marginal[x[:, None], positions, items],
            action_dist=target_marginal[x[:, None], positions, items],
            pscore_cascade=_conditionals(logging_logit[x], items),
            action_dist_cascade=_conditionals(target_logit[x], items),
        )
        out.append((data, truth))
    return out


def _conditionals(logit: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(n, L) Plackett-Luce P(items[:, k] at k | items[:, :k] above) from logits (n, A)."""
    remaining = np.ones(logit.shape, dtype=bool)
    out = np.empty(items.shape)
    rows = np.arange(len(items))
    for k in range(items.shape[1]):
        log_norm = logsumexp(np.where(remaining, logit, -np.inf), axis=1)
        out[:, k] = np.exp(logit[rows, items[:, k]] - log_norm)
        remaining[rows, items[:, k]] = False
    return out


def _plackett_luce_marginals(logit: np.ndarray, page_len: int) -> np.ndarray:
    """(X, L, A) exact P(item a at position k) per context, summed over every ordered page."""
    n_contexts, n_items = logit.shape
    marginal = np.zeros((n_contexts, page_len, n_items))
    for page in permutations(range(n_items), page_len):
        log_prob = np.zeros(n_contexts)
        remaining = np.ones(n_items, dtype=bool)
        for item in page:
            log_prob += log_softmax(np.where(remaining, logit, -np.inf), axis=1)[:, item]
            remaining[item] = False
        marginal[:, np.arange(page_len), list(page)] += np.exp(log_prob)[:, None]
    return marginal
