"""Targets: published figures a world should reproduce, each within a tolerance, and the comparison.

A targets table is a TOML file of ``[[target]]`` rows (``simulator/calibration/targets.toml`` is
the public short-video one; a platform writes its own)::

    doc = "What these figures are and which source the table follows where sources disagree."

    [[target]]
    name = "like_rate"             # a figure of simulator.calibration.measure.FIGURES
    value = 0.01848
    tolerance = 0.1                # relative: |measured / value - 1| <= 0.1
    source = "KuaiRand-Pure, KuaiSim's KuaiRandDataset.ipynb: is_like 26,546 of 1,436,609 impressions"
    default_meets = false          # optional: whether today's default world meets it
    note = "optional: why, and what the source counts"

``tolerance_kind = "absolute"`` makes the tolerance a difference (``|measured - value| <= 0.05``),
for figures that are shares or quantiles rather than rates; ``min_days`` (default 1) is the
shortest run in which the figure is comparable (a return-gap share needs weeks).

:func:`compare` puts a run's figures beside the rows; it is also what a scenario's published
counts are checked with (:func:`simulator.scenarios.compare`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.calibration.measure import FIGURES
from simulator.config import ConfigError, read_toml

PUBLIC_TARGETS = Path(__file__).with_name("targets.toml")
"""The public short-video figures (KuaiRand-Pure, KuaiRec, SAQRec, SINE)."""
TOLERANCE_KINDS = ("relative", "absolute")
MISS_CAP = 1000.0
"""The miss (error in tolerances) given to a figure that is undefined in a run (NaN: an empty
denominator), and the most any figure's miss counts in a fit."""


@dataclass(frozen=True)
class Target:
    """One published figure and how close a world must come to it.

    Attributes:
        name: the figure (a key of :data:`simulator.calibration.measure.FIGURES` in a targets file;
            a scenario's counts use their own names).
        value: the published value.
        tolerance: how far the measured figure may be: a fraction of ``value`` (relative) or a
            difference (absolute).
        source: the paper, data set, notebook or table the value comes from.
        tolerance_kind: ``"relative"`` or ``"absolute"``.
        note: what the source counts and any choice made, in a sentence or two.
        default_meets: whether the default world is expected to meet it (None: not stated).
        min_days: the shortest run, in days, in which the figure is comparable.
    """
    name: str
    value: float
    tolerance: float
    source: str
    tolerance_kind: str = "relative"
    note: str = ""
    default_meets: bool | None = None
    min_days: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name):
            raise ConfigError(f"name={self.name!r} must be a non-empty string")
        if not (isinstance(self.value, (int, float)) and not isinstance(self.value, bool) and math.isfinite(self.value)):
            raise ConfigError(f"value={self.value!r} must be a finite number")
        if self.tolerance_kind not in TOLERANCE_KINDS:
            raise ConfigError(f"tolerance_kind={self.tolerance_kind!r} must be one of {', '.join(TOLERANCE_KINDS)}")
        if self.tolerance_kind == "relative" and self.value == 0:
            raise ConfigError("value=0 needs tolerance_kind = \"absolute\" (a relative error of 0 is undefined)")
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and self.tolerance > 0):
            raise ConfigError(f"tolerance={self.tolerance!r} must be a number > 0")
        if not (isinstance(self.source, str) and self.source.strip()):
            raise ConfigError(f"source={self.source!r} must name the paper, data set or notebook and its table")
        if self.default_meets is not None and not isinstance(self.default_meets, bool):
            raise ConfigError(f"default_meets={self.default_meets!r} must be true or false")
        if not (isinstance(self.min_days, int) and not isinstance(self.min_days, bool) and self.min_days >= 1):
            raise ConfigError(f"min_days={self.min_days!r} must be an integer >= 1")

    def miss(self, measured: float) -> float:
        """The error in tolerances: (measured / value - 1) / tolerance, or (measured - value) / tolerance;
        :data:`MISS_CAP` for an undefined figure, and never beyond it. Within tolerance: |miss| <= 1."""
        if not math.isfinite(measured):
            return MISS_CAP
        error = measured / self.value - 1.0 if self.tolerance_kind == "relative" else measured - self.value
        return max(-MISS_CAP, min(MISS_CAP, error / self.tolerance))


