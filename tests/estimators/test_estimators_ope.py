"""Off-policy evaluation: exact reductions, and unbiasedness against the true policy value."""

import math

import numpy as np
import pytest
from scipy.special import expit, softmax

import estimators as est


def _sample(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (..., K), drawn from that row's distribution."""
    u = rng.random(probs.shape[:-1] + (1,))
    return np.minimum((u > probs.cumsum(axis=-1)).sum(axis=-1), probs.shape[-1] - 1)


def _bandit_logs(rng: np.random.Generator, reps: int, n: int, n_items: int = 5) -> dict:
    """(reps, n) impressions: a context, a position, and the item the logging policy chose.

    The reward is a click with probability ``examination(position) * relevance(context, item)``.
    The logging policy is a soft ranking by a weak score; the target policy ranks by a sharper,
    different score, so its value differs visibly from the logged mean.
    """
    context = rng.normal(size=(reps, n, 2))
    position = rng.integers(0, 5, size=(reps, n))
    item_vec = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.5, -1.0], [0.3, 0.3]])[:n_items]
    affinity = context @ item_vec.T  # (reps, n, K)
    q = expit(affinity - 0.5) / np.sqrt(1.0 + position)[..., None]  # (reps, n, K) click prob
    logging = softmax(0.3 * affinity[..., ::-1], axis=-1)  # weakly wrong ranking
    target = softmax(2.0 * affinity, axis=-1)
    action = _sample(rng, logging)  # (reps, n)
    take = lambda a: np.take_along_axis(a, action[..., None], axis=-1)[..., 0]  # noqa: E731
    reward = (rng.random((reps, n)) < take(q)).astype(np.float64)
    return {
        "q": q,
        "target": target,
        "reward": reward,
        "pscore": take(logging),
        "action_dist": take(target),
        "q_logged": take(q),
        "truth": (target * q).sum(axis=-1).mean(axis=-1),  # (reps,) the target's value
        "take": take,
    }


# --- exact reductions -------------------------------------------------------------------------


def test_ips_of_the_logging_policy_itself_is_the_logged_mean():
    logs = _bandit_logs(np.random.default_rng(0), 1, 500)
    r, p = logs["reward"][0], logs["pscore"][0]
    assert est.ope_ips(r, p, p).value == pytest.approx(r.mean(), abs=1e-12)
    assert est.ope_snips(r, p, p).value == pytest.approx(r.mean(), abs=1e-12)


def test_snips_of_a_constant_reward_is_that_constant():
    logs = _bandit_logs(np.random.default_rng(1), 1, 500)
    result = est.ope_snips(np.full(500, 2.5), logs["pscore"][0], logs["action_dist"][0])
    assert result.value == pytest.approx(2.5, abs=1e-12)


def test_dr_with_the_true_reward_model_is_the_truth():
    # with deterministic rewards r = q(x, a), the true model leaves no residual
    logs = _bandit_logs(np.random.default_rng(2), 1, 500)
    q, q_logged = logs["q"][0], logs["q_logged"][0]
    imputed_target = (logs["target"][0] * q).sum(axis=-1)
    p, e = logs["pscore"][0], logs["action_dist"][0]
    result = est.ope_dr(q_logged, p, e, imputed=q_logged, imputed_target=imputed_target)
    assert result.value == pytest.approx(logs["truth"][0], abs=1e-12)


def test_clipping_at_infinity_is_plain_ips_and_clipping_caps_each_weight():
    logs = _bandit_logs(np.random.default_rng(3), 1, 500)
    r, p, e = logs["reward"][0], logs["pscore"][0], logs["action_dist"][0]
    assert est.ope_ips(r, p, e, max_weight=math.inf) == est.ope_ips(r, p, e)
    assert est.ope_ips(r, p, e, max_weight=2.0).value == pytest.approx(
        np.mean(np.minimum(e / p, 2.0) * r), rel=1e-12
    )
    assert (e / p).max() > 2.0  # so that the cap above did something


def test_standard_slate_ips_accepts_page_or_per_position_probabilities():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.1, 1.0, size=(50, 3))
    e = rng.uniform(0.0, 1.0, size=(50, 3))
    r = rng.random(50)
    per_position = est.slate_standard_ips(r, p, e)
    per_page = est.slate_standard_ips(r, p.prod(1), e.prod(1))
    assert per_position.value == pytest.approx(per_page.value, rel=1e-12)
    assert per_position.stderr == pytest.approx(per_page.stderr, rel=1e-12)
    clipped = est.slate_standard_ips(r, p, e, max_weight=1.5)
    assert clipped.value == pytest.approx(np.mean(np.minimum(e.prod(1) / p.prod(1), 1.5) * r))


