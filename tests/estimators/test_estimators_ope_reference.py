"""Every OPE estimator against values worked out by hand from Open Bandit Pipeline's definitions.

The tiny arrays below are written out so that each expected value can be checked with pen and
paper; the comments show the arithmetic. Then the identities between estimators that the
definitions imply (Switch-DR at tau = inf is DR, at tau = 0 DM, ...).
"""

import math

import numpy as np
import pytest

import estimators as est

TOL = 1e-10

# --- item-position rows ------------------------------------------------------------------------
R = np.array([1.0, 0.0, 1.0, 0.5])  # reward
P = np.array([0.5, 0.25, 0.8, 0.4])  # logging marginal (propensity_marginal)
E = np.array([0.25, 0.5, 0.4, 0.2])  # target marginal
# w = E / P = [0.5, 2, 0.5, 0.5]
Q = np.array([0.6, 0.2, 0.5, 0.5])  # imputed: q_hat(x, a_logged)
QT = np.array([0.4, 0.3, 0.7, 0.5])  # imputed_target: sum_a pi_e(a) q_hat(x, a)
# residual r - q = [0.4, -0.2, 0.5, 0.0];  w * residual = [0.2, -0.4, 0.25, 0.0], sum 0.05


def _se(terms):
    terms = np.asarray(terms, dtype=float)
    return terms.std(ddof=1) / math.sqrt(len(terms))


def test_ips_reference():
    # w * r = [0.5, 0, 0.5, 0.25], mean 1.25 / 4
    result = est.ope_ips(R, P, E)
    assert result.value == pytest.approx(0.3125, abs=TOL)
    assert result.stderr == pytest.approx(_se([0.5, 0.0, 0.5, 0.25]), abs=TOL)
    assert result.n == 4
    # clipped at 1: w = [0.5, 1, 0.5, 0.5], and w * r is unchanged since r = 0 where w = 2
    assert est.ope_ips(R, P, E, max_weight=1.0).value == pytest.approx(0.3125, abs=TOL)
    assert est.ope_ips(R, P, E, max_weight=0.25).value == pytest.approx(
        (0.25 + 0.25 + 0.125) / 4, abs=TOL)


def test_snips_reference():
    # sum(w r) / sum(w) = 1.25 / 3.5 = 5/14
    result = est.ope_snips(R, P, E)
    assert result.value == pytest.approx(5 / 14, abs=TOL)
    # delta method: (w r - V w) / mean(w), mean(w) = 0.875
    w = np.array([0.5, 2.0, 0.5, 0.5])
    linear = (w * R - 5 / 14 * w) / 0.875
    assert result.stderr == pytest.approx(_se(linear), abs=TOL)


def test_dm_reference():
    result = est.ope_dm(QT)
    assert result.value == pytest.approx(1.9 / 4, abs=TOL)
    assert result.stderr == pytest.approx(_se(QT), abs=TOL)


def test_dr_reference():
    # qt + w (r - q) = [0.6, -0.1, 0.95, 0.5], mean 1.95 / 4
    result = est.ope_dr(R, P, E, Q, QT)
    assert result.value == pytest.approx(0.4875, abs=TOL)
    assert result.stderr == pytest.approx(_se([0.6, -0.1, 0.95, 0.5]), abs=TOL)


def test_sndr_reference():
    # mean(qt) + sum(w (r - q)) / sum(w) = 0.475 + 0.05 / 3.5
    result = est.ope_sndr(R, P, E, Q, QT)
    assert result.value == pytest.approx(0.475 + 1 / 70, abs=TOL)
    w = np.array([0.5, 2.0, 0.5, 0.5])
    linear = QT + (w * (R - Q) - w / 70) / 0.875  # delta method, as for SNIPS
    assert result.stderr == pytest.approx(_se(linear), abs=TOL)


def test_switch_dr_reference():
    # tau = 1 drops the w = 2 row's correction: [0.6, 0.3, 0.95, 0.5], mean 2.35 / 4
    result = est.ope_switch_dr(R, P, E, Q, QT, tau=1.0)
    assert result.value == pytest.approx(0.5875, abs=TOL)
    assert result.stderr == pytest.approx(_se([0.6, 0.3, 0.95, 0.5]), abs=TOL)
    # w <= tau keeps a weight equal to tau (obp: iw <= lambda_)
    assert est.ope_switch_dr(R, P, E, Q, QT, tau=2.0).value == pytest.approx(0.4875, abs=TOL)


