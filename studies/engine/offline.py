"""Offline evaluation of policies on simulated logs, with the ground truth as well as the log.

One protocol for every policy (SASRec, SAQRec, SINE, USM, EASQ and the baselines), through the
public policy interface only (``fit`` on observable logs, ``score`` on a :class:`RankBatch`):

- **Time split.** ``fit`` sees the observable logs of the first days; the last ``test_days``
  are held out. Serving state (the feature store) is what the platform had observed at the
  split, so no policy sees a test event before scoring it.
- **Next-positive ranking** (SAQRec Table 3, SASRec): each test user's first positive of the
  test period (an effective view; with ``target="satisfied"`` an effective view the user was
  truly satisfied with, an oracle label) ranked against ``n_negatives`` items sampled uniformly
  from the items the user never clicked: HR@1/5/10, NDCG@2/5/10, MRR (``estimators.ranking``;
  NDCG@2 is SINE Table 3's cut-off).
- **Clicks vs skips** (SINE Tables 3-4): every test-period impression that is an effective view
  (label 1) or a skip (label 0), scored per user with the history at the split: AUC, GAUC.
- **Satisfaction among clicks** (what questionnaires are for): among the test effective views,
  how well the scores separate the truly satisfying ones (``true_satisfied``, an oracle label
  the evaluation may read and a policy never does): AUC and GAUC.
- **Engagement feedback** (USM Eq. 11-12): Nfb UAUC (dislike/report = 1 against the other
  impressions; a good survey model scores them *low*, so the scores are negated) and Pfb UAUC
  (like/share = 1) over the test impressions.

Every metric is an :class:`estimators.Estimate` with its standard error; users are the unit.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from estimators import Estimate, auc, gauc, hit_rate, mrr, ndcg, uauc
from policies.data import (chronological_order, n_items_of,
                           positive_keys, sample_negatives, user_sequences)
from simulator.features import FeatureStore, ItemAttributes
from simulator.schema import DISSATISFIED_ANSWERS, SATISFIED_ANSWERS, LogData, RankBatch

TARGETS = ("effective_view", "satisfied")
RANK_METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@2", "ndcg@5", "ndcg@10", "mrr")
AUC_METRICS = ("auc", "gauc", "sat_auc", "sat_gauc", "nfb_uauc", "pfb_uauc")
METRICS = RANK_METRICS + AUC_METRICS


def feature_store_from(data: LogData, *, n_users: int | None = None, history_length: int = 50) -> FeatureStore:
    """A feature store that has recorded ``data``'s impressions in time order, as the platform
    would have while serving them (no oracle value is read)."""
    it = data.items
    attrs = ItemAttributes(l1=it["l1"].to_numpy(), l2=it["l2"].to_numpy(), leaf=it["leaf"].to_numpy(),
                           author=it["author_id"].to_numpy(), duration=it["duration"].to_numpy())
    store = FeatureStore(len(data.users) if n_users is None else n_users, attrs, history_length=history_length)
    f = data.impressions.iloc[chronological_order(data.impressions)]
    if len(f) == 0:
        return store
    answer = f["survey_answer"].astype(object)
    store.record(f["user_id"].to_numpy(), f["item_id"].to_numpy(),
                 effective_view=f["effective_view"].to_numpy(bool), skip=f["skip"].to_numpy(bool),
                 like=f["like"].to_numpy(bool),
                 survey_satisfied=answer.isin(SATISFIED_ANSWERS).to_numpy(),
                 survey_dissatisfied=answer.isin(DISSATISFIED_ANSWERS).to_numpy(),
                 survey_submitted=f["survey_submitted"].to_numpy(bool))
    return store


@dataclass(frozen=True)
class OfflineTask:
    """A time-split evaluation task built by :func:`make_task`.

    Attributes:
        train: observable logs before the split (what ``fit`` gets).
        store: the feature store at the split (what ``score`` reads).
        rank_users: (n,) users with a test-period target.
        rank_candidates: (n, 1 + K) the target item in column 0, then K sampled negatives.
        row_users: (R,) user of each row of the impression task.
        row_items: (R, C) test-period impressions of that user (padded with unseen items).
        row_labels: (R, C) int8: 1 effective view, 0 skip, -1 neither (watched, not a click)
            or padding; padded slots also have ``row_valid`` False.
        row_valid: (R, C) bool, a real test impression.
        row_satisfied: (R, C) bool oracle satisfaction of each impression.
        row_negative: (R, C) bool dislike or report.
        row_positive: (R, C) bool like or share.
        split_day: first held-out day.
        target: what counts as a positive in the ranking task.
    """
    train: LogData
    store: FeatureStore
    rank_users: np.ndarray
    rank_candidates: np.ndarray
    row_users: np.ndarray
    row_items: np.ndarray
    row_labels: np.ndarray
    row_valid: np.ndarray
    row_satisfied: np.ndarray
    row_negative: np.ndarray
    row_positive: np.ndarray
    split_day: int
    target: str


def make_task(logs: LogData, *, test_days: int = 1, n_negatives: int = 99, target: str = "effective_view",
              seed: int = 0, row_size: int = 64) -> OfflineTask:
    """Split ``logs`` (with its oracle columns) in time and build the evaluation task.

    Args:
        logs: a run's logs *with* oracle columns (``read_run``); policies get ``.observable()``.
        test_days: the last this many days are held out.
        n_negatives: sampled negatives per ranking target.
        target: ``"effective_view"`` or ``"satisfied"`` (an effective view with
            ``true_satisfied``): the positive of the ranking task.
        seed: seed of the negative sampling.
        row_size: impressions per row of the impression task (a user with more gets more rows).
    """
    if target not in TARGETS:
        raise ValueError(f"target={target!r} must be one of {', '.join(TARGETS)}")
    if test_days < 1:
        raise ValueError(f"test_days={test_days} must be >= 1")
    if row_size < 2:
        raise ValueError(f"row_size={row_size} must be >= 2")
    imp = logs.impressions
    missing = [c for c in ("true_satisfied", "day") if c not in imp.columns]
    if missing:
        raise ValueError(f"logs must keep the oracle columns for evaluation; missing {', '.join(missing)} "
                         "(pass read_run(...), not .observable())")
    days = np.sort(imp["day"].unique())
    if len(days) <= test_days:
        raise ValueError(f"logs cover {len(days)} day(s); need more than test_days={test_days}")
    split = int(days[-test_days])
    day = imp["day"].to_numpy()
    train = LogData(imp.loc[day < split].reset_index(drop=True), logs.items, logs.users).observable()
    test = imp.loc[day >= split]
    test = test.iloc[chronological_order(test)]
    n_items = n_items_of(logs.observable())
    rng = np.random.default_rng(seed)
    store = feature_store_from(train, n_users=len(logs.users))
    clicked = positive_keys(user_sequences(logs.observable().impressions, "clicks"), n_items)

    # next-positive ranking: each test user's first positive after the split
    ev = test["effective_view"].to_numpy(bool)
    pos = ev & test["true_satisfied"].to_numpy(bool) if target == "satisfied" else ev
    first = test.loc[pos].drop_duplicates("user_id", keep="first")
    rank_users = first["user_id"].to_numpy(np.int64)
    negs = sample_negatives(rng, rank_users, n_negatives, n_items=n_items, exclude=clicked, distinct=True)
    rank_candidates = np.c_[first["item_id"].to_numpy(np.int64), negs]

    # impression rows: each user's test impressions (first occurrence of an item), row_size at a time
    uniq = test.drop_duplicates(["user_id", "item_id"], keep="first")
    users = uniq["user_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    rank_in_user = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    row_key = users * (len(users) + 1) + rank_in_user // row_size
    _, row_of = np.unique(row_key, return_inverse=True)
    n_rows = int(row_of.max()) + 1 if len(row_of) else 0
    col = rank_in_user % row_size
    row_users = np.zeros(n_rows, np.int64)
    row_users[row_of] = users
    # padding: unseen items (never a positive of the user), distinct within the row
    seen = np.unique(users * n_items + uniq["item_id"].to_numpy(np.int64))
    row_items = sample_negatives(rng, row_users, row_size, n_items=n_items,
                                 exclude=np.union1d(seen, clicked), distinct=True)
    row_items[row_of, col] = uniq["item_id"].to_numpy(np.int64)

    def lay(values: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full((n_rows, row_size), fill, dtype=np.asarray(values).dtype)
        out[row_of, col] = values
        return out

    label = np.where(uniq["effective_view"].to_numpy(bool), 1, np.where(uniq["skip"].to_numpy(bool), 0, -1))
    return OfflineTask(
        train=train, store=store, rank_users=rank_users, rank_candidates=rank_candidates,
        row_users=row_users, row_items=row_items, row_labels=lay(label.astype(np.int8), np.int8(-1)),
        row_valid=lay(np.ones(len(uniq), bool), False),
        row_satisfied=lay(uniq["true_satisfied"].to_numpy(bool), False),
        row_negative=lay((uniq["dislike"].to_numpy(bool) | uniq["report"].to_numpy(bool)), False),
        row_positive=lay((uniq["like"].to_numpy(bool) | uniq["share"].to_numpy(bool)), False),
        split_day=split, target=target)


def score_in_batches(policy: Any, users: np.ndarray, candidates: np.ndarray, store: FeatureStore, *,
                     day: int = 0, batch_size: int = 128) -> np.ndarray:
    """``policy.score`` over requests in batches of ``batch_size`` (as the ranking service does)."""
    out = np.empty(candidates.shape, dtype=np.float64)
    for s in range(0, len(users), batch_size):
        batch = RankBatch(users[s:s + batch_size], candidates[s:s + batch_size], ts=0.0, day=day, features=store)
        out[s:s + batch_size] = policy.score(batch)
    return out


def _safe(fn: Callable[[], Estimate]) -> Estimate:
    try:
        return fn()
    except ValueError:          # too few users / one class only: not computable on this task
        nan = float("nan")
        return Estimate(nan, nan, nan, nan, 0)


def evaluate(policy: Any, task: OfflineTask) -> dict[str, Estimate]:
    """Score the task with a fitted policy; every metric of :data:`METRICS` as an Estimate."""
    s = score_in_batches(policy, task.rank_users, task.rank_candidates, task.store, day=task.split_day)
    pos, neg = s[:, 0], s[:, 1:]
    out: dict[str, Estimate] = {
        "hr@1": hit_rate(pos, neg, k=1), "hr@5": hit_rate(pos, neg, k=5), "hr@10": hit_rate(pos, neg, k=10),
        "ndcg@2": ndcg(pos, neg, k=2), "ndcg@5": ndcg(pos, neg, k=5), "ndcg@10": ndcg(pos, neg, k=10), "mrr": mrr(pos, neg)}
    r = score_in_batches(policy, task.row_users, task.row_items, task.store, day=task.split_day)
    user = np.broadcast_to(task.row_users[:, None], r.shape)
    cs = task.row_labels >= 0                                   # clicks and skips
    out["auc"] = _safe(lambda: auc(task.row_labels[cs], r[cs]))
    out["gauc"] = _safe(lambda: gauc(user[cs], task.row_labels[cs], r[cs]))
    ev = task.row_labels == 1
    out["sat_auc"] = _safe(lambda: auc(task.row_satisfied[ev], r[ev]))
    out["sat_gauc"] = _safe(lambda: gauc(user[ev], task.row_satisfied[ev], r[ev]))
    v = task.row_valid
    out["nfb_uauc"] = _safe(lambda: uauc(user[v], task.row_negative[v], -r[v]))
    out["pfb_uauc"] = _safe(lambda: uauc(user[v], task.row_positive[v], r[v]))
    return out


def offline_table(factories: Mapping[str, Callable[[], Any]], make_logs: Callable[[int], LogData], *,
                  seeds: tuple[int, ...] = (0, 1, 2), target: str = "effective_view",
                  metrics: tuple[str, ...] = METRICS, progress: bool = True) -> pd.DataFrame:
    """Fit and evaluate every policy on the logs of every seed.

    Args:
        factories: ``{name: () -> fresh policy}``.
        make_logs: ``seed -> logs with oracle columns`` (e.g. :func:`simulate_logs`).
        seeds: one world (and one fit) per seed.

    Returns:
        Long table: policy, seed, metric, value, stderr, fit_s, score_s.
    """
    from tqdm.auto import tqdm
    rows = []
    with tqdm(total=len(seeds) * len(factories), desc="offline eval", disable=not progress) as bar:
        for seed in seeds:
            task = make_task(make_logs(seed), seed=seed, target=target)
            for name, factory in factories.items():
                policy = factory()
                t0 = time.perf_counter()
                policy.fit(task.train, rng=np.random.default_rng(seed))
                t1 = time.perf_counter()
                res = evaluate(policy, task)
                t2 = time.perf_counter()
                for m in metrics:
                    rows.append(dict(policy=name, seed=seed, metric=m, value=res[m].value, stderr=res[m].stderr,
                                     fit_s=t1 - t0, score_s=t2 - t1))
                bar.update(1)
    return pd.DataFrame(rows)


@dataclass(frozen=True, slots=True)
class StaticState:
    """The user state the oracle reads, frozen for offline scoring: each user's dominant
    sub-interest (the largest weight) as the active one and no category fatigue. Offline, the
    oracle's metrics measure how well true expected satisfaction predicts the logged behaviour."""
    active: np.ndarray      # (U,) dominant sub-interest
    fatigue: np.ndarray     # (U, n_l2) zeros

    @classmethod
    def of(cls, world: Any) -> StaticState:
        cfg = world.config.catalog
        return cls(np.argmax(world.users.weights, axis=1), np.zeros((world.users.n_users, cfg.n_l1 * cfg.n_l2)))


