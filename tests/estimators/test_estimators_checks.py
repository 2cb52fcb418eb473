"""check_estimator: right estimators pass, biased ones are flagged, broken ones fail loudly."""

import numpy as np
import pytest

import estimators as est


@pytest.fixture(scope="module")
def impressions():
    return est.synthetic_ope_datasets(200, 1000, seed=0)


@pytest.fixture(scope="module")
def pages():
    return est.synthetic_ope_datasets(200, 500, seed=3, level="page")


def test_synthetic_datasets_are_seeded_and_prefix_stable():
    a = est.synthetic_ope_datasets(3, 50, seed=1)
    b = est.synthetic_ope_datasets(5, 50, seed=1)
    c = est.synthetic_ope_datasets(3, 50, seed=2)
    for (da, ta), (db, tb) in zip(a, b):
        assert ta == tb
        for name in da.names:
            np.testing.assert_array_equal(getattr(da, name), getattr(db, name))
    assert not np.array_equal(a[0][0].reward, a[1][0].reward)  # datasets differ
    assert a[0][1] != c[0][1]  # another seed, another world
    page = est.synthetic_ope_datasets(2, 40, seed=1, level="page", n_actions=4, page_len=2)
    assert page[0][0].level == "page" and page[0][0].reward.shape == (40, 2)
    assert page[0][0].names == ("reward", "pscore", "action_dist", "pscore_cascade",
                                "action_dist_cascade")
    # the top position's marginal is its conditional (nothing above it); below, they differ
    d = page[0][0]
    np.testing.assert_allclose(d.pscore[:, 0], d.pscore_cascade[:, 0], rtol=1e-12)
    assert not np.allclose(d.pscore[:, 1], d.pscore_cascade[:, 1])


def test_correct_ips_passes_with_nominal_coverage(impressions):
    report = est.check_estimator("ips", impressions)
    assert report.passed(), str(report)
    assert 0.91 <= report.coverage <= 0.99
    assert abs(report.bias_z) < 3
    assert report.n_datasets == 200 and report.level == "impression"
    assert report.rmse == pytest.approx(np.sqrt(np.mean(report.error**2)))
    text = str(report)
    assert "check_estimator('ips') on 200 impression-level datasets" in text
    assert "coverage" in text and text.endswith("passed")


@pytest.mark.parametrize("name", ["snips", "dr", "sndr"])
def test_other_consistent_impression_estimators_pass(impressions, name):
    assert est.check_estimator(name, impressions).passed()


@pytest.mark.parametrize("name", ["slate_standard_ips", "slate_independent_ips", "slate_rips"])
def test_slate_estimators_pass(pages, name):
    assert est.check_estimator(name, pages).passed()


def test_the_wrong_propensity_is_flagged(pages):
    def independent_ips_with_conditionals(reward, pscore_cascade, action_dist_cascade, *,
                                          alpha=0.05):
        """Independent IPS fed the log's propensity column instead of propensity_marginal."""
        return est.slate_independent_ips(reward, pscore_cascade, action_dist_cascade,
                                         alpha=alpha)

    report = est.check_estimator(independent_ips_with_conditionals, pages)
    assert not report.passed()
    assert report.bias_z > 5
    assert "FAILED: bias" in str(report)


def test_a_biased_reward_model_and_a_wrong_logging_guess_are_flagged(impressions):
    dm = est.check_estimator("dm", impressions)
    assert not dm.passed()
    assert any("standard errors from 0" in f for f in dm.failures())
    assert any("coverage" in f for f in dm.failures())

    def ips_assuming_uniform_logging(reward, pscore, action_dist, *, alpha=0.05):
        return est.ope_ips(reward, np.full(len(pscore), 0.2), action_dist, alpha=alpha)

    assert not est.check_estimator(ips_assuming_uniform_logging, impressions).passed()