@dataclass(frozen=True)
class TargetTable:
    """A targets file: its documentation and its rows, one per figure."""
    doc: str
    rows: tuple[Target, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.rows]

    def select(self, names: Sequence[str] | None) -> TargetTable:
        """The rows ``names`` (all if None), in the file's order; an unknown name is an error listing the rows."""
        if names is None:
            return self
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ConfigError(f"unknown target row(s) {', '.join(unknown)}; the table's rows: {', '.join(self.names)}")
        return TargetTable(self.doc, tuple(t for t in self.rows if t.name in set(names)))


TARGET_KEYS = frozenset(f.name for f in fields(Target))


def parse_targets(data: Mapping[str, Any], *, where: str, figures: Sequence[str]) -> TargetTable:
    """Check a targets file's tables: a doc, ``[[target]]`` rows with known keys, known and unique figures.

    Args:
        data: the file's tables.
        where: the file, named in every error.
        figures: the figure names a row may have.
    Raises:
        ConfigError: naming the file, the row (its number and name) and the bad key or value.
    """
    unknown = sorted(set(data) - {"doc", "target"})
    if unknown:
        raise ConfigError(f"targets file {where}: unknown key(s) {', '.join(unknown)}; a targets file holds doc "
                          "and [[target]] rows")
    doc = data.get("doc", "")
    if not isinstance(doc, str):
        raise ConfigError(f"targets file {where}: doc must be a string")
    raw = data.get("target")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"targets file {where} has no [[target]] rows")
    rows: list[Target] = []
    for i, row in enumerate(raw, start=1):
        label = f"targets file {where}, row {i}" + (f" ({row['name']})" if isinstance(row, dict) and "name" in row else "")
        if not isinstance(row, dict):
            raise ConfigError(f"{label}: must be a table")
        extra = sorted(set(row) - TARGET_KEYS)
        if extra:
            raise ConfigError(f"{label}: unknown key(s) {', '.join(extra)}; valid keys: {', '.join(sorted(TARGET_KEYS))}")
        missing = sorted({"name", "value", "tolerance", "source"} - set(row))
        if missing:
            raise ConfigError(f"{label}: missing key(s) {', '.join(missing)}")
        try:
            target = Target(**row)
        except ConfigError as err:
            raise ConfigError(f"{label}: {err}") from None
        if target.name not in figures:
            raise ConfigError(f"{label}: unknown figure {target.name!r}; known figures: {', '.join(figures)}")
        if target.name in {t.name for t in rows}:
            raise ConfigError(f"{label}: figure {target.name!r} has a row already")
        rows.append(target)
    return TargetTable(doc.strip(), tuple(rows))


def load_targets(path: str | Path) -> TargetTable:
    """Read and check a targets file (see the module's documentation)."""
    if not Path(path).is_file():
        raise ConfigError(f"targets file {path} does not exist")
    return parse_targets(read_toml(path), where=str(path), figures=list(FIGURES))


def compare(measured: Mapping[str, float], targets: Sequence[Target]) -> pd.DataFrame:
    """One row per target: the target, the measured figure, its error and whether it is within tolerance.

    Args:
        measured: figures by name (a figure missing from it is NaN: not measured).
        targets: the rows to compare with.
    Returns:
        ``figure``, ``target``, ``tolerance``, ``tolerance_kind``, ``measured``, ``relative_error``
        (measured / target - 1), ``miss`` (the error in tolerances, :meth:`Target.miss`), ``within``
        (|miss| <= 1; False for a figure not measured) and ``source``.
    """
    rows = []
    for t in targets:
        value = float(measured.get(t.name, float("nan")))
        miss = t.miss(value)
        rows.append({"figure": t.name, "target": float(t.value), "tolerance": t.tolerance,
                     "tolerance_kind": t.tolerance_kind, "measured": value,
                     "relative_error": value / t.value - 1.0 if t.value else float("nan"),
                     "miss": miss, "within": bool(math.isfinite(value) and abs(miss) <= 1.0), "source": t.source})
    return pd.DataFrame(rows)
