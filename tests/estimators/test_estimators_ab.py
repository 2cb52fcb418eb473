"""A/B statistics: agreement with scipy / statsmodels, and A/A and coverage checks vs the truth."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

import estimators as est

# --- a heavy-tailed world of users -----------------------------------------------------------
# Each user has an activity z: impressions n = 1 + Poisson(lam), lam = exp(A + B z); a per-
# impression mean watch time mu = exp(C + D z + S eps) (lognormal: heavy-tailed users); each
# impression's watch time is mu * Gamma(K, 1 / K) (mean mu). A user's total watch time is then
# mu * Gamma(n K, 1 / K), drawn in one go.
A, B, C, D, S, K = np.log(8.0), 0.6, np.log(20.0), 0.3, 0.8, 0.5


def _moment(i: int, j: int) -> float:
    """E[lam^i mu^j] of the lognormal pair above."""
    return float(np.exp(i * A + j * C + ((i * B + j * D) ** 2 + (j * S) ** 2) / 2))


# the population's average video watch time, E[watch per user] / E[impressions per user]
TRUE_AVT = (_moment(0, 1) + _moment(1, 1)) / (1 + _moment(1, 0))


def _users(rng: np.random.Generator, shape: tuple, effect: float = 1.0):
    """Per-user (mu, impressions) of the given shape; ``effect`` multiplies watch time."""
    z = rng.normal(size=shape)
    impressions = 1 + rng.poisson(np.exp(A + B * z))
    mu = effect * np.exp(C + D * z + S * rng.normal(size=shape))
    return mu, impressions


def _total_watch(rng: np.random.Generator, mu: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    return mu * rng.gamma(impressions * K, 1 / K)


# --- agreement with reference implementations -------------------------------------------------


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    control, treatment = rng.lognormal(size=300), rng.lognormal(size=500) + 0.1
    result = est.mean_difference(control, treatment, alpha=0.1)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    ci = reference.confidence_interval(confidence_level=0.9)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert result.difference.ci_low == pytest.approx(ci.low, rel=1e-10)
    assert result.difference.ci_high == pytest.approx(ci.high, rel=1e-10)
    assert result.difference.value == pytest.approx(treatment.mean() - control.mean())
    assert (result.control, result.treatment) == pytest.approx((control.mean(), treatment.mean()))
    assert (result.n_control, result.n_treatment, result.method) == (300, 500, "welch")


def test_ratio_difference_uses_the_delta_method_variance():
    rng = np.random.default_rng(1)
    den_c, den_t = rng.poisson(5, size=400) + 1, rng.poisson(6, size=300) + 1
    num_c, num_t = den_c * rng.gamma(2, 3, size=400), den_t * rng.gamma(2, 3.3, size=300)

    def var_ratio(num, den):  # textbook form: (s_nn - 2 R s_nd + R^2 s_dd) / (n mean(den)^2)
        ratio = num.sum() / den.sum()
        cov = np.cov(num, den)
        return (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (
            len(num) * den.mean() ** 2
        )

    result = est.ratio_difference(num_c, den_c, num_t, den_t)
    se = np.sqrt(var_ratio(num_c, den_c) + var_ratio(num_t, den_t))
    diff = num_t.sum() / den_t.sum() - num_c.sum() / den_c.sum()
    assert result.difference.value == pytest.approx(diff)
    assert result.difference.stderr == pytest.approx(se, rel=1e-10)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(diff) / se), rel=1e-8)
    assert result.method == "delta"


def test_relative_lift_and_its_delta_method_interval():
    rng = np.random.default_rng(2)
    control, treatment = rng.normal(10, 2, size=1000), rng.normal(11, 2, size=1000)
    result = est.mean_difference(control, treatment)
    mc, mt = control.mean(), treatment.mean()
    vc, vt = control.var(ddof=1) / 1000, treatment.var(ddof=1) / 1000
    assert result.lift.value == pytest.approx(mt / mc - 1)
    assert result.lift.stderr == pytest.approx(np.sqrt(vt / mc**2 + mt**2 * vc / mc**4))
    row = result.as_row()
    assert row["lift"] == result.lift.value and row["p_value"] == result.p_value


def test_holm_and_bh_by_hand_and_equal_to_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(est.adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(est.adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    many = np.random.default_rng(3).beta(0.3, 1.0, size=40)
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        np.testing.assert_array_equal(
            est.adjust_pvalues(many, ours), multipletests(many, method=theirs)[1]
        )


def test_srm_flags_a_50500_49500_split_and_not_a_fair_one():
    statistic, p_value = est.srm_test([50_500, 49_500])
    assert statistic == pytest.approx(10.0)
    assert p_value == pytest.approx(stats.chi2.sf(10.0, 1), rel=1e-9)
    assert p_value == pytest.approx(1.565e-3, abs=1e-6)
    assert est.srm_test([50_000, 50_000]).p_value == pytest.approx(1.0)
    assert est.srm_test([50_100, 49_900]).p_value > 0.5
    # unequal designed shares: the shares decide what is fair
    assert est.srm_test([20_000, 80_000], [0.2, 0.8]).p_value == pytest.approx(1.0)
    assert est.srm_test([20_000, 80_000]).p_value < 1e-100


def test_power_and_mde_agree_with_statsmodels_and_with_each_other():
    mde = est.minimum_detectable_effect(2.0, 1000, 1500, alpha=0.05, power=0.8)
    assert est.power(mde, 2.0, 1000, 1500) == pytest.approx(0.8, abs=1e-6)
    reference = NormalIndPower().power(0.1, nobs1=1000, alpha=0.05, ratio=1.5)
    assert est.power(0.2, 2.0, 1000, 1500) == pytest.approx(reference, rel=1e-8)
    reference_mde = NormalIndPower().solve_power(nobs1=1000, alpha=0.05, power=0.8, ratio=1.5)
    assert mde == pytest.approx(2.0 * reference_mde, rel=1e-4)
    assert est.power(0.0, 2.0, 1000) == pytest.approx(0.05)  # no effect: power = alpha


# --- degenerate inputs --------------------------------------------------------------------------


def test_constant_arms_give_an_exact_finite_answer():
    same = est.mean_difference([3.0, 3.0, 3.0], [3.0, 3.0])
    assert (same.difference.value, same.difference.stderr, same.p_value) == (0.0, 0.0, 1.0)
    shifted = est.mean_difference([1.0, 1.0], [2.0, 2.0])
    assert (shifted.difference.value, shifted.p_value, shifted.lift.value) == (1.0, 0.0, 1.0)
    assert (shifted.difference.ci_low, shifted.difference.ci_high) == (1.0, 1.0)
    ratio = est.ratio_difference([2.0, 4.0], [1.0, 2.0], [6.0, 3.0], [2.0, 1.0])
    assert (ratio.difference.value, ratio.difference.stderr, ratio.p_value) == (1.0, 0.0, 0.0)


# scipy warns about the constant arm; the p-value is still right
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_one_constant_arm_matches_scipy():
    control, treatment = np.full(50, 2.0), np.random.default_rng(4).normal(2.3, 1.0, size=40)
    result = est.mean_difference(control, treatment)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue)


def test_zero_control_gives_no_lift_but_a_difference():
    result = est.ratio_difference([0.0, 0.0, 0.0], [1, 2, 1], [1.0, 0.0, 2.0], [1, 1, 2])
    assert result.lift is None and result.as_row()["lift"] is None
    assert result.difference.value == pytest.approx(0.75)
    assert np.isfinite(result.p_value)


def test_cuped_with_a_constant_covariate_changes_nothing():
    y = np.array([1.0, 5.0, 2.0])
    adjusted, theta = est.cuped(y, np.ones(3))
    assert theta == 0.0
    np.testing.assert_array_equal(adjusted, y)


# --- CUPED ----------------------------------------------------------------------------------------


def test_cuped_sample_variance_shrinks_by_exactly_one_minus_r_squared():
    rng = np.random.default_rng(5)
    mu, impressions = _users(rng, (5000,))
    pre, post = _total_watch(rng, mu, impressions), _total_watch(rng, mu, impressions)
    adjusted, theta = est.cuped(post, pre)
    r = np.corrcoef(pre, post)[0, 1]
    assert adjusted.mean() == pytest.approx(post.mean())
    assert adjusted.var() / post.var() == pytest.approx(1 - r**2, rel=1e-9)
    assert theta == pytest.approx(np.cov(pre, post)[0, 1] / pre.var(ddof=1))


@pytest.mark.slow
def test_cuped_shrinks_the_variance_of_the_difference_by_one_minus_rho_squared_and_stays_valid():
    # same users before and after: pre- and post-period watch share mu and the impressions
    e_mun, e_mu2n = _moment(0, 1) + _moment(1, 1), _moment(0, 2) + _moment(1, 2)
    e_mu2n2 = _moment(0, 2) + 3 * _moment(1, 2) + _moment(2, 2)  # E[n^2 | lam] = 1 + 3 lam + lam^2
    var_mun = e_mu2n2 - e_mun**2
    rho = var_mun / (var_mun + e_mu2n / K)  # corr(pre, post): the Gamma noise is independent

    reps, n = 2000, 1000
    rng = np.random.default_rng(6)
    mu, impressions = _users(rng, (reps, 2, n))
    # pre-period covariate in minutes, post-period metric in seconds: theta is not 1
    pre, post = _total_watch(rng, mu, impressions) / 60, _total_watch(rng, mu, impressions)
    raw = [est.mean_difference(post[i, 0], post[i, 1]) for i in range(reps)]
    adjusted = [est.mean_difference(post[i, 0], post[i, 1], control_pre=pre[i, 0],
                                    treatment_pre=pre[i, 1]) for i in range(reps)]
    ratio = np.var([a.difference.value for a in adjusted]) / np.var(
        [r.difference.value for r in raw]
    )
    reject = np.mean([a.p_value < 0.05 for a in adjusted])
    print(f"rho {rho:.3f}: variance ratio {ratio:.3f} vs 1 - rho^2 = {1 - rho**2:.3f}; "
          f"CUPED A/A rejection {reject:.4f}")
    assert ratio == pytest.approx(1 - rho**2, rel=0.15)
    assert 0.03 <= reject <= 0.07
    assert adjusted[0].method == "welch+cuped"


# --- A/A and coverage -------------------------------------------------------------------------


@pytest.mark.slow
def test_aa_welch_and_delta_method_reject_at_alpha():
    # users are i.i.d., so the two arms of each replication are a random split of 2n users
    reps, n = 2000, 1000
    rng = np.random.default_rng(7)
    mu, impressions = _users(rng, (reps, 2, n))
    watch = _total_watch(rng, mu, impressions)  # (reps, 2 arms, n users)
    welch = np.mean([est.mean_difference(watch[i, 0], watch[i, 1]).p_value < 0.05
                     for i in range(reps)])
    delta = np.mean([est.ratio_difference(watch[i, 0], impressions[i, 0],
                                          watch[i, 1], impressions[i, 1]).p_value < 0.05
                     for i in range(reps)])
    print(f"A/A rejection at 0.05: Welch (AUT) {welch:.4f}, delta (AVT) {delta:.4f}")
    assert 0.03 <= welch <= 0.07
    assert 0.03 <= delta <= 0.07


@pytest.mark.slow
def test_delta_method_intervals_cover_the_true_ratio_difference():
    reps, n = 2000, 1000
    rng = np.random.default_rng(8)
    control = _users(rng, (reps, n))
    treatment = _users(rng, (reps, n), effect=1.05)  # +5% watch time per impression
    watch_c, watch_t = _total_watch(rng, *control), _total_watch(rng, *treatment)
    results = [est.ratio_difference(watch_c[i], control[1][i], watch_t[i], treatment[1][i])
               for i in range(reps)]
    cover_diff = np.mean([r.difference.contains(0.05 * TRUE_AVT) for r in results])
    cover_lift = np.mean([r.lift.contains(0.05) for r in results])
    print(f"true AVT {TRUE_AVT:.2f}s; coverage: difference {cover_diff:.4f}, lift {cover_lift:.4f}")
    assert 0.92 <= cover_diff <= 0.97
    assert 0.92 <= cover_lift <= 0.97


@pytest.mark.slow
def test_per_impression_t_test_on_avt_over_rejects():
    # The wrong unit, shown as a contrast: impressions of one user are correlated (they share
    # mu), so a t-test that treats impressions as independent has too small a standard error.
    reps, n = 300, 1000
    rng = np.random.default_rng(9)
    mu, impressions = _users(rng, (reps, 2, n))
    wrong, right = [], []
    for i in range(reps):
        arms = [np.repeat(mu[i, a], impressions[i, a])
                * rng.gamma(K, 1 / K, size=impressions[i, a].sum()) for a in (0, 1)]
        wrong.append(est.mean_difference(arms[0], arms[1]).p_value < 0.05)
        per_user = [np.bincount(np.repeat(np.arange(n), impressions[i, a]), weights=arms[a])
                    for a in (0, 1)]
        right.append(est.ratio_difference(per_user[0], impressions[i, 0], per_user[1],
                                          impressions[i, 1]).p_value < 0.05)
    print(f"A/A rejection on AVT: per-impression t-test {np.mean(wrong):.3f}, "
          f"per-user delta method {np.mean(right):.3f}")
    assert np.mean(wrong) > 0.2
    assert np.mean(right) < 0.09


@pytest.mark.slow
def test_srm_rejects_at_alpha_under_fair_assignment():
    counts = np.random.default_rng(10).binomial(100_000, 0.5, size=4000)
    reject = np.mean([est.srm_test([c, 100_000 - c]).p_value < 0.05 for c in counts])
    print(f"SRM rejection at 0.05 under fair assignment: {reject:.4f}")
    assert 0.035 <= reject <= 0.065


@pytest.mark.slow
def test_power_is_the_simulated_rejection_rate_at_the_mde():
    reps, n, sd = 2000, 500, 3.0
    mde = est.minimum_detectable_effect(sd, n, power=0.8)
    rng = np.random.default_rng(11)
    control, treatment = rng.normal(0, sd, size=(reps, n)), rng.normal(mde, sd, size=(reps, n))
    reject = np.mean([est.mean_difference(control[i], treatment[i]).p_value < 0.05
                      for i in range(reps)])
    print(f"simulated power at the MDE ({mde:.4f}): {reject:.4f}")
    assert reject == pytest.approx(0.8, abs=0.03)


# --- bootstrap ----------------------------------------------------------------------------------


def _diff_of_means(c, t):
    return t.mean(axis=-1) - c.mean(axis=-1)


def test_bootstrap_is_reproducible_and_vectorised_equals_looped():
    rng = np.random.default_rng(12)
    c, t = rng.lognormal(size=200), rng.lognormal(size=150)
    first = est.bootstrap_ci(c, t, statistic=_diff_of_means, rng=np.random.default_rng(1))
    again = est.bootstrap_ci(c, t, statistic=_diff_of_means, rng=np.random.default_rng(1))
    other = est.bootstrap_ci(c, t, statistic=_diff_of_means, rng=np.random.default_rng(2))
    vectorised = est.bootstrap_ci(c, t, statistic=_diff_of_means, rng=np.random.default_rng(1),
                                  vectorized=True)
    assert first == again
    assert first.ci_low != other.ci_low
    assert vectorised.ci_low == pytest.approx(first.ci_low, rel=1e-12)
    assert vectorised.stderr == pytest.approx(first.stderr, rel=1e-12)
    assert first.value == pytest.approx(t.mean() - c.mean())


def test_bootstrap_agrees_with_welch_and_with_the_delta_method_on_large_samples():
    rng = np.random.default_rng(13)
    c, t = rng.normal(10, 3, size=5000), rng.normal(10.2, 3, size=5000)
    boot = est.bootstrap_ci(c, t, statistic=_diff_of_means, rng=rng, vectorized=True)
    welch = est.mean_difference(c, t).difference
    width = welch.ci_high - welch.ci_low
    assert abs(boot.ci_low - welch.ci_low) < 0.05 * width
    assert abs(boot.ci_high - welch.ci_high) < 0.05 * width
    # a ratio metric: per-user (numerator, denominator) rows resampled together
    mu, impressions = _users(rng, (2, 3000))
    watch = _total_watch(rng, mu, impressions)
    arms = [np.column_stack([watch[a], impressions[a]]) for a in (0, 1)]

    def ratio_diff(c, t):
        return (t[..., 0].sum(-1) / t[..., 1].sum(-1)) - (c[..., 0].sum(-1) / c[..., 1].sum(-1))

    boot = est.bootstrap_ci(*arms, statistic=ratio_diff, rng=rng, vectorized=True)
    delta = est.ratio_difference(watch[0], impressions[0], watch[1], impressions[1]).difference
    assert boot.value == pytest.approx(delta.value)
    assert boot.stderr == pytest.approx(delta.stderr, rel=0.1)
