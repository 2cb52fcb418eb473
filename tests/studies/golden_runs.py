"""Running a study's fast variant into a results directory, in this process or in a spawned one.

The study tests' ``fast_run`` fixture (conftest.py) uses it. In a whole-suite run the fast
variants start in one background process as soon as the tests are collected, so they run on
the second core while the estimator, policy and simulator tests run on the first; a test that
needs one waits for it. The results are the same either way: the child pins the kernels and
uses one torch thread, as the suite does.
"""
from __future__ import annotations

from pathlib import Path


def run_fast(name: str, out: str | Path) -> Path:
    """Run study ``name``'s fast variant into ``out`` (sequential executor, no progress bar)."""
    from simulator.reproducibility import pin_kernels
    pin_kernels()
    import torch
    torch.set_num_threads(1)
    out = Path(out)
    if name == "aa_validity":     # through the command line, as a user runs it
        from satbed.cli import main
        assert main(["study", name, "--fast", "--out", str(out), "--executor", "sequential", "--quiet"]) == 0
    else:
        from studies.engine.base import get_study, load_config, run_study
        from studies.engine.sweep import SequentialExecutor
        study = get_study(name)
        run_study(study, load_config(study, variant="fast"), out, SequentialExecutor(), progress=False,
                  variant="fast")
    return out
