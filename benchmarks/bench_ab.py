"""Wall time and memory of the main job (``satbed ab``), policy scoring against simulator overhead,
and the batched scoring and training throughput of SASRec.

Run it as a script (it is not a test)::

    python benchmarks/bench_ab.py [--config F.toml] [--users N] [--pre-days P] [--days D] [--seed S]

It prints, in one run:

1. wall time and peak RSS of the main job, ``run_experiment(ExperimentConfig(), ...)`` (or the
   ``--config`` file's experiment) in a child process, split as its ``timings.json`` splits it
   (simulate / train / update / analyse / report), and finer: world generation, the pre-period and
   the experiment period, serving (``Platform.serve``: recall, the policy's ``score``, ranking; and
   ``Platform.consume``, which lets the users of a tick watch all buckets' pages at once),
   the daily Parquet flushes, the online-update path, the training-log reads and each policy's fit;
2. for the serving phase, per bucket: the policy's own batched scoring time against the rest of
   serving ("simulator overhead during serving": recall, ranking and the bucket's share of each
   tick's ``consume``, split by its share of the tick's pages), with the issue's target (simulator
   overhead <= 35% of the SASRec policy's scoring time, issue 17; and the experiment period >= 40k impressions/s);
3. a micro-benchmark of SASRec's batched ``score`` (the registered ``sasrec`` policy fitted on a
   small simulated world's logs): requests/s at batch sizes 1, 16, 64 and 128 with the platform's
   candidate count (200) and one torch thread;
4. SASRec's training throughput, sequences/s per epoch, from the policy's ``history_``.

Every measured run happens in a fresh ``spawn`` child process, so that its peak RSS can be read
from ``getrusage(RUSAGE_CHILDREN)`` and no run sees another's memory or warm caches. The main job
is instrumented from inside its child (subclasses and proxies swapped into
``experiments.runner``'s namespace and ``policies.make_policy``); nothing in ``simulator/`` or
``policies/`` is edited. Randomness comes only from seeds derived from ``--seed``.
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
import torch

import instrumentation
import policies
import policies.train
from instrumentation import KiB_PER_MiB, ServeStats, in_child, peak_kib, print_lines, print_table
import experiments.runner as experiment
from policies import available_policies, make_policy
from simulator.config import SimConfig, load_toml, with_overrides
from experiments.config import ExperimentConfig
from experiments.runner import run_experiment
from simulator.logs import LogWriter, log_files, partition_of, read_impressions
from simulator.platform import Bucket, Platform
from simulator.schema import LogData, RankBatch
from simulator.simulate import STREAMS, seed_streams
from simulator.world import World

TARGET_OVERHEAD = 0.35         # issue 17: simulator overhead <= 35% of the SASRec policy's scoring time
TARGET_EXPERIMENT_RATE = 40e3  # issue 17: experiment period >= 40k impressions/s (37.5k users served by sasrec)
REF_SCORE_BATCHED = 4.0e3      # the reference: requests/s of a SASRec-sized ranker, batched
REF_SCORE_SINGLE = 1.9e3       # ... and one request per call
REF_TRAIN = (800.0, 950.0)     # ... training sequences/s at length 50, batch 512
SASREC = "sasrec"


# ----------------------------------------------------------------------------- child processes
def _child_baseline() -> None:
    """Runs in a fresh child: nothing beyond the imports of this module (torch included)."""


# ----------------------------------------------------------------------------- instrumentation
# Used only inside the main-job child. One module-level record per child process: the proxies and
# subclasses below write into it, and _child_main_job returns what it holds.
_RECORD: dict = {}


def _reset_record() -> None:
    _RECORD.clear()
    _RECORD.update(proxies=[], epoch_sizes=[], take_seconds=0.0, take_calls=0, update_path_seconds=0.0,
                   pending_take=None, world_seconds=0.0, platform=None)


@dataclass
class FitRecord:
    """One ``fit`` call of a policy."""
    started: float                 # perf_counter at the start (to tell setup from training)
    seconds: float
    epoch_sizes: list[tuple[int, int]]           # (examples, sequence length) per epoch of the loop
    history: list[dict]                          # the policy's history_ after the fit, as dicts


def history_dicts(policy) -> list[dict]:
    """The policy's per-epoch ``history_`` (if it keeps one) as plain dicts."""
    return [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r)
            for r in getattr(policy, "history_", None) or []]


