"""USM (policies/usm/): module invariants with exact closed forms, train/serve feature parity,
the conformance battery, and two seeded learning tests on a small world built to expose the
effects they test (strong missing-not-at-random response, posterior behaviour that reveals
satisfaction and issues).

Run as a script, this file prints the USM table of docs/notes/usm.md (AUC and calibration on
labelled samples, Nfb / Pfb UAUC, for the four variants of USM Tables 1-3):

    python tests/policies/test_usm.py --days 3 --seeds 0 1 2
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import policies.usm as usm
from estimators import auc, uauc, weighted_auc
from estimators import weighted_calibration as calibration
from policies.base import NotFittedError, make_policy
from policies.checks import check_policy
from policies.params import ParameterError
from policies.usm import (LHUC, SURVEY_HEADS, VARIANTS, NetConfig, SqueezeExcite, SurveyNet, ipw_weights,
                          labelled_metrics, pseudo_label_mask)
from simulator.schema import LogData, RankBatch
from studies.usm_replication import oracle_dislike_expectation, usm_report

torch.set_num_threads(1)

FAST = dict(network=dict(hidden=(32, 16, 8), head_hidden=(8,), d_emb=8),
            train=dict(max_epochs=3, engagement_per_epoch=2000), distill=dict(pseudo_per_epoch=2000))
"""Small models, so that check_policy's four fits take a few seconds."""
NO_ENGAGEMENT = {h: 0.0 for h in usm.ENGAGEMENT_HEADS}
"""Eq. 3 weights that leave the engagement model out (the learning tests look at survey heads)."""


# ----------------------------------------------------------------------------- modules
def test_lhuc_with_zero_final_layer_is_the_identity_gate():
    """Identity: gate(e) = 2 * sigmoid(W2 relu(W1 e + b1) + b2) is exactly 1 for every input when
    the final gate layer (W2, b2) is zero, its initial value; so x * gate(e) == x."""
    torch.manual_seed(0)
    gate = LHUC(d_ids=12, d_out=7, d_hidden=5)
    assert torch.count_nonzero(gate.out.weight) == 0 and torch.count_nonzero(gate.out.bias) == 0
    e, x = torch.randn(64, 12) * 10, torch.randn(64, 7)
    assert torch.equal(gate(e), torch.ones(64, 7))
    assert torch.equal(x * gate(e), x)
    with torch.no_grad():
        gate.out.weight.normal_(std=0.1)
    g = gate(e)
    assert not torch.equal(g, torch.ones(64, 7)) and bool(((g > 0) & (g < 2)).all())     # a gate in (0, 2)


def test_network_with_identity_lhuc_equals_the_network_without_lhuc():
    """A freshly built SurveyNet's LHUC gates are all 1, so it computes exactly what the same
    network without LHUC computes."""
    config = NetConfig(n_users=20, n_items=30, n_authors=5, n_cats=(3, 6, 9), n_dense=4, heads=("a", "b"),
                       d_emb=4, hidden=(16, 8, 8), head_hidden=(4,), se_groups=4, dropout=0.0)
    torch.manual_seed(1)
    with_lhuc = SurveyNet(config, np.zeros(4), np.ones(4)).eval()
    plain = SurveyNet(NetConfig(**{**config.__dict__, "lhuc": False}), np.zeros(4), np.ones(4)).eval()
    missing, unexpected = plain.load_state_dict(with_lhuc.state_dict(), strict=False)
    assert not missing and all(k.startswith(("lhuc_emb", "gates")) for k in unexpected)
    ids = torch.stack([torch.randint(0, 21, (50,)), torch.randint(0, 31, (50,)), torch.randint(0, 6, (50,))], 1)
    cats = torch.stack([torch.randint(0, 4, (50,)), torch.randint(0, 7, (50,)), torch.randint(0, 10, (50,))], 1)
    dense = torch.randn(50, 4)
    assert torch.equal(with_lhuc(ids, cats, dense), plain(ids, cats, dense))


