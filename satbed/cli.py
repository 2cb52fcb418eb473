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
