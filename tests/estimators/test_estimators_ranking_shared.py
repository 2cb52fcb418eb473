"""The plain-float metrics the policies' training loops use agree with the estimators' own."""
import numpy as np
import pytest

from estimators import auc, hit_rate, mean_calibration, ndcg, sampled_rank_metrics, weighted_auc, weighted_calibration


def test_weighted_auc_is_auc_without_weights_and_counts_pairs_with_them():
    rng = np.random.default_rng(0)
    y, s = rng.random(300) < 0.3, np.round(rng.normal(size=300), 1)       # rounded: many ties
    assert weighted_auc(y, s) == pytest.approx(auc(y.astype(int), s).value, abs=1e-12)
    w = rng.uniform(0.5, 3.0, 300)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)                        # brute force over every pair
    pair_w = w[pos][:, None] * w[neg][None, :]
    right = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    assert weighted_auc(y, s, w) == pytest.approx((pair_w * right).sum() / pair_w.sum(), abs=1e-12)
    assert np.isnan(weighted_auc(np.zeros(5, bool), s[:5])) and np.isnan(weighted_auc([], []))
    assert np.isnan(weighted_calibration([], []))


def test_weighted_calibration_is_usm_eq10_and_the_estimators_value_without_weights():
    rng = np.random.default_rng(1)
    p, y = rng.random(200), rng.random(200) < 0.4
    assert weighted_calibration(p, y) == pytest.approx(mean_calibration(p, y.astype(int)).value, abs=1e-12)
    w = rng.uniform(0.5, 2.0, 200)
    assert weighted_calibration(p, y, w) == pytest.approx((w * p).sum() / (w * y).sum() - 1, abs=1e-12)


def test_sampled_rank_metrics_equal_hit_rate_and_ndcg_with_expected_ties():
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=(50, 21)), 1)                         # column 0 the positive
    hr, nd = sampled_rank_metrics(scores, k=10)
    assert hr == pytest.approx(hit_rate(scores[:, 0], scores[:, 1:], k=10, ties="expected").value, abs=1e-12)
    assert nd == pytest.approx(ndcg(scores[:, 0], scores[:, 1:], k=10, ties="expected").value, abs=1e-12)
    with pytest.raises(ValueError, match=r"scores must have shape"):
        sampled_rank_metrics(np.zeros(3))