def test_squeeze_excite_keeps_shapes_and_zero_weights_give_uniform_gates():
    torch.manual_seed(2)
    se = SqueezeExcite(d=32, groups=8, reduction=2)
    h = torch.randn(17, 32)
    assert se(h).shape == (17, 32) and se.gates(h).shape == (17, 8)
    for p in se.parameters():
        torch.nn.init.zeros_(p)
    assert torch.equal(se.gates(h), torch.full((17, 8), 0.5))      # sigmoid(0) for every channel
    assert torch.equal(se(h), 0.5 * h)
    with pytest.raises(ValueError, match="d=30 must be divisible by groups=8"):
        SqueezeExcite(d=30, groups=8, reduction=2)


def test_ipw_weights_are_one_over_the_clipped_propensity():
    p = np.array([0.001, 0.05, 0.0625, 0.2, 0.5, 1.0])
    assert np.array_equal(ipw_weights(p, 0.05), [20.0, 20.0, 16.0, 5.0, 2.0, 1.0])
    assert np.array_equal(ipw_weights(p, 1.0), np.ones(6))          # clipping everything: no weighting
    assert np.allclose(ipw_weights(p, 1e-9), 1.0 / p)
    with pytest.raises(ValueError, match=r"min_propensity=0 must be in \(0, 1\]"):
        ipw_weights(p, 0)
    with pytest.raises(ValueError, match="pscore must be probabilities"):
        ipw_weights(np.array([0.5, 1.5]), 0.05)


def test_pseudo_label_filter_keeps_exactly_the_samples_outside_the_band():
    soft = np.array([[0.00, 0.10], [0.09, 0.11], [0.10, 0.50], [0.30, 0.60], [0.60, 0.61], [0.61, 1.00]])
    keep = pseudo_label_mask(soft, 0.1, 0.6)                          # Eq. 8: y < tau_n or y > tau_p
    expected = (soft < 0.1) | (soft > 0.6)
    assert np.array_equal(keep, expected)
    assert not keep[2, 0] and not keep[4, 0] and keep[5, 0]          # the band's ends are dropped
    per_head = pseudo_label_mask(soft, np.array([0.1, 0.2]), np.array([0.6, 0.55]))
    assert np.array_equal(per_head[:, 1], (soft[:, 1] < 0.2) | (soft[:, 1] > 0.55))
    assert pseudo_label_mask(soft, 0.3, 0.3).sum() == soft.size - 1  # tau_n == tau_p drops only 0.3
    with pytest.raises(ValueError, match="0 <= tau_n <= tau_p <= 1"):
        pseudo_label_mask(soft, 0.7, 0.6)
    # the default band is (b / tau_band, b * tau_band) around each head's base rate b
    policy = usm.USM(distill={"tau_band": 2.0, "tau_p": {"spam": 0.9}})
    lo, hi = policy.distill.thresholds(np.array([0.3, 0.1, 0.04, 0.02, 0.6]))
    assert np.allclose(lo, [0.15, 0.05, 0.02, 0.01, 0.3]) and np.allclose(hi, [0.6, 0.2, 0.08, 0.04, 0.9])


def test_weighted_auc_and_calibration_closed_forms():
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.1, 0.4, 0.4, 0.2])
    assert weighted_auc(y, s) == pytest.approx(5.5 / 6)               # one tie counts one half
    w = np.array([1.0, 2.0, 3.0, 1.0, 1.0])
    dup = np.repeat(np.arange(5), w.astype(int))                      # integer weights = duplicated rows
    assert weighted_auc(y, s, w) == pytest.approx(weighted_auc(y[dup], s[dup]))
    rng = np.random.default_rng(0)
    yy, ss = rng.random(500) < 0.3, rng.normal(size=500).round(1)
    assert weighted_auc(yy, ss) == pytest.approx(auc(yy, ss).value, abs=1e-12)
    assert calibration(np.full(4, 0.5), np.array([1, 0, 0, 0])) == pytest.approx(1.0)     # Eq. 10
    # weighted: (3 * 0.2 + 1 * 0.6) / (3 * 1 + 1 * 0) - 1
    assert calibration(np.array([0.2, 0.6]), np.array([1, 0]), np.array([3.0, 1.0])) == pytest.approx(-0.6)
    m = labelled_metrics(np.array([0.2, 0.6]), np.array([0, 1]))
    assert m["auc"] == 1.0 and m["calibration"] == pytest.approx(-0.2) and m["n"] == 2 and m["positives"] == 1
    assert math.isnan(weighted_auc(np.zeros(3), np.arange(3.0)))


