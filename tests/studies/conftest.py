"""Fixtures for the study tests: each study's fast variant, run once per session.

``aa_validity`` runs through the command line (``satbed study aa_validity --fast --out DIR``),
the others through :func:`studies.engine.base.run_study`; all on the sequential executor (the
executors are compared in test_study_sweep.py). In a whole-suite run they start in a background
process right after collection (golden_runs.py).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import pytest

from golden_runs import run_fast

ROOT = Path(__file__).resolve().parents[2]

STUDIES = ("aa_validity", "bias_ablation", "head_to_head", "offline_online", "saqrec_replication", "sine_replication",
           "usm_replication", "easq_online", "positive_control", "response_parts", "questionnaire_value",
           "serving_frontier", "ope_benchmark")


_BACKGROUND: dict[str, Future] = {}
_POOL: list[ProcessPoolExecutor] = []
_ROOTS: list[Path] = []


def pytest_collection_finish(session):
    """In a whole-suite run (no paths, -k or -m given), start every fast variant in one spawned
    background process at once (golden_runs.py): they overlap the rest of the suite.
    SATBED_BACKGROUND_GOLDENS=1 (or 0) forces it on (or off)."""
    opts, here = session.config.option, session.config.invocation_params.dir
    paths = {(here / a).resolve() for a in session.config.args}
    whole_suite = (not opts.keyword and not opts.markexpr and not opts.collectonly
                   and paths <= {ROOT, ROOT / "tests"})
    forced = os.environ.get("SATBED_BACKGROUND_GOLDENS")        # "1" / "0": force on / off
    if not (whole_suite if forced is None else forced == "1") or not any("fast_run" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    _POOL.append(pool)
    root = Path(tempfile.mkdtemp(prefix="satbed-golden-"))
    _ROOTS.append(root)
    for name in STUDIES:
        _BACKGROUND[name] = pool.submit(run_fast, name, root / f"study_{name}" / "results")


def pytest_sessionfinish(session, exitstatus):
    for pool in _POOL:
        pool.shutdown(cancel_futures=True)
    for root in _ROOTS:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory):
    """``fast_run(name) -> results directory`` of the study's fast variant (once per session;
    from the background run when one was started)."""
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            background = _BACKGROUND.get(name)
            done[name] = (background.result() if background is not None
                          else run_fast(name, tmp_path_factory.mktemp(f"study_{name}") / "results"))
        return done[name]

    return run
