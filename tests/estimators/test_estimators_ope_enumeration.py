"""Unbiasedness by exact enumeration on a tiny Plackett-Luce slate problem.

4 items, pages of 2 positions: 12 ordered pages. For each page we know its probability under the
logging and the target policy, each position's conditional and marginal probability, and the
expected reward at each position. Every estimator here is linear in the reward, so its expected
value under the logging policy is ``sum_page P_logging(page) * estimate(page with expected
rewards)``, computed exactly and compared with the target's true value. This also shows which
log column each estimator needs: the wrong one gives a visibly different expectation.
"""

from itertools import permutations

import numpy as np
import pytest

import estimators as est

N_ITEMS, PAGE_LEN = 4, 2
PAGES = list(permutations(range(N_ITEMS), PAGE_LEN))  # 12 ordered pages
LOGGING_LOGIT = np.array([0.3, -0.2, 0.0, 0.5])
TARGET_LOGIT = np.array([1.5, 0.2, -1.0, 0.4])
RELEVANCE = np.array([0.9, 0.5, 0.2, 0.4])
EXAMINATION = np.array([1.0, 0.6])
Q_HAT = np.array([[0.5, 0.3], [0.5, 0.3], [0.5, 0.3], [0.5, 0.3]])  # (item, position): wrong


def _conditionals(logit: np.ndarray, page: tuple[int, ...]) -> np.ndarray:
    """P(page[k] at k | page[:k] above), the Plackett-Luce choice among the remaining items."""
    weights = np.exp(logit)
    remaining = list(range(N_ITEMS))
    out = []
    for item in page:
        out.append(weights[item] / weights[remaining].sum())
        remaining.remove(item)
    return np.array(out)


def _marginals(logit: np.ndarray) -> np.ndarray:
    """(PAGE_LEN, N_ITEMS) P(item at position), summed over the pages that put it there."""
    out = np.zeros((PAGE_LEN, N_ITEMS))
    for page in PAGES:
        out[range(PAGE_LEN), page] += _conditionals(logit, page).prod()
    return out


LOGGING_MARGINAL, TARGET_MARGINAL = _marginals(LOGGING_LOGIT), _marginals(TARGET_LOGIT)


def _expected_reward(page: tuple[int, ...], cascade: bool) -> np.ndarray:
    """Expected reward at each position; with ``cascade`` the second one falls if the first
    item is relevant (the user was already satisfied), so it depends on the page above it."""
    r = RELEVANCE[list(page)] * EXAMINATION
    if cascade:
        r[1] *= 1.0 - 0.8 * RELEVANCE[page[0]]
    return r


def _target_value(cascade: bool) -> float:
    """The target's expected page reward, by enumeration."""
    return sum(_conditionals(TARGET_LOGIT, page).prod() * _expected_reward(page, cascade).sum()
               for page in PAGES)


def _expectation(estimate_page, cascade: bool) -> float:
    """``E_logging[estimate]``: each page's estimate weighted by its logging probability.

    ``estimate_page(page_arrays)`` gets one page's arrays, each (2, PAGE_LEN) (the page twice,
    since the estimators need 2 rows; both rows alike leave the mean unchanged).
    """
    total = 0.0
    for page in PAGES:
        positions = np.arange(PAGE_LEN)
        arrays = {
            "reward": _expected_reward(page, cascade),
            "pscore": LOGGING_MARGINAL[positions, page],
            "action_dist": TARGET_MARGINAL[positions, page],
            "pscore_cascade": _conditionals(LOGGING_LOGIT, page),
            "action_dist_cascade": _conditionals(TARGET_LOGIT, page),
            "imputed": Q_HAT[list(page), positions],
            "imputed_target": (TARGET_MARGINAL * Q_HAT.T).sum(axis=1),  # (PAGE_LEN,)
        }
        twice = {k: np.tile(v, (2, 1)) for k, v in arrays.items()}
        total += _conditionals(LOGGING_LOGIT, page).prod() * estimate_page(twice)
    return total