# ----------------------------------------------------------------------------- features
def test_training_features_equal_what_serving_reads_from_the_feature_store(tiny_world):
    """Point-in-time parity: for each user's last request, the user counters and the click / skip
    history features computed from the logs equal those read from a feature store that recorded
    everything before that request (item counters also count other users' events, so only their
    ids and categories are compared)."""
    from policy_support import feature_store_from
    from policies.data import chronological_order
    train = tiny_world.train
    imp = train.impressions
    cat = usm.Catalogue.from_logs(train)
    logged = usm.logged_inputs(imp, cat, 50)
    last = imp.iloc[chronological_order(imp)].groupby("user_id")["request_id"].last()
    is_last = imp["request_id"].isin(last.to_numpy()).to_numpy()
    store = feature_store_from(LogData(imp[~is_last].reset_index(drop=True), train.items, train.users))
    rows = np.flatnonzero(is_last)
    served = usm.serving_inputs(imp["user_id"].to_numpy()[rows], imp["item_id"].to_numpy()[rows, None], store,
                                cat, 50)
    user_or_history = [k for k, name in enumerate(usm.DENSE) if not name.startswith("item_")]
    assert len(user_or_history) == 13 and len(rows) > 1000
    assert np.array_equal(served.dense[:, user_or_history], logged.dense[rows][:, user_or_history])
    assert np.array_equal(served.ids, logged.ids[rows]) and np.array_equal(served.cats, logged.cats[rows])
    assert (logged.dense[rows][:, usm.DENSE.index("click_history_fill")] > 0).mean() > 0.9


def test_survey_labels_follow_the_survey_options():
    frame = pd.DataFrame({
        "survey_submitted": [True, True, True, True, False],
        "survey_type": pd.Categorical(["satisfaction", "satisfaction", "inappropriate", "inappropriate", None]),
        "survey_answer": pd.Categorical(["dislike", "neutral", "unsuitable", "suitable", None]),
        "survey_reasons": pd.Categorical([None, None, "sexual,spam", None, None])})
    labels, mask = usm.survey_labels(frame)
    assert SURVEY_HEADS == ("dislike", "inappropriate", "sexual", "violent", "spam")
    assert np.array_equal(mask, [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0] * 5])
    assert np.array_equal(labels, [[1, 0, 0, 0, 0], [0] * 5, [0, 1, 1, 0, 1], [0] * 5, [0] * 5])


# ----------------------------------------------------------------------------- the policy
@pytest.mark.parametrize("variant", ["baseline", "distillation + response debias"])
def test_check_policy(variant, tiny_world):
    ran = check_policy(lambda: make_policy("usm", update_epochs=1, **VARIANTS[variant], **FAST), tiny_world.train,
                       tiny_world.batch())
    assert ran[-1] == "update"                              # USM has an update() (online learning)


@pytest.fixture(scope="module")
def tiny_usm(tiny_world):
    return make_policy("usm", distillation=True, **FAST).fit(tiny_world.train, rng=np.random.default_rng(3))


