"""Studies: the registry, configs with their variants, the shared run loop and the CLI glue.

A study is one module ``studies/NAME.py`` plus one TOML config ``studies/configs/NAME.toml``.
The module defines a frozen config dataclass, a module-level cell function, the grid of cells
and a summary, and registers them::

    @dataclass(frozen=True, slots=True)
    class MyConfig:
        world: SimConfig = field(default_factory=SimConfig)
        seeds: tuple[int, ...] = (0, 1, 2)

    def run_cell(params: dict, seed: int) -> list[dict]: ...    # one (variant, seed) -> rows
    def cells(config: MyConfig) -> list[Cell]: ...              # the (variant x seed) grid
    def summarise(config, table, out) -> Summary: ...           # table.csv, report.md, plots

    STUDY = register_study("my_study", "one line for `satbed study --list`", config=MyConfig,
                           cells=cells, summarise=summarise, claim="SAQRec §5.5: ...")

    if __name__ == "__main__":
        raise SystemExit(study_main("my_study"))

The TOML file holds the **default** variant at its top level and tables of overrides,
deep-merged into it: ``[fast]`` (the seconds-long variant the tests run against a golden table),
``[full]`` (the large variant, documented with its expected time) and, for the replication
studies with a paper-regime world, ``[paper_scale]`` (the paper's own users, catalog and days;
its expected time is extrapolated in docs/studies.md). Keys are checked like every satbed
config: an unknown key is an error that names it.

:func:`run_study` writes a results directory::

    config.toml     the resolved study config (rerun with --config to reproduce)
    study.json      study name, variant, executor, timings
    cells/          one JSON file per finished (variant, seed) cell: the resumable cache
    cells.csv       every cell's rows, with the cell's labels and seed
    table.csv       the study's main table (the fast variant's golden table in the tests)
    report.md       the table, the paper claim and whether its direction holds, the plots
    *.png           the plots
    status.json     {"state": "complete"} once everything above is written
"""
from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.config import BucketConfig, with_shares
from simulator.atomic import atomic_write_text
from simulator.config import (ConfigError, SimConfig, deep_merge, dump_toml, from_dict, parse_assignments,
                              read_toml, set_dotted, to_dict, with_overrides, world_key)
from studies.engine.sweep import Cell, Executor, PoolExecutor, SweepResult, run_sweep

VARIANTS = ("fast", "default", "full", "paper_scale")
OVERRIDE_VARIANTS = ("fast", "full", "paper_scale")   # tables of overrides in a study's TOML
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"     # studies/configs


class UnknownStudyError(ConfigError):
    """No study of that name; the message lists the registered ones."""


