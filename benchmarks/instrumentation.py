"""What the benchmarks share: child processes for clean memory figures, timed subclasses of the
platform and the log writer, and plain-text printing.

- :func:`in_child` runs a function in a fresh ``spawn`` child and joins it, so its peak RSS shows
  in ``getrusage(RUSAGE_CHILDREN)``. Each benchmark defines its own import-only ``_child_baseline``
  (an empty function of its module), so that the baseline child imports what the benchmark does.
- :class:`InstrumentedPlatform` times ``serve`` (and recall and the policy's ``score`` within it)
  and ``consume`` per phase and bucket, and marks the day ends; :class:`TimedLogWriter` times the
  daily Parquet flushes. A few ``perf_counter`` calls per serving call (well under 1%).
"""
from __future__ import annotations

import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from simulator.logs import LogWriter
from simulator.platform import Platform

KiB_PER_MiB = 1024


# ----------------------------------------------------------------------------- child processes
def peak_kib() -> int:
    """This process's own peak RSS so far, in KiB: ``VmHWM`` of ``/proc/self/status``, the
    high-water mark of its address space. Not ``getrusage(RUSAGE_SELF).ru_maxrss`` (the fallback
    off Linux): Linux keeps that across ``execve``, so a spawned child would report its parent's
    peak when the parent's is larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh ``spawn`` child process, wait for it, return its result.

    A fresh interpreter (not ``fork``), so the child does not start with the parent's pages; it is
    joined before this returns, so it counts in ``getrusage(RUSAGE_CHILDREN)``.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ----------------------------------------------------------------------------- timed simulator parts
class TimedLogWriter(LogWriter):
    """A :class:`LogWriter` that adds up the seconds of the daily flushes (Parquet writes), per day."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flush_seconds_by_day: dict[int, float] = {}

    @property
    def flush_seconds(self) -> float:
        return sum(self.flush_seconds_by_day.values())

    def flush_day(self, day, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().flush_day(day, *args, **kwargs)
        finally:
            self.flush_seconds_by_day[day] = self.flush_seconds_by_day.get(day, 0.0) + time.perf_counter() - started


@dataclass
class ServeStats:
    """Serving of one bucket in one phase (pre-period or experiment): its ``Platform.serve`` calls
    and its share of the ticks' joint ``Platform.consume`` (by its share of each tick's pages)."""
    phase: str
    bucket: str
    policy: str
    calls: int = 0
    requests: int = 0
    max_batch: int = 0
    serve: float = 0.0             # serve() calls + the share of consume()
    score: float = 0.0             # ... of which the policy's score()
    recall: float = 0.0            # ... of which recall
    consume: float = 0.0           # ... of which the share of consume()

    @property
    def overhead(self) -> float:
        """Serving minus the policy's score(): recall, RankBatch, checks, rank_page, consume() share."""
        return self.serve - self.score

    @property
    def rank(self) -> float:
        """The rest of serve(): RankBatch, shape / finiteness checks, rank_page, take_along_axis."""
        return self.serve - self.score - self.recall - self.consume


@dataclass
class DayMark:
    day: int
    enter: float                   # perf_counter when on_day_end(day) was entered (flush already done)
    exit: float                    # ... and when it returned (training, if any, included)
    rss_enter_kib: int
    rss_exit_kib: int


class _TimedRecall:
    """Wraps the platform's recall callable; its time goes to the bucket being served."""

    def __init__(self, recall, platform: InstrumentedPlatform):
        self._recall, self._platform = recall, platform

    def __getattr__(self, name):
        return getattr(self._recall, name)

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._recall(*args, **kwargs)
        finally:
            if self._platform.current is not None:
                self._platform.current.recall += time.perf_counter() - started


class InstrumentedPlatform(Platform):
    """A :class:`Platform` that times ``serve`` (and recall and score within it) and ``consume`` per
    bucket and phase, and marks the day ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recall = _TimedRecall(self.recall, self)
        self.phase = "pre"
        self.current: ServeStats | None = None
        self.stats: dict[tuple[str, str], ServeStats] = {}
        self.day_marks: list[DayMark] = []
        self.run_started = self.run_ended = 0.0
        self.rss_run_start_kib = self.rss_run_end_kib = 0
        inner = self.on_day_end

        def on_day_end(day: int) -> None:
            enter, rss = time.perf_counter(), peak_kib()
            try:
                if inner is not None:
                    inner(day)
            finally:
                self.day_marks.append(DayMark(day, enter, time.perf_counter(), rss, peak_kib()))
        self.on_day_end = on_day_end

    # totals over buckets and phases
    @property
    def serve_calls(self) -> int:
        return sum(s.calls for s in self.stats.values())

    @property
    def serve_requests(self) -> int:
        return sum(s.requests for s in self.stats.values())

    @property
    def consume_seconds(self) -> float:
        return sum(s.consume for s in self.stats.values())

    @property
    def serve_seconds(self) -> float:
        """The serve() calls alone (without the consume() shares)."""
        return sum(s.serve for s in self.stats.values()) - self.consume_seconds

    def set_buckets(self, buckets, assignment):
        self.phase = "experiment"
        return super().set_buckets(buckets, assignment)

    def run(self, *args, **kwargs):
        self.run_started, self.rss_run_start_kib = time.perf_counter(), peak_kib()
        try:
            return super().run(*args, **kwargs)
        finally:
            self.run_ended, self.rss_run_end_kib = time.perf_counter(), peak_kib()

    def _stats(self, bucket) -> ServeStats:
        key = (self.phase, bucket.name)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = ServeStats(self.phase, bucket.name, bucket.policy.name)
        return stats

    def serve(self, bucket, users, *args, **kwargs):
        stats = self._stats(bucket)
        policy = bucket.policy
        score_before = getattr(policy, "score_seconds", 0.0)
        self.current = stats
        started = time.perf_counter()
        try:
            return super().serve(bucket, users, *args, **kwargs)
        finally:
            stats.serve += time.perf_counter() - started
            stats.score += getattr(policy, "score_seconds", 0.0) - score_before
            stats.calls += 1
            stats.requests += len(users)
            stats.max_batch = max(stats.max_batch, len(users))
            self.current = None

    def consume(self, ranked, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().consume(ranked, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - started
            total = sum(len(r.users) for r in ranked)
            for r in ranked:           # each bucket's share of the tick's pages
                stats = self._stats(r.bucket)
                share = seconds * len(r.users) / max(total, 1)
                stats.consume += share
                stats.serve += share


# ----------------------------------------------------------------------------- printing
def print_lines(rows: list[tuple[str, float, str]], indent: int = 4) -> None:
    """Labelled seconds, one per line, with an optional note."""
    width = max(len(label) for label, _, _ in rows)
    for label, seconds, note in rows:
        print(f"{' ' * indent}{label:<{width}} {seconds:8.2f} s{'  ' + note if note else ''}")


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """A three-column plain-text table: metric, value, note."""
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'metric':<{w0}}  {'value':>{w1}}  note")
    print(f"{'-' * w0}  {'-' * w1}  ----")
    for metric, value, note in rows:
        print(f"{metric:<{w0}}  {value:>{w1}}  {note}".rstrip())