def test_score_is_eq3_over_the_heads(tiny_usm, tiny_world):
    batch = tiny_world.batch(n_requests=8, n_candidates=40)
    heads = tiny_usm.predict_heads(batch.user_ids, batch.candidates, batch.features)
    assert set(heads) == set(usm.DEFAULT_WEIGHTS) and all(h.shape == (8, 40) for h in heads.values())
    # Eq. 3 with the paper's weights, less the heads too thinly labelled to estimate
    dropped = tiny_usm.stats_["unestimable_heads"]
    assert tiny_usm.weights_ == {h: 0.0 if h in dropped else w for h, w in usm.DEFAULT_WEIGHTS.items()}
    expected = sum(tiny_usm.weights_[h] * heads[h] for h in heads)
    assert np.allclose(tiny_usm.score(batch), expected, rtol=0, atol=1e-12)
    spread = tiny_usm.term_spread(batch)
    assert set(spread) == {h for h, w in tiny_usm.weights_.items() if w != 0}
    for h, sd in spread.items():
        assert sd == pytest.approx(float((tiny_usm.weights_[h] * heads[h]).std(axis=1).mean()), rel=1e-9)
    assert all(((h > 0) & (h < 1)).all() for h in heads.values())
    assert tiny_usm.teacher_ is not None and tiny_usm.stats_["pseudo_candidates"] > 0
    p = tiny_usm.submit_propensity(tiny_world.train.impressions)
    shown = tiny_world.train.impressions["survey_shown"].to_numpy()
    assert np.isnan(p[~shown]).all() and ((p[shown] > 0) & (p[shown] < 1)).all()
    bad = RankBatch(batch.user_ids, batch.candidates + 10_000, 0.0, 0, batch.features)
    with pytest.raises(ValueError, match="outside the fitted catalogue"):
        tiny_usm.score(bad)


def test_an_unlabelled_head_does_not_move_the_ranking(tiny_usm, tiny_world):
    """The tiny world's pre-period has too few inappropriate answers for the issue heads: their
    towers never saw a label, so perturbing them must leave every score as it is, while
    perturbing the dislike head (which ranks) changes the scores."""
    dropped = tiny_usm.stats_["unestimable_heads"]
    assert "inappropriate" in dropped and "dislike" not in dropped
    assert dropped["inappropriate"]["positives"] < 10 or dropped["inappropriate"]["rows"] - \
        dropped["inappropriate"]["positives"] < 10
    batch = tiny_world.batch(n_requests=8, n_candidates=40)
    before = tiny_usm.score(batch)
    net = tiny_usm.survey_
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        gen = torch.Generator().manual_seed(0)
        for h in dropped:
            for p in net.heads[SURVEY_HEADS.index(h)].parameters():
                p.data.add_(torch.randn(p.shape, generator=gen))
        assert np.array_equal(tiny_usm.score(batch), before)
        for p in net.heads[SURVEY_HEADS.index("dislike")].parameters():
            p.data.add_(torch.randn(p.shape, generator=gen))
        assert not np.allclose(tiny_usm.score(batch), before)
    finally:
        net.load_state_dict(saved)


def test_unestimable_heads_are_named_in_a_warning(tiny_world):
    with pytest.warns(UserWarning, match=r"survey head\(s\) inappropriate \(\d+ rows, \d+ positive\)") as caught:
        policy = make_policy("usm", **FAST).fit(tiny_world.train, rng=np.random.default_rng(0))
    dropped = policy.stats_["unestimable_heads"]
    message = next(str(w.message) for w in caught if "survey head(s)" in str(w.message))
    assert all(f"{h} ({c['rows']} rows, {c['positives']} positive)" in message for h, c in dropped.items())