class TimedPolicy:
    """A proxy for a policy: forwards every attribute, and times ``fit``, ``score`` and ``update``.

    Two ``perf_counter`` calls per scoring call (under 1 us against hundreds of us per call).
    """

    def __init__(self, inner, label: str):
        self._inner = inner
        self.label = label
        self.score_calls = 0
        self.score_requests = 0
        self.score_seconds = 0.0
        self.update_calls = 0
        self.update_seconds = 0.0
        self.fits: list[FitRecord] = []

    def __getattr__(self, name):           # only called for attributes the proxy does not have
        return getattr(self._inner, name)

    def fit(self, train, *, rng):
        sizes_before = len(_RECORD["epoch_sizes"])
        started = time.perf_counter()
        self._inner.fit(train, rng=rng)
        seconds = time.perf_counter() - started
        self.fits.append(FitRecord(started, seconds, list(_RECORD["epoch_sizes"][sizes_before:]),
                                   history_dicts(self._inner)))
        return self

    def score(self, batch):
        started = time.perf_counter()
        try:
            return self._inner.score(batch)
        finally:
            self.score_seconds += time.perf_counter() - started
            self.score_calls += 1
            self.score_requests += len(batch.user_ids)

    @property
    def update(self):
        inner_update = getattr(self._inner, "update", None)
        if not callable(inner_update):
            return inner_update            # keeps run_experiment's callable(getattr(...)) test honest

        def timed_update(new):
            started = time.perf_counter()
            try:
                return inner_update(new)
            finally:
                end = time.perf_counter()
                self.update_seconds += end - started
                self.update_calls += 1
                pending = _RECORD.get("pending_take")
                if pending is not None:       # from the take_new() that fed this update
                    _RECORD["update_path_seconds"] += end - pending
                    _RECORD["pending_take"] = None
        return timed_update


def _timed_make_policy(name, **params):
    """``policies.make_policy`` that wraps every policy it builds in a :class:`TimedPolicy`."""
    proxy = TimedPolicy(make_policy(name, **params), name)
    _RECORD["proxies"].append(proxy)
    return proxy


def _counting_n_examples(data):
    """``policies.train._n_examples`` that also records (examples, sequence length) per epoch."""
    n = _ORIGINAL_N_EXAMPLES(data)
    length = next((getattr(data, f.name).shape[1] for f in dataclasses.fields(data)
                   if isinstance(getattr(data, f.name), np.ndarray) and getattr(data, f.name).ndim == 2), 0)
    _RECORD["epoch_sizes"].append((n, int(length)))
    return n


_ORIGINAL_N_EXAMPLES = getattr(policies.train, "_n_examples", None)


class TimedWorld(World):
    """``World.generate`` timed."""

    @classmethod
    def generate(cls, *args, **kwargs):
        started = time.perf_counter()
        world = World.generate(*args, **kwargs)
        _RECORD["world_seconds"] += time.perf_counter() - started
        return world


class TimedLogWriter(instrumentation.TimedLogWriter):
    """Also times ``take_new`` (the online updates' reads of a bucket's new logs) into the record."""

    def take_new(self, *args, **kwargs):
        started = time.perf_counter()
        table = super().take_new(*args, **kwargs)
        seconds = time.perf_counter() - started
        _RECORD["take_seconds"] += seconds
        _RECORD["take_calls"] += 1
        if table is not None and table.num_rows:
            _RECORD["pending_take"] = started      # closed by the TimedPolicy.update it feeds
        else:
            _RECORD["update_path_seconds"] += seconds
        return table


