"""Impression logs: columnar buffers, Parquet partitions by day and bucket, validated reads.

Layout of a log directory (``candidates/`` is laid out the same way)::

    logs/day-0003/bucket-control/part-0000.parquet

Each file holds every column of :data:`simulator.schema.IMPRESSION_SCHEMA` (``day`` and
``bucket`` included, so a file read on its own is complete). The directory names are not
hive-style ``key=value`` on purpose: the columns inside the files are the only ``day`` and
``bucket``, so ``pandas.read_parquet(logs)``, ``pyarrow.dataset.dataset(logs, partitioning="hive")``,
Polars and DuckDB read the whole directory with no partitioning arguments and get the schema's
types (``day`` int16, ``bucket`` dictionary; a ``day=0003`` directory would add a second,
int32 or string ``day`` that pyarrow refuses to merge with the int16 column). Directories written
before this layout (``day=0003/bucket=control``) are still read by :func:`log_files`.

Files are written atomically; reading validates every file against the schema and names any
missing or mistyped column, and any file that is not readable Parquet.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.atomic import atomic_path
from simulator.schema import (CANDIDATE_COLUMNS, CANDIDATE_SCHEMA, CATEGORIES, IMPRESSION_COLUMNS, IMPRESSION_SCHEMA, ITEM_COLUMNS, USER_COLUMNS,
                              Column, LogData, SchemaError, validate_schema)

COMPRESSION = "zstd"
_KEEP = "__keep__"


def _partition_dir(root: Path, day: int, bucket: str) -> Path:
    return root / f"day-{day:04d}" / f"bucket-{bucket}"


# the hive-style directory names written before (``day=0003/bucket=control``): still read
_LEGACY_SEP = "="


def columns_to_table(columns: dict[str, np.ndarray], *, bucket: str, policy: str) -> pa.Table:
    """Build an Arrow table of the impression schema from plain arrays.

    Categorical columns come as int codes (-1 = null) into :data:`CATEGORIES`; ``propensity`` NaN
    becomes null; ``bucket`` and ``policy`` are constants of the chunk.
    """
    n = len(columns["day"])
    arrays = []
    for field in IMPRESSION_SCHEMA:
        name, tp = field.name, field.type
        if name in ("bucket", "policy"):
            value = bucket if name == "bucket" else policy
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int16)), pa.array([value])))
        elif name in CATEGORIES:
            codes = np.asarray(columns[name])
            arrays.append(pa.DictionaryArray.from_arrays(
                pa.array(codes.astype(np.int8), mask=codes < 0), pa.array(list(CATEGORIES[name]))))
        else:
            values = np.asarray(columns[name]).astype(tp.to_pandas_dtype())
            mask = np.isnan(values) if field.nullable and values.dtype.kind == "f" else None
            arrays.append(pa.array(values, type=tp, mask=mask))
    return pa.Table.from_arrays(arrays, schema=IMPRESSION_SCHEMA)


class LogWriter:
    """Buffers impression columns per bucket and writes one Parquet file per (day, bucket)."""

    def __init__(self, root: str | Path, bucket_names: Sequence[str], *, candidates_root: str | Path | None = None):
        self.root = Path(root)
        self.candidates_root = Path(candidates_root) if candidates_root is not None else None
        self._candidates: dict[int, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.bucket_names = list(bucket_names)   # may be replaced between days (A/B runner)
        self._chunks: dict[tuple[int, str], list[dict[str, np.ndarray]]] = defaultdict(list)
        self.rows_written = 0
        self.files: list[Path] = []
        self._taken: dict[tuple[int, str], int] = {}
        # rows of buckets with an online reader that were flushed before it took them
        self._untaken: dict[tuple[int, str], list[dict[str, np.ndarray]]] = defaultdict(list)
        self._online: set[int] = set()

    def append(self, bucket: int, policy: str, keep: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Buffer a chunk of rows; only rows where ``keep`` is true are written (masked in bulk later)."""
        if keep.any():
            self._chunks[(bucket, policy)].append({**columns, _KEEP: keep})

    def append_candidates(self, bucket: int, policy: str, columns: dict[str, np.ndarray]) -> None:
        """Buffer one row per request: its candidates and the logging policy's scores (a
        ``candidates_root`` is needed)."""
        if self.candidates_root is None:
            raise ValueError("this LogWriter has no candidates_root: construct it with one to log candidates")
        self._candidates[bucket].append({**columns, "policy": np.full(len(columns["day"]), policy, dtype=object)})

    def take_new(self, bucket: int) -> pa.Table | None:
        """Rows of ``bucket`` appended since the previous call (still written at the day's flush).

        For online learners: the A/B runner turns them into observable LogData for ``update()``.
        Rows that a day's flush wrote before they were taken (the last hour of a day: the
        midnight flush runs before that hour's update) come with the next call, so an online
        learner sees every row of its bucket exactly once, in order.
        """
        self._online.add(bucket)
        out = []
        for key in dict.fromkeys([*self._untaken, *self._chunks]):
            b, policy = key
            if b != bucket:
                continue
            parts = self._chunks.get(key, [])
            new = self._untaken.pop(key, []) + parts[self._taken.get(key, 0):]
            self._taken[key] = len(parts)
            if new:
                keep = np.concatenate([p[_KEEP] for p in new])
                merged = {k: np.concatenate([p[k] for p in new])[keep] for k in new[0] if k != _KEEP}
                out.append(columns_to_table(merged, bucket=self.bucket_names[b], policy=policy))
        return pa.concat_tables(out) if out else None

    def flush_day(self, day: int) -> None:
        """Write everything buffered (all rows of ``day``) and clear the buffers."""
        chunks, self._chunks = self._chunks, defaultdict(list)
        for key, parts in chunks.items():       # keep what an online reader has not taken yet
            rest = parts[self._taken.get(key, 0):]
            if key[0] in self._online and rest:
                self._untaken[key].extend(rest)
        self._taken = {}
        by_bucket: dict[int, list[pa.Table]] = defaultdict(list)
        for (bucket, policy), parts in sorted(chunks.items()):
            keep = np.concatenate([p[_KEEP] for p in parts])
            merged = {k: np.concatenate([p[k] for p in parts])[keep] for k in parts[0] if k != _KEEP}
            by_bucket[bucket].append(columns_to_table(merged, bucket=self.bucket_names[bucket], policy=policy))
        for bucket, tables in sorted(by_bucket.items()):
            table = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
            table = table.sort_by([("ts", "ascending"), ("request_id", "ascending"), ("position", "ascending")])
            path = _partition_dir(self.root, day, self.bucket_names[bucket]) / "part-0000.parquet"
            write_parquet(table, path)
            self.rows_written += table.num_rows
            self.files.append(path)
        candidates, self._candidates = self._candidates, defaultdict(list)
        for bucket, parts in sorted(candidates.items()):
            path = _partition_dir(self.candidates_root, day, self.bucket_names[bucket]) / "part-0000.parquet"
            write_parquet(candidates_table(parts, bucket=self.bucket_names[bucket]), path)
            self.files.append(path)


