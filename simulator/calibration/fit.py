"""Fitting a world's knobs to a targets table by the simulated method of moments.

The world is simulated small (a scale model of the base world, :func:`simulator.scenarios.scale_model`,
over a day or two) on a fixed set of seeds: common random numbers, so that two knob values are
compared on the same users, catalog and draws, and the objective is a deterministic function of
the knobs. Each fitted row's *miss* is its error in units of its tolerance
(:meth:`~simulator.calibration.targets.Target.miss`) of the figure's mean over the seeds; the
objective is the mean squared miss.

The search is a derivative-free Gauss-Newton: a linear model of the misses is interpolated from
simulations one step apart along each knob (a secant Jacobian, as DFO-LS does; no derivative of the
simulator exists), and scipy's ``least_squares`` (trust-region reflective) takes the steps, restarted
from its best setting until a restart finds nothing better or the budget is spent (:func:`search`).
Knobs are scaled so that one unit is their ``step``; bounds, where given, are enforced. The least-squares
structure matters: each knob mostly drives a few rows, and the model sees which. Nelder-Mead and Powell,
tried first on three knobs and three rows, did not: Nelder-Mead traded skips for fewer likes and
dislikes and never came back within 80 settings, Powell's first line search followed another row's
noise.

Before the search, the start and one step along each knob are simulated (the first model's points);
a knob whose step moves none of the fitted figures is an error (with common random numbers "moves
none" is exact).

The serving policy comes from ``make_policy(config)`` (the simulator does not know the policy
registry; :func:`experiments.simulate.serving_policy` is the one ``satbed calibrate`` passes).
"""
from __future__ import annotations

import difflib
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from tqdm.auto import tqdm

from simulator.calibration.measure import columns_for, measure, over_seeds
from simulator.calibration.targets import MISS_CAP, TargetTable, compare
from simulator.config import ConfigError, SimConfig, iter_fields, with_overrides
from simulator.logs import read_impressions
from simulator.scenarios import EXTENSIVE, scale_model
from simulator.schema import LogData
from simulator.simulate import generate_world, serve_world

SIZES = (*EXTENSIVE, "platform.days")
"""Fields a calibration sets from its own size (``users``, ``days``), never knobs."""
TOLERANCE = 1e-2
"""``least_squares``' xtol and ftol: a round ends when a step changes the knobs or the objective by less
than this share (finer would only chase the objective's noise)."""
NUMERIC_FIELDS = {name: tp for name, _, tp in iter_fields(SimConfig) if tp in (int, float) and name != "seed"}
"""The fields a knob may be: every int or float field of :class:`SimConfig` but the seed."""


@dataclass(frozen=True)
class Knob:
    """A numeric config field to fit.

    Attributes:
        name: the dotted field (``behaviour.like_bias``).
        start: its value in the base world, where the search starts.
        step: one unit of the search (its first move along the knob): a tenth of the bounds' width,
            else a tenth of ``|start|`` (0.1 at 0; at least 1 for an integer field).
        low, high: bounds (None: only the field's own validation).
        integer: an integer field, rounded at every evaluation.
    """
    name: str
    start: float
    step: float
    low: float | None = None
    high: float | None = None
    integer: bool = False

    def value(self, z: float) -> float | int:
        """The field's value ``z`` steps from the start (rounded for an integer field)."""
        v = self.start + z * self.step
        return int(round(v)) if self.integer else float(v)

    def bounds(self) -> tuple[float | None, float | None]:
        """The bounds in steps from the start."""
        return (None if self.low is None else (self.low - self.start) / self.step,
                None if self.high is None else (self.high - self.start) / self.step)


def parse_knobs(specs: Sequence[str], base: SimConfig) -> tuple[Knob, ...]:
    """Knobs from ``NAME`` or ``NAME=LOW:HIGH`` specs, starting at ``base``'s values.

    Raises:
        ConfigError: an unknown or non-numeric field, a size, a repeated knob, or bad bounds; the
            message names the spec.
    """
    knobs: list[Knob] = []
    for spec in specs:
        name, _, bounds = (s.strip() for s in spec.partition("="))
        if name not in NUMERIC_FIELDS:
            close = difflib.get_close_matches(name, NUMERIC_FIELDS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown knob {name!r}: a knob is a numeric SimConfig field such as "
                              f"behaviour.like_bias (satbed simulate --help lists them){hint}")
        if name in SIZES:
            raise ConfigError(f"knob {name!r} is a size of the simulated world, set by the calibration's users "
                              "and days, not a knob")
        if name in (k.name for k in knobs):
            raise ConfigError(f"knob {name!r} is named twice")
        section, field = name.split(".")
        start = float(getattr(getattr(base, section), field))
        low = high = None
        if bounds:
            try:
                low, high = (float(b) for b in bounds.split(":"))
            except ValueError:
                raise ConfigError(f"knob {spec!r}: bounds must be LOW:HIGH, e.g. {name}=-8:-2") from None
            if not (low < high and low <= start <= high):
                raise ConfigError(f"knob {spec!r}: bounds must satisfy LOW < HIGH and contain the start {start:g}")
        integer = NUMERIC_FIELDS[name] is int
        step = (high - low) / 10 if low is not None else (0.1 * abs(start) or 0.1)
        knobs.append(Knob(name, start, max(step, 1.0) if integer else step, low, high, integer))
    if not knobs:
        raise ConfigError("no knobs: name at least one, e.g. --knobs behaviour.like_bias")
    return tuple(knobs)


