"""EASQ (policies/easq.py): closed-form checks of DPO and the LoRA path, parameter isolation,
the window data path, conformance, online updates, and (slow) online learning in an A/B test."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import policies.easq  # noqa: F401  (registers "easq")
from policies import make_policy
from policies.checks import check_policy
from policies.data import Sequences, chronological_order, to_model_ids
from policies.easq import (EASQ, VARIANTS, EASQConfig, EASQNet, LoRAEmbedding, LoRALinear, _clicks_before,
                           _histories, _pairs, dpo_loss)
from policies.encoders import EncoderConfig
from simulator.schema import LogData
from tests_support import tiny

FAST = dict(d_model=16, max_len=20, max_epochs=2, sat_epochs=3, align_epochs=2)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread, as the A/B runner uses (two collapse when the other core is busy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(lora_rank: int = 4, isolate: bool = True, seed: int = 0) -> EASQNet:
    torch.manual_seed(seed)
    config = EASQConfig(EncoderConfig(n_items=50, max_len=8, d_model=8), lora_rank=lora_rank, isolate=isolate)
    return EASQNet(config).eval()


def _batch(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, 51, (n, 8), generator=g)                     # 0 = padding
    hist[0] = 0                                                           # a user without history
    items = torch.randint(1, 51, (n, 2), generator=g)
    return hist, items


# --- DPO and LoRA: closed forms -----------------------------------------------------------------

def test_dpo_loss_is_log2_at_the_reference_and_ignores_per_context_constants():
    g = torch.Generator().manual_seed(0)
    s_w, s_l, r_w, r_l = torch.randn(4, 100, generator=g)
    assert torch.isclose(dpo_loss(s_w, s_l, s_w, s_l, beta=0.7), torch.tensor(math.log(2.0)))
    base = dpo_loss(s_w, s_l, r_w, r_l, beta=0.7)
    c, c_ref = 5.0 * torch.randn(100, generator=g), torch.randn(100, generator=g)   # one constant per context
    assert torch.allclose(dpo_loss(s_w + c, s_l + c, r_w, r_l, beta=0.7), base, atol=1e-6)
    assert torch.allclose(dpo_loss(s_w, s_l, r_w + c_ref, r_l + c_ref, beta=0.7), base, atol=1e-6)
    margin = (s_w - r_w) - (s_l - r_l)
    assert torch.allclose(base, torch.log1p(torch.exp(-0.7 * margin)).mean(), atol=1e-6)   # -log sigma
    # a constant added to only one item of a pair does change it
    assert not torch.allclose(dpo_loss(s_w + 1.0, s_l, r_w, r_l, beta=0.7), base)


def test_lora_layers_start_at_their_base_and_move_with_b():
    torch.manual_seed(0)
    layer = LoRALinear(6, 4, rank=2, alpha=4.0)
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), layer.base(x)) and torch.equal(layer(x, lora=False), layer.base(x))
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = layer.base(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T      # alpha / r = 2
    assert torch.allclose(layer(x), expected, atol=1e-6)
    emb = LoRAEmbedding(10, 4, rank=2, alpha=2.0)
    ids = torch.tensor([[0, 3], [9, 3]])
    assert torch.equal(emb(ids), torch.zeros(2, 2, 4))
    with torch.no_grad():
        emb.lora_B.normal_()
    assert torch.allclose(emb(ids)[1, 1], emb.lora_B @ emb.lora_A[3], atol=1e-6)


def test_with_b_zero_the_lora_model_equals_the_backbone():
    net = _net()
    hist, items = _batch()
    u = net.user_state(hist)
    dense_on, sat_on = net.logits(u.unsqueeze(1), items, lora=True)
    dense_off, sat_off = net.logits(u.unsqueeze(1), items, lora=False)
    assert torch.equal(dense_on, dense_off) and torch.equal(sat_on, sat_off)
    # the same network without a side path (rank 0) and the same weights scores identically
    plain = _net(lora_rank=0)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "lora" not in k}, strict=False)
    assert torch.equal(plain.score(plain.user_state(hist).unsqueeze(1), items), net.score(u.unsqueeze(1), items))
    # the DPO loss of the fresh model against its LoRA-off reference is log 2 exactly
    policy = EASQ(beta=2.0)
    loss = policy._dpo_loss(net, policies.easq._Pairs(hist, items))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-7)
    with torch.no_grad():
        net.sat_in.lora_B.normal_()
    assert not torch.equal(net.score(u.unsqueeze(1), items), net.score(u.unsqueeze(1), items, lora=False))


def _questionnaire_loss(policy: EASQ, net: EASQNet, hist, items):
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    answers = policies.easq._Answers(hist, items[:, 0], labels)
    return policy._dpo_loss(net, policies.easq._Pairs(hist, items)) + policy._sat_loss(net, answers) \
        + policy._align_bce_loss(net, answers)


def test_backbone_gets_no_gradient_from_questionnaire_losses():
    net = _net().train()
    with torch.no_grad():                      # B != 0, so that A receives gradient too
        net.sat_in.lora_B.normal_()
        net.item_lora.lora_B.normal_()
    hist, items = _batch()
    _questionnaire_loss(EASQ(), net, hist, items).backward()
    backbone = net.backbone_parameters()
    assert backbone and all(p.grad is None or not p.grad.any() for p in backbone)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.lora_parameters())
    assert all(p.grad is not None for p in net.satisfaction_parameters())
    # the check has teeth: without isolation (w/o LoRA) the same losses reach the backbone
    plain = _net(lora_rank=0, isolate=False).train()
    policy = EASQ(use_lora=False)
    policy.reference_ = _frozen_copy(plain)
    _questionnaire_loss(policy, plain, hist, items).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in plain.backbone_parameters())


def _frozen_copy(net: EASQNet) -> EASQNet:
    import copy
    ref = copy.deepcopy(net).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# --- data path ------------------------------------------------------------------------------------

def test_history_and_click_count_helpers():
    # user 3: clicks at events 0, 2, 3; user 5: no click, then a click
    users = np.array([3, 3, 3, 3, 3, 5, 5])
    ev = np.array([1, 0, 1, 1, 0, 0, 1], bool)
    assert _clicks_before(users, ev).tolist() == [0, 1, 1, 2, 3, 0, 0]
    items = np.array([10, 11, 12, 13, 14, 20, 21])
    clicks = Sequences.from_events(users[ev], items[ev])
    rows = clicks.rows_of(users)
    h = _histories(clicks, rows, _clicks_before(users, ev), 2)
    assert h.tolist() == [[0, 0], [0, 11], [0, 11], [11, 13], [13, 14], [0, 0], [0, 0]]
    assert _histories(clicks, np.array([-1]), np.array([0]), 3).tolist() == [[0, 0, 0]]


def test_pairs_are_same_user_within_the_window():
    ev = policies.easq._Events(
        users=np.array([1, 1, 1, 2, 2, 1]), items=np.array([5, 6, 7, 5, 8, 5]),
        ts=np.array([0.0, 10.0, 200.0, 0.0, 50.0, 20.0]), kind=np.array([1, 0, 0, 0, 1, 0], np.int8),
        label=np.full(6, np.nan, np.float32), hist=np.zeros((6, 2), np.int64))
    iw, il = _pairs(ev, window_s=100.0)
    assert sorted(zip(iw.tolist(), il.tolist())) == [(0, 1), (4, 3)]    # (0, 5): same item; (0, 2): too far
    iw, il = _pairs(ev, window_s=100.0, new=np.array([0, 0, 0, 1, 0, 0], bool))
    assert list(zip(iw.tolist(), il.tolist())) == [(4, 3)]


def test_click_windows_hold_each_impressions_history(tiny_world):
    """The backbone's training path (one causal pass per click window): every impression points at
    the window position of the last click before it, and the window up to there is the newest part
    of the impression's own click history (what serving would read)."""
    L = 20
    policy = EASQ(max_len=L)
    frame = tiny_world.train.impressions
    frame = frame.iloc[chronological_order(frame)]
    users = frame["user_id"].to_numpy(np.int64)
    ev = frame["effective_view"].to_numpy(bool)
    clicks = Sequences.from_events(users[ev], frame["item_id"].to_numpy(np.int64)[ev])
    before, rows = _clicks_before(users, ev), clicks.rows_of(users)
    inputs, win_users, imp_win, imp_col = policy._window_index(users, clicks, rows, before)
    assert np.array_equal(win_users[imp_win], users)
    assert ((imp_col == L) == (before == 0)).all()                        # no click yet: the empty state
    assert clicks.lengths.max() > 3 * L                                   # users with several windows
    own = _histories(clicks, rows, before, L)                             # (N, L) what serving reads
    for n in np.flatnonzero(before > 0):
        w, c = imp_win[n], imp_col[n]
        prefix = inputs[w, :c + 1]
        prefix = prefix[prefix > 0]
        assert len(prefix) >= 1 and np.array_equal(own[n, L - len(prefix):], prefix), n
    # every click is in exactly one window
    assert (inputs > 0).sum() == len(clicks.items)