def test_logit_combination(tiny_world):
    fit = dict(FAST, train=dict(FAST["train"], max_epochs=1))
    prob = make_policy("usm", **fit).fit(tiny_world.train, rng=np.random.default_rng(0))
    logit = make_policy("usm", combine="logit", **fit).fit(tiny_world.train, rng=np.random.default_rng(0))
    batch = tiny_world.batch(n_requests=4, n_candidates=20)
    heads = logit.predict_heads(batch.user_ids, batch.candidates, batch.features)
    expected = sum(w * np.log(heads[h] / (1 - heads[h])) for h, w in logit.weights_.items() if w != 0)
    assert np.allclose(logit.score(batch), expected, rtol=0, atol=1e-6)
    assert np.allclose(prob.predict_heads(batch.user_ids, batch.candidates, batch.features)["dislike"],
                       heads["dislike"])                        # the same fit; only the combination differs


BAD_PARAMETERS = [
    (dict(combine="sum"), "combine='sum' must be one of 'probability', 'logit'"),
    (dict(min_head_labels=0), "min_head_labels=0 must be an integer >= 1"),
    (dict(weights={"clicks": 1.0}), "weights has unknown head"),
    (dict(distill=dict(tau_n=0.5, tau_p=0.4)), "0 <= tau_n <= tau_p <= 1"),
    (dict(distill=dict(tau_band=0.5)), "tau_band=0.5 must be >= 1"),
    (dict(submit=dict(min_propensity=0.0)), "min_propensity=0.0 must be in"),
    (dict(distill=dict(pseudo_support="skips")), "pseudo_support='skips' must be"),
    (dict(temperature=0.0), "temperature=0.0 must be > 0"),
]


@pytest.mark.parametrize("params, match", BAD_PARAMETERS)
def test_bad_parameters(params, match, tiny_world):
    with pytest.raises(ValueError, match=match):
        make_policy("usm", **params).fit(tiny_world.train, rng=np.random.default_rng(0))


@pytest.mark.parametrize("params, match", BAD_PARAMETERS + [
    (dict(train=dict(lr=-1.0)), r"^usm: train\.lr=-1\.0 must be > 0$"),
    (dict(network=dict(hidden=[32, 16, 12])),
     r"^usm: network\.hidden\[-1\]=12 must be divisible by network\.se_groups=8"),
    (dict(distill=dict(tau_p={"spamm": 0.3})), r"^usm: distill\.tau_p has unknown head\(s\) 'spamm'"),
    (dict(submit=dict(posterior=1)), r"^usm: submit\.posterior=1 must be true or false$"),
    (dict(train=dict(max_epoch=2)), r"^usm: train\.max_epoch is not a parameter; train takes: batch_size, "),
    (dict(max_epochs=2), r"^usm: max_epochs is not a parameter; usm takes: .*, train, "),
])
def test_bad_parameters_stop_the_construction_and_name_their_path(params, match):
    with pytest.raises(ParameterError, match=match):
        make_policy("usm", **params)


def test_parameter_groups_come_from_tables():
    policy = make_policy("usm", network={"hidden": [32, 16, 8]}, train={"max_epochs": 2})
    assert policy.network == usm.NetworkParams(hidden=(32, 16, 8)) and policy.train.max_epochs == 2
    assert policy.train.lr == usm.TrainParams().lr and policy.distill == usm.DistillParams()


def test_variants_name_the_paper_rows():
    assert {"baseline", "response debias", "distillation", "distillation + response debias"} <= set(VARIANTS)
    for params in VARIANTS.values():
        make_policy("usm", **params)
    with pytest.raises(NotFittedError):
        make_policy("usm").predict_heads(np.zeros(1, int), np.zeros((1, 1), int), None)


# ----------------------------------------------------------------------------- learning tests
LEARNING_WORLD = dict(
    n_users=1000, n_items=1500, days=3, seed=5,
    questionnaire=dict(base_rate=0.5, per_user_daily_cap=20, response_bias=2.0),
    users=dict(willingness_mean=0.35, willingness_concentration=4.0),
    behaviour=dict(like_bias=-4.0, positive_satisfied=7.0, issue_feedback=6.0),
    catalog=dict(issue_item_share=0.05))
