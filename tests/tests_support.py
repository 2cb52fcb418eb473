"""Helpers importable by tests (tests/ is on pytest's python path)."""
from __future__ import annotations

from dataclasses import replace

from simulator.config import SimConfig


def tiny(*, n_users: int = 300, n_items: int = 1500, days: int = 2, seed: int = 0, **sections) -> SimConfig:
    """A small world that simulates in about a second; ``sections`` replace fields per section."""
    c = SimConfig(seed=seed)
    c = replace(c, users=replace(c.users, n_users=n_users), catalog=replace(c.catalog, n_items=n_items),
                platform=replace(c.platform, days=days))
    for section, fields in sections.items():
        c = replace(c, **{section: replace(getattr(c, section), **fields)})
    return c