@dataclass
class Summary:
    """What a study's ``summarise`` returns.

    Attributes:
        table: the main table, written as ``table.csv`` (the fast variant's golden table).
        markdown: the body of ``report.md`` (tables, figure links, a reading of the results).
        verdict: one paragraph: does the direction of the paper claim hold in simulation?
        holds: True, False, or None (mixed / not testable at this size).
        tables: further tables, written as ``<name>.csv``.
        headline: a few lines printed at the end of the run (and quoted in the docs).
    """
    table: pd.DataFrame
    markdown: str
    verdict: str
    holds: bool | None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Study:
    """A registered study (see the module docstring)."""
    name: str
    description: str
    config: type
    cells: Callable[[Any], list[Cell]]
    summarise: Callable[[Any, pd.DataFrame, Path], Summary]
    claim: str
    module: str

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.name}.toml"

    def load_config(self, variant: str = "default", path: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> Any:
        return load_config(self, variant=variant, path=path, overrides=overrides)

    def run(self, config: Any, out: str | Path, executor: Executor | None = None, **kw: Any) -> StudyResult:
        return run_study(self, config, out, executor, **kw)


_REGISTRY: dict[str, Study] = {}


def register_study(name: str, description: str, *, config: type, cells: Callable[[Any], list[Cell]],
                   summarise: Callable[[Any, pd.DataFrame, Path], Summary], claim: str) -> Study:
    """Register a study under ``name`` (its module must be ``studies.<name>``).

    When the module runs as ``python -m studies.NAME`` its ``__main__`` copy does not register:
    :func:`study_main` imports the real module, so cell functions (and cache keys) are named
    ``studies.NAME:...`` either way.
    """
    if not is_dataclass(config) or not config.__dataclass_params__.frozen:
        raise TypeError(f"study {name!r}: config must be a frozen dataclass, got {config!r}")
    module = getattr(cells, "__module__", "")
    study = Study(name, description, config, cells, summarise, claim, module)
    if module == "__main__":
        return study
    if name in _REGISTRY and _REGISTRY[name].module != module:
        raise ValueError(f"study name {name!r} is already registered by {_REGISTRY[name].module}")
    _REGISTRY[name] = study
    return study


def _discover() -> list[str]:
    """Import every module of the package so that its studies register; returns import errors."""
    import studies
    errors = []
    for info in pkgutil.iter_modules(studies.__path__):
        if info.name.startswith("_") or info.ispkg:     # _shared helpers and the engine package
            continue
        try:
            importlib.import_module(f"studies.{info.name}")
        except Exception as err:      # one broken module must not hide the other studies
            errors.append(f"studies.{info.name}: {type(err).__name__}: {err}")
            warnings.warn(f"could not import studies.{info.name}: {err}", RuntimeWarning, stacklevel=2)
    return errors


def available_studies() -> dict[str, Study]:
    """Every study in the package, by name (imports the study modules)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_study(name: str) -> Study:
    """The study called ``name``; an unknown name is a :class:`UnknownStudyError` listing the others."""
    if name not in _REGISTRY and name.isidentifier() and name != "engine":
        try:
            importlib.import_module(f"studies.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"studies.{name}":
                raise
    if name not in _REGISTRY:
        known = ", ".join(available_studies()) or "none"
        raise UnknownStudyError(f"unknown study {name!r}; available: {known} (satbed study --list)")
    return _REGISTRY[name]


# ----------------------------------------------------------------------------- configs
def load_config(study: Study, *, variant: str = "default", path: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> Any:
    """The study's config: the TOML file's top level, with the ``[fast]`` / ``[full]`` /
    ``[paper_scale]`` table merged in for those variants, then the dotted ``overrides`` (e.g. ``{"seeds": [0]}``).

    The merging happens on the file's tables, before the config is built, so a world's
    ``scenario = "NAME"`` key (``[world]``, ``[fast.world]`` or ``world.scenario`` in ``overrides``)
    sets the base that every explicit world key, wherever it comes from, overrides.

    Args:
        study: the study.
        variant: ``"fast"``, ``"default"``, ``"full"`` or ``"paper_scale"`` (the replication
            studies in the papers' own data regimes: user counts, catalogs and days).
        path: a config file to use instead of ``studies/configs/NAME.toml``.
        overrides: dotted keys to values, applied last (validated like the file).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant={variant!r} must be one of {', '.join(VARIANTS)}")
    path = Path(path) if path is not None else study.config_path
    data = read_toml(path)
    tables = {v: data.pop(v, None) for v in OVERRIDE_VARIANTS}
    try:
        config = from_dict(study.config, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if variant != "default":
        table = tables[variant]
        if table is None:
            raise ConfigError(f"{path} has no [{variant}] table, so it has no {variant} variant")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{variant}] must be a table of overrides")
        data = deep_merge(data, table)
        try:
            config = from_dict(study.config, data)
        except ConfigError as err:
            raise ConfigError(f"{path} [{variant}]: {err}") from None
    if overrides:
        data = copy.deepcopy(data)
        for key, value in overrides.items():
            set_dotted(data, key, value)
        config = from_dict(study.config, data)
    return config


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0:5"`` (a range) as a list of seeds."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":", 1))
            seeds = list(range(lo, hi))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be comma-separated integers or a range like 0:10") from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r} names no seed")
    return seeds