"""Built to expose both effects: many questionnaires (half of the effective views, up to 20 a
day); satisfied users answer far more often (response_bias 2: a dissatisfied user's odds of
answering are e^-2 of a satisfied one's); a like almost always means satisfied (so the posterior
behaviour that the submit model and the teacher read carries the missing-not-at-random signal);
a perceived issue makes a dislike likely (so the teacher can spot issues on unsurveyed views and
dislikes are the Nfb truth); more items with issues."""
LEARN = dict(weights=NO_ENGAGEMENT, distill=dict(pseudo_per_epoch=20_000))


@pytest.fixture(scope="module")
def learning():
    from studies.engine.offline import make_task, simulate_logs
    from tests_support import first_world, tiny
    config = first_world(tiny(**LEARNING_WORLD))
    logs = simulate_logs(config)
    task = make_task(logs, test_days=1)
    fits = {name: make_policy("usm", **VARIANTS[name], **LEARN).fit(task.train, rng=np.random.default_rng(0))
            for name in ("baseline", "response debias", "distillation")}
    reports = {name: usm_report(p, task, logs, neutral_share=config.questionnaire.neutral_share)
               for name, p in fits.items()}
    return config, logs, task, fits, reports


@pytest.mark.slow
def test_learning_world_exposes_missing_not_at_random_responses(learning):
    """The respondents' dislike rate is far below what every shown questionnaire would have
    answered, and the baseline, trained on respondents, inherits that gap on the users least
    likely to answer."""
    config, logs, task, fits, reports = learning
    imp = logs.impressions
    sat = (imp["survey_shown"] & (imp["survey_type"] == "satisfaction")).to_numpy()
    answered = sat & imp["survey_submitted"].to_numpy()
    rate = (imp["survey_answer"] == "dislike").to_numpy()[answered].mean()
    shown_rate = oracle_dislike_expectation(logs, np.flatnonzero(sat), config.questionnaire.neutral_share).mean()
    assert rate < 0.7 * shown_rate
    assert reports["baseline"]["dislike_cal_shown_low"] < -0.4
    # every variant fitted the same submit model (its own random stream), so the low-propensity
    # group is the same set of questionnaires for all of them
    a, b = (fits[n].submit_propensity(task.train.impressions) for n in ("baseline", "response debias"))
    assert np.array_equal(a, b, equal_nan=True)
    # the training weights are 1 / clipped propensity, normalised to mean 1
    labelled = task.train.impressions["survey_submitted"].to_numpy()
    w = ipw_weights(a[labelled], fits["response debias"].submit.min_propensity)
    assert fits["response debias"].stats_["ipw_max"] == round(float(w.max() / w.mean()), 3)


@pytest.mark.slow
def test_response_debias_is_better_calibrated_on_reluctant_respondents(learning):
    """USM Table 2: on the satisfaction questionnaires in the lowest quartile of P̂(submit), the
    response-debiased dislike head is closer to the rate every shown questionnaire would have
    answered (oracle) than the baseline (calibration -0.68 vs -0.47 at world seed 5, fit seed 0;
    improvements 0.15 to 0.23 over fit seeds 0-2 and world seeds 6-7; margin 0.1), and so it is
    over every shown questionnaire (improvements 0.17 to 0.39). A policy that ignores the
    weights scores exactly the baseline's value; inverted weights (p instead of 1 / p) are
    worse than the baseline."""
    _, _, _, _, reports = learning
    base, debiased = reports["baseline"], reports["response debias"]
    assert abs(debiased["dislike_cal_shown_low"]) < abs(base["dislike_cal_shown_low"]) - 0.1
    assert abs(debiased["dislike_cal_shown"]) < abs(base["dislike_cal_shown"]) - 0.1


