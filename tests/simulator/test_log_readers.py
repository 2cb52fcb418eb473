"""A run's ``logs/`` and ``candidates/`` read as a whole by pandas, pyarrow, Polars and DuckDB with
no partitioning arguments: the same rows as satbed's readers, ``day`` int16 and ``bucket`` as the
schema says. Damaged files are named in the error; the older ``day=D/bucket=B`` layout still reads."""
from __future__ import annotations

import shutil
import struct

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from simulator.logs import LogWriter, log_files, read_candidates, read_impressions, read_run
from simulator.schema import CANDIDATE_SCHEMA, IMPRESSION_COLUMNS, IMPRESSION_SCHEMA, SchemaError
from experiments.simulate import simulate
from tests_support import tiny

KEY = ["request_id", "position"]                    # one impression
SOME = ["day", "bucket", "request_id", "position", "item_id", "watch_time", "survey_answer"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Two days of a small world, candidates logged (about 10 s)."""
    out = tmp_path_factory.mktemp("readers") / "run"
    simulate(tiny(n_users=100, n_items=500, platform={"log_candidates": True}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def ab_logs(tmp_path_factory):
    """Hand-made logs of three buckets over two days (each bucket's file has its own dictionary)."""
    root = tmp_path_factory.mktemp("ab")
    writer = LogWriter(root / "logs", ["control", "treat", "pre"], candidates_root=root / "candidates")
    rng = np.random.default_rng(0)
    request = 0
    for day in (0, 1):
        for bucket in ((2,) if day == 0 else (0, 1)):
            n = 6
            cols = {c.name: rng.random(n) for c in IMPRESSION_COLUMNS}
            cols.update(day=np.full(n, day), ts=day * 86400.0 + np.arange(n), request_id=request + np.arange(n) // 2,
                        position=np.arange(n) % 2, item_id=rng.integers(0, 50, n),
                        survey_type=np.full(n, -1), survey_answer=np.full(n, -1), survey_reasons=np.full(n, -1))
            writer.append(bucket, "random", np.ones(n, bool), cols)
            r = n // 2
            writer.append_candidates(bucket, "random", {
                "day": np.full(r, day), "ts": day * 86400.0 + np.arange(r), "user_id": np.arange(r),
                "request_id": request + np.arange(r), "temperature": np.ones(r),
                "candidates": rng.integers(0, 50, (r, 4)), "scores": rng.random((r, 4))})
            request += r
        writer.flush_day(day)
    return root


def _pandas(path):
    return pd.read_parquet(path)


def _pyarrow(path):
    return ds.dataset(path, partitioning="hive").to_table().to_pandas()


def _polars_glob(path):
    return pl.scan_parquet(f"{path}/**/*.parquet", hive_partitioning=True).collect().to_pandas()


def _polars_dir(path):
    return pl.scan_parquet(path).collect().to_pandas()


def _duckdb(path):
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}/**/*.parquet', hive_partitioning = true)").df()


READERS = {"pandas": _pandas, "pyarrow": _pyarrow, "polars": _polars_glob, "polars_dir": _polars_dir,
           "duckdb": _duckdb}


def _sorted(frame, key):
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def _same_values(got, want, columns):
    for name in columns:
        a, b = got[name], want[name]
        if isinstance(b.dtype, pd.CategoricalDtype) or b.dtype == object or pd.api.types.is_string_dtype(b):
            a, b = a.astype(object).where(a.notna(), None), b.astype(object).where(b.notna(), None)
            assert a.tolist() == b.tolist(), name
        else:
            np.testing.assert_array_equal(a.to_numpy(), b.to_numpy(), err_msg=name)


def test_the_layout_has_no_hive_keys_that_clash_with_columns(run_dir):
    for sub in ("logs", "candidates"):
        files = [p.relative_to(run_dir / sub).as_posix() for p in log_files(run_dir / sub)]
        assert files == ["day-0000/bucket-all/part-0000.parquet", "day-0001/bucket-all/part-0000.parquet"]
        assert all("=" not in f for f in files)


def _check_dtypes_everywhere(root):
    """day int16 and bucket dictionary<int16, string> as the schema says, in every reader's own types."""
    table = ds.dataset(root, partitioning="hive").to_table()
    assert table.schema.field("day").type == pa.int16()
    assert table.schema.field("bucket").type == IMPRESSION_SCHEMA.field("bucket").type
    assert table.schema.names == IMPRESSION_SCHEMA.names        # no partition columns added
    frame = pd.read_parquet(root)
    assert frame["day"].dtype == np.int16 and isinstance(frame["bucket"].dtype, pd.CategoricalDtype)
    assert list(frame.columns) == IMPRESSION_SCHEMA.names
    lazy = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True)
    schema = lazy.collect_schema()
    assert schema["day"] == pl.Int16 and schema["bucket"] == pl.Categorical
    assert schema.names() == IMPRESSION_SCHEMA.names
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)").df()
    types = dict(zip(described["column_name"], described["column_type"]))
    assert types["day"] == "SMALLINT" and types["bucket"] == "VARCHAR"     # DuckDB has no dictionary type
    assert list(described["column_name"]) == IMPRESSION_SCHEMA.names


