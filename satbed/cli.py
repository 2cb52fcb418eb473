"""The `satbed` command line."""
from __future__ import annotations

# Kernels are pinned before numpy and torch are imported (simulator/reproducibility.py).
from simulator.reproducibility import KernelSettingError, pin_kernels

try:
    pin_kernels()
    _KERNEL_ERROR: KernelSettingError | None = None
except KernelSettingError as err:                     # reported by main() with exit code 2
    _KERNEL_ERROR = err

import argparse
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.config import ConfigError, SimConfig, iter_fields, load_toml, parse_assignments, with_overrides
from satbed import __version__
from studies.engine.cli import HelpFormatter, add_study_parser, run_command

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse_bool(text: str) -> bool:
    try:
        return _BOOL_WORDS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)") from None


def _number_list(tp: Any) -> type | None:
    """The element type of a ``tuple[float, ...]`` / ``tuple[int, int]`` annotation, else None."""
    if typing.get_origin(tp) is not tuple:
        return None
    inner = {a for a in typing.get_args(tp) if a is not Ellipsis}
    return inner.pop() if len(inner) == 1 and inner <= {int, float} else None


def _parse_list(inner: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(inner(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {inner.__name__}s") from None
    return parse


def add_config_options(parser: argparse.ArgumentParser, cls: type = SimConfig) -> None:
    """One ``--section.field VALUE`` option per config field, documented from the field's metadata.

    Lists of numbers (e.g. ``users.diurnal``) take comma-separated values (``--users.diurnal 1,1,...``).
    """
    groups: dict[str, Any] = {}
    for dotted, f, tp in iter_fields(cls):
        inner = _number_list(tp)
        if dotted.endswith(".seed") or dotted == "seed" or (tp not in (int, float, str, bool) and inner is None):
            continue          # the seed has --seed; tables (buckets, params) are set in the TOML file
        section = dotted.split(".")[0]
        group = groups.get(section) or parser.add_argument_group(
            f"[{section}] options (override the config file)")
        groups[section] = group
        if inner is not None:
            conv, metavar = _parse_list(inner), f"{inner.__name__.upper()},..."
            default = ",".join(f"{v:g}" for v in f.default)
        else:
            conv = _parse_bool if tp is bool else tp if tp in (int, float, str) else str
            metavar, default = tp.__name__.upper(), f.default
        group.add_argument(f"--{dotted}", dest=f"set:{dotted}", type=conv, metavar=metavar,
                           help=f"{f.metadata.get('doc', '')} (default: {default})")


SCENARIO_HELP = ("named world to start from (`satbed scenarios` lists them); precedence, lowest first: the "
                 "scenario < the config file < the --section.field options")


SET_HELP = ("override any config key, e.g. --set users.n_users=500 or, in an A/B config, "
            "--set buckets.easq.params.temperature=0.5 (a list element by its name or index; repeatable; "
            "the same dialect as `satbed study --set`)")


def config_from_args(args: argparse.Namespace, cls: type = SimConfig) -> Any:
    """The config of a command: the scenario (--scenario), then the file (--config), then the options
    (``--section.field`` and ``--set KEY=VALUE``, in that order)."""
    scenario = getattr(args, "scenario", None)
    config = load_toml(cls, args.config, scenario=scenario) if args.config or scenario else cls()
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    overrides.update(parse_assignments(getattr(args, "set", None)))
    if args.seed is not None:
        overrides["seed" if cls is SimConfig else "world.seed"] = args.seed
    return with_overrides(config, overrides) if overrides else config


def _cmd_simulate(args: argparse.Namespace) -> int:
    from experiments.simulate import simulate
    from simulator.simulate import format_summary
    config = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / f"simulate-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = simulate(config, out, progress=not args.quiet, overwrite=args.overwrite)
    print(format_summary(result.summary, result.run_dir))
    print(f"Wrote {result.run_dir} (config.toml, items/users.parquet, logs/, summary.md).")
    return 0


def _cmd_ab(args: argparse.Namespace, *, aa: bool = False) -> int:
    from experiments.config import ExperimentConfig, default_out
    from experiments.runner import run_experiment
    config = config_from_args(args, ExperimentConfig)
    out = Path(args.out) if args.out else default_out("aa" if aa else "ab", config.world.seed)
    result = run_experiment(config, out, aa=aa, progress=not args.quiet, overwrite=args.overwrite)
    print(_lift_summary(result))
    print(f"Wrote {result.run_dir}: report.md, daily_lifts.png, lifts.png, metrics.csv, lifts.csv, logs/.")
    return 0


def _lift_summary(result) -> str:
    from experiments.metrics import METRICS_BY_NAME
    lines = [f"SRM p = {result.srm_p_value:.3g}", f"{'bucket':<12} {'metric':<44} {'lift':>9}  95% CI"]
    for _, r in result.lifts.iterrows():
        if r["metric"] not in ("aut", "avt", "p2n", "survey_like_rate_debiased", "oracle_satisfaction"):
            continue
        if not isinstance(r.get("lift"), float) or r["lift"] != r["lift"]:
            continue
        star = "*" if r["significant"] else " "
        lines.append(f"{r['bucket']:<12} {METRICS_BY_NAME[r['metric']].label:<44} {100 * r['lift']:+8.2f}%{star} "
                     f"[{100 * r['lift_ci_low']:+.2f}%, {100 * r['lift_ci_high']:+.2f}%]")
    if len(result.questionnaire_lifts):
        from experiments.report import questionnaire_reading
        lines += ["Did using questionnaires raise satisfaction?",
                  *(line.replace("**", "") for line in questionnaire_reading(result.questionnaire_lifts))]
    return "\n".join(lines)


def _cmd_scenarios(args: argparse.Namespace) -> int:
    from simulator.scenarios import get_scenario, list_scenarios
    if args.name is None:
        if args.check:
            raise ConfigError("--check RUN_DIR needs a scenario name: satbed scenarios NAME --check RUN_DIR")
        names = list_scenarios()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {get_scenario(name).summary}")
        return 0
    scenario = get_scenario(args.name)
    if args.check:
        return _check_scenario(scenario, Path(args.check))
    import tomli_w
    print(f"# {scenario.name}\n\n{scenario.doc}\n")
    print("Overrides of SimConfig's defaults:" if scenario.overrides else "No override: SimConfig's defaults.")
    if scenario.overrides:
        print(tomli_w.dumps(dict(scenario.overrides)), end="")
    if scenario.targets:
        t = scenario.targets
        print(f"\nTargets ({t.source}, within {100 * t.tolerance:g}%): " + ", ".join(
            f"{k} {_figure(v)}" for k, v in {**t.counts(), **t.ratios()}.items()))
    print(f"\nUse: satbed simulate --scenario {scenario.name} [--section.field VALUE ...]")
    return 0


def _figure(value: float) -> str:
    """A count with thousands separators, a ratio with four significant digits."""
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 100 else f"{value:.4g}"


def _check_scenario(scenario, run_dir: Path) -> int:
    """Compare a run's logs with the scenario's targets; exit 1 if a figure is off."""
    from simulator.logs import read_impressions
    from simulator.scenarios import MARGINAL_COLUMNS, compare, marginals
    if scenario.targets is None:
        raise ConfigError(f"scenario {scenario.name!r} has no [targets] to check a run against")
    if not (run_dir / "logs").is_dir():
        raise FileNotFoundError(f"{run_dir} holds no logs/ (a `satbed simulate` run directory)")
    table = compare(marginals(read_impressions(run_dir / "logs", columns=MARGINAL_COLUMNS), scenario.targets),
                    scenario.targets)
    print(f"{scenario.name} vs {scenario.targets.source} (run {run_dir}):")
    print(f"{'figure':<32} {'target':>14} {'measured':>14} {'error':>8}")
    for _, r in table.iterrows():
        print(f"{r['figure']:<32} {_figure(r['target']):>14} {_figure(r['measured']):>14} "
              f"{100 * r['relative_error']:>+7.1f}%"
              f"{'' if r['within'] else '  (off)'}")
    return 0 if table["within"].all() else 1


def _seed_list(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``0:4`` (0, 1, 2, 3) as seeds."""
    try:
        if ":" in text:
            low, high = (int(v) for v in text.split(":"))
            seeds = tuple(range(low, high))
        else:
            seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of seeds (0,1,2 or 0:3)")
    return seeds


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from experiments.simulate import serving_policy
    from simulator.calibration.fit import achieved, calibrate, calibration_world, check_budget, parse_knobs
    from simulator.calibration.report import format_table, write_calibration, write_check
    from simulator.calibration.targets import load_targets
    from simulator.simulate import prepare_run_dir
    targets = load_targets(args.targets).select(args.rows.split(",") if args.rows else None)
    base = config_from_args(args)
    serving_policy(base)                     # an unknown policy fails before anything is simulated
    if args.check:
        if args.knobs:
            raise ConfigError("--check simulates the world as it is: drop --knobs (or drop --check to fit them)")
        world = calibration_world(base, users=args.users, days=args.days)
        out = prepare_run_dir(Path(args.out or f"runs/calibrate-check-{time.strftime('%Y%m%d-%H%M%S')}"),
                              overwrite=args.overwrite)
        table = achieved(targets, world, serving_policy, args.seeds)
        header = (f"# World vs {args.targets}\n\n{args.users} users, {_days(args.days)}, seeds "
                  f"{', '.join(map(str, args.seeds))} (mean and Student-t 95% interval over seeds).")
        print(write_check(table, world, out, header=header))
        print(f"Wrote {out} (calibration.csv, calibration.png, report.md, config.toml).")
        return 0 if table.loc[table["comparable"], "within"].all() else 1
    if not args.knobs:
        raise ConfigError("--knobs is required to fit (e.g. --knobs behaviour.like_bias,behaviour.dislike_bias), "
                          "or --check to only compare the world with the targets")
    knobs = parse_knobs(args.knobs.split(","), base)
    check_budget(args.budget, knobs)
    calibration_world(base, users=args.users, days=args.days)       # a bad size fails before the directory
    out = prepare_run_dir(Path(args.out or f"runs/calibrate-{time.strftime('%Y%m%d-%H%M%S')}"),
                          overwrite=args.overwrite)
    cal = calibrate(targets, knobs, base=base, make_policy=serving_policy, seeds=args.seeds,
                    report_seeds=args.report_seeds, budget=args.budget, users=args.users, days=args.days,
                    progress=not args.quiet)
    header = (f"# Calibration to {args.targets}\n\n{args.users} users, {_days(args.days)}; fitted on seeds "
              f"{', '.join(map(str, cal.seeds))} (common random numbers), rows {', '.join(cal.rows.names)}.")
    print(write_calibration(cal, out, header=header))
    print(f"Wrote {out} (fitted.toml, knobs.csv, evaluations.csv, calibration.csv, calibration.png, report.md).")
    return 0


def _cmd_policies(args: argparse.Namespace) -> int:
    from policies import available_policies
    policies = available_policies()
    width = max(map(len, policies))
    for name, desc in policies.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="satbed", description="Simulated A/B testbed for questionnaire-aware short-video recommendation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = sub.add_parser(
        "simulate", help="simulate the default (or a configured) world and write its logs",
        description="Simulate the world served by the production policy and write a run directory "
                    "(config.toml, items.parquet, users.parquet, logs/day-*/bucket-*/, summary.md). "
                    "Every config field can be set by a TOML file (--config) and overridden one by one.",
        formatter_class=HelpFormatter)
    sim.add_argument("--config", metavar="FILE.toml", help="config file; sections as the options below")
    sim.add_argument("--scenario", metavar="NAME", help=SCENARIO_HELP)
    sim.add_argument("--seed", type=int, help="run seed (overrides the config's seed; default 0)")
    sim.add_argument("--out", metavar="DIR", help="run directory (default: runs/simulate-seed<N>-<time>)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    add_config_options(sim)
    sim.set_defaults(func=_cmd_simulate)
    for name, aa in (("ab", False), ("aa", True)):
        p = sub.add_parser(
            name, help="the main job: a simulated A/B test with a report" if not aa else
            "an A/A test: the same experiment with every bucket on the control policy",
            description=("Run a simulated A/B test: a pre-period served by the production policy trains "
                         "the candidate policies, then each bucket (users split by a salted hash) is served "
                         "by its own policy. Writes report.md, plots, metrics and logs. Buckets are set in "
                         "the TOML file ([[buckets]] tables: name, policy, share, params).")
            if not aa else "Run the configured experiment as an A/A test (every bucket on the control's policy).",
            formatter_class=HelpFormatter)
        p.add_argument("--config", metavar="FILE.toml", help="experiment config (e.g. studies/configs/NAME.toml)")
        p.add_argument("--scenario", metavar="NAME", help=SCENARIO_HELP + " (the world of the experiment; its "
                       "platform.days is not used, see --ab.pre_days and --ab.days)")
        p.add_argument("--seed", type=int, help="world seed (overrides world.seed)")
        p.add_argument("--out", metavar="DIR", help=f"run directory (default: runs/{name}-seed<N>-<time>)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
        from experiments.config import ExperimentConfig
        add_config_options(p, ExperimentConfig)
        p.set_defaults(func=(lambda a, aa=aa: _cmd_ab(a, aa=aa)))
    sc = sub.add_parser(
        "scenarios", help="list the named worlds (scenarios), one line each; NAME shows one",
        description="Named worlds (simulator/scenarios/NAME.toml): the calibrated default, worlds where a "
                    "paper's mechanism is present, and the papers' data regimes. Use one with --scenario NAME "
                    "on simulate, ab and aa, or scenario = \"NAME\" in a config's [world] table.")
    sc.add_argument("name", nargs="?", help="show this scenario's documentation, overrides and targets")
    sc.add_argument("--check", metavar="RUN_DIR",
                    help="compare a `satbed simulate` run's logs with the scenario's targets (exit 1 if off)")
    sc.set_defaults(func=_cmd_scenarios)
    cal = sub.add_parser(
        "calibrate", help="fit world knobs to a table of target figures (or --check a world against it)",
        description="Fit the chosen knobs of a world (numeric config fields) to a targets table by the "
                    "simulated method of moments: a small scale model of the world simulated on fixed seeds "
                    "(common random numbers) at each knob setting, scipy's least_squares on the misses "
                    "(each row's error in its tolerances). Writes the fitted config (fitted.toml), the "
                    "target-vs-achieved table at the fitted knobs on fresh seeds (calibration.csv, report.md) "
                    "and a plot. simulator/calibration/targets.toml holds the public short-video figures; "
                    "docs/calibration.md describes the format.",
        formatter_class=HelpFormatter)
    cal.add_argument("targets", metavar="TARGETS.toml", help="targets table ([[target]] rows: name, value, "
                     "tolerance, source)")
    cal.add_argument("--knobs", metavar="A,B,...", help="config fields to fit, e.g. behaviour.like_bias,"
                     "behaviour.dislike_bias; NAME=LOW:HIGH bounds one")
    cal.add_argument("--rows", metavar="A,B,...", help="target rows to fit and report (default: all)")
    cal.add_argument("--check", action="store_true", help="fit nothing: simulate the world on the seeds and "
                     "compare it with the targets (exit 1 if a row is off)")
    cal.add_argument("--budget", type=int, default=40, help="knob settings simulated at most")
    cal.add_argument("--seeds", type=_seed_list, default=(0, 1), metavar="LIST",
                     help="seeds simulated at every setting (0,1 or 0:4; default: 0,1)")
    cal.add_argument("--report-seeds", type=_seed_list, metavar="LIST",
                     help="fresh seeds of the table at the fitted knobs (default: the four after --seeds)")
    cal.add_argument("--users", type=int, default=500, help="users of the simulated scale model")
    cal.add_argument("--days", type=int, default=2, help="days simulated")
    cal.add_argument("--config", metavar="FILE.toml", help="the world to fit (default: the built-in world)")
    cal.add_argument("--scenario", metavar="NAME", help=SCENARIO_HELP)
    cal.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    cal.add_argument("--out", metavar="DIR", help="output directory (default: runs/calibrate[-check]-<time>)")
    cal.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    cal.add_argument("--quiet", action="store_true", help="no progress bar")
    cal.set_defaults(func=_cmd_calibrate, seed=None)     # the seeds are --seeds; the base world keeps its own
    pol = sub.add_parser("policies", help="list the registered policies, one line each",
                         description="The registered ranking policies (use a name as a bucket's policy): "
                                     "baselines, the item-wise oracle and the paper policies.")
    pol.set_defaults(func=_cmd_policies)
    add_study_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if _KERNEL_ERROR is not None:
        print(f"satbed: error: {_KERNEL_ERROR}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
