"""The A/B configs of studies/configs (``satbed ab --config ...``) load, name registered policies
with valid parameters, and the four paper policies serve their buckets in one small A/B run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies import make_policy
from simulator.config import load_toml
from experiments.config import ABSettings, BucketConfig, ExperimentConfig
from experiments.runner import run_experiment
from tests_support import tiny

CONFIGS = Path(__file__).parents[2] / "studies" / "configs"
AB_CONFIGS = ("saqrec", "sine", "usm", "easq", "production_vs_random")


@pytest.mark.parametrize("name", AB_CONFIGS)
def test_ab_config_loads_and_builds_its_policies(name):
    config = load_toml(ExperimentConfig, CONFIGS / f"{name}.toml")
    assert config.control in {b.name for b in config.buckets}
    assert sum(b.share for b in config.buckets) == pytest.approx(1.0)
    for b in config.buckets:
        make_policy(b.policy, **b.params)
    if name != "production_vs_random":
        assert name in {b.policy for b in config.buckets}


SMALL = dict(d_model=16, max_len=20)
PAPER_BUCKETS = (
    BucketConfig("control", "production", 0.2),
    BucketConfig("saqrec", "saqrec", 0.2, dict(encoder=dict(d_model=16, max_len=20, n_levels=3, n_layers=1),
                                                  train=dict(max_epochs=1, pretrain_epochs=1), aux=dict(epochs=1))),
    BucketConfig("sine", "sine", 0.2, dict(encoder=dict(SMALL, n_layers=1), train=dict(max_epochs=1))),
    BucketConfig("usm", "usm", 0.2, dict(network=dict(hidden=(32, 16, 8)),
                                         train=dict(max_epochs=2, engagement_per_epoch=2000),
                                         distill=dict(pseudo_per_epoch=2000), distillation=True, response_debias=True)),
    BucketConfig("easq", "easq", 0.2, dict(encoder=dict(d_model=16, max_len=20), train=dict(max_epochs=1),
                                         satisfaction=dict(epochs=1), align=dict(epochs=1))),
)


def test_paper_policies_serve_their_buckets_in_satbed_ab(tmp_path):
    config = ExperimentConfig(world=tiny(n_users=400, seed=0), ab=ABSettings(pre_days=1, days=1,
                                                                                update_interval_s=6 * 3600.0),
                              buckets=PAPER_BUCKETS)
    result = run_experiment(config, tmp_path / "run", progress=False)
    from simulator.logs import read_impressions
    logs = read_impressions(tmp_path / "run" / "logs", days=[1])
    served = logs.groupby("bucket", observed=True)["policy"].agg(lambda s: set(s.astype(str))).to_dict()
    assert served == {"control": {"production"}, "saqrec": {"saqrec"}, "sine": {"sine"}, "usm": {"usm"},
                      "easq": {"easq"}}
    # every bucket's users were served whole pages, and the deterministic rankers log no propensity
    assert logs.groupby("bucket", observed=True).size().min() > 500
    assert logs.loc[logs["bucket"] != "control", "propensity"].isna().all()
    lifts = result.lifts.set_index(["bucket", "metric"])
    assert np.isfinite(lifts.loc[("easq", "aut"), "lift"]) and (tmp_path / "run" / "report.md").exists()
