"""Estimate: the interval arithmetic every estimator relies on."""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from estimators import Estimate


def test_normal_interval_is_value_plus_minus_z_stderr():
    result = Estimate.normal(1.0, 0.5, 10, alpha=0.1)
    z = stats.norm.ppf(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((1 - 0.5 * z, 1 + 0.5 * z))
    assert result.n == 10


def test_from_terms_is_the_mean_and_its_standard_error():
    terms = np.array([1.0, 2.0, 4.0, 7.0])
    result = Estimate.from_terms(terms)
    assert result.value == pytest.approx(3.5)
    assert result.stderr == pytest.approx(terms.std(ddof=1) / 2)


def test_from_ratio_is_the_ratio_of_sums_with_a_delta_method_stderr():
    num, den = np.array([1.0, 4.0, 2.0, 6.0]), np.array([1.0, 2.0, 2.0, 3.0])
    result = Estimate.from_ratio(num, den)
    ratio = 13 / 8
    linear = (num - ratio * den) / den.mean()
    assert result.value == pytest.approx(ratio)
    assert result.stderr == pytest.approx(linear.std(ddof=1) / 2)


def test_constant_terms_give_a_zero_width_interval_not_nan():
    result = Estimate.from_terms(np.full(5, 0.1))
    assert (result.stderr, result.ci_low, result.ci_high) == (0.0, 0.1, 0.1)


def test_contains_and_frozen():
    result = Estimate(1.0, 0.1, 0.8, 1.2, 5)
    assert result.contains(0.8) and result.contains(1.2) and not result.contains(1.21)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.value = 2.0  # type: ignore[misc]
    assert "1 ± 0.1 [0.8, 1.2] (n=5)" == str(result)
