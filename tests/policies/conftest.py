"""Fixtures for policy tests: a tiny simulated world, built once per session."""
from __future__ import annotations

import numpy as np
import pytest
from policy_support import TinyWorld, feature_store_from

from tests_support import first_world, tiny


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorld:
    from simulator.logs import read_run
    from experiments.simulate import simulate
    from simulator.simulate import seed_streams
    from simulator.world import World
    config = first_world(tiny(n_users=300, n_items=1500, days=2))
    out = tmp_path_factory.mktemp("policies_tiny") / "run"
    simulate(config, out, progress=False)
    logs = read_run(out)
    train = logs.observable()
    world = World.generate(config, np.random.default_rng(seed_streams(config.seed)["world"]))
    return TinyWorld(config, logs, train, feature_store_from(train), world)