def check_seeds(name: str, seeds: Sequence[int]) -> None:
    """Seeds: a non-empty list of distinct integers >= 0."""
    if not seeds:
        raise ConfigError(f"{name}=() must list at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{name} must hold integers >= 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{name}={tuple(seeds)} must not repeat a seed")


def check_policies(specs: Sequence[BucketConfig], control: str) -> None:
    """At least two distinct names, ``control`` among them, every policy registered, params valid."""
    from policies import UnknownPolicyError, make_policy
    names = [p.name for p in specs]
    if len(names) < 2:
        raise ConfigError(f"policies must list at least two (the control and one more), got {names}")
    if len(set(names)) != len(names):
        raise ConfigError(f"policy names must be unique, got {names}")
    if control not in names:
        raise ConfigError(f"control={control!r} is not one of the policies: {', '.join(names)}")
    for i, p in enumerate(specs):
        try:
            make_policy(p.policy, **p.params)
        except UnknownPolicyError as err:
            raise ConfigError(f"policies[{i}] ({p.name}): {err}") from None
        except ValueError as err:
            raise ConfigError(f"policies[{i}] ({p.name}): {err}") from None


def is_oracle(policy: str) -> bool:
    """Whether the registered policy reads the ground truth (an upper bound, not deployable)."""
    from policies import is_oracle as registered_oracle
    return registered_oracle(policy)


def policy_buckets(specs: Sequence[BucketConfig], world: SimConfig | None = None) -> tuple[BucketConfig, ...]:
    """A study's policies as A/B buckets: those without a share get equal parts of what the others
    leave (:func:`experiments.config.with_shares`).

    A ``production`` bucket without an explicit ``temperature`` gets the world's
    ``platform.temperature``, as the pre-period's production policy does (and ``satbed simulate``),
    so that the control is the system that logged the training data.
    """
    out = []
    for p in specs:
        params = dict(p.params)
        if p.policy == "production" and "temperature" not in params and world is not None:
            params["temperature"] = world.platform.temperature
        out.append(replace(p, params=params))
    return with_shares(tuple(out))


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: ``{"catalog": {"n_items": 5}}`` -> ``{"catalog.n_items": 5}``."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def lift_rows(lifts: pd.DataFrame) -> list[dict]:
    """A lift table (an :class:`~experiments.runner.ExperimentResult`'s ``lifts``, or
    :func:`experiments.runner.lifts_against`) as plain rows."""
    keep = ("bucket", "metric", "control", "treatment", "difference", "diff_ci_low", "diff_ci_high", "lift",
            "lift_ci_low", "lift_ci_high", "p_value", "p_adjusted")
    rows = []
    for r in lifts.to_dict("records"):
        row = {k: r.get(k, float("nan")) for k in keep}
        row["significant"] = bool(r.get("significant", False))
        rows.append({k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                     for k, v in row.items()})
    return rows


def run_ab_cell(params: Mapping[str, Any], seed: int, prefix: str) -> Any:
    """The A/B test ``params["experiment"]`` (an :class:`ExperimentConfig` as a dict) on the world
    of ``seed``, run without a report in a temporary directory: its ExperimentResult."""
    import tempfile

    from simulator.config import from_dict
    from experiments.config import ExperimentConfig
    from experiments.runner import run_experiment
    config = from_dict(ExperimentConfig, params["experiment"])
    config = replace(config, world=replace(config.world, seed=seed))
    with tempfile.TemporaryDirectory(prefix=f"satbed-{prefix}-") as tmp:
        return run_experiment(config, Path(tmp) / "run", progress=False, report=False)


def run_facts(result: Any) -> dict:
    """A cell's row of run facts: the SRM p-value and the run's phase timings."""
    return {"kind": "run", "bucket": "", "metric": "", "srm_p": float(result.srm_p_value),
            **{f"{k}_s": float(v) for k, v in result.timings.items() if k != "total"}}


