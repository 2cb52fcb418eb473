"""scorecard: its fast variant has one row per (claim, world), its effects are the studies' own
numbers, its default world is each study's own config, and bad configs are refused by name."""
from __future__ import annotations

import importlib
import shutil

import numpy as np
import pandas as pd
import pytest

from simulator.config import ConfigError
from studies import _replication as R
from experiments.config import BucketConfig
from studies.engine.base import Summary, get_study, load_config, run_study
from studies.scorecard import COLUMNS, VERDICTS, ScorecardConfig, ScorecardEntry
from studies.engine.sweep import CACHE_DIR, PoolExecutor

STUDIES = ("saqrec_replication", "usm_replication", "sine_replication", "easq_online")
RTOL, ATOL = 1e-6, 1e-9          # the CSVs' 10 significant digits (as the golden tables)
TABLE_COLUMNS = ("paper", "study", "claim", "world", "measure", "unit", "direction", "effect", "ci_low", "ci_high",
                 "n", "holds", "reason")


def claims_of(name: str) -> tuple[R.Claim, ...]:
    return importlib.import_module(f"studies.{name}").CLAIMS


@pytest.fixture(scope="module")
def fast(tmp_path_factory, fast_run):
    """The fast variant, run once (10 cells on a 2-worker pool). Its default-world cells are the
    studies' own fast cells (same cache keys), so they are copied from the golden tests' runs and
    only the premise worlds run here."""
    study = get_study("scorecard")
    config = load_config(study, variant="fast")
    out = tmp_path_factory.mktemp("scorecard") / "results"
    (out / CACHE_DIR).mkdir(parents=True)
    for name in STUDIES:
        for cached in (fast_run(name) / CACHE_DIR).glob("*.json"):
            shutil.copy(cached, out / CACHE_DIR / cached.name)
    run_study(study, config, out, PoolExecutor(workers=2), progress=False, variant="fast")
    return config, out, pd.read_csv(out / "table.csv")


@pytest.mark.slow
def test_one_row_per_claim_and_world(fast):
    config, out, card = fast
    assert set(TABLE_COLUMNS) <= set(card.columns)
    assert card["holds"].isin(VERDICTS).all()
    expected = {(e.study, w, i) for e in config.studies for w in e.worlds for i in range(len(claims_of(e.study)))}
    assert len(card) == len(expected)
    got = card.assign(i=card.groupby(["study", "world"]).cumcount())
    assert set(zip(got["study"], got["world"], got["i"])) == expected
    assert not card.duplicated(["study", "claim", "world"]).any()
    assert {w for e in config.studies for w in e.worlds} == {"default", "clickbait", "engaged_response", "skip_rich",
                                                             "drifting"}
    # a verdict follows from the interval: holds <=> wholly on the claimed side of 0
    side = np.minimum(card["direction"] * card["ci_low"], card["direction"] * card["ci_high"])
    testable = card["holds"] != "not testable"
    assert (card.loc[testable, "holds"].eq("holds") == (side[testable] > 0)).all()
    assert card.loc[~testable, ["ci_low", "ci_high"]].isna().any(axis=1).all()
    # the report opens with the table; each (study, world) has its own sub-report
    report = (out / "report.md").read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in report
    assert report.index("| paper | claim |") < report.index("## Claims that hold")
    assert (out / "scorecard.png").exists()
    for e in config.studies:
        for w in e.worlds:
            assert (out / e.study / w / "report.md").exists() and (out / e.study / w / "config.toml").exists()


@pytest.mark.slow
def test_effects_are_the_studies_own_numbers(fast):
    _, out, card = fast
    row = card.set_index(["study", "world", "claim"])
    # offline: the difference of the two rows' means in the study's own table
    for study, world, claim, treatment, baseline, metric in [
            ("saqrec_replication", "default", "T3: SAQRec > SASRec on NDCG@10 (next effective view)", "saqrec",
             "sasrec", "ndcg@10"),
            ("sine_replication", "skip_rich", "T3: SINE > SASRec on AUC", "sine", "sasrec", "auc")]:
        own = pd.read_csv(out / study / world / "table.csv").set_index(["policy", "metric"])["mean"]
        assert row.loc[(study, world, claim), "effect"] == pytest.approx(
            own[(treatment, metric)] - own[(baseline, metric)], rel=RTOL, abs=ATOL)
    # online: the study's pooled lift and its interval
    for study, world, claim, bucket, metric in [
            ("saqrec_replication", "clickbait", "T4: SAQRec raises AUT vs production", "saqrec", "aut"),
            ("easq_online", "drifting", "online learning raises oracle satisfaction (EASQ vs offline-only)", "easq",
             "oracle_satisfaction")]:
        lifts = pd.read_csv(out / study / world / "lifts.csv").set_index(["policy", "metric"])
        r = row.loc[(study, world, claim)]
        for ours, theirs in (("effect", "lift"), ("ci_low", "lift_low"), ("ci_high", "lift_high")):
            assert r[ours] == pytest.approx(lifts.loc[(bucket, metric), theirs], rel=RTOL, abs=ATOL)