def check_budget(budget: int, knobs: Sequence[Knob]) -> None:
    """A budget must cover the start and one step along each knob."""
    if not (isinstance(budget, int) and budget >= len(knobs) + 1):
        raise ConfigError(f"budget={budget!r} must be an integer >= {len(knobs) + 1} (the start and one step "
                          "along each knob)")


def calibration_world(base: SimConfig, *, users: int, days: int) -> SimConfig:
    """The world a calibration simulates: ``base`` scaled to ``users`` users (its catalog, authors and
    popular pool in proportion), over ``days`` days."""
    if not (isinstance(users, int) and users >= 1):
        raise ConfigError(f"users={users!r} must be an integer >= 1")
    if not (isinstance(days, int) and days >= 1):
        raise ConfigError(f"days={days!r} must be an integer >= 1")
    small = scale_model(base, max(1.0, base.users.n_users / users))
    return with_overrides(small, {"users.n_users": users, "platform.days": days})


def simulate_figures(config: SimConfig, make_policy: Callable[[SimConfig], Any], seeds: Sequence[int],
                     names: Sequence[str], *, workdir: str | Path | None = None) -> list[dict[str, float]]:
    """The figures ``names`` of ``config``'s world served by ``make_policy(config)``, one dict per seed.

    Each seed's logs go to a temporary directory (under ``workdir`` if given), removed afterwards.
    """
    out = []
    for seed in seeds:
        run = with_overrides(config, {"seed": int(seed)})
        with tempfile.TemporaryDirectory(dir=workdir, prefix="calibrate-") as tmp:
            world = generate_world(run)
            serve_world(world, make_policy(run), Path(tmp), progress=False)
            logs = read_impressions(Path(tmp) / "logs", columns=columns_for(names))
        out.append(measure(LogData(logs, world.catalog.table(), world.users.table()), names))
    return out


def achieved(targets: TargetTable, config: SimConfig, make_policy: Callable[[SimConfig], Any],
             seeds: Sequence[int], *, alpha: float = 0.05, workdir: str | Path | None = None) -> pd.DataFrame:
    """The target-vs-achieved table of ``config``'s world on ``seeds``.

    Returns:
        :func:`compare` of the figures' means over seeds, with their Student-t interval (``ci_low``,
        ``ci_high``, ``n_seeds``; its ends as misses in ``miss_ci_low``, ``miss_ci_high``),
        ``comparable`` (False for a row whose ``min_days`` exceeds the run's days: its ``within`` is
        then False too, and it says nothing about the world) and the rows' ``default_meets``.
    """
    per_seed = simulate_figures(config, make_policy, seeds, targets.names, workdir=workdir)
    summary = over_seeds(per_seed, alpha=alpha).set_index("figure")
    table = compare(summary["measured"].to_dict(), targets.rows)
    table.insert(5, "ci_low", summary["ci_low"].to_numpy())
    table.insert(6, "ci_high", summary["ci_high"].to_numpy())
    table.insert(7, "n_seeds", summary["n_seeds"].to_numpy())
    for end in ("low", "high"):      # the interval's ends as misses (NaN without an interval)
        table[f"miss_ci_{end}"] = [t.miss(v) if np.isfinite(v) else np.nan
                                   for t, v in zip(targets.rows, table[f"ci_{end}"])]
    table["comparable"] = [t.min_days <= config.platform.days for t in targets.rows]
    table["within"] &= table["comparable"]
    table["default_meets"] = [t.default_meets for t in targets.rows]
    return table