class InstrumentedPlatform(instrumentation.InstrumentedPlatform):
    """Registers itself in the record, where _child_main_job finds it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _RECORD["platform"] = self


def instrument() -> None:
    """Swap the timed classes into the namespaces ``run_experiment`` reads them from (child only)."""
    _reset_record()
    experiment.Platform = InstrumentedPlatform
    experiment.LogWriter = TimedLogWriter
    experiment.World = TimedWorld
    policies.make_policy = _timed_make_policy          # run_experiment imports it at call time
    count_epochs()


def count_epochs() -> None:
    """Record each epoch's training examples (the shared loop looks ``_n_examples`` up at call time);
    without that helper, sequences/s cannot be computed and is printed as '-'."""
    if _ORIGINAL_N_EXAMPLES is not None:
        policies.train._n_examples = _counting_n_examples


# ----------------------------------------------------------------------------- main job
@dataclass(frozen=True)
class PolicyTimes:
    label: str                     # bucket name ("pre" for the pre-period's production policy)
    policy: str
    fits: list[FitRecord]
    setup_fit_seconds: float       # fits before Platform.run (the production policy's)
    train_fit_seconds: float       # fits inside the run (run_experiment's "train")
    update_calls: int
    update_seconds: float


@dataclass(frozen=True)
class MainJob:
    """One instrumented ``run_experiment`` in a child process."""
    seconds: float                 # wall clock of the run_experiment call
    timings: dict[str, float]      # run_experiment's own timings (timings.json, unrounded)
    world: float                   # World.generate
    setup: float                   # start of run_experiment -> Platform.run (world included)
    pre_sim: float                 # pre-period days: simulation between day ends (flushes included)
    exp_sim: float                 # experiment days: the same
    flush_pre: float
    flush_exp: float
    take_seconds: float            # LogWriter.take_new for online updates
    take_calls: int
    update_path: float             # take_new + to_pandas + observable + policy.update
    serve: list[ServeStats]
    policies: list[PolicyTimes]
    impressions: dict[str, int]    # logged rows per bucket directory (pre-period under its names)
    exp_impressions: int           # logged rows of the experiment days
    rss_kib: dict[str, int]        # peak RSS of the child (its own, instrumentation.peak_kib) at phase boundaries


def _child_main_job(config: ExperimentConfig, run_dir: str) -> MainJob:
    """Runs in a fresh child: the instrumented main job, then its log sizes."""
    instrument()
    started = time.perf_counter()
    result = run_experiment(config, run_dir, progress=False)
    seconds = time.perf_counter() - started
    rss_end = peak_kib()
    platform: InstrumentedPlatform = _RECORD["platform"]
    writer: TimedLogWriter = platform.log
    marks = sorted(platform.day_marks, key=lambda m: m.day)
    pre = config.ab.pre_days
    sims, prev = [], platform.run_started
    for m in marks:
        sims.append(m.enter - prev)
        prev = m.exit
    labels = [b.name for b in config.buckets] + ["pre"]
    proxies = _RECORD["proxies"]
    if len(proxies) != len(labels):                 # run_experiment changed: fall back to policy names
        labels = [p.label for p in proxies]
    times = []
    for label, proxy in zip(labels, proxies):
        setup = sum(f.seconds for f in proxy.fits if f.started < platform.run_started)
        times.append(PolicyTimes(label, proxy.label, proxy.fits, setup,
                                 sum(f.seconds for f in proxy.fits) - setup,
                                 proxy.update_calls, proxy.update_seconds))
    impressions, exp_rows = {}, 0
    for path in log_files(Path(run_dir) / "logs"):
        rows = pq.ParquetFile(path).metadata.num_rows
        day, bucket = partition_of(path)
        key = bucket if day >= pre else f"{bucket} (pre-period)"
        impressions[key] = impressions.get(key, 0) + rows
        exp_rows += rows if day >= pre else 0
    train_mark = next((m for m in marks if m.day == pre - 1), marks[-1])
    return MainJob(
        seconds=seconds, timings=dict(result.timings), world=_RECORD["world_seconds"],
        setup=platform.run_started - started, pre_sim=sum(sims[:pre]), exp_sim=sum(sims[pre:]),
        flush_pre=sum(s for d, s in writer.flush_seconds_by_day.items() if d < pre),
        flush_exp=sum(s for d, s in writer.flush_seconds_by_day.items() if d >= pre),
        take_seconds=_RECORD["take_seconds"], take_calls=_RECORD["take_calls"],
        update_path=_RECORD["update_path_seconds"], serve=list(platform.stats.values()), policies=times,
        impressions=impressions, exp_impressions=exp_rows,
        rss_kib={"Platform.run starts (world, tables, setup)": platform.rss_run_start_kib,
                 "end of the pre-period": train_mark.rss_enter_kib,
                 "after training": train_mark.rss_exit_kib,
                 "end of Platform.run": platform.rss_run_end_kib,
                 "after analyse and report": rss_end})


def measure_main_job(config: ExperimentConfig, tmp: Path) -> tuple[MainJob, int, int]:
    """The main job in a child, with its peak RSS and that of an import-only child read first.

    ``RUSAGE_CHILDREN.ru_maxrss`` is the largest peak of any waited-for child, so the baseline
    child runs (and is read) first.
    """
    in_child(_child_baseline)
    baseline = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    job = in_child(_child_main_job, config, str(tmp / "main_job"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return job, baseline, peak


def _child_profile(config: ExperimentConfig, run_dir: str, top: int) -> str:
    """Runs in a fresh child: the main job (uninstrumented) under cProfile; top functions as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    run_experiment(config, run_dir, progress=False)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        name = f"{func} ({Path(path).parent.name}/{Path(path).name}:{line})" if line else func
        rows.append((cumtime, tottime, ncalls, name))
    total = max(r[0] for r in rows)
    lines = []
    for title, key in (("cumulative time", 0), ("own time (excluding callees)", 1)):
        lines.append(f"    top {top} by {title}, of {total:.1f} s under the profiler:")
        lines.append(f"      {'cum s':>7} {'own s':>7} {'calls':>9}  function")
        for cum, own, calls, name in sorted(rows, key=lambda r: -r[key])[:top]:
            lines.append(f"      {cum:7.2f} {own:7.2f} {calls:9d}  {name}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- SASRec micro-benchmark
@dataclass(frozen=True)
class ScoreRate:
    batch: int
    requests: int
    seconds: float                 # best of the repeats, for all requests
    history_seconds: float         # FeatureStore.history inside score() (one instrumented pass)
    encoder_seconds: float         # model_.encode_last inside score() (same pass; NaN if not found)
    pass_seconds: float            # the instrumented pass itself

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Micro:
    """The micro world and the SASRec scoring and training measurements on it."""
    impressions: int
    simulate_seconds: float
    candidates: int
    threads: int
    fits: dict[int, tuple[float, list[tuple[int, int]], list[dict]]]   # batch size -> (s, sizes, history)
    rates: list[ScoreRate]


def _timed_method(obj, name: str, acc: list[float]) -> None:
    """Replace ``obj.name`` (a bound method) by a timed one on the instance; time adds to ``acc[0]``."""
    method = getattr(obj, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            acc[0] += time.perf_counter() - started
    object.__setattr__(obj, name, timed)


def _child_micro(cfg: SimConfig, run_dir: str, seed: int, batch_sizes: list[int], n_requests: int,
                 repeats: int, epochs: int, train_batches: list[int]) -> Micro:
    """Runs in a fresh child: simulate a small world with the production policy (as ``simulate()``
    sets it up), fit ``sasrec`` on its logs, then time batched ``score`` calls."""
    torch.set_num_threads(1)
    _reset_record()
    count_epochs()
    streams = seed_streams(cfg.seed)
    fit_seq, bench_seq = np.random.SeedSequence(seed).spawn(len(STREAMS) + 2)[len(STREAMS):]
    started = time.perf_counter()
    world = World.generate(cfg, np.random.default_rng(streams["world"]))
    items, users = world.catalog.table(), world.users.table()
    production = make_policy("production", temperature=cfg.platform.temperature)
    production.fit(LogData(pd.DataFrame(), items, users).observable(), rng=np.random.default_rng(streams["policy"]))
    writer = LogWriter(Path(run_dir) / "logs", ["all"])
    bucket = Bucket.from_seed("all", production, 0, streams["buckets"])
    platform = Platform(world, [bucket], np.zeros(world.users.n_users, dtype=np.int64), writer,
                        streams["arrivals"])
    platform.run(cfg.platform.days)
    simulate_seconds = time.perf_counter() - started
    logs = read_impressions(Path(run_dir) / "logs")
    train = LogData(logs, items, users).observable()

    # warm-up: the first fit in a process pays one-off torch costs (lazy initialisation, allocator)
    make_policy(SASREC, max_epochs=1, patience=1).fit(train, rng=np.random.default_rng(fit_seq))
    fits, policy = {}, None
    for batch_size in train_batches:
        candidate = make_policy(SASREC, max_epochs=epochs, patience=epochs, batch_size=batch_size)
        before = len(_RECORD["epoch_sizes"])
        t0 = time.perf_counter()
        candidate.fit(train, rng=np.random.default_rng(fit_seq))
        seconds = time.perf_counter() - t0
        fits[batch_size] = (seconds, list(_RECORD["epoch_sizes"][before:]), history_dicts(candidate))
        policy = policy or candidate

    rng = np.random.default_rng(bench_seq)
    active = np.unique(logs["user_id"].to_numpy())
    req_users = rng.choice(active, size=n_requests)
    cands = platform.recall(req_users, rng)
    rates = []
    for b in batch_sizes:
        batches = [RankBatch(user_ids=req_users[s:s + b], candidates=cands[s:s + b], ts=platform.env.now,
                             day=platform.day, features=platform.features)
                   for s in range(0, n_requests, b)]
        policy.score(batches[0])                                     # warm-up
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            for batch in batches:
                policy.score(batch)
            best = min(best, time.perf_counter() - t0)
        # one more pass with the feature-store read and the encoder timed inside score()
        hist_acc, enc_acc = [0.0], [0.0]
        features = platform.features
        _timed_method(features, "history", hist_acc)
        model = getattr(policy, "model_", None)
        has_encoder = model is not None and hasattr(model, "encode_last")
        if has_encoder:
            _timed_method(model, "encode_last", enc_acc)
        t0 = time.perf_counter()
        for batch in batches:
            policy.score(batch)
        pass_seconds = time.perf_counter() - t0
        del features.history
        if has_encoder:
            del model.encode_last
        rates.append(ScoreRate(b, n_requests, best, hist_acc[0], enc_acc[0] if has_encoder else float("nan"),
                               pass_seconds))
    return Micro(len(logs), simulate_seconds, cands.shape[1], torch.get_num_threads(), fits, rates)


# ----------------------------------------------------------------------------- report
def print_grid(header: list[str], rows: list[list[str]], indent: int = 4) -> None:
    """A plain-text grid: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [f"{row[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(row[1:], widths[1:])]
        print(" " * indent + "  ".join(cells))


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:4.1f}%" if whole else "  -  "


def overhead_verdict(ratio: float) -> str:
    return (f"meets target (<= {100 * TARGET_OVERHEAD:.0f}%)" if ratio <= TARGET_OVERHEAD
            else f"MISSES target (<= {100 * TARGET_OVERHEAD:.0f}%)")


def print_main_job(job: MainJob, config: ExperimentConfig) -> None:
    """Section 1: the phase split (nested labels are parts of the line above)."""
    t = job.timings
    total = t.get("total", job.seconds)
    train = t.get("train", 0.0)
    fits = [p for p in job.policies if p.train_fit_seconds > 0]
    exp_stats = [s for s in job.serve if s.phase == "experiment"]
    pre_stats = [s for s in job.serve if s.phase == "pre"]
    sum_ = lambda stats, attr: sum(getattr(s, attr) for s in stats)          # noqa: E731
    exp_serve, pre_serve = sum_(exp_stats, "serve"), sum_(pre_stats, "serve")
    policy_update = sum(p.update_seconds for p in job.policies)
    rows = [
        ("setup (world, tables, buckets, production fit)", job.setup, pct(job.setup, total)),
        ("  World.generate", job.world, ""),
        ("simulate (timings.json)", t.get("simulate", 0.0), pct(t.get("simulate", 0.0), total)),
        (f"  pre-period, {config.ab.pre_days} days (production)", job.pre_sim, ""),
        ("    serve() + consume()", pre_serve, f"{sum_(pre_stats, 'requests'):,} requests"),
        ("    daily Parquet flush", job.flush_pre, ""),
        ("    clock, sessions, SimPy events, feature end_day", job.pre_sim - pre_serve - job.flush_pre, ""),
        (f"  experiment, {config.ab.days} days ({len(exp_stats)} buckets)", job.exp_sim,
         f"{job.exp_impressions / max(job.exp_sim, 1e-9):,.0f} impressions/s "
         f"({'meets' if job.exp_impressions / max(job.exp_sim, 1e-9) >= TARGET_EXPERIMENT_RATE else 'MISSES'} "
         f"issue 17's >= {TARGET_EXPERIMENT_RATE:,.0f} in a 37.5k-user world served by sasrec)"),
        ("    serve() + consume() = serving phase", exp_serve, f"{sum_(exp_stats, 'requests'):,} requests"),
        ("      recall", sum_(exp_stats, "recall"), ""),
        ("      policy score()", sum_(exp_stats, "score"), "all buckets, see [2]"),
        ("      RankBatch, checks, rank_page", sum_(exp_stats, "rank"), ""),
        ("      consume() (joint over the buckets)", sum_(exp_stats, "consume"), ""),
        ("    daily Parquet flush", job.flush_exp, ""),
        ("    online updates (take_new..update)", job.update_path,
         f"{job.take_calls} take_new calls; the policies' update() {policy_update:.2f} s of it"),
        ("    clock, sessions, SimPy events, feature end_day",
         job.exp_sim - exp_serve - job.flush_exp - job.update_path, ""),
        ("train (timings.json)", train, pct(train, total)),
        ("  read and strip training logs", train - sum(p.train_fit_seconds for p in fits), ""),
        *((f"  fit {p.label} ({p.policy})", p.train_fit_seconds, "") for p in fits),
        ("update (timings.json; inside simulate)", t.get("update", 0.0),
         f"to_pandas + observable + update(); update() itself {policy_update:.2f} s"),
        ("analyse", t.get("analyse", 0.0), pct(t.get("analyse", 0.0), total)),
        ("report", t.get("report", 0.0), pct(t.get("report", 0.0), total)),
        ("total (timings.json)", total, f"(run_experiment call in the child: {job.seconds:.2f} s)"),
    ]
    print_lines(rows)


def print_serving(job: MainJob) -> dict[str, ServeStats]:
    """Section 2: per bucket, the policy's scoring against the rest of serving."""
    rows, by_bucket = [], {}
    for s in sorted(job.serve, key=lambda s: (s.phase != "pre", s.bucket)):
        label = s.bucket if s.phase == "experiment" else f"{s.bucket} (pre-period)"
        if s.phase == "experiment":
            by_bucket[s.bucket] = s
        n = max(s.requests, 1)
        rows.append([label, s.policy, f"{s.calls:,}", f"{s.requests / max(s.calls, 1):.1f}", f"{s.max_batch}",
                     f"{s.serve:.2f}", f"{s.score:.2f}", f"{1e6 * s.score / n:.1f}", f"{s.overhead:.2f}",
                     f"{1e6 * s.overhead / n:.1f}", f"{1e6 * s.overhead / max(s.calls, 1):.0f}",
                     f"{100 * s.overhead / s.score:.0f}%" if s.score else "-",
                     f"{1e6 * s.recall / n:.1f}", f"{1e6 * s.rank / n:.1f}", f"{1e6 * s.consume / n:.1f}"])
    print_grid(["bucket", "policy", "calls", "req/call", "max", "serve s", "score s", "score us/req",
                "overhead s", "overhead us/req", "overhead us/call", "overhead/score", "recall us/req", "rank us/req",
                "consume us/req"], rows)
    print("    overhead = serving - policy score(): recall + RankBatch, checks, rank_page + the bucket's share of\n"
          "    consume() (all buckets' pages of a tick are watched in one call; split by the bucket's share of them)")
    return by_bucket


def whole_loop_overhead(job: MainJob) -> tuple[float, int]:
    """(seconds of the experiment-period simulation that are not policy scoring, requests)."""
    exp = [s for s in job.serve if s.phase == "experiment"]
    return job.exp_sim - sum(s.score for s in exp), sum(s.requests for s in exp)


def print_memory(job: MainJob, base_kib: int, peak_kib_: int) -> float:
    extra = (peak_kib_ - base_kib) / KiB_PER_MiB
    rows = sum(job.impressions.values())
    print(f"    peak RSS: main-job child {peak_kib_ / KiB_PER_MiB:.0f} MiB - import-only child "
          f"{base_kib / KiB_PER_MiB:.0f} MiB = {extra:.0f} MiB ({rows:,} impressions logged)")
    print("    method: each in a fresh 'spawn' child process, peak read with "
          "getrusage(RUSAGE_CHILDREN).ru_maxrss after joining it (baseline child first)")
    print("    where the peak is (main-job child, its own peak so far): " + ", ".join(
        f"{v / KiB_PER_MiB:.0f} MiB at {k}" for k, v in job.rss_kib.items()))
    return extra


def epoch_rows(sizes: list[tuple[int, int]], history: list[dict]) -> list[tuple[int, int, int, float, float, float]]:
    """(epoch, sequences, length, train s, eval s, loss) for the epochs of one fit."""
    out = []
    for i, rec in enumerate(history):
        n, length = sizes[i] if i < len(sizes) else (0, 0)
        out.append((rec.get("epoch", i + 1), n, length, rec.get("train_seconds", float("nan")),
                    rec.get("eval_seconds", float("nan")), rec.get("loss", float("nan"))))
    return out


def print_training(rows, fit_seconds: float, batch_size: int | None) -> float:
    """Per-epoch sequences/s of one fit; returns the mean sequences/s (total sequences / total train s)."""
    grid = [[str(e), f"{n:,}", str(length), f"{tr:.2f}", f"{n / tr:,.0f}" if tr > 0 and n else "-", f"{ev:.2f}",
             f"{loss:.4f}"] for e, n, length, tr, ev, loss in rows]
    print_grid(["epoch", "sequences", "length", "train s", "seq/s", "eval s", "loss"], grid, indent=6)
    n_total = sum(r[1] for r in rows)
    train_total = sum(r[3] for r in rows)
    eval_total = sum(r[4] for r in rows)
    rate = n_total / train_total if train_total and n_total else float("nan")
    later = rows[1:]
    later_note = (f" ({sum(r[1] for r in later) / sum(r[3] for r in later):,.0f} without epoch 1)"
                  if later and n_total and sum(r[3] for r in later) > 0 else "")
    print(f"      mean {rate:,.0f} sequences/s{later_note} over {len(rows)} epochs (batch {batch_size}); "
          f"fit {fit_seconds:.2f} s = {train_total:.2f} s epochs + {eval_total:.2f} s validation + "
          f"{fit_seconds - train_total - eval_total:.2f} s data preparation and the rest")
    return rate


# ----------------------------------------------------------------------------- arguments and main
def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """``ExperimentConfig()`` (or the ``--config`` file) with the command-line overrides."""
    config = load_toml(ExperimentConfig, args.config) if args.config else ExperimentConfig()
    overrides = {}
    if args.users is not None:
        overrides["world.users.n_users"] = args.users
    if args.pre_days is not None:
        overrides["ab.pre_days"] = args.pre_days
    if args.days is not None:
        overrides["ab.days"] = args.days
    if args.seed is not None:
        overrides["world.seed"] = args.seed
    return with_overrides(config, overrides) if overrides else config


def micro_config(config: ExperimentConfig, users: int, days: int) -> SimConfig:
    """The main job's world with fewer users and days, for the SASRec micro-benchmark."""
    world = config.world
    return dataclasses.replace(world, users=dataclasses.replace(world.users, n_users=users),
                               platform=dataclasses.replace(world.platform, days=days))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="experiment TOML (default: ExperimentConfig(), the `satbed ab` job)")
    parser.add_argument("--users", type=int, help="number of users (default: the config's, 5,000)")
    parser.add_argument("--pre-days", type=int, help="pre-period days (default: the config's, 3)")
    parser.add_argument("--days", type=int, help="experiment days (default: the config's, 7)")
    parser.add_argument("--seed", type=int, help="run seed (default: the config's, 0)")
    parser.add_argument("--micro-users", type=int, default=2000, help="users of the micro-benchmark's world")
    parser.add_argument("--micro-days", type=int, default=2, help="days of the micro-benchmark's world")
    parser.add_argument("--micro-requests", type=int, default=2048, help="requests scored per batch size")
    parser.add_argument("--micro-epochs", type=int, default=3, help="SASRec training epochs in the micro-benchmark")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 128],
                        help="scoring batch sizes of the micro-benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each scoring batch size (best kept)")
    parser.add_argument("--profile", action="store_true",
                        help="also run the main job once more under cProfile and print its top functions")
    args = parser.parse_args(argv)
    for name in ("users", "pre_days", "days", "micro_users", "micro_days", "micro_requests", "micro_epochs",
                 "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}={value} must be >= 1")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed={args.seed} must be >= 0")
    if min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    return args


