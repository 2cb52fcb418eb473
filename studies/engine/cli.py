"""The command line of the studies: ``satbed study`` and ``python -m studies.NAME`` share this parser, and
every ``satbed`` command shares :func:`run_command`'s exit codes (2 for the user's errors)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: not when its help already says it, nor when it is None or off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix (a bad config or policy parameter, an unknown name, a missing
    file): exit code 2. A bad policy parameter is a :class:`~policies.params.ParameterError`, a ConfigError."""
    from policies import UnknownPolicyError
    from simulator.config import ConfigError
    from simulator.schema import SchemaError
    from simulator.simulate import RunDirectoryError
    return ConfigError, SchemaError, UnknownPolicyError, RunDirectoryError, FileNotFoundError


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; the user's errors print one line and return 2, Ctrl-C returns 130."""
    try:
        return func(args)
    except user_errors() as err:
        print(f"satbed: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("satbed: interrupted; the run directory is marked incomplete (status.json)", file=sys.stderr)
        return 130


def cmd_study(args: argparse.Namespace) -> int:
    from studies.engine.base import cli_study
    from studies.engine.sweep import CellError
    try:
        return cli_study(args)
    except CellError as err:
        print(f"satbed: error: {err}", file=sys.stderr)
        return 1


def add_study_parser(sub) -> None:
    st = sub.add_parser(
        "study", help="run a study from studies/ (bias ablations, head-to-head A/B, ...); --list them",
        description="Run a study: a sweep of (config variant x seed) cells, cached in the results directory "
                    "(an interrupted run resumes), summarised in report.md, table.csv and PNG plots. "
                    "Each study has a TOML config (studies/configs/NAME.toml) with a default, a --fast and "
                    "a --full variant; the replication studies also a --paper-scale one.",
        formatter_class=HelpFormatter)
    st.add_argument("name", nargs="?", help="study name (see --list)")
    st.add_argument("--list", action="store_true", help="list the studies, one line each")
    size = st.add_mutually_exclusive_group()
    size.add_argument("--fast", action="store_true", help="the small variant (seconds; what the tests run)")
    size.add_argument("--full", action="store_true", help="the large variant (docs/studies.md: variants and expected times)")
    size.add_argument("--paper-scale", action="store_true",
                      help="the paper's own data regime: its users, catalog and days (saqrec_replication, "
                           "sine_replication, scorecard; docs/studies.md: expected times)")
    st.add_argument("--config", metavar="FILE.toml", help="study config (default: studies/configs/NAME.toml)")
    st.add_argument("--out", metavar="DIR", help="results directory (default: runs/studies/NAME[-fast|-full|-paper_scale])")
    st.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0,1,2 or 0:10 (overrides the config's seeds)")
    st.add_argument("--scenario", metavar="NAME",
                    help="the named world the study's world starts from (its [world] table still overrides it; "
                         "the same as --set world.scenario=NAME)")
    st.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config key, e.g. --set world.users.n_users=500 (repeatable)")
    st.add_argument("--executor", choices=("pool", "ray", "sequential"), default="pool",
                    help="where the cells run: a local process pool, a Ray cluster, or in this process")
    st.add_argument("--workers", type=int, default=2, help="pool processes / CPUs of a local Ray instance")
    st.add_argument("--address", help="Ray cluster address (with --executor ray), e.g. auto or ray://host:10001")
    st.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=cmd_study)



def study_main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m studies.NAME [options]`` (the options of ``satbed study``)."""
    parser = argparse.ArgumentParser(prog="python -m studies")
    add_study_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["study", name, *(sys.argv[1:] if argv is None else argv)])
    return run_command(args.func, args)
