"""Shared fixtures: small worlds for fast tests, and one default-world run shared by slow tests."""
from __future__ import annotations

# Before anything imports numpy or torch: the suite runs with the kernels pinned, as the CLI does.
from simulator.reproducibility import pin_kernels

pin_kernels()

import os  # noqa: E402

# The tests run on the CPU: "auto" policies stay there even on a GPU machine (the goldens are
# CPU figures); tests marked gpu name "cuda" explicitly. Study workers inherit the variable.
os.environ["SATBED_DEVICE"] = "cpu"

import pytest  # noqa: E402

from simulator.config import SimConfig  # noqa: E402
from tests_support import tiny  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests are skipped where torch sees no CUDA GPU, and the skip says why
    (``-ra`` lists it in the summary)."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch
    if torch.cuda.is_available():
        return
    reason = (f"gpu test: torch {torch.__version__} sees no CUDA GPU on this machine "
              f"({'a CPU-only build' if torch.version.cuda is None else 'no device visible'})")
    for item in gpu_tests:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread, as the A/B runner uses: fastest on a busy 2-core machine, and every
    seeded comparison in the suite runs under the same setting."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_config():
    """The :func:`tests_support.tiny` factory (400 users by default)."""
    return lambda n_users=400, **kw: tiny(n_users=n_users, **kw)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The built-in default world (SimConfig()), simulated once per test session: (result, logs)."""
    from simulator.logs import read_impressions
    from experiments.simulate import simulate
    out = tmp_path_factory.mktemp("default_run")
    result = simulate(SimConfig(), out / "run", progress=False)
    return result, read_impressions(out / "run" / "logs")
