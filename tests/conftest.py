"""Shared fixtures: small worlds for fast tests, and one default-world run shared by slow tests."""
from __future__ import annotations

from dataclasses import replace

import pytest

from simulator.config import SimConfig


def small_config(*, n_users: int = 400, n_items: int = 1500, days: int = 2, seed: int = 0,
                 **sections) -> SimConfig:
    """A small world that simulates in about a second; ``sections`` replace fields per section."""
    c = SimConfig(seed=seed)
    c = replace(c, users=replace(c.users, n_users=n_users), catalog=replace(c.catalog, n_items=n_items),
                platform=replace(c.platform, days=days))
    for section, fields in sections.items():
        c = replace(c, **{section: replace(getattr(c, section), **fields)})
    return c


@pytest.fixture
def make_config():
    """The :func:`small_config` factory."""
    return small_config


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """The built-in default world (SimConfig()), simulated once per test session: (result, logs)."""
    from simulator.logs import read_impressions
    from simulator.simulate import simulate
    out = tmp_path_factory.mktemp("default_run")
    result = simulate(SimConfig(), out / "run", progress=False)
    return result, read_impressions(out / "run" / "logs")
