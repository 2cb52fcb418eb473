"""Ranking metrics: known ranks, ties, AUC against Mann-Whitney / brute force, GAUC and UAUC."""

import numpy as np
import pytest
from scipy import stats

import estimators as est

N_NEG = 99  # SAQRec's protocol: one positive against 99 sampled negatives


def _at_rank(rank: int, n_users: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scores that put every user's positive at 1-based ``rank`` among N_NEG negatives."""
    negatives = np.concatenate([np.full(rank - 1, 2.0), np.full(N_NEG - rank + 1, 0.0)])
    return np.full(n_users, 1.0), np.tile(negatives, (n_users, 1))


@pytest.mark.parametrize("rank", [1, 2, 3, 5, 10, 11, 50, 100])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_positive_at_rank_r(rank, k):
    pos, neg = _at_rank(rank)
    assert est.mrr(pos, neg).value == pytest.approx(1 / rank)
    assert est.hit_rate(pos, neg, k=k).value == float(rank <= k)
    expected_ndcg = 1 / np.log2(rank + 1) if rank <= k else 0.0
    assert est.ndcg(pos, neg, k=k).value == pytest.approx(expected_ndcg)


def test_mean_over_users_and_its_standard_error():
    pos = np.array([1.0, 1.0, 1.0, 1.0])
    neg = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 0.0]])  # ranks 1, 2, 3, 1
    result = est.mrr(pos, neg)
    terms = np.array([1, 1 / 2, 1 / 3, 1])
    assert result.value == pytest.approx(terms.mean())
    assert result.stderr == pytest.approx(terms.std(ddof=1) / 2)
    assert result.n == 4


def test_all_tied_scores_give_the_chance_level_by_default():
    pos, neg = np.zeros(2), np.zeros((2, N_NEG))
    ranks = np.arange(1, N_NEG + 2)  # equally likely positions of the positive
    assert est.hit_rate(pos, neg, k=10).value == pytest.approx(10 / (N_NEG + 1))
    assert est.mrr(pos, neg).value == pytest.approx(np.mean(1 / ranks))
    assert est.ndcg(pos, neg, k=10).value == pytest.approx(
        np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0))
    )
    assert est.hit_rate(pos, neg, k=10, ties="pessimistic").value == 0.0
    assert est.hit_rate(pos, neg, k=10, ties="optimistic").value == 1.0


def test_expected_ties_equal_random_tie_breaking_on_average():
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 4, size=200).astype(float)  # coarse scores: many ties
    neg = rng.integers(0, 4, size=(200, 20)).astype(float)
    jitter_mrr, jitter_hr = [], []
    for _ in range(400):  # break the ties at random by a tiny jitter
        jp = pos + rng.random(200) * 1e-3
        jn = neg + rng.random((200, 20)) * 1e-3
        jitter_mrr.append(est.mrr(jp, jn).value)
        jitter_hr.append(est.hit_rate(jp, jn, k=3).value)
    assert est.mrr(pos, neg).value == pytest.approx(np.mean(jitter_mrr), abs=2e-3)
    assert est.hit_rate(pos, neg, k=3).value == pytest.approx(np.mean(jitter_hr), abs=3e-3)
    assert (est.mrr(pos, neg, ties="pessimistic").value < est.mrr(pos, neg).value
            < est.mrr(pos, neg, ties="optimistic").value)


# --- AUC -----------------------------------------------------------------------------------------


def _brute_force_delong(label, score):
    """O(n_pos * n_neg) AUC and DeLong variance from the pairwise kernel."""
    pos, neg = score[label == 1], score[label == 0]
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = kernel.mean(axis=1), kernel.mean(axis=0)
    return kernel.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_auc_equals_mann_whitney_and_brute_force_delong_with_ties():
    rng = np.random.default_rng(1)
    label = (rng.random(600) < 0.3).astype(int)
    score = np.round(label * 0.7 + rng.normal(size=600), 1)  # rounding creates ties
    result = est.auc(label, score)
    u = stats.mannwhitneyu(score[label == 1], score[label == 0]).statistic
    assert result.value == pytest.approx(u / (label.sum() * (1 - label).sum()), rel=1e-12)
    value, var = _brute_force_delong(label, score)
    assert result.value == pytest.approx(value, rel=1e-12)
    assert result.stderr == pytest.approx(np.sqrt(var), rel=1e-9)


def test_auc_extremes():
    label = np.array([0, 0, 1, 1])
    assert est.auc(label, np.array([0.1, 0.2, 0.3, 0.4])).value == 1.0
    assert est.auc(label, np.array([0.4, 0.3, 0.2, 0.1])).value == 0.0
    assert est.auc(label, np.zeros(4)).value == 0.5


@pytest.mark.slow
def test_auc_interval_covers_the_population_auc():
    # binormal model: AUC = Phi(shift / sqrt(2))
    reps, shift = 1000, 0.8
    truth = stats.norm.cdf(shift / np.sqrt(2))
    rng = np.random.default_rng(2)
    label = rng.random((reps, 300)) < 0.25
    score = rng.normal(size=(reps, 300)) + shift * label
    coverage = np.mean([est.auc(label[i], score[i]).contains(truth) for i in range(reps)])
    print(f"DeLong 95% interval coverage of AUC {truth:.4f}: {coverage:.3f}")
    assert 0.92 <= coverage <= 0.975


# --- GAUC / UAUC -------------------------------------------------------------------------------


def test_gauc_and_uauc_by_hand():
    user = np.array(["a", "a", "b", "b", "b", "b", "c", "c"])
    label = np.array([1, 0, 1, 0, 1, 0, 1, 1])  # user c has no negative: skipped, not NaN
    score = np.array([0.9, 0.1, 0.5, 0.6, 0.2, 0.1, 0.3, 0.4])
    # a: 1.0 over 2 rows; b: positives 0.5, 0.2 vs negatives 0.6, 0.1 -> 2 of 4 pairs = 0.5
    per = est.per_user_auc(user, label, score)
    assert per["user"].tolist() == ["a", "b"]
    np.testing.assert_allclose(per["auc"], [1.0, 0.5])
    assert est.uauc(user, label, score).value == pytest.approx(0.75)
    assert est.gauc(user, label, score).value == pytest.approx((1.0 * 2 + 0.5 * 4) / 6)
    assert est.gauc(user, label, score).n == 2


def test_per_user_auc_matches_the_global_auc_of_each_user():
    rng = np.random.default_rng(3)
    user = rng.integers(0, 30, size=2000)
    label = (rng.random(2000) < 0.2).astype(int)
    score = np.round(rng.normal(size=2000) + label, 1)
    per = est.per_user_auc(user, label, score).set_index("user")
    for u in per.index[:10]:
        rows = user == u
        assert per.loc[u, "auc"] == pytest.approx(est.auc(label[rows], score[rows]).value)


def test_constant_scores_give_uauc_one_half():
    rng = np.random.default_rng(4)
    user = rng.integers(0, 20, size=500)
    label = rng.random(500) < 0.3
    assert est.uauc(user, label, np.ones(500)).value == pytest.approx(0.5)
    assert est.uauc(user, label, np.ones(500)).stderr == 0.0


def test_gauc_differs_from_auc_when_users_differ_in_base_rate():
    # a score that only knows each user's base rate ranks well globally, not within users
    rng = np.random.default_rng(5)
    user = np.repeat(np.arange(200), 20)
    base = rng.random(200)
    label = rng.random(4000) < base[user]
    score = base[user]
    assert est.auc(label, score).value > 0.75
    assert est.gauc(user, label, score).value == pytest.approx(0.5)
