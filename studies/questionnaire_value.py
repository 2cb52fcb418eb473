"""`questionnaire_value`: how many answered questionnaires does each method need to raise satisfaction?

Platform teams ask this and no paper answers it. The study sweeps three things:

- the **answered rate**: answered questionnaires per effective view (0.25% to 30%);
- the **response mechanism**, i.e. why people answer:
  - ``engagement``: after engaged views, missing at random given observables, the
    ``engaged_response`` scenario's response model;
  - ``self_masking``: the default world's: more when satisfied and when the experience was
    extreme, missing not at random;
- the **clickbait strength**: the ``default`` world, or ``clickbait``, where attractiveness runs
  against quality.

Each setting runs :mod:`studies.positive_control`'s A/B test: SAQRec, USM and EASQ, each next to
its click-only twin, all on one learning schedule. The test is repeated over world seeds and
policy seeds, and each method's lift over its twin is pooled over those runs by random effects.

**How a rate is reached.** Questionnaires follow every eligible effective view with probability
``base_rate``, so ``one_per_page = false`` and there is no daily cap: above about 20%, the
platform's one-per-page rule could not reach the rate. The base rate is the target rate divided
by the mechanism's mean submit probability. A short pilot simulation measures that probability
(:func:`mean_submit_probability`), and the rate realised in the pre-period is reported and
plotted. Both mechanisms use willingness 0.5 and no random responders, so they differ only in
why people answer.

**Verdict per method and mechanism.** The lowest answered rate from which the pooled lift in
oracle satisfaction over the twin is positive and significant (its interval excludes 0) at that
rate and at every higher one. If there is no such rate in the swept range, the verdict says
"never in range".
"""
from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.config import ConfigError, SimConfig, doc_field, dump_toml, to_dict, with_overrides
from experiments.metrics import METRICS_BY_NAME
from experiments.reporting import band_plot, markdown_table, pct
from simulator.scenarios import sized_scenario
from simulator.figures import COLORS, save_figure
from studies.engine.base import Summary, register_study, study_main
from studies.head_to_head import pooled_lifts
from studies.positive_control import PositiveControlConfig
from studies.engine.sweep import Cell

NAME = "questionnaire_value"
CACHE_VERSION = 1
MECHANISMS = {
    "engagement": {"questionnaire.response_bias": 0.0, "questionnaire.extremity_bias": 0.0,
                   "questionnaire.response_watch": 2.0, "questionnaire.response_feedback": 1.0,
                   "questionnaire.response_depth": -0.3},
    "self_masking": {"questionnaire.response_bias": 1.0, "questionnaire.extremity_bias": 0.5,
                     "questionnaire.response_watch": 0.0, "questionnaire.response_feedback": 0.0,
                     "questionnaire.response_depth": 0.0},
}
"""Response mechanisms: the engaged_response scenario's and the default world's response models."""
COMMON = {"users.willingness_mean": 0.5, "users.random_responder_share": 0.0,
          "questionnaire.one_per_page": False, "questionnaire.per_user_daily_cap": 1_000_000,
          "questionnaire.after_effective_view_only": True, "questionnaire.targeting": "none"}
"""Set in every cell: willing users, no random responders, a questionnaire may follow any effective view."""
PILOT = {"users.n_users": 300, "catalog.n_items": 1000, "platform.days": 1, "questionnaire.base_rate": 0.5}


@dataclass(frozen=True, slots=True)
class QuestionnaireValueConfig(PositiveControlConfig):
    """Config of `questionnaire_value` (studies/configs/questionnaire_value.toml): positive_control's
    A/B test (its ``world`` sets only the size: users, items), swept over the fields below."""
    answered_rates: tuple[float, ...] = doc_field((0.0025, 0.01, 0.03, 0.1, 0.3),
                                           "target answered questionnaires per effective view")
    mechanisms: tuple[str, ...] = doc_field(tuple(MECHANISMS), f"response mechanisms: {', '.join(MECHANISMS)}")
    worlds: tuple[str, ...] = doc_field(("default", "clickbait"), "scenarios: the clickbait strength axis")

    def __post_init__(self) -> None:
        PositiveControlConfig.__post_init__(self)
        from simulator.scenarios import list_scenarios
        if not self.answered_rates or not all(0 < r <= 1 for r in self.answered_rates):
            raise ConfigError(f"answered_rates={list(self.answered_rates)} must be non-empty, each in (0, 1]")
        for name, values, known in (("mechanisms", self.mechanisms, tuple(MECHANISMS)),
                                    ("worlds", self.worlds, tuple(list_scenarios()))):
            bad = [v for v in values if v not in known]
            if not values or bad:
                raise ConfigError(f"{name}={list(values)}: unknown {bad}; valid: {', '.join(known)}")

    def setting(self, world: str, mechanism: str, rate: float) -> SimConfig:
        """The world of one cell: the scenario at this size, the mechanism, the base rate for ``rate``."""
        base = sized_scenario(world, self.world, {**COMMON, **MECHANISMS[mechanism]})
        p_submit = mean_submit_probability(base)
        base_rate = rate / p_submit
        if base_rate > 1:
            raise ConfigError(f"answered rate {rate:g} needs base_rate {base_rate:.2f} > 1 with mechanism "
                              f"{mechanism!r} in {world!r} (mean P(submit) {p_submit:.2f})")
        return with_overrides(base, {"questionnaire.base_rate": base_rate})


