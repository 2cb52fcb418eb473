"""Named worlds: every scenario is listed, loads and is documented; precedence scenario < file < flags;
the former module constants are config fields with today's values; interest drift; the paper regimes'
marginals at a reduced number of users."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest

from satbed.cli import build_parser, config_from_args, main
from tests_support import first_world
from simulator.config import ConfigError, SimConfig, load_toml, with_overrides
from experiments.config import ExperimentConfig
from simulator.scenarios import (EXTENSIVE, MARGINAL_COLUMNS, Targets, _parse, compare, get_scenario,
                                 list_scenarios, load_scenario, marginals, scale_model, scenario_doc)

REQUIRED = ("default", "clickbait", "engaged_response", "skip_rich", "drifting", "survey_rich",
            "saqrec_commercial", "sine_kuaishou", "kuairand")
TINY = ["--users.n_users", "60", "--catalog.n_items", "600", "--platform.days", "1", "--quiet"]


def test_registry_lists_the_required_scenarios_default_first():
    names = list_scenarios()
    assert set(REQUIRED) <= set(names)
    assert names[0] == "default"


@pytest.mark.parametrize("name", list_scenarios())
def test_every_scenario_loads_validates_and_has_a_one_line_doc(name):
    config = load_scenario(name)
    assert isinstance(config, SimConfig)
    doc = scenario_doc(name)
    summary = get_scenario(name).summary
    assert doc.splitlines()[0] == summary and summary.endswith(".") and len(summary) <= 130
    assert len(doc.splitlines()) >= 3, "a summary line, a blank line and a description"
    assert config.seed == 0, "a scenario is a world, not a run: it sets no seed"


def test_the_readme_documents_every_scenario():
    page = (Path(__file__).resolve().parents[2] / "docs" / "world.md").read_text()
    section = page[page.index("## Scenarios"):]
    for name in list_scenarios():
        assert f"| `{name}` |" in section, f"docs/world.md, Scenarios: no row for {name}"


def test_default_scenario_is_todays_world():
    assert load_scenario("default") == SimConfig()
    assert get_scenario("default").overrides == {}


def test_unknown_scenario_is_an_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown scenario 'nope'; known scenarios: default, ") as info:
        load_scenario("nope")
    assert all(name in str(info.value) for name in REQUIRED)


def test_overrides_go_on_top_and_keep_the_scenarios_other_fields():
    config = load_scenario("survey_rich", {"users.n_users": 50, "questionnaire": {"per_user_daily_cap": 5}})
    assert config.users.n_users == 50 and config.users.willingness_mean == 0.5
    assert config.questionnaire.per_user_daily_cap == 5 and config.questionnaire.base_rate == 0.6
    with pytest.raises(ConfigError, match=r"questionnaire.base_rate=2.0 must be in \[0, 1\]"):
        load_scenario("survey_rich", {"questionnaire.base_rate": 2.0})


def test_scenario_overrides_are_what_each_world_promises():
    assert load_scenario("clickbait").catalog.clickbait_corr < 0 < SimConfig().catalog.clickbait_corr
    assert load_scenario("drifting").users.interest_drift > 0 == SimConfig().users.interest_drift
    rich = load_scenario("survey_rich").questionnaire
    assert rich.response_bias == rich.extremity_bias == 0 and rich.base_rate > 8 * SimConfig().questionnaire.base_rate
    engaged = load_scenario("engaged_response")
    q = engaged.questionnaire
    assert (q.response_bias, q.extremity_bias, q.response_watch, q.response_feedback, q.response_depth) == \
        (0.0, 0.0, 2.0, 1.0, -0.3)
    assert engaged.users.random_responder_share == 0.0
    skip = load_scenario("skip_rich").behaviour
    assert skip.skip_engage > SimConfig().behaviour.skip_engage                 # skips follow engagement closely
    assert skip.engage_interest > SimConfig().behaviour.engage_interest         # and engagement follows interest


BAD_SCENARIO_FILES = [
    ({"users": {"n_users": 5}}, "doc must be a non-empty string"),
    ({"doc": "x.", "seed": 3}, "unknown key(s) seed"),
    ({"doc": "x.", "userz": {}}, "unknown key(s) userz"),
    ({"doc": "x.", "users": {"n_users": 0}}, "n_users=0 must be an integer >= 1"),
    ({"doc": "x.", "targets": {"source": "s", "users": 1, "interactions": 1, "interactions_are": "clicks",
                               "positive": 1, "negative": 1, "positive_negative": "survey"}},
     "targets.interactions_are='clicks' must be one of"),
]


@pytest.mark.parametrize(("data", "fragment"), BAD_SCENARIO_FILES)
def test_bad_scenario_files_are_named_errors(data, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        _parse("bad", data, "scenarios/bad.toml")
    assert "scenarios/bad.toml" in str(info.value)


# ----------------------------------------------------------------------------- precedence and the CLI
def test_precedence_scenario_then_config_file_then_flags(tmp_path):
    path = tmp_path / "world.toml"
    path.write_text("[users]\nwillingness_mean = 0.4\nn_users = 80\n")
    args = build_parser().parse_args(["simulate", "--scenario", "survey_rich", "--config", str(path),
                                      "--users.n_users", "70"])
    config = config_from_args(args)
    assert config.questionnaire.base_rate == 0.6           # the scenario
    assert config.users.willingness_mean == 0.4            # the file over the scenario
    assert config.users.n_users == 70                      # the flag over the file


def test_config_files_name_a_scenario_and_the_flag_replaces_it(tmp_path):
    path = tmp_path / "world.toml"
    path.write_text('scenario = "drifting"\n[users]\nn_users = 80\n')
    config = load_toml(SimConfig, path)
    assert config.users.interest_drift == 0.3 and config.users.n_users == 80
    config = config_from_args(build_parser().parse_args(["simulate", "--config", str(path), "--scenario",
                                                         "clickbait"]))
    assert config.users.interest_drift == 0.0 and config.catalog.clickbait_corr == -0.5
    assert config.users.n_users == 80
    path.write_text('scenario = "nope"\n')
    with pytest.raises(ConfigError, match=r"world.toml: scenario: unknown scenario 'nope'"):
        load_toml(SimConfig, path)


@pytest.mark.parametrize("command", ["ab", "aa"])
def test_ab_and_aa_take_a_scenario_for_their_world(tmp_path, command):
    args = build_parser().parse_args([command, "--scenario", "drifting", "--world.users.n_users", "90"])
    config = config_from_args(args, ExperimentConfig)
    assert config.world.users.interest_drift == 0.3 and config.world.users.n_users == 90
    path = tmp_path / "ab.toml"
    path.write_text('ab.days = 2\n[world]\nscenario = "survey_rich"\n[world.users]\nn_users = 100\n')
    config = load_toml(ExperimentConfig, path)
    assert config.world.questionnaire.base_rate == 0.6 and config.world.users.n_users == 100 and config.ab.days == 2


def test_a_built_config_refuses_a_scenario_override():
    with pytest.raises(ConfigError, match="cannot be applied to a built config"):
        with_overrides(SimConfig(), {"scenario": "drifting"})
    with pytest.raises(ConfigError, match="cannot be applied to a built config"):
        with_overrides(ExperimentConfig(), {"world.scenario": "drifting"})


def test_satbed_scenarios_lists_one_line_each(capsys):
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_scenarios()
    assert all(get_scenario(line.split()[0]).summary in line for line in lines)
    assert main(["scenarios", "kuairand"]) == 0
    shown = capsys.readouterr().out
    assert "[platform]" in shown and "days = 31" in shown and "Targets (SAQRec" in shown


def test_simulate_with_a_scenario(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--scenario", "drifting", "--out", str(out), *TINY]) == 0
    config = load_toml(SimConfig, out / "config.toml")         # the resolved world, scenario applied
    assert config.users.interest_drift == 0.3 and config.users.n_users == 60


@pytest.mark.parametrize("command", ["simulate", "ab", "aa", "scenarios"])
def test_unknown_scenario_exits_2_and_writes_nothing(tmp_path, capsys, command):
    out = tmp_path / "run"
    argv = ["scenarios", "nope"] if command == "scenarios" else [command, "--scenario", "nope", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'; known scenarios: default, " in err
    assert not out.exists()


def test_check_needs_targets(tmp_path, capsys):
    assert main(["scenarios", "default", "--check", str(tmp_path)]) == 2
    assert "has no [targets]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- study configs
def test_study_configs_take_a_scenario_for_their_world(tmp_path):
    from studies.engine.base import get_study, load_config
    study = get_study("aa_validity")
    path = tmp_path / "aa.toml"
    path.write_text('[world]\nscenario = "survey_rich"\n[world.users]\nn_users = 100\n'
                    '[fast]\nworld.scenario = "drifting"\n')
    config = load_config(study, path=path)
    assert config.world.questionnaire.base_rate == 0.6 and config.world.users.n_users == 100
    fast = load_config(study, path=path, variant="fast")       # the variant's scenario, the file's n_users
    assert fast.world.users.interest_drift == 0.3 and fast.world.questionnaire.base_rate == SimConfig().questionnaire.base_rate
    assert fast.world.users.n_users == 100
    assert load_config(study, path=path, overrides={"world.scenario": "clickbait"}).world.catalog.clickbait_corr == -0.5


def test_study_cli_scenario_flag(capsys):
    assert main(["study", "positive_control", "--fast", "--scenario", "drifting", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "interest_drift = 0.3" in printed and "n_users = 300" in printed
    assert main(["study", "positive_control", "--scenario", "nope", "--print-config"]) == 2
    assert "unknown scenario 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- former module constants
FORMER_CONSTANTS = [    # (field, today's value, where the constant or literal lived)
    ("users.diurnal", (3, 2, 1, 1, 1, 1, 2, 4, 6, 6, 6, 7, 9, 8, 6, 6, 6, 7, 9, 11, 12, 12, 9, 5), "platform.DIURNAL"),
    ("users.fatigue_decay", 0.8, "platform.FATIGUE_DECAY"),
    ("users.session_fatigue_carry", 0.3, "platform.SESSION_FATIGUE_CARRY"),
    ("behaviour.satisfaction_ema", 0.1, "platform.SATISFACTION_EMA"),
    ("platform.leaf_click_decay", 0.7, "features.LEAF_CLICK_DECAY"),
    ("platform.popularity_decay", 0.5, "FeatureStore(popularity_decay=0.5)"),
    ("platform.history_length", 50, "FeatureStore(history_length=50)"),
    ("platform.recall_history", 20, "recall._INTEREST_HISTORY"),
    ("catalog.leaf_zipf", 0.6, "world: leaf weights 1 / rank ** 0.6"),
    ("catalog.author_zipf", 1.1, "world: author weights 1 / rank ** 1.1"),
    ("catalog.author_quality_share", 0.25, "world: author quality N(0, 0.5), item N(0, sqrt(0.75))"),
    ("catalog.issue_flagged_beta", (2.0, 3.0), "world: Beta(2, 3)"),
    ("catalog.issue_background_beta", (0.5, 200.0), "world: Beta(0.5, 200)"),
    ("users.issue_sensitivity_shape", 2.0, "world: Gamma(2, mean / 2)"),
    ("users.activity_shape", 2.0, "world: Gamma(2, mean / 2)"),
    ("users.patience_user_sigma", 1.0, "world: exp(0.5 N(0, 1)), 1.0 since the recalibration to the public targets"),
    ("users.tenure_scale_days", 200.0, "world: exponential(200)"),
    ("users.interest_drift", 0.0, "new: no drift"),
]


@pytest.fixture(scope="module")
def simulate_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--help"])
    return out.getvalue()


@pytest.mark.parametrize(("dotted", "value", "where"), FORMER_CONSTANTS)
def test_former_constants_are_documented_fields_with_todays_values(dotted, value, where, simulate_help):
    section, name = dotted.split(".")
    config_field = {f.name: f for f in dataclasses.fields(getattr(SimConfig(), section))}[name]
    assert getattr(getattr(SimConfig(), section), name) == value, where
    assert config_field.metadata["doc"]
    assert f"--{dotted}" in simulate_help                   # every field is a documented option


def test_the_constants_are_gone_from_the_modules():
    import simulator.features
    import simulator.platform
    import simulator.recall
    for module, name in ((simulator.platform, "DIURNAL"), (simulator.platform, "FATIGUE_DECAY"),
                         (simulator.platform, "SESSION_FATIGUE_CARRY"), (simulator.platform, "SATISFACTION_EMA"),
                         (simulator.features, "LEAF_CLICK_DECAY"), (simulator.recall, "_INTEREST_HISTORY")):
        assert not hasattr(module, name), f"{module.__name__}.{name} is a config field now"


@pytest.mark.parametrize(("argv", "dotted", "value"), [
    (["--users.diurnal", ",".join(["1"] * 24)], "users.diurnal", (1.0,) * 24),
    (["--catalog.issue_flagged_beta", "1,4"], "catalog.issue_flagged_beta", (1.0, 4.0)),
])
def test_number_lists_on_the_command_line(argv, dotted, value):
    config = config_from_args(build_parser().parse_args(["simulate", *argv]))
    section, name = dotted.split(".")
    assert getattr(getattr(config, section), name) == value


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"users.diurnal": (1.0,) * 23}, "diurnal="),
    ({"users.diurnal": (0.0,) * 24}, "not all 0"),
    ({"catalog.issue_flagged_beta": (1.0, 0.0)}, "must be two numbers (a, b), both > 0"),
    ({"users.fatigue_decay": 1.5}, "fatigue_decay=1.5 must be in [0, 1]"),
    ({"users.interest_drift": -0.1}, "interest_drift=-0.1 must be >= 0"),
    ({"platform.recall_history": 0}, "recall_history=0 must be an integer >= 1"),
])
def test_new_fields_are_validated(overrides, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        with_overrides(SimConfig(), overrides)


# ----------------------------------------------------------------------------- interest drift
def _platform(config, path):
    """A platform on ``config``'s world served by the production ranker, logging under ``path``."""
    import pandas as pd

    from policies import make_policy
    from simulator.logs import LogWriter
    from simulator.platform import Bucket, Platform
    from simulator.schema import LogData
    from simulator.simulate import seed_streams
    from simulator.world import World
    streams = seed_streams(config.seed)
    world = World.generate(config, np.random.default_rng(streams["world"]))
    empty = LogData(pd.DataFrame(), world.catalog.table(), world.users.table()).observable()
    policy = make_policy("production").fit(empty, rng=np.random.default_rng(1))
    bucket = Bucket.from_seed("all", policy, 0, streams["buckets"])
    return Platform(world, [bucket], np.zeros(config.users.n_users, dtype=np.int64), LogWriter(path, ["all"]),
                    streams["arrivals"])


