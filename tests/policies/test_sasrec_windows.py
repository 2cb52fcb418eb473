"""SASRec / SASRec-N training data obey the page rule: every target click is scored from the clicks
of the pages requested before its own page (what the feature store held when the page was
ranked), never from a click above it on its own page; checked by hand, against the request ids
of the logs, and against a feature store replayed request by request as the platform serves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from policy_support import feature_store_from, frame

from policies import make_policy
from policies.data import (holdout_last, n_items_of, page_order, page_starts, positive_keys, request_sequences,
                           to_model_ids)
from policies.sasrec import _history_at
from simulator.schema import PAD, LogData, RankBatch

FAST = dict(max_epochs=2, d_model=16, n_layers=1, max_len=20, eval_negatives=20)
L = FAST["max_len"]


# --- by hand --------------------------------------------------------------------------------

# user 0: pages {10, 11s, 12}, {13s, 14, 15}, {16, 17}; user 1: one page {3, 4} (no earlier page)
PAGES = {(0, 0): [(10, "c"), (11, "s"), (12, "c")], (0, 1): [(13, "s"), (14, "c"), (15, "c")],
         (0, 2): [(16, "c"), (17, "c")], (1, 3): [(3, "c"), (4, "c")]}


def _hand_log() -> pd.DataFrame:
    rows = [(user, req * 10.0 + pos, req, pos, item, kind == "c", kind == "s", "none")
            for (user, req), events in PAGES.items() for pos, (item, kind) in enumerate(events)]
    return frame(rows)


def test_a_click_is_never_the_context_of_a_later_click_on_its_page():
    mixed, before = request_sequences(_hand_log(), "mixed")
    rest, valid = holdout_last(mixed)                                  # 17 and 4 are held out
    keep = mixed.event_rank < np.repeat(rest.lengths, mixed.lengths)
    w = make_policy("sasrec_n", max_len=6)._windows(rest, before[keep])
    # user 1's clicks share one page: no click has an earlier page, so no window
    assert w.users.tolist() == [0]
    assert w.inputs[0].tolist() == [0, 0, 11, 13, 15, 16]              # model ids: clicks 10, 12, 14, 15
    assert w.targets[0].tolist() == [0, 11, 13, 15, 16, 17]            # next clicks 10, 12, 14, 15, 16
    # 14 is scored from the state after 12 (column 3), and so is 15: not after 14, which is above
    # it on its own page (the old windows scored 15 at column 4); 10 and 12 have no earlier page
    assert w.ctx[0].tolist() == [-1, -1, -1, 3, 3, 5]
    # SASRec-N: the latest skip of the earlier pages (11 for 14 and 15, not 13 above them)
    assert w.skips[0].tolist() == [PAD, PAD, PAD, 11, 11, 13]
    # validation: the held-out 17 is ranked with the clicks before its page, without 16
    held = mixed.offsets[mixed.rows_of(valid.users)] + rest.lengths[rest.rows_of(valid.users)]
    assert mixed.items[held].tolist() == [17, 4]
    hist, count = _history_at(mixed, before, held, 6)
    assert count.tolist() == [4, 0]
    assert hist.tolist() == [[PAD, PAD, 10, 12, 14, 15], [PAD] * 6]


def test_the_loss_reads_only_the_state_at_each_targets_context(tiny_world):
    """Replacing every input after a target's context column leaves its loss term unchanged: the
    loss equals a reference that encodes, per target, the window cut at its context."""
    train = tiny_world.train
    policy = make_policy("sasrec_n", **FAST).fit(train, rng=np.random.default_rng(0))
    model = policy.model_.eval()
    n_items = n_items_of(train)
    w = policy._windows(policy.mixed_, policy.before_)
    b = policy._examples(w, n_items, positive_keys(policy.mixed_, n_items), np.random.default_rng(1))
    n = 24
    bt = {k: torch.from_numpy(getattr(b, k)[:n]) for k in ("users", "inputs", "targets", "ctx", "negatives", "skips")}
    r, t = np.nonzero(b.ctx[:n] >= 0)
    assert (b.ctx[:n][r, t] < t).sum() > 0.2 * len(r)                   # many targets share their page
    q = b.ctx[:n][r, t]
    garbled = b.inputs[:n][r].copy()                                   # one row per target
    after = np.arange(L)[None, :] > q[:, None]
    garbled[after] = np.random.default_rng(2).integers(1, n_items + 1, int(after.sum()))
    with torch.no_grad():
        h = model(torch.from_numpy(garbled))[torch.arange(len(r)), torch.from_numpy(q)]   # (m, d)
        ids = lambda a: torch.from_numpy(a[:n][r, t][:, None])         # noqa: E731
        pos, neg, sk = (model.score_items(h, ids(a)).squeeze(-1) for a in (b.targets, b.negatives, b.skips))
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none") \
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none") \
            + policy.skip_weight * F.binary_cross_entropy_with_logits(sk, torch.zeros_like(sk), reduction="none") \
            * torch.from_numpy(b.skips[:n][r, t] > 0).float()
        want = loss.sum() / len(r)
        have = policy._loss(model, type(b)(**bt))
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6)


# --- against the logs and a replayed feature store --------------------------------------------

def _empty_store(train: LogData):
    return feature_store_from(LogData(train.impressions.iloc[:0], train.items, train.users), history_length=L)


def _flags(imp: pd.DataFrame) -> dict:
    answer = imp["survey_answer"].astype(object)
    return dict(effective_view=imp["effective_view"].to_numpy(bool), skip=imp["skip"].to_numpy(bool),
                like=imp["like"].to_numpy(bool), survey_submitted=imp["survey_submitted"].to_numpy(bool),
                survey_satisfied=(answer == "like").to_numpy(),
                survey_dissatisfied=answer.isin(("dislike", "unsuitable", "adults_only")).to_numpy())


def _record(store, imp: pd.DataFrame):
    """Record impressions (grouped by user, in page order) as the platform does after serving."""
    store.record(imp["user_id"].to_numpy(), imp["item_id"].to_numpy(), **_flags(imp), grouped=True)
    return store


@pytest.fixture(scope="module")
def served(tiny_world):
    """(imp, clicks, skips): the tiny world's impressions in page order and, per impression, the
    newest ``L`` clicks and the newest skip (items, PAD-padded) a feature store returned at its
    page's request, replayed as the platform serves: every request of a tick reads the store,
    then the tick's pages are recorded."""
    t = tiny_world.train
    imp = t.impressions.iloc[page_order(t.impressions)[0]].reset_index(drop=True)
    store = _empty_store(t)
    first = imp.groupby(["user_id", "request_id"], sort=False)["ts"].transform("min").to_numpy()
    users = imp["user_id"].to_numpy()
    clicks = np.zeros((len(imp), L), np.int64)
    skips = np.zeros(len(imp), np.int64)
    order = np.argsort(first, kind="stable")
    ticks, starts = np.unique(first[order], return_index=True)
    for rows in np.split(order, starts[1:]):
        rows = np.sort(rows)                                           # grouped by user, page order
        clicks[rows] = store.history("clicks", users[rows], L)[0]
        skips[rows] = store.history("skips", users[rows], 1)[0][:, 0]
        _record(store, imp.iloc[rows])
    assert len(ticks) < imp["request_id"].nunique()                    # requests do share ticks
    return imp, clicks, skips