def test_failures_thresholds():
    truth = np.zeros(100)
    value = np.linspace(-1, 1, 100) + 0.05  # bias 0.05, bias_se about 0.058
    report = est.CheckReport("x", "impression", 0.05, truth, value, np.full(100, 0.6),
                             value - 1.1, value + 1.1)
    assert report.coverage == 1.0 and report.passed()
    assert report.failures(bias_tol_se=0.5) == [
        f"bias +0.05 is {report.bias_z:.1f} standard errors from 0 (allowed 0.5)"]
    half = np.where(np.arange(100) < 50, 2.0, 0.01)  # only the first 50 intervals reach 0
    narrow = est.CheckReport("x", "impression", 0.05, truth, value, half, value - half,
                             value + half)
    assert narrow.coverage == 0.5
    assert narrow.failures() == ["coverage 0.500 is below nominal 0.950 (99% interval reaches "
                                 f"only {narrow.coverage_ci()[1]:.3f})"]
    assert narrow.passed(min_coverage=0.5) and not narrow.passed(min_coverage=0.6)
    exact = est.CheckReport("x", "impression", 0.05, truth, truth, truth, truth, truth)
    assert exact.bias_z == 0.0 and exact.passed()


def _bare(n=20):
    return est.OPEData(reward=np.linspace(0, 1, n), pscore=np.full(n, 0.5),
                       action_dist=np.full(n, 0.25))


def test_bad_estimators_and_datasets_fail_loudly():
    data = [(_bare(), 0.25)] * 3

    def returns_float(reward, *, alpha=0.05):
        return float(reward.mean())

    with pytest.raises(TypeError, match="'returns_float' returned float, not an Estimate"):
        est.check_estimator(returns_float, data)

    def nan_value(reward, *, alpha=0.05):
        return est.Estimate(float("nan"), 0.1, 0.0, 1.0, len(reward))

    with pytest.raises(ValueError, match="'nan_value' returned an Estimate with value=nan"):
        est.check_estimator(nan_value, data)

    def crashes(reward, pscore, *, alpha=0.05):
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError, match="oops") as info:
        est.check_estimator(crashes, data)
    assert "(while checking estimator 'crashes' on dataset 0)" in info.value.__notes__

    with pytest.raises(ValueError, match="estimator 'dr' needs imputed, imputed_target"):
        est.check_estimator("dr", data)
    with pytest.raises(ValueError, match="'slate_rips' is for level 'page' data"):
        est.check_estimator("slate_rips", data)
    with pytest.raises(est.UnknownEstimatorError, match="unknown estimator 'rips'"):
        est.check_estimator("rips", data)
    with pytest.raises(ValueError, match="which is not a standard name"):
        est.check_estimator(lambda rewards, alpha: None, data)


@pytest.mark.parametrize(("datasets", "exc", "match"), [
    ([(_bare(), 0.25)], ValueError, "needs at least 2 datasets, got 1"),
    ([], ValueError, "needs at least 2 datasets, got 0"),
    ([(_bare(), 0.25), (_bare(), float("nan"))], ValueError,
     "dataset 1: truth must be a finite number, got nan"),
    ([(_bare(), 0.25), (_bare(), None)], ValueError, "dataset 1: truth must be a finite number"),
    ([(_bare(), 0.25), _bare()], TypeError, r"dataset 1 must be an \(OPEData, truth\) pair, "
                                            "got OPEData"),
    ([({"reward": [1, 2]}, 0.25)], TypeError, r"dataset 0 must be an \(OPEData, truth\) pair, "
                                              r"got tuple of \(dict, float\)"),
    ([(_bare(), 0.25), (est.OPEData(level="page", reward=np.ones((4, 2))), 1.0)], ValueError,
     "dataset 1 is of level 'page', dataset 0 of 'impression'"),
])
def test_bad_dataset_lists_are_rejected(datasets, exc, match):
    with pytest.raises(exc, match=match):
        est.check_estimator("ips", datasets)


def test_check_estimator_argument_checks():
    data = [(_bare(), 0.25)] * 2
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        est.check_estimator("ips", data, alpha=1.5)
    with pytest.raises(TypeError, match="estimator must be a registered name"):
        est.check_estimator(42, data)
    report = est.check_estimator(est.get_estimator("ips"), data, alpha=0.1)
    assert report.alpha == 0.1 and report.name == "ips"
    with pytest.raises(ValueError, match="read-only"):
        report.value[0] = 1.0