def test_the_default_world_is_the_studies_own_config():
    study = get_study("scorecard")
    for variant in ("fast", "default"):
        cells = study.cells(load_config(study, variant=variant))
        for name in STUDIES:
            own = get_study(name)
            keys = {c.key for c in own.cells(load_config(own, variant=variant))}
            assert {c.key for c in cells if c.labels["study"] == name and c.labels["world"] == "default"} == keys
            assert not keys & {c.key for c in cells if c.labels["study"] == name and c.labels["world"] != "default"}


def test_paper_regime_worlds_only_in_the_full_variant():
    study = get_study("scorecard")
    for variant, expected in (("fast", set()), ("default", set()), ("full", {"saqrec_commercial", "sine_kuaishou"})):
        worlds = {w for e in load_config(study, variant=variant).studies for w in e.worlds}
        assert worlds & {"saqrec_commercial", "sine_kuaishou", "kuairand"} == expected


@pytest.mark.parametrize("studies, match", [
    ([{"study": "saqrec_replication", "worlds": ["default", "nope"]}], r"unknown scenario 'nope'; known scenarios: "
                                                                       r"default, "),
    ([{"study": "nope", "worlds": ["default"]}], "unknown study 'nope'"),
    ([{"study": "positive_control", "worlds": ["default"]}], "lists no paper claims"),
    ([{"study": "sine_replication", "worlds": []}], "must name at least one scenario"),
    ([{"study": "sine_replication", "worlds": ["skip_rich", "skip_rich"]}], "must not repeat a scenario"),
    ([{"study": "sine_replication", "worlds": ["default"]}, {"study": "sine_replication", "worlds": ["default"]}],
     r"\('sine_replication', 'default'\) is listed twice"),
    ([{"study": "sine_replication", "worlds": ["default"], "overrides": {"seeds": [0]}}], "set by the scorecard"),
    ([{"study": "sine_replication", "worlds": ["default"], "overrides": {"world.users.n_users": 0}}],
     "sine_replication in world 'default': .*n_users"),
    ([{"study": "sine_replication", "worlds": ["default"], "colour": "red"}], "unknown key"),
    ([], "must list at least one study"),
])
def test_bad_configs(studies, match):
    with pytest.raises(ConfigError, match=match):
        load_config(get_study("scorecard"), variant="fast", overrides={"studies": studies})


def test_bad_variant_and_seeds():
    entry = (ScorecardEntry("easq_online", ("default",)),)
    with pytest.raises(ConfigError, match="variant='quick' must be one of"):
        ScorecardConfig(variant="quick", studies=entry)
    with pytest.raises(ConfigError, match="seeds"):
        ScorecardConfig(seeds=(0, 0), studies=entry)
    assert [c.seeds for _, _, c in ScorecardConfig(variant="fast", seeds=(3, 4), studies=entry).parts()] == [(3, 4)]


# ----------------------------------------------------------------------------- claim_rows, on made-up tables
def _summary(offline: dict[str, list[float]], metric: str) -> Summary:
    by_seed = pd.DataFrame([{"kind": "offline", "policy": p, "metric": metric, "value": v, "seed": s}
                            for p, values in offline.items() for s, v in enumerate(values)])
    return Summary(table=pd.DataFrame(), markdown="", verdict="", holds=None, tables={"offline_by_seed": by_seed})


@pytest.mark.parametrize("values, direction, absolute, holds, reason", [
    ({"a": [0.31, 0.32, 0.33], "b": [0.30, 0.30, 0.31]}, 1, False, "holds", "CI on the claimed side of 0"),
    ({"a": [0.31, 0.29, 0.33], "b": [0.30, 0.30, 0.31]}, 1, False, "does not hold", "CI includes 0"),
    ({"a": [0.30, 0.30, 0.31], "b": [0.31, 0.32, 0.33]}, 1, False, "does not hold", "CI on the other side of 0"),
    ({"a": [-0.10, 0.11, -0.12], "b": [0.30, -0.31, 0.32]}, -1, True, "holds", "CI on the claimed side of 0"),
    ({"a": [0.31], "b": [0.30]}, 1, False, "not testable", "one seed: no CI"),
    ({"a": [0.31, 0.32]}, 1, False, "not testable", "not configured"),
])
def test_claim_rows_offline(values, direction, absolute, holds, reason):
    config = R.ReplicationConfig(offline=(BucketConfig("a", "most_popular"), BucketConfig("b", "random")),
                                 offline_metrics=("auc",))
    claim = R.Claim("a > b", "offline", "auc", "a", "b" if "b" in values else "c", direction, absolute)
    (row,) = R.claim_rows(config, _summary(values, "auc"), (claim,), "paper")
    assert (row["holds"], row["reason"]) == (holds, reason)
    if "b" in values:
        f = np.abs if absolute else (lambda v: v)
        assert row["effect"] == pytest.approx(np.mean(f(np.array(values["a"]))) - np.mean(f(np.array(values["b"]))))