@functools.lru_cache(maxsize=64)
def mean_submit_probability(world: SimConfig) -> float:
    """Mean ``true_p_submit`` over shown questionnaires in a short pilot of ``world`` (300 users,
    one day, seed 0): what turns a target answered rate into a base rate."""
    from simulator.logs import read_impressions
    from experiments.simulate import simulate
    pilot = with_overrides(replace(world, seed=0), PILOT)
    with tempfile.TemporaryDirectory(prefix="satbed-qv-pilot-") as tmp:
        simulate(pilot, Path(tmp) / "run", progress=False)
        imp = read_impressions(Path(tmp) / "run" / "logs", columns=["survey_shown", "true_p_submit"])
    shown = imp["survey_shown"].to_numpy(bool)
    return float(imp["true_p_submit"].to_numpy(float)[shown].mean())


def cells(config: QuestionnaireValueConfig) -> list[Cell]:
    pairs = [list(p) for p in config.pairs]
    out = []
    for world in config.worlds:
        for mechanism in config.mechanisms:
            for rate in config.answered_rates:
                experiment = replace(config, world=config.setting(world, mechanism, rate)).experiment(0, 0)
                labels = {"world": world, "mechanism": mechanism, "target_rate": rate}
                out += [Cell("studies.positive_control:run_cell",
                             {"experiment": to_dict(replace(experiment, policy_seed=ps)), "pairs": pairs}, s,
                             labels={**labels, "policy_seed": ps}, version=CACHE_VERSION)
                        for s in config.seeds for ps in config.policy_seeds]
    return out


# ----------------------------------------------------------------------------- summary
def pooled(config: QuestionnaireValueConfig, table: pd.DataFrame) -> pd.DataFrame:
    """Per (world, mechanism, rate, pair, metric): the lift pooled over runs, with the realised
    answered rate."""
    registered = {p.name: p.policy for p in config.policies}
    labels = {f"{t} vs {w}": t for t, w in config.pairs}
    rows = []
    for (world, mechanism, rate), g in table.groupby(["world", "mechanism", "target_rate"], sort=False):
        lifts = g[g["kind"] == "lift"]
        runs = g[g["kind"] == "run"]
        p = pooled_lifts(lifts, alpha=config.ab.alpha, metrics=config.metrics, correction=config.ab.correction,
                         policy_of={lab: registered[t] for lab, t in labels.items()})
        p["significant"] = (p["lift_low"] > 0) | (p["lift_high"] < 0)
        rows.append(p.rename(columns={"policy": "pair"}).assign(
            world=world, mechanism=mechanism, target_rate=rate,
            answered_rate=float(runs["answered_per_effective_view"].astype(float).mean())))
    cols = ["world", "mechanism", "target_rate", "answered_rate", "pair", "metric", "lift", "lift_low", "lift_high",
            "significant", "p_value", "seeds", "runs", "positive_seeds"]
    out = pd.concat(rows, ignore_index=True)[cols]
    order = {"world": list(config.worlds), "mechanism": list(config.mechanisms),
             "pair": [f"{t} vs {w}" for t, w in config.pairs], "metric": list(config.metrics)}
    keys = {k: out[k].map({v: i for i, v in enumerate(vals)}) for k, vals in order.items()}
    return out.assign(**{f"_{k}": v for k, v in keys.items()}).sort_values(
        ["_world", "_mechanism", "target_rate", "_pair", "_metric"]).drop(columns=[f"_{k}" for k in keys]).reset_index(drop=True)


