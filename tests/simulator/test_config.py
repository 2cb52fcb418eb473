"""Configs: validation names the field, TOML loading rejects unknown keys, round trips are exact."""
from __future__ import annotations

import dataclasses

import pytest

from simulator.config import (CatalogConfig, ConfigError, PlatformConfig, QuestionnaireConfig, SimConfig,
                              UserConfig, dump_toml, from_dict, load_toml, with_overrides)

BAD_VALUES = [
    (QuestionnaireConfig, {"base_rate": 1.5}, "base_rate=1.5 must be in [0, 1]"),
    (QuestionnaireConfig, {"base_rate": -0.1}, "base_rate=-0.1 must be in [0, 1]"),
    (QuestionnaireConfig, {"targeting": "everyone"}, "targeting='everyone' must be one of"),
    (QuestionnaireConfig, {"per_user_daily_cap": -1}, "per_user_daily_cap=-1 must be an integer >= 0"),
    (UserConfig, {"n_users": 0}, "n_users=0 must be an integer >= 1"),
    (UserConfig, {"n_users": -5}, "n_users=-5 must be an integer >= 1"),
    (UserConfig, {"willingness_mean": 1.0}, "willingness_mean=1.0 must be in (0, 1)"),
    (UserConfig, {"interest_switch_prob": float("nan")}, "interest_switch_prob=nan must be in [0, 1]"),
    (CatalogConfig, {"n_items": 0}, "n_items=0 must be an integer >= 1"),
    (CatalogConfig, {"clickbait_corr": 2.0}, "clickbait_corr=2.0 must be in [-1, 1]"),
    (CatalogConfig, {"duration_min_s": 100.0}, "duration_min_s <= duration_median_s"),
    (PlatformConfig, {"n_candidates": 5}, "n_candidates=5 must be >= page_size=10"),
    (PlatformConfig, {"recall_popular": 0.7, "recall_interest": 0.5}, "must be <= 1"),
    (PlatformConfig, {"tick_s": 0.0}, "tick_s=0.0 must be > 0"),
    (PlatformConfig, {"days": 0}, "days=0 must be an integer >= 1"),
]


@pytest.mark.parametrize(("cls", "kwargs", "fragment"), BAD_VALUES)
def test_bad_values_name_field_value_and_bound(cls, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        cls(**kwargs)


def test_cross_section_check():
    with pytest.raises(ConfigError, match="duration_min_s=2.0 must be > behaviour.skip_threshold_s"):
        SimConfig(catalog=CatalogConfig(duration_min_s=2.0))


BAD_TOML = [
    ("[users]\nn_userz = 3\n", "unknown key(s) users.n_userz"),
    ("[usres]\nn_users = 3\n", "unknown key(s) usres"),
    ("[users]\nn_users = 'many'\n", "users.n_users='many' must be an integer"),
    ("[users]\nn_users = 2.5\n", "users.n_users=2.5 must be an integer"),
    ("[questionnaire]\nafter_effective_view_only = 1\n", "must be true or false"),
    ("[questionnaire]\nbase_rate = 3\n", "questionnaire.base_rate=3.0 must be in [0, 1]"),
    ("users = 3\n", "users must be a table"),
    ("[users\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_TOML)
def test_bad_toml_files(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_toml(SimConfig, path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(SimConfig, tmp_path / "nope.toml")


def test_toml_round_trip_is_exact(tmp_path):
    config = with_overrides(SimConfig(), {"seed": 7, "users.n_users": 123, "questionnaire.targeting":
                                          "fresh_items", "behaviour.sat_bias": -0.25})
    dump_toml(config, tmp_path / "c.toml")
    assert load_toml(SimConfig, tmp_path / "c.toml") == config


def test_partial_toml_keeps_defaults(tmp_path):
    (tmp_path / "c.toml").write_text("seed = 3\n[platform]\ndays = 2\n")
    config = load_toml(SimConfig, tmp_path / "c.toml")
    assert config.seed == 3 and config.platform.days == 2
    assert config.users == UserConfig() and config.platform.page_size == PlatformConfig().page_size


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="platform.page_size=0"):
        with_overrides(SimConfig(), {"platform.page_size": 0})


def test_every_field_is_documented():
    from simulator.config import iter_fields
    undocumented = [name for name, f, _ in iter_fields(SimConfig) if not f.metadata.get("doc")]
    assert undocumented == []


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SimConfig().seed = 3  # type: ignore[misc]


def test_from_dict_of_defaults_is_default():
    assert from_dict(SimConfig, {}) == SimConfig()
