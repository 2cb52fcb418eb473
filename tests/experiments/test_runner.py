"""The A/B runner: assignment, reproducibility, report files, incomplete runs, A/A validity."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import pytest

from policies import register_policy
from simulator.config import ConfigError, from_dict, load_toml
from experiments.config import ABSettings, BucketConfig, ExperimentConfig
from experiments.runner import assign_buckets, run_experiment
from tests_support import tiny

BUCKETS = (BucketConfig("control", "production", 0.4), BucketConfig("rand", "random", 0.3),
           BucketConfig("oracle", "oracle", 0.3))


AB_FIELDS = {f.name for f in fields(ABSettings)}


def small(seed=0, n_users=300, buckets=BUCKETS, **kw):
    """A tiny experiment; A/B settings (``days``, ``learning``, ...) go to its ``ab`` table."""
    ab = {"pre_days": 1, "days": 2, **{k: kw.pop(k) for k in list(kw) if k in AB_FIELDS}}
    return ExperimentConfig(world=tiny(n_users=n_users, seed=seed), ab=ABSettings(**ab), buckets=buckets, **kw)


@register_policy("_test_crash", "test only: raises on the 5th serving call")
@dataclass
class CrashPolicy:
    temperature: float | None = None
    calls: int = field(default=0, init=False)

    def fit(self, train, *, rng):
        return self

    def score(self, batch):
        self.calls += 1
        if self.calls == 5:
            raise RuntimeError("ranker crashed")
        return np.zeros(batch.candidates.shape)


@register_policy("_test_spy", "test only: random scores, records its fits' first draws and what update() is given")
@dataclass
class SpyPolicy:
    temperature: float | None = 1.0
    received: list = field(default_factory=list, init=False)
    epochs: list = field(default_factory=list, init=False)
    fits: list = field(default_factory=list, init=False)

    def fit(self, train, *, rng):
        self.fits.append(float(rng.random()))
        return self

    def score(self, batch):
        return np.zeros(batch.candidates.shape)

    def update(self, new, *, epochs=None):
        self.received.append(new.impressions[["request_id", "position", "ts"]].copy())
        self.epochs.append(epochs)


def _spied(monkeypatch) -> list:
    """The spy policies that run_experiment builds, as it builds them."""
    spies = []
    from policies import make_policy as make

    def recording(name, **params):
        policy = make(name, **params)
        if name == "_test_spy":
            spies.append(policy)
        return policy
    monkeypatch.setattr("policies.make_policy", recording)   # run_experiment imports it when called
    return spies


SPY_BUCKETS = (BucketConfig("control", "production", 0.5), BucketConfig("spy", "_test_spy", 0.5))


@pytest.mark.parametrize("learning, updates, fits", [("frozen", (0, 0), 1), ("update", (1, 2 * 24), 1),
                                                     ("refit", (0, 0), 2)])
def test_one_learning_schedule_for_every_bucket(tmp_path, monkeypatch, learning, updates, fits):
    """frozen: the pre-period fit only; update: update() every hour with the experiment's
    update_epochs; refit: a refit at every midnight but the last."""
    spies = _spied(monkeypatch)
    config = small(seed=4, buckets=SPY_BUCKETS, learning=learning, update_epochs=3)
    run_experiment(config, tmp_path / "run", progress=False, report=False)
    (spy,) = spies
    assert updates[0] <= len(spy.received) <= updates[1] and set(spy.epochs) <= {3}   # hours with traffic
    assert len(spy.fits) == fits


def test_policy_seed_redraws_training_randomness_only(tmp_path, monkeypatch):
    """policy_seed 0 is the stream the world seed gave before policy seeds existed; another
    seed gives the policies other draws on the same world (same users, same buckets)."""
    from experiments.runner import policy_streams
    from simulator.simulate import seed_streams
    draws = {}
    for i, ps in enumerate((0, 0, 1, 2)):
        spies = _spied(monkeypatch)
        out = tmp_path / f"run{i}"
        run_experiment(small(seed=4, buckets=SPY_BUCKETS, policy_seed=ps, days=1), out, progress=False,
                       report=False)
        draws.setdefault(ps, []).append(spies[-1].fits[0])
    assert draws[0][0] == draws[0][1]                                    # reproducible
    assert len({draws[0][0], draws[1][0], draws[2][0]}) == 3              # varied
    old = np.random.default_rng(seed_streams(4)["policy"].spawn(2)[1]).random()
    assert draws[0][0] == old                                            # 0 = as before
    assert np.random.default_rng(policy_streams(seed_streams(4), 4, 1, 2)[1]).random() == draws[1][0]
    users = [pd.read_parquet(tmp_path / f"run{i}" / "users.parquet") for i in (0, 2)]
    assert users[0].equals(users[1])                                      # the same world


@pytest.mark.parametrize("kw, match", [
    (dict(learning="online"), "learning='online' must be one of"),
    (dict(learning="update", update_interval_s=0.0), "learning='update' needs update_interval_s > 0"),
    (dict(update_epochs=0), "update_epochs=0 must be"),
    (dict(policy_seed=-1), "policy_seed=-1 must be"),
])
def test_bad_learning_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        small(**kw)


def test_an_old_retrain_daily_names_its_replacement():
    with pytest.raises(ConfigError, match='retrain_daily: replaced by ab.learning = "refit"'):
        from_dict(ExperimentConfig, {"retrain_daily": True})
    with pytest.raises(ConfigError, match=r"pre_days: the A/B settings moved to the \[ab\] table: ab.pre_days"):
        from_dict(ExperimentConfig, {"pre_days": 2})


def test_online_updates_see_every_row_exactly_once_across_midnight(tmp_path, monkeypatch):
    """update() gets each row of its bucket once, including the last hour of every day (flushed
    at midnight before that hour's update ran)."""
    spies = _spied(monkeypatch)
    config = small(seed=4, buckets=SPY_BUCKETS, learning="update", update_interval_s=3600.0, days=3)
    run_experiment(config, tmp_path / "run", progress=False, report=False)
    (spy,) = spies
    got = pd.concat(spy.received, ignore_index=True)
    assert not got.duplicated(["request_id", "position"]).any()
    from simulator.logs import read_impressions
    logged = read_impressions(tmp_path / "run" / "logs", days=[1, 2, 3], buckets=["spy"])
    # every row served before the last update call reached update(); rows after it cannot have
    served_before_last = logged[logged["request_id"] <= got["request_id"].max()]
    assert len(got) == len(served_before_last)
    assert set(zip(got.request_id, got.position)) == set(zip(served_before_last.request_id,
                                                             served_before_last.position))
    # and the days' last hours are among them (the rows a midnight flush used to drop)
    hour = (got["ts"] % 86400) // 3600
    assert (hour >= 23).sum() > 0


def test_salted_hash_assignment():
    a = assign_buckets(20000, [0.5, 0.3, 0.2], "s1")
    assert np.array_equal(a, assign_buckets(20000, [0.5, 0.3, 0.2], "s1"))      # deterministic
    assert not np.array_equal(a, assign_buckets(20000, [0.5, 0.3, 0.2], "s2"))  # salted
    shares = np.bincount(a, minlength=3) / 20000
    assert np.allclose(shares, [0.5, 0.3, 0.2], atol=0.015)


BAD = [
    ({"buckets": (BucketConfig("a", "production", 1.0),)}, "at least two arms"),
    ({"buckets": (BucketConfig("a", "production", 0.5), BucketConfig("a", "random", 0.5))}, "unique"),
    ({"control": "a", "buckets": (BucketConfig("a", "production", 0.5), BucketConfig("b", "random", 0.4))},
     "sum to 1"),
    ({"control": "nope", "buckets": BUCKETS}, "control='nope' is not a bucket"),
    ({"control": "a", "buckets": (BucketConfig("a", "production", 0.7), BucketConfig("b", "random", 0.6),
                                  BucketConfig("c", "random"))}, "the set ones already sum to 1.3"),
]


@pytest.mark.parametrize(("kwargs", "fragment"), BAD)
def test_bad_experiment_configs(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ExperimentConfig(**kwargs)


@pytest.mark.parametrize(("ab", "fragment"), [
    ({"days": 0}, "ab.days=0 must be an integer >= 1"),
    ({"pre_days": 1.5}, "ab.pre_days=1.5 must be an integer"),
    ({"correction": "bonferroni"}, "ab.correction='bonferroni' must be one of"),
    ({"alpha": 1.0}, r"ab.alpha=1.0 must be in \(0, 1\)"),
])
def test_bad_ab_settings_name_their_path(ab, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(ExperimentConfig, {"ab": ab})


def test_unset_shares_split_what_the_set_ones_leave():
    """A bucket without a share gets an equal part of the rest; the last absorbs the rounding, so
    three unset shares are 1/3, 1/3 and 1 - 2/3 exactly as the studies' equal buckets always were."""
    config = ExperimentConfig(buckets=(BucketConfig("control", "production", 0.4), BucketConfig("a", "random"),
                                       BucketConfig("b", "random"), BucketConfig("c", "oracle")))
    assert [b.share for b in config.buckets] == [0.4, 0.6 / 3, 0.6 / 3, 0.6 - 2 * (0.6 / 3)]
    equal = ExperimentConfig(buckets=tuple(BucketConfig(n) for n in ("control", "a", "b")))
    assert [b.share for b in equal.buckets] == [1 / 3, 1 / 3, 1.0 - 2 * (1 / 3)]
    assert sum(b.share for b in equal.buckets) == 1.0


def test_bad_bucket_name_and_toml_buckets():
    with pytest.raises(ConfigError, match="bucket name='a b'"):
        BucketConfig("a b")
    config = from_dict(ExperimentConfig, {"buckets": [{"name": "c", "policy": "production", "share": 0.5},
                                                      {"name": "t", "policy": "random", "share": 0.5,
                                                       "params": {"temperature": 2.0}}], "control": "c"})
    assert config.buckets[1].params == {"temperature": 2.0}


def test_unknown_policy_fails_before_writing(tmp_path):
    config = small(buckets=(BucketConfig("control", "production", 0.5), BucketConfig("t", "nope", 0.5)))
    with pytest.raises(KeyError, match="unknown policy 'nope'"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ab") / "run"
    return run_experiment(small(seed=3), out, progress=False), out


def test_run_directory_contents(ab_run):
    result, out = ab_run
    names = {p.name for p in out.iterdir()}
    assert {"config.toml", "report.md", "metrics.csv", "lifts.csv", "daily_lifts.csv", "daily_lifts.png",
            "lifts.png", "logs", "items.parquet", "users.parquet", "status.json"} <= names
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    days = sorted(p.name for p in (out / "logs").iterdir())
    assert days == ["day-0000", "day-0001", "day-0002"]
    assert sorted(p.name for p in (out / "logs" / "day-0000").iterdir()) == ["bucket-pre"]
    assert sorted(p.name for p in (out / "logs" / "day-0002").iterdir()) == \
        ["bucket-control", "bucket-oracle", "bucket-rand"]
    report = (out / "report.md").read_text()
    assert "**(item-wise oracle)**" in report and "| rand | average user watch time" in report
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["bucket"]) == {"control", "rand", "oracle"} and set(metrics["day"]) == {1, 2}
    assert load_toml(ExperimentConfig, out / "config.toml") == small(seed=3)


def test_buckets_serve_their_own_policy(ab_run):
    _, out = ab_run
    from simulator.logs import read_impressions
    logs = read_impressions(out / "logs", days=[1, 2])
    assert (logs.groupby("bucket", observed=True)["policy"].agg(lambda s: set(s.astype(str)))
            .to_dict() == {"control": {"production"}, "rand": {"random"}, "oracle": {"oracle"}})
    # a user stays in one bucket, and it is the hash's bucket
    assert (logs.groupby("user_id")["bucket"].nunique() == 1).all()
    expected = assign_buckets(300, [0.4, 0.3, 0.3], "satbed")
    names = np.array(["control", "rand", "oracle"])
    assert (logs["bucket"].astype(str).to_numpy() == names[expected[logs["user_id"].to_numpy()]]).all()
    # the deterministic oracle logs no propensity; the stochastic production policy does
    assert logs.loc[logs["bucket"] == "oracle", "propensity"].isna().all()
    assert logs.loc[logs["bucket"] == "control", "propensity"].notna().all()


def test_oracle_beats_random_on_the_truth(ab_run):
    result, _ = ab_run
    lifts = result.lifts.set_index(["bucket", "metric"])
    assert lifts.loc[("oracle", "oracle_satisfaction"), "lift_ci_low"] > 0.2
    assert lifts.loc[("rand", "oracle_satisfaction"), "lift_ci_high"] < 0


def test_lift_table_matches_per_bucket_values(ab_run):
    result, out = ab_run
    overall = pd.read_csv(out / "metrics_overall.csv").set_index("bucket")
    lifts = result.lifts.set_index(["bucket", "metric"])
    for bucket in ("rand", "oracle"):
        for metric in ("avt", "aut", "skip_rate"):
            row = lifts.loc[(bucket, metric)]
            assert row["control"] == pytest.approx(overall.loc["control", metric])
            assert row["treatment"] == pytest.approx(overall.loc[bucket, metric])
            assert row["lift"] == pytest.approx(row["treatment"] / row["control"] - 1)


def test_rerun_reproduces_metrics_exactly(ab_run, tmp_path):
    _, out = ab_run
    run_experiment(small(seed=3), tmp_path / "again", progress=False, report=False)
    a = (out / "metrics.csv").read_text()
    assert a == (tmp_path / "again" / "metrics.csv").read_text()
    assert (out / "lifts.csv").read_text() == (tmp_path / "again" / "lifts.csv").read_text()


def test_interrupted_run_is_marked_incomplete(tmp_path):
    config = small(buckets=(BucketConfig("control", "production", 0.5), BucketConfig("t", "_test_crash", 0.5)))
    with pytest.raises(RuntimeError, match="ranker crashed"):
        run_experiment(config, tmp_path / "run", progress=False)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "incomplete" and "ranker crashed" in status["reason"]
    assert not (tmp_path / "run" / "report.md").exists() and not (tmp_path / "run" / "metrics.csv").exists()


def test_aa_uses_the_control_policy_everywhere():
    config = small().as_aa()
    assert {b.policy for b in config.buckets} == {"production"}
    assert [b.name for b in config.buckets] == ["control", "rand", "oracle"]


@pytest.mark.slow
def test_aa_rejection_rate(tmp_path):
    """Over 100 small seeded A/A runs the AUT test rejects at a rate in [0.02, 0.10] (alpha 0.05).

    The runs go through the studies' sweep runner (a 2-process pool, the aa_validity cell), so
    they use both cores; each is a fresh 240-user world with its own seed and salt.
    """
    from simulator.config import to_dict
    from studies.aa_validity import run_cell
    from studies.engine.sweep import Cell, run_sweep
    buckets = (BucketConfig("control", "production", 0.5), BucketConfig("twin", "production", 0.5))
    base = to_dict(small(seed=1000, n_users=240, buckets=buckets, days=1))
    base["world"]["platform"]["tick_s"] = 900.0    # 15-minute serving rounds: 5x faster, the same A/A question
    cells = [Cell(f"{run_cell.__module__}:run_cell", {"experiment": base}, 1000 + r) for r in range(100)]
    table = run_sweep(cells, tmp_path / "aa", progress=False).table
    aut = table[table["metric"] == "aut"]
    assert len(aut) == 100 and aut["defined"].all()
    rate = float((aut["p_value"] < 0.05).mean())
    assert 0.02 <= rate <= 0.10, f"A/A rejection rate {rate}"
    # p-values of a valid test are roughly uniform: not piled up near 0
    assert np.mean(aut["p_value"].to_numpy() < 0.5) < 0.65


def test_overriding_a_bucket_param_leaves_the_defaults_alone():
    """with_overrides edits a copy: --set buckets.easq.params.temperature=... in one run must not
    change DEFAULT_BUCKETS for the next config built in the same process."""
    from experiments.config import DEFAULT_BUCKETS
    from simulator.config import with_overrides
    before = [dict(b.params) for b in DEFAULT_BUCKETS]
    changed = with_overrides(ExperimentConfig(), {"buckets.easq.params.temperature": 0.5})
    assert {b.name: b.params for b in changed.buckets}["easq"] == {"temperature": 0.5}
    assert [dict(b.params) for b in DEFAULT_BUCKETS] == before
    assert {b.name: b.params for b in ExperimentConfig().buckets}["easq"] == {}
