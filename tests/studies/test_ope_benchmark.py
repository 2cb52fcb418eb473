"""ope_benchmark without simulation: bad configs are refused with the field named, the A/B test has
the buckets, shares and shadow targets the design says, and the summary's maths (relative bias,
RMSE, both coverages, Kendall tau) match hand computations and scipy on made-up tables."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from simulator.config import ConfigError
from experiments.config import ABSettings
from studies.engine.base import get_study, load_config
from studies.ope_benchmark import (OPEBenchmarkConfig, Target, accuracy, kendall_taus, order_rows, perplexity,
                                   scored)

POPULAR = Target("most_popular", "most_popular", (0.3, 0.7))
ORACLE = Target("oracle", "oracle", (0.1,))


@pytest.mark.parametrize("kw, match", [
    (dict(name="a b"), "targets: name='a b' must be non-empty letters"),
    (dict(temperatures=()), r"targets \(x\): temperatures=\[\] must be a non-empty list of numbers > 0"),
    (dict(temperatures=(0.5, -1.0)), r"temperatures=\[0.5, -1.0\] must be a non-empty list of numbers > 0"),
    (dict(temperatures=(0.5, math.inf)), "numbers > 0"),
    (dict(temperatures=(0.5, 0.5)), r"temperatures=\[0.5, 0.5\] must not repeat a temperature"),
    (dict(params={"temperature": 1.0}), r"params must not set 'temperature' \(give temperatures"),
    (dict(params=[1]), r"params=\[1\] must be a table"),
])
def test_bad_targets(kw, match):
    with pytest.raises(ConfigError, match=match):
        Target(**(dict(name="x", policy="most_popular", temperatures=(0.5,)) | kw))


@pytest.mark.parametrize("kw, match", [
    (dict(targets=()), "targets must list at least one target policy"),
    (dict(seeds=()), r"seeds=\(\) must list at least one seed"),
    (dict(logging_temperatures=()), r"logging_temperatures=\[\] must be distinct numbers > 0"),
    (dict(logging_temperatures=(0.5, 0.0)), r"logging_temperatures=\[0.5, 0.0\]"),
    (dict(logging_temperatures=(0.5, 0.5)), "must be distinct"),
    (dict(control_share=1.0), r"control_share=1.0 must be in \(0, 1\)"),
    (dict(control_share=0), r"control_share=0 must be in \(0, 1\)"),
    (dict(ab=ABSettings(learning="update")), "ab.learning='update': the benchmark needs \"frozen\""),
    (dict(targets=(POPULAR, Target("most_popular", "oracle", (0.3,)))), "target buckets must be unique"),
    (dict(rewards=("clicks",)), "rewards: 'clicks' is not a reward; valid: watch_time, effective_view"),
    (dict(rewards=()), r"rewards=\[\] must be a non-empty list"),
    (dict(rewards=("watch_time", "watch_time")), "without repeats"),
    (dict(n_samples=1), "n_samples=1 must be an integer >= 2"),
    (dict(prior_count=-1.0), "prior_count=-1.0 must be >= 0"),
    (dict(targets=(Target("x", "nope", (0.5,)),)), r"policies\[2\] \(x_t0p5\): unknown policy 'nope'"),
    (dict(targets=(Target("x", "sasrec", (0.5,), {"d_model": 0, "wings": 2}),)), r"policies\[2\] \(x_t0p5\)"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ConfigError, match=match):
        OPEBenchmarkConfig(**(dict(targets=(POPULAR, ORACLE)) | kw))


def test_the_ab_test_of_a_cell():
    c = OPEBenchmarkConfig(targets=(POPULAR, ORACLE), control_share=0.4)
    assert c.bucket_names() == ["twin", "most_popular_t0p3", "most_popular_t0p7", "oracle_t0p1"]
    e = c.experiment(0.5, seed=3)
    shares = {b.name: b.share for b in e.buckets}
    assert shares["control"] == 0.4 and sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(s == pytest.approx(0.15) for name, s in shares.items() if name != "control")
    assert e.shadow == tuple(c.bucket_names()) and e.control == "control" and e.ab.learning == "frozen"
    assert e.world.seed == 3 and e.world.platform.temperature == 0.5 and e.world.platform.log_candidates
    params = {b.name: (b.policy, b.params) for b in e.buckets}
    assert params["control"] == params["twin"] == ("production", {"temperature": 0.5})
    assert params["oracle_t0p1"] == ("oracle", {"temperature": 0.1})
    no_twin = OPEBenchmarkConfig(targets=(ORACLE,), twin=False)
    assert no_twin.bucket_names() == ["oracle_t0p1"] and no_twin.target_info()["target"].tolist() == ["oracle_t0p1"]
    assert math.isnan(c.target_info().set_index("target").loc["twin", "temperature"])


@pytest.mark.parametrize("variant", ["fast", "default", "full"])
def test_variants_load(variant):
    config = load_config(get_study("ope_benchmark"), variant=variant)
    assert config.targets and all(t.temperatures for t in config.targets)
    if variant != "fast":
        assert {t.policy for t in config.targets} == {"sasrec", "sine", "saqrec", "most_popular", "oracle"}
        assert all(len(t.temperatures) == 2 for t in config.targets)


def _estimates() -> pd.DataFrame:
    """Two targets x two cells of made-up estimates against made-up truths."""
    return pd.DataFrame({
        "seed": [0, 0, 0, 0, 1, 1, 1, 1], "logging_temperature": [0.5] * 8, "level": ["impression"] * 8,
        "reward": ["watch_time"] * 8, "estimator": ["ips", "ips", "dm", "dm"] * 2,
        "target": ["a", "b"] * 4,
        "value": [11.0, 18.0, 10.0, np.nan, 9.0, 22.0, 10.0, 20.0],
        "stderr": [1.0, 1.0, 0.1, np.nan, 1.0, 1.0, 0.1, 0.1],
        "ci_low": [9.0, 16.0, 9.8, np.nan, 7.0, 20.0, 9.8, 19.8],
        "ci_high": [13.0, 20.0, 10.2, np.nan, 11.0, 24.0, 10.2, 20.2],
        "truth": [10.0, 20.0] * 4, "truth_se": [0.5, 0.5] * 4})


def test_errors_bias_rmse_and_coverage_by_hand():
    errors = scored(_estimates(), 0.05)
    np.testing.assert_allclose(errors["rel_error"], [0.1, -0.1, 0.0, np.nan, -0.1, 0.1, 0.0, 0.0])
    assert errors["covered"].tolist() == [True, True, True, False, True, True, True, True]
    z = stats.norm.ppf(0.975)
    # ips on b in seed 0 misses by 2, within z * hypot(1, 0.5) = 2.19 (the truth's error counts too)
    assert errors["covered_joint"].tolist() == [True, True, True, False, True, True, True, True]
    assert 2 < z * math.hypot(1, 0.5)
    table = accuracy(errors, ["estimator", "target"]).set_index(["estimator", "target"])
    assert table.loc[("ips", "a"), "bias"] == pytest.approx(0.0)
    assert table.loc[("ips", "a"), "rmse"] == pytest.approx(0.1)
    assert table.loc[("dm", "b"), ["runs", "failed"]].tolist() == [1, 1]
    assert table.loc[("dm", "b"), "coverage"] == 0.5          # the failed run is not covered
    by_estimator = accuracy(errors, ["estimator"]).set_index("estimator")
    assert by_estimator.loc["ips", "rmse"] == pytest.approx(0.1)
    assert by_estimator.loc["dm", "rmse"] == 0.0 and by_estimator.loc["dm", "failed"] == 1


def test_kendall_tau_against_scipy():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        truth = rng.normal(size=5)
        for name, noise in (("good", 0.1), ("bad", 3.0)):
            value = truth + noise * rng.normal(size=5)
            rows += [{"seed": seed, "logging_temperature": 1.0, "level": "impression", "estimator": name,
                      "reward": "watch_time", "target": f"t{i}", "value": v, "truth": t}
                     for i, (v, t) in enumerate(zip(value, truth))]
    frame = pd.DataFrame(rows)
    taus = kendall_taus(frame)
    assert len(taus) == 6 and (taus["targets"] == 5).all()
    for r in taus.itertuples():
        g = frame[(frame["seed"] == r.seed) & (frame["estimator"] == r.estimator)]
        assert r.tau == pytest.approx(stats.kendalltau(g["value"], g["truth"]).statistic)
    # failed estimates (NaN) leave one cell with 2 finite pairs: tau is NaN there, and only there
    frame.loc[frame.index[:3], "value"] = np.nan
    assert kendall_taus(frame)["tau"].isna().sum() == 1


def test_order_rows_follows_levels_and_registry():
    frame = pd.DataFrame({"level": ["page", "impression", "impression"], "estimator": ["slate_rips", "snips", "ips"],
                          "target": ["a", "b", "a"]})
    out = order_rows(frame, ["ips", "snips", "slate_rips"], ["a", "b"])
    assert out["estimator"].tolist() == ["ips", "snips", "slate_rips"]


def test_perplexity():
    assert perplexity(np.zeros((2, 8)), 1.0) == pytest.approx(8.0)
    assert perplexity(np.array([[0.0, 100.0, 0.0]]), 0.1) == pytest.approx(1.0)
    assert perplexity(np.log(np.array([[0.5, 0.5, 1e-300]])), 1.0) == pytest.approx(2.0)
