"""EASQ (policies/easq/): closed-form checks of DPO and the LoRA path, parameter isolation,
request-time training contexts, conformance, online updates (what moves, how far, what is
dropped), and (slow) online learning: held-out DPO margins and an A/B test."""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import policies.easq  # noqa: F401  (registers "easq")
from policies import make_policy
from policies.base import NotFittedError
from policies.checks import check_policy
from policies.data import Sequences, item_side, page_order, to_model_ids
from policies.easq import EASQ, VARIANTS, EASQConfig, EASQNet, LoRAEmbedding, LoRALinear, dpo_loss
from policies.easq.windows import (Answers, Events, Pairs, click_context, clicks_before, clicks_before_request,
                                   histories, preference_pairs, window_index)
from policies.encoders import EncoderConfig
from policies.train import build_module
from simulator.schema import LogData
from studies.engine.offline import feature_store_from
from tests_support import first_world, tiny

FAST = dict(encoder=dict(d_model=16, max_len=20), train=dict(max_epochs=2), satisfaction=dict(epochs=3),
            align=dict(epochs=2))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread, as the A/B runner uses (two collapse when the other core is busy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(lora_rank: int = 4, isolate: bool = True, seed: int = 0) -> EASQNet:
    config = EASQConfig(EncoderConfig(n_items=50, max_len=8, d_model=8), lora_rank=lora_rank, isolate=isolate)
    return build_module(lambda: EASQNet(config), np.random.default_rng(seed)).eval()


def _batch(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, 51, (n, 8), generator=g)                     # 0 = padding
    hist[0] = 0                                                           # a user without history
    items = torch.randint(1, 51, (n, 2), generator=g)
    return hist, items


def _perturb_b(net: EASQNet, seed: int = 1) -> None:
    """B != 0 in both side-path layers (a seeded draw)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.sat_in.lora_B.normal_(generator=g)
        net.item_lora.lora_B.normal_(generator=g)


def _frozen_copy(net: EASQNet) -> EASQNet:
    ref = copy.deepcopy(net).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _params(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _same(a: list[torch.Tensor], params) -> bool:
    return all(torch.equal(x, p) for x, p in zip(a, params))


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
    # the gradient at theta = ref pushes the preferred score up and the rejected one down, by beta / 2
    s = torch.zeros(2, 5, requires_grad=True)
    dpo_loss(s[0], s[1], torch.zeros(5), torch.zeros(5), beta=0.7).backward()
    assert torch.allclose(s.grad, torch.tensor([[-0.35 / 5] * 5, [0.35 / 5] * 5]))


def test_lora_layers_start_at_their_base_and_move_with_b():
    rng = np.random.default_rng(0)
    layer = build_module(lambda: LoRALinear(6, 4, rank=2, alpha=4.0), rng)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(layer(x), layer.base(x)) and torch.equal(layer(x, lora=False), layer.base(x))
    with torch.no_grad():
        layer.lora_B.normal_(generator=torch.Generator().manual_seed(1))
    expected = layer.base(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T      # alpha / r = 2
    assert torch.allclose(layer(x), expected, atol=1e-6)
    emb = build_module(lambda: LoRAEmbedding(10, 4, rank=2, alpha=2.0), rng)
    ids = torch.tensor([[0, 3], [9, 3]])
    assert torch.equal(emb(ids), torch.zeros(2, 2, 4))
    with torch.no_grad():
        emb.lora_B.normal_(generator=torch.Generator().manual_seed(2))
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
    plain_score = plain.score(plain.user_state(hist).unsqueeze(1), items)
    assert torch.equal(plain_score, net.score(u.unsqueeze(1), items))
    # the DPO loss of the fresh model against its LoRA-off reference is log 2 exactly
    loss = EASQ(align=dict(beta=2.0))._dpo_loss(net, Pairs(hist, items))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-7)
    _perturb_b(net)
    assert not torch.equal(net.score(u.unsqueeze(1), items), net.score(u.unsqueeze(1), items, lora=False))


def test_without_lora_dpo_is_log2_at_the_snapshot_even_in_train_mode():
    """w/o LoRA: the policy side of Eq. (4) is encoded without dropout, like the snapshot, so the
    loss at theta = ref is log 2 exactly, also inside the training loop's train mode."""
    encoder = EncoderConfig(n_items=50, max_len=8, d_model=8, dropout=0.5)
    config = EASQConfig(encoder, lora_rank=0, isolate=False)
    net = build_module(lambda: EASQNet(config), np.random.default_rng(0)).train()
    policy = EASQ(use_lora=False)
    policy.reference_ = _frozen_copy(net)
    hist, items = _batch(n=32)
    assert policy._dpo_loss(net, Pairs(hist, items)).item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert net.training and net.encoder.training                          # the mode is restored


def test_dpo_steps_raise_the_preferred_score_over_the_rejected():
    """A few SGD steps of Eq. (4) on the side path, fixed pairs: s(y_w) - s(y_l) rises at every
    step; the same steps on the flipped pairs lower it (the sign is the objective's, not luck)."""
    hist, items = _batch(n=16)
    policy = EASQ(align=dict(beta=1.0))
    gaps = {}
    for flip in (False, True):
        net = _net().train()
        pairs = Pairs(hist, items.flip(1) if flip else items)
        opt = torch.optim.SGD(net.lora_parameters(), lr=5.0)
        trace = []
        for _ in range(6):
            with torch.no_grad():
                s = net.score(net.user_state(hist, frozen=True).unsqueeze(1), items)
                trace.append(float((s[:, 0] - s[:, 1]).mean()))
            opt.zero_grad()
            policy._dpo_loss(net, pairs).backward()
            opt.step()
        gaps[flip] = np.array(trace)
    assert (np.diff(gaps[False]) > 0).all(), gaps[False]
    assert (np.diff(gaps[True]) < 0).all(), gaps[True]
    assert gaps[False][-1] - gaps[False][0] > 0.03              # measured 0.050


def _questionnaire_loss(policy: EASQ, net: EASQNet, hist, items):
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    answers = Answers(hist, items[:, 0], labels)
    return policy._dpo_loss(net, Pairs(hist, items)) + policy._sat_loss(net, answers) \
        + policy._align_bce_loss(net, answers)


def test_backbone_gets_no_gradient_from_questionnaire_losses():
    net = _net().train()
    _perturb_b(net)                            # B != 0, so that A receives gradient too
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


# --- data path: request-time contexts -----------------------------------------------------------

def test_history_and_click_count_helpers():
    # user 3: clicks at events 0, 2, 3; user 5: no click, then a click
    users = np.array([3, 3, 3, 3, 3, 5, 5])
    ev = np.array([1, 0, 1, 1, 0, 0, 1], bool)
    assert clicks_before(users, ev).tolist() == [0, 1, 1, 2, 3, 0, 0]
    # pages: user 3 requests 7 (events 0-1), 8 (events 2-4); user 5 request 9 (both events)
    requests = np.array([7, 7, 8, 8, 8, 9, 9])
    assert clicks_before_request(users, requests, ev).tolist() == [0, 0, 1, 1, 1, 0, 0]
    items = np.array([10, 11, 12, 13, 14, 20, 21])
    clicks = Sequences.from_events(users[ev], items[ev])
    rows = clicks.rows_of(users)
    h = histories(clicks, rows, clicks_before(users, ev), 2)
    assert h.tolist() == [[0, 0], [0, 11], [0, 11], [11, 13], [13, 14], [0, 0], [0, 0]]
    assert histories(clicks, np.array([-1]), np.array([0]), 3).tolist() == [[0, 0, 0]]


def test_pairs_are_same_user_within_the_window():
    ev = Events(
        users=np.array([1, 1, 1, 2, 2, 1]), items=np.array([5, 6, 7, 5, 8, 5]),
        ts=np.array([0.0, 10.0, 200.0, 0.0, 50.0, 20.0]), kind=np.array([1, 0, 0, 0, 1, 0], np.int8),
        label=np.full(6, np.nan, np.float32), hist=np.zeros((6, 2), np.int64))
    iw, il = preference_pairs(ev, window_s=100.0)
    assert sorted(zip(iw.tolist(), il.tolist())) == [(0, 1), (4, 3)]    # (0, 5): same item; (0, 2): too far
    iw, il = preference_pairs(ev, window_s=100.0, new=np.array([0, 0, 0, 1, 0, 0], bool))
    assert list(zip(iw.tolist(), il.tolist())) == [(4, 3)]


L_CTX = 20


@pytest.fixture(scope="module")
def served_histories(tiny_world):
    """(frame, hist): the tiny world's impressions in page order and the click history a feature
    store returned for each at its request, replayed as the platform serves: every request of a
    tick reads the store, then its page is recorded."""
    t = tiny_world.train
    frame = t.impressions.iloc[page_order(t.impressions)[0]].reset_index(drop=True)
    store = feature_store_from(LogData(t.impressions.iloc[:0], t.items, t.users), history_length=L_CTX)
    first = frame.groupby(["user_id", "request_id"], sort=False)["ts"].transform("min").to_numpy()
    hist = np.zeros((len(frame), L_CTX), np.int64)
    answer = frame["survey_answer"].astype(object)
    flags = {c: frame[c].to_numpy(bool) for c in ("effective_view", "skip", "like", "survey_submitted")}
    flags["survey_satisfied"] = (answer == "like").to_numpy()
    flags["survey_dissatisfied"] = answer.isin(("dislike", "unsuitable", "adults_only")).to_numpy()
    users, items = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    order = np.argsort(first, kind="stable")                                # by tick, user order kept
    ticks, starts = np.unique(first[order], return_index=True)
    for rows in np.split(order, starts[1:]):
        rows = np.sort(rows)                                               # grouped by user, chronological
        h, _ = store.history("clicks", users[rows], L_CTX)
        hist[rows] = to_model_ids(h)
        store.record(users[rows], items[rows], **{k: v[rows] for k, v in flags.items()}, grouped=True)
    assert len(ticks) < len(np.unique(frame["request_id"]))                # requests do share ticks
    return frame, hist


def test_training_contexts_are_the_feature_store_at_request_time(served_histories, tiny_world, day_split):
    """Every training context (backbone windows, tower answers, DPO pairs, online steps) is the
    click history the feature store returned when the impression's page was requested: no click
    of the same page, none after it."""
    frame, served = served_histories
    ctx = click_context(frame, None)
    assert np.array_equal(ctx.histories(L_CTX), served)
    # the same page's clicks are left out: many impressions follow a click on their own page
    same_page = clicks_before(frame["user_id"].to_numpy(), frame["effective_view"].to_numpy(bool))
    naive = histories(ctx.clicks, ctx.rows, same_page, L_CTX)
    assert (naive != served).any(axis=1).mean() > 0.3
    # the backbone's windows: each impression's state is the newest part of that history
    index = window_index(frame["user_id"].to_numpy(np.int64), ctx, L_CTX)
    assert np.array_equal(index.users[index.imp_win], frame["user_id"].to_numpy())
    assert ((index.imp_col == L_CTX) == (served == 0).all(axis=1)).all()   # no click yet: the empty state
    assert ctx.clicks.lengths.max() > 3 * L_CTX                            # users with several windows
    for n in np.flatnonzero((served > 0).any(axis=1)):
        prefix = index.inputs[index.imp_win[n], :index.imp_col[n] + 1]
        prefix = prefix[prefix > 0]
        assert len(prefix) >= 1 and np.array_equal(served[n, L_CTX - len(prefix):], prefix), n
    assert (index.inputs > 0).sum() == len(ctx.clicks.items)               # every click in one window
    # online: after a fit on day 0, update()'s contexts for day 1 continue the kept clicks
    first, _ = day_split
    fitted = make_policy("easq", encoder=dict(d_model=16, max_len=L_CTX), train=dict(max_epochs=1),
                         satisfaction=dict(epochs=1), align=dict(epochs=1))
    fitted.fit(first, rng=np.random.default_rng(0))
    day1 = (frame["day"] == 1).to_numpy()
    online = click_context(frame[day1], fitted.clicks_)
    assert np.array_equal(online.histories(L_CTX), served[day1])


# --- the policy -----------------------------------------------------------------------------------

def test_variants_name_the_paper_rows():
    assert set(VARIANTS) == {"EASQ", "w/o LoRA", "w/o DPO", "offline-only", "click-only"}
    for params in VARIANTS.values():
        make_policy("easq", **params)


@pytest.mark.parametrize("row", ["EASQ", "w/o LoRA", "w/o DPO", "offline-only"])
def test_check_policy(row, tiny_world):
    ran = check_policy(lambda: make_policy("easq", **FAST, **VARIANTS[row]), tiny_world.train,
                       tiny_world.batch())
    assert ran[-1] == "update"


@pytest.mark.parametrize("params, message", [
    (dict(objective="ipo"), "^easq: objective='ipo' must be one of 'dpo', 'bce'$"),
    (dict(fusion=(1.0, 1.0)), r"^easq: fusion=\(1.0, 1.0\) must have 4 weights"),
    (dict(fusion=[1.0, 1.0, 1.0, "x"]), r"^easq: fusion=\(1.0, 1.0, 1.0, 'x'\) must be 4 finite numbers$"),
    (dict(fusion=(1.0, 1.0, 1.0, -0.5)), "^easq: fusion=.*the satisfaction weight -0.5 must be >= 0"),
    (dict(train=dict(task_weights=(1.0,))), r"^easq: train.task_weights=\(1.0,\) must have 3 weights"),
    (dict(train=dict(task_weights=(1.0, -1.0, 1.0))), r"^easq: train.task_weights\[1\]=-1.0 must be >= 0"),
    (dict(lora=dict(rank=0)), "^easq: lora.rank=0 must be >= 1 with use_lora=true$"),
    (dict(lora=dict(alpha=0.0)), "^easq: lora.alpha=0.0 must be > 0$"),
    (dict(align=dict(beta=0.0)), "^easq: align.beta=0.0 must be > 0$"),
    (dict(train=dict(lr=-1.0)), r"^easq: train\.lr=-1\.0 must be > 0$"),
    (dict(satisfaction=dict(lr=0.0)), "^easq: satisfaction.lr=0.0 must be > 0$"),
    (dict(align=dict(lr=0.0)), "^easq: align.lr=0.0 must be > 0$"),
    (dict(updates=dict(lr=0.0)), "^easq: updates.lr=0.0 must be > 0$"),
    (dict(updates=dict(align_lr=-0.1)), "^easq: updates.align_lr=-0.1 must be > 0$"),
    (dict(updates=dict(max_grad_norm=0.0)), "^easq: updates.max_grad_norm=0.0 must be > 0$"),
    (dict(updates=dict(dense_samples=-1)), "^easq: updates.dense_samples=-1 must be an integer >= 0$"),
    (dict(train=dict(max_epochs=0)), "^easq: train.max_epochs=0 must be an integer >= 1$"),
    (dict(train=dict(patience=0)), "^easq: train.patience=0 must be an integer >= 1$"),
    (dict(temperature=-1.0), "^easq: temperature=-1.0 must be > 0$"),
    (dict(align=dict(loser_answers=("like",))), "^easq: align.loser_answers=.*must not contain"),
    (dict(align=dict(loser_answers=("meh",))), "^easq: align.loser_answers=.*'meh' is not one of"),
    (dict(train=dict(valid_share=1.0)), r"^easq: train.valid_share=1.0 must be in \[0, 1\)$"),
    (dict(encoder=dict(d_model=16, n_heads=3)), "^easq: encoder.d_model=16 must be divisible by n_heads=3$"),
    (dict(encoder=dict(dropout=1.0)), r"^easq: encoder.dropout=1.0 must be in \[0, 1\)$"),
    (dict(encoder=dict(item_features="leaf")), "^easq: encoder.item_features='leaf' must be a list"),
    (dict(update_epochs=-1), "^easq: update_epochs=-1 must be an integer >= 0$"),
    (dict(use_lora="no"), "^easq: use_lora='no' must be true or false$"),
    (dict(train=dict(lrr=0.1)), r"^easq: train.lrr is not a parameter; train takes: task_weights, "),
    (dict(lr=0.1), r"^easq: lr is not a parameter; easq takes: .*train"),
])
def test_bad_parameters_fail_at_construction(params, message):
    """Before any simulation: run_experiment builds every policy first so as to fail early."""
    with pytest.raises(ValueError, match=message):
        make_policy("easq", **params)


def test_refuses_logs_without_questionnaire_columns_or_clicks(tiny_world):
    imp = tiny_world.train.impressions
    with pytest.raises(ValueError, match="the item table has no column.s. 'colour'"):
        make_policy("easq", encoder=dict(item_features=("leaf", "colour"))).fit(tiny_world.train,
                                                                                rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="missing column.s. 'survey_shown'"):
        make_policy("easq").fit(LogData(imp.drop(columns=["survey_shown"]), tiny_world.train.items,
                                        tiny_world.train.users), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no effective view"):
        make_policy("easq").fit(LogData(imp[~imp["effective_view"]], tiny_world.train.items,
                                        tiny_world.train.users), rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def day_split(tiny_world):
    """Day 0 of the tiny world to fit on; day 1 in hourly chunks of whole pages (by request
    time), as the A/B runner gives them."""
    t = tiny_world.train
    imp = t.impressions
    first = LogData(imp[imp["day"] == 0].reset_index(drop=True), t.items, t.users)
    rest = imp[imp["day"] == 1]
    hours = (rest.groupby(["user_id", "request_id"])["ts"].transform("min") // 3600).to_numpy()
    chunks = [LogData(rest[hours == h].reset_index(drop=True), t.items, t.users) for h in np.unique(hours)]
    return first, chunks


@pytest.fixture(scope="module")
def fitted(day_split):
    """EASQ fitted on day 0 (FAST), each test takes a deep copy."""
    first, _ = day_split
    return {row: make_policy("easq", **FAST, **VARIANTS[row]).fit(first, rng=np.random.default_rng(0))
            for row in ("EASQ", "w/o LoRA", "w/o DPO")}


def test_a_failed_refit_leaves_the_policy_unfitted(fitted, tiny_world):
    policy = copy.deepcopy(fitted["EASQ"])
    imp = tiny_world.train.impressions
    with pytest.raises(ValueError, match="no effective view"):
        policy.fit(LogData(imp[~imp["effective_view"]], tiny_world.train.items, tiny_world.train.users),
                   rng=np.random.default_rng(0))
    with pytest.raises(NotFittedError):
        policy.score(tiny_world.batch())


def test_items_missing_from_the_item_table_get_an_unknown_category(tiny_world):
    t = tiny_world.train
    items = t.items[t.items["item_id"] != 7]
    side = item_side(items, EASQ().encoder.item_features, len(t.items), unknown=True)
    for f, values in zip(EASQ().encoder.item_features, side):
        assert values[7] == t.items[f].max() + 1, f
        assert np.array_equal(np.delete(values, 7), items[f].to_numpy())


def test_online_update_moves_only_what_it_should(day_split, fitted, tiny_world):
    first, chunks = day_split
    batch = tiny_world.batch(n_requests=16, n_candidates=50)
    off = make_policy("easq", **FAST, online=False).fit(first, rng=np.random.default_rng(0))
    before = off.score(batch)
    for c in chunks:
        off.update(c)
    assert np.array_equal(off.score(batch), before)                       # offline-only: a no-op
    on = copy.deepcopy(fitted["EASQ"])
    assert np.array_equal(on.score(batch), before)                        # same fit
    sat_tower = _params(on.model_.satisfaction_parameters())
    lora, backbone = _params(on.model_.lora_parameters()), _params(on.model_.backbone_parameters())
    # alignment steps only (dense steps off), through the real training loop: the backbone and the
    # offline tower stay bit-identical, the side path moves
    aligned = copy.deepcopy(on)
    aligned.updates = replace(aligned.updates, dense_samples=0)
    for c in chunks:
        aligned.update(c)
    assert sum(s.pairs for s in aligned.update_stats_) > 0
    assert all(s.dense == 0 for s in aligned.update_stats_)
    assert _same(backbone, aligned.model_.backbone_parameters())
    assert _same(sat_tower, aligned.model_.satisfaction_parameters())
    assert not _same(lora, aligned.model_.lora_parameters())
    # both steps: the backbone follows the dense stream, the offline tower still stays
    for c in chunks:
        on.update(c)
    assert len(on.update_stats_) == len(chunks) and all(s.dense == s.impressions for s in on.update_stats_)
    assert _same(sat_tower, on.model_.satisfaction_parameters())
    assert not _same(backbone, on.model_.backbone_parameters())
    after = on.score(batch)
    assert np.isfinite(after).all() and not np.allclose(after, before)
    # the persistent Adam of the dense steps carried its state through every update
    steps = {int(s["step"]) for s in on.dense_opt_.state.values()}
    assert steps == {sum(math.ceil(s.dense / 512) for s in on.update_stats_)}
    # the serving path (folded item table) equals the training path on the live histories
    hist, _ = batch.features.history("clicks", batch.user_ids, on.encoder.max_len)
    with torch.no_grad():
        u = on.model_.user_state(torch.from_numpy(to_model_ids(hist)))
        direct = on.model_.score(u.unsqueeze(1), torch.from_numpy(to_model_ids(batch.candidates)))
    assert np.allclose(after, direct.numpy(), atol=1e-5)
    # updates are reproducible: the same seed and chunks give the same scores
    again = make_policy("easq", **FAST).fit(first, rng=np.random.default_rng(0))
    for c in chunks:
        again.update(c)
    assert np.array_equal(again.score(batch), after)


def test_online_alignment_step_grows_with_the_evidence(fitted, day_split):
    """SGD on the summed loss: the same pairs twice move the side path exactly twice as far (a
    fresh Adam would move it by the same ``lr`` per coordinate either way)."""
    _, chunks = day_split
    base = copy.deepcopy(fitted["EASQ"])
    base.updates = replace(base.updates, dense_samples=0, max_grad_norm=None)
    frame = pd.concat([c.impressions for c in chunks[:12]], ignore_index=True)
    frame = frame.iloc[page_order(frame)[0]]
    ctx = click_context(frame, base.clicks_)
    events = base._events(frame, ctx.histories(base.encoder.max_len))
    pairs, answers = base._alignment_data(events, None)
    pairs = Pairs(pairs.hist[:3], pairs.items[:3])
    assert len(pairs.items) == 3
    for group in base.align_opt_.param_groups:
        group["lr"] = 100.0                    # one SGD step is linear in the gradient at any lr
    start = _params(base.model_.lora_parameters())
    moved = {}
    for k in (1, 2):
        p = copy.deepcopy(base)
        twice = Pairs(np.tile(pairs.hist, (k, 1)), np.tile(pairs.items, (k, 1)))
        p._align(twice, answers, online=True, rng=np.random.default_rng(0))
        moved[k] = [a - b for a, b in zip(p.model_.lora_parameters(), start)]
    assert any(d.abs().max() > 0 for d in moved[1])
    for d1, d2 in zip(moved[1], moved[2]):
        assert torch.allclose(d2, 2 * d1, rtol=1e-4, atol=1e-5)          # float32 rounding: < 4e-6
    # not a sign step of size lr: the moved coordinates move by different amounts
    d = torch.cat([x.flatten() for x in moved[1]]).abs()
    d = d[d > 0]
    assert d.max() / d.min() > 10


def test_without_lora_the_reference_is_refreshed_on_schedule(fitted, day_split):
    _, chunks = day_split
    policy = copy.deepcopy(fitted["w/o LoRA"])
    policy.updates = replace(policy.updates, ref_refresh=4)
    snap = _params(policy.reference_.parameters())
    for i, c in enumerate(chunks[:9], start=1):
        ref = policy.reference_
        policy.update(c)
        if i % 4:
            assert policy.reference_ is ref and _same(snap, policy.reference_.parameters()), i
        else:
            assert policy.reference_ is not ref, i
            assert _same(list(policy.model_.parameters()), policy.reference_.parameters())
            assert not _same(snap, policy.reference_.parameters())
            snap = _params(policy.reference_.parameters())


def test_without_dpo_unanswered_exposures_teach_nothing(fitted, day_split):
    _, chunks = day_split
    unanswered = []
    for c in chunks:
        imp = c.impressions[~c.impressions["survey_submitted"]].reset_index(drop=True)
        unanswered.append(LogData(imp, c.items, c.users))
    assert sum(int(c.impressions["survey_shown"].sum()) for c in unanswered) > 20
    policy = copy.deepcopy(fitted["w/o DPO"])
    policy.updates = replace(policy.updates, dense_samples=0)
    lora = _params(policy.model_.lora_parameters())
    for c in unanswered:
        policy.update(c)
    assert sum(s.answers for s in policy.update_stats_) == 0
    assert _same(lora, policy.model_.lora_parameters())
    answered = copy.deepcopy(fitted["w/o DPO"])
    answered.updates = replace(answered.updates, dense_samples=0)
    for c in chunks:
        answered.update(c)
    assert sum(s.answers for s in answered.update_stats_) > 0
    assert not _same(lora, answered.model_.lora_parameters())


def test_update_drops_rows_it_has_already_seen(fitted, day_split, tiny_world):
    first, chunks = day_split
    policy = copy.deepcopy(fitted["EASQ"])
    params = _params(policy.model_.parameters())
    clicks = policy.clicks_
    policy.update(first)                                                  # the training logs again
    assert policy.update_stats_[-1].stale == len(first.impressions)
    assert policy.update_stats_[-1].impressions == 0
    assert _same(params, policy.model_.parameters()) and policy.clicks_ is clicks
    policy.update(chunks[0])
    n0 = len(chunks[0].impressions)
    both = LogData(pd.concat([chunks[0].impressions, chunks[1].impressions], ignore_index=True),
                   chunks[1].items, chunks[1].users)                      # overlaps the previous call
    policy.update(both)
    assert policy.update_stats_[-1].stale == n0
    assert policy.update_stats_[-1].impressions == len(chunks[1].impressions)
    reference = copy.deepcopy(fitted["EASQ"])
    reference.update(chunks[0])
    reference.update(chunks[1])
    batch = tiny_world.batch()
    assert np.array_equal(policy.score(batch), reference.score(batch))


def test_update_rejects_unknown_items(fitted, day_split):
    first, chunks = day_split
    policy = copy.deepcopy(fitted["EASQ"])
    bad = chunks[0].impressions.copy()
    bad.loc[bad.index[0], "item_id"] = 10 ** 6
    with pytest.raises(ValueError, match="outside the fitted catalogue"):
        policy.update(LogData(bad, first.items, first.users))


def test_ab_config_loads():
    from simulator.config import load_toml
    from experiments.config import ExperimentConfig
    config = load_toml(ExperimentConfig, Path(__file__).parents[2] / "studies" / "configs" / "easq.toml")
    rows = {b.name: b for b in config.buckets}
    assert config.control == "control" and rows["control"].policy == "production"
    assert {b.policy for b in config.buckets if b.name != "control"} == {"easq"}
    for b in config.buckets:
        make_policy(b.policy, **b.params)
    assert config.ab.update_interval_s > 0


# --- learning (slow) ------------------------------------------------------------------------------

LEARN_WORLD = dict(n_users=600, n_items=1000, seed=0,
                   # questionnaires shown 0.5 (not 0.06) after an effective view, up to 10 per user
                   # per day: about 2,000 exposures and 600 answers per bucket-day, so that online
                   # updates have pairs to learn from (the default world has ~1% answered views)
                   questionnaire=dict(base_rate=0.5, per_user_daily_cap=10),
                   # a 5-minute serving window (default 1 minute): fewer, larger ranking calls
                   platform=dict(tick_s=300.0))
LEARN = dict(encoder=dict(d_model=16, max_len=20), train=dict(max_epochs=3), satisfaction=dict(epochs=10),
             align=dict(epochs=5))


def _ab_config(**easq):
    from experiments.config import ABSettings, BucketConfig, ExperimentConfig
    return ExperimentConfig(
        world=first_world(tiny(**LEARN_WORLD)), ab=ABSettings(pre_days=1, days=3, learning="update", update_interval_s=7200.0),
        control="offline",
        buckets=(BucketConfig("easq", "easq", 0.5, dict(LEARN, **easq)),
                 BucketConfig("offline", "easq", 0.5, dict(LEARN, online=False))))


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory):
    """The slow tests' A/B test (EASQ online against its offline-only variant), the policies it
    built (a spy on ``make_policy``), and the same test with the EASQ bucket offline-only too."""
    import policies as registry
    from experiments.runner import run_experiment
    made = []

    def spy(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    make = registry.make_policy
    root = tmp_path_factory.mktemp("easq_ab")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "make_policy", spy)
        online = run_experiment(_ab_config(), root / "online", progress=False, report=False)
    offline = run_experiment(_ab_config(online=False), root / "offline", progress=False, report=False)
    return online, dict(zip(("easq", "offline"), made)), offline


def held_out_margins(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Online DPO alone on the A/B run's logs: fit on the pre-period day (dense online steps
    off), update hour by hour on day 1 of both buckets, then score day 2's pairs, which neither
    model has seen, in the updated model's contexts. Returns their margins before and after."""
    from simulator.logs import read_impressions
    items, users = pd.read_parquet(run_dir / "items.parquet"), pd.read_parquet(run_dir / "users.parquet")

    def logs(day: int) -> pd.DataFrame:
        return LogData(read_impressions(run_dir / "logs", days=[day]), items, users).observable().impressions

    fit_on, online, held = logs(0), logs(1), logs(2)
    obs = LogData(fit_on, items, users).observable()
    before = make_policy("easq", **FAST, updates=dict(dense_samples=0)).fit(obs, rng=np.random.default_rng(0))
    after = copy.deepcopy(before)
    hours = (online.groupby(["user_id", "request_id"])["ts"].transform("min") // 3600).to_numpy()
    for h in np.unique(hours):
        after.update(LogData(online[hours == h].reset_index(drop=True), obs.items, obs.users))
    assert _same(_params(before.model_.backbone_parameters()), after.model_.backbone_parameters())
    frame = held.iloc[page_order(held)[0]]
    ctx = click_context(frame, after.clicks_)
    events = after._events(frame, ctx.histories(after.encoder.max_len))
    pairs, _ = after._alignment_data(events.take(np.flatnonzero(events.kind >= 0)), None)
    return before.pair_margins(pairs), after.pair_margins(pairs)


@pytest.mark.slow
def test_online_dpo_raises_the_margins_of_later_pairs(ab_run):
    """The questionnaire path on its own: online DPO steps (no dense step) make the side path
    prefer the satisfied item of *next-day* pairs, which it has not trained on, more than before.
    Measured: mean margin gain +1.06 (z = 8.7), 60% of the 760 pairs gain. With the sign of Eq. (4)
    flipped (checked by hand, not in the suite): -0.54 (z = -8.9), 40% gain."""
    before, after = held_out_margins(ab_run[0].run_dir)
    gain = after - before
    assert len(gain) > 500
    assert gain.mean() > 4 * gain.std() / np.sqrt(len(gain)), (gain.mean(), gain.std())
    assert (gain > 0).mean() > 0.55


@pytest.mark.slow
def test_online_updates_raise_oracle_satisfaction(ab_run):
    """The issue's property: EASQ with online updates raises its bucket's oracle satisfaction over
    the experiment days against its offline-only variant.

    Paired: the same bucket (same users, fit seed and random streams) in a second run where it is
    offline-only, so bucket composition cancels (it does not across buckets: two offline-only
    buckets of this world differ by +0.001, +0.032, -0.027 at world seeds 0, 1, 2). Measured
    paired gains (seeds 0 / 1 / 2): overall +0.054 / +0.033 / +0.066, first day +0.040 / +0.007 /
    +0.042, last day +0.056 / +0.056 / +0.075. Most of it comes from the dense online steps: with
    the DPO sign flipped the gain is +0.034 / -0.006 / +0.053 (so the questionnaire path adds
    +0.020 / +0.039 / +0.014), and online DPO alone gains +0.002 / +0.016 / +0.021 (flipped: -0.001
    / -0.032 / -0.006), against a paired noise of about +-0.005. Isolating the questionnaire path's
    oracle gain takes a third A/B run (flipped or DPO-only), over this file's time budget, and at
    seed 0 its DPO-only gain is within the noise; the last assertion (prequential pair margins in
    this run) and test_online_dpo_raises_the_margins_of_later_pairs check that path directly."""
    online, made, offline = ab_run
    daily = online.daily.pivot(index="day", columns="bucket", values="oracle_satisfaction")
    alone = offline.daily.pivot(index="day", columns="bucket", values="oracle_satisfaction")
    gain = (daily["easq"] - alone["easq"]).to_numpy()                      # per experiment day
    assert gain.mean() > 0.02 and (gain > 0).all(), gain
    assert gain[-1] - gain[0] > 0.01, gain                                # it grows as EASQ learns
    # the A/B analysis of the online run against the offline-only bucket agrees
    lift = online.lifts.set_index(["bucket", "metric"]).loc[("easq", "oracle_satisfaction")]
    assert lift["difference"] > 0.02 and lift["diff_ci_low"] > 0
    # the questionnaire path inside the A/B test: before each step, the side path already prefers
    # the satisfied item of the pairs it has not trained on (prequential margin, pair-weighted);
    # measured with the kernel pin of simulator/reproducibility.py +0.023 / +0.100 / +0.018 (world seeds
    # 0 / 1 / 2); DPO sign flipped: -0.132 / -0.159 / -0.005. (Before the pin, MKL's non-CNR kernels gave
    # +0.235 / +0.042 / +0.067 and flipped -0.12 / -0.19 / -0.06: this statistic moves with the last
    # bits of training, so the bound sits between the two signs at seed 0, not near one draw.)
    stats = made["easq"].update_stats_
    assert len(stats) >= 35 and sum(s.stale for s in stats) == 0          # every 2 h for 3 days
    n = np.array([s.pairs for s in stats])
    assert n.sum() > 1200, n.sum()                                        # measured 1,566-2,604
    margin = np.array([s.margin if s.pairs else 0.0 for s in stats])
    assert np.average(margin, weights=n) > 0.01
