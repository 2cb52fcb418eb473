"""Throughput and memory of the SimPy simulator, against a pure-numpy reference of the same user model.

Run it as a script (it is not a test)::

    python benchmarks/bench_simulator.py [--users N] [--days D] [--seed S] [--profile]

It prints, in one run:

1. impressions/s of ``experiments.simulate.simulate`` end to end (default world, production policy,
   into a temporary run directory), and a split of a second run of the same setup into world
   generation, the SimPy serving loop, log writing and log reading;
2. impressions/s of two pure-numpy references over the same :class:`simulator.world.World`, the
   same number of impressions and no event loop: (A) the user model only, (B) the user model plus
   recall, production-policy scoring and ``rank_page`` in big batches;
3. the ratios simulator / reference against the targets (within 10x of A and 2.5x of B);
4. bytes per logged impression on disk and peak RSS per million impressions (target <= 60 MiB);
5. with ``--profile``, the top functions of the SimPy serving loop under cProfile;
6. with ``--days-scaling 7 28``, the peak RSS per million impressions at each length (target:
   <= 60 MiB and flat in days);
7. with ``--scaling 5000 20000 100000``, time per impression for each user count x ``--days``
   (target: the largest world within 1.3x of the smallest's time per impression);
8. with ``--paper-regime sine_kuaishou saqrec_commercial``, those scenarios at their full size
   under ``production``, end to end (target: <= 5 minutes on 2 cores).

``--skip-main`` runs only 6-8.

The simulator runs in child processes (``spawn``), so that their peak RSS can be read from
``getrusage(RUSAGE_CHILDREN)`` and neither run sees the other's memory or warm caches.
Randomness comes only from numpy Generators derived from ``--seed``.
"""
from __future__ import annotations

# Kernels pinned before numpy and torch are imported, as in every satbed process
# (simulator/reproducibility.py; SATBED_KERNELS=native measures the unpinned kernels).
from simulator.reproducibility import pin_kernels

pin_kernels()

import argparse
import cProfile
import dataclasses
import pstats
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.special import expit

from instrumentation import InstrumentedPlatform, TimedLogWriter, in_child, peak_kib, print_lines, print_table
from policies import make_policy
from simulator.config import SimConfig
from simulator.features import FeatureStore, ItemAttributes
from simulator.logs import log_files, read_impressions, write_frame
from simulator.platform import Bucket, rank_page
from simulator.plots import plot_simulation
from simulator.questionnaire import ADULTS_ONLY, Engagement, DISLIKE, LIKE, UNSUITABLE, draw_exposure, \
    exposure_probability, respond
from simulator.recall import Recall
from simulator.schema import CATEGORIES, IMPRESSION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, LogData, RankBatch
from experiments.simulate import simulate
from simulator.simulate import STREAMS, seed_streams, summarize
from simulator.world import World

TARGET_RATIO = {"A": 10.0, "B": 2.5}   # simulate() within 10x of reference A and 2.5x of reference B
TARGET_RSS_PER_M = 60.0                # MiB of peak RSS per million impressions, flat in days
TARGET_SCALING = 1.3                   # time per impression, largest world / smallest world
TARGET_PAPER_S = 300.0                 # a paper-regime world under production, end to end, 2 cores
MiB = 2 ** 20


# ----------------------------------------------------------------------------- configuration
def make_config(n_users: int, days: int, seed: int) -> SimConfig:
    """The default world (``SimConfig()``) with the user count, length and seed replaced."""
    base = SimConfig()
    return dataclasses.replace(base, seed=seed,
                               users=dataclasses.replace(base.users, n_users=n_users),
                               platform=dataclasses.replace(base.platform, days=days))