def test_dtypes_in_every_reader(run_dir, ab_logs):
    _check_dtypes_everywhere(run_dir / "logs")
    _check_dtypes_everywhere(ab_logs / "logs")


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_every_reader_gives_satbeds_rows(run_dir, reader):
    want = _sorted(read_impressions(run_dir / "logs"), KEY)
    got = _sorted(READERS[reader](run_dir / "logs"), KEY)
    assert len(got) == len(want) > 0
    assert sorted(got["day"].unique().tolist()) == [0, 1] and set(got["bucket"].astype(str)) == {"all"}
    _same_values(got, want, SOME)


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
def test_every_reader_over_several_buckets(ab_logs, reader):
    want = _sorted(read_impressions(ab_logs / "logs"), KEY)
    got = _sorted(READERS[reader](ab_logs / "logs"), KEY)
    assert len(got) == len(want) == 18
    assert got.groupby(got["bucket"].astype(str))["day"].unique().map(list).to_dict() == \
        {"pre": [0], "control": [1], "treat": [1]}
    _same_values(got, want, SOME)


@pytest.mark.parametrize("reader", READERS, ids=list(READERS))
@pytest.mark.parametrize("which", ["run", "ab"])
def test_every_reader_reads_candidates(run_dir, ab_logs, reader, which):
    run = run_dir if which == "run" else ab_logs
    requests, candidates, scores = read_candidates(run)
    got = _sorted(READERS[reader](run / "candidates"), ["request_id"])
    assert len(got) == len(requests) > 0
    assert str(got["day"].dtype) in ("int16", "Int16") and pd.api.types.is_string_dtype(got["bucket"])
    assert list(got.columns) == CANDIDATE_SCHEMA.names
    _same_values(got, requests, ["day", "bucket", "request_id", "user_id", "policy"])
    np.testing.assert_array_equal(np.stack(got["candidates"].map(np.asarray).to_numpy()), candidates)
    np.testing.assert_array_equal(np.stack(got["scores"].map(np.asarray).to_numpy()), scores["logging"])


def test_read_candidates_frame_is_unchanged(run_dir):
    """bucket is now a column of the files, but read_candidates still puts it last, as a string."""
    requests, _, _ = read_candidates(run_dir)
    assert list(requests.columns) == ["day", "ts", "user_id", "request_id", "policy", "temperature", "bucket"]
    assert pd.api.types.is_string_dtype(requests["bucket"]) and set(requests["bucket"]) == {"all"}


def _legacy_copy(src, dst):
    """``src`` rewritten in the layout written before: day=D/bucket=B, candidates without bucket."""
    for sub in ("logs", "candidates"):
        for f in log_files(src / sub):
            to = dst / sub / f"day={f.parent.parent.name[4:]}" / f"bucket={f.parent.name[7:]}" / f.name
            to.parent.mkdir(parents=True)
            if sub == "logs":
                shutil.copyfile(f, to)
            else:
                pq.write_table(pq.read_table(f).drop_columns(["bucket"]), to)
    for name in ("items.parquet", "users.parquet"):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)


@pytest.mark.parametrize("which", ["run", "ab"])
def test_older_hive_layout_reads_the_same(run_dir, ab_logs, tmp_path, which):
    run = run_dir if which == "run" else ab_logs
    _legacy_copy(run, tmp_path)
    assert all("=" in f.parent.name for f in log_files(tmp_path / "logs"))
    pd.testing.assert_frame_equal(read_impressions(tmp_path / "logs"), read_impressions(run / "logs"))
    pd.testing.assert_frame_equal(read_impressions(tmp_path / "logs", days=[1], buckets=["all", "treat"]),
                                  read_impressions(run / "logs", days=[1], buckets=["all", "treat"]))
    old, new = read_candidates(tmp_path), read_candidates(run)
    pd.testing.assert_frame_equal(old[0], new[0])
    np.testing.assert_array_equal(old[1], new[1])
    if which == "run":
        pd.testing.assert_frame_equal(read_run(tmp_path).impressions, read_run(run).impressions)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_pages(path):
    """Zero every byte between the leading magic and the footer: the footer (schema) still reads."""
    data = bytearray(path.read_bytes())
    end = len(data) - 8 - struct.unpack("<i", data[-8:-4])[0]
    data[4:end] = bytes(end - 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _corrupt_pages], ids=["truncated", "corrupt_pages"])
def test_a_damaged_file_is_named(run_dir, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    log = run / "logs" / "day-0001" / "bucket-all" / "part-0000.parquet"
    cand = run / "candidates" / "day-0000" / "bucket-all" / "part-0000.parquet"
    for path in (log, cand, run / "items.parquet"):
        damage(path)
    with pytest.raises(SchemaError, match="is not a readable Parquet file") as info:
        read_impressions(run / "logs")
    assert f"log file {log}" in str(info.value)
    assert len(read_impressions(run / "logs", days=[0])) > 0           # the other day still reads
    with pytest.raises(SchemaError, match="is not a readable Parquet file") as info:
        read_candidates(run)
    assert f"candidates file {cand}" in str(info.value)
    with pytest.raises(SchemaError, match="is not a readable Parquet file") as info:
        read_run(run, days=[0])
    assert f"table {run / 'items.parquet'}" in str(info.value)


def test_an_unknown_column_is_named(run_dir):
    with pytest.raises(SchemaError, match=r"log file .*part-0000.parquet has no column\(s\) 'nope'"):
        read_impressions(run_dir / "logs", columns=["day", "nope"])