def report_target(by_bucket: dict[str, ServeStats], job: MainJob) -> float | None:
    """The issue's target for the SASRec bucket; returns overhead / scoring (None without SASRec)."""
    sas = next((s for s in by_bucket.values() if s.policy == SASREC), None)
    if sas is None or sas.score <= 0:
        print(f"    no bucket serves {SASREC!r}: the target (overhead <= {100 * TARGET_OVERHEAD:.0f}% of "
              "SASRec's scoring time) is not evaluated")
        return None
    ratio = sas.overhead / sas.score
    score_us = 1e6 * sas.score / sas.requests
    print(f"    target: simulator overhead during serving <= {100 * TARGET_OVERHEAD:.0f}% of the SASRec policy's "
          f"scoring time: bucket {sas.bucket!r} {1e6 * sas.overhead / sas.requests:.1f} us / {score_us:.1f} us "
          f"per request = {100 * ratio:.0f}%  {overhead_verdict(ratio)}")
    loop_overhead, loop_requests = whole_loop_overhead(job)
    loop_us = 1e6 * loop_overhead / loop_requests
    print(f"    whole experiment loop (clock, sessions, flushes, online updates too) minus all policy scoring: "
          f"{loop_us:.1f} us per request = {100 * loop_us / score_us:.0f}% of SASRec's {score_us:.1f} us  "
          f"{overhead_verdict(loop_us / score_us)}")
    print(f"    SASRec in the main job: {sas.requests / sas.score:,.0f} requests/s of scoring at "
          f"{sas.requests / max(sas.calls, 1):.1f} requests per call (see [3] for the batch-size curve)")
    return ratio