def _drift_config(drift: float) -> SimConfig:
    return first_world(load_scenario("default", {"users.n_users": 150, "catalog.n_items": 500, "platform.days": 2,
                                                 "users.interest_drift": drift}))


def test_interest_drift_moves_interests_and_keeps_them_unit(tmp_path):
    platform = _platform(_drift_config(0.3), tmp_path / "a")
    before = platform.world.users.interests.copy()
    platform.run(2)
    after = platform.world.users.interests
    assert np.allclose(np.linalg.norm(after, axis=-1), 1.0, atol=1e-5)
    cos = (before * after).sum(axis=-1)                       # (U, K)
    had_session = platform.session_id >= 0
    assert had_session.sum() > 100
    assert cos[had_session].mean() < 0.97
    assert np.array_equal(before[~had_session], after[~had_session])   # only at a session start
    strong = _platform(_drift_config(1.0), tmp_path / "b")   # a larger step moves further
    start = strong.world.users.interests.copy()
    strong.run(2)
    assert (start * strong.world.users.interests).sum(axis=-1)[had_session].mean() < cos[had_session].mean()


def test_no_drift_draws_nothing_and_changes_nothing(tmp_path):
    platform = _platform(_drift_config(0.0), tmp_path)
    assert platform.drift_rng is None
    before = platform.world.users.interests.copy()
    platform.run(2)
    assert np.array_equal(platform.world.users.interests, before)


