"""The kernel pin (simulator/reproducibility.py): the same seed gives the same numbers on an
AVX2-only CPU as on this one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.reproducibility import (ENV_VAR, KernelSettingError, kernel_env, kernel_mode, kernel_report,
                                       pin_kernels)

ROOT = Path(__file__).resolve().parents[2]
PINNED = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES")

# An AVX2-only CPU as the libraries see it, written out here rather than taken from the module
# under test: MKL's AVX2 code path, oneDNN and ATen capped at AVX2, numpy's AVX-512 dispatch
# targets off (2.4's names and the older ones; numpy ignores names it does not know).
AVX2_ONLY = {
    ENV_VAR: "native",                     # the child must not pin anything itself
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX AVX512_CLX AVX512_CNL",
}


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PINNED and k != ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def test_pin_sets_every_variable_and_keeps_the_users_own(monkeypatch):
    for k in (*PINNED, ENV_VAR):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")          # set by the user: kept
    got = pin_kernels()
    assert got["MKL_CBWR"] == "AVX2" and got["ATEN_CPU_CAPABILITY"] == "avx2"
    assert got["ONEDNN_MAX_CPU_ISA"] == "SSE41" and os.environ["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    assert "AVX512" in got["NPY_DISABLE_CPU_FEATURES"] or "X86_V4" in got["NPY_DISABLE_CPU_FEATURES"]
    assert kernel_env("compatible")["MKL_CBWR"] == "COMPATIBLE"


def test_native_pins_nothing(monkeypatch):
    for k in PINNED:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv(ENV_VAR, "native")
    assert pin_kernels() == {} and not any(k in os.environ for k in PINNED)


def test_mode_reading():
    assert kernel_mode({}) == "avx2" and kernel_mode({ENV_VAR: " Compatible "}) == "compatible"


@pytest.mark.parametrize("value", ["avx512", "on", "off"])
def test_a_bad_mode_is_refused_by_name(value):
    with pytest.raises(KernelSettingError, match=f"SATBED_KERNELS='{value}' is not one of avx2, compatible, native"):
        kernel_mode({ENV_VAR: value})


def test_cli_refuses_a_bad_mode_with_exit_code_2():
    done = subprocess.run([sys.executable, "-m", "satbed.cli", "simulate", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env=_child_env({ENV_VAR: "fast"}), timeout=120)
    assert done.returncode == 2
    assert "SATBED_KERNELS='fast' is not one of avx2, compatible, native" in done.stderr


def test_the_test_session_runs_pinned():
    if kernel_mode() == "native":
        pytest.skip("SATBED_KERNELS=native: the suite runs unpinned")
    report = kernel_report()
    assert report["imported_before_pin"] == [], "numpy / torch were imported before the pin (tests/conftest.py)"
    assert report["torch_capability"] in ("AVX2", "AVX", "DEFAULT"), report
    assert report["numpy_avx512"] is False
    assert report["env"]["MKL_CBWR"] in ("AVX2", "COMPATIBLE")


def test_study_workers_inherit_the_pin(monkeypatch):
    from studies.engine.sweep import worker_env
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")                 # the parent's own value wins
    env = worker_env()
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["OMP_NUM_THREADS"] == "1"


def test_same_numbers_as_on_an_avx2_only_cpu():
    """A short simulation and small SASRec / SAQRec fits, here (pinned) and in a child process
    that sees an AVX2-only CPU: bit-identical logs, weights and scores. On an AVX-512 machine
    this compares the two kinds of CPU; on an AVX2 one it still fails if the pin is not in force
    in this process (switching MKL's CNR on changes SAQRec's weights)."""
    if kernel_mode() == "native":
        pytest.skip("SATBED_KERNELS=native: the suite runs unpinned")
    import kernel_probe
    here = kernel_probe.fingerprints()
    code = "import json, kernel_probe; print(json.dumps(kernel_probe.fingerprints()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=_child_env(AVX2_ONLY), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there == here
