"""`head_to_head`: every configured policy against production in one multi-bucket A/B test.

The policy list comes from the config (``[[policies]]`` tables: bucket name, registered policy,
parameters; ``control`` names the production bucket), never from code: adding a paper policy
is one more table in ``studies/configs/head_to_head.toml``. Each seed is one cell: a fresh world
(``world.seed`` = the seed), ``pre_days`` served by production (the training logs), then
``days`` with the users split into equal buckets by a salted hash, each served by its policy,
exactly as ``satbed ab`` runs it (``experiments.runner.run_experiment``). The cell returns the
run's lift table: every treatment bucket vs the control on every metric, per-user delta-method
or Welch intervals.

Over seeds (independent worlds), each (policy, metric) relative lift is pooled by
DerSimonian-Laird random effects (the standard error of a seed's lift is read off its interval),
so the pooled interval includes the variation between worlds; with one seed it is that seed's
result. The p-value tests "no difference": the per-seed differences (treatment - control, in the
metric's unit) are pooled the same way and compared with a normal reference, which for one seed
is the run's own test up to the normal approximation. (The lift's delta-method interval is
narrower than the difference's when the lift is far from 0, so the two can disagree near the
threshold, as they can in one run's report.) The p-values are corrected (Holm by default) over every
(policy, metric) of the table except the oracle metrics, which are no hypothesis a platform
could test. Oracle *policies* (which read the ground truth) are tested like the others and
flagged as item-wise oracles (references, not deployable policies). ``experiment.toml`` in the results directory reproduces one seed's full
A/B report: ``satbed ab --config DIR/experiment.toml --seed N``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import adjust_pvalues, normal_p, random_effects, spread_sources, world_means, z_value
from simulator.config import ConfigError, SimConfig, doc_field, dump_toml, to_dict
from experiments.config import ABSettings, BucketConfig, ExperimentConfig, ab_settings
from experiments.metrics import METRICS_BY_NAME
from experiments.reporting import forest_plot, interval, markdown_table, pct, pval
from studies.engine.base import (Summary, check_policies, check_seeds, is_oracle, lift_rows, policy_buckets,
                                 register_study, run_ab_cell, run_facts, study_main)
from studies.engine.sweep import Cell

NAME = "head_to_head"
CACHE_VERSION = 2                    # 2: one learning schedule for every bucket; policy seeds
VERDICT_METRICS = ("aut", "avt", "p2n")       # SAQRec Table 4's online metrics


@dataclass(frozen=True, slots=True)
class HeadToHeadConfig:
    """Config of `head_to_head` (studies/configs/head_to_head.toml)."""
    world: SimConfig = field(default_factory=SimConfig, metadata={"doc": "world (its seed is replaced)"})
    seeds: tuple[int, ...] = doc_field((0, 1, 2), "world seeds: one A/B test per seed and policy seed")
    policy_seeds: tuple[int, ...] = doc_field((0,), "policy training seeds (ExperimentConfig.policy_seed): every world "
                                             "seed runs with each")
    ab: ABSettings = ab_settings(pre_days=2, days=3)
    policies: tuple[BucketConfig, ...] = field(default=(), metadata={"doc": "the arms, control included"})
    control: str = doc_field("production", "name of the control policy (the production bucket)")
    metrics: tuple[str, ...] = doc_field(("aut", "avt", "p2n", "skip_rate", "like_rate", "dislike_rate",
                                   "survey_like_rate_debiased", "survey_issue_rate_debiased", "oracle_satisfaction"),
                                  "metrics of the table, the correction family and the forest plot")

    def __post_init__(self) -> None:
        check_seeds("seeds", self.seeds)
        check_seeds("policy_seeds", self.policy_seeds)
        check_policies(self.policies, self.control)
        for m in self.metrics:
            if m not in METRICS_BY_NAME:
                raise ConfigError(f"metrics: {m!r} is not a metric; valid: {', '.join(METRICS_BY_NAME)}")
        if not self.metrics:
            raise ConfigError("metrics=() must name at least one metric")

    def experiment(self, seed: int = 0, policy_seed: int = 0) -> ExperimentConfig:
        """The A/B test of one world seed and policy seed."""
        return ExperimentConfig(world=replace(self.world, seed=seed), ab=self.ab,
                                policy_seed=policy_seed,
                                buckets=policy_buckets(self.policies, self.world), control=self.control)


def run_cell(params: dict, seed: int) -> list[dict]:
    """One multi-bucket A/B test: its lift table, plus a row of run facts (SRM, timings)."""
    result = run_ab_cell(params, seed, "h2h")
    return [{"kind": "lift", **r} for r in lift_rows(result.lifts)] + [run_facts(result)]


def cells(config: HeadToHeadConfig) -> list[Cell]:
    return [Cell(f"studies.{NAME}:run_cell", {"experiment": to_dict(config.experiment(0, ps))}, s,
                 labels={"policy_seed": ps}, version=CACHE_VERSION)
            for s in config.seeds for ps in config.policy_seeds]


def pooled_lifts(lifts: pd.DataFrame, *, alpha: float, metrics: tuple[str, ...], correction: str,
                 policy_of: dict[str, str]) -> pd.DataFrame:
    """Random-effects pooled relative lift per (bucket, metric) over worlds (the runs of one
    world, its policy seeds, are averaged first: :func:`estimators.world_means`),
    corrected p-values, and where the lift's spread comes from
    (:func:`estimators.spread_sources`). ``seeds`` counts worlds, ``runs`` runs.

    Args:
        lifts: the cells' ``kind == "lift"`` rows (bucket, metric, seed, policy_seed, lift,
            lift_ci_low/high, ...).
    """
    z = z_value(alpha)
    rows = []
    buckets = list(dict.fromkeys(lifts["bucket"]))
    for bucket in buckets:
        for metric in metrics:
            g = lifts[(lifts["bucket"] == bucket) & (lifts["metric"] == metric)]
            world = g["seed"].to_numpy()
            se = ((g["lift_ci_high"] - g["lift_ci_low"]) / (2 * z)).to_numpy(float)
            # the runs of one world (its policy seeds) share its users: one estimate per world first
            _, y_w, se_w = world_means(g["lift"].to_numpy(float), se, world)
            value, stderr, tau2, k = random_effects(y_w, se_w)
            # the test is on the difference (valid under "no effect", as in the run's own report); the
            # lift's delta-method interval is narrower than the difference's when the lift is far from 0
            d_se = ((g["diff_ci_high"] - g["diff_ci_low"]) / (2 * z)).to_numpy(float)
            diff, diff_se, _, _ = random_effects(*world_means(g["difference"].to_numpy(float), d_se, world)[1:])
            finite = g[np.isfinite(g["lift"].astype(float))]
            rows.append({"policy": bucket, "registered": policy_of.get(bucket, ""), "metric": metric,
                         "oracle_metric": METRICS_BY_NAME[metric].oracle, "oracle_policy": is_oracle(policy_of.get(bucket, "")),
                         "seeds": k, "runs": int(np.isfinite(g["lift"].astype(float)).sum()), "lift": value,
                         "lift_low": value - z * stderr, "lift_high": value + z * stderr,
                         "stderr": stderr, "tau2": tau2, "difference": diff, "difference_stderr": diff_se,
                         "p_value": normal_p(diff, diff_se),
                         "positive_seeds": int((finite["lift"] > 0).sum()),
                         "significant_seeds": int(finite["significant"].astype(bool).sum()),
                         "control_mean": float(g["control"].mean()), "treatment_mean": float(g["treatment"].mean()),
                         **spread_sources(g["lift"].to_numpy(float), se, world)})
    table = pd.DataFrame(rows)
    table["p_adjusted"] = np.nan
    family = (~table["oracle_metric"]) & table["p_value"].notna()
    if family.any():
        table.loc[family, "p_adjusted"] = adjust_pvalues(table.loc[family, "p_value"].to_numpy(), correction)
    table["significant"] = table["p_adjusted"] < alpha
    return table


def _verdict(table: pd.DataFrame, control: str) -> tuple[str, bool | None]:
    parts, wins = [], []
    for policy, g in table[~table["oracle_policy"]].groupby("policy", sort=False):
        g = g.set_index("metric")
        have = [m for m in VERDICT_METRICS if m in g.index]
        if not have:
            continue
        desc = ", ".join(f"{m.upper()} {pct(g.loc[m, 'lift'])}{'*' if g.loc[m, 'significant'] else ''}" for m in have)
        up = all(g.loc[m, "lift"] > 0 and bool(g.loc[m, "significant"]) for m in have)
        wins.append(up)
        parts.append(f"`{policy}` {desc}" + (" (beats control on all)" if up else ""))
    if not parts:
        return "No deployable policy besides the control.", None
    holds = True if all(wins) else False if not any(wins) else None
    return (f"Pooled lifts vs `{control}` (`*` significant after correction): " + "; ".join(parts) +
            ". The claim holds for a policy when AUT, AVT and P2N all rise significantly.", holds)


def summarise(config: HeadToHeadConfig, table: pd.DataFrame, out: Path) -> Summary:
    lifts = table[table["kind"] == "lift"].copy()
    runs = table[table["kind"] == "run"]
    policy_of = {p.name: p.policy for p in config.policies}
    pooled = pooled_lifts(lifts, alpha=config.ab.alpha, metrics=config.metrics, correction=config.ab.correction,
                          policy_of=policy_of)
    treat = [p.name for p in config.policies if p.name != config.control]
    oracle_tag = {p.name: " (oracle)" for p in config.policies if is_oracle(p.policy)}
    forest_plot(pooled, out / "forest.png", panels=list(config.metrics), rows=treat, panel_col="metric",
                row_col="policy", value="lift", low="lift_low", high="lift_high",
                titles={m: METRICS_BY_NAME[m].label for m in config.metrics},
                points=lifts.rename(columns={"bucket": "policy"}), point_value="lift",
                highlight=oracle_tag)
    dump_toml(config.experiment(config.seeds[0]), out / "experiment.toml")
    verdict, holds = _verdict(pooled, config.control)
    shown = pooled.assign(
        policy=[p + oracle_tag.get(p, "") for p in pooled["policy"]],
        metric=[METRICS_BY_NAME[m].label + (" (oracle)" if METRICS_BY_NAME[m].oracle else "") for m in pooled["metric"]],
        lift_=[pct(v) + ("*" if s else "") for v, s in zip(pooled["lift"], pooled["significant"])],
        ci=[interval(lo, hi, pct) for lo, hi in zip(pooled["lift_low"], pooled["lift_high"])],
        seeds_up=[f"{a}/{n}" for a, n in zip(pooled["positive_seeds"], pooled["runs"])])
    shown = shown[["policy", "metric", "lift_", "ci", "p_value", "p_adjusted", "seeds_up", "significant_seeds"]]
    shown = shown.rename(columns={"lift_": "lift", "ci": f"{1 - config.ab.alpha:.0%} CI",
                                  "p_adjusted": f"p ({config.ab.correction})", "seeds_up": "runs with lift > 0",
                                  "significant_seeds": "runs significant (own run)"})
    fmt_p = {"p_value": pval, f"p ({config.ab.correction})": pval}
    srm = runs["srm_p"].to_numpy(float)
    train = runs["train_s"].to_numpy(float) if "train_s" in runs else np.array([np.nan])
    lines = [f"{len(config.seeds) * len(config.policy_seeds)} A/B test(s) (world seeds {list(config.seeds)} x "
             f"policy seeds {list(config.policy_seeds)}), each on a fresh world of "
             f"{config.world.users.n_users:,} users and {config.world.catalog.n_items:,} items: {config.ab.pre_days} "
             f"production-served day(s) train the policies, then {config.ab.days} day(s) with {len(config.policies)} "
             f"equal buckets; control `{config.control}`; {config.ab.describe_learning()}.",
             "", "| bucket | policy | params |", "|---|---|---|"]
    lines += [f"| {p.name}{oracle_tag.get(p.name, '')} | `{p.policy}` | {p.params or ''} |" for p in config.policies]
    lines += ["", f"## Lifts vs `{config.control}` (random-effects pooled over seeds)", "",
              markdown_table(shown, fmt_p), "",
              f"`*` significant at alpha = {config.ab.alpha} after {config.ab.correction} correction over the "
              f"{int((~pooled['oracle_metric']).sum())} non-oracle tests of this table. Oracle rows read the "
              "ground truth, item by item (item-wise oracles): references, not deployable policies.", "",
              "![forest plot](forest.png)", "",
              "Where each lift's spread comes from (standard deviations of the relative lift; "
              "`estimators.spread_sources`): users (the runs' own sampling error), policy training "
              "seeds on the same world, and worlds:", "",
              markdown_table(pooled[["policy", "metric", "sd_users", "sd_policy_seed", "sd_world_seed"]],
                             {c: (lambda v: "" if not np.isfinite(v) else pct(v, sign=False)) for c in
                              ("sd_users", "sd_policy_seed", "sd_world_seed")}), "",
              f"Sample-ratio-mismatch p-values per seed: {', '.join(f'{p:.3g}' for p in srm)}; training seconds per "
              f"seed: {', '.join(f'{t:.0f}' for t in train)}. One seed's full report: "
              f"`satbed ab --config {out / 'experiment.toml'} --seed {config.seeds[0]}`."]
    key = pooled[pooled["metric"].isin(["aut", "oracle_satisfaction"])]
    headline = ["head_to_head: " + ", ".join(f"{r.policy} {r.metric} {pct(r.lift)}{'*' if r.significant else ''}"
                                             for r in key.itertuples())]
    return Summary(table=pooled, markdown="\n".join(lines), verdict=verdict, holds=holds,
                   tables={"lifts_by_seed": lifts}, headline=headline)


STUDY = register_study(
    NAME, "every configured policy against production in one multi-bucket A/B test: pooled lifts, corrected "
          "p-values, forest plot",
    config=HeadToHeadConfig, cells=cells, summarise=summarise,
    claim="SAQRec §5.5 and Table 4: in a randomised online A/B test against the production base model, the "
          "candidate recommender raises average user watch time (+0.124%), average video watch time (+0.509%) and "
          "the positive-to-negative feedback ratio (+0.333%); the same kind of claim is made for USM (§4.1.3, "
          "fewer dislikes and reports) and EASQ. Direction tested per policy: AUT, AVT and P2N all up, "
          "significantly after correction.")

if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