def test_drift_is_reproducible_and_leaves_the_arrival_stream_alone(tmp_path):
    a, b = _platform(_drift_config(0.3), tmp_path / "a"), _platform(_drift_config(0.3), tmp_path / "b")
    a.run(1)
    b.run(1)
    assert np.array_equal(a.world.users.interests, b.world.users.interests)
    off, on = _platform(_drift_config(0.0), tmp_path / "c"), _platform(_drift_config(0.3), tmp_path / "d")
    off.start_day(0)            # who comes back on the first day, and when: the same draws
    on.start_day(0)
    assert np.array_equal(off._pending_t, on._pending_t) and np.array_equal(off._pending_u, on._pending_u)


# ----------------------------------------------------------------------------- the paper regimes
REGIMES = [name for name in list_scenarios() if get_scenario(name).targets is not None]
REDUCTION = 20


def test_the_paper_regimes_have_targets():
    assert {"saqrec_commercial", "sine_kuaishou", "kuairand"} <= set(REGIMES)
    for name in REGIMES:
        config, targets = load_scenario(name), get_scenario(name).targets
        assert config.users.n_users == targets.users, f"{name}: the world has the data set's users"


def test_marginals_count_as_the_targets_say():
    import pandas as pd
    logs = pd.DataFrame({"user_id": [0, 0, 1, 2], "effective_view": [True, False, True, False],
                         "skip": [False, True, False, True], "survey_submitted": [True, False, True, False],
                         "survey_type": ["satisfaction", None, "satisfaction", None],
                         "survey_answer": ["like", None, "neutral", None]})
    survey = Targets("s", users=3, interactions=2, interactions_are="effective_views", questionnaires=1,
                     positive=1, negative=1, positive_negative="survey")
    m = marginals(logs, survey)
    assert (m["users"], m["interactions"], m["questionnaires"], m["positive"], m["negative"]) == (3, 2, 1, 1, 0)
    views = dataclasses.replace(survey, interactions_are="effective_views+skips", positive_negative="views")
    m = marginals(logs, views)
    assert (m["interactions"], m["positive"], m["negative"]) == (4, 2, 2)
    table = compare(m, views)
    assert set(table["figure"]) >= {"users", "interactions", "interactions_per_user", "positive_per_negative"}