def test_enumeration_is_a_distribution():
    probs = [_conditionals(LOGGING_LOGIT, page).prod() for page in PAGES]
    assert sum(probs) == pytest.approx(1.0, abs=1e-14)
    assert LOGGING_MARGINAL.sum(axis=1) == pytest.approx(np.ones(PAGE_LEN), abs=1e-14)
    # below the top the two propensities differ: item 0 under item 3, given 3 above vs overall
    conditional = _conditionals(LOGGING_LOGIT, (3, 0))[1]
    assert abs(conditional - LOGGING_MARGINAL[1, 0]) > 0.05


def _impressions(page: dict) -> dict:
    """One page's impressions as item-position rows (n = 2 * PAGE_LEN, both copies)."""
    return {k: v.ravel() for k, v in page.items()}


@pytest.mark.parametrize("cascade", [False, True])
def test_slate_rips_and_standard_ips_are_unbiased_with_the_conditional_propensity(cascade):
    truth = _target_value(cascade)
    rips = _expectation(lambda d: est.slate_rips(
        d["reward"], d["pscore_cascade"], d["action_dist_cascade"]).value, cascade)
    standard = _expectation(lambda d: est.slate_standard_ips(
        d["reward"].sum(1), d["pscore_cascade"], d["action_dist_cascade"]).value, cascade)
    assert rips == pytest.approx(truth, abs=1e-12)
    assert standard == pytest.approx(truth, abs=1e-12)
    # the marginal in their place is wrong
    wrong = _expectation(lambda d: est.slate_rips(
        d["reward"], d["pscore"], d["action_dist"]).value, cascade)
    assert abs(wrong - truth) > 1e-3


def test_independent_ips_is_unbiased_with_the_marginal_propensity_for_position_wise_rewards():
    truth = _target_value(cascade=False)
    independent = _expectation(lambda d: est.slate_independent_ips(
        d["reward"], d["pscore"], d["action_dist"]).value, cascade=False)
    assert independent == pytest.approx(truth, abs=1e-12)
    # ... but not with the conditional one (the log's propensity column),
    wrong_column = _expectation(lambda d: est.slate_independent_ips(
        d["reward"], d["pscore_cascade"], d["action_dist_cascade"]).value, cascade=False)
    assert abs(wrong_column - truth) > 1e-3
    # ... and not when a position's reward depends on the item above it
    cascade_truth = _target_value(cascade=True)
    under_cascade = _expectation(lambda d: est.slate_independent_ips(
        d["reward"], d["pscore"], d["action_dist"]).value, cascade=True)
    assert abs(under_cascade - cascade_truth) > 1e-3


def _on_impressions(fn, *names):
    """An ``estimate_page`` for :func:`_expectation`: ``fn`` of the page's impression rows."""
    return lambda page: fn(*(_impressions(page)[name] for name in names)).value


def test_item_position_ips_and_dr_are_unbiased_with_the_marginal_propensity():
    truth = _target_value(cascade=False) / PAGE_LEN  # per impression
    item = ("reward", "pscore", "action_dist")
    model = (*item, "imputed", "imputed_target")
    assert _expectation(_on_impressions(est.ope_ips, *item), False) == pytest.approx(
        truth, abs=1e-12)
    assert _expectation(_on_impressions(est.ope_dr, *model), False) == pytest.approx(
        truth, abs=1e-12)
    # the wrong reward model alone is biased, and so is IPS with the conditional propensity
    dm = _expectation(_on_impressions(est.ope_dm, "imputed_target"), False)
    assert abs(dm - truth) > 1e-3
    wrong_column = _expectation(
        _on_impressions(est.ope_ips, "reward", "pscore_cascade", "action_dist_cascade"), False)
    assert abs(wrong_column - truth) > 1e-3