@dataclass(frozen=True)
class Calibration:
    """A finished calibration.

    Attributes:
        knobs: the fitted knobs (their ``start`` is the base world's value).
        fitted: each knob's fitted value, by name.
        config: the base world with the fitted values (full size: what to simulate next).
        rows: the target rows the fit used.
        evaluations: one row per simulated knob setting, in order: the knobs, ``objective`` and
            each fitted figure's mean over the fit's seeds.
        table: the target-vs-achieved table at the fitted knobs on fresh seeds (:func:`achieved`).
        message: the optimiser's closing message.
        seeds, report_seeds: the fit's seeds and the fresh ones of ``table``.
        users, days: the size of the simulated world.
    """
    knobs: tuple[Knob, ...]
    fitted: dict[str, float]
    config: SimConfig
    rows: TargetTable
    evaluations: pd.DataFrame
    table: pd.DataFrame
    message: str
    seeds: tuple[int, ...]
    report_seeds: tuple[int, ...]
    users: int
    days: int

    @property
    def objective(self) -> float:
        """The objective at the fitted knobs (the smallest one evaluated)."""
        return float(self.evaluations["objective"].min())


class _Objective:
    """The objective over knob settings in steps from the start, each setting simulated once.

    Every simulated setting is kept (``records``), so a point the search visits twice (the line
    searches' first points are the knob check's steps) costs nothing the second time.
    """

    def __init__(self, knobs: Sequence[Knob], world: SimConfig, rows: TargetTable,
                 make_policy: Callable[[SimConfig], Any], seeds: Sequence[int], budget: int, bar: tqdm,
                 workdir: str | Path | None):
        self.knobs, self.world, self.rows = tuple(knobs), world, rows
        self.make_policy, self.seeds, self.budget, self.bar, self.workdir = make_policy, tuple(seeds), budget, bar, workdir
        self.records: dict[tuple, dict[str, Any]] = {}

    def values(self, z: Sequence[float]) -> dict[str, float | int]:
        return {k.name: k.value(float(zi)) for k, zi in zip(self.knobs, z)}

    def evaluate(self, z: Sequence[float]) -> dict[str, Any]:
        """The record of setting ``z``: its knob values, figure means and objective (None figures:
        the config is invalid there, and the objective is the cap)."""
        values = self.values(z)
        key = tuple(values.values())
        if key not in self.records:
            if len(self.records) >= self.budget:
                raise BudgetSpent
            try:
                config = with_overrides(self.world, values)
            except ConfigError:
                figures = None
            else:
                per_seed = simulate_figures(config, self.make_policy, self.seeds, self.rows.names,
                                            workdir=self.workdir)
                figures = over_seeds(per_seed).set_index("figure")["measured"].to_dict()
            self.records[key] = {**values, "objective": self.loss(figures), "figures": figures}
            self.bar.update(1)
        return self.records[key]

    def loss(self, figures: Mapping[str, float] | None) -> float:
        if figures is None:
            return MISS_CAP ** 2
        return float(np.mean([t.miss(figures[t.name]) ** 2 for t in self.rows.rows]))

    def misses(self, z: np.ndarray) -> np.ndarray:
        """(rows,) each fitted row's miss at setting ``z`` (the cap for every row where the config is invalid)."""
        figures = self.evaluate(z)["figures"]
        if figures is None:
            return np.full(len(self.rows.rows), MISS_CAP)
        return np.array([t.miss(figures[t.name]) for t in self.rows.rows])

    def direction(self, z: np.ndarray, i: int) -> float | None:
        """+1 or -1: the step along knob ``i`` from ``z`` that stays inside its bounds and its field's
        valid range (forwards first); None if neither does."""
        low, high = self.knobs[i].bounds()
        for d in (1.0, -1.0):
            if (low is None or z[i] + d >= low) and (high is None or z[i] + d <= high) \
                    and self.evaluate(z + d * np.eye(len(z))[i])["figures"] is not None:
                return d
        return None

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        """(rows, knobs) the misses' slopes at ``z``, from one step along each knob (0 for a knob with
        no valid step)."""
        base = self.misses(z)
        columns = []
        for i in range(len(self.knobs)):
            d = self.direction(z, i)
            columns.append(np.zeros_like(base) if d is None else (self.misses(z + d * np.eye(len(z))[i]) - base) / d)
        return np.column_stack(columns)

    def check_knobs(self) -> None:
        """Simulate the start and one step along each knob (:meth:`direction`); a knob with no valid
        step, or whose step moves none of the fitted figures, is an error."""
        start = np.zeros(len(self.knobs))
        before = self.evaluate(start)["figures"]           # the calibration's world itself: valid
        for i, knob in enumerate(self.knobs):
            d = self.direction(start, i)
            if d is None:
                raise ConfigError(f"knob {knob.name}: neither {knob.value(1)} nor {knob.value(-1)} is a valid "
                                  "value; give bounds (NAME=LOW:HIGH)")
            if _same(self.evaluate(d * np.eye(len(start))[i])["figures"], before):
                raise ConfigError(f"knob {knob.name} moved none of the fitted figures ({', '.join(self.rows.names)}) "
                                  f"by one step ({knob.step:g}) from {knob.start:g}: fit it to rows it drives")

    def best(self) -> tuple[np.ndarray, float]:
        """The setting with the smallest objective so far (in steps from the start) and its objective."""
        record = min(self.records.values(), key=lambda r: r["objective"])
        return np.array([(record[k.name] - k.start) / k.step for k in self.knobs]), record["objective"]


