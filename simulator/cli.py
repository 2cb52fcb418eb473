"""The `satbed` command line."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.config import ConfigError, SimConfig, iter_fields, load_toml, with_overrides

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse_bool(text: str) -> bool:
    try:
        return _BOOL_WORDS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)") from None


def add_config_options(parser: argparse.ArgumentParser, cls: type = SimConfig) -> None:
    """One ``--section.field VALUE`` option per config field, documented from the field's metadata."""
    groups: dict[str, Any] = {}
    for dotted, f, tp in iter_fields(cls):
        if dotted == "seed":
            continue
        section = dotted.split(".")[0]
        group = groups.get(section) or parser.add_argument_group(
            f"[{section}] options (override the config file)")
        groups[section] = group
        conv = _parse_bool if tp is bool else tp if tp in (int, float, str) else str
        group.add_argument(f"--{dotted}", dest=f"set:{dotted}", type=conv, metavar=tp.__name__.upper(),
                           help=f"{f.metadata.get('doc', '')} (default: {f.default})")


def config_from_args(args: argparse.Namespace, cls: type = SimConfig) -> Any:
    config = load_toml(cls, args.config) if args.config else cls()
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    if args.seed is not None:
        overrides["seed"] = args.seed
    return with_overrides(config, overrides) if overrides else config


def _cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.simulate import format_summary, simulate
    config = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / f"simulate-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = simulate(config, out, progress=not args.quiet, overwrite=args.overwrite)
    print(format_summary(result.summary, result.run_dir))
    print(f"Wrote {result.run_dir} (config.toml, items/users.parquet, logs/, summary.md).")
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = sub.add_parser(
        "simulate", help="simulate the default (or a configured) world and write its logs",
        description="Simulate the world served by the production policy and write a run directory "
                    "(config.toml, items.parquet, users.parquet, logs/day=*/bucket=*/, summary.md). "
                    "Every config field can be set by a TOML file (--config) and overridden one by one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sim.add_argument("--config", metavar="FILE.toml", help="config file; sections as the options below")
    sim.add_argument("--seed", type=int, help="run seed (overrides the config's seed; default 0)")
    sim.add_argument("--out", metavar="DIR", help="run directory (default: runs/simulate-seed<N>-<time>)")
    sim.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(sim)
    sim.set_defaults(func=_cmd_simulate)
    pol = sub.add_parser("policies", help="list the registered policies, one line each")
    pol.set_defaults(func=_cmd_policies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from policies import UnknownPolicyError
    from simulator.schema import SchemaError
    from simulator.simulate import RunDirectoryError
    try:
        return args.func(args)
    except (ConfigError, SchemaError, UnknownPolicyError, RunDirectoryError, FileNotFoundError) as err:
        print(f"satbed: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("satbed: interrupted; the run directory is marked incomplete (status.json)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
