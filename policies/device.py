"""Where a torch policy trains and scores: the ``device`` parameter of every neural policy.

``device = "auto"`` (every torch policy's default) is the first CUDA GPU when torch sees one,
else the CPU, unless the environment variable ``SATBED_DEVICE`` names a device (``cpu`` keeps
every "auto" policy on the CPU: the test session does so, so the goldens hold on a GPU machine);
``"cpu"``, ``"cuda"`` and ``"cuda:N"`` name one. A policy resolves its device once,
in ``fit``; its modules are built on the CPU under the policy's seeded generator and then moved,
so a model starts from the same weights on every device, and results on the CPU are what they
were before devices existed (bit for bit). On a GPU, runs are reproducible run to run (the
training loop seeds the device's generator and cuDNN's nondeterministic kernels are not used by
these models), and differ from the CPU's by floating-point order only: docs/policies.md gives
the tolerance the GPU tests check.

The arrays a policy receives and returns stay numpy on the host; :func:`to_device` and
:func:`to_host` are the two crossings.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from policies.params import ParameterError

DEVICE_HELP = '"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"'
AUTO_ENV = "SATBED_DEVICE"   # what "auto" means when set, e.g. SATBED_DEVICE=cpu (the test session sets it)


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (False on a CPU-only build)."""
    return torch.cuda.is_available()


def resolve_device(spec: str | torch.device, owner: str = "policy") -> torch.device:
    """The torch device that ``spec`` names.

    Raises:
        ParameterError: ``spec`` is not one of :data:`DEVICE_HELP`, or names a CUDA device that
            this machine does not have (``owner: device='cuda' ...``).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    check_device_spec(spec, owner)
    if spec == "auto":
        forced = os.environ.get(AUTO_ENV, "").strip()
        if forced and forced != "auto":
            return resolve_device(forced, f"{owner} ({AUTO_ENV})")
        return torch.device("cuda") if cuda_available() else torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cpu":
        return device
    if not cuda_available():
        raise ParameterError(f"{owner}: device={spec!r} but torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); "
                             f'use device="auto" or "cpu"')
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ParameterError(f"{owner}: device={spec!r} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def check_device_spec(spec: object, owner: str = "policy") -> None:
    """``spec`` is a valid device string (without resolving it: a config may name "cuda" on a
    machine that will run it elsewhere)."""
    if not isinstance(spec, str):
        raise ParameterError(f"{owner}: device={spec!r} must be a string: {DEVICE_HELP}")
    if spec == "auto":
        return
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ParameterError(f"{owner}: device={spec!r} is not a device: {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise ParameterError(f"{owner}: device={spec!r} is not supported: {DEVICE_HELP}")


def wants_gpu(spec: object) -> bool:
    """Whether a device string asks for a GPU explicitly (``"cuda"``, ``"cuda:N"``): the cells
    that must be scheduled on one (``"auto"`` takes a GPU only where there is one)."""
    return isinstance(spec, str) and spec.startswith("cuda")


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on ``device`` (shares memory on the CPU, copies to a GPU)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t if device.type == "cpu" else t.to(device, non_blocking=False)


def to_host(t: torch.Tensor) -> np.ndarray:
    """A tensor as a numpy array on the host."""
    return t.detach().cpu().numpy()


def fork_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generator state ``torch.random.fork_rng`` must save and restore
    around work on ``device`` (none for the CPU), so seeding a policy never changes the global
    generators of the caller."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def deterministic_on(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training on a GPU: ``torch.use_deterministic_algorithms`` (an
    embedding's backward pass otherwise adds with atomics, in a different order each run) and
    cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, which that mode requires; set here
    unless the user set it). All of it is restored on exit; on the CPU this does nothing (its
    kernels already are deterministic at a fixed thread count). cuBLAS reads its workspace size
    when a process first uses it: a process that ran cuBLAS before its first GPU fit should set
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` itself, at start."""
    if device.type != "cuda":
        yield
        return
    set_env = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if set_env:
            del os.environ["CUBLAS_WORKSPACE_CONFIG"]
