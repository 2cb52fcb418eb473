"""Each study's fast variant: its table matches the committed golden table, and its numbers obey
the invariants of their definitions.

Golden tables (``tests/studies/golden/NAME.csv``) are the fast variants' ``table.csv``. A run is
deterministic given its seeds, so the tolerance (relative 1e-6, absolute 1e-9 on every numeric
column; exact on text and booleans) only absorbs floating-point noise (the CSV's 10 significant
digits, libm/BLAS differences between machines). A deliberate change of a study's numbers (a
simulator default, a policy, an estimator) needs new golden tables:
``SATBED_UPDATE_GOLDEN=1 python -m pytest tests/studies/test_study_golden.py`` rewrites them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import STUDIES

GOLDEN = Path(__file__).parent / "golden"
RTOL, ATOL = 1e-6, 1e-9


def check_golden(table_csv: Path, name: str) -> None:
    fresh = pd.read_csv(table_csv)
    path = GOLDEN / f"{name}.csv"
    if os.environ.get("SATBED_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(table_csv.read_text())
        pytest.skip(f"rewrote {path}")
    golden = pd.read_csv(path)
    assert list(fresh.columns) == list(golden.columns), f"{name}: columns differ from {path}"
    assert len(fresh) == len(golden), f"{name}: {len(fresh)} rows, golden {len(golden)}"
    for col in golden.columns:
        a, b = fresh[col], golden[col]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            assert pd.api.types.is_numeric_dtype(a), f"{name}.{col} is no longer numeric"
            x, y = a.to_numpy(float), b.to_numpy(float)
            same = np.isclose(x, y, rtol=RTOL, atol=ATOL) | (np.isnan(x) & np.isnan(y))
            assert same.all(), (f"{name}.{col} differs from the golden table in rows {np.flatnonzero(~same)[:5]}: "
                                f"{x[~same][:5]} vs {y[~same][:5]}")
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), f"{name}.{col} differs from the golden table"


@pytest.mark.parametrize("name", STUDIES)
def test_fast_variant_matches_golden_table(fast_run, name):
    out = fast_run(name)
    for f in ("report.md", "table.csv", "cells.csv", "config.toml", "study.json", "status.json"):
        assert (out / f).exists(), f"{name}: {f} missing"
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert list(out.glob("*.png")), f"{name}: no plot"
    report = (out / "report.md").read_text()
    assert "## Paper claim" in report and "Does its direction hold in simulation?" in report
    check_golden(out / "table.csv", name)


# ----------------------------------------------------------------------------- invariants
def test_aa_validity_rates(fast_run):
    out = fast_run("aa_validity")
    rates = pd.read_csv(out / "table.csv")
    cells = pd.read_csv(out / "cells.csv")
    meta = json.loads((out / "study.json").read_text())
    assert meta["cells"] == 6 and meta["variant"] == "fast"
    tests = rates["tests"] + rates["undefined"]
    assert (tests == 6).all()                               # one treatment bucket x 6 replications
    # the same alpha builds the test and the interval: "p < alpha" <=> "the CI excludes 0", exactly
    assert np.allclose(rates["coverage"] + rates["false_positive_rate"], 1.0)
    assert ((rates["fpr_low"] <= rates["false_positive_rate"]) & (rates["false_positive_rate"] <= rates["fpr_high"])).all()
    # replications are independent worlds: every seed's A/A differences differ
    aut = cells[cells["metric"] == "aut"]
    assert aut["seed"].tolist() == list(range(6)) and aut["difference"].nunique() == 6


def test_bias_ablation_populations(fast_run):
    out = fast_run("bias_ablation")
    agg = pd.read_csv(out / "table.csv")
    cells = pd.read_csv(out / "cells.csv")
    # the base world is one cell shared by every knob: identical rows under each knob
    base = cells[cells["base"]]
    per_knob = [g.drop(columns=["knob", "level"]).reset_index(drop=True) for _, g in base.groupby("knob")]
    assert len(per_knob) == 4 and all(p.equals(per_knob[0]) for p in per_knob[1:])
    assert len(list((out / "cells").glob("*.json"))) == 5          # 8 labelled settings, 5 distinct worlds
    # one truth per population and setting, shared by its estimators; rates are in [0, 1]
    for _, g in cells.groupby(["knob", "level", "estimand"]):
        assert g["truth"].nunique() == 1 and g["n_units"].nunique() == 1
    assert cells["truth"].between(0, 1).all()
    # stronger response bias (satisfied users answer more) inflates the naive like rate
    naive = agg[(agg["estimand"] == "satisfaction") & (agg["estimator"] == "naive") & (agg["knob"] == "response_bias")]
    bias = naive.set_index(naive["level"].astype(str))["bias"]
    assert bias.loc["3"] > bias.loc["1"] > 0


def test_head_to_head_pooling(fast_run):
    out = fast_run("head_to_head")
    pooled = pd.read_csv(out / "table.csv").set_index(["policy", "metric"])
    by_seed = pd.read_csv(out / "lifts_by_seed.csv").set_index(["bucket", "metric"])
    # one seed: the pooled lift is that seed's lift
    for (policy, metric), r in pooled.iterrows():
        if np.isfinite(r["lift"]):
            assert r["lift"] == pytest.approx(by_seed.loc[(policy, metric), "lift"], rel=1e-12)
    assert (pooled["p_adjusted"].dropna() >= pooled.loc[pooled["p_adjusted"].notna(), "p_value"] - 1e-15).all()
    assert pooled["p_adjusted"][pooled["oracle_metric"]].isna().all()
    # the item-wise oracle beats the control on the truth, random ranking loses to it
    assert pooled.loc[("oracle", "oracle_satisfaction"), "lift_low"] > 0
    assert pooled.loc[("random", "oracle_satisfaction"), "lift_high"] < 0
    assert (out / "experiment.toml").exists() and (out / "forest.png").exists()


def test_offline_online_taus(fast_run):
    from scipy import stats
    out = fast_run("offline_online")
    values = pd.read_csv(out / "policy_values.csv")
    taus = pd.read_csv(out / "taus_by_cell.csv")
    assert (values.loc[values["policy"] == "production", "online:aut"] == 0).all()
    assert taus["tau"].between(-1, 1).all()
    assert set(taus["among"]) == {"all policies", "without oracle"}
    for r in taus.itertuples():
        g = values[(values["setting"] == r.setting) & (values["seed"] == r.seed)]
        if r.among == "without oracle":
            g = g[g["policy"] != "oracle"]
        assert r.policies == len(g)
        expect = stats.kendalltau(g[f"offline:{r.offline}"], g[f"online:{r.online}"]).statistic
        assert r.tau == pytest.approx(expect)
    # random ranking: the offline AUC of constant scores is exactly 1/2, NDCG@10 that of a random rank
    rnd = values[values["policy"] == "random"]
    assert np.allclose(rnd["offline:auc"], 0.5)


def test_saqrec_replication_tables(fast_run):
    out = fast_run("saqrec_replication")
    off = pd.read_csv(out / "table.csv").pivot(index="policy", columns="metric", values="mean")
    by_seed = pd.read_csv(out / "offline_by_seed.csv")
    # one seed: the mean is that seed's value; the sampled-negatives metrics nest as they must
    one = by_seed.set_index(["policy", "metric"])["value"]
    for (policy, metric), v in off.stack().items():
        assert v == pytest.approx(one.loc[(policy, metric)])
    assert (off["hr@1"] <= off["hr@5"]).all() and (off["hr@5"] <= off["hr@10"]).all()
    assert (off["hr@1"] <= off["mrr"]).all() and (off["ndcg@5"] <= off["ndcg@10"]).all()
    assert (off["ndcg@10"] <= off["hr@10"]).all()
    # the online part: a daily lift per (day, metric) of the treatment, pooled lift = the seed's lift
    daily = pd.read_csv(out / "daily.csv")
    lifts = daily[daily["kind"] == "daily_lift"]
    assert sorted(lifts["metric"].unique()) == ["aut", "avt", "p2n"] and lifts["day"].tolist() == [1, 1, 1]
    pooled = pd.read_csv(out / "lifts.csv").set_index("metric")
    cells = pd.read_csv(out / "cells.csv")
    seed_lift = cells[(cells["kind"] == "lift") & (cells["bucket"] == "saqrec")].set_index("metric")["lift"]
    for m in ("aut", "avt", "p2n"):
        assert pooled.loc[m, "lift"] == pytest.approx(seed_lift.loc[m], rel=1e-12)
    assert (out / "daily.png").exists() and (out / "offline.png").exists() and (out / "experiment.toml").exists()


def test_sine_replication_k_sweep(fast_run):
    out = fast_run("sine_replication")
    off = pd.read_csv(out / "table.csv").pivot(index="policy", columns="metric", values="mean")
    assert off[["auc", "gauc"]].stack().between(0, 1).all()
    assert (off["ndcg@2"] <= off["ndcg@10"]).all()
    assert set(off.index) == {"sasrec", "sine", "sine_k1", "sine_k2"}
    assert (out / "k_sweep.png").exists()                   # K = 1, 2 and SINE's 4
    assert "## Number of sub-interests" in (out / "report.md").read_text()


def test_usm_replication_metrics(fast_run):
    out = fast_run("usm_replication")
    off = pd.read_csv(out / "table.csv").pivot(index="policy", columns="metric", values="mean")
    assert set(off.index) == {"baseline", "distill_debias"}
    for m in ("dislike_auc", "dislike_auc_ipw", "nfb_dislike", "pfb_dislike"):
        assert off[m].between(0, 1).all(), m
    assert (off["dislike_cal"] >= -1).all()                 # predicted / observed - 1
    report = (out / "report.md").read_text()
    assert "## Online" not in report                        # the fast variant is offline only


def test_easq_online_lifts_are_against_the_offline_only_model(fast_run):
    out = fast_run("easq_online")
    pooled = pd.read_csv(out / "table.csv")
    assert set(pooled["policy"]) == {"easq"} and "easq_offline" not in set(pooled["policy"])
    cells = pd.read_csv(out / "cells.csv")
    daily = cells[cells["kind"] == "daily"]
    assert set(daily["bucket"]) == {"easq", "easq_offline"} and set(daily["day"]) == {1}
    sat = daily[daily["metric"] == "oracle_satisfaction"].set_index("bucket")["value"]
    lift = pooled.set_index("metric").loc["oracle_satisfaction", "lift"]
    assert lift == pytest.approx(sat["easq"] / sat["easq_offline"] - 1, rel=1e-6)


def test_positive_control_pools_each_pair_over_runs(fast_run):
    from estimators import z_value
    out = fast_run("positive_control")
    pooled = pd.read_csv(out / "table.csv").set_index(["pair", "metric"])
    runs = pd.read_csv(out / "lifts_by_run.csv")
    assert set(runs["policy_seed"]) == {0, 1} and set(runs["seed"]) == {0}        # 1 world x 2 policy seeds
    assert set(pooled.index.get_level_values("pair")) == {"saqrec vs saqrec_click", "usm vs usm_click",
                                                           "easq vs easq_click"}
    z = z_value(0.05)
    for (pair, metric), r in pooled.iterrows():
        g = runs[(runs["bucket"] == pair) & (runs["metric"] == metric)]
        # a run whose ratio is undefined in this tiny world (no negative feedback in an arm) does not count;
        # a metric undefined in both runs has no world seed behind its pooled row
        assert len(g) == 2
        g = g[np.isfinite(g["lift"].astype(float))]
        assert r["seeds"] == (1 if len(g) else 0), (pair, metric)
        assert r["runs"] == len(g) and (len(g) == 2 or metric != "oracle_satisfaction")
        if len(g) < 2:
            continue
        # one world: its two runs share the users, so the pooled lift is their mean and its error
        # keeps the runs' own sampling variance (not halved) plus their spread over 2
        se = ((g["lift_ci_high"] - g["lift_ci_low"]) / (2 * z)).to_numpy(float)
        # (rel 1e-8: the CSVs keep 10 significant digits)
        assert r["lift"] == pytest.approx(g["lift"].mean(), rel=1e-8)
        assert r["stderr"] == pytest.approx(np.sqrt(np.mean(se ** 2) + g["lift"].var(ddof=1) / 2), rel=1e-8)
        assert r["sd_policy_seed"] == pytest.approx(g["lift"].std(ddof=1), rel=1e-8)
        assert np.isnan(r["sd_world_seed"])                                       # one world seed
    # the verdict's family is the oracle satisfaction of the three pairs, Holm-corrected
    target = pooled.xs("oracle_satisfaction", level="metric")
    from estimators import adjust_pvalues
    assert np.allclose(target["p_adjusted"], adjust_pvalues(target["p_value"].to_numpy(), "holm"))
    assert pooled.drop(index="oracle_satisfaction", level="metric")["p_adjusted"].isna().all()
    # the world is survey-rich: about 10x the default world's answered share
    facts = pd.read_csv(out / "cells.csv")
    answered = facts.loc[facts["kind"] == "run", "answered_per_effective_view"]
    assert (answered > 0.05).all()


def test_response_parts_shares_add_up(fast_run):
    out = fast_run("response_parts")
    parts = pd.read_csv(out / "table.csv")
    cells = pd.read_csv(out / "cells.csv")
    # engaged_response has willingness and engagement on: 2^2 combinations x 1 seed
    assert sorted(cells["on"].unique()) == ["engagement", "none", "willingness", "willingness+engagement"]
    for _, g in parts.groupby(["scenario", "estimator", "propensity"]):
        g = g.set_index("part")
        shapley = g.loc[["willingness", "engagement", "self_masking", "random_responders"], "bias"]
        assert shapley.sum() == pytest.approx(g.loc["all", "bias"] - g.loc["none", "bias"], abs=1e-9)  # CSV digits
        assert g.loc["self_masking", "bias"] == 0 and g.loc["random_responders", "bias"] == 0


def test_questionnaire_value_reaches_its_answered_rates(fast_run):
    out = fast_run("questionnaire_value")
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["target_rate"].unique()) == [0.01, 0.1]
    # the pilot turns a target rate into a base rate: the pre-period realises it within 15%
    by_rate = table.groupby("target_rate")["answered_rate"].first()
    assert np.allclose(by_rate.to_numpy(), by_rate.index.to_numpy(), rtol=0.15)
    assert set(table["pair"]) == {"saqrec vs saqrec_click"}
    assert ((table["lift_low"] <= table["lift"]) & (table["lift"] <= table["lift_high"])).all()


def test_serving_frontier_points_twins_and_pareto(fast_run):
    from estimators import adjust_pvalues
    out = fast_run("serving_frontier")
    front = pd.read_csv(out / "table.csv", keep_default_na=False, na_values=[""])
    cells = pd.read_csv(out / "cells.csv", keep_default_na=False, na_values=[""])
    buckets = ["saqrec_click", "saqrec_w0", "saqrec_w3", "usm_w0", "usm_w1", "easq_w0", "easq_w1"]
    assert front["bucket"].tolist() == buckets and (front["runs"] == 1).all()
    # every bucket is measured once per run and metric; every non-twin point has one lift per metric
    points, lifts = cells[cells["kind"] == "point"], cells[cells["kind"] == "lift"]
    for _, g in points.groupby(["scenario", "seed", "policy_seed", "metric"]):
        assert sorted(g["bucket"]) == sorted(buckets)
    assert sorted(set(lifts["bucket"])) == ["easq_w1", "saqrec_w0", "saqrec_w3", "usm_w1"]
    assert lifts.groupby(["bucket", "metric"]).size().eq(1).all()
    # each family's twin: saqrec_click (SAQRec with no questionnaire part) for SAQRec, the weight-0 point for USM and EASQ, whose lift is 0 by definition
    twins = front[front["is_twin"]].set_index("bucket")
    assert sorted(twins.index) == ["easq_w0", "saqrec_click", "usm_w0"]
    for m in ("oracle_satisfaction", "aut"):
        assert (twins[[f"{m}_lift", f"{m}_lift_low", f"{m}_lift_high"]] == 0).all().all()
    assert dict(zip(front["bucket"], front["twin"].fillna(""))) == {
        "saqrec_click": "", "saqrec_w0": "saqrec_click", "saqrec_w3": "saqrec_click", "usm_w0": "usm_w0", "usm_w1": "usm_w0",
        "easq_w0": "easq_w0", "easq_w1": "easq_w0"}
    assert front.groupby("family")["is_paper"].sum().to_dict() == {"easq": 1, "saqrec": 1, "usm": 1}
    # one run: the pooled values are the run's; a lift's arms are the absolute values of its two buckets
    value = points.set_index(["bucket", "metric"])["value"]
    for r in lifts.itertuples():
        assert r.treatment == pytest.approx(value[(r.bucket, r.metric)], rel=1e-8)
        assert r.control == pytest.approx(value[(r.twin, r.metric)], rel=1e-8)
        row = front.set_index("bucket").loc[r.bucket]
        assert row[f"{r.metric}_lift"] == pytest.approx(r.lift, rel=1e-8)
        assert row[f"{r.metric}_lift"] == pytest.approx(r.treatment / r.control - 1, rel=1e-6)
    for r in front.itertuples():
        assert r.aut == pytest.approx(value[(r.bucket, "aut")], rel=1e-8)
        assert r.aut_low < r.aut < r.aut_high
    # the verdict's family: oracle satisfaction of every non-twin point, Holm-corrected
    tested = front[~front["is_twin"]]
    assert np.allclose(tested["oracle_satisfaction_p_adjusted"],
                       adjust_pvalues(tested["oracle_satisfaction_p"].to_numpy(), "holm"))
    assert twins["oracle_satisfaction_p_adjusted"].isna().all()
    # Pareto, recomputed pair by pair: efficient <=> no other point is >= on both axes and > on one
    x, y = front["oracle_satisfaction"].to_numpy(), front["aut"].to_numpy()
    for i, efficient in enumerate(front["pareto"]):
        dominated = any(x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]) for j in range(len(x)))
        assert efficient == (not dominated)
    assert front["pareto"].any()
    assert (out / "frontier.png").stat().st_size > 10_000 and (out / "experiment.toml").exists()
    assert "## The frontier" in (out / "report.md").read_text()


def test_ope_benchmark_rows_twin_and_taus(fast_run):
    from scipy import stats

    from estimators import list_estimators
    out = fast_run("ope_benchmark")
    table = pd.read_csv(out / "table.csv")
    cells = pd.read_csv(out / "cells.csv", keep_default_na=False, na_values=[""])
    estimates = cells[cells["kind"] == "estimate"]
    targets = ["twin", "most_popular_t0p4", "oracle_t0p1", "sasrec_t0p05"]
    # every registered estimator x target, each over 2 cells x 3 rewards
    for level in ("impression", "page"):
        rows = table[table["level"] == level]
        assert sorted(set(rows["estimator"])) == sorted(list_estimators(level))
        for _, g in rows.groupby("estimator"):
            assert g["target"].tolist() == targets
    assert ((table["runs"] + table["failed"]) == 6).all()
    assert table[["coverage", "coverage_joint"]].stack().between(0, 1).all()
    # the twin is the logging policy: IPS is the logged (control's) mean exactly, weights 1
    twin = estimates[(estimates["target"] == "twin") & (estimates["estimator"] == "ips")
                     & (estimates["level"] == "impression")]
    assert len(twin) == 6
    np.testing.assert_allclose(twin["value"], twin["logged"], rtol=1e-8)
    facts = cells[cells["kind"] == "target"].set_index(["logging_temperature", "target"])
    assert np.allclose(facts.xs("twin", level="target")[["ess", "max_weight"]], 1.0, rtol=1e-9)
    assert facts["ess"].between(0, 1 + 1e-12).all() and (facts["perplexity"] >= 1).all()
    # one truth per (cell, target, reward, level), shared by its estimators, inside its own interval
    for _, g in estimates.groupby(["logging_temperature", "target", "reward", "level"]):
        assert g["truth"].nunique() == 1 and len(g) == len(list_estimators(g["level"].iloc[0]))
    assert ((estimates["truth_low"] < estimates["truth"]) & (estimates["truth"] < estimates["truth_high"])).all()
    # Kendall tau per cell recomputed with scipy from the estimates
    taus = pd.read_csv(out / "taus_by_cell.csv")
    for r in taus.itertuples():
        g = estimates[(estimates["logging_temperature"] == r.logging_temperature) & (estimates["level"] == r.level)
                      & (estimates["estimator"] == r.estimator) & (estimates["reward"] == r.reward)]
        assert r.targets == len(targets)
        assert r.tau == pytest.approx(stats.kendalltau(g["value"], g["truth"]).statistic)
    assert (out / "estimate_vs_truth.png").exists() and (out / "rmse_vs_temperature.png").exists()
    assert "## Where the estimators fail" in (out / "report.md").read_text()