# --- against the true value --------------------------------------------------------------------


@pytest.mark.slow
def test_ips_snips_dr_are_unbiased_for_the_target_policy_value():
    reps, n = 300, 2000
    logs = _bandit_logs(np.random.default_rng(2024), reps, n)
    r, p, e, truth = logs["reward"], logs["pscore"], logs["action_dist"], logs["truth"]
    wrong_q = 0.5 * logs["q"] + 0.2  # a wrong reward model: off in scale and level
    imputed, imputed_target = logs["take"](wrong_q), (logs["target"] * wrong_q).sum(axis=-1)

    errors = {
        "logged_mean": r.mean(axis=1) - truth,
        "ips": np.array([est.ope_ips(r[i], p[i], e[i]).value for i in range(reps)]) - truth,
        "snips": np.array([est.ope_snips(r[i], p[i], e[i]).value for i in range(reps)]) - truth,
        "dr": np.array([est.ope_dr(r[i], p[i], e[i], imputed[i], imputed_target[i]).value
                        for i in range(reps)]) - truth,
        "direct": imputed_target.mean(axis=1) - truth,
        "clipped": np.array([est.ope_ips(r[i], p[i], e[i], max_weight=2.0).value
                             for i in range(reps)]) - truth,
    }
    z = {k: v.mean() / (v.std(ddof=1) / np.sqrt(reps)) for k, v in errors.items()}
    for k, v in errors.items():
        print(f"{k}: mean error {v.mean():+.5f} (z {z[k]:+.1f}, sd {v.std():.4f})")
    assert abs(errors["logged_mean"].mean()) > 0.05  # the target really is a different policy
    for name in ("ips", "snips", "dr"):
        assert abs(z[name]) < 3, (name, errors[name].mean(), z[name])
    assert abs(z["direct"]) > 10  # the reward model alone is biased ...
    assert errors["dr"].std() < errors["ips"].std()  # ... but still cuts DR's variance
    assert z["clipped"] < -10  # clipping biases a non-negative reward downwards


def _slate_logs(rng: np.random.Generator, reps: int, n: int) -> dict:
    """(reps, n, L) pages: each position's item drawn independently from a per-position policy."""
    page_len, n_items = 3, 4
    q = rng.uniform(0.05, 0.6, size=(page_len, n_items))  # click prob of item at position
    logging = softmax(rng.normal(size=(page_len, n_items)), axis=-1)
    target = softmax(3.0 * q, axis=-1)
    item = _sample(rng, np.broadcast_to(logging, (reps, n, page_len, n_items)))  # (reps, n, L)
    pos = np.arange(page_len)
    click = rng.random((reps, n, page_len)) < q[pos, item]
    first_click = click & (np.cumsum(click, axis=-1) == 1)  # sums to "any click" per page
    mean_click = (target * q).sum(axis=-1)  # (L,) target's click rate per position
    return {
        "pscore": logging[pos, item],
        "action_dist": target[pos, item],
        "click": click.astype(float),
        "first_click": first_click.astype(float),
        "truth_clicks": mean_click.sum(),
        "truth_any_click": 1 - np.prod(1 - mean_click),
    }


@pytest.mark.slow
def test_slate_estimators_against_the_true_page_value():
    reps, n = 300, 2000
    logs = _slate_logs(np.random.default_rng(7), reps, n)
    p, e = logs["pscore"], logs["action_dist"]

    def errors(fn, reward, truth):
        values = np.array([fn(reward[i], p[i], e[i]).value for i in range(reps)])
        err = values - truth
        z = err.mean() / (err.std(ddof=1) / np.sqrt(reps))
        print(f"{fn.__name__}: mean error {err.mean():+.5f} (z {z:+.1f}, sd {err.std():.4f})")
        return err, z

    # additive page reward (clicks): both unbiased, independent IPS far less variable
    sips, z_sips = errors(est.slate_standard_ips, logs["click"].sum(-1), logs["truth_clicks"])
    iips, z_iips = errors(est.slate_independent_ips, logs["click"], logs["truth_clicks"])
    assert abs(z_sips) < 3 and abs(z_iips) < 3, (z_sips, z_iips)
    assert iips.std() < 0.8 * sips.std()
    # "any click" depends on the whole page: standard IPS stays unbiased, independent IPS does not
    sips, z_sips = errors(est.slate_standard_ips, logs["click"].max(-1), logs["truth_any_click"])
    iips, z_iips = errors(est.slate_independent_ips, logs["first_click"], logs["truth_any_click"])
    assert abs(z_sips) < 3, z_sips
    assert abs(z_iips) > 10, z_iips
