"""Calibration metrics: USM Eq. 10, reliability table, ECE against hand values and the truth."""

import numpy as np
import pytest

import estimators as est


def test_mean_calibration_is_usm_eq10():
    prob = np.array([0.2, 0.4, 0.1, 0.5])
    label = np.array([0, 1, 0, 1])
    # avg(p) / avg(y) - 1 = 0.3 / 0.5 - 1
    assert est.mean_calibration(prob, label).value == pytest.approx(-0.4)


def test_mean_calibration_interval_covers_zero_for_a_calibrated_model_and_not_for_a_biased_one():
    rng = np.random.default_rng(0)
    prob = rng.beta(1, 9, size=100_000)
    label = rng.random(100_000) < prob
    assert est.mean_calibration(prob, label).contains(0.0)
    over = est.mean_calibration(np.minimum(1.2 * prob, 1.0), label)
    assert over.value == pytest.approx(0.2, abs=0.02)
    assert not over.contains(0.0)


def test_uniform_table_by_hand():
    prob = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    label = np.array([0, 1, 0, 1, 1])
    table = est.calibration_table(prob, label, n_bins=10, strategy="uniform")
    assert table["bin"].tolist() == [0, 1, 9]  # empty bins left out; prob = 1 in the last bin
    assert table["count"].tolist() == [1, 2, 2]
    np.testing.assert_allclose(table["mean_predicted"], [0.05, 0.135, 0.975])
    np.testing.assert_allclose(table["observed_rate"], [0.0, 0.5, 1.0])
    # ECE = (1 * 0.05 + 2 * 0.365 + 2 * 0.025) / 5
    assert est.expected_calibration_error(prob, label, n_bins=10) == pytest.approx(0.166)


def test_quantile_table_has_equal_count_bins():
    rng = np.random.default_rng(1)
    prob = rng.beta(0.5, 20, size=1003)  # skewed, like a show propensity
    table = est.calibration_table(prob, rng.random(1003) < prob, n_bins=10, strategy="quantile")
    assert len(table) == 10
    assert table["count"].max() - table["count"].min() <= 1
    assert (table["prob_low"].to_numpy()[1:] >= table["prob_high"].to_numpy()[:-1]).all()


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(2)
    prob = rng.random(200_000)
    label = rng.random(200_000) < prob
    assert est.expected_calibration_error(prob, label) < 0.01
    assert est.expected_calibration_error(prob**2, label) > 0.1  # E|p - p^2| = 1/6
