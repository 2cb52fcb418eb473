"""The main job's question: did using questionnaires raise satisfaction (a bucket against its click-only twin)?"""
from __future__ import annotations

import pandas as pd
import pytest

from simulator.config import ConfigError
from experiments.config import DEFAULT_QUESTIONNAIRE_PAIRS, BucketConfig, ExperimentConfig
from experiments.report import questionnaire_reading


def test_default_pairs_apply_to_the_default_buckets_only():
    assert ExperimentConfig().questionnaire_pairs == DEFAULT_QUESTIONNAIRE_PAIRS
    other = (BucketConfig("control", "production", 0.5), BucketConfig("sasrec", "sasrec", 0.5))
    assert ExperimentConfig(buckets=other).questionnaire_pairs == ()


def test_a_pair_naming_a_missing_bucket_is_an_error():
    buckets = (BucketConfig("control", "production", 0.5), BucketConfig("usm", "usm", 0.5))
    with pytest.raises(ConfigError, match="questionnaire_pairs"):
        ExperimentConfig(buckets=buckets, questionnaire_pairs=(("usm", "usm_click"),))


def _pair(sat: tuple[float, float, float], aut_significant: bool = False) -> pd.DataFrame:
    lift, low, high = sat
    rows = [{"bucket": "easq", "twin": "easq_click", "metric": "oracle_satisfaction", "lift": lift,
             "lift_ci_low": low, "lift_ci_high": high, "significant": False},
            {"bucket": "easq", "twin": "easq_click", "metric": "aut", "lift": -0.02, "lift_ci_low": -0.03,
             "lift_ci_high": -0.01, "significant": aut_significant},
            {"bucket": "easq", "twin": "easq_click", "metric": "survey_like_rate_debiased", "lift": 0.05,
             "lift_ci_low": 0.0, "lift_ci_high": 0.1, "significant": False}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sat, answer", [((0.04, 0.01, 0.07), "**Yes.**"),
                                         ((0.01, -0.02, 0.04), "**Not detectably.**"),
                                         ((-0.04, -0.07, -0.01), "**No: it lowered it.**")])
def test_the_reading_follows_the_oracle_interval(sat, answer):
    (line,) = questionnaire_reading(_pair(sat, aut_significant=True))
    assert line.startswith(f"- {answer}")
    assert "`easq_click`" in line and f"{100 * sat[0]:+.2f}%" in line
    assert "significantly down" in line
