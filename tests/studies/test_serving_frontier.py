"""serving_frontier without simulation: bad configs are refused with the field named, the points
and their buckets follow the knobs, and the Pareto set matches a brute-force check."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simulator.config import ConfigError, SimConfig, with_overrides
from experiments.config import BucketConfig
from studies.serving_frontier import Family, ServingFrontierConfig, pareto_efficient

SAQREC = Family("saqrec", "saqrec", (0.0, 1.0), 0.0, "sasrec")
USM = Family("usm", "usm", (0.0, 1.0, 3.0), 1.0)
EASQ = Family("easq", "easq", (0.0, 0.5, 1.0), 1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(policy="sasrec"), r"families \(x\): policy='sasrec' has no serving knob; valid: saqrec, usm, easq"),
    (dict(weights=()), r"weights=\[\] must be a non-empty list"),
    (dict(weights=(0.0, math.inf)), "must be a non-empty list of finite numbers"),
    (dict(weights=(0.0, 1.0, 1.0)), r"weights=\[0.0, 1.0, 1.0\] must not repeat a weight"),
    (dict(paper_weight=2.0), r"paper_weight=2 must be one of weights \[0.0, 1.0\]"),
    (dict(weights=(1.0, 3.0), paper_weight=1.0), r"twin='' is the weight-0 point, so weights=\[1.0, 3.0\] must hold 0"),
    (dict(weights=(0.0,), paper_weight=0.0), r"weights=\[0.0\] must hold 0 and at least one other weight"),
    (dict(policy="saqrec", paper_weight=0.0),
     "twin='' would make sat_weight = 0 the click-only twin, but saqrec at weight 0 still reads questionnaires"),
    (dict(params={"fusion": [1.0, 1.0, 1.0, 1.0]}), "params must not set 'fusion', the swept weight"),
    (dict(name="a b"), "name='a b' must be non-empty letters"),
])
def test_bad_families(kw, match):
    args = dict(name="x", policy="easq", weights=(0.0, 1.0), paper_weight=1.0, twin="") | kw
    with pytest.raises(ConfigError, match=match):
        Family(**args)


@pytest.mark.parametrize("kw, match", [
    (dict(families=()), "families must list at least one policy"),
    (dict(families=(Family("saqrec", "saqrec", (0.0,), 0.0, "sasrec2"),)),
     r"families \(saqrec\): twin='sasrec2' is not a bucket of baselines \['sasrec'\]"),
    (dict(families=(SAQREC,), baselines=()), r"twin='sasrec' is not a bucket of baselines \[\]"),
    (dict(families=(SAQREC, Family("saqrec", "usm", (0.0, 1.0), 1.0))), "names must be unique"),
    (dict(families=(USM,), worlds=("nowhere",)), r"worlds=\['nowhere'\] must name distinct scenarios; unknown"),
    (dict(families=(USM,), worlds=("default", "default")), "must name distinct scenarios"),
    (dict(families=(USM,), world=with_overrides(SimConfig(), {"questionnaire.base_rate": 0.5})),
     "world may set only the size"),
    (dict(families=(Family("easq", "easq", (0.0, -1.0), 0.0),)), r"policies\[2\] \(easq_w-1\)"),
    (dict(families=(USM,), policy_seeds=()), "policy_seeds"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ConfigError, match=match):
        ServingFrontierConfig(**kw)


def test_points_buckets_and_knobs():
    from policies.usm import DEFAULT_WEIGHTS
    c = ServingFrontierConfig(families=(SAQREC, USM, EASQ), world=with_overrides(SimConfig(), {"users.n_users": 500}))
    points = {p.bucket: p for p in c.points()}
    assert list(points) == ["sasrec", "saqrec_w0", "saqrec_w1", "usm_w0", "usm_w1", "usm_w3", "easq_w0",
                            "easq_w0p5", "easq_w1"]
    assert points["sasrec"].is_twin and not points["saqrec_w0"].is_twin and points["saqrec_w0"].is_paper
    assert points["usm_w0"].twin == "usm_w0" and points["usm_w0"].is_twin and points["usm_w3"].twin == "usm_w0"
    assert points["saqrec_w1"].twin == "sasrec" and math.isnan(points["sasrec"].weight)
    params = {s.name: s.params for s in c.specs()}
    assert params["saqrec_w1"]["sat_weight"] == 1.0
    assert params["easq_w0p5"]["fusion"] == [1.0, 1.0, 1.0, 0.5]
    assert params["usm_w1"]["weights"] == DEFAULT_WEIGHTS                       # the paper's Eq. 3
    usm3 = params["usm_w3"]["weights"]
    assert usm3["like"] == DEFAULT_WEIGHTS["like"] and usm3["inappropriate"] == 3 * DEFAULT_WEIGHTS["inappropriate"]
    assert all(v == 0 for h, v in params["usm_w0"]["weights"].items() if DEFAULT_WEIGHTS[h] < 0)
    e = c.experiment("survey_rich", 4, 1)
    assert (e.world.seed, e.policy_seed, e.world.users.n_users, e.control) == (4, 1, 500, "sasrec")
    assert e.world.questionnaire.base_rate == 0.6                              # the survey_rich scenario
    assert len({b.share for b in e.buckets[:-1]}) == 1 and len(e.buckets) == 9


def _brute_force(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x) & np.isfinite(y)
    out = []
    for i in range(len(x)):
        dominated = any(ok[j] and x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i])
                        for j in range(len(x)))
        out.append(bool(ok[i]) and not dominated)
    return np.array(out, dtype=bool)


def test_pareto_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 12, 40):
        for _ in range(50):
            x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)   # many ties
            x[rng.random(n) < 0.1] = np.nan
            assert (pareto_efficient(x, y) == _brute_force(x, y)).all()


def test_pareto_small_cases():
    assert pareto_efficient([1, 2, 3], [3, 2, 1]).all()                         # a trade-off: all efficient
    assert pareto_efficient([1, 2], [1, 2]).tolist() == [False, True]
    assert pareto_efficient([1, 1], [2, 2]).tolist() == [True, True]            # equal points: neither dominates
    assert pareto_efficient([1, 1], [2, 1]).tolist() == [True, False]           # a tie on x, lower y
    assert pareto_efficient([np.nan, 0], [9, 0]).tolist() == [False, True]
    # no efficient point is dominated, every other one is: the definition, over all pairs
    x, y = np.random.default_rng(1).normal(size=(2, 30))
    eff = pareto_efficient(x, y)
    for i, j in itertools.product(range(30), repeat=2):
        if eff[i] and i != j:
            assert not (x[j] >= x[i] and y[j] >= y[i])
    assert all(any(x[j] >= x[i] and y[j] >= y[i] for j in np.flatnonzero(eff)) for i in np.flatnonzero(~eff))


def test_baseline_names_are_buckets():
    c = ServingFrontierConfig(baselines=(BucketConfig("sasrec", "sasrec"), BucketConfig("prod", "production")),
                              families=(USM,))
    assert [s.name for s in c.specs()][:2] == ["sasrec", "prod"] and not c.points()[1].is_twin