def test_a_scale_model_divides_the_sizes_and_keeps_the_rates():
    full = load_scenario("saqrec_commercial")
    small = scale_model(full, 20)
    for dotted in EXTENSIVE:
        section, name = dotted.split(".")
        assert getattr(getattr(small, section), name) == round(getattr(getattr(full, section), name) / 20)
    assert small.users.activity_mean == full.users.activity_mean and small.platform.days == full.platform.days
    assert small.questionnaire == full.questionnaire and small.behaviour == full.behaviour
    assert scale_model(SimConfig(), 1000).catalog.n_items == SimConfig().platform.n_candidates
    with pytest.raises(ConfigError, match="factor=0.5 must be >= 1"):
        scale_model(full, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", REGIMES)
def test_paper_regime_marginals_in_a_twentieth_scale_model(tmp_path, name):
    """Interactions per user, questionnaires per interaction and positive:negative within the targets'
    10% in a 1/20 scale model (users, items, authors and the popular pool divided by 20, the same
    days); the full sizes were measured once (docs/world.md, Scenarios)."""
    from simulator.logs import read_impressions
    from experiments.simulate import simulate
    targets = get_scenario(name).targets
    config = scale_model(load_scenario(name), REDUCTION)
    simulate(config, tmp_path / name, progress=False)
    measured = marginals(read_impressions(tmp_path / name / "logs", columns=MARGINAL_COLUMNS), targets)
    table = compare(measured, targets, ratios_only=True)
    assert table["within"].all(), f"{name}:\n{table.to_string()}"