def test_dros_reference():
    # lambda = 1: w_hat = w / (w^2 + 1) = [0.4, 0.4, 0.4, 0.4]
    # qt + w_hat (r - q) = [0.56, 0.22, 0.9, 0.5], mean 2.18 / 4
    result = est.ope_dros(R, P, E, Q, QT, lambda_=1.0)
    assert result.value == pytest.approx(0.545, abs=TOL)
    assert result.stderr == pytest.approx(_se([0.56, 0.22, 0.9, 0.5]), abs=TOL)
    # lambda = 4: w_hat = 4w / (w^2 + 4) = [2/4.25, 1, 2/4.25, 2/4.25]
    s = 2 / 4.25
    expected = np.mean(QT + np.array([s, 1.0, s, s]) * (R - Q))
    assert est.ope_dros(R, P, E, Q, QT, lambda_=4.0).value == pytest.approx(expected, abs=TOL)


# --- slate rows: 3 pages of 2 positions --------------------------------------------------------
SR = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # per-position reward
SP_CASCADE = np.array([[0.5, 0.5], [0.25, 0.5], [0.5, 0.8]])  # logging, given the items above
SE_CASCADE = np.array([[0.25, 1.0], [0.5, 0.25], [0.5, 0.8]])  # target, given the same
# per-position ratios [[0.5, 2], [2, 0.5], [1, 1]]; prefix weights [[0.5, 1], [2, 1], [1, 1]]
SP_MARGINAL = np.array([[0.5, 0.4], [0.25, 0.5], [0.5, 0.5]])
SE_MARGINAL = np.array([[0.25, 0.2], [0.5, 0.25], [0.5, 1.0]])
# marginal ratios [[0.5, 0.5], [2, 0.5], [1, 2]]


def test_slate_standard_ips_reference():
    # page weights = product of ratios = [1, 1, 1]; page rewards [1, 1, 2]
    result = est.slate_standard_ips(SR.sum(1), SP_CASCADE, SE_CASCADE)
    assert result.value == pytest.approx(4 / 3, abs=TOL)
    assert result.stderr == pytest.approx(_se([1.0, 1.0, 2.0]), abs=TOL)
    assert est.slate_standard_ips(
        SR.sum(1), SP_CASCADE.prod(1), SE_CASCADE.prod(1)).value == pytest.approx(4 / 3, abs=TOL)


def test_slate_independent_ips_reference():
    # sum_k w_k r_k = [0.5, 0.5, 3]
    result = est.slate_independent_ips(SR, SP_MARGINAL, SE_MARGINAL)
    assert result.value == pytest.approx(4 / 3, abs=TOL)
    assert result.stderr == pytest.approx(_se([0.5, 0.5, 3.0]), abs=TOL)


def test_slate_rips_reference():
    # sum_k w_{1:k} r_k = [0.5 * 1 + 1 * 0, 2 * 0 + 1 * 1, 1 + 1] = [0.5, 1, 2]
    result = est.slate_rips(SR, SP_CASCADE, SE_CASCADE)
    assert result.value == pytest.approx(3.5 / 3, abs=TOL)
    assert result.stderr == pytest.approx(_se([0.5, 1.0, 2.0]), abs=TOL)
    # clipped at 1.5: the 2 becomes 1.5, terms [0.5, 1, 2]
    assert est.slate_rips(SR, SP_CASCADE, SE_CASCADE, max_weight=1.5).value == pytest.approx(
        3.5 / 3, abs=TOL)
    assert est.slate_rips(SR, SP_CASCADE, SE_CASCADE, max_weight=0.5).value == pytest.approx(
        (0.5 + 0.5 + 1.0) / 3, abs=TOL)


def test_slate_snrips_reference():
    # position 0: w = [0.5, 2, 1], r = [1, 0, 1] -> 1.5 / 3.5;  position 1: w = [1, 1, 1] -> 2 / 3
    result = est.slate_snrips(SR, SP_CASCADE, SE_CASCADE)
    assert result.value == pytest.approx(3 / 7 + 2 / 3, abs=TOL)
    w = np.array([[0.5, 1.0], [2.0, 1.0], [1.0, 1.0]])
    ratio = np.array([3 / 7, 2 / 3])
    linear = ((w * SR - ratio * w) / w.mean(axis=0)).sum(axis=1)
    assert result.stderr == pytest.approx(_se(linear), abs=TOL)


# --- identities the definitions imply ----------------------------------------------------------


