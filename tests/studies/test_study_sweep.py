"""The sweep runner: cache keys, resuming, failures, and identical results on every executor."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from simulator.config import ConfigError
from studies.engine.base import get_study, load_config, run_study
from studies.engine.sweep import (Cell, CellError, cell_gpus, PoolExecutor, RayExecutor, SequentialExecutor, make_executor, read_cached,
                           run_sweep)

FN = "test_study_sweep:toy_cell"          # this module is importable: its directory is on sys.path
CALLS: list[tuple[int, int]] = []


def toy_cell(params: dict, seed: int) -> list[dict]:
    """A cheap deterministic cell (in-process tests only)."""
    if params["v"] < 0:
        raise ValueError(f"negative v={params['v']}")
    CALLS.append((params["v"], seed))
    return [{"v": params["v"], "seed_x10": 10 * seed}, {"v": -params["v"], "seed_x10": 0}]


def aa_cells(n: int) -> list[Cell]:
    """The first ``n`` cells of aa_validity's fast variant (real A/A tests, ~2 s each)."""
    study = get_study("aa_validity")
    return study.cells(load_config(study, variant="fast"))[:n]


def rows_json(out, cells) -> list[str]:
    return [json.dumps(read_cached(out, c)["rows"]) for c in cells]


def test_cell_key_is_the_content_not_the_labels():
    a = Cell("m:f", {"x": (1, 2), "y": {"b": 1, "a": 2.5}}, 3, labels={"k": 1})
    b = Cell("m:f", {"y": {"a": 2.5, "b": 1}, "x": [1, 2]}, 3, labels={"k": 2})
    assert a.key == b.key and len(a.key) == 24
    others = [Cell("m:f", {"x": [1, 2], "y": {"a": 2.5, "b": 1}}, 4), Cell("m:g", b.params, 3),
              Cell("m:f", b.params, 3, version=2), Cell("m:f", {**b.params, "x": [2, 1]}, 3)]
    assert len({a.key, *(c.key for c in others)}) == 5


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"fn": "no_colon", "params": {}, "seed": 0}, "must be 'module:function'"),
    ({"fn": "m:f", "params": {}, "seed": -1}, "seed=-1 must be an integer >= 0"),
    ({"fn": "m:f", "params": {}, "seed": True}, "seed=True must be an integer >= 0"),
])
def test_bad_cells(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Cell(**kwargs)


def test_shared_cells_run_once_and_a_rerun_reads_the_cache(tmp_path):
    CALLS.clear()
    cells = [Cell(FN, {"v": 1}, 0, labels={"name": "a"}), Cell(FN, {"v": 1}, 0, labels={"name": "b"}),
             Cell(FN, {"v": 2}, 5, labels={"name": "c"})]
    first = run_sweep(cells, tmp_path, SequentialExecutor(), progress=False)
    assert CALLS == [(1, 0), (2, 5)] and len(first.computed) == 2 and first.cached == []
    t = first.table
    assert t["name"].tolist() == ["a", "a", "b", "b", "c", "c"]
    assert t["v"].tolist() == [1, -1, 1, -1, 2, -2] and t["seed_x10"].tolist() == [0, 0, 0, 0, 50, 0]
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == sorted(f"{c.key}.json" for c in cells[1:])
    again = run_sweep(cells, tmp_path, SequentialExecutor(), progress=False)
    assert CALLS == [(1, 0), (2, 5)] and again.computed == [] and len(again.cached) == 2
    assert again.table.equals(first.table)


def test_a_failed_cell_names_itself_after_the_others_are_cached(tmp_path):
    cells = [Cell(FN, {"v": 1}, 0, labels={"name": "ok1"}), Cell(FN, {"v": -3}, 7, labels={"name": "bad"}),
             Cell(FN, {"v": 2}, 0, labels={"name": "ok2"})]
    with pytest.raises(CellError, match=r"(?s)1 of 3 cells failed \(\{'name': 'bad'\} seed=7\).*ValueError: negative v=-3"):
        run_sweep(cells, tmp_path, SequentialExecutor(), progress=False)
    assert read_cached(tmp_path, cells[0]) is not None and read_cached(tmp_path, cells[2]) is not None
    assert read_cached(tmp_path, cells[1]) is None
    done = run_sweep([cells[0], cells[2]], tmp_path, SequentialExecutor(), progress=False)
    assert done.computed == []


def test_rows_must_not_clash_with_labels(tmp_path):
    with pytest.raises(ValueError, match=r"column\(s\) \['v'\] that clash"):
        run_sweep([Cell(FN, {"v": 1}, 0, labels={"v": "x"})], tmp_path, SequentialExecutor(), progress=False)


def test_executor_choices():
    pool = make_executor()
    assert isinstance(pool, PoolExecutor) and pool.workers == 2 and pool.start_method == "spawn"
    assert isinstance(make_executor("sequential"), SequentialExecutor)
    assert isinstance(make_executor("ray", address="auto"), RayExecutor)
    with pytest.raises(ConfigError, match="executor='dask' must be one of pool, ray, sequential"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="only used with executor='ray'"):
        make_executor("pool", address="auto")
    with pytest.raises(ConfigError, match="workers=0 must be an integer >= 1"):
        make_executor("pool", workers=0)


def test_interrupted_sweep_redoes_only_missing_cells(fast_run, tmp_path):
    """Deleting cells (and corrupting one, as a crash mid-write without atomic writes would)
    simulates an interrupted sweep: the rerun computes exactly those and reproduces the table."""
    src = fast_run("aa_validity")
    out = tmp_path / "results"
    shutil.copytree(src, out)
    study = get_study("aa_validity")
    config = load_config(study, variant="fast")
    cells = study.cells(config)
    (out / "cells" / f"{cells[4].key}.json").unlink()
    (out / "cells" / f"{cells[1].key}.json").write_text('{"cell": {"fn": "stud')      # truncated
    (out / "cells" / f".{cells[2].key}.json.tmp-123").write_text("partial")          # a leftover temp file
    result = run_study(study, config, out, SequentialExecutor(), progress=False, variant="fast")
    assert sorted(result.sweep.computed) == sorted([cells[1].key, cells[4].key])
    assert len(result.sweep.cached) == 4
    assert rows_json(out, cells) == rows_json(src, cells)
    assert (out / "table.csv").read_text() == (src / "table.csv").read_text()


def test_pool_matches_sequential(fast_run, tmp_path):
    src = fast_run("aa_validity")                          # computed sequentially, in this process
    cells = aa_cells(2)
    result = run_sweep(cells, tmp_path, PoolExecutor(workers=2), progress=False)
    assert len(result.computed) == 2
    records = [read_cached(tmp_path, c) for c in cells]
    assert all(r["executor"] == "pool" and r["pid"] != os.getpid() for r in records)
    assert rows_json(tmp_path, cells) == rows_json(src, cells)


def test_ray_matches_sequential(fast_run, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'satbed[ray]'; CI installs it)")
    src = fast_run("aa_validity")
    cells = aa_cells(2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(cells, tmp_path, RayExecutor(), progress=False)
    finally:
        ray.shutdown()
    assert len(result.computed) == 2
    assert all(read_cached(tmp_path, c)["executor"] == "ray" for c in cells)
    assert rows_json(tmp_path, cells) == rows_json(src, cells)


def test_a_cell_that_names_a_gpu_declares_one():
    assert cell_gpus({"buckets": [{"policy": "sasrec", "params": {"device": "cuda"}}]}) == 1.0
    assert cell_gpus({"policies": [{"name": "usm", "params": {"device": "cuda:1"}}]}) == 1.0
    assert cell_gpus({"buckets": [{"params": {"device": "auto"}}], "device": "cpu"}) == 0.0
    assert cell_gpus({"world": {"users": {"n_users": 10}}}) == 0.0
    assert Cell("m:f", {"p": [{"device": "cuda"}]}, 0).gpus == 1.0


class _Ref:
    def __init__(self, value):
        self.value = value


class _FakeRay:
    """The part of Ray's API the executor uses, recording each task's resource request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.initialised = False

    def is_initialized(self):
        return self.initialised

    def init(self, address=None, **kwargs):
        self.initialised = True

    def shutdown(self):
        self.initialised = False

    def remote(self, **options):
        ray = self

        def wrap(fn):
            class Remote:
                def __init__(self, opts):
                    self.opts = opts

                def options(self, **more):
                    return Remote({**self.opts, **more})

                def remote(self, *args):
                    ray.requests.append({"options": self.opts, "seed": args[2]})
                    return _Ref(fn(*args))
            return Remote(dict(options))
        return wrap

    def wait(self, pending, num_returns=1):
        return pending[:num_returns], pending[num_returns:]

    def get(self, ref):
        return ref.value

    def cancel(self, ref, force=False):
        pass


def test_the_ray_executor_requests_a_gpu_for_the_cells_that_name_one(monkeypatch):
    import studies.engine.sweep as sweep
    fake = _FakeRay()
    monkeypatch.setattr(sweep, "import_ray", lambda: fake)
    tasks = [(FN, {"v": 1, "params": {"device": "cuda"}}, 0), (FN, {"v": 2, "params": {"device": "auto"}}, 1)]
    done = dict(sweep.RayExecutor(workers=2).run(tasks))
    assert [done[i]["rows"][0]["v"] for i in (0, 1)] == [1, 2]
    by_seed = {r["seed"]: r["options"] for r in fake.requests}
    assert by_seed[0] == {"num_cpus": 1, "max_retries": 0, "num_gpus": 1.0}
    assert by_seed[1] == {"num_cpus": 1, "max_retries": 0}
