"""The shared data layer against hand-computed logs, and against the feature store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from policy_support import frame

from policies.data import (Sequences, check_observable, holdout_last, last_negative_before,
                           leave_last_out, leave_last_out_logs, merge, n_items_of, next_item_windows, pad,
                           positive_keys, sample_negatives, to_model_ids, user_sequences)
from policies.data import history as data_history
from simulator.schema import HISTORIES, PAD, LogData

# user 0: click 10, skip 11, click 12 (answered like), click 13 (same ts as 12, later position),
#         then an impression that is neither (14);
# user 1: click 5 (answered dislike), skip 6;
# user 2: two clicks with the same ts: request 6 comes before request 7 whatever the positions
#         (order by ts, then request_id, then position).
ROWS = [
    (0, 1.0, 1, 0, 10, True, False, None),
    (0, 2.0, 1, 1, 11, False, True, None),
    (0, 3.0, 2, 0, 12, True, False, "like"),
    (1, 1.5, 3, 0, 5, True, False, "dislike"),
    (0, 3.0, 2, 1, 13, True, False, None),
    (1, 2.5, 3, 1, 6, False, True, "unsuitable"),
    (0, 4.0, 4, 0, 14, False, False, "neutral"),
    (2, 9.0, 7, 0, 8, True, False, "adults_only"),
    (2, 9.0, 6, 1, 7, True, False, None),
]


def _log(rows=ROWS) -> LogData:
    items = pd.DataFrame({"item_id": np.arange(20), "l1": np.arange(20) % 2, "l2": np.arange(20) % 4,
                          "leaf": np.arange(20) % 8})
    return LogData(frame(rows), items, pd.DataFrame({"user_id": np.arange(3)}))


@pytest.mark.parametrize("kind, users, items, labels", [
    ("clicks", [0, 0, 0, 1, 2, 2], [10, 12, 13, 5, 7, 8], [1, 1, 1, 1, 1, 1]),
    ("skips", [0, 1], [11, 6], [1, 1]),
    ("mixed", [0, 0, 0, 0, 1, 1, 2, 2], [10, 11, 12, 13, 5, 6, 7, 8], [1, 0, 1, 1, 1, 0, 1, 1]),
    ("satisfied", [0], [12], [1]),
    ("dissatisfied", [1, 1, 2], [5, 6, 8], [1, 1, 1]),
])
def test_user_sequences_by_hand(kind, users, items, labels):
    s = user_sequences(_log(), kind)
    np.testing.assert_array_equal(s.event_users, users)
    np.testing.assert_array_equal(s.items, items)
    np.testing.assert_array_equal(s.labels, labels)
    np.testing.assert_array_equal(s.offsets, np.r_[0, np.cumsum(np.unique(users, return_counts=True)[1])])
    assert np.all(np.diff(s.ts)[np.diff(s.event_users) == 0] >= 0)   # chronological within a user


def test_unknown_history_kind():
    with pytest.raises(ValueError, match="kind='likes' must be one of clicks, skips"):
        user_sequences(_log(), "likes")


def _with(table: str, **cols) -> LogData:
    d = _log()
    frames = {"impressions": d.impressions.copy(), "items": d.items.copy(), "users": d.users.copy()}
    for c, v in cols.items():
        frames[table][c] = v
    return LogData(**frames)


@pytest.mark.parametrize("data, error, message", [
    (_with("impressions", true_p_satisfied=0.5), ValueError,
     "policies must be given observable data only; got oracle column.s. true_p_satisfied"),
    (_with("items", true_quality=0.0), ValueError, "got oracle column.s. true_quality"),
    (_with("users", true_willingness=0.1), ValueError, "got oracle column.s. true_willingness"),
    (LogData(frame(ROWS).drop(columns=["skip", "ts"]), pd.DataFrame(), pd.DataFrame()), ValueError,
     "train impressions are missing column.s. 'ts', 'skip'"),
    (LogData(frame(ROWS).iloc[:0], pd.DataFrame(), pd.DataFrame()), ValueError, "train has no impressions"),
    (frame(ROWS), TypeError, "train must be a LogData, got DataFrame"),
])
def test_check_observable_rejects(data, error, message):
    with pytest.raises(error, match=message):
        check_observable(data)


def test_user_sequences_refuses_oracle_logs():
    with pytest.raises(ValueError, match="observable data only"):
        user_sequences(_with("impressions", true_satisfied=True), "clicks")


def test_n_items_from_the_item_table_or_the_logs():
    assert n_items_of(_log()) == 20
    assert n_items_of(LogData(frame(ROWS), pd.DataFrame(), pd.DataFrame())) == 15   # max id 14


def test_holdout_last_on_mixed_drops_the_target_and_later_skips():
    mixed = user_sequences(_log(), "mixed")
    rest, t = holdout_last(mixed)
    # user 0 holds out 13 (its last positive); user 1 has one positive: kept whole, no target;
    # user 2 holds out 8
    np.testing.assert_array_equal(t.users, [0, 2])
    np.testing.assert_array_equal(t.items, [13, 8])
    np.testing.assert_array_equal(rest.items, [10, 11, 12, 5, 6, 7])
    np.testing.assert_array_equal(t.history.items, [10, 11, 12, 7])
    np.testing.assert_array_equal(t.history.users, [0, 2])


def test_leave_last_out_by_hand():
    # user 3 has 5 clicks with skips in between; user 4 only 2 clicks: all train, no targets
    rows = [(3, float(t), t, 0, item, ev, not ev, None)
            for t, (item, ev) in enumerate([(1, True), (2, True), (9, False), (3, True), (4, True),
                                            (8, False), (5, True), (6, False)])]
    rows += [(4, 1.0, 100, 0, 1, True, False, None), (4, 2.0, 101, 0, 2, True, False, None)]
    clicks = user_sequences(LogData(frame(rows), pd.DataFrame(), pd.DataFrame()), "clicks")
    split = leave_last_out(clicks)
    np.testing.assert_array_equal(split.test.users, [3])
    np.testing.assert_array_equal(split.test.items, [5])
    np.testing.assert_array_equal(split.valid.items, [4])
    np.testing.assert_array_equal(split.valid.history.items, [1, 2, 3])
    np.testing.assert_array_equal(split.test.history.items, [1, 2, 3, 4])
    assert split.train.row(3).tolist() == [1, 2, 3] and split.train.row(4).tolist() == [1, 2]
    mixed = user_sequences(LogData(frame(rows), pd.DataFrame(), pd.DataFrame()), "mixed")
    split = leave_last_out(mixed)
    assert split.test.history.row(3).tolist() == [1, 2, 9, 3, 4, 8]   # skips kept in order
    assert split.valid.history.row(3).tolist() == [1, 2, 9, 3]
    with pytest.raises(ValueError, match="min_positives=2 must be >= 3"):
        leave_last_out(clicks, min_positives=2)


def test_leave_last_out_logs_cuts_at_the_last_click():
    data = _log()
    train, targets = leave_last_out_logs(data)
    # only user 0 has >= 3 clicks: its last click (13, at row 4) and the later impression go
    np.testing.assert_array_equal(targets.users, [0])
    np.testing.assert_array_equal(targets.items, [13])
    kept = train.impressions
    assert sorted(kept.loc[kept.user_id == 0, "item_id"]) == [10, 11, 12]
    assert len(kept[kept.user_id != 0]) == len(data.impressions[data.impressions.user_id != 0])
    assert list(kept.columns) == list(data.impressions.columns)
    # the policy's own holdout of the cut logs is the user's second-to-last click
    _, own = holdout_last(user_sequences(train, "clicks"))
    assert own.items[own.users == 0].tolist() == [12]


def test_sequences_helpers():
    s = Sequences.from_events(np.array([2, 2, 5]), np.array([1, 2, 3]))
    np.testing.assert_array_equal(s.rows_of(np.array([5, 3, 2, 9])), [1, -1, 0, -1])
    assert s.row(5).tolist() == [3] and s.row(4).tolist() == []
    np.testing.assert_array_equal(s.event_rank, [0, 1, 0])
    with pytest.raises(ValueError, match="users must be sorted"):
        Sequences.from_events(np.array([2, 1]), np.array([1, 2]))
    newer = Sequences.from_events(np.array([1, 2]), np.array([7, 8]))
    m = merge(s, newer)
    np.testing.assert_array_equal(m.users, [1, 2, 5])
    assert m.row(2).tolist() == [1, 2, 8]   # older events first


def test_pad_right_aligns_truncates_and_maps_pad_to_zero():
    s = Sequences.from_events(np.array([0, 0, 0, 1]), np.array([4, 5, 6, 7]))
    np.testing.assert_array_equal(pad(s, 2), [[5, 6], [PAD, 7]])          # newest kept
    np.testing.assert_array_equal(pad(s, 4), [[PAD, 4, 5, 6], [PAD, PAD, PAD, 7]])
    np.testing.assert_array_equal(to_model_ids(pad(s, 4)), [[0, 5, 6, 7], [0, 0, 0, 8]])
    np.testing.assert_array_equal(pad(s, 2, rows=np.array([1, -1])), [[PAD, 7], [PAD, PAD]])
    np.testing.assert_array_equal(pad(s, 3, values=np.array([1, 2, 3, 4]), fill=0), [[1, 2, 3], [0, 0, 4]])
    with pytest.raises(ValueError, match="max_len=0 must be >= 1"):
        pad(s, 0)


def test_history_matches_the_feature_store(tiny_world):
    """What a model is trained on from logs is what it reads from the feature store at serving."""
    users = np.arange(len(tiny_world.train.users))
    for kind in HISTORIES:
        seqs = user_sequences(tiny_world.train, kind)
        for length in (50, 7):
            items, labels = data_history(seqs, users, length)
            s_items, s_labels = tiny_world.store.history(kind, users, length)
            np.testing.assert_array_equal(items, s_items, err_msg=kind)
            if kind == "mixed":
                np.testing.assert_array_equal(labels, s_labels)
            assert items.dtype == s_items.dtype == np.int32


def test_next_item_windows_by_hand():
    s = Sequences.from_events(np.array([0] * 7 + [1] * 2 + [2]), np.arange(10))
    w = next_item_windows(s, 3)
    np.testing.assert_array_equal(w.users, [0, 1])            # user 2 (one event) gives none
    # model ids (item + 1): user 0's newest 4 events are items 3..6
    np.testing.assert_array_equal(w.inputs, [[4, 5, 6], [0, 0, 8]])
    np.testing.assert_array_equal(w.targets, [[5, 6, 7], [0, 8, 9]])
    w = next_item_windows(s, 3, stride=3)
    np.testing.assert_array_equal(w.users, [0, 0, 1])
    np.testing.assert_array_equal(w.inputs[1], [1, 2, 3])
    np.testing.assert_array_equal(w.targets[1], [2, 3, 4])
    # with stride = max_len every event but the first of a user is a target (after a real
    # input) exactly once
    targets = np.sort(w.targets[(w.targets > 0) & (w.inputs > 0)])
    np.testing.assert_array_equal(targets, [2, 3, 4, 5, 6, 7, 9])
    extra = next_item_windows(s, 3, extra=np.arange(10) * 10).extra
    np.testing.assert_array_equal(extra, [[40, 50, 60], [PAD, 70, 80]])
    with pytest.raises(ValueError, match="stride=0 must be >= 1"):
        next_item_windows(s, 3, stride=0)


def test_last_negative_before_by_hand():
    mixed = user_sequences(_log(), "mixed")   # user 0: 10 +, 11 -, 12 +, 13 +; user 1: 5 +, 6 -; user 2: 7 +, 8 +
    np.testing.assert_array_equal(last_negative_before(mixed), [PAD, 11, 11, PAD, PAD, PAD])
    # a skip of user 0 never leaks into user 1's first click
    s = Sequences.from_events(np.array([0, 0, 1]), np.array([1, 2, 3]), np.array([1, 0, 1]))
    np.testing.assert_array_equal(last_negative_before(s), [PAD, PAD])


def test_negative_sampling_never_returns_a_positive():
    rng = np.random.default_rng(0)
    n_items, n_users = 30, 200
    users = np.repeat(np.arange(n_users), 20)
    items = rng.integers(0, n_items, len(users))          # each user has ~15 of 30 items as positives
    seqs = Sequences.from_events(users, items)
    keys = positive_keys(seqs, n_items)
    negs = sample_negatives(np.random.default_rng(1), np.arange(n_users), 10, n_items=n_items, exclude=keys)
    assert negs.shape == (n_users, 10)
    for u in range(n_users):
        assert not set(negs[u]) & set(seqs.row(u).tolist())
    distinct = sample_negatives(np.random.default_rng(1), np.arange(n_users), 10, n_items=n_items,
                                exclude=keys, distinct=True)
    assert all(len(set(r)) == 10 for r in distinct)
    again = sample_negatives(np.random.default_rng(1), np.arange(n_users), 10, n_items=n_items, exclude=keys)
    np.testing.assert_array_equal(negs, again)            # the generator is the only randomness


def test_negative_sampling_is_uniform_over_admissible_items():
    keys = positive_keys(Sequences.from_events(np.zeros(3, int), np.array([0, 1, 2])), 10)
    negs = sample_negatives(np.random.default_rng(2), np.zeros(70_000, int), 1, n_items=10, exclude=keys)
    counts = np.bincount(negs.ravel(), minlength=10)
    assert counts[:3].sum() == 0
    expected = 10_000
    assert np.all(np.abs(counts[3:] - expected) < 5 * np.sqrt(expected))


def test_negative_sampling_fails_loudly_when_impossible():
    keys = positive_keys(Sequences.from_events(np.zeros(4, int), np.arange(4)), 5)
    with pytest.raises(ValueError, match=r"could not sample 2 negative\(s\) for user\(s\) \[0\]"):
        sample_negatives(np.random.default_rng(0), np.array([0]), 2, n_items=5, exclude=keys, distinct=True)


def test_item_side_reads_the_item_table_and_fills_missing_items():
    import pandas as pd
    from policies.data import item_side
    items = pd.DataFrame({"item_id": [0, 2, 3], "l1": [4, 5, 6], "leaf": [1, 1, 2]})
    l1, leaf = item_side(items, ("l1", "leaf"), 5)
    assert l1.tolist() == [4, 0, 5, 6, 0] and leaf.tolist() == [1, 0, 1, 2, 0]
    (l1,) = item_side(items, ("l1",), 5, unknown=True)              # a category of its own
    assert l1.tolist() == [4, 7, 5, 6, 7]
    assert item_side(items, (), 5) == []
    with pytest.raises(ValueError, match="no column.s. 'author_id'"):
        item_side(items, ("l1", "author_id"), 5)