# --- the policy -----------------------------------------------------------------------------------

def test_variants_name_the_paper_rows():
    assert set(VARIANTS) == {"EASQ", "w/o LoRA", "w/o DPO", "offline-only"}
    for params in VARIANTS.values():
        make_policy("easq", **params)


@pytest.mark.parametrize("row", ["EASQ", "w/o LoRA", "w/o DPO"])
def test_check_policy(row, tiny_world):
    ran = check_policy(lambda: make_policy("easq", **FAST, **VARIANTS[row]), tiny_world.train, tiny_world.batch())
    assert ran[-1] == "update"


@pytest.mark.parametrize("params, message", [
    (dict(objective="ipo"), "objective='ipo' must be one of dpo, bce"),
    (dict(fusion=(1.0, 1.0)), r"fusion=\(1.0, 1.0\) must have 4 weights"),
    (dict(task_weights=(1.0,)), r"task_weights=\(1.0,\) must have 3 weights"),
    (dict(lora_rank=0), "lora_rank=0 must be >= 1 with use_lora=True"),
    (dict(beta=0.0), "beta=0.0 must be > 0"),
    (dict(temperature=-1.0), "temperature=-1.0 must be > 0 or None"),
    (dict(loser_answers=("like",)), "loser_answers=.*must not contain"),
    (dict(item_features=("leaf", "colour")), "the item table has no column.s. 'colour'"),
    (dict(valid_share=1.0), r"valid_share=1.0 must be in \[0, 1\)"),
])
def test_bad_parameters(params, message, tiny_world):
    with pytest.raises(ValueError, match=message):
        make_policy("easq", **params).fit(tiny_world.train, rng=np.random.default_rng(0))


