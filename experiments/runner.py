"""Simulated A/B (and A/A) experiments: the main job, `satbed ab`.

A run has a pre-period served by the stochastic production policy, whose logs train the
candidate policies, then an experiment period in which every bucket (users assigned by a salted
hash) is served by its own policy through the batched ranking service. One learning schedule
(``learning``) applies to every bucket: ``frozen`` (the pre-period fit only), ``update`` (every
policy with an ``update`` method gets its own bucket's new logs every ``update_interval_s`` and
takes ``update_epochs`` passes over them) or ``refit`` (every policy is refit daily on the
pre-period plus its own bucket's logs), so that a comparison never mixes a policy's use of
questionnaires with an online learning that its control does not get. The run directory holds
the resolved config, the logs, per-bucket-per-day metrics, the lift analysis, ``report.md`` and
plots.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from simulator.atomic import atomic_write_text
from experiments.config import ExperimentConfig
from simulator.config import ConfigError, dump_toml
from simulator.logs import LogWriter, read_impressions, write_frame
from experiments.metrics import lift_table, metric_values, srm, submit_weights, user_sums
from simulator.platform import Bucket, Platform
from simulator.schema import ITEM_COLUMNS, USER_COLUMNS, LogData
from simulator.simulate import prepare_run_dir, seed_streams, write_status
from simulator.world import World

ANALYSIS_COLUMNS = ("day", "ts", "user_id", "session_id", "position", "bucket", "watch_time", "duration", "effective_view", "skip", "like",
                    "share", "comment", "follow", "dislike", "report", "survey_shown", "survey_type",
                    "survey_submitted", "survey_answer", "true_p_satisfied")


def policy_streams(streams: dict[str, np.random.SeedSequence], world_seed: int, policy_seed: int,
                   n: int) -> list[np.random.SeedSequence]:
    """One training stream per bucket: from the world seed's ``policy`` stream (``policy_seed`` 0,
    as before policy seeds existed), or from ``(world_seed, policy_seed)``: another training draw
    of the same policies on the same world."""
    root = streams["policy"] if policy_seed == 0 else np.random.SeedSequence([world_seed, policy_seed])
    return root.spawn(n)


def assign_buckets(n_users: int, shares: list[float], salt: str) -> np.ndarray:
    """Bucket index of every user from a salted hash, deterministic like a production splitter."""
    u = np.array([int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest(), "big")
                  for i in range(n_users)], dtype=np.float64) / 2.0 ** 64
    return np.searchsorted(np.cumsum(shares)[:-1], u, side="right")


class PlatformState:
    """Read-only view of the per-user state an oracle policy may read (never given to others)."""

    def __init__(self, platform: Platform):
        self._platform = platform

    @property
    def active(self) -> np.ndarray:
        return self._platform.active

    @property
    def fatigue(self) -> np.ndarray:
        return self._platform.fatigue


@dataclass
class ExperimentResult:
    run_dir: Path
    lifts: pd.DataFrame
    daily: pd.DataFrame
    daily_lifts: pd.DataFrame
    srm_p_value: float
    timings: dict[str, float]
    questionnaire_lifts: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Each questionnaire pair's treatment against its twin (``questionnaire_pairs``), every metric."""


