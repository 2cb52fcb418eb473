"""Plackett-Luce page probabilities (issue 14): the conditional and marginal propensities against
exact enumeration of every page, a seeded Monte-Carlo check at the platform's size, and the
logged-candidates mode that lets a run's logging distribution be recomputed exactly."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.config import with_overrides
from simulator.logs import read_candidates, read_run
from simulator.plackett_luce import (conditional_propensities, exact_marginals, log_weights,
                                     marginal_propensities)
from simulator.platform import rank_page
from experiments.simulate import simulate
from tests_support import tiny


def _problem(rng, c, k, spread, n_pages=6):
    logits = log_weights(rng.normal(size=(1, c)) * spread, 1.0)
    pages = np.array([rng.permutation(c)[:k] for _ in range(n_pages)])
    return logits, pages


@pytest.mark.parametrize("spread, rtol", [(0.5, 1e-9), (1.0, 1e-9), (2.0, 1e-8), (3.0, 1e-6), (6.0, 2e-4)])
def test_marginal_equals_exact_enumeration(spread, rtol):
    """P(item at j) by quadrature = the sum over every page of the page probabilities (C <= 7)."""
    rng = np.random.default_rng(int(spread * 10))
    for _ in range(25):
        c = int(rng.integers(4, 8))
        k = int(rng.integers(2, min(c, 4) + 1))
        logits, pages = _problem(rng, c, k, spread)
        exact = exact_marginals(logits[0], k)[pages, np.arange(k)[None, :]]
        got = marginal_propensities(np.repeat(logits, len(pages), axis=0), pages)
        np.testing.assert_allclose(got, exact, rtol=rtol)


def test_exact_marginals_are_distributions():
    """Each position's probabilities over the candidates sum to 1, and so does each item's over
    the positions and 'not shown' (a check of the enumeration the other tests trust)."""
    logits = log_weights(np.random.default_rng(0).normal(size=(1, 6)), 1.0)[0]
    m = exact_marginals(logits, 3)
    np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=1e-12)
    assert (m.sum(axis=1) <= 1 + 1e-12).all()
    np.testing.assert_allclose(m[:, 0], np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


def test_conditional_is_the_chain_rule():
    """The product of a page's conditional propensities is the enumerated page probability."""
    rng = np.random.default_rng(1)
    logits, pages = _problem(rng, 6, 3, 1.5)
    w = np.exp(logits[0])
    cond = conditional_propensities(np.repeat(logits, len(pages), axis=0), pages)
    for page, p in zip(pages, cond):
        left, expected = w.sum(), []
        for item in page:
            expected.append(w[item] / left)
            left -= w[item]
        np.testing.assert_allclose(p, expected, rtol=1e-12)


def test_marginal_matches_monte_carlo_at_platform_size():
    """200 candidates, 10 positions: the quadrature agrees with 100,000 seeded Gumbel draws within
    4.5 binomial standard errors, for likely and unlikely (item, position) pairs."""
    rng = np.random.default_rng(2)
    logits = log_weights(rng.normal(size=(1, 200)) * 2.0, 1.0)
    keys = logits + rng.gumbel(size=(100_000, 200))
    top = np.argsort(-logits[0])[:10]
    pages = np.stack([top, top[::-1]])             # each item at its likeliest position, and reversed
    for page in pages:
        # item page[j] is at position j when exactly j candidates drew larger keys
        freq = np.array([((keys > keys[:, [item]]).sum(axis=1) == j).mean() for j, item in enumerate(page)])
        got = marginal_propensities(logits, page[None, :])[0]
        se = np.sqrt(got * (1 - got) / len(keys))
        assert np.all(np.abs(freq - got) < 4.5 * se + 1e-12), (freq - got) / se


def test_rank_page_draws_pages_with_the_logged_conditionals():
    """rank_page's pages follow Plackett-Luce: the empirical frequency of each page of 2 of 4
    candidates matches the product of its logged conditional propensities."""
    rng = np.random.default_rng(3)
    scores = np.tile(np.array([[0.3, -1.0, 1.2, 0.0]]), (40_000, 1))
    pos, prop = rank_page(scores, 2, 0.7, rng)
    pages, counts = np.unique(pos, axis=0, return_counts=True)
    probs = {tuple(p): float(np.prod(q)) for p, q in zip(pos[:2000], prop[:2000])}
    for page, n in zip(pages, counts):
        p = probs[tuple(page)]
        assert abs(n / len(pos) - p) < 4.5 * np.sqrt(p * (1 - p) / len(pos))


# ----------------------------------------------------------------------------- logged candidates
@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    cfg = with_overrides(tiny(n_users=120, n_items=600, days=1), {"platform.log_candidates": True})
    out = tmp_path_factory.mktemp("candidates") / "run"
    simulate(cfg, out, progress=False)
    return read_run(out).impressions, read_candidates(out)


def test_logged_candidates_recompute_the_logging_distribution(logged):
    """From the candidates table alone: every impression's conditional propensity equals the
    logged one to 1e-12, its marginal the logged propensity_marginal."""
    logs, (requests, candidates, scores) = logged
    assert list(scores) == ["logging"]
    scores = scores["logging"]
    assert requests["request_id"].is_unique and set(logs["request_id"]) == set(requests["request_id"])
    assert candidates.shape == scores.shape and scores.dtype == np.float64
    assert (requests["temperature"] == 1.0).all() and (requests["policy"] == "production").all()
    row = requests.reset_index().set_index("request_id").loc[logs["request_id"], "index"].to_numpy()
    col = np.array([np.flatnonzero(candidates[r] == item)[0] for r, item in zip(row, logs["item_id"])])
    logits = log_weights(scores, 1.0)
    by_request = logs.assign(row=row, col=col).sort_values(["request_id", "position"])
    for request_id, page in list(by_request.groupby("request_id"))[:200]:
        r = int(page["row"].iloc[0])
        order = page["col"].to_numpy()[None, :]
        assert (page["position"].to_numpy() == np.arange(len(page))).all()       # a served prefix
        np.testing.assert_allclose(conditional_propensities(logits[r:r + 1], order)[0], page["propensity"],
                                   rtol=1e-12)
        np.testing.assert_allclose(marginal_propensities(logits[r:r + 1], order)[0], page["propensity_marginal"],
                                   rtol=1e-9)
    assert (logs["propensity_marginal"].between(0, 1)).all()
    first = logs["position"] == 0
    np.testing.assert_allclose(logs.loc[first, "propensity_marginal"], logs.loc[first, "propensity"], rtol=1e-12)


def test_without_log_candidates_nothing_extra_is_written(tmp_path):
    out = tmp_path / "run"
    simulate(tiny(n_users=60, n_items=400, days=1), out, progress=False)
    assert not (out / "candidates").exists()
    assert read_run(out).impressions["propensity_marginal"].isna().all()
    with pytest.raises(FileNotFoundError, match="log_candidates = true"):
        read_candidates(out)