def _click_rows(imp: pd.DataFrame, mixed) -> np.ndarray:
    """Row of ``imp`` (page order) of every click of ``mixed.positives()``."""
    rows = np.flatnonzero(imp["effective_view"].to_numpy(bool))        # grouped by user, page order
    assert np.array_equal(imp["item_id"].to_numpy()[rows], mixed.positives().items)
    return rows


@pytest.mark.parametrize("stride", [None, L // 2])
def test_every_context_click_is_from_an_earlier_request(served, tiny_world, stride):
    """Map every context column of every training target back to its impression: same user,
    an earlier request (smaller request id and an earlier page) than the target's."""
    imp, _, _ = served
    mixed, before = request_sequences(tiny_world.train, "mixed")
    w = make_policy("sasrec", **FAST, window_stride=stride)._windows(mixed, before)
    rows = _click_rows(imp, mixed)
    page = page_starts(imp["user_id"].to_numpy(np.int64), imp["request_id"].to_numpy(np.int64))   # (N,)
    user, request = imp["user_id"].to_numpy(), imp["request_id"].to_numpy()
    r, t = np.nonzero(w.ctx >= 0)
    target = rows[w.events[r, t]]                                      # (m,) impression of each target
    col = np.arange(L)[None, :]
    # the input of column c is the click (t - c) + 1 places before the target
    ctx_rows = rows[np.maximum(w.events[r, t][:, None] - (t[:, None] - col) - 1, 0)]   # (m, L)
    used = (col <= w.ctx[r, t][:, None]) & (w.inputs[r] > 0)           # the context of each target
    assert np.array_equal(to_model_ids(imp["item_id"].to_numpy()[ctx_rows])[used], w.inputs[r][used])
    assert (user[ctx_rows][used] == np.broadcast_to(user[target][:, None], used.shape)[used]).all()
    assert (request[ctx_rows] < request[target][:, None])[used].all()
    assert (page[ctx_rows] < page[target][:, None])[used].all()
    # the old windows' context (every column up to the target's) would include its own page often
    own = (col <= t[:, None]) & (w.inputs[r] > 0) & (page[ctx_rows] == page[target][:, None])
    assert own.any(axis=1).mean() > 0.3
    # every click with a click of an earlier page in its window is a target
    assert len(r) > 0.7 * int((w.targets > 0).sum())


def test_training_contexts_are_the_feature_store_at_request_time(served, tiny_world):
    """The context of every training target is the newest part of the click history a replayed
    feature store returned at the target's request (all of it where the window starts at the
    user's first click), its SASRec-N skip is the store's newest skip then, and each validation
    target's history is exactly the store's."""
    imp, clicks, skips = served
    mixed, before = request_sequences(tiny_world.train, "mixed")
    rows = _click_rows(imp, mixed)
    w = make_policy("sasrec_n", **FAST, window_stride=L // 2)._windows(mixed, before)
    assert len(w) > len(np.unique(w.users))                            # several windows per user
    n_checked = 0
    for i in range(len(w)):
        for t in np.flatnonzero(w.events[i] >= 0):
            want = clicks[rows[w.events[i, t]]]
            q = w.ctx[i, t]
            if q < 0:                                                  # no earlier-page click in the window
                assert w.inputs[i, 0] > 0 or not (want != PAD).any(), (i, t)
                continue
            have = w.inputs[i, :q + 1] - 1                             # model ids -> items, padding -> PAD
            have, full = have[have != PAD], want[want != PAD]
            if w.inputs[i, 0] == 0:                                    # the window holds all the user's clicks
                assert np.array_equal(have, full), (i, t)
            else:
                assert len(have) >= 1 and np.array_equal(have, full[-len(have):]), (i, t)
            assert w.skips[i, t] == skips[rows[w.events[i, t]]], (i, t)
            n_checked += 1
    assert n_checked > 0.7 * int((w.targets > 0).sum())
    # validation, as fit builds it: the history of the held-out click is the store's at its request
    rest, valid = holdout_last(mixed)
    held = mixed.offsets[mixed.rows_of(valid.users)] + rest.lengths[rest.rows_of(valid.users)]
    hist, count = _history_at(mixed, before, held, L)
    mixed_rows = np.flatnonzero(imp["effective_view"].to_numpy(bool) | imp["skip"].to_numpy(bool))
    assert np.array_equal(imp["item_id"].to_numpy()[mixed_rows], mixed.items)   # page order, by user
    np.testing.assert_array_equal(hist, clicks[mixed_rows[held]])
    np.testing.assert_array_equal(np.minimum(count, L), (clicks[mixed_rows[held]] != PAD).sum(1))
    assert (count > 0).mean() > 0.5


def test_serving_scores_equal_the_training_state_at_the_request(served, tiny_world):
    """Where a window's last target is the first click of its page, the model state at the last
    column (dropout off) is what score() computes from a feature store replayed up to that
    page's request: the two paths read the same clicks."""
    imp, _, _ = served
    train = tiny_world.train
    policy = make_policy("sasrec", **FAST).fit(train, rng=np.random.default_rng(0))
    model = policy.model_.eval()
    w = policy._windows(policy.mixed_, policy.before_)
    sel = np.flatnonzero(w.ctx[:, -1] == L - 1)[:40]                   # the last target starts its page
    assert len(sel) >= 20 and len(np.unique(w.users[sel])) == len(sel)
    rows = _click_rows(imp, policy.mixed_)
    target = rows[w.events[sel, -1]]
    page = page_starts(imp["user_id"].to_numpy(np.int64), imp["request_id"].to_numpy(np.int64))
    users = w.users[sel]
    # the store at each of those requests: the user's impressions of the pages before the target's
    cut = pd.Series(page[target], index=users)
    earlier = np.arange(len(imp)) < imp["user_id"].map(cut).to_numpy(float)   # NaN (other users) compares False
    store = _record(_empty_store(train), imp[earlier])
    n_items = n_items_of(train)
    cands = np.random.default_rng(1).integers(0, n_items, (len(sel), 25))
    with torch.no_grad():
        h = model(torch.from_numpy(w.inputs[sel]))[:, -1]              # (n, d)
        want = model.score_items(h, torch.from_numpy(to_model_ids(cands))).numpy()
    have = policy.score(RankBatch(users, cands, 0.0, 0, store))
    np.testing.assert_allclose(have, want, atol=1e-4)
    assert np.std(want[:, 0]) > 1e-3                                   # not trivially equal


def test_update_appends_pages_with_their_boundaries(tiny_world):
    """After update(), the stored sequences and page boundaries are those of the whole log."""
    train = tiny_world.train
    imp = train.impressions
    day = imp["day"].to_numpy()
    old = LogData(imp[day == day.min()].reset_index(drop=True), train.items, train.users)
    new = LogData(imp[day > day.min()].reset_index(drop=True), train.items, train.users)
    policy = make_policy("sasrec_n", **FAST).fit(old, rng=np.random.default_rng(0))
    policy.update(new, epochs=1)
    mixed, before = request_sequences(train, "mixed")
    np.testing.assert_array_equal(policy.mixed_.items, mixed.items)
    np.testing.assert_array_equal(policy.before_, before)
