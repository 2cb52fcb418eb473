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
    if aa:
        config = config.as_aa()
    policies = {b.name: make_policy(b.policy, **b.params) for b in config.buckets}   # fail before writing
    out = prepare_run_dir(Path(out), overwrite=overwrite)
    started = time.perf_counter()
    timings: dict[str, float] = {"simulate": 0.0, "train": 0.0, "update": 0.0}
    write_status(out, "running", days_done=0, kind="aa" if aa else "ab")
    dump_toml(config, out / "config.toml")
    torch.set_num_threads(config.torch_threads)

    world_cfg = config.world
    streams = seed_streams(world_cfg.seed)
    world = World.generate(world_cfg, np.random.default_rng(streams["world"]))
    items, users = world.catalog.table(), world.users.table()
    write_frame(items, out / "items.parquet", ITEM_COLUMNS)
    write_frame(users, out / "users.parquet", USER_COLUMNS)
    obs_items, obs_users = LogData(pd.DataFrame(), items, users).observable().items, \
        LogData(pd.DataFrame(), items, users).observable().users
    names = [b.name for b in config.buckets]
    b_policy = {b.name: b.policy for b in config.buckets}
    assignment = assign_buckets(world.users.n_users, [b.share for b in config.buckets], config.salt)
    bucket_seeds = streams["buckets"].spawn(len(names) + 1)
    policy_rngs = [np.random.default_rng(s) for s in policy_streams(streams, world_cfg.seed, config.policy_seed,
                                                                    len(names))]


    writer = LogWriter(out / "logs", ["pre"],
                       candidates_root=out / "candidates" if world_cfg.platform.log_candidates else None)
    production = make_policy("production", temperature=world_cfg.platform.temperature)
    production.fit(_observable(pd.DataFrame(), items, users), rng=np.random.default_rng(0))
    pre = Bucket.from_seed("pre", production, 0, bucket_seeds[0])
    buckets = [Bucket.from_seed(n, policies[n], i, bucket_seeds[i + 1]) for i, n in enumerate(names)]
    last_day = config.pre_days + config.days - 1
    clock = {"t": time.perf_counter()}

    def own_logs(bucket: str, upto: int) -> LogData:
        pre_logs = read_impressions(out / "logs", days=range(config.pre_days))
        mine = read_impressions(out / "logs", days=range(config.pre_days, upto + 1), buckets=[bucket])
        return _observable(pd.concat([pre_logs, mine], ignore_index=True), items, users)

    def fit_all(day: int) -> None:
        t0 = time.perf_counter()
        train = _observable(read_impressions(out / "logs", days=range(config.pre_days)), items, users)
        for i, name in enumerate(names):
            policy = policies[name]
            if getattr(policy, "requires_world", False):
                policy.attach(world, PlatformState(platform))
            data = train if day < config.pre_days else own_logs(name, day)
            bar.set_postfix_str(f"fitting {name} ({b_policy[name]}) on {len(data):,} impressions")
            policy.fit(data, rng=policy_rngs[i])
        bar.set_postfix_str("")
        timings["train"] += time.perf_counter() - t0

    def online_updates(env, bucket: Bucket):
        while True:
            yield env.timeout(config.update_interval_s)
            table = writer.take_new(bucket.index)
            if table is not None and table.num_rows:
                t0 = time.perf_counter()
                bucket.policy.update(_observable(table.to_pandas(), obs_items, obs_users), epochs=config.update_epochs)
                timings["update"] += time.perf_counter() - t0

    def on_day_end(day: int) -> None:
        timings["simulate"] += time.perf_counter() - clock["t"]
        if day == config.pre_days - 1:
            fit_all(day)
            writer.bucket_names = names
            platform.set_buckets(buckets, assignment)
            if config.shadow:
                platform.set_shadow(config.control, {name: policies[name] for name in config.shadow})
            if config.learning == "update":
                for b in buckets:
                    if callable(getattr(b.policy, "update", None)):
                        platform.add_process(lambda env, b=b: online_updates(env, b))
        elif config.learning == "refit" and config.pre_days <= day < last_day:
            fit_all(day)
        write_status(out, "running", days_done=day + 1, days_total=last_day + 1, kind="aa" if aa else "ab")
        bar.update(1)
        clock["t"] = time.perf_counter()

    platform = Platform(world, [pre], np.zeros(world.users.n_users, dtype=np.int64), writer,
                        streams["arrivals"], on_day_end=on_day_end)
    with tqdm(total=last_day + 1, desc="A/A test" if aa else "A/B test", unit="day", disable=not progress) as bar:
        try:
            platform.run(last_day + 1)
        except BaseException as err:
            write_status(out, "incomplete", reason=f"{type(err).__name__}: {err}",
                         note="this run directory is partial; rerun with --overwrite")
            raise

    t0 = time.perf_counter()
    result = analyse(out, config, names, assignment, users, timings)
    timings["analyse"] = time.perf_counter() - t0
    if report:
        from experiments.report import write_report
        t0 = time.perf_counter()
        write_report(out, config, result, aa=aa)
        timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    atomic_write_text(out / "timings.json", json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2))
    write_status(out, "complete", days_done=last_day + 1, kind="aa" if aa else "ab",
                 seconds=round(timings["total"], 1))
    return result


def analyse(out: Path, config: ExperimentConfig, names: list[str], assignment: np.ndarray,
            users: pd.DataFrame, timings: dict[str, float]) -> ExperimentResult:
    """Per-bucket-per-day metrics, daily and overall lifts vs control, SRM; writes the CSVs."""
    days = list(range(config.pre_days, config.pre_days + config.days))
    overall, by_day = _bucket_sums(out, config, names, assignment, users, daily=True)
    daily_rows, daily_lift_rows = [], []
    for d in days:
        sums = by_day[d]
        for n in names:
            daily_rows.append({"bucket": n, "day": d, **metric_values(sums[n])})
        table = lift_table(sums, config.control, alpha=config.alpha, correction=config.correction)
        table.insert(1, "day", d)
        daily_lift_rows.append(table)
    lifts = lift_table(overall, config.control, alpha=config.alpha, correction=config.correction)
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
        table = lift_table({twin: overall[twin], treatment: overall[treatment]}, twin, alpha=config.alpha,
                           correction=config.correction)
        tables.append(table.assign(twin=twin))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _bucket_sums(out: Path, config: ExperimentConfig, names: list[str], assignment: np.ndarray,
                 users: pd.DataFrame, *, daily: bool) -> tuple[dict, dict]:
    """Per-user sums of every bucket over the experiment period (and, with ``daily``, per day)."""
    days = list(range(config.pre_days, config.pre_days + config.days))
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
    return {r: lift_table(overall, r, alpha=config.alpha, correction=config.correction) for r in references}


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