def test_refuses_logs_without_questionnaire_columns_or_clicks(tiny_world):
    imp = tiny_world.train.impressions
    with pytest.raises(ValueError, match="missing column.s. 'survey_shown'"):
        make_policy("easq").fit(LogData(imp.drop(columns=["survey_shown"]), tiny_world.train.items,
                                        tiny_world.train.users), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no effective view"):
        make_policy("easq").fit(LogData(imp[~imp["effective_view"]], tiny_world.train.items,
                                        tiny_world.train.users), rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def day_split(tiny_world):
    """Day 0 of the tiny world to fit on; day 1 in hourly chunks, as the A/B runner gives them."""
    t = tiny_world.train
    imp = t.impressions
    first = LogData(imp[imp["day"] == 0].reset_index(drop=True), t.items, t.users)
    rest = imp[imp["day"] == 1]
    hours = (rest["ts"] // 3600).to_numpy()
    chunks = [LogData(rest[hours == h].reset_index(drop=True), t.items, t.users) for h in np.unique(hours)]
    return first, chunks


def test_online_update_moves_only_what_it_should(day_split, tiny_world):
    first, chunks = day_split
    batch = tiny_world.batch(n_requests=16, n_candidates=50)
    off = make_policy("easq", **FAST, online=False).fit(first, rng=np.random.default_rng(0))
    before = off.score(batch)
    for c in chunks:
        off.update(c)
    assert np.array_equal(off.score(batch), before)                       # offline-only: a no-op
    on = make_policy("easq", **FAST).fit(first, rng=np.random.default_rng(0))
    assert np.array_equal(on.score(batch), before)                        # same fit
    sat_tower = [p.detach().clone() for p in on.model_.satisfaction_parameters()]
    lora = [p.detach().clone() for p in on.model_.lora_parameters()]
    backbone = [p.detach().clone() for p in on.model_.backbone_parameters()]
    for c in chunks:
        on.update(c)
    pairs = sum(s["pairs"] for s in on.update_stats_)
    assert pairs > 0 and len(on.update_stats_) == len(chunks)
    assert all(torch.equal(a, b) for a, b in zip(sat_tower, on.model_.satisfaction_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(lora, on.model_.lora_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(backbone, on.model_.backbone_parameters()))
    after = on.score(batch)
    assert np.isfinite(after).all() and not np.allclose(after, before)
    # the serving path (folded item table) equals the training path on the live histories
    hist, _ = batch.features.history("clicks", batch.user_ids, on.max_len)
    with torch.no_grad():
        u = on.model_.user_state(torch.from_numpy(to_model_ids(hist)))
        direct = on.model_.score(u.unsqueeze(1), torch.from_numpy(to_model_ids(batch.candidates)))
    assert np.allclose(after, direct.numpy(), atol=1e-5)
    # updates are reproducible: the same seed and chunks give the same scores
    again = make_policy("easq", **FAST).fit(first, rng=np.random.default_rng(0))
    for c in chunks:
        again.update(c)
    assert np.array_equal(again.score(batch), after)


def test_update_rejects_unknown_items(day_split):
    first, chunks = day_split
    policy = make_policy("easq", **FAST).fit(first, rng=np.random.default_rng(0))
    bad = chunks[0].impressions.copy()
    bad.loc[bad.index[0], "item_id"] = 10 ** 6
    with pytest.raises(ValueError, match="outside the fitted catalogue"):
        policy.update(LogData(bad, first.items, first.users))


def test_ab_config_loads():
    from simulator.config import load_toml
    from simulator.experiment import ExperimentConfig
    config = load_toml(ExperimentConfig, Path(__file__).parents[2] / "studies" / "configs" / "easq.toml")
    rows = {b.name: b for b in config.buckets}
    assert config.control == "control" and rows["control"].policy == "production"
    assert {b.policy for b in config.buckets if b.name != "control"} == {"easq"}
    for b in config.buckets:
        make_policy(b.policy, **b.params)
    assert config.update_interval_s > 0


# --- learning (slow) ------------------------------------------------------------------------------

LEARN_WORLD = dict(n_users=600, n_items=1000, seed=0,
                   # questionnaires shown 0.5 (not 0.06) after an effective view, up to 10 per user
                   # per day: about 2,000 exposures and 600 answers per bucket-day, so that hourly
                   # updates have pairs to learn from (the default world has ~1% answered views)
                   questionnaire=dict(base_rate=0.5, per_user_daily_cap=10),
                   # a 5-minute serving window (default 1 minute): fewer, larger ranking calls
                   platform=dict(tick_s=300.0))


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory):
    from simulator.experiment import BucketConfig, ExperimentConfig, run_experiment
    learn = dict(d_model=16, max_len=20, max_epochs=3, sat_epochs=10, align_epochs=5)
    config = ExperimentConfig(
        world=tiny(**LEARN_WORLD), pre_days=1, days=3, update_interval_s=7200.0, control="offline",
        buckets=(BucketConfig("easq", "easq", 0.5, dict(learn)),
                 BucketConfig("offline", "easq", 0.5, dict(learn, online=False))))
    return run_experiment(config, tmp_path_factory.mktemp("easq_ab") / "run", progress=False, report=False)


@pytest.mark.slow
def test_online_updates_raise_oracle_satisfaction(ab_run):
    daily = ab_run.daily.pivot(index="day", columns="bucket", values="oracle_satisfaction")
    gap = (daily["easq"] - daily["offline"]).to_numpy()                  # per experiment day
    # measured gaps over 3 world seeds x both bucket orders: overall 0.022-0.094, last day
    # 0.034-0.114, last minus first day 0.018-0.053
    overall = ab_run.lifts.set_index(["bucket", "metric"]).loc[("easq", "oracle_satisfaction")]
    assert overall["difference"] > 0.01 and overall["diff_ci_low"] > 0
    assert gap[-1] > 0.015
    assert gap[-1] - gap[0] > 0.005                                       # the gap grows as EASQ learns


@pytest.mark.slow
def test_learning_world_gives_hourly_updates_pairs(ab_run):
    """Enough questionnaire pairs per day in the online bucket for the online DPO steps."""
    from simulator.logs import read_impressions
    logs = read_impressions(ab_run.run_dir / "logs", days=[1, 2, 3], buckets=["easq"])
    policy = EASQ()
    per_day = []
    for day, frame in logs.groupby("day"):
        frame = frame.iloc[chronological_order(frame)]
        events = policy._events(frame, np.zeros((len(frame), 1), np.int64))
        iw, _ = _pairs(events, policy.pair_window_s)
        per_day.append(len(iw))
    assert min(per_day) > 250, per_day            # measured 327-582 (pairs within one day)
