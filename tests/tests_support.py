"""Helpers importable by tests (tests/ is on pytest's python path)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from simulator.config import SimConfig


def tiny(*, n_users: int = 300, n_items: int = 1500, days: int = 2, seed: int = 0, **sections) -> SimConfig:
    """A small world that simulates in about a second; ``sections`` replace fields per section."""
    c = SimConfig(seed=seed)
    c = replace(c, users=replace(c.users, n_users=n_users), catalog=replace(c.catalog, n_items=n_items),
                platform=replace(c.platform, days=days))
    for section, fields in sections.items():
        c = replace(c, **{section: replace(getattr(c, section), **fields)})
    return c


def assert_calibrated(prob: np.ndarray, outcome: np.ndarray, *, bins: int = 10, min_count: int = 300,
                      name: str = "") -> int:
    """Empirical rates in quantile bins of the oracle probability match the bins' mean probability.

    Each bin must agree within 4 binomial standard errors (plus 1e-4); returns the bins checked.
    """
    prob, outcome = np.asarray(prob, float), np.asarray(outcome, float)
    values = np.unique(prob)
    if len(values) <= bins:               # a discrete probability: one bin per value
        which, n_bins = np.searchsorted(values, prob), len(values)
    else:
        edges = np.unique(np.quantile(prob, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, len(edges) - 2)
        n_bins = len(edges) - 1
    checked = 0
    for b in range(n_bins):
        sel = which == b
        n = sel.sum()
        if n < min_count:
            continue
        p = prob[sel].mean()
        se = np.sqrt(max(np.mean(prob[sel] * (1 - prob[sel])), 1e-6) / n)
        assert abs(outcome[sel].mean() - p) < 4 * se + 1e-4, f"{name}: bin {b} rate {outcome[sel].mean():.4f} vs p {p:.4f}"
        checked += 1
    return checked


def assert_means_calibrated(expected, outcome, *, bins: int = 10, name: str = "") -> None:
    """Mean outcomes in quantile bins of the oracle expectation match the bins' mean expectation,
    each within 4 standard errors plus 0.05 (e.g. watch time against ``true_expected_watch_time``)."""
    frame = pd.DataFrame({"e": np.asarray(expected, float), "y": np.asarray(outcome, float)})
    g = frame.groupby(pd.qcut(frame["e"], bins, duplicates="drop"), observed=True)
    mean, want, se = g["y"].mean(), g["e"].mean(), g["y"].std() / np.sqrt(g.size())
    bad = np.abs(mean - want) >= 4 * se + 0.05
    assert not bad.any(), f"{name}: bins {list(mean.index[bad])} mean {mean[bad].tolist()} vs {want[bad].tolist()}"


def first_world(config: SimConfig) -> SimConfig:
    """``config`` with the knobs of the first default world (scenario ``first_world``: denser explicit
    feedback, 25 s videos, no replays, a daily return coin) wherever it still has today's default,
    so a value the test set itself (a questionnaire rate, a session budget) stays.

    The unit tests of mechanisms that need dense explicit feedback (hundreds of dislikes in a small
    run) or views that end at the video's end were written for that world and run in it."""
    from simulator.config import with_overrides
    from simulator.scenarios import scenario_overrides
    today = SimConfig()
    dotted = {f"{section}.{name}": value for section, fields in scenario_overrides("first_world").items()
              for name, value in fields.items()
              if getattr(getattr(config, section), name) == getattr(getattr(today, section), name)}
    return with_overrides(config, dotted)