def bench_streams(seed: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Seed sequences for the two references.

    They are the children of ``SeedSequence(seed)`` that follow the simulator's own streams, so a
    reference never replays the simulator's draws; the world itself comes from the simulator's
    ``world`` stream, so both sides see the same catalog and users.
    """
    children = np.random.SeedSequence(seed).spawn(len(STREAMS) + 2)
    return children[len(STREAMS)], children[len(STREAMS) + 1]


# ----------------------------------------------------------------------------- simulator, end to end
@dataclass(frozen=True)
class EndToEnd:
    """One ``simulate()`` run in a child process."""
    seconds: float            # wall clock of the simulate() call, make_policy included
    impressions: int          # rows in the logs
    log_bytes: int            # Parquet bytes under logs/
    column_bytes: dict[str, int]   # compressed bytes per column, summed over files


def _child_baseline() -> None:
    """Runs in a fresh child: nothing beyond the imports of this module (the baseline's peak RSS)."""


def _child_simulate(config: SimConfig, run_dir: str) -> EndToEnd:
    """Runs in a fresh child: ``simulate()`` end to end, then the on-disk size of its logs."""
    started = time.perf_counter()
    simulate(config, run_dir, progress=False)
    seconds = time.perf_counter() - started
    rows, total, per_column = 0, 0, {}
    for path in log_files(Path(run_dir) / "logs"):
        total += path.stat().st_size
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                per_column[col.path_in_schema] = per_column.get(col.path_in_schema, 0) \
                    + col.total_compressed_size
    return EndToEnd(seconds, rows, total, per_column)


def measure_end_to_end(config: SimConfig, tmp: Path) -> tuple[EndToEnd, int, int]:
    """``simulate()`` in a child process, with its peak RSS above an import-only baseline child.

    ``RUSAGE_CHILDREN.ru_maxrss`` is the largest peak of any waited-for child, so the baseline
    child runs (and is read) first.

    Returns:
        (result, baseline_kib, simulate_kib): the run, and the children's peaks read through
        ``RUSAGE_CHILDREN`` after each.
    """
    in_child(_child_baseline)
    baseline = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = in_child(_child_simulate, config, str(tmp / "end_to_end"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result, baseline, peak


# ----------------------------------------------------------------------------- simulator, phase by phase
@dataclass(frozen=True)
class Phases:
    """Seconds per phase of one run set up as ``simulate()`` sets it up."""
    world: float              # World.generate
    setup: float              # item/user tables written, policy made and fitted, platform built
    run: float                # Platform.run (the SimPy loop, daily log flushes included)
    flush: float              # ... of which the daily Parquet writes
    serve: float              # ... of which serving: Platform.serve (recall + score + rank) + consume
    consume: float            # ... of which Platform.consume (user model, state, features, log buffers)
    read: float               # read_impressions (validated Parquet -> pandas)
    summary: float            # summarize() and plot_simulation()
    impressions: int
    serve_calls: int
    requests: int
    rss_after_run_kib: int    # peak RSS of the process once Platform.run has returned
    rss_after_read_kib: int   # ... once the logs have been read back and summarised

    @property
    def total(self) -> float:
        return self.world + self.setup + self.run + self.read + self.summary

    @property
    def simpy_loop(self) -> float:
        """The serving loop without the daily Parquet writes."""
        return self.run - self.flush


def run_phases(config: SimConfig, run_dir: Path, profiler: cProfile.Profile | None = None) -> Phases:
    """Replicate the setup of ``simulate()`` step by step and time each step.

    Mirrors :func:`experiments.simulate.simulate` (same seed streams, same world, same policy
    and bucket) without its status / summary files, with a timed log writer and an instrumented
    platform. If ``profiler`` is given, it is enabled around ``Platform.run`` only.
    """
    clock = time.perf_counter
    streams = seed_streams(config.seed)
    t0 = clock()
    world = World.generate(config, np.random.default_rng(streams["world"]))
    t1 = clock()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_frame(world.catalog.table(), run_dir / "items.parquet", ITEM_COLUMNS)
    write_frame(world.users.table(), run_dir / "users.parquet", USER_COLUMNS)
    policy = _production_policy(config)
    empty = LogData(pd.DataFrame(), world.catalog.table(), world.users.table()).observable()
    policy.fit(empty, rng=np.random.default_rng(streams["policy"]))
    writer = TimedLogWriter(run_dir / "logs", ["all"])
    bucket = Bucket.from_seed("all", policy, 0, streams["buckets"])
    platform = InstrumentedPlatform(world, [bucket], np.zeros(world.users.n_users, dtype=np.int64), writer,
                                    streams["arrivals"])
    t2 = clock()
    if profiler is not None:
        profiler.enable()
    platform.run(config.platform.days)
    if profiler is not None:
        profiler.disable()
    t3 = clock()
    rss_run = peak_kib()
    logs = read_impressions(run_dir / "logs")
    t4 = clock()
    summarize(logs, n_users=world.users.n_users)
    plot_simulation(logs, run_dir / "summary.png")
    t5 = clock()
    return Phases(world=t1 - t0, setup=t2 - t1, run=t3 - t2, flush=writer.flush_seconds,
                  serve=platform.serve_seconds + platform.consume_seconds, consume=platform.consume_seconds, read=t4 - t3,
                  summary=t5 - t4, impressions=len(logs), serve_calls=platform.serve_calls,
                  requests=platform.serve_requests, rss_after_run_kib=rss_run,
                  rss_after_read_kib=peak_kib())


def _child_phases(config: SimConfig, run_dir: str) -> Phases:
    """Runs in a fresh child: :func:`run_phases`."""
    return run_phases(config, Path(run_dir))


def _production_policy(config: SimConfig):
    """The serving policy as ``simulate()`` makes it."""
    name = config.platform.policy
    params = {"temperature": config.platform.temperature} if name == "production" else {}
    return make_policy(name, **params)


# ----------------------------------------------------------------------------- pure-numpy reference
def impression_buffers(n: int) -> dict[str, np.ndarray]:
    """Preallocated, pre-touched arrays for ``n`` rows of every log column (categoricals as int8 codes).

    Pre-touched so that the timed loop does not pay first-touch page faults.
    """
    out = {}
    for column in IMPRESSION_COLUMNS:
        if column.name in ("bucket", "policy"):       # constants of a partition, not per row
            continue
        dtype = np.int8 if column.name in CATEGORIES else np.dtype(column.type.to_pandas_dtype())
        out[column.name] = np.zeros(n, dtype=dtype)
    return out


@dataclass
class Serving:
    """What reference B adds per page: recall, the production policy and ``rank_page``."""
    recall: Recall
    policy: object
    temperature: float | None


def reference_run(world: World, features: FeatureStore, out: dict[str, np.ndarray],
                  rng: np.random.Generator, *, batch_pages: int,
                  serving: Serving | None = None) -> tuple[float, int]:
    """Fill ``out`` with impressions of the simulator's user model, page batch by page batch.

    Per batch of ``batch_pages`` pages of k items: uniform random users with a random active
    sub-interest; pages of uniform random items (reference A) or, with ``serving``, the
    production policy's Plackett-Luce pages from recall (reference B); then, as in
    ``Platform.consume``: within-page level-2 category fatigue, ``World.probabilities``,
    ``World.sample_behaviour``, the quit hazard and time budget (which decide the served
    prefix), questionnaire exposure and response; the served rows go into ``out``.

    Not included (simulation state, not per-impression model): arrivals and sessions, per-user
    state carried between pages (fatigue, budget, daily survey cap), feature-store updates and
    Parquet writes.

    Returns:
        (seconds, pages): time to fill ``out`` and the number of pages drawn.
    """
    cfg = world.config
    k, q, bc = cfg.platform.page_size, cfg.questionnaire, cfg.behaviour
    n_total = len(out["user_id"])
    n_users, n_items, n_interests = world.users.n_users, world.catalog.n_items, cfg.users.n_interests
    n_cats = cfg.catalog.n_l1 * cfg.catalog.n_l2
    carried = np.zeros((n_users, n_cats))      # per-user fatigue per level-2 category, read as in consume()
    j = np.arange(k)
    lag = j[:, None] - 1 - j[None, :]
    fatigue_decay = cfg.users.fatigue_decay
    decay = np.where(lag >= 0, fatigue_decay ** np.maximum(lag, 0), 0.0)        # (k, k)
    pop = world.users
    filled, request = 0, 0
    started = time.perf_counter()
    while filled < n_total:
        # full batches, then just enough pages (by the served rows per page so far) for the rest
        rows_per_page = filled / request if request else k
        b = min(batch_pages, int(np.ceil(1.05 * (n_total - filled) / max(rows_per_page, 1.0))) + 1)
        users = rng.integers(0, n_users, b)
        active = rng.integers(0, n_interests, b)
        if serving is None:
            pages = rng.integers(0, n_items, (b, k))                             # (B, k)
            scores = propensity = None
        else:
            cands = serving.recall(users, rng)                                   # (B, C)
            all_scores = np.asarray(serving.policy.score(
                RankBatch(user_ids=users, candidates=cands, ts=0.0, day=0, features=features)), np.float64)
            pos, propensity = rank_page(all_scores, k, serving.temperature, rng)
            pages = np.take_along_axis(cands, pos, axis=1)
            scores = np.take_along_axis(all_scores, pos, axis=1)
        uu, ii = np.repeat(users, k), pages.ravel()
        cat2 = world.catalog.l2[pages]
        same = cat2[:, :, None] == cat2[:, None, :]                              # (B, k, k)
        fatigue = carried[users[:, None], cat2] * fatigue_decay ** j + (same * decay).sum(axis=2)
        probs = world.probabilities(uu, ii, np.repeat(active, k), fatigue.ravel())
        beh = world.sample_behaviour(ii, probs, rng)
        watch = beh.watch_time.reshape(b, k)
        satisfied = beh.satisfied.reshape(b, k)
        p_quit = expit(bc.quit_bias + bc.quit_dissatisfied * ~satisfied + bc.quit_fatigue * fatigue)
        cum = np.cumsum(watch, axis=1)
        stop = (rng.random((b, k)) < p_quit) | (cum >= pop.patience[users, None])
        ended = stop.any(axis=1)
        last = np.where(ended, stop.argmax(axis=1), k - 1)
        served = j[None, :] <= last[:, None]                                     # (B, k)
        eligible = served & beh.effective_view.reshape(b, k) if q.after_effective_view_only else served
        p_show = exposure_probability(q, uu, ii, features).reshape(b, k)
        shown, p_show_rec = draw_exposure(p_show, eligible, rng)
        resp = respond(q, shown.ravel(), willingness=pop.willingness[uu],
                       random_responder=pop.random_responder[uu], satisfied=beh.satisfied,
                       p_satisfied=probs.p_satisfied, issue_types=beh.issue_types,
                       engagement=Engagement.none(b * k), rng=rng)

        rows = np.flatnonzero(served.ravel())[:n_total - filled]
        dst = slice(filled, filled + len(rows))
        page_ids = request + np.arange(b)
        columns = {
            "ts": (cum - watch).ravel(), "user_id": uu, "item_id": ii,
            "session_id": np.repeat(page_ids, k), "request_id": np.repeat(page_ids, k),
            "position": np.tile(j, b), "watch_time": beh.watch_time,
            "duration": world.catalog.duration[ii], "effective_view": beh.effective_view,
            "skip": beh.skip, "like": beh.like, "share": beh.share, "comment": beh.comment,
            "follow": beh.follow, "dislike": beh.dislike, "report": beh.report,
            "survey_shown": shown.ravel(), "survey_type": resp.survey_type,
            "survey_submitted": resp.submitted, "survey_answer": resp.answer, "survey_reasons": resp.reasons,
            "true_p_satisfied": probs.p_satisfied, "true_satisfied": beh.satisfied,
            "true_interest": probs.interest, "true_active_interest": probs.active_interest,
            "true_fatigue": probs.fatigue, "true_p_skip": probs.p_skip,
            "true_p_effective_view": probs.p_effective_view,
            "true_expected_watch_time": probs.expected_watch_time, "true_p_issue": probs.p_issue,
            "true_issue": beh.issue, "true_p_like": beh.p_like, "true_p_share": beh.p_share,
            "true_p_comment": beh.p_comment, "true_p_follow": beh.p_follow,
            "true_p_dislike": beh.p_dislike, "true_p_report": beh.p_report,
            "true_p_show": p_show_rec.ravel(), "true_p_submit": resp.p_submit,
        }
        if serving is not None:
            columns["score"], columns["propensity"] = scores.ravel(), propensity.ravel()
        for name, values in columns.items():
            out[name][dst] = values[rows]
        filled += len(rows)
        request += b
    return time.perf_counter() - started, request


def warm_features(world: World, rows: dict[str, np.ndarray]) -> FeatureStore:
    """A feature store that has observed the reference's impressions (so recall sees real histories).

    Built outside any timing: reference B measures serving against a realistic store, not its upkeep.
    """
    cat = world.catalog
    features = FeatureStore(world.users.n_users, ItemAttributes(cat.l1, cat.l2, cat.leaf, cat.author, cat.duration),
                            n_leaves=world.config.catalog.n_leaves)
    answer = rows["survey_answer"]
    features.record(rows["user_id"], rows["item_id"], effective_view=rows["effective_view"],
                    skip=rows["skip"], like=rows["like"], survey_satisfied=answer == LIKE,
                    survey_dissatisfied=np.isin(answer, (DISLIKE, UNSUITABLE, ADULTS_ONLY)),
                    survey_submitted=rows["survey_submitted"])
    return features


@dataclass(frozen=True)
class Reference:
    """One pure-numpy reference: its best time over the repeats."""
    label: str
    seconds: float
    impressions: int
    pages: int

    @property
    def rate(self) -> float:
        return self.impressions / self.seconds


def measure_references(config: SimConfig, n_impressions: int, *, batch_pages: int,
                       repeats: int) -> tuple[Reference, Reference]:
    """Both references over the simulator's world, ``n_impressions`` rows each, best of ``repeats``.

    Each repeat starts from the same seed, so it does the same work.
    """
    world = World.generate(config, np.random.default_rng(seed_streams(config.seed)["world"]))
    seq_a, seq_b = bench_streams(config.seed)
    cat = world.catalog
    cold = FeatureStore(world.users.n_users, ItemAttributes(cat.l1, cat.l2, cat.leaf, cat.author, cat.duration),
                        n_leaves=config.catalog.n_leaves)
    out = impression_buffers(n_impressions)
    best_a = min(reference_run(world, cold, out, np.random.default_rng(seq_a), batch_pages=batch_pages)
                 for _ in range(repeats))
    features = warm_features(world, out)
    policy = _production_policy(config).fit(
        LogData(pd.DataFrame(), cat.table(), world.users.table()).observable(),
        rng=np.random.default_rng(seq_b))
    serving = Serving(Recall(config.platform, features), policy, policy.temperature)
    best_b = min(reference_run(world, features, out, np.random.default_rng(seq_b), batch_pages=batch_pages,
                               serving=serving)
                 for _ in range(repeats))
    return (Reference("A: user model only", *best_a[:1], n_impressions, best_a[1]),
            Reference("B: A + recall, production policy, rank_page", *best_b[:1], n_impressions, best_b[1]))


# ----------------------------------------------------------------------------- profile
def profile_serving_loop(config: SimConfig, run_dir: Path, top: int = 10) -> str:
    """cProfile of ``Platform.run`` (setup and read-back excluded); top functions as text.

    The timing wrappers of this script are left out of the listing (their callees are in it).
    """
    profiler = cProfile.Profile()
    run_phases(config, run_dir, profiler)
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        if Path(path).resolve() == Path(__file__).resolve():
            continue
        name = f"{func} ({Path(path).parent.name}/{Path(path).name}:{line})" if line else func
        rows.append((cumtime, tottime, ncalls, name))
    total = max(r[0] for r in rows)
    lines = []
    for title, key in (("cumulative time", 0), ("own time (excluding callees)", 1)):
        lines.append(f"top {top} by {title}, of {total:.1f} s under the profiler:")
        lines.append(f"  {'cum s':>7} {'own s':>7} {'calls':>9}  function")
        for cum, own, calls, name in sorted(rows, key=lambda r: -r[key])[:top]:
            lines.append(f"  {cum:7.2f} {own:7.2f} {calls:9d}  {name}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- scaling
@dataclass(frozen=True)
class ScaleRow:
    """One end-to-end ``simulate()`` run of a scaling table, in its own child process."""
    label: str
    impressions: int
    seconds: float
    peak_kib: int              # the child's own peak RSS
    base_kib: int              # an import-only child's peak RSS

    @property
    def us_per_impression(self) -> float:
        return self.seconds / max(self.impressions, 1) * 1e6

    @property
    def mib_per_million(self) -> float:
        return (self.peak_kib - self.base_kib) / 1024 / max(self.impressions / 1e6, 1e-9)


def _child_peak() -> int:
    """Runs in a fresh child: its own peak RSS after the imports only."""
    return peak_kib()


def _child_simulate_peak(config: SimConfig, run_dir: str) -> tuple[EndToEnd, int]:
    """Runs in a fresh child: ``simulate()`` end to end, and the child's own peak RSS (each row of a
    scaling table is then its own peak, not the largest of all children so far)."""
    result = _child_simulate(config, run_dir)
    return result, peak_kib()


def scale_rows(configs: list[tuple[str, SimConfig]], tmp: Path) -> list[ScaleRow]:
    """Each config simulated end to end in a fresh child (its run directory deleted after)."""
    import shutil
    base = in_child(_child_peak)
    rows = []
    for i, (label, config) in enumerate(configs):
        print(f"    {label} ...", flush=True)
        run_dir = tmp / f"scale{i}"
        e2e, peak = in_child(_child_simulate_peak, config, str(run_dir))
        shutil.rmtree(run_dir, ignore_errors=True)
        rows.append(ScaleRow(label, e2e.impressions, e2e.seconds, peak, base))
    return rows


def print_scale_rows(rows: list[ScaleRow]) -> None:
    head = ("run", "impressions", "seconds", "us/impression", "peak RSS MiB", "MiB per M impressions")
    cells = [head] + [(r.label, f"{r.impressions:,}", f"{r.seconds:.1f}", f"{r.us_per_impression:.1f}",
                       f"{r.peak_kib / 1024:,.0f}", f"{r.mib_per_million:.0f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for c in cells:
        print("    " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))


def days_scaling(args: argparse.Namespace, tmp: Path) -> None:
    print(f"\n[6] peak RSS per million impressions by length: {args.users:,} users x "
          f"{', '.join(map(str, args.days_scaling))} days (target <= {TARGET_RSS_PER_M:g} MiB, flat in days)")
    rows = scale_rows([(f"{d} days", make_config(args.users, d, args.seed)) for d in args.days_scaling], tmp)
    print_scale_rows(rows)
    for r in rows:
        print(f"    {r.label}: {r.mib_per_million:.0f} MiB per million impressions, "
              f"{verdict(r.mib_per_million, TARGET_RSS_PER_M, ' MiB')}")
    first, last = rows[0], rows[-1]
    marginal = (last.peak_kib - first.peak_kib) / 1024 / max((last.impressions - first.impressions) / 1e6, 1e-9)
    print(f"    {last.label} vs {first.label}: the peak grows {marginal:.0f} MiB per additional million impressions "
          f"({'flat' if marginal <= 0.1 * TARGET_RSS_PER_M else 'GROWS with the length of the run'}; peak "
          f"{last.peak_kib / first.peak_kib:.2f}x for {last.impressions / first.impressions:.2f}x the impressions)")


def user_scaling(args: argparse.Namespace, tmp: Path) -> None:
    print(f"\n[7] time per impression by world size: {', '.join(f'{u:,}' for u in args.scaling)} users x "
          f"{args.days} days (target: the largest within {TARGET_SCALING:g}x of the smallest)")
    rows = scale_rows([(f"{u:,} users", make_config(u, args.days, args.seed)) for u in args.scaling], tmp)
    print_scale_rows(rows)
    ratio = rows[-1].us_per_impression / rows[0].us_per_impression
    print(f"    {rows[-1].label} / {rows[0].label}: {ratio:.2f}x the time per impression, "
          f"{verdict(ratio, TARGET_SCALING)}")


def paper_regimes(args: argparse.Namespace, tmp: Path) -> None:
    from simulator.scenarios import get_scenario
    print(f"\n[8] paper-regime worlds at full size under production, end to end "
          f"(target <= {TARGET_PAPER_S / 60:g} min on 2 cores)")
    configs = [(name, dataclasses.replace(get_scenario(name).config(), seed=args.seed)) for name in args.paper_regime]
    rows = scale_rows(configs, tmp)
    print_scale_rows(rows)
    for r, (_, config) in zip(rows, configs):
        print(f"    {r.label} ({config.users.n_users:,} users, {config.catalog.n_items:,} videos, "
              f"{config.platform.days} days): {r.seconds / 60:.1f} min, {r.impressions / r.seconds:,.0f} imp/s, "
              f"{verdict(r.seconds, TARGET_PAPER_S, ' s')}")


# ----------------------------------------------------------------------------- report
def verdict(ratio: float, target: float, unit: str = "x") -> str:
    """A figure against its target (lower is better)."""
    return f"meets target (<= {target:g}{unit})" if ratio <= target else f"MISSES target (<= {target:g}{unit})"


def print_phases(ph: Phases, e2e: EndToEnd) -> None:
    """The phase split of the replica run (nested labels are parts of the line above)."""
    per_call = ph.serve / max(ph.serve_calls, 1) * 1e6
    print_lines([
        ("world generation", ph.world, ""),
        ("setup (tables, policy, platform)", ph.setup, ""),
        ("Platform.run", ph.run, ""),
        ("  daily Parquet flush", ph.flush, ""),
        ("  SimPy loop without the flush", ph.simpy_loop, f"{ph.impressions / ph.simpy_loop:,.0f} impressions/s"),
        ("    serving: serve() + consume()", ph.serve, f"{ph.serve_calls:,} calls, {ph.requests / max(ph.serve_calls, 1):.1f} "
                                 f"requests per call, {per_call:.0f} us per call"),
        ("      recall + score + rank_page", ph.serve - ph.consume, ""),
        ("      consume()", ph.consume, f"{ph.impressions / max(ph.requests, 1):.2f} items served per page"),
        ("    clock, sessions, SimPy events", ph.simpy_loop - ph.serve, ""),
        ("read_impressions", ph.read, ""),
        ("summarize + plot_simulation", ph.summary, ""),
        ("total", ph.total, f"(the simulate() child: {e2e.seconds:.2f} s)"),
    ])


def print_disk_and_memory(e2e: EndToEnd, ph: Phases, base_kib: int, peak_kib: int) -> tuple[float, float]:
    """Bytes per logged impression and peak RSS per million impressions.

    Returns:
        (bytes_per_impression, mib_per_million_impressions).
    """
    n = e2e.impressions
    per_row = e2e.log_bytes / n
    print(f"    logs: {e2e.log_bytes / MiB:.1f} MiB of Parquet for {n:,} rows = {per_row:.1f} B/impression")
    largest = sorted(e2e.column_bytes.items(), key=lambda kv: -kv[1])[:6]
    print("    largest columns, B/impression: " + ", ".join(f"{name} {size / n:.1f}" for name, size in largest))
    extra_kib = peak_kib - base_kib
    per_million = extra_kib / 1024 / (n / 1e6)
    print(f"    peak RSS: simulate() child {peak_kib / 1024:.0f} MiB - import-only child {base_kib / 1024:.0f} MiB "
          f"= {extra_kib / 1024:.0f} MiB = {per_million:.0f} MiB per million impressions")
    print("    method: each in a fresh 'spawn' child process, peak read with "
          "getrusage(RUSAGE_CHILDREN).ru_maxrss after joining it (baseline child first)")
    print(f"    where the peak is (phase child, its own peak so far): {ph.rss_after_run_kib / 1024:.0f} MiB by the end of "
          f"Platform.run, {ph.rss_after_read_kib / 1024:.0f} MiB after read_impressions, summarize and plot")
    return per_row, per_million


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SimConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--users", type=int, default=defaults.users.n_users, help="number of users")
    parser.add_argument("--days", type=int, default=defaults.platform.days, help="simulated days")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="run seed (world, simulator, references)")
    parser.add_argument("--ref-pages", type=int, default=10_000,
                        help="pages per vectorised batch in the references")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each reference (the best is kept)")
    parser.add_argument("--profile", action="store_true",
                        help="also run the SimPy loop once under cProfile and print its top functions")
    parser.add_argument("--days-scaling", type=int, nargs="+", metavar="D", default=[],
                        help="peak RSS per million impressions at each length, e.g. 7 28 (--users users)")
    parser.add_argument("--scaling", type=int, nargs="+", metavar="N", default=[],
                        help="time per impression at each user count x --days, e.g. 5000 20000 100000")
    parser.add_argument("--paper-regime", nargs="+", metavar="SCENARIO", default=[],
                        help="simulate these scenarios at full size, e.g. sine_kuaishou saqrec_commercial")
    parser.add_argument("--skip-main", action="store_true", help="run only the scaling tables (6-8)")
    args = parser.parse_args(argv)
    for name in ("days_scaling", "scaling"):
        if any(v < 1 for v in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} values must be >= 1")
    if args.skip_main and not (args.days_scaling or args.scaling or args.paper_regime):
        parser.error("--skip-main needs --days-scaling, --scaling or --paper-regime")
    if args.paper_regime:
        from simulator.scenarios import list_scenarios
        unknown = [n for n in args.paper_regime if n not in list_scenarios()]
        if unknown:
            parser.error(f"--paper-regime {unknown[0]!r} is not a scenario (satbed scenarios)")
    for name in ("users", "days", "ref_pages", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.seed < 0:
        parser.error(f"--seed={args.seed} must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = make_config(args.users, args.days, args.seed)
    print(f"satbed simulator benchmark: {args.users:,} users, {args.days} days, seed {args.seed}, "
          f"policy {config.platform.policy!r}, k={config.platform.page_size}, "
          f"C={config.platform.n_candidates}, tick {config.platform.tick_s:g} s")
    if args.skip_main:
        with tempfile.TemporaryDirectory(prefix="satbed-bench-") as tmp_name:
            extra_tables(args, Path(tmp_name))
        return
    with tempfile.TemporaryDirectory(prefix="satbed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print("\n[1] simulator: simulate() end to end, in a child process ...", flush=True)
        e2e, base_kib, peak_kib = measure_end_to_end(config, tmp)
        n = e2e.impressions
        e2e_rate = n / e2e.seconds
        print(f"    {n:,} impressions in {e2e.seconds:.2f} s = {e2e_rate:,.0f} impressions/s")
        print("    the same setup phase by phase (a replica of simulate(), in a second child) ...", flush=True)
        ph = in_child(_child_phases, config, str(tmp / "phases"))
        if ph.impressions != n:
            print(f"    WARNING: the replica logged {ph.impressions:,} impressions, simulate() {n:,}: "
                  "simulate() has changed, update run_phases()")
        print_phases(ph, e2e)
        loop_rate = ph.impressions / ph.simpy_loop

        print(f"\n[2] pure-numpy references over the same world: {n:,} impressions each, "
              f"batches of {args.ref_pages:,} pages, best of {args.repeats} ...", flush=True)
        refs = measure_references(config, n, batch_pages=args.ref_pages, repeats=args.repeats)
        for ref in refs:
            print(f"    {ref.label:<46} {ref.seconds:6.3f} s = {ref.rate:>10,.0f} impressions/s "
                  f"({n / ref.pages:.2f} items served per page)")

        print("\n[3] ratios of time per impression, simulator / reference "
              f"(targets: <= {TARGET_RATIO['A']:g}x of A, <= {TARGET_RATIO['B']:g}x of B)")
        ratios = {}
        for ref in refs:
            for what, rate in (("simulate()", e2e_rate), ("SimPy loop", loop_rate)):
                ratios[what, ref.label[0]] = ref.rate / rate
                print(f"    {what:<10} / reference {ref.label[0]}: {ref.rate / rate:6.1f}x  {verdict(ref.rate / rate, TARGET_RATIO[ref.label[0]])}")

        print("\n[4] disk and memory")
        per_row, per_million = print_disk_and_memory(e2e, ph, base_kib, peak_kib)

        if args.profile:
            print("\n[5] profile of Platform.run (cProfile, in this process) ...", flush=True)
            print(profile_serving_loop(config, tmp / "profile"))
        extra_tables(args, tmp)

    print("\nsummary")
    ref_a, ref_b = refs
    print_table([
        ("simulate() end to end", f"{e2e_rate:,.0f} imp/s", f"{n:,} impressions in {e2e.seconds:.2f} s"),
        ("  world generation", f"{ph.world:.2f} s", "phase split from the replica run"),
        ("  SimPy loop (Platform.run w/o flush)", f"{ph.simpy_loop:.2f} s", f"{loop_rate:,.0f} imp/s"),
        ("  log writing (daily flush)", f"{ph.flush:.2f} s", ""),
        ("  log reading, summary, plot", f"{ph.read + ph.summary:.2f} s", ""),
        ("reference A: user model, numpy", f"{ref_a.rate:,.0f} imp/s", "no SimPy, recall or policy"),
        ("reference B: A + serving, numpy", f"{ref_b.rate:,.0f} imp/s", "+ recall, production policy, rank_page"),
        *((f"{what} / reference {r}", f"{ratios[what, r]:.1f}x", verdict(ratios[what, r], TARGET_RATIO[r]))
          for what in ("simulate()", "SimPy loop") for r in "AB"),
        ("bytes per logged impression", f"{per_row:.1f} B", "Parquet files under logs/ / rows"),
        ("peak RSS per million impressions", f"{per_million:.0f} MiB",
         f"simulate() child - import-only child; {verdict(per_million, TARGET_RSS_PER_M, ' MiB')}"),
    ])


def extra_tables(args: argparse.Namespace, tmp: Path) -> None:
    if args.days_scaling:
        days_scaling(args, tmp)
    if args.scaling:
        user_scaling(args, tmp)
    if args.paper_regime:
        paper_regimes(args, tmp)


if __name__ == "__main__":
    main(sys.argv[1:])
