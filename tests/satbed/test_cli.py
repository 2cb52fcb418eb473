"""The `satbed` command line: simulate writes a complete run directory; bad input exits 2."""
from __future__ import annotations

import json

import pytest

from satbed.cli import main
from simulator.config import SimConfig, load_toml

TINY = ["--users.n_users", "200", "--catalog.n_items", "800", "--platform.days", "1", "--quiet"]


def test_simulate_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--seed", "3", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "impressions" in printed and "questionnaires answered" in printed
    assert {p.name for p in out.iterdir()} >= {"config.toml", "items.parquet", "users.parquet", "logs",
                                               "summary.json", "summary.md", "status.json"}
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    config = load_toml(SimConfig, out / "config.toml")
    assert config.seed == 3 and config.users.n_users == 200
    summary = json.loads((out / "summary.json").read_text())
    assert summary["impressions"] > 0 and summary["users"] == 200


def test_rerun_from_written_config_reproduces(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["simulate", "--out", str(a), "--seed", "5", *TINY]) == 0
    assert main(["simulate", "--out", str(b), "--config", str(a / "config.toml"), "--quiet"]) == 0
    assert json.loads((a / "summary.json").read_text())["impressions"] == \
        json.loads((b / "summary.json").read_text())["impressions"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--questionnaire.base_rate", "1.5"], "questionnaire.base_rate=1.5 must be in [0, 1]"),
    (["--users.n_users", "-3"], "users.n_users=-3 must be an integer >= 1"),
    (["--platform.policy", "nope"], "unknown policy 'nope'; registered:"),
    (["--config", "/nonexistent.toml"], "does not exist"),
])
def test_bad_input_exits_2_with_message(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    assert main(["simulate", "--out", str(out), *TINY, *args]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()        # nothing written for a rejected config


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["simulate", "--out", str(out), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_policies_lists_registered(capsys):
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert "production" in out and "random" in out


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    from simulator.config import iter_fields
    for name, _, _ in iter_fields(SimConfig):
        if name != "seed":
            assert f"--{name}" in text


def test_ab_exposes_the_learning_schedule_and_the_policy_seed(tmp_path):
    """--ab.learning, --ab.update_epochs and --policy_seed reach the experiment config."""
    from satbed.cli import build_parser, config_from_args
    from experiments.config import ExperimentConfig
    args = build_parser().parse_args(["ab", "--ab.learning", "update", "--ab.update_epochs", "2", "--policy_seed", "3",
                                      "--seed", "5"])
    config = config_from_args(args, ExperimentConfig)
    assert (config.ab.learning, config.ab.update_epochs, config.policy_seed, config.world.seed) == ("update", 2, 3, 5)


# ----------------------------------------------------------------------------- the command line's interface
def test_version_and_python_dash_m_satbed():
    import subprocess
    import sys

    from satbed import __version__
    run = subprocess.run([sys.executable, "-m", "satbed", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == f"satbed {__version__}"
    assert __version__[0].isdigit()


def test_help_imports_no_numerics_or_policies():
    """``satbed --help`` stays fast by importing lazily: no torch, scipy, pandas or policy module."""
    import subprocess
    import sys
    code = ("import sys; from satbed.cli import build_parser; p = build_parser(); p.format_help(); "
            "[a.choices[c].format_help() for a in p._subparsers._group_actions for c in a.choices]; "
            "heavy = sorted(m for m in ('torch', 'scipy', 'pandas', 'policies', 'estimators', 'experiments.runner') "
            "if m in sys.modules); print(heavy)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_every_subcommand_has_a_description_and_each_default_shows_once(monkeypatch):
    from satbed.cli import build_parser
    monkeypatch.setenv("COLUMNS", "4000")         # one line per option, so a line is one option's help
    parser = build_parser()
    (sub,) = parser._subparsers._group_actions
    assert set(sub.choices) == {"simulate", "ab", "aa", "scenarios", "calibrate", "policies", "study"}
    for name, p in sub.choices.items():
        assert p.description, f"satbed {name} has no description"
        text = p.format_help()
        assert "(default: None)" not in text, name
        assert not [line for line in text.splitlines() if line.count("default") > 1], name


def test_set_reaches_bucket_params_by_name_or_index_and_names_a_bad_path():
    from experiments.config import ExperimentConfig
    from satbed.cli import build_parser, config_from_args
    from simulator.config import ConfigError
    parser = build_parser()
    args = parser.parse_args(["ab", "--set", "buckets.easq.params.temperature=0.5", "--set", "buckets.0.share=0.2",
                              "--set", "ab.days=2"])
    config = config_from_args(args, ExperimentConfig)
    by_name = {b.name: b for b in config.buckets}
    assert by_name["easq"].params == {"temperature": 0.5} and config.ab.days == 2
    assert config.buckets[0].share == 0.2
    for bad, message in (("buckets.nosuch.params.x=1", "buckets has no element 'nosuch'; names: control"),
                         ("buckets.easq=1", "names a whole table"),
                         ("days", "must be KEY=VALUE")):
        with pytest.raises(ConfigError, match=message):
            config_from_args(parser.parse_args(["ab", "--set", bad]), ExperimentConfig)
    sim = config_from_args(parser.parse_args(["simulate", "--set", "users.n_users=123"]))
    assert sim.users.n_users == 123


def test_a_bad_set_path_exits_2_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["ab", "--set", "buckets.nosuch.params.x=1", "--out", str(out), "--quiet"]) == 2
    assert "buckets has no element 'nosuch'" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_policy_parameter_exits_2_before_any_simulation(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["ab", "--set", "buckets.easq.params.fusio=1", "--out", str(out), "--quiet"]) == 2
    assert "easq: fusio is not a parameter; easq takes: " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("params, message", [
    ("{ temperature = -1.0 }", "easq: temperature=-1.0 must be > 0"),
    ("{ train = { lr = true } }", "easq: train.lr=True must be a finite number"),
    ("{ train = { max_epochs = 1.5 } }", "easq: train.max_epochs=1.5 must be an integer >= 1"),
    ('{ device = "tpu" }', "easq: device='tpu' is not a device"),
])
def test_a_bad_policy_parameter_value_is_a_config_error_exit_2(params, message, tmp_path, capsys):
    """A policy's ParameterError is a ConfigError: reported in one line, exit code 2, nothing written."""
    config, out = tmp_path / "ab.toml", tmp_path / "run"
    config.write_text('[[buckets]]\nname = "control"\npolicy = "production"\nshare = 0.5\n\n'
                      f'[[buckets]]\nname = "easq"\npolicy = "easq"\nshare = 0.5\nparams = {params}\n')
    assert main(["ab", "--config", str(config), "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
