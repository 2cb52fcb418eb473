"""`satbed simulate`: the world served by the policy its config names (see :mod:`simulator.simulate`)."""
from __future__ import annotations

from pathlib import Path

from policies import make_policy
from simulator.config import SimConfig
from simulator.simulate import SimulationResult, run_simulation


def simulate(config: SimConfig, out: str | Path, *, progress: bool = True,
             overwrite: bool = False) -> SimulationResult:
    """Simulate ``config.platform.days`` days of the world served by ``config.platform.policy``."""
    name = config.platform.policy
    params = {"temperature": config.platform.temperature} if name == "production" else {}
    policy = make_policy(name, **params)     # an unknown name fails before anything is written
    return run_simulation(config, out, policy, progress=progress, overwrite=overwrite)
