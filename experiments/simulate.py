"""`satbed simulate`: the world served by the policy its config names (see :mod:`simulator.simulate`)."""
from __future__ import annotations

from pathlib import Path

from policies import make_policy
from simulator.config import SimConfig
from simulator.simulate import SimulationResult, run_simulation


def serving_policy(config: SimConfig):
    """A new, unfitted instance of ``config.platform.policy`` (the production policy at the config's
    temperature); an unknown name fails here, before anything is simulated or written."""
    name = config.platform.policy
    params = {"temperature": config.platform.temperature} if name == "production" else {}
    return make_policy(name, **params)


def simulate(config: SimConfig, out: str | Path, *, progress: bool = True,
             overwrite: bool = False) -> SimulationResult:
    """Simulate ``config.platform.days`` days of the world served by ``config.platform.policy``."""
    return run_simulation(config, out, serving_policy(config), progress=progress, overwrite=overwrite)
