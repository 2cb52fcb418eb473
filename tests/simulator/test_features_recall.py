"""Feature store ring buffers against a plain-Python reference; recall's candidate sets."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.config import PlatformConfig
from simulator.features import PAD, FeatureStore, ItemAttributes, RingHistory
from simulator.recall import Recall, _dedupe, _row_duplicates


def test_ring_history_matches_reference():
    rng = np.random.default_rng(0)
    ring = RingHistory(n_users=20, length=5)
    reference: dict[int, list[tuple[int, int]]] = {u: [] for u in range(20)}
    for _ in range(30):
        n = rng.integers(0, 12)
        users, items = rng.integers(0, 20, n), rng.integers(0, 1000, n)
        labels = rng.integers(0, 2, n).astype(np.int8)
        ring.record(users, items, labels)
        for u, i, l in zip(users, items, labels):
            reference[int(u)].append((int(i), int(l)))
    got_items, got_labels = ring.read(np.arange(20))
    for u in range(20):
        want = reference[u][-5:]
        pad = 5 - len(want)
        assert list(got_items[u]) == [PAD] * pad + [i for i, _ in want]
        assert list(got_labels[u]) == [0] * pad + [l for _, l in want]
    short, _ = ring.read(np.arange(20), 2)
    assert np.array_equal(short, got_items[:, -2:])


def test_grouped_record_equals_sorted_record():
    rng = np.random.default_rng(1)
    a, b = RingHistory(10, 7), RingHistory(10, 7)
    for _ in range(10):
        users = rng.permutation(10)[:4]
        per = rng.integers(1, 5, 4)
        u = np.repeat(users, per)                 # contiguous groups, as in a page batch
        it = rng.integers(0, 100, len(u))
        a.record(u, it, grouped=True)
        b.record(u, it)
    assert np.array_equal(a.read(np.arange(10))[0], b.read(np.arange(10))[0])


def test_read_length_is_checked():
    with pytest.raises(ValueError, match="length=9 must be in"):
        RingHistory(3, 5).read(np.arange(3), 9)
    store = FeatureStore(3, ItemAttributes(*(np.zeros(4, dtype=int),) * 4, np.ones(4)))
    with pytest.raises(KeyError, match="unknown history 'likes'"):
        store.history("likes", np.arange(3))


def _store(n_users=50, n_items=400, n_leaves=20):
    leaf = np.arange(n_items) % n_leaves
    items = ItemAttributes(l1=leaf // 10, l2=leaf // 5, leaf=leaf, author=np.arange(n_items),
                           duration=np.full(n_items, 20.0, np.float32))
    return FeatureStore(n_users, items, n_leaves=n_leaves)


def test_record_updates_counters_and_histories():
    store = _store()
    users = np.array([3, 3, 3, 7])
    items = np.array([10, 11, 12, 13])
    ev = np.array([True, False, True, False])
    skip = np.array([False, True, False, True])
    f = np.zeros(4, bool)
    store.record(users, items, effective_view=ev, skip=skip, like=np.array([True, False, False, False]),
                 survey_satisfied=np.array([False, False, True, False]), survey_dissatisfied=f,
                 survey_submitted=np.array([False, False, True, False]))
    assert store.user_clicks[3] == 2 and store.user_skips[3] == 1 and store.user_skips[7] == 1
    assert store.item_clicks[10] == 1 and store.item_likes[10] == 1 and store.item_impressions.sum() == 4
    assert list(store.history("clicks", np.array([3]), 3)[0][0]) == [PAD, 10, 12]
    mixed, labels = store.history("mixed", np.array([3]), 3)
    assert list(mixed[0]) == [10, 11, 12] and list(labels[0]) == [1, 0, 1]
    assert list(store.history("satisfied", np.array([3]), 1)[0][0]) == [12]
    assert store.leaf_clicks[3, 10 % 20] == 1 and store.leaf_clicks[3, 12 % 20] == 1
    assert list(store.popular(2)) == [10, 12]


def _store_state(store):
    arrays = {k: v for k, v in vars(store).items() if isinstance(v, np.ndarray)}
    for name, ring in store.histories.items():
        arrays.update({f"{name}.items": ring.items, f"{name}.labels": ring.labels, f"{name}.count": ring.count})
    return arrays


def test_record_pages_equals_record_of_the_served_rows():
    """The page-shaped path the platform uses leaves the store exactly as ``record`` of the
    served impressions, row by row (ring buffers wrapped several times, repeated items)."""
    rng = np.random.default_rng(5)
    items = _store(n_items=60).items
    a, b = (FeatureStore(30, items, history_length=8, n_leaves=20) for _ in range(2))
    names = ("effective_view", "skip", "like", "survey_satisfied", "survey_dissatisfied", "survey_submitted")
    for _ in range(40):
        users = rng.permutation(30)[:rng.integers(1, 12)]
        pages = rng.integers(0, 60, (len(users), 10))
        served = np.arange(10)[None, :] < rng.integers(1, 11, (len(users), 1))
        flags = {n: rng.random(pages.shape) < 0.4 for n in names}
        flags["skip"] &= ~flags["effective_view"]
        a.record_pages(users, pages, served=served, **flags)
        uu = np.repeat(users, 10)[served.ravel()]
        b.record(uu, pages[served], **{n: f[served] for n, f in flags.items()}, grouped=True)
    for (name, x), y in zip(_store_state(a).items(), _store_state(b).values()):
        assert np.array_equal(x, y), name
    assert a.histories["clicks"].count.max() > 2 * a.history_length


def test_row_duplicates_marks_every_later_copy():
    rng = np.random.default_rng(2)
    for _ in range(200):
        rows = rng.integers(0, rng.integers(1, 400), (rng.integers(1, 9), rng.integers(1, 250)))
        want = np.array([[v in r[:j] for j, v in enumerate(r)] for r in rows.tolist()], dtype=bool)
        assert np.array_equal(_row_duplicates(rows.astype(np.int32)), want)


def test_recall_shape_uniqueness_and_interest_share():
    store = _store()
    # user 0 clicked only leaf-3 items
    leaf3 = np.flatnonzero(store.items.leaf == 3)
    t = np.ones(len(leaf3), bool)
    store.record(np.zeros(len(leaf3), int), leaf3, effective_view=t, skip=~t, like=~t,
                 survey_satisfied=~t, survey_dissatisfied=~t, survey_submitted=~t)
    config = PlatformConfig(n_candidates=100, recall_popular=0.0, recall_interest=1.0, page_size=10)
    recall = Recall(config, store)
    cands = recall(np.array([0, 1]), np.random.default_rng(0))
    assert cands.shape == (2, 100)
    assert all(len(np.unique(r)) == 100 for r in cands)
    # user 0's candidates are its leaf's 20 items first (the rest are de-duplication refills)
    assert set(leaf3) <= set(cands[0])
    assert np.isin(cands[0], leaf3).sum() == len(leaf3)


def test_dedupe_removes_every_duplicate():
    rng = np.random.default_rng(3)
    cands = rng.integers(0, 30, (50, 25))      # many duplicates, a small item space
    out = _dedupe(cands, 30, rng)
    assert all(len(np.unique(r)) == 25 for r in out)
    first_unique = [sorted(set(r)) for r in cands]
    assert all(set(f) <= set(o) for f, o in zip(first_unique, out))   # originals kept


def test_recall_rejects_more_candidates_than_items():
    with pytest.raises(ValueError, match="n_candidates=500 must be <= the number of items 400"):
        Recall(PlatformConfig(n_candidates=500), _store())