class BudgetSpent(Exception):
    """Raised by the objective when a new setting would exceed the budget: the search ends there."""


def search(objective: _Objective) -> str:
    """Trust-region least squares on the misses from the start, restarted from the best setting each
    time it converges, until a restart finds nothing better or the budget is spent. Returns how the
    search ended."""
    low, high = zip(*(k.bounds() for k in objective.knobs))
    bounds = ([-np.inf if v is None else v for v in low], [np.inf if v is None else v for v in high])
    at = np.zeros(len(objective.knobs))
    rounds = 0
    try:
        while True:
            before = objective.best()[1]
            least_squares(objective.misses, at, jac=objective.jacobian, bounds=bounds, method="trf", x_scale=1.0,
                          xtol=TOLERANCE, ftol=TOLERANCE, gtol=None, max_nfev=10 * objective.budget)
            rounds += 1
            at, value = objective.best()
            if value >= before:
                return f"converged: round {rounds} found nothing better than the best setting before it"
    except BudgetSpent:
        return f"budget spent ({objective.budget} settings, {rounds} restart{'s' if rounds != 1 else ''})"


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return all(a[n] == b[n] or (math.isnan(a[n]) and math.isnan(b[n])) for n in a)


def calibrate(targets: TargetTable, knobs: Sequence[Knob], *, base: SimConfig,
              make_policy: Callable[[SimConfig], Any], seeds: Sequence[int] = (0, 1),
              report_seeds: Sequence[int] | None = None, budget: int = 40, users: int = 500, days: int = 2,
              progress: bool = True, workdir: str | Path | None = None) -> Calibration:
    """Fit ``knobs`` of the ``base`` world to ``targets`` (see the module's documentation).

    Args:
        targets: the rows to fit (rows that need a longer run than ``days`` are left out of the fit).
        knobs: from :func:`parse_knobs` on ``base``.
        base: the world whose knobs are fitted; the fitted config is it with the fitted values.
        make_policy: a new serving policy for a config.
        seeds: the common random numbers: every evaluation simulates these seeds.
        report_seeds: fresh seeds for the table at the fitted knobs (default: the four seeds after
            the largest of ``seeds``).
        budget: knob settings simulated at most (each one simulation per seed), the start and its
            step along each knob (``1 + len(knobs)``) included.
        users, days: the size of the simulated world (:func:`calibration_world`).
        progress: show a progress bar over evaluations.
        workdir: where the temporary logs go (default: the system's temporary directory).
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ConfigError("seeds is empty: give at least one seed")
    report_seeds = tuple(range(max(seeds) + 1, max(seeds) + 5)) if report_seeds is None else tuple(report_seeds)
    check_budget(budget, knobs)
    world = calibration_world(base, users=users, days=days)
    rows = targets.select([t.name for t in targets.rows if t.min_days <= days])
    if not rows.rows:
        raise ConfigError(f"no target row is comparable in a {days}-day run (each needs min_days <= {days})")
    with tqdm(total=budget, desc="calibrating", unit="setting", disable=not progress) as bar:
        objective = _Objective(knobs, world, rows, make_policy, seeds, budget, bar, workdir)
        try:
            objective.check_knobs()
        except BudgetSpent:
            raise ConfigError(f"budget={budget} does not cover one valid step along each knob: raise it") from None
        message = search(objective)
    evaluations = pd.DataFrame([{**{k: v for k, v in r.items() if k != "figures"}, **(r["figures"] or {})}
                                for r in objective.records.values()])
    best = evaluations.loc[evaluations["objective"].idxmin()]
    fitted = {k.name: (int(best[k.name]) if k.integer else float(best[k.name])) for k in knobs}
    table = achieved(targets, with_overrides(world, fitted), make_policy, report_seeds, workdir=workdir)
    table.insert(len(table.columns) - 1, "fitted", [t.name in rows.names for t in targets.rows])
    return Calibration(knobs=tuple(knobs), fitted=fitted, config=with_overrides(base, fitted), rows=rows,
                       evaluations=evaluations, table=table, message=message, seeds=seeds,
                       report_seeds=report_seeds, users=users, days=days)

