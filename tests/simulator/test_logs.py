"""Logs: schema, atomic Parquet writes, validated reads that name the bad column."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simulator import logs as logs_module
from simulator.logs import LogWriter, read_impressions, read_run
from simulator.schema import IMPRESSION_COLUMNS, IMPRESSION_SCHEMA, LogData, SchemaError, oracle_names
from experiments.simulate import simulate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests_support import tiny
    out = tmp_path_factory.mktemp("logs") / "run"
    simulate(tiny(), out, progress=False)
    return out


def test_every_column_is_defined_once_with_meaning():
    names = [c.name for c in IMPRESSION_COLUMNS]
    assert len(names) == len(set(names))
    assert all(c.meaning for c in IMPRESSION_COLUMNS)
    assert {"true_p_satisfied", "true_p_show", "true_p_submit", "true_interest"} <= set(oracle_names())


def test_partitioned_by_day_and_bucket_and_round_trips(run_dir):
    files = sorted(p.relative_to(run_dir / "logs").as_posix() for p in (run_dir / "logs").rglob("*.parquet"))
    assert files == ["day-0000/bucket-all/part-0000.parquet", "day-0001/bucket-all/part-0000.parquet"]
    frame = read_impressions(run_dir / "logs")
    assert list(frame.columns) == IMPRESSION_SCHEMA.names
    assert sorted(frame["day"].unique()) == [0, 1]
    one_day = read_impressions(run_dir / "logs", days=[1])
    assert (one_day["day"] == 1).all() and len(one_day) < len(frame)
    data = read_run(run_dir)
    assert data.has_oracle and not data.observable().has_oracle
    obs = data.observable()
    assert not any(c.startswith("true_") for df in (obs.impressions, obs.items, obs.users) for c in df.columns)
    assert {"user_id", "tenure_days"} <= set(obs.users.columns) and "l1" in obs.items.columns


def _rewrite(src, dst, transform):
    table = transform(pq.read_table(src))
    pq.write_table(table, dst)


BAD_FILES = [
    ("missing column", lambda t: t.drop(["watch_time"]), "is missing column(s) 'watch_time'"),
    ("missing two", lambda t: t.drop(["skip", "like"]), "is missing column(s) 'skip', 'like'"),
    ("mistyped", lambda t: t.set_column(t.schema.get_field_index("watch_time"), "watch_time",
                                        pa.array(t["watch_time"].to_numpy().astype(str))),
     "column 'watch_time' has type string, expected float"),
    ("int as bool", lambda t: t.set_column(t.schema.get_field_index("skip"), "skip",
                                           pa.array(t["skip"].to_numpy().astype(np.int64))),
     "column 'skip' has type int64, expected bool"),
]


@pytest.mark.parametrize(("label", "transform", "fragment"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_malformed_log_files_are_named(run_dir, tmp_path, label, transform, fragment):
    src = run_dir / "logs" / "day-0000" / "bucket-all" / "part-0000.parquet"
    dst = tmp_path / "logs" / "day-0000" / "bucket-all" / "part-0000.parquet"
    dst.parent.mkdir(parents=True)
    _rewrite(src, dst, transform)
    with pytest.raises(SchemaError) as info:
        read_impressions(tmp_path / "logs")
    assert fragment in str(info.value) and "part-0000.parquet" in str(info.value)


def test_not_parquet_and_missing_dirs(tmp_path):
    bad = tmp_path / "logs" / "day-0000" / "bucket-all" / "part-0000.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_text("not parquet")
    with pytest.raises(SchemaError, match="is not a readable Parquet file"):
        read_impressions(tmp_path / "logs")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_impressions(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no log files"):
        read_impressions(tmp_path / "logs", days=[5])


def test_observable_logs_accepted_without_oracle(run_dir, tmp_path):
    src = run_dir / "logs" / "day-0000" / "bucket-all" / "part-0000.parquet"
    dst = tmp_path / "logs" / "day-0000" / "bucket-all" / "part-0000.parquet"
    dst.parent.mkdir(parents=True)
    _rewrite(src, dst, lambda t: t.drop(oracle_names()))
    with pytest.raises(SchemaError, match="true_p_satisfied"):
        read_impressions(tmp_path / "logs")
    frame = read_impressions(tmp_path / "logs", require_oracle=False)
    assert not any(c.startswith("true_") for c in frame.columns)


def test_interrupted_write_leaves_no_partial_file(run_dir, tmp_path, monkeypatch):
    table = pq.read_table(run_dir / "logs" / "day-0000" / "bucket-all" / "part-0000.parquet")
    target = tmp_path / "out" / "part.parquet"
    real_write = pq.write_table

    def crash(tbl, where, **kw):
        real_write(tbl.slice(0, 10), where, **kw)      # some bytes reach the disk ...
        raise OSError("disk full")                      # ... then the write dies
    monkeypatch.setattr(logs_module.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        logs_module.write_parquet(table, target)
    assert list((tmp_path / "out").iterdir()) == []     # neither the target nor a temp file
    # an existing file survives a failed overwrite untouched
    monkeypatch.setattr(logs_module.pq, "write_table", real_write)
    logs_module.write_parquet(table, target)
    monkeypatch.setattr(logs_module.pq, "write_table", crash)
    with pytest.raises(OSError):
        logs_module.write_parquet(table.slice(0, 5), target)
    assert pq.read_table(target).num_rows == table.num_rows
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part.parquet"]


def test_writer_drops_unkept_rows(tmp_path):
    cols = {c.name: np.zeros(4, dtype=np.float64) for c in IMPRESSION_COLUMNS}
    for name in ("survey_type", "survey_answer", "survey_reasons"):
        cols[name] = np.full(4, -1)
    cols["ts"] = np.arange(4.0)
    writer = LogWriter(tmp_path, ["a"])
    writer.append(0, "random", np.array([True, False, True, False]), cols)
    writer.flush_day(0)
    frame = read_impressions(tmp_path)
    assert frame["ts"].tolist() == [0.0, 2.0] and writer.rows_written == 2
    assert frame["propensity"].tolist() == [0.0, 0.0] and frame["survey_type"].isna().all()


def test_logdata_where_and_len(run_dir):
    data = read_run(run_dir)
    sub = data.where(data.impressions["day"] == 0)
    assert isinstance(sub, LogData) and 0 < len(sub) < len(data)
