"""A simulation run: generate a world, serve it with one policy, and write a run directory.

A run directory holds::

    config.toml        the resolved config (reproduces the run with its seed)
    items.parquet      item table (observable columns and hidden true_* traits)
    users.parquet      user table (observable columns and hidden true_* traits)
    logs/              impressions, partitioned by day and bucket
    summary.json/.md   the headline figures
    summary.png        activity, feedback rates, the questionnaire funnel and response bias by day
    status.json        {"state": "complete"} once everything above is written
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from simulator.atomic import atomic_write_text
from simulator.config import SimConfig, dump_toml
from simulator.logs import LogWriter, read_impressions, write_frame
from simulator.platform import Bucket, Platform
from simulator.plots import plot_simulation
from simulator.schema import ITEM_COLUMNS, NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK, USER_COLUMNS, LogData
from simulator.world import World

STREAMS = ("world", "arrivals", "policy", "buckets")
SUMMARY_COLUMNS = ("day", "user_id", "session_id", "watch_time", "effective_view", "skip", "like", "share",
                   "comment", "follow", "dislike", "report", "survey_shown", "survey_type",
                   "survey_submitted", "survey_answer", "true_p_satisfied")


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """Independent seed sequences for the parts of a run, all derived from the run seed."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))


class RunDirectoryError(FileExistsError):
    pass


def prepare_run_dir(out: Path, *, overwrite: bool) -> Path:
    """Create ``out``; refuse to mix a new run into a directory that already holds one."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirectoryError(f"run directory {out} already exists and is not empty; "
                                    "choose another --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_status(out: Path, state: str, **extra: Any) -> None:
    atomic_write_text(out / "status.json", json.dumps({"state": state, **extra}, indent=2) + "\n")


@dataclass(frozen=True)
class SimulationResult:
    run_dir: Path
    summary: dict[str, float]
    seconds: float


def run_simulation(config: SimConfig, out: str | Path, policy: Any, *, progress: bool = True,
                   overwrite: bool = False) -> SimulationResult:
    """Simulate ``config.platform.days`` days of the world served by ``policy``.

    ``policy`` is any object of the policy protocol (``fit``, ``score``), the one that
    ``config.platform.policy`` names; :func:`experiments.simulate.simulate` builds it from the name.
    The simulator calls it only through the protocol.
    """
    out = prepare_run_dir(Path(out), overwrite=overwrite)
    started = time.perf_counter()
    write_status(out, "running")
    dump_toml(config, out / "config.toml")
    world = generate_world(config)
    write_frame(world.catalog.table(), out / "items.parquet", ITEM_COLUMNS)
    write_frame(world.users.table(), out / "users.parquet", USER_COLUMNS)
    serve_world(world, policy, out, progress=progress)
    logs = read_impressions(out / "logs", columns=SUMMARY_COLUMNS)
    summary = summarize(logs, n_users=world.users.n_users)
    seconds = time.perf_counter() - started
    summary["seconds"] = round(seconds, 2)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", format_summary(summary, out) + "\n![summary](summary.png)\n")
    plot_simulation(logs, out / "summary.png")
    write_status(out, "complete", seconds=round(seconds, 2))
    return SimulationResult(out, summary, seconds)


def generate_world(config: SimConfig) -> World:
    """The world of ``config``: its catalog and users, drawn from the run seed's world stream."""
    return World.generate(config, np.random.default_rng(seed_streams(config.seed)["world"]))


def serve_world(world: World, policy: Any, out: Path, *, progress: bool = True) -> None:
    """Fit ``policy`` on the world's empty log and serve the world with it for ``platform.days`` days.

    The impressions go to ``out/logs`` (and, with ``platform.log_candidates``, the candidates to
    ``out/candidates``). Every draw comes from the streams of ``world.config.seed``.
    """
    config = world.config
    streams = seed_streams(config.seed)
    empty = LogData(pd.DataFrame(), world.catalog.table(), world.users.table()).observable()
    policy.fit(empty, rng=np.random.default_rng(streams["policy"]))
    writer = LogWriter(out / "logs", ["all"],
                       candidates_root=out / "candidates" if config.platform.log_candidates else None)
    bucket = Bucket.from_seed("all", policy, 0, streams["buckets"])
    platform = Platform(world, [bucket], np.zeros(world.users.n_users, dtype=np.int64), writer,
                        streams["arrivals"])
    days = config.platform.days
    with tqdm(total=days, desc="simulating", unit="day", disable=not progress) as bar:
        platform.run(days, progress=lambda day: bar.update(1))