def evaluate_policies(logs: LogData, world: Any, policies: Sequence[Any], *, test_days: int = 1,
                      n_negatives: int = 99, seed: int = 0, target: str = "effective_view",
                      extra: Callable[[Any, OfflineTask, LogData, Any], Mapping[str, float]] | None = None) -> list[dict]:
    """Fit fresh policies on ``logs`` minus its last ``test_days`` and evaluate them.

    Args:
        logs: a run's logs with oracle columns (the evaluation reads them; policies never do).
        world: the :class:`~simulator.config.SimConfig` that made the logs (an oracle policy is
            attached to that world, regenerated from its seed, with a :class:`StaticState`).
        policies: specs with ``name``, ``policy`` and ``params`` (:class:`experiments.config.BucketConfig`).
        seed: negative sampling; policy ``i`` is fitted with ``SeedSequence([seed, 1, i])``.
        extra: ``(policy, task, logs, world) -> {metric: value}`` for metrics beyond :func:`evaluate`.

    Returns:
        Rows ``kind="offline"``, policy (the spec's name), metric, value, stderr, n, fit_s.
    """
    from policies import make_policy
    from simulator.simulate import seed_streams
    from simulator.world import World
    task = make_task(logs, test_days=test_days, n_negatives=n_negatives, seed=seed, target=target)
    built = None
    rows = []
    for i, spec in enumerate(policies):
        policy = make_policy(spec.policy, **spec.params)
        if getattr(policy, "requires_world", False):
            if built is None:     # the run's own world, regenerated from its seed stream
                built = World.generate(world, np.random.default_rng(seed_streams(world.seed)["world"]))
            policy.attach(built, StaticState.of(built))
        t0 = time.perf_counter()
        policy.fit(task.train, rng=np.random.default_rng(np.random.SeedSequence([seed, 1, i])))
        fit_s = time.perf_counter() - t0
        for metric, e in evaluate(policy, task).items():
            rows.append({"kind": "offline", "policy": spec.name, "metric": metric, "value": float(e.value),
                         "stderr": float(e.stderr), "n": int(e.n), "fit_s": fit_s})
        for metric, v in (extra(policy, task, logs, world) if extra is not None else {}).items():
            rows.append({"kind": "offline", "policy": spec.name, "metric": metric, "value": float(v),
                         "stderr": float("nan"), "n": 0, "fit_s": fit_s})
    return rows


def summarise(table: pd.DataFrame, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Wide ``policy x metric`` table of "mean ± sd" over seeds (sd of the seed means)."""
    t = table if metrics is None else table[table["metric"].isin(metrics)]
    g = t.groupby(["policy", "metric"], sort=False)["value"]
    cell = (g.mean().map("{:.4f}".format) + " ± " + g.std(ddof=1).fillna(0.0).map("{:.4f}".format))
    wide = cell.unstack("metric")
    order = [m for m in (metrics or METRICS) if m in wide.columns]
    return wide.loc[list(dict.fromkeys(t["policy"])), order]


def simulate_logs(config: Any, out: str | Path | None = None) -> LogData:
    """Simulate ``config`` (a SimConfig) and read its logs back with the oracle columns.

    With ``out`` None the run goes to a temporary directory that is removed afterwards.
    """
    import tempfile

    from simulator.logs import read_run
    from experiments.simulate import simulate
    if out is not None:
        simulate(config, Path(out), progress=False, overwrite=True)
        return read_run(out)
    with tempfile.TemporaryDirectory(prefix="satbed-offline-") as tmp:
        simulate(config, Path(tmp) / "run", progress=False)
        return read_run(Path(tmp) / "run")