def run_micro(args: argparse.Namespace, config: ExperimentConfig, tmp: Path) -> Micro:
    """Section 3: the SASRec scoring micro-benchmark in a child process, printed."""
    batch_sizes = sorted(set(args.batch_sizes))
    print(f"\n[3] SASRec batched score(): micro world {args.micro_users:,} users x {args.micro_days} days "
          f"(production policy); sasrec fitted for {args.micro_epochs} epochs after a 1-epoch warm-up fit; "
          f"{args.micro_requests:,} requests per batch size, best of {args.repeats}; in a child process ...",
          flush=True)
    default_batch = getattr(make_policy(SASREC), "batch_size", 256)
    train_batches = [default_batch] + ([512] if default_batch != 512 else [])
    micro = in_child(_child_micro, micro_config(config, args.micro_users, args.micro_days), str(tmp / "micro"),
                     config.world.seed, batch_sizes, args.micro_requests, args.repeats, args.micro_epochs,
                     train_batches)
    print(f"    micro world: {micro.impressions:,} impressions in {micro.simulate_seconds:.1f} s; "
          f"C={micro.candidates} candidates, torch threads {micro.threads}")
    grid = [[str(r.batch), f"{r.rate:,.0f}", f"{1e6 / r.rate:.0f}", f"{1e6 * r.seconds * r.batch / r.requests:,.0f}",
             pct(r.history_seconds, r.pass_seconds),
             pct(r.encoder_seconds, r.pass_seconds) if np.isfinite(r.encoder_seconds) else "-"]
            for r in micro.rates]
    print_grid(["batch", "requests/s", "us/request", "us/call", "history read", "encode_last"], grid)
    print(f"    issue reference: ~{REF_SCORE_BATCHED:,.0f} requests/s batched, ~{REF_SCORE_SINGLE:,.0f} at batch 1; "
          "'history read' (FeatureStore.history) and 'encode_last' are shares of score() in one extra pass")
    return micro