@pytest.mark.slow
def test_distillation_improves_negative_feedback_uauc(learning):
    """USM Table 3: the student trained on the teacher's pseudo labels ranks the impressions a
    user disliked or reported higher than the baseline trained on answered questionnaires only,
    with both survey heads (Nfb UAUC; measured at world seed 5 and fit seeds 0-2, world seeds
    6-7: dislike head +0.026 to +0.086, inappropriate head +0.05 to +0.16; margin 0.02).

    The gain must come from the posterior behaviour: the teacher's pseudo labels on unsurveyed
    impressions that were disliked are well above those on the others. (A teacher without
    posterior features, or a student without pseudo labels, lowers the dislike head's Nfb UAUC
    below the baseline's at this seed; the inappropriate head alone would not catch them, as the
    baseline's is near chance.)
    """
    _, _, task, fits, reports = learning
    for head in ("dislike", "inappropriate"):
        assert reports["distillation"][f"nfb_{head}"] > reports["baseline"][f"nfb_{head}"] + 0.02, head
    student = fits["distillation"]
    imp = task.train.impressions
    unsurveyed = np.flatnonzero(~imp["survey_shown"].to_numpy() & imp["effective_view"].to_numpy())
    x = usm.logged_inputs(imp, student.catalogue_, student.network.history_length).take(unsurveyed)
    soft = usm.predict(student.teacher_, x.with_dense(usm.posterior_features(imp.iloc[unsurveyed])))  # (u, H)
    disliked = imp["dislike"].to_numpy()[unsurveyed]
    assert disliked.sum() > 100
    for h, factor in ((0, 1.5), (1, 3.0)):      # measured 2.2 and 8.0 (a dislike often follows an issue)
        assert soft[disliked, h].mean() > factor * soft[~disliked, h].mean(), SURVEY_HEADS[h]
    assert student.stats_["pseudo_candidates"] > 10 * student.stats_["labelled"]


# ----------------------------------------------------------------------------- the table
def main(argv: list[str] | None = None) -> None:
    """Print the USM table (docs/notes/usm.md) for the default world or the learning world."""
    import argparse
    import sys
    import time
    from pathlib import Path
    sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]
    from studies.engine.offline import make_task, simulate_logs
    from tests_support import tiny
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=("default", "learning"), default="default")
    parser.add_argument("--days", type=int, default=3, help="simulated days (the last one is the test day)")
    parser.add_argument("--users", type=int, default=None, help="override the number of users")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                        help="world overrides, e.g. questionnaire.base_rate=0.3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS)[:4])
    parser.add_argument("--params", default="{}", help="extra make_policy params (a Python dict)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from simulator.config import SimConfig, with_overrides
    if args.world == "learning":
        config = tiny(**LEARNING_WORLD)
    else:
        config = SimConfig()
    overrides = {"platform.days": args.days, **({"users.n_users": args.users} if args.users else {})}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = eval(value)
    extra = eval(args.params)
    rows = []
    for seed in args.seeds:
        cfg = with_overrides(config, {**overrides, "seed": seed})
        logs = simulate_logs(cfg)
        task = make_task(logs, test_days=1)
        print(f"seed {seed}: {len(task.train.impressions):,} training impressions, "
              f"{int(task.train.impressions['survey_shown'].sum()):,} shown, "
              f"{int(task.train.impressions['survey_submitted'].sum()):,} answered", flush=True)
        for name in args.variants:
            policy = make_policy("usm", **VARIANTS[name], **extra)
            t0 = time.perf_counter()
            policy.fit(task.train, rng=np.random.default_rng(seed))
            fit_s = time.perf_counter() - t0
            rows.append({"variant": name, "seed": seed, "fit_s": fit_s,
                         **usm_report(policy, task, logs, neutral_share=cfg.questionnaire.neutral_share)})
            print(f"  {name}: fit {fit_s:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    mean = table.drop(columns="seed").groupby("variant", sort=False).mean()
    sd = table.drop(columns="seed").groupby("variant", sort=False).std(ddof=1)
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(mean.T.round(4).to_string())
        if len(args.seeds) > 1:
            print("\nsd over seeds")
            print(sd.T.round(4).to_string())


if __name__ == "__main__":
    main()