def _rows(seed: int, n: int = 200) -> dict:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 1.0, n)
    e = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.0, 1.0, n))  # some rows w = 0
    q = rng.random(n)
    return {"reward": rng.random(n), "pscore": p, "action_dist": e, "imputed": q,
            "imputed_target": rng.random(n)}


def test_dm_equals_dr_when_the_weighted_residuals_sum_to_zero():
    d = _rows(0)
    w = d["action_dist"] / d["pscore"]
    residual = d["reward"] - d["imputed"]
    last = np.flatnonzero(w > 0)[-1]
    residual[last] -= (w * residual).sum() / w[last]  # now sum(w * residual) = 0
    d["reward"] = d["imputed"] + residual
    assert abs((w * (d["reward"] - d["imputed"])).sum()) < 1e-12
    dm = est.ope_dm(d["imputed_target"]).value
    assert est.ope_dr(**d).value == pytest.approx(dm, abs=1e-12)
    assert est.ope_sndr(**d).value == pytest.approx(dm, abs=1e-12)


def test_switch_dr_at_infinity_is_dr_and_at_zero_is_dm():
    d = _rows(1)
    assert est.ope_switch_dr(**d, tau=math.inf) == est.ope_dr(**d)
    assert est.ope_switch_dr(**d, tau=0.0) == est.ope_dm(d["imputed_target"])
    w = d["action_dist"] / d["pscore"]
    assert est.ope_switch_dr(**d, tau=w.max()) == est.ope_dr(**d)  # every w <= tau


def test_dros_at_infinity_is_dr_and_at_zero_is_dm():
    d = _rows(2)
    dr = est.ope_dr(**d)
    assert est.ope_dros(**d, lambda_=math.inf) == dr
    big = est.ope_dros(**d, lambda_=1e12)
    assert big.value == pytest.approx(dr.value, rel=1e-9)
    assert big.stderr == pytest.approx(dr.stderr, rel=1e-9)
    assert est.ope_dros(**d, lambda_=0.0) == est.ope_dm(d["imputed_target"])


def test_shrunk_weights_are_never_above_the_plain_weight():
    # the DR correction with w_hat in [0, w] lies between DM's and DR's, row by row
    d = _rows(3)
    d["reward"] = d["imputed"] + 1.0  # every residual is +1, so the corrections are the weights
    dm, dr = est.ope_dm(d["imputed_target"]).value, est.ope_dr(**d).value
    for lam in (0.1, 1.0, 10.0):
        assert dm <= est.ope_dros(**d, lambda_=lam).value <= dr
    for tau in (0.5, 1.0, 3.0):
        assert dm <= est.ope_switch_dr(**d, tau=tau).value <= dr


def test_target_equal_to_logging_gives_the_logged_mean():
    d = _rows(4)
    p = d["pscore"]
    same = (d["reward"], p, p, d["imputed"], d["imputed_target"])
    assert est.ope_ips(*same[:3]).value == pytest.approx(d["reward"].mean(), abs=1e-12)
    assert est.ope_sndr(*same).value == pytest.approx(est.ope_dr(*same).value, abs=1e-12)  # w = 1
    pages = np.random.default_rng(5)
    r, pc = pages.random((100, 3)), pages.uniform(0.1, 1.0, (100, 3))
    assert est.slate_rips(r, pc, pc).value == pytest.approx(r.sum(1).mean(), abs=1e-12)
    assert est.slate_snrips(r, pc, pc).value == pytest.approx(r.sum(1).mean(), abs=1e-12)


def test_rips_between_standard_and_independent_ips():
    rng = np.random.default_rng(6)
    r = rng.random((100, 3))
    p, e = rng.uniform(0.1, 1.0, (100, 3)), rng.uniform(0.0, 1.0, (100, 3))
    # one position: all three slate estimators are plain IPS
    one = est.slate_rips(r[:, :1], p[:, :1], e[:, :1])
    assert one == est.slate_standard_ips(r[:, 0], p[:, :1], e[:, :1])
    assert one == est.slate_independent_ips(r[:, :1], p[:, :1], e[:, :1])
    # reward only at the last position: RIPS's weight there is the whole page's
    last = np.zeros_like(r)
    last[:, -1] = r[:, -1]
    assert est.slate_rips(last, p, e).value == pytest.approx(
        est.slate_standard_ips(r[:, -1], p, e).value, rel=1e-12)
    # reward only at the first position: RIPS is independent IPS with the first factor
    first = np.zeros_like(r)
    first[:, 0] = r[:, 0]
    assert est.slate_rips(first, p, e).value == pytest.approx(
        est.slate_independent_ips(first, p, e).value, rel=1e-12)
