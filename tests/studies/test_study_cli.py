"""`satbed study`: listing, running, entry points, and clear errors for bad names and keys."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import STUDIES

from satbed.cli import main
from simulator.config import ConfigError, SimConfig
from studies.engine.base import available_studies, get_study, load_config, run_study, study_main
from studies.engine.sweep import SequentialExecutor


def test_list_names_every_study(capsys):
    assert main(["study", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert set(STUDIES) <= set(names) and names == sorted(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)        # name + description


def test_run_from_the_command_line(fast_run, capsys):
    out = fast_run("aa_validity")                          # `satbed study aa_validity --fast --out DIR`
    assert (out / "report.md").exists()
    # the same command again resumes from the cache: nothing to run
    assert main(["study", "aa_validity", "--fast", "--out", str(out), "--executor", "sequential", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "0 cells run, 6 from the cache" in printed and "aa_validity: 6 A/A tests" in printed


def test_every_study_module_is_runnable():
    for name in STUDIES:
        study = get_study(name)
        assert study.module == f"studies.{name}" and study.config_path.exists()
        for variant in ("fast", "default", "full"):
            load_config(study, variant=variant)                 # every shipped variant is valid
    done = subprocess.run([sys.executable, "-m", "studies.aa_validity", "--fast", "--print-config",
                           "--set", "replications=3"], capture_output=True, text=True, check=True)
    assert "replications = 3" in done.stdout and "n_users = 250" in done.stdout


PAPER_SCALE = {"saqrec_replication": ("saqrec_commercial", 9756, 381150),
               "sine_replication": ("sine_kuaishou", 37497, 126293)}


@pytest.mark.parametrize("name", sorted(PAPER_SCALE))
def test_the_paper_scale_variant_is_the_papers_own_regime_at_its_size(name, capsys):
    """--paper-scale resolves to the paper-regime world with the paper's users, catalog and a week
    of logs (6 days train, 1 test); the world's own knobs come from the scenario."""
    from simulator.scenarios import get_scenario
    scenario, users, items = PAPER_SCALE[name]
    config = load_config(get_study(name), variant="paper_scale")
    world = config.world
    assert (world.users.n_users, world.catalog.n_items) == (users, items)
    assert world.users.activity_mean == get_scenario(scenario).config().users.activity_mean != SimConfig().users.activity_mean
    assert (config.log_days, config.test_days) == (7, 1)
    assert main(["study", name, "--paper-scale", "--print-config"]) == 0
    assert f"n_users = {users}" in capsys.readouterr().out


def test_paper_scale_is_refused_where_a_study_has_none_and_the_scorecard_runs_both():
    with pytest.raises(ConfigError, match=r"has no \[paper_scale\] table, so it has no paper_scale variant"):
        load_config(get_study("usm_replication"), variant="paper_scale")
    parts = load_config(get_study("scorecard"), variant="paper_scale").parts()
    assert [(study, world, sub.world.users.n_users) for study, world, sub in parts] == [
        ("saqrec_replication", "saqrec_commercial", 9756), ("sine_replication", "sine_kuaishou", 37497)]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["study", "nope"], "unknown study 'nope'; available: aa_validity, bias_ablation"),
    (["study"], "name a study (satbed study NAME) or pass --list"),
    (["study", "aa_validity", "--fast", "--set", "nope=1"], "unknown key(s) nope; valid keys in the top level:"),
    (["study", "aa_validity", "--fast", "--set", "world.users.n_usrs=9"], "unknown key(s) world.users.n_usrs"),
    (["study", "aa_validity", "--set", "replications"], "--set 'replications' must be KEY=VALUE"),
    (["study", "bias_ablation", "--seeds", "0,x"], "--seeds '0,x' must be comma-separated integers"),
    (["study", "aa_validity", "--seeds", "0,1"], "study 'aa_validity' has no seeds list"),
    (["study", "bias_ablation", "--set", "targeting=[\"nowhere\"]"], "targeting: questionnaire.targeting='nowhere'"),
    (["study", "aa_validity", "--executor", "sequential", "--address", "auto"], "only used with executor='ray'"),
])
def test_bad_arguments_are_clear_errors(argv, fragment, capsys):
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_bad_config_files_name_the_key(tmp_path):
    study = get_study("head_to_head")
    path = tmp_path / "h2h.toml"
    path.write_text('seeds = [0]\nbogus = 1\n[[policies]]\nname = "production"\npolicy = "production"\n')
    with pytest.raises(ConfigError, match=r"h2h.toml: unknown key\(s\) bogus"):
        load_config(study, path=path)
    path.write_text('seeds = [0]\n[[policies]]\nname = "production"\npolicy = "production"\n'
                    '[[policies]]\nname = "new"\npolicy = "not_registered"\n')
    with pytest.raises(ConfigError, match=r"policies\[1\] \(new\): unknown policy 'not_registered'; registered:"):
        load_config(study, path=path)
    path.write_text('seeds = [0]\n[[policies]]\nname = "production"\npolicy = "production"\n'
                    '[[policies]]\nname = "r"\npolicy = "random"\n[fast]\nseedz = [1]\n')
    with pytest.raises(ConfigError, match=r"h2h.toml \[fast\]: unknown key\(s\) seedz"):
        load_config(study, path=path, variant="fast")
    with pytest.raises(ConfigError, match=r"has no \[full\] table"):
        load_config(study, path=path, variant="full")
    assert load_config(study, path=path).seeds == (0,)


def test_results_directory_of_another_study_is_refused(fast_run):
    out = fast_run("aa_validity")
    study = get_study("bias_ablation")
    with pytest.raises(ConfigError, match="holds study 'aa_validity', not 'bias_ablation'"):
        run_study(study, load_config(study, variant="fast"), out, SequentialExecutor(), progress=False)


def test_registry_and_entry_point_helpers():
    assert set(STUDIES) <= set(available_studies())
    assert study_main("aa_validity", ["--fast", "--print-config"]) == 0


def test_config_helpers():
    from simulator.config import SimConfig, with_overrides
    from simulator.config import parse_value
    from experiments.config import BucketConfig
    from studies.engine.base import deep_merge, flatten, parse_seeds, policy_buckets, world_variant
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": 3}, "l": [9]}) == {"a": {"b": 3, "c": 2}, "l": [9]}
    assert flatten({"catalog": {"n_items": 5, "clickbait_corr": 0.1}, "seed": 2}) == \
        {"catalog.n_items": 5, "catalog.clickbait_corr": 0.1, "seed": 2}
    base = SimConfig()
    assert world_variant(base, {"catalog": {"n_items": 500}}) == world_variant(base, {"catalog.n_items": 500})
    assert world_variant(base, {"catalog": {"n_items": 500}}).catalog.n_l1 == base.catalog.n_l1   # merged, not replaced
    assert parse_value("3") == 3 and parse_value("[0, 1]") == [0, 1] and parse_value("abc") == "abc"
    assert parse_seeds("0:3") == [0, 1, 2] and parse_seeds("4,2") == [4, 2]
    specs = [BucketConfig("production", "production"), BucketConfig("hot", "production", params={"temperature": 2.0}),
             BucketConfig("random", "random")]
    buckets = policy_buckets(specs, with_overrides(base, {"platform.temperature": 0.3}))
    assert abs(sum(b.share for b in buckets) - 1) < 1e-12
    assert [b.params.get("temperature") for b in buckets] == [0.3, 2.0, None]   # the control logs like the pre-period