def first_significant(p: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (world, mechanism, pair): the lowest answered rate from which the lift is positive and
    significant at that rate and every higher one (a lone significant rate below a
    non-significant one does not count: with one seed per rate, that is noise)."""
    rows = []
    for (world, mechanism, pair), g in p[p["metric"] == metric].groupby(["world", "mechanism", "pair"], sort=False):
        g = g.sort_values("target_rate")
        up = (g["significant"].astype(bool) & (g["lift"] > 0)).to_numpy()
        holds_from = np.flatnonzero(np.logical_and.accumulate(up[::-1])[::-1])     # suffixes that all hold
        rows.append({"world": world, "mechanism": mechanism, "pair": pair,
                     "needs": float(g["answered_rate"].iloc[holds_from[0]]) if len(holds_from) else float("nan"),
                     "lift_at_max": float(g["lift"].iloc[-1]), "max_rate": float(g["answered_rate"].iloc[-1])})
    return pd.DataFrame(rows)


def _plot(p: pd.DataFrame, config: QuestionnaireValueConfig, metric: str, out: Path) -> str:
    from simulator.figures import subplots
    labels = [f"{t} vs {w}" for t, w in config.pairs]
    fig, axes = subplots(len(config.worlds), len(config.mechanisms), squeeze=False, sharey="row",
                             figsize=(5.0 * len(config.mechanisms), 3.3 * len(config.worlds)), constrained_layout=True)
    for r, world in enumerate(config.worlds):
        for c, mechanism in enumerate(config.mechanisms):
            ax = axes[r, c]
            for j, lab in enumerate(labels):
                s = p[(p["world"] == world) & (p["mechanism"] == mechanism) & (p["pair"] == lab)
                      & (p["metric"] == metric)].sort_values("answered_rate")
                band_plot(ax, 100 * s["answered_rate"].to_numpy(float), 100 * s["lift"], 100 * s["lift_low"],
                          100 * s["lift_high"],
                          label=lab, color=COLORS[j % len(COLORS)], marker="o")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("answered questionnaires per effective view (%)", fontsize=8)
            ax.set_ylabel(f"lift in {METRICS_BY_NAME[metric].label} (%)", fontsize=8)
            ax.set_title(f"{world} world, {mechanism.replace('_', '-')} response", fontsize=9)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    name = f"lift_vs_answered_rate_{metric}.png"
    save_figure(fig, out / name)
    return name


def summarise(config: QuestionnaireValueConfig, table: pd.DataFrame, out: Path) -> Summary:
    p = pooled(config, table)
    target = config.metrics[0]
    figs = [_plot(p, config, m, out) for m in config.metrics]
    needs = first_significant(p, target)
    dump_toml(replace(config, world=config.setting(config.worlds[0], config.mechanisms[0],
                                                   config.answered_rates[0])).experiment(config.seeds[0]),
              out / "experiment.toml")

    def need(r) -> str:
        return (f"{pct(r.needs, sign=False)}" if np.isfinite(r.needs)
                else f"never in range (lift {pct(r.lift_at_max)} at {pct(r.max_rate, sign=False)})")

    verdict_lines = [f"`{r.pair}` in {r.world}/{r.mechanism}: {need(r)}" for r in needs.itertuples()]
    verdict = ("Answered questionnaires per effective view from which each method's oracle-satisfaction gain over "
               "its click-only twin is significant (at that rate and every higher one): " + "; ".join(verdict_lines) + ".")
    found = np.isfinite(needs["needs"]).to_numpy()
    holds = True if found.all() else False if not found.any() else None
    shown = p.assign(rate=[f"{pct(t, sign=False)} ({pct(a, sign=False)})" for t, a in zip(p["target_rate"], p["answered_rate"])],
                     metric=[METRICS_BY_NAME[m].label for m in p["metric"]],
                     lift=[pct(v) + ("*" if s else "") for v, s in zip(p["lift"], p["significant"])],
                     ci=[f"[{pct(lo)}, {pct(hi)}]" for lo, hi in zip(p["lift_low"], p["lift_high"])])
    wide = shown[shown["metric"] == METRICS_BY_NAME[target].label].pivot_table(
        index=["world", "mechanism", "rate"], columns="pair", values="lift", aggfunc="first", sort=False).reset_index()
    md = [f"{len(config.seeds)} world seed(s) x {len(config.policy_seeds)} policy seed(s) per setting, "
          f"{config.world.users.n_users:,} users, {config.ab.pre_days} production-served day(s), then {config.ab.days} "
          f"experiment day(s) with {len(config.policies)} equal buckets; {config.ab.describe_learning()}. "
          "Rate: target (realised in the pre-period).", "",
          f"## Lift in {METRICS_BY_NAME[target].label} over the click-only twin (`*`: the 95% interval excludes 0)", "",
          markdown_table(wide), "",
          "## How many questionnaires each method needs", "",
          markdown_table(needs.assign(needs=[need(r) for r in needs.itertuples()])[["world", "mechanism", "pair", "needs"]]),
          "", *[f"![{m}]({f})" for m, f in zip(config.metrics, figs)], "",
          "Every metric and interval: `table.csv`."]
    headline = [f"questionnaire_value: {line}" for line in verdict_lines]
    return Summary(table=p, markdown="\n".join(md), verdict=verdict, holds=holds, tables={"needs": needs},
                   headline=headline)


STUDY = register_study(
    NAME, "the lift of SAQRec, USM and EASQ over their click-only twins vs the answered-questionnaire rate, per "
          "response mechanism and clickbait strength: how many questionnaires does each method need?",
    config=QuestionnaireValueConfig, cells=cells, summarise=summarise,
    claim="satbed's own question: each questionnaire-aware method raises oracle satisfaction over its "
          "click-only twin once enough questionnaires are answered. Direction tested per method, mechanism and "
          "world: the lift becomes positive and significant somewhere in the swept range of answered rates.")

if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
