"""Fixtures for the study tests: each study's fast variant, run once per session.

``aa_validity`` runs through the command line (``satbed study aa_validity --fast --out DIR``),
the others through :func:`studies.base.run_study`; all on the sequential executor (the
executors are compared in test_study_sweep.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

STUDIES = ("aa_validity", "bias_ablation", "head_to_head", "offline_online", "saqrec_replication", "sine_replication",
           "usm_replication", "easq_online", "positive_control", "response_parts", "questionnaire_value",
           "serving_frontier")


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory):
    """``fast_run(name) -> results directory`` of the study's fast variant (cached per session)."""
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name in done:
            return done[name]
        out = tmp_path_factory.mktemp(f"study_{name}") / "results"
        if name == "aa_validity":
            from simulator.cli import main
            assert main(["study", name, "--fast", "--out", str(out), "--executor", "sequential", "--quiet"]) == 0
        else:
            from studies.base import get_study, load_config, run_study
            from studies.sweep import SequentialExecutor
            study = get_study(name)
            run_study(study, load_config(study, variant="fast"), out, SequentialExecutor(), progress=False,
                      variant="fast")
        done[name] = out
        return out

    return run
