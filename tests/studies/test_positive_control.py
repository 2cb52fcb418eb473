"""positive_control's config: bad pairs and metrics are refused with the field named."""
from __future__ import annotations

import pytest

from simulator.config import ConfigError, from_dict
from experiments.config import ABSettings, BucketConfig
from studies.positive_control import PositiveControlConfig

SPECS = (BucketConfig("sasrec", "sasrec"), BucketConfig("saqrec", "saqrec"))


@pytest.mark.parametrize("kw, match", [
    (dict(pairs=()), "pairs must name at least one"),
    (dict(pairs=(("saqrec", "saqrec"),)), r"pairs: \['saqrec', 'saqrec'\] must be two different buckets"),
    (dict(pairs=(("saqrec", "usm"),)), r"pairs: \['saqrec', 'usm'\] must be two different buckets"),
    (dict(pairs=(("saqrec", "sasrec"),), metrics=("watch",)), "metrics: 'watch' is not a metric"),
    (dict(pairs=(("saqrec", "sasrec"),), policy_seeds=(-1,)), "policy_seeds"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ConfigError, match=match):
        PositiveControlConfig(policies=SPECS, **kw)


def test_the_experiment_carries_the_schedule_and_the_policy_seed():
    c = PositiveControlConfig(policies=SPECS, pairs=(("saqrec", "sasrec"),), ab=ABSettings(learning="refit"))
    e = c.experiment(3, 1)
    assert (e.world.seed, e.policy_seed, e.ab, e.control) == (3, 1, c.ab, "sasrec")


def test_a_bad_ab_setting_names_its_path():
    with pytest.raises(ConfigError, match="ab.learning='sometimes' must be one of"):
        from_dict(PositiveControlConfig, {"ab": {"learning": "sometimes"}})
