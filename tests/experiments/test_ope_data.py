"""Shadow targets and the propensities of logged impressions under the logging policy and under a
target (issue 14): recomputed from the logged candidates, they equal what serving logged, and a
target that is the logging policy gets importance weight 1 everywhere."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from simulator.config import ConfigError, with_overrides
from experiments.config import ABSettings, BucketConfig, ExperimentConfig
from experiments.runner import run_experiment
from experiments.ope_data import logged_pages, propensities
from simulator.plackett_luce import conditional_propensities, log_weights, marginal_propensities
from tests_support import tiny

BUCKETS = (BucketConfig("control", "production", 0.4),
           BucketConfig("twin", "production", 0.2, {"temperature": 1.0}),
           BucketConfig("popular", "most_popular", 0.2, {"temperature": 0.5}),
           BucketConfig("oracle", "oracle", 0.2))
SHADOW = ("twin", "popular", "oracle")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    world = with_overrides(tiny(n_users=150, n_items=600, days=2), {"platform.log_candidates": True})
    config = ExperimentConfig(world=world, ab=ABSettings(pre_days=1, days=1), shadow=SHADOW, buckets=BUCKETS)
    out = tmp_path_factory.mktemp("ope") / "run"
    run_experiment(config, out, progress=False, report=False)
    return out


def test_logging_propensities_recomputed_from_candidates_equal_the_logged_ones(run):
    pages = logged_pages(run, bucket="control", days=[1])
    assert pages.targets == ["twin", "popular", "oracle"]
    cond, marg = propensities(pages)
    np.testing.assert_allclose(cond, pages.impressions["propensity"], rtol=1e-12)
    np.testing.assert_allclose(marg, pages.impressions["propensity_marginal"], rtol=1e-9)


def test_a_target_equal_to_the_logging_policy_has_weight_one(run):
    """The shadow 'twin' is production at the logging temperature: the same scores, so the same
    conditional and marginal probabilities as the logging policy (IPS weight 1)."""
    pages = logged_pages(run, bucket="control", days=[1])
    np.testing.assert_array_equal(pages.scores["twin"], pages.scores["logging"])
    for logging, target in zip(propensities(pages), propensities(pages, "twin", 1.0)):
        np.testing.assert_allclose(target / logging, 1.0, rtol=1e-12)


def test_target_propensities_follow_its_scores(run):
    """A target's probabilities are Plackett-Luce over its own logged scores at its temperature,
    for the logged page order (checked request by request)."""
    pages = logged_pages(run, bucket="control", days=[1])
    cond, marg = propensities(pages, "popular", 0.5)
    logits = log_weights(pages.scores["popular"], 0.5)
    frame = pages.impressions.assign(row=pages.row, col=pages.col, cond=cond, marg=marg)
    for _, page in list(frame.groupby("request_id"))[:100]:
        r, order = int(page["row"].iloc[0]), page["col"].to_numpy()[None, :]
        np.testing.assert_allclose(page["cond"], conditional_propensities(logits[r:r + 1], order)[0], rtol=1e-12)
        np.testing.assert_allclose(page["marg"], marginal_propensities(logits[r:r + 1], order)[0], rtol=1e-12)
    assert ((cond > 0) & (cond <= 1) & (marg > 0) & (marg <= 1)).all()


def test_shadow_targets_do_not_change_the_simulation(run, tmp_path):
    """Scoring in the shadow touches no random stream: the same run without shadow targets logs
    the same impressions."""
    from simulator.logs import read_impressions
    import simulator.config as sc
    config = sc.from_dict(ExperimentConfig, sc.read_toml(run / "config.toml"))
    run_experiment(replace(config, shadow=()), tmp_path / "plain", progress=False, report=False)
    cols = ["request_id", "item_id", "watch_time", "propensity", "propensity_marginal"]
    a = read_impressions(run / "logs", columns=cols).sort_values(["request_id", "item_id"]).reset_index(drop=True)
    b = read_impressions(tmp_path / "plain" / "logs", columns=cols).sort_values(
        ["request_id", "item_id"]).reset_index(drop=True)
    assert a.equals(b)


def test_bad_shadow_settings():
    with pytest.raises(ConfigError, match="log_candidates"):
        ExperimentConfig(world=tiny(), buckets=BUCKETS, shadow=SHADOW)
    world = with_overrides(tiny(), {"platform.log_candidates": True})
    with pytest.raises(ConfigError, match="unique"):
        ExperimentConfig(world=world, buckets=BUCKETS, shadow=("twin", "twin"))
    for bad in ("control", "nope"):
        with pytest.raises(ConfigError, match=f"shadow: '{bad}' must be a bucket other than the control"):
            ExperimentConfig(world=world, buckets=BUCKETS, shadow=(bad,))


def test_propensities_errors(run):
    pages = logged_pages(run, bucket="control", days=[1])
    with pytest.raises(ValueError, match="no scores of 'nope'"):
        propensities(pages, "nope", 1.0)
    with pytest.raises(ValueError, match="give the temperature"):
        propensities(pages, "popular")
    with pytest.raises(ValueError, match="must be > 0"):
        propensities(pages, "popular", 0.0)


# ----------------------------------------------------------------------------- estimator inputs (issue 14)
import pandas as pd  # noqa: E402

from estimators import OPEData, check_estimator, from_bandit_feedback, get_estimator, ope_ips  # noqa: E402
from experiments.ope_data import (ItemMeanReward, LoggedPages, bandit_feedback, imputed_rewards,  # noqa: E402
                                ope_data, online_value, sample_pages, satbed_ope_datasets)
from simulator.plackett_luce import exact_marginals  # noqa: E402

STOCHASTIC = (BucketConfig("control", "production", 0.5),
              BucketConfig("twin", "production", 0.25, {"temperature": 1.0}),
              BucketConfig("popular", "most_popular", 0.25, {"temperature": 0.5}))
REWARDS = ("watch_time", "effective_view", "true_satisfied")


@pytest.fixture(scope="module")
def stochastic_run(tmp_path_factory):
    """Every shadow target ranks stochastically: the twin (the logging policy) and most_popular."""
    world = with_overrides(tiny(n_users=120, n_items=500, days=2), {"platform.log_candidates": True})
    config = ExperimentConfig(world=world, ab=ABSettings(pre_days=1, days=1), shadow=("twin", "popular"), buckets=STOCHASTIC)
    out = tmp_path_factory.mktemp("ope_stochastic") / "run"
    run_experiment(config, out, progress=False, report=False)
    return out


def test_ope_data_arrays_are_the_propensities(run):
    pages = logged_pages(run, bucket="control", days=[1], columns=["watch_time", "propensity", "propensity_marginal"])
    data = ope_data(pages, "popular", 0.5, "watch_time")
    cond, marg = propensities(pages, "popular", 0.5)
    np.testing.assert_array_equal(data.action_dist, np.minimum(marg, 1.0))
    np.testing.assert_array_equal(data.action_dist_cascade, np.minimum(cond, 1.0))
    np.testing.assert_array_equal(data.pscore, pages.impressions["propensity_marginal"])
    np.testing.assert_array_equal(data.pscore_cascade, pages.impressions["propensity"])
    np.testing.assert_array_equal(data.page_id, pages.impressions["request_id"])
    np.testing.assert_array_equal(data.reward, pages.impressions["watch_time"].astype(float))
    assert data.imputed is None and data.imputed_target is None
    page = ope_data(pages, "popular", 0.5, "watch_time", level="page", target_propensities=(cond, marg))
    assert page.level == "page" and page.n == pages.impressions["request_id"].nunique()
    assert page.reward.sum() == pytest.approx(data.reward.sum())      # padding adds reward 0


def test_ope_data_errors(run):
    pages = logged_pages(run, bucket="control", days=[1], columns=["watch_time"])
    for kwargs, match in [(dict(target="nope"), "not a shadow target"), (dict(reward="like"), "must be one of"),
                          (dict(reward="true_satisfied"), "not among the impressions' columns"),
                          (dict(level="slate"), "level='slate'")]:
        args = dict(target="popular", temperature=0.5, reward="watch_time") | kwargs
        level = args.pop("level", "impression")
        with pytest.raises(ValueError, match=match):
            ope_data(pages, **args, level=level)


def test_item_mean_reward_shrinks_to_the_global_mean():
    item = np.array([0, 0, 0, 2])
    reward = np.array([1.0, 1.0, 0.0, 1.0])
    model = ItemMeanReward(prior_count=2.0).fit(item, reward)
    mean = 0.75
    np.testing.assert_allclose(model.predict([0, 1, 2, 99]), [(2 + 2 * mean) / 5, mean, (1 + 2 * mean) / 3, mean])
    assert ItemMeanReward(0.0).fit(item, reward).predict([0])[0] == pytest.approx(2 / 3)
    with pytest.raises(RuntimeError, match="fitted"):
        ItemMeanReward().predict([0])
    with pytest.raises(ValueError, match="prior_count=-1"):
        ItemMeanReward(-1).fit(item, reward)
    with pytest.raises(ValueError, match="one length"):
        ItemMeanReward().fit(item, reward[:2])


def _tiny_pages(logits_target: np.ndarray, n_requests: int = 3, k: int = 3) -> LoggedPages:
    """A hand-built log: n_requests requests of C candidates, each with a logged page of k items."""
    c = logits_target.shape[1]
    candidates = np.arange(n_requests * c).reshape(n_requests, c)
    requests = pd.DataFrame({"request_id": np.arange(n_requests), "temperature": 1.0})
    impressions = pd.DataFrame({"request_id": np.repeat(np.arange(n_requests), k),
                                "position": np.tile(np.arange(k), n_requests),
                                "item_id": candidates[:, :k].ravel()})
    return LoggedPages(impressions, requests, candidates, {"logging": np.zeros((n_requests, c)), "t": logits_target},
                       np.repeat(np.arange(n_requests), k), np.tile(np.arange(k), n_requests))


def test_imputed_target_matches_exact_enumeration():
    """The Monte-Carlo mean over target pages equals sum_a P(a at j) q_hat(a) from exact enumeration
    of every page (5 candidates, 3 slots), within 4 of its own standard errors, and its standard error
    is the samples' sd / sqrt(M)."""
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(3, 5))
    pages = _tiny_pages(scores)
    model = ItemMeanReward(0.0).fit(np.arange(15), rng.random(15))
    imputed, target, se = imputed_rewards(pages, model, "t", 0.5, n_samples=20_000, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(imputed, model.predict(pages.impressions["item_id"]))
    exact = []
    for r in range(3):
        marg = exact_marginals(log_weights(scores[r:r + 1], 0.5)[0], 3)            # (C, k)
        exact += list(model.predict(pages.candidates[r]) @ marg)
    assert np.all(np.abs(target - np.array(exact)) < 4 * se)
    assert np.all((se > 0) & (se < 0.01))
    again = imputed_rewards(pages, model, "t", 0.5, n_samples=20_000, rng=np.random.default_rng(1))[1]
    other = imputed_rewards(pages, model, "t", 0.5, n_samples=20_000, rng=np.random.default_rng(2))[1]
    np.testing.assert_array_equal(target, again)
    assert not np.array_equal(target, other)


def test_sample_pages_draws_plackett_luce_pages():
    logits = np.log(np.array([[0.5, 0.3, 0.2]]))
    pages = sample_pages(logits, 2, 40_000, np.random.default_rng(0))
    assert pages.shape == (1, 40_000, 2) and (pages[0, :, 0] != pages[0, :, 1]).all()
    first = np.bincount(pages[0, :, 0], minlength=3) / 40_000
    np.testing.assert_allclose(first, [0.5, 0.3, 0.2], atol=0.01)
    np.testing.assert_allclose(np.mean((pages[0, :, 0] == 1) & (pages[0, :, 1] == 0)), 0.3 * 0.5 / 0.7, atol=0.01)
    for args, error, match in [((logits, 4, 10), ValueError, "k=4"), ((logits, 1, 0), ValueError, "n_samples=0")]:
        with pytest.raises(error, match=match):
            sample_pages(*args, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        sample_pages(logits, 1, 1, 0)


def test_satbed_ope_datasets_truths_and_twin(stochastic_run):
    datasets = satbed_ope_datasets(stochastic_run, REWARDS, levels=("impression", "page"), n_samples=8)
    assert [(d.target, d.reward, d.level) for d in datasets] == [
        (t, r, lev) for t in ("twin", "popular") for r in REWARDS for lev in ("impression", "page")]
    from simulator.logs import read_impressions
    logs = read_impressions(stochastic_run / "logs", days=[1], columns=["bucket", "request_id", *REWARDS])
    for d in datasets:
        own = logs[logs["bucket"] == d.target]
        control = logs[logs["bucket"] == "control"]
        per = (lambda g: len(g)) if d.level == "impression" else (lambda g: g["request_id"].nunique())
        assert d.truth.value == pytest.approx(own[d.reward].astype(float).sum() / per(own), rel=1e-12)
        assert d.logged.value == pytest.approx(control[d.reward].astype(float).sum() / per(control), rel=1e-12)
        assert d.truth.ci_low < d.truth.value < d.truth.ci_high
        assert ((d.data.pscore > 0) & (d.data.pscore <= 1)).all()
        assert d.temperature == {"twin": 1.0, "popular": 0.5}[d.target]
        assert d.mc_stderr >= 0
    # the twin is the logging policy: weight 1 everywhere, so IPS is the logged mean, exactly
    for d in datasets:
        if d.target == "twin":
            np.testing.assert_allclose(d.data.action_dist / d.data.pscore, 1.0, rtol=1e-9)
            if d.level == "impression":
                assert get_estimator("ips")(d.data).value == pytest.approx(d.logged.value, rel=1e-9)
    # the pairs feed the shipped checker
    report = check_estimator("ips", [d.pair for d in datasets if d.level == "impression"])
    assert report.n_datasets == 6 and np.isfinite(report.rmse)


def test_satbed_ope_datasets_refuses_a_deterministic_target(run):
    with pytest.raises(ValueError, match="'oracle' ranks deterministically"):
        satbed_ope_datasets(run)
    with pytest.raises(ValueError, match="reward='clicks'"):
        satbed_ope_datasets(run, ("clicks",))


def test_online_value_errors(stochastic_run):
    with pytest.raises(ValueError, match="level='slate'"):
        online_value(stochastic_run, "twin", "watch_time", days=[1], level="slate")
    with pytest.raises(ValueError, match="reward='like'"):
        online_value(stochastic_run, "twin", "like", days=[1])


def test_bandit_feedback_round_trips(stochastic_run):
    pages = logged_pages(stochastic_run, bucket="control", days=[1], columns=["watch_time", "propensity_marginal"])
    feedback = bandit_feedback(pages, "watch_time")
    back = from_bandit_feedback(feedback)
    assert feedback["n_rounds"] == len(pages.impressions) and feedback["n_actions"] == pages.candidates.max() + 1
    np.testing.assert_array_equal(back.action, pages.impressions["item_id"])
    np.testing.assert_array_equal(back.position, pages.impressions["position"])
    np.testing.assert_array_equal(back.pscore, pages.impressions["propensity_marginal"])
    assert feedback["action_dist"] is None
    # obp's pscore is the marginal: with the target's marginal it gives the same IPS as ope_data
    _, marg = propensities(pages, "popular", 0.5)
    data = ope_data(pages, "popular", 0.5, "watch_time")
    assert ope_ips(back.reward, back.pscore, np.minimum(marg, 1)).value == pytest.approx(
        get_estimator("ips")(data).value, rel=1e-12)
    assert isinstance(data, OPEData)