def candidates_table(parts: Sequence[dict[str, np.ndarray]], *, bucket: str) -> pa.Table:
    """Arrow table of the candidate schema from buffered chunks (each (n,) columns and (n, C) lists);
    ``bucket`` is a constant of the chunk."""
    targets = [name for name in parts[0] if name.startswith("target_")]
    schema = pa.schema([*CANDIDATE_SCHEMA, *(pa.field(name, pa.list_(pa.float64())) for name in targets)])
    arrays = []
    for field in schema:
        if field.name == "bucket":
            arrays.append(pa.array([bucket] * sum(len(p["day"]) for p in parts), type=field.type))
            continue
        values = np.concatenate([p[field.name] for p in parts])
        if pa.types.is_list(field.type):
            n, c = values.shape
            flat = pa.array(values.ravel().astype(field.type.value_type.to_pandas_dtype()), type=field.type.value_type)
            arrays.append(pa.ListArray.from_arrays(pa.array(np.arange(0, n * c + 1, c, dtype=np.int32)), flat))
        elif pa.types.is_string(field.type):
            arrays.append(pa.array(values.tolist(), type=field.type))
        else:
            arrays.append(pa.array(values.astype(field.type.to_pandas_dtype()), type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema).sort_by([("request_id", "ascending")])


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write a table atomically: a failed write leaves no partial file at ``path``."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=COMPRESSION)


def log_files(root: str | Path, *, days: Sequence[int] | None = None,
              buckets: Sequence[str] | None = None) -> list[Path]:
    """The Parquet files under a ``logs/`` or ``candidates/`` directory, by day then bucket.

    Reads both ``day-DDDD/bucket-NAME/`` and the older hive-style ``day=DDDD/bucket=NAME/``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"log directory {root} does not exist")
    keyed = []
    for sep in ("-", _LEGACY_SEP):
        for f in root.glob(f"day{sep}*/bucket{sep}*/*.parquet"):
            keyed.append(((_day_key(f), _bucket_of(f), f.name), f))
    keyed.sort(key=lambda kf: kf[0])     # as sorted(paths) orders one layout (partwise): the order read so far
    files = [f for _, f in keyed]
    if days is not None:
        wanted = {f"{d:04d}" for d in days}
        files = [f for f in files if _day_key(f) in wanted]
    if buckets is not None:
        wanted = set(buckets)
        files = [f for f in files if _bucket_of(f) in wanted]
    return files


def partition_of(file: str | Path) -> tuple[int, str]:
    """The (day, bucket) of a log or candidates file, from its directories (either layout)."""
    file = Path(file)
    return int(_day_key(file)), _bucket_of(file)


def _day_key(file: Path) -> str:
    return file.parent.parent.name[len("day-"):]


def _bucket_of(file: Path) -> str:
    return file.parent.name[len("bucket-"):]


def _read_checked(path: Path, expected: Sequence[Column], *, where: str, columns: Sequence[str] | None = None,
                  require_oracle: bool = True) -> pa.Table:
    """Read one Parquet file validated against ``expected``; every failure names the file."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise SchemaError(f"{where} is not a readable Parquet file: {str(err).strip()}") from err
    validate_schema(schema, tuple(expected), where=where, require_oracle=require_oracle)
    unknown = [c for c in columns or () if c not in schema.names]
    if unknown:
        raise SchemaError(f"{where} has no column(s) {', '.join(repr(c) for c in unknown)}")
    try:
        return pq.read_table(path, columns=list(columns) if columns else None)
    except (pa.ArrowException, OSError) as err:       # a damaged data page: the footer read fine
        raise SchemaError(f"{where} is not a readable Parquet file (corrupt data): {str(err).strip()}") from err


def read_impressions(root: str | Path, *, days: Sequence[int] | None = None,
                     buckets: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                     require_oracle: bool = True) -> pd.DataFrame:
    """Read impression logs (all or some days / buckets), validating every file against the schema.

    Args:
        root: the ``logs`` directory of a run.
        columns: subset of columns to return (all by default).
        require_oracle: if False, files without the ``true_*`` columns are accepted.
    Raises:
        SchemaError: a file lacks a column or has one of the wrong type, or is not readable
            Parquet (truncated, corrupt); the message names the file and the column.
    """
    files = log_files(root, days=days, buckets=buckets)
    if not files:
        raise FileNotFoundError(f"no log files under {root}" + (f" for days {list(days)}" if days else "")
                                + (f" and buckets {list(buckets)}" if buckets else ""))
    tables = [_read_checked(f, IMPRESSION_COLUMNS, where=f"log file {f}", columns=columns,
                            require_oracle=require_oracle) for f in files]
    table = pa.concat_tables(tables, promote_options="permissive")
    frame = table.to_pandas()
    for name in ("bucket", "policy", *CATEGORIES):
        if name in frame and not isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype("category")
    return frame


def read_candidates(run_dir: str | Path, *, days: Sequence[int] | None = None,
                    buckets: Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """A run's logged candidates (``platform.log_candidates``), sorted by request.

    Returns:
        (requests, candidates, scores): one row per request (``day``, ``ts``, ``user_id``,
        ``request_id``, ``policy``, ``temperature``, ``bucket``), its (n, C) candidate item ids, and
        a dict of (n, C) scores: ``"logging"`` (the logging policy's) and each shadow target's by
        its name (:meth:`simulator.platform.Platform.set_shadow`).
    Raises:
        FileNotFoundError: the run has no ``candidates/`` (it ran without ``log_candidates``).
        SchemaError: a file lacks a column or has one of the wrong type.
    """
    root = Path(run_dir) / "candidates"
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir} has no candidates/ directory: simulate with "
                                "platform.log_candidates = true to log each request's candidates")
    tables = []
    for f in log_files(root, days=days, buckets=buckets):
        legacy = f.parent.name.startswith(f"bucket{_LEGACY_SEP}")    # written before bucket was a column
        expected = [c for c in CANDIDATE_COLUMNS if not (legacy and c.name == "bucket")]
        table = _read_checked(f, expected, where=f"candidates file {f}")
        if "bucket" not in table.column_names:
            table = table.append_column("bucket", pa.array([_bucket_of(f)] * table.num_rows, pa.string()))
        tables.append(table)
    if not tables:
        raise FileNotFoundError(f"no candidates files under {root}")
    table = pa.concat_tables(tables, promote_options="permissive").sort_by([("request_id", "ascending")])
    table = table.select([*(n for n in table.column_names if n != "bucket"), "bucket"])   # bucket last
    partial = [n for n in table.column_names if n.startswith("target_") and table.column(n).null_count]
    if partial:
        raise ValueError(f"shadow target scores {', '.join(partial)} were logged for some buckets only; "
                         "read the bucket that has them (buckets=[...])")
    lists = {}
    names = [n for n in table.column_names if n in ("candidates", "scores") or n.startswith("target_")]
    for name in names:
        col = table.column(name).combine_chunks()
        lists[name] = col.flatten().to_numpy().reshape(len(col), -1)
    requests = table.drop_columns(names).to_pandas()
    scores = {"logging": lists["scores"], **{n[len("target_"):]: lists[n] for n in names if n.startswith("target_")}}
    return requests, lists["candidates"], scores


def write_frame(frame: pd.DataFrame, path: str | Path, columns: tuple[Column, ...]) -> None:
    """Write an item or user table with its schema, atomically (an optional column only if ``frame`` has it)."""
    columns = tuple(c for c in columns if not (c.optional and c.name not in frame.columns))
    schema = pa.schema([pa.field(c.name, c.type) for c in columns])
    write_parquet(pa.Table.from_pandas(frame[[c.name for c in columns]], schema=schema,
                                       preserve_index=False), path)


def read_frame(path: str | Path, columns: tuple[Column, ...], *, require_oracle: bool = True) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table {path} does not exist")
    return _read_checked(path, columns, where=f"table {path}", require_oracle=require_oracle).to_pandas()


def read_run(run_dir: str | Path, **kwargs) -> LogData:
    """Read a run directory's logs and its item and user tables (with oracle columns)."""
    run_dir = Path(run_dir)
    return LogData(read_impressions(run_dir / "logs", **kwargs),
                   read_frame(run_dir / "items.parquet", ITEM_COLUMNS),
                   read_frame(run_dir / "users.parquet", USER_COLUMNS))