def report_training(job: MainJob, micro: Micro | None) -> tuple[float | None, dict[int, float]]:
    """Section 4: SASRec's sequences/s per epoch, main job and micro world."""
    print("\n[4] SASRec training throughput (sequences/s per epoch; train s = make_epoch + mini-batches)")
    main_rate = None
    sas_times = next((p for p in job.policies if p.policy == SASREC and p.fits), None)
    if sas_times is not None:
        fit = sas_times.fits[-1]
        print(f"    main job, bucket {sas_times.label!r} (fit on the pre-period logs):")
        main_rate = print_training(epoch_rows(fit.epoch_sizes, fit.history), fit.seconds,
                                   getattr(make_policy(SASREC), "batch_size", None))
    else:
        print(f"    main job: no bucket trains {SASREC!r}")
    micro_rates = {}
    if micro is not None:
        for bs, (seconds, sizes, history) in micro.fits.items():
            print(f"    micro world, batch {bs}:")
            micro_rates[bs] = print_training(epoch_rows(sizes, history), seconds, bs)
    print(f"    issue reference: ~{REF_TRAIN[0]:.0f}-{REF_TRAIN[1]:.0f} sequences/s at length 50, batch 512")
    return main_rate, micro_rates


def summary_rows(job: MainJob, extra_mib: float, ratio: float | None, micro: Micro | None,
                 main_rate: float | None, micro_rates: dict[int, float]) -> list[tuple[str, str, str]]:
    t = job.timings
    exp = [s for s in job.serve if s.phase == "experiment"]
    rows = [
        ("main job total", f"{t.get('total', job.seconds):.1f} s", f"{sum(job.impressions.values()):,} impressions"),
        ("  setup (world, tables, buckets)", f"{job.setup:.1f} s", ""),
        ("  simulate", f"{t.get('simulate', 0.0):.1f} s",
         f"pre-period {job.pre_sim:.1f} s, experiment {job.exp_sim:.1f} s"),
        ("    serving phase", f"{sum(s.serve for s in exp):.1f} s", "experiment days, all buckets: serve() + consume()"),
        ("      policy score()", f"{sum(s.score for s in exp):.1f} s", ""),
        ("  train", f"{t.get('train', 0.0):.1f} s", ""),
        ("  update", f"{t.get('update', 0.0):.1f} s", "inside simulate"),
        ("  analyse + report", f"{t.get('analyse', 0.0) + t.get('report', 0.0):.1f} s", ""),
        ("peak RSS above imports", f"{extra_mib:.0f} MiB", "main-job child - import-only child"),
    ]
    for s in sorted(exp, key=lambda s: s.bucket):
        n = max(s.requests, 1)
        rows.append((f"score {s.bucket} ({s.policy})", f"{1e6 * s.score / n:.1f} us/req",
                     f"{s.requests / max(s.calls, 1):.1f} req/call; overhead {1e6 * s.overhead / n:.1f} us/req"))
    if ratio is not None:
        rows.append(("overhead / SASRec scoring", f"{100 * ratio:.0f}%", overhead_verdict(ratio)))
    for r in micro.rates if micro is not None else []:
        ref = REF_SCORE_SINGLE if r.batch == 1 else REF_SCORE_BATCHED
        rows.append((f"sasrec score, batch {r.batch}", f"{r.rate:,.0f} req/s", f"issue: ~{ref:,.0f}"))
    if main_rate is not None:
        rows.append(("sasrec training (main job)", f"{main_rate:,.0f} seq/s",
                     f"issue: ~{REF_TRAIN[0]:.0f}-{REF_TRAIN[1]:.0f} at batch 512"))
    for bs, rate in micro_rates.items():
        rows.append((f"sasrec training (micro, batch {bs})", f"{rate:,.0f} seq/s", ""))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = build_config(args)
    world = config.world
    arms = ", ".join(f"{b.name}={b.policy}" for b in config.buckets)
    print(f"satbed A/B benchmark: {world.users.n_users:,} users, {config.ab.pre_days} pre-days + {config.ab.days} "
          f"experiment days, seed {world.seed}, buckets {arms}; k={world.platform.page_size}, "
          f"C={world.platform.n_candidates}, max batch {world.platform.max_batch}, tick {world.platform.tick_s:g} s, "
          f"torch threads {config.torch_threads}" + (f"; config {args.config}" if args.config else ""))
    with tempfile.TemporaryDirectory(prefix="satbed-bench-ab-") as tmp_name:
        tmp = Path(tmp_name)
        print("\n[1] main job: run_experiment() end to end, instrumented, in a child process ...", flush=True)
        job, base_kib, peak = measure_main_job(config, tmp)
        print_main_job(job, config)
        print("  memory")
        extra_mib = print_memory(job, base_kib, peak)

        print("\n[2] serving phase (experiment days): policy score() vs the rest of serving, per bucket")
        ratio = report_target(print_serving(job), job)

        micro = None
        if SASREC in available_policies():
            micro = run_micro(args, config, tmp)
        else:
            print(f"\n[3] skipped: policy {SASREC!r} is not registered (`satbed policies`)")
        main_rate, micro_rates = report_training(job, micro)

        if args.profile:
            print("\n[5] profile of the main job (cProfile, uninstrumented, in a child process) ...", flush=True)
            print(in_child(_child_profile, config, str(tmp / "profile"), 15))

    print("\nsummary")
    print_table(summary_rows(job, extra_mib, ratio, micro, main_rate, micro_rates))


if __name__ == "__main__":
    main(sys.argv[1:])
