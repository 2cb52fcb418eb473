"""`positive_control`: can satbed see questionnaires help where they must?

In a survey-rich world (many answered questionnaires, no response bias, no random responders:
``studies/configs/positive_control.toml``) each questionnaire-aware policy runs in one
multi-bucket A/B test next to its *click-only twin*, the same method with its questionnaire parts
off: SAQRec against SAQRec without SID, MLSE and the satisfaction loss
(:data:`policies.saqrec.CLICK_ONLY`; SASRec would differ in its click backbone too), USM against USM
with zero survey weights in Eq. 3, EASQ against EASQ with ``w_sat = 0``. Every
bucket learns on the same schedule (``learning``), so a difference is the questionnaires' doing,
not online learning one arm gets and the other does not.

Each (world seed, policy seed) is one cell: the run's lift of every treatment against its twin
(:func:`experiments.runner.lifts_against`: two arms of one run are randomised against each
other). Lifts are pooled over the cells by random effects (:func:`studies.head_to_head.pooled_lifts`),
with the spread split into users, policy training seeds and worlds. The verdict is on the oracle
satisfaction, the truth the policies try to raise: a method passes when its pooled lift is
positive and significant after Holm's correction over the pairs. A method that cannot gain even
here is broken, or needs more than this world gives it; either is worth knowing before a negative
result elsewhere is believed.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import adjust_pvalues
from simulator.config import ConfigError, SimConfig, doc_field, dump_toml, from_dict, to_dict
from experiments.config import ABSettings, BucketConfig, ExperimentConfig, ab_settings
from experiments.runner import lifts_against
from experiments.metrics import METRICS_BY_NAME
from experiments.reporting import forest_plot, interval, markdown_table, pct, pval
from studies.engine.base import (Summary, check_policies, check_seeds, lift_rows, policy_buckets, register_study,
                                 run_facts, study_main)
from studies.head_to_head import pooled_lifts
from studies.engine.sweep import Cell

NAME = "positive_control"
CACHE_VERSION = 1
TARGET = "oracle_satisfaction"


@dataclass(frozen=True, slots=True)
class PositiveControlConfig:
    """Config of `positive_control` (studies/configs/positive_control.toml)."""
    world: SimConfig = field(default_factory=SimConfig, metadata={"doc": "the survey-rich world (its seed is replaced)"})
    seeds: tuple[int, ...] = doc_field((0, 1, 2), "world seeds")
    policy_seeds: tuple[int, ...] = doc_field((0, 1), "policy training seeds: every world seed runs with each")
    ab: ABSettings = ab_settings(pre_days=2, days=3, learning="update", update_interval_s=21600.0)
    policies: tuple[BucketConfig, ...] = field(default=(), metadata={"doc": "the buckets: treatments and twins"})
    pairs: tuple[tuple[str, str], ...] = doc_field((), "(treatment, twin) bucket names: each treatment against its twin")
    metrics: tuple[str, ...] = doc_field((TARGET, "aut", "p2n"), "metrics of the table (the verdict reads the first)")

    def __post_init__(self) -> None:
        check_seeds("seeds", self.seeds)
        check_seeds("policy_seeds", self.policy_seeds)
        names = [p.name for p in self.policies]
        check_policies(self.policies, names[0] if names else "")
        if not self.pairs:
            raise ConfigError("pairs must name at least one (treatment, twin)")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(names):
                raise ConfigError(f"pairs: {list(pair)} must be two different buckets of {names}")
        for m in self.metrics:
            if m not in METRICS_BY_NAME:
                raise ConfigError(f"metrics: {m!r} is not a metric; valid: {', '.join(METRICS_BY_NAME)}")
        if not self.metrics:
            raise ConfigError("metrics=() must name at least one metric")

    def experiment(self, seed: int = 0, policy_seed: int = 0) -> ExperimentConfig:
        """The A/B test of one world seed and policy seed (its control: the first pair's twin)."""
        return ExperimentConfig(world=replace(self.world, seed=seed), ab=self.ab, policy_seed=policy_seed,
                                buckets=policy_buckets(self.policies, self.world), control=self.pairs[0][1])


def run_cell(params: dict, seed: int) -> list[dict]:
    """One A/B test: each treatment's lifts against its twin, and the run's facts (with the
    share of effective views answered in the pre-period, the world's survey density)."""
    from experiments.runner import run_experiment
    from simulator.logs import read_impressions
    config = from_dict(ExperimentConfig, params["experiment"])
    config = replace(config, world=replace(config.world, seed=seed))
    rows = []
    with tempfile.TemporaryDirectory(prefix="satbed-pc-") as tmp:
        out = Path(tmp) / "run"
        result = run_experiment(config, out, progress=False, report=False)
        tables = lifts_against(out, config, [twin for _, twin in params["pairs"]])
        for treatment, twin in params["pairs"]:
            table = tables[twin]
            rows += [{"kind": "lift", **r, "bucket": f"{treatment} vs {twin}"}
                     for r in lift_rows(table[table["bucket"] == treatment])]
        pre = read_impressions(out / "logs", days=range(config.ab.pre_days),
                               columns=["effective_view", "survey_submitted"])
        answered = float(pre["survey_submitted"].sum() / max(pre["effective_view"].sum(), 1))
    return rows + [{**run_facts(result), "answered_per_effective_view": answered}]


def cells(config: PositiveControlConfig) -> list[Cell]:
    pairs = [list(p) for p in config.pairs]
    return [Cell(f"studies.{NAME}:run_cell", {"experiment": to_dict(config.experiment(0, ps)), "pairs": pairs}, s,
                 labels={"policy_seed": ps}, version=CACHE_VERSION)
            for s in config.seeds for ps in config.policy_seeds]


def summarise(config: PositiveControlConfig, table: pd.DataFrame, out: Path) -> Summary:
    lifts = table[table["kind"] == "lift"].copy()
    runs = table[table["kind"] == "run"]
    registered = {p.name: p.policy for p in config.policies}
    labels = [f"{t} vs {w}" for t, w in config.pairs]
    pooled = pooled_lifts(lifts, alpha=config.ab.alpha, metrics=config.metrics, correction=config.ab.correction,
                          policy_of={lab: registered[t] for lab, (t, _) in zip(labels, config.pairs)})
    pooled = pooled.rename(columns={"policy": "pair"})
    # the verdict's family is the target metric of every pair (an oracle metric, which pooled_lifts
    # leaves out of its family); the other metrics are descriptive: "significant" = the CI excludes 0
    target = (pooled["metric"] == config.metrics[0]).to_numpy()
    pooled["p_adjusted"] = np.nan
    pooled.loc[target, "p_adjusted"] = adjust_pvalues(pooled.loc[target, "p_value"].to_numpy(), config.ab.correction)
    pooled["significant"] = np.where(target, pooled["p_adjusted"] < config.ab.alpha,
                                     (pooled["lift_low"] > 0) | (pooled["lift_high"] < 0))
    forest_plot(pooled, out / "forest.png", panels=list(config.metrics), rows=labels, panel_col="metric",
                row_col="pair", value="lift", low="lift_low", high="lift_high",
                titles={m: METRICS_BY_NAME[m].label for m in config.metrics},
                points=lifts.rename(columns={"bucket": "pair"}), point_value="lift",
                xlabel="lift vs the click-only twin (%)")
    dump_toml(config.experiment(config.seeds[0], config.policy_seeds[0]), out / "experiment.toml")
    verdict_rows = pooled[target].set_index("pair")
    passed = [lab for lab in labels if verdict_rows.loc[lab, "lift"] > 0 and bool(verdict_rows.loc[lab, "significant"])]
    answered = runs["answered_per_effective_view"].to_numpy(float)
    verdict = (f"In the survey-rich world ({pct(float(np.mean(answered)), sign=False)} of effective views answered), "
               f"{len(passed)} of {len(labels)} questionnaire-aware methods raise oracle satisfaction significantly "
               f"over their click-only twin: " + "; ".join(
                   f"`{lab}` {pct(verdict_rows.loc[lab, 'lift'])} "
                   f"{interval(verdict_rows.loc[lab, 'lift_low'], verdict_rows.loc[lab, 'lift_high'], pct)}"
                   f"{'*' if verdict_rows.loc[lab, 'significant'] else ''}" for lab in labels) + ".")
    holds = True if len(passed) == len(labels) else False if not passed else None
    shown = pooled.assign(
        metric=[METRICS_BY_NAME[m].label + (" (oracle)" if METRICS_BY_NAME[m].oracle else "") for m in pooled["metric"]],
        lift_=[pct(v) + ("*" if s else "") for v, s in zip(pooled["lift"], pooled["significant"])],
        ci=[interval(lo, hi, pct) for lo, hi in zip(pooled["lift_low"], pooled["lift_high"])],
        runs_up=[f"{a}/{n}" for a, n in zip(pooled["positive_seeds"], pooled["runs"])],
        sd=[" / ".join("n/a" if not np.isfinite(v) else pct(v, sign=False) for v in r)
            for r in pooled[["sd_users", "sd_policy_seed", "sd_world_seed"]].to_numpy(float)])
    shown = shown[["pair", "metric", "lift_", "ci", "p_value", "p_adjusted", "runs_up", "sd"]].rename(columns={
        "lift_": "lift", "ci": f"{1 - config.ab.alpha:.0%} CI", "p_adjusted": f"p ({config.ab.correction}, verdict)",
        "runs_up": "runs with lift > 0", "sd": "sd: users / policy seed / world"})
    fmt_p = {c: pval for c in ("p_value", f"p ({config.ab.correction}, verdict)")}
    lines = [f"{len(config.seeds) * len(config.policy_seeds)} A/B tests (world seeds {list(config.seeds)} x policy "
             f"seeds {list(config.policy_seeds)}), each on a fresh world of {config.world.users.n_users:,} users: "
             f"{config.ab.pre_days} production-served day(s) train the policies, then {config.ab.days} day(s) with "
             f"{len(config.policies)} equal buckets; {config.ab.describe_learning()}. Answered questionnaires per "
             f"effective view in the pre-period: {', '.join(pct(a, sign=False) for a in answered)}.", "",
             "| bucket | policy | params |", "|---|---|---|"]
    lines += [f"| {p.name} | `{p.policy}` | {p.params or ''} |" for p in config.policies]
    lines += ["", "## Each method against its click-only twin (random-effects pooled over runs)", "",
              markdown_table(shown, fmt_p), "",
              f"`*`: for {METRICS_BY_NAME[config.metrics[0]].label}, significant at alpha = {config.ab.alpha} after "
              f"{config.ab.correction} correction over the {len(labels)} pairs (the verdict); for the other metrics, "
              "the interval excludes 0. The last column splits each lift's spread into the runs' own sampling "
              "error (users), policy training seeds on the same world, and worlds.", "",
              "![forest plot](forest.png)"]
    headline = [f"positive_control: {lab} {pct(verdict_rows.loc[lab, 'lift'])}"
                f"{'*' if verdict_rows.loc[lab, 'significant'] else ''} oracle satisfaction" for lab in labels]
    return Summary(table=pooled, markdown="\n".join(lines), verdict=verdict, holds=holds,
                   tables={"lifts_by_run": lifts}, headline=headline)


STUDY = register_study(
    NAME, "each questionnaire-aware policy against its click-only twin in a survey-rich world, on one learning "
          "schedule: does the testbed detect a real effect?",
    config=PositiveControlConfig, cells=cells, summarise=summarise,
    claim="A positive control (satbed's own requirement, not a paper's): with dense, unbiased questionnaire "
          "answers, SAQRec, USM and EASQ each raise users' true satisfaction over the same method without "
          "questionnaires. Direction tested per method: oracle satisfaction up, significant after correction.")


if __name__ == "__main__":
    study_main(NAME)