def world_variant(world: SimConfig, overrides: Mapping[str, Any], *, seed: int | None = None) -> SimConfig:
    """``world`` with dotted ``overrides`` (and the seed) applied, validated."""
    out = with_overrides(world, flatten(overrides)) if overrides else world
    return with_overrides(out, {"seed": seed}) if seed is not None else out


# ----------------------------------------------------------------------------- running
@dataclass
class StudyResult:
    out: Path
    summary: Summary
    sweep: SweepResult
    seconds: float


def _prepare(out: Path, study: Study) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "study.json"
    if meta.exists():
        try:
            other = json.loads(meta.read_text()).get("study")
        except json.JSONDecodeError:
            other = None
        if other not in (None, study.name):
            raise ConfigError(f"results directory {out} holds study {other!r}, not {study.name!r}; "
                              "choose another --out")
    elif out.exists() and any(p for p in out.iterdir() if p.name != "cells"):
        raise ConfigError(f"results directory {out} is not empty and holds no study; choose another --out")


def run_study(study: Study | str, config: Any, out: str | Path, executor: Executor | None = None, *,
              progress: bool = True, variant: str = "default") -> StudyResult:
    """Run (or resume) a study's sweep and write its results directory.

    Args:
        study: the study or its name.
        config: its config (see :func:`load_config`).
        out: results directory; rerunning into the same directory reuses the cached cells.
        executor: default a 2-worker process pool.
        progress: progress bar over the cells.
        variant: recorded in ``study.json`` and the report.
    """
    study = get_study(study) if isinstance(study, str) else study
    if not isinstance(config, study.config):
        raise TypeError(f"config must be a {study.config.__name__}, got {type(config).__name__}")
    out = Path(out)
    _prepare(out, study)
    executor = executor or PoolExecutor()
    started = time.perf_counter()
    from simulator.simulate import write_status
    write_status(out, "running", study=study.name)
    dump_toml(config, out / "config.toml")
    cells = study.cells(config)
    try:
        history = json.loads((out / "study.json").read_text()).get("history", [])
    except (FileNotFoundError, json.JSONDecodeError):
        history = []
    meta = {"study": study.name, "variant": variant, "executor": executor.name, "cells": len(cells),
            "history": history}
    atomic_write_text(out / "study.json", json.dumps(meta, indent=2) + "\n")
    try:
        sweep = run_sweep(cells, out, executor, progress=progress, desc=study.name)
        atomic_write_text(out / "cells.csv", sweep.table.to_csv(index=False, float_format="%.10g"))
        summary = study.summarise(config, sweep.table, out)
    except BaseException as err:
        write_status(out, "incomplete", study=study.name, reason=f"{type(err).__name__}: {err}"[:2000],
                     note="finished cells are cached in cells/; rerun the same command to resume")
        raise
    atomic_write_text(out / "table.csv", summary.table.to_csv(index=False, float_format="%.10g"))
    for name, frame in summary.tables.items():
        if name in ("table", "cells"):
            raise ValueError(f"study {study.name!r}: extra table name {name!r} is reserved (table.csv, cells.csv)")
        atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False, float_format="%.10g"))
    seconds = time.perf_counter() - started
    keys = list({c.key: c for c in cells})
    cell_total = sum(sweep.cell_seconds.get(k, 0.0) for k in keys)
    cpu_total = sum(sweep.cell_cpu_seconds.get(k, 0.0) for k in keys)
    meta.update(unique_cells=len(sweep.computed) + len(sweep.cached), computed=len(sweep.computed),
                cached=len(sweep.cached), seconds=round(seconds, 1), cell_seconds_total=round(cell_total, 1),
                cell_cpu_seconds_total=round(cpu_total, 1), holds=summary.holds)
    history.append({k: meta[k] for k in ("variant", "executor", "computed", "cached", "seconds")}
                   | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    atomic_write_text(out / "study.json", json.dumps(meta, indent=2) + "\n")
    atomic_write_text(out / "report.md", _report(study, variant, meta, summary))
    write_status(out, "complete", study=study.name, seconds=round(seconds, 1))
    return StudyResult(out, summary, sweep, seconds)


def _report(study: Study, variant: str, meta: dict[str, Any], summary: Summary) -> str:
    flag = {"fast": " --fast", "full": " --full", "paper_scale": " --paper-scale", "default": ""}[variant]
    verdict = {True: "**yes**", False: "**no**", None: "**mixed / not established**"}[summary.holds]
    lines = [f"# Study `{study.name}`", "", study.description, "",
             f"Variant `{variant}`: {meta['unique_cells']} cells ({meta['computed']} run now, {meta['cached']} "
             f"from the cache) on the `{meta['executor']}` executor in {meta['seconds']:.0f} s wall "
             f"({meta['cell_seconds_total']:.0f} s of cell time, {meta['cell_cpu_seconds_total']:.0f} CPU s).", "",
             "## Paper claim", "", study.claim, "",
             f"Does its direction hold in simulation? {verdict} {summary.verdict}", "",
             summary.markdown.rstrip(), "",
             "## Files and reproduction", "",
             "`table.csv` (the table above, unrounded), `cells.csv` (every cell's rows), `cells/` (the cache: "
             "rerunning the same command resumes an interrupted sweep), `config.toml` (the resolved config), "
             "the PNG plots.", "",
             f"Reproduce: `satbed study {study.name}{flag} --out DIR` (or `python -m studies.{study.name}"
             f"{flag} --out DIR`; `--config config.toml` reruns exactly this config)."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line
def cli_study(args: Any) -> int:
    """``satbed study`` (argparse namespace from :func:`satbed.cli.build_parser`)."""
    from studies.engine.sweep import make_executor
    if args.list:
        studies = available_studies()
        width = max(map(len, studies), default=0)
        for name, s in studies.items():
            print(f"{name:<{width}}  {s.description}")
        return 0
    if not args.name:
        raise ConfigError("name a study (satbed study NAME) or pass --list")
    study = get_study(args.name)
    variant = ("fast" if args.fast else "full" if args.full
               else "paper_scale" if getattr(args, "paper_scale", False) else "default")
    overrides = parse_assignments(args.set)
    if args.seeds is not None:
        if "seeds" not in {f.name for f in fields(study.config)}:
            raise ConfigError(f"study {study.name!r} has no seeds list; set its config instead (--set KEY=VALUE)")
        overrides["seeds"] = parse_seeds(args.seeds)
    if getattr(args, "scenario", None):
        key = world_key(study.config)
        if not key:
            raise ConfigError(f"study {study.name!r} has no world table, so it cannot take --scenario")
        overrides[f"{key}.scenario"] = args.scenario
    config = load_config(study, variant=variant, path=args.config, overrides=overrides)
    if args.print_config:
        import tomli_w
        print(tomli_w.dumps(to_dict(config)), end="")
        return 0
    executor = make_executor(args.executor, workers=args.workers, address=args.address)
    suffix = "" if variant == "default" else f"-{variant}"
    out = Path(args.out) if args.out else Path("runs") / "studies" / f"{study.name}{suffix}"
    result = run_study(study, config, out, executor, progress=not args.quiet, variant=variant)
    for line in result.summary.headline:
        print(line)
    print(f"Wrote {result.out}: report.md, table.csv, cells.csv, plots; {len(result.sweep.computed)} cells run, "
          f"{len(result.sweep.cached)} from the cache, {result.seconds:.0f} s.")
    return 0


def study_main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m studies.NAME [options]`` (see :mod:`studies.engine.cli`)."""
    from studies.engine.cli import study_main as main
    return main(name, argv)
