"""One reproducibility setting: the same seed gives the same numbers on every x86-64 CPU.

The libraries under torch and numpy pick their kernels by the CPU they run on. On a CPU with
AVX-512 (a recent Xeon) they take wider kernels than on an AVX2-only one, the floating-point
sums come out in another order, and a trained model differs in its last bits; after training,
that is a 1e-4 difference in a study's metric. :func:`pin_kernels` caps every one of them at
AVX2, which every x86-64 CPU this project runs on has. It only sets environment variables, so
it must run where a process starts, before numpy or torch is imported: the ``satbed`` command,
the study workers (process pool and Ray, through :func:`kernel_env`), the benchmarks and the
test session do so. It is on by default; ``SATBED_KERNELS=native`` turns it off (for speed on a
big CPU, giving up bit-identity across machines).

What each pin is for (``MKL_VERBOSE=1`` / ``ONEDNN_VERBOSE=1`` over a SASRec and SAQRec fit):

- ``MKL_CBWR`` (MKL's conditional numerical reproducibility) is the one that matters: every
  matrix product of our models (10,805 of 10,806 calls in that fit) is MKL's SGEMM. Without it,
  MKL takes its AVX-512 kernels where it can, and its results may even depend on the alignment
  of the arrays in memory (on an AVX2 machine, switching CNR on changed SAQRec's weights).
  ``AVX2`` selects the AVX2 code path on Intel CPUs; on AMD CPUs MKL runs its automatic branch
  with CNR on. ``compatible`` mode uses MKL's SSE2 path instead, the same on every x86-64 CPU
  of any vendor, at about 1.6x the fit time (benchmarks/bench_kernels.py).
- ``ONEDNN_MAX_CPU_ISA``: torch runs a few element-wise ops through oneDNN (61 primitives in
  that fit), and on AMX CPUs it may route more work there; capped for the same reason.
- ``ATEN_CPU_CAPABILITY``: torch's own vectorised kernels (softmax, layer norm, sums) reduce in
  8 lanes with AVX2 and 16 with AVX-512. Alone it does not fix the failing golden (MKL does),
  but with it the remaining reductions are the same too.
- ``NPY_DISABLE_CPU_FEATURES``: numpy's AVX-512 ``exp`` / ``log`` differ from the AVX2 ones in
  the last bit (1e-17 in the log's ``propensity``): the simulator's logs would not hash alike.

Thread counts matter as well (a parallel sum splits differently): the A/B runner, the study
workers and the test session run torch with one thread (``ExperimentConfig.torch_threads``),
and MKL with one thread.

A variable the user has already set is left as it is.
"""
from __future__ import annotations

import os
import sys
from importlib import metadata

ENV_VAR = "SATBED_KERNELS"
MODES = ("avx2", "compatible", "native")
DEFAULT_MODE = "avx2"

# numpy's names for its dispatch targets above AVX2: 2.4 renamed them to x86-64 levels.
_NUMPY_AVX512 = {True: "X86_V4 AVX512_ICL AVX512_SPR",
                 False: "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL "
                        "AVX512_SPR"}


# numpy / torch modules already imported when pin_kernels() first ran: the pin came too late for them
imported_before_pin: tuple[str, ...] | None = None


class KernelSettingError(ValueError):
    """``SATBED_KERNELS`` holds a value that is not a mode."""


def kernel_mode(environ: dict[str, str] | None = None) -> str:
    """The mode named by ``SATBED_KERNELS`` (default ``avx2``); a clear error for anything else."""
    env = os.environ if environ is None else environ
    mode = env.get(ENV_VAR, DEFAULT_MODE).strip().lower() or DEFAULT_MODE
    if mode not in MODES:
        raise KernelSettingError(f"{ENV_VAR}={env[ENV_VAR]!r} is not one of {', '.join(MODES)}")
    return mode


def _numpy_is_2_4_or_later() -> bool:
    try:                                   # read without importing numpy: importing it fixes its kernels
        major, minor = (int(p) for p in metadata.version("numpy").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return True
    return (major, minor) >= (2, 4)


def kernel_env(mode: str | None = None) -> dict[str, str]:
    """The environment variables of ``mode`` (default: :func:`kernel_mode`); empty for ``native``."""
    mode = kernel_mode() if mode is None else mode
    if mode not in MODES:
        raise KernelSettingError(f"kernel mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "native":
        return {}
    return {
        ENV_VAR: mode,
        "MKL_CBWR": "AVX2" if mode == "avx2" else "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512[_numpy_is_2_4_or_later()],
    }


def pin_kernels(mode: str | None = None) -> dict[str, str]:
    """Set the variables of ``mode`` in ``os.environ`` (child processes inherit them).

    Call it before numpy or torch is imported; a variable that is already set is kept.

    Returns:
        the variables as they now stand in the environment.
    """
    global imported_before_pin
    wanted = kernel_env(mode)
    if imported_before_pin is None:
        imported_before_pin = tuple(m for m in ("numpy", "torch") if m in sys.modules)
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in wanted}


def kernel_report() -> dict[str, object]:
    """What the process actually runs with: the mode, the variables, torch's and numpy's kernels.

    Imports numpy and torch (so call it after :func:`pin_kernels`, never instead of it).
    """
    import numpy as np
    import torch
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:                                     # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return {
        "mode": kernel_mode(),
        "env": {k: os.environ.get(k) for k in kernel_env("avx2") if k != ENV_VAR},
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "numpy_avx512": bool(features.get("AVX512F") or features.get("X86_V4")),
        "imported_before_pin": list(imported_before_pin or ()),
    }
