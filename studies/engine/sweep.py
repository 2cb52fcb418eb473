"""The sweep runner: a grid of (variant x seed) cells, run in a process pool, on Ray or in order.

A **cell** is one unit of work of a study: a cell function named ``"module:function"``, a
JSON-able ``params`` dict (the variant: a world config, a policy list, ...) and a ``seed``. The
function is called as ``fn(params, seed)`` and returns a list of rows (dicts of plain scalars);
it must derive all of its randomness from ``params`` and ``seed`` (e.g. the world seed *is* the
cell seed), so the same cell gives the same rows in any process, on any executor.

Every finished cell is written atomically to ``<out>/cells/<key>.json``, where the key hashes
the function, the params, the seed and the study's cache version, so:

- an interrupted sweep (Ctrl-C, a killed worker, a crashed machine) resumes where it stopped:
  the cells already on disk are read back, only the missing ones run;
- a cell shared by two variants of a grid (a one-at-a-time sweep's base setting) runs once;
- a cell that fails does not stop the others; the sweep raises :class:`CellError` at the end,
  naming the failed cells, with the finished ones cached.

The key covers the cell's inputs, not the code that computes it: after changing the simulator,
a policy or a cell function, bump the study's cache version (``Cell.version``) or run into a
fresh results directory, or the old cells are read back.

Executors (:func:`make_executor`):

- ``"pool"`` (default): a ``ProcessPoolExecutor`` with ``workers`` processes (2, the cores of
  the reference machine), started with ``spawn`` so that no worker inherits a parent's torch or
  OpenMP thread state;
- ``"ray"``: Ray tasks (``pip install 'satbed[ray]'``), on a local instance started with
  ``num_cpus=workers`` or on a running cluster (``address="auto"`` or ``"ray://host:10001"``;
  every node needs satbed installed); an instance already initialised by the caller is reused;
  a cell whose policy names a GPU (``device = "cuda"``) requests ``num_gpus=1``;
- ``"sequential"``: in this process, in order (debugging, profiling, tiny sweeps).

Every worker runs with one torch thread (``torch.set_num_threads(1)``), single-threaded BLAS
and the kernel pin of ``simulator.reproducibility`` (:func:`worker_env`), which is both the
fastest setting on a busy machine and what makes the results identical across executors and
machines (``tests/studies/test_sweep.py`` asserts equality).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from simulator.atomic import atomic_write_text
from simulator.config import ConfigError
from simulator.reproducibility import kernel_env

EXECUTORS = ("pool", "ray", "sequential")
DEFAULT_WORKERS = 2
CACHE_DIR = "cells"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class CellError(RuntimeError):
    """One or more cells of a sweep raised; the others are cached. The message names them."""


def _canonical(value: Any) -> Any:
    """The JSON form of ``value`` (tuples become lists), so that equal variants hash equally."""
    return json.loads(json.dumps(value, sort_keys=True))


@dataclass(frozen=True)
class Cell:
    """One (variant, seed) unit of a sweep.

    Attributes:
        fn: ``"module:function"`` of the cell function, ``fn(params, seed) -> list[dict]``.
        params: the variant, JSON-able (nested dicts, lists, scalars); part of the cache key.
        seed: the cell's seed; part of the cache key.
        labels: columns added to every row of the cell in the sweep's table (e.g. the knob and
            its value); *not* part of the key, so two labelled copies of a variant share a run.
        version: the study's cache version; bump it when a cell function's output changes.
    """
    fn: str
    params: Mapping[str, Any]
    seed: int
    labels: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        if ":" not in self.fn:
            raise ValueError(f"fn={self.fn!r} must be 'module:function'")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer >= 0")
        object.__setattr__(self, "params", _canonical(dict(self.params)))

    @property
    def identity(self) -> dict[str, Any]:
        return {"fn": self.fn, "params": self.params, "seed": self.seed, "version": self.version}

    @property
    def gpus(self) -> float:
        """GPUs the cell needs: :func:`cell_gpus` of its params."""
        return cell_gpus(self.params)

    @property
    def key(self) -> str:
        """Hex digest naming the cell's cache file (24 hex digits of a SHA-256)."""
        blob = json.dumps(self.identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cell_gpus(params: Any) -> float:
    """1 if some policy in ``params`` asks for a GPU by name (a ``device`` of ``"cuda"`` or
    ``"cuda:N"`` anywhere in the nested params), else 0. That is how a cell declares a GPU: the
    Ray executor then requests ``num_gpus=1`` for it, so Ray places it on a node with a free GPU
    and makes that GPU the cell's ``cuda``. ``"auto"`` declares none: such a cell uses a GPU where
    its node has one, without reserving it."""
    from policies.device import wants_gpu
    if isinstance(params, Mapping):
        if wants_gpu(params.get("device")):
            return 1.0
        return max((cell_gpus(v) for v in params.values()), default=0.0)
    if isinstance(params, (list, tuple)):
        return max((cell_gpus(v) for v in params), default=0.0)
    return 0.0


# ----------------------------------------------------------------------------- the worker side
def _plain(value: Any) -> Any:
    """Python scalars only (numpy scalars converted), so every executor returns the same JSON."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()                        # numpy scalar -> python
        return value if not isinstance(value, float) else float(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"cell rows must hold plain scalars, got {type(value).__name__}: {value!r}")


def execute(fn: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run one cell with one torch thread; never raises (a failure comes back as ``error``).

    Returns:
        ``{"rows": [...], "seconds": float, "cpu_seconds": float, "host": str, "pid": int}``, plus
        ``"error"`` (the
        formatted traceback) when the cell function raised.
    """
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    started, cpu = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        module, name = fn.split(":", 1)
        func = getattr(importlib.import_module(module), name)
        rows = func(params, seed)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError(f"cell function {fn} must return a list of dicts, got {type(rows).__name__}")
        out["rows"] = [{str(k): _plain(v) for k, v in r.items()} for r in rows]
    except Exception:                                   # reported by the runner, with the cell named
        out["error"] = traceback.format_exc()
    finally:
        torch.set_num_threads(previous)
    out["seconds"] = round(time.perf_counter() - started, 3)
    out["cpu_seconds"] = round(time.process_time() - cpu, 3)
    return out


Task = tuple[str, dict[str, Any], int]


class Executor(Protocol):
    name: str

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(index into tasks, execute(*task))`` as each task finishes."""
        ...


def worker_env() -> dict[str, str]:
    """The environment every worker starts with: single-threaded BLAS / OpenMP, and the kernel
    pin of ``simulator.reproducibility`` (this process's values where it has them), so that a
    cell gives the same numbers in any worker on any x86-64 machine."""
    kernels = {k: os.environ.get(k, v) for k, v in kernel_env().items()}
    return {**{k: "1" for k in THREAD_VARS}, **kernels}


@contextlib.contextmanager
def _worker_env_block() -> Iterator[None]:
    """Worker processes started inside this block get :func:`worker_env`."""
    env = worker_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class SequentialExecutor:
    """Cells one after another in this process."""
    name: str = field(default="sequential", init=False)

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, task in enumerate(tasks):
            yield i, execute(*task)


@dataclass
class PoolExecutor:
    """Cells in a local process pool.

    Args:
        workers: processes (default 2); never more than there are tasks.
        start_method: multiprocessing start method; ``spawn`` (default) starts clean
            interpreters, which costs a couple of seconds of imports per worker but is safe with
            torch and OpenMP, unlike ``fork`` after either has started threads.
    """
    workers: int = DEFAULT_WORKERS
    start_method: str = "spawn"
    name: str = field(default="pool", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers={self.workers!r} must be an integer >= 1")

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        if not tasks:
            return
        import multiprocessing
        ctx = multiprocessing.get_context(self.start_method)
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=ctx)
        try:
            with _worker_env_block():               # workers start during the submits
                futures = {pool.submit(execute, *t): i for i, t in enumerate(tasks)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in sorted(done, key=futures.get):
                    yield futures[f], f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RayExecutor:
    """Cells as Ray tasks, one CPU each, and one GPU for a cell that names one
    (:func:`cell_gpus`).

    Args:
        address: None starts a local instance with ``num_cpus=workers`` (shut down afterwards);
            ``"auto"`` or ``"ray://host:port"`` joins a running cluster. If Ray is already
            initialised in this process (e.g. ``ray.init(num_cpus=2)`` by the caller), that
            instance is used as is and left running.
        workers: CPUs of a local instance (default 2).
    """
    address: str | None = None
    workers: int = DEFAULT_WORKERS
    name: str = field(default="ray", init=False)

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        if not tasks:
            return
        ray = import_ray()
        owns = not ray.is_initialized()
        runtime_env = {"env_vars": worker_env()}
        if owns:
            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
            if self.address is None:
                kwargs["num_cpus"] = self.workers
            ray.init(address=self.address, **kwargs)
            remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        else:                                       # the caller's instance: the environment goes with the task
            remote = ray.remote(num_cpus=1, max_retries=0, runtime_env=runtime_env)(execute)
        refs = {(remote.options(num_gpus=gpus) if (gpus := cell_gpus(t[1])) else remote).remote(*t): i
                for i, t in enumerate(tasks)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield refs[ref], ray.get(ref)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if owns:
                ray.shutdown()


def import_ray():
    """``import ray``, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'satbed[ray]' "
                          "(or python -m pip install -c constraints.txt 'ray>=2.9')") from None
    return ray


def make_executor(name: str = "pool", *, workers: int = DEFAULT_WORKERS, address: str | None = None) -> Executor:
    """The executor called ``name`` (pool, ray or sequential)."""
    if name not in EXECUTORS:
        raise ConfigError(f"executor={name!r} must be one of {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise ConfigError(f"address={address!r} is only used with executor='ray', not {name!r}")
    if name == "pool":
        return PoolExecutor(workers=workers)
    if name == "ray":
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers={workers!r} must be an integer >= 1")
        return RayExecutor(address=address, workers=workers)
    return SequentialExecutor()


# ----------------------------------------------------------------------------- the runner
@dataclass
class SweepResult:
    """What :func:`run_sweep` returns.

    Attributes:
        table: one row per cell row, in cell order: the cell's labels, ``seed``, then the
            cell's own columns.
        computed: keys of the cells run by this call.
        cached: keys of the cells read from the cache.
        cell_seconds: seconds each cell took when it ran (cached cells: when they first ran).
        cell_cpu_seconds: CPU seconds of each cell's process while it ran (likewise).
        seconds: wall time of this call.
    """
    table: pd.DataFrame
    computed: list[str]
    cached: list[str]
    cell_seconds: dict[str, float]
    cell_cpu_seconds: dict[str, float]
    seconds: float


def cache_path(out: Path, key: str) -> Path:
    return Path(out) / CACHE_DIR / f"{key}.json"


def read_cached(out: Path, cell: Cell) -> dict[str, Any] | None:
    """The cached record of ``cell``, or None if absent, unreadable or for another cell."""
    path = cache_path(out, cell.key)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if record.get("cell") != cell.identity or "rows" not in record:
        return None
    return record


def run_sweep(cells: Sequence[Cell], out: str | Path, executor: Executor | None = None, *,
              progress: bool = True, desc: str = "cells",
              on_cell: Callable[[Cell, dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every cell not yet cached under ``out/cells/`` and return all cells' rows.

    Args:
        cells: the grid; cells with the same key run once.
        out: results directory (the cache is ``out/cells/<key>.json``).
        executor: default a 2-worker :class:`PoolExecutor`.
        progress: a tqdm bar over the cells to run.
        desc: the bar's label.
        on_cell: called as ``on_cell(cell, record)`` after each newly finished cell is written.

    Raises:
        CellError: some cells raised (after all the others finished and were cached).
    """
    from tqdm.auto import tqdm
    started = time.perf_counter()
    out = Path(out)
    executor = executor or PoolExecutor()
    unique: dict[str, Cell] = {}
    for c in cells:
        unique.setdefault(c.key, c)
    records: dict[str, dict[str, Any]] = {}
    for key, c in unique.items():
        record = read_cached(out, c)
        if record is not None:
            records[key] = record
    cached = list(records)
    todo = [k for k in unique if k not in records]
    failures: list[tuple[Cell, str]] = []
    tasks = [(unique[k].fn, dict(unique[k].params), unique[k].seed) for k in todo]
    with tqdm(total=len(todo), desc=desc, unit="cell", disable=not progress or not todo) as bar:
        for i, result in executor.run(tasks):
            c = unique[todo[i]]
            bar.update(1)
            if "error" in result:
                failures.append((c, result["error"]))
                continue
            record = {"cell": c.identity, "rows": result["rows"], "seconds": result["seconds"],
                      "cpu_seconds": result["cpu_seconds"],
                      "host": result["host"], "pid": result["pid"], "executor": executor.name,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_text(cache_path(out, c.key), json.dumps(record, indent=1) + "\n")
            records[c.key] = record
            if on_cell is not None:
                on_cell(c, record)
    if failures:
        first_cell, first_error = failures[0]
        names = "; ".join(f"{dict(c.labels)} seed={c.seed}" for c, _ in failures[:5])
        raise CellError(f"{len(failures)} of {len(todo)} cells failed ({names}"
                        f"{'; ...' if len(failures) > 5 else ''}); the {len(records)} finished cells are "
                        f"cached in {out / CACHE_DIR} and a rerun resumes from them. First error, in cell "
                        f"{dict(first_cell.labels)} seed={first_cell.seed}:\n{first_error}")
    rows = []
    for c in cells:
        for r in records[c.key]["rows"]:
            clash = ({"seed", *c.labels} & set(r))
            if clash:
                raise ValueError(f"cell {c.fn} returned column(s) {sorted(clash)} that clash with the cell's "
                                 "labels or 'seed'; rename them")
            rows.append({**c.labels, "seed": c.seed, **r})
    return SweepResult(table=pd.DataFrame(rows), computed=[unique[k].key for k in todo if k in records],
                       cached=cached, cell_seconds={k: float(r["seconds"]) for k, r in records.items()},
                       cell_cpu_seconds={k: float(r.get("cpu_seconds", float("nan"))) for k, r in records.items()},
                       seconds=time.perf_counter() - started)


def cells_per_minute(n_cells: int, seconds: float) -> float:
    return math.inf if seconds <= 0 else 60.0 * n_cells / seconds