def _observable(frame: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> LogData:
    return LogData(frame, items, users).observable()


def run_experiment(config: ExperimentConfig, out: str | Path, *, aa: bool = False, progress: bool = True,
                   overwrite: bool = False, report: bool = True) -> ExperimentResult:
    """Run a simulated A/B test (or, with ``aa``, an A/A test) and write its run directory."""
    import torch

    from policies import make_policy
    from policies.device import resolve_device
    if aa:
        config = config.as_aa()
    policies = {b.name: make_policy(b.policy, **b.params) for b in config.buckets}   # fail before writing
    for name, policy in policies.items():        # a GPU the machine lacks: fail before simulating too
        if hasattr(policy, "device"):
            resolve_device(policy.device, f"bucket {name!r} ({policy.name})")
    out = prepare_run_dir(Path(out), overwrite=overwrite)
    run = _Run(config, out, policies, aa=aa)
    write_status(out, "running", days_done=0, kind=run.kind)
    dump_toml(config, out / "config.toml")
    torch.set_num_threads(config.torch_threads)
    run.build()
    run.simulate(progress)
    return run.finish(report)


class _Run:
    """One A/B run, step by step: :meth:`build` the world, buckets and platform, :meth:`simulate`
    the days (the pre-period's end fits the policies and switches to the buckets), :meth:`finish`
    with the analysis and the report."""

    def __init__(self, config: ExperimentConfig, out: Path, policies: dict, *, aa: bool):
        self.config, self.out, self.policies, self.aa = config, out, policies, aa
        self.kind = "aa" if aa else "ab"
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {"simulate": 0.0, "train": 0.0, "update": 0.0}
        self.names = [b.name for b in config.buckets]
        self.last_day = config.ab.pre_days + config.ab.days - 1

    def build(self) -> None:
        from policies import make_policy
        config, out, world_cfg = self.config, self.out, self.config.world
        streams = seed_streams(world_cfg.seed)
        self.world = World.generate(world_cfg, np.random.default_rng(streams["world"]))
        self.items, self.users = self.world.catalog.table(), self.world.users.table()
        write_frame(self.items, out / "items.parquet", ITEM_COLUMNS)
        write_frame(self.users, out / "users.parquet", USER_COLUMNS)
        observable = LogData(pd.DataFrame(), self.items, self.users).observable()
        self.obs_items, self.obs_users = observable.items, observable.users
        self.assignment = assign_buckets(self.world.users.n_users, [b.share for b in config.buckets], config.salt)
        bucket_seeds = streams["buckets"].spawn(len(self.names) + 1)
        self.policy_rngs = [np.random.default_rng(s) for s in
                            policy_streams(streams, world_cfg.seed, config.policy_seed, len(self.names))]
        self.writer = LogWriter(out / "logs", ["pre"],
                                candidates_root=out / "candidates" if world_cfg.platform.log_candidates else None)
        production = make_policy("production", temperature=world_cfg.platform.temperature)
        production.fit(_observable(pd.DataFrame(), self.items, self.users), rng=np.random.default_rng(0))
        pre = Bucket.from_seed("pre", production, 0, bucket_seeds[0])
        self.buckets = [Bucket.from_seed(n, self.policies[n], i, bucket_seeds[i + 1]) for i, n in enumerate(self.names)]
        self.platform = Platform(self.world, [pre], np.zeros(self.world.users.n_users, dtype=np.int64), self.writer,
                                 streams["arrivals"], on_day_end=self.on_day_end)

    def simulate(self, progress: bool) -> None:
        self.day_started = time.perf_counter()
        with tqdm(total=self.last_day + 1, desc="A/A test" if self.aa else "A/B test", unit="day",
                  disable=not progress) as self.bar:
            try:
                self.platform.run(self.last_day + 1)
            except BaseException as err:
                write_status(self.out, "incomplete", reason=f"{type(err).__name__}: {err}",
                             note="this run directory is partial; rerun with --overwrite")
                raise

    def on_day_end(self, day: int) -> None:
        """The platform's day end: at the pre-period's end fit every policy and switch to the buckets;
        with ``learning = refit`` refit daily."""
        config = self.config
        self.timings["simulate"] += time.perf_counter() - self.day_started
        if day == config.ab.pre_days - 1:
            self.fit_all(day)
            self.start_buckets()
        elif config.ab.learning == "refit" and config.ab.pre_days <= day < self.last_day:
            self.fit_all(day)
        write_status(self.out, "running", days_done=day + 1, days_total=self.last_day + 1, kind=self.kind)
        self.bar.update(1)
        self.day_started = time.perf_counter()

    def start_buckets(self) -> None:
        """Serve each user from its bucket from now on; shadow scoring and online updates as configured."""
        config, platform = self.config, self.platform
        self.writer.bucket_names = self.names
        platform.set_buckets(self.buckets, self.assignment)
        if config.shadow:
            platform.set_shadow(config.control, {name: self.policies[name] for name in config.shadow})
        if config.ab.learning == "update":
            for b in self.buckets:
                if callable(getattr(b.policy, "update", None)):
                    platform.add_process(lambda env, b=b: self.online_updates(env, b))

    def fit_all(self, day: int) -> None:
        """Fit every bucket's policy: on the pre-period's logs, or (refit) on them plus its own bucket's."""
        t0, config = time.perf_counter(), self.config
        train = _observable(read_impressions(self.out / "logs", days=range(config.ab.pre_days)), self.items, self.users)
        for i, b in enumerate(config.buckets):
            policy = self.policies[b.name]
            if getattr(policy, "requires_world", False):
                policy.attach(self.world, PlatformState(self.platform))
            data = train if day < config.ab.pre_days else self.own_logs(b.name, day)
            self.bar.set_postfix_str(f"fitting {b.name} ({b.policy}) on {len(data):,} impressions")
            policy.fit(data, rng=self.policy_rngs[i])
        self.bar.set_postfix_str("")
        self.timings["train"] += time.perf_counter() - t0

    def own_logs(self, bucket: str, upto: int) -> LogData:
        """The pre-period's logs and the bucket's own experiment-day logs up to day ``upto``."""
        logs, pre_days = self.out / "logs", self.config.ab.pre_days
        pre_logs = read_impressions(logs, days=range(pre_days))
        mine = read_impressions(logs, days=range(pre_days, upto + 1), buckets=[bucket])
        return _observable(pd.concat([pre_logs, mine], ignore_index=True), self.items, self.users)

    def online_updates(self, env, bucket: Bucket):
        """A SimPy process: every ``update_interval_s`` the bucket's policy learns from its new logs."""
        while True:
            yield env.timeout(self.config.ab.update_interval_s)
            table = self.writer.take_new(bucket.index)
            if table is not None and table.num_rows:
                t0 = time.perf_counter()
                bucket.policy.update(_observable(table.to_pandas(), self.obs_items, self.obs_users),
                                     epochs=self.config.ab.update_epochs)
                self.timings["update"] += time.perf_counter() - t0

    def finish(self, report: bool) -> ExperimentResult:
        """The lift analysis, the report, the timings and the status."""
        out, timings = self.out, self.timings
        t0 = time.perf_counter()
        result = analyse(out, self.config, self.names, self.assignment, self.users, timings)
        timings["analyse"] = time.perf_counter() - t0
        if report:
            from experiments.report import write_report
            t0 = time.perf_counter()
            write_report(out, self.config, result, aa=self.aa)
            timings["report"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - self.started
        atomic_write_text(out / "timings.json", json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2))
        write_status(out, "complete", days_done=self.last_day + 1, kind=self.kind, seconds=round(timings["total"], 1))
        return result


def analyse(out: Path, config: ExperimentConfig, names: list[str], assignment: np.ndarray,
            users: pd.DataFrame, timings: dict[str, float]) -> ExperimentResult:
    """Per-bucket-per-day metrics, daily and overall lifts vs control, SRM; writes the CSVs."""
    days = list(config.ab.experiment_days)
    overall, by_day = _bucket_sums(out, config, names, assignment, users, daily=True)
    daily_rows, daily_lift_rows = [], []
    for d in days:
        sums = by_day[d]
        for n in names:
            daily_rows.append({"bucket": n, "day": d, **metric_values(sums[n])})
        table = lift_table(sums, config.control, alpha=config.ab.alpha, correction=config.ab.correction)
        table.insert(1, "day", d)
        daily_lift_rows.append(table)
    lifts = lift_table(overall, config.control, alpha=config.ab.alpha, correction=config.ab.correction)
    daily = pd.DataFrame(daily_rows)
    daily_lifts = pd.concat(daily_lift_rows, ignore_index=True)
    shares = {b.name: b.share for b in config.buckets}
    srm_result = srm({n: int((assignment == i).sum()) for i, n in enumerate(names)}, shares)
    overall_rows = pd.DataFrame([{"bucket": n, **metric_values(overall[n])} for n in names])
    pairs = questionnaire_lifts(overall, config)
    for name, frame in (("metrics.csv", daily), ("lifts.csv", lifts), ("daily_lifts.csv", daily_lifts),
                        ("metrics_overall.csv", overall_rows), ("questionnaire_lifts.csv", pairs)):
        if name != "questionnaire_lifts.csv" or len(pairs):
            atomic_write_text(out / name, frame.to_csv(index=False, float_format="%.10g"))
    return ExperimentResult(out, lifts, daily, daily_lifts, float(srm_result.p_value), timings, pairs)


def questionnaire_lifts(overall: dict[str, pd.DataFrame], config: ExperimentConfig) -> pd.DataFrame:
    """Each (treatment, twin) of ``config.questionnaire_pairs``: the treatment's lifts against its
    twin (two arms of one run are randomised against each other); p-values corrected over each
    pair's metrics."""
    tables = []
    for treatment, twin in config.questionnaire_pairs:
        table = lift_table({twin: overall[twin], treatment: overall[treatment]}, twin, alpha=config.ab.alpha,
                           correction=config.ab.correction)
        tables.append(table.assign(twin=twin))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _bucket_sums(out: Path, config: ExperimentConfig, names: list[str], assignment: np.ndarray,
                 users: pd.DataFrame, *, daily: bool) -> tuple[dict, dict]:
    """Per-user sums of every bucket over the experiment period (and, with ``daily``, per day)."""
    days = list(config.ab.experiment_days)
    logs = read_impressions(out / "logs", days=days, columns=ANALYSIS_COLUMNS)
    weights = submit_weights(logs, users)
    bucket_of = logs["bucket"].astype(str).to_numpy()
    members = {n: np.flatnonzero(assignment == i) for i, n in enumerate(names)}
    rows = {n: bucket_of == n for n in names}
    overall = {n: user_sums(logs[rows[n]], members[n], len(days), weights[rows[n]]) for n in names}
    by_day: dict[int, dict] = {}
    if daily:
        day_col = logs["day"].to_numpy()
        for d in days:
            sel = {n: rows[n] & (day_col == d) for n in names}
            by_day[d] = {n: user_sums(logs[sel[n]], members[n], 1, weights[sel[n]]) for n in names}
    return overall, by_day


def lifts_against(run_dir: str | Path, config: ExperimentConfig,
                  references: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``{reference: the overall lift table of every bucket of a finished run against it}``
    (``lifts.csv`` holds it against the control), from one read of the logs: every treatment arm
    is randomised against every other, so any two arms of one run make a valid A/B comparison."""
    names = [b.name for b in config.buckets]
    for reference in references:
        if reference not in names:
            raise ConfigError(f"reference={reference!r} is not a bucket; buckets: {', '.join(names)}")
    overall = bucket_sums(run_dir, config)
    return {r: lift_table(overall, r, alpha=config.ab.alpha, correction=config.ab.correction) for r in references}


def bucket_sums(run_dir: str | Path, config: ExperimentConfig) -> dict[str, pd.DataFrame]:
    """``{bucket: per-user sums over the experiment days}`` of a finished run, every assigned user
    (intent to treat), as its own analysis makes them (:func:`experiments.metrics.user_sums`)."""
    out = Path(run_dir)
    users = pd.read_parquet(out / "users.parquet")
    assignment = assign_buckets(len(users), [b.share for b in config.buckets], config.salt)
    overall, _ = _bucket_sums(out, config, [b.name for b in config.buckets], assignment, users, daily=False)
    return overall


def load_overall(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "metrics_overall.csv")