def summarize(logs: pd.DataFrame, *, n_users: int) -> dict[str, float]:
    """Headline figures of a log: volumes, view rates, feedback and questionnaire rates."""
    n = len(logs)
    ev, sk = int(logs["effective_view"].sum()), int(logs["skip"].sum())
    pos = int(sum(logs[c].sum() for c in POSITIVE_FEEDBACK))
    neg = int(sum(logs[c].sum() for c in NEGATIVE_FEEDBACK))
    shown, answered = int(logs["survey_shown"].sum()), int(logs["survey_submitted"].sum())
    answers = logs["survey_answer"].value_counts()
    likes, dislikes = int(answers.get("like", 0)), int(answers.get("dislike", 0))
    sat_shown = logs["survey_shown"] & (logs["survey_type"] == "satisfaction")
    daily_users = logs.groupby("day")["user_id"].nunique()
    return {
        "impressions": n,
        "users": n_users,
        "daily_active_users": float(daily_users.mean()),
        "sessions": int(logs["session_id"].nunique()),
        "days": int(logs["day"].nunique()),
        "effective_view_rate": ev / n,
        "skip_rate": sk / n,
        "effective_views_per_skip": ev / max(sk, 1),
        "avg_video_watch_time_s": float(logs["watch_time"].mean()),
        "avg_user_watch_time_s_per_day": float(logs["watch_time"].sum() / daily_users.sum()),
        "like_rate": float(logs["like"].mean()),
        "dislike_rate": float(logs["dislike"].mean()),
        "report_rate": float(logs["report"].mean()),
        "skips_per_active_negative": sk / max(int(logs["dislike"].sum() + logs["report"].sum()), 1),
        "p2n": pos / max(neg, 1),
        "questionnaires_shown": shown,
        "questionnaires_answered": answered,
        "answered_per_effective_view": answered / max(ev, 1),
        "submit_rate": answered / max(shown, 1),
        "survey_like_to_dislike": likes / max(dislikes, 1),
        "survey_like_rate": likes / max(int(logs["survey_submitted"][sat_shown].sum()), 1),
        "oracle_satisfaction": float(logs["true_p_satisfied"].mean()),
        "oracle_satisfaction_surveyed": float(logs.loc[sat_shown, "true_p_satisfied"].mean()),
    }


_SUMMARY_LINES = (
    ("impressions", "impressions", "{:,.0f}"),
    ("users", "users (daily active: {daily_active_users:,.0f})", "{:,.0f}"),
    ("sessions", "sessions", "{:,.0f}"),
    ("effective_view_rate", "effective-view rate (watched >= half)", "{:.1%}"),
    ("skip_rate", "skip rate (< 3 s)", "{:.1%}"),
    ("effective_views_per_skip", "effective views per skip (SINE: 2.4)", "{:.2f}"),
    ("avg_video_watch_time_s", "average video watch time", "{:.1f} s"),
    ("avg_user_watch_time_s_per_day", "average user watch time per active day", "{:.0f} s"),
    ("like_rate", "like rate", "{:.2%}"),
    ("skips_per_active_negative", "skips per dislike+report", "{:.0f}"),
    ("p2n", "positive-to-negative feedback ratio (P2N)", "{:.1f}"),
    ("questionnaires_shown", "questionnaires shown", "{:,.0f}"),
    ("questionnaires_answered", "questionnaires answered", "{:,.0f}"),
    ("answered_per_effective_view", "answered per effective view (SAQRec: ~1%)", "{:.2%}"),
    ("survey_like_to_dislike", "survey like : dislike (SAQRec: 2.5)", "{:.2f}"),
    ("survey_like_rate", "survey like rate among respondents (naive)", "{:.1%}"),
    ("oracle_satisfaction_surveyed", "oracle satisfaction of surveyed impressions", "{:.1%}"),
)


def format_summary(summary: dict[str, float], run_dir: Path | None = None) -> str:
    """A one-screen markdown summary."""
    lines = ["# Simulation summary", ""]
    if run_dir is not None:
        lines += [f"Run directory: `{run_dir}` ({summary.get('days', 0)} days, "
                  f"{summary.get('seconds', 0):.0f} s)", ""]
    lines += ["| figure | value |", "|---|---|"]
    for key, label, fmt in _SUMMARY_LINES:
        lines.append(f"| {label.format(**summary)} | {fmt.format(summary[key])} |")
    lines += ["", "The naive survey like rate differs from the oracle satisfaction of surveyed impressions "
              "because satisfied users answer more often (response bias)."]
    return "\n".join(lines) + "\n"
