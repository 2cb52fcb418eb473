"""`response_parts`: which share of the naive survey bias each part of the response model causes.

The response model (:mod:`simulator.questionnaire`) has four named parts: **willingness** (a user
trait), **engagement** (answering after engaged views: missing at random given observables),
**self-masking** (the submit logit rises with the latent satisfaction itself and its extremity)
and **random responders**. Each world named in ``scenarios`` is simulated with every on/off
combination of the parts that are on in it, paired by seed (a part "off" is: willingness equal for
every user at its mean, ``willingness_concentration`` = 1e6; the three engagement knobs at 0;
``response_bias`` and ``extremity_bias`` at 0; ``random_responder_share`` at 0). A part that is
already off in the scenario (e.g. engagement in ``default``) causes no bias, by construction: its
share is 0 and its combinations are not run.

The estimand is bias_ablation's satisfaction rate: the mean ``true_satisfied`` over the
impressions eligible for a questionnaire, estimated by the respondents' like share (``naive``)
and by IPS with the fitted survey-submit model (:func:`experiments.metrics.submit_propensity`, what
a platform can build) or the true ``true_p_submit``. Each part's share of the bias is its Shapley
value: its marginal contribution averaged over the orders in which the parts can be switched on,
so the shares add up to the bias with every part on (minus the bias with every part off, which
is 0 up to noise). Shapley values are computed per seed and given with a t interval over seeds.

Turning willingness off redraws the population (``rng.beta`` uses a variable number of random
numbers), so that part's contribution carries some world-to-world noise; the others reuse the
same world and the same random numbers.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import mean_ci
from simulator.config import ConfigError, SimConfig, doc_field, to_dict, with_overrides
from simulator.scenarios import sized_scenario
from simulator.figures import COLORS, save_figure
from experiments.reporting import markdown_table, num
from studies.engine.base import Summary, check_seeds, register_study, study_main
from studies.engine.sweep import Cell

NAME = "response_parts"
CACHE_VERSION = 1
PARTS = {
    "willingness": {"users.willingness_concentration": 1e6},
    "engagement": {"questionnaire.response_watch": 0.0, "questionnaire.response_feedback": 0.0,
                   "questionnaire.response_depth": 0.0},
    "self_masking": {"questionnaire.response_bias": 0.0, "questionnaire.extremity_bias": 0.0},
    "random_responders": {"users.random_responder_share": 0.0},
}
"""Each part of the response model, and the overrides that switch it off."""
ESTIMATORS = (("naive", "none"), ("ips", "fitted"), ("ips", "true"))
"""(estimator, propensity) pairs whose bias is split into parts."""


@dataclass(frozen=True, slots=True)
class ResponsePartsConfig:
    """Config of `response_parts` (studies/configs/response_parts.toml)."""
    scenarios: tuple[str, ...] = doc_field(("default", "engaged_response"), "named worlds (satbed scenarios) to split")
    world: SimConfig = field(default_factory=SimConfig,
                             metadata={"doc": "size overrides applied on top of every scenario: users.n_users, "
                                              "catalog.n_items, platform.days (other sections ignored)"})
    seeds: tuple[int, ...] = doc_field((0, 1, 2, 3, 4), "world seeds; every combination of parts runs every seed")
    alpha: float = doc_field(0.05, "1 - confidence level of the intervals over seeds")

    def __post_init__(self) -> None:
        from simulator.scenarios import list_scenarios
        check_seeds("seeds", self.seeds)
        if not self.scenarios:
            raise ConfigError("scenarios must name at least one scenario")
        unknown = sorted(set(self.scenarios) - set(list_scenarios()))
        if unknown:
            raise ConfigError(f"scenarios: unknown {', '.join(unknown)}; known: {', '.join(list_scenarios())}")

    def world_for(self, scenario: str, on: tuple[str, ...]) -> SimConfig:
        """The scenario at this size with the parts not in ``on`` switched off."""
        overrides = {}
        for part, off in PARTS.items():
            if part not in on:
                overrides.update(off)
        return sized_scenario(scenario, self.world, overrides)

    def active_parts(self, scenario: str) -> tuple[str, ...]:
        """The parts that are on in the scenario (switching them off changes the world)."""
        full = self.world_for(scenario, tuple(PARTS))
        return tuple(p for p in PARTS if self.world_for(scenario, tuple(q for q in PARTS if q != p)) != full)


def run_cell(params: dict, seed: int) -> list[dict]:
    """Simulate one (scenario, combination of parts) world and estimate its satisfaction rate."""
    from studies.bias_ablation import run_cell as estimate_world
    rows = estimate_world({"world": params["world"], "alpha": params["alpha"]}, seed)
    return [{"estimator": r["estimator"], "propensity": r["propensity"], "value": r["value"], "truth": r["truth"],
             "n_observed": r["n_observed"]}
            for r in rows if r["estimand"] == "satisfaction" and (r["estimator"], r["propensity"]) in ESTIMATORS]


def combinations(parts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every subset of ``parts``, smallest first."""
    return [c for r in range(len(parts) + 1) for c in itertools.combinations(parts, r)]


def cells(config: ResponsePartsConfig) -> list[Cell]:
    out = []
    for scenario in config.scenarios:
        for on in combinations(config.active_parts(scenario)):
            params = {"world": to_dict(config.world_for(scenario, on)), "alpha": config.alpha}
            labels = {"scenario": scenario, "on": "+".join(on) or "none"}
            out += [Cell(f"studies.{NAME}:run_cell", params, s, labels=labels, version=CACHE_VERSION)
                    for s in config.seeds]
    return out


# ----------------------------------------------------------------------------- summary
def shapley(bias: dict[frozenset, float], parts: tuple[str, ...]) -> dict[str, float]:
    """Shapley value of each of ``parts`` for the game ``bias[set of parts on]`` (exact, 2^n terms)."""
    n = len(parts)
    out = {}
    for p in parts:
        others = [q for q in parts if q != p]
        total = 0.0
        for r in range(n):
            w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for s in itertools.combinations(others, r):
                total += w * (bias[frozenset(s) | {p}] - bias[frozenset(s)])
        out[p] = total
    return out


def split(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (scenario, estimator): the bias with every part on and off, and each part's Shapley
    share, with t intervals over seeds."""
    t = table.assign(error=table["value"] - table["truth"])
    rows = []
    for (scenario, est, prop), g in t.groupby(["scenario", "estimator", "propensity"], sort=False):
        active = tuple(p for p in PARTS if g["on"].str.split("+").apply(lambda on, p=p: p in on).any())
        per_seed = []
        for seed, gs in g.groupby("seed"):
            bias = {frozenset(() if on == "none" else on.split("+")): e for on, e in zip(gs["on"], gs["error"])}
            if len(bias) < 2 ** len(active) or not all(np.isfinite(list(bias.values()))):
                continue
            values = shapley(bias, active)      # a part that is off in the scenario causes no bias
            per_seed.append({"all": bias[frozenset(active)], "none": bias[frozenset()],
                             **{p: values.get(p, 0.0) for p in PARTS}})
        frame = pd.DataFrame(per_seed, columns=["all", "none", *PARTS])
        for what in ("all", "none", *PARTS):
            values = frame[what].to_numpy() if len(frame) else np.array([])
            mean, lo, hi, n = mean_ci(values, alpha)
            total = float(frame["all"].mean() - frame["none"].mean()) if len(frame) else float("nan")
            rows.append({"scenario": scenario, "estimator": est, "propensity": prop, "part": what, "bias": mean,
                         "bias_low": lo, "bias_high": hi, "seeds": n,
                         "share": mean / total if what in PARTS and total else float("nan")})
    return pd.DataFrame(rows)


def _name(estimator: str, propensity: str) -> str:
    return estimator if propensity == "none" else f"{estimator} ({propensity} p)"


def _plot(parts: pd.DataFrame, config: ResponsePartsConfig, out: Path) -> str:
    from simulator.figures import subplots
    fig, axes = subplots(1, len(config.scenarios), figsize=(5.2 * len(config.scenarios), 3.4),
                             constrained_layout=True, squeeze=False)
    width = 0.8 / len(ESTIMATORS)
    for ax, scenario in zip(axes[0], config.scenarios):
        for j, (est, prop) in enumerate(ESTIMATORS):
            s = parts[(parts["scenario"] == scenario) & (parts["estimator"] == est) & (parts["propensity"] == prop)]
            s = s.set_index("part").reindex(["all", *PARTS])
            x = np.arange(len(s)) + (j - (len(ESTIMATORS) - 1) / 2) * width
            ax.bar(x, s["bias"], width, color=COLORS[j % len(COLORS)], label=_name(est, prop),
                   yerr=[s["bias"] - s["bias_low"], s["bias_high"] - s["bias"]], capsize=2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(PARTS) + 1), ["all parts", *[p.replace("_", " ") for p in PARTS]],
                      rotation=20, fontsize=8)
        ax.set_ylabel("bias (estimate - truth)", fontsize=8)
        ax.set_title(f"{scenario}: bias and each part's Shapley share", fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, out / "response_parts.png")
    return "response_parts.png"


def summarise(config: ResponsePartsConfig, table: pd.DataFrame, out: Path) -> Summary:
    parts = split(table, config.alpha)
    fig = _plot(parts, config, out)

    def cell(r) -> str:
        ci = f" [{r.bias_low:+.3f}, {r.bias_high:+.3f}]" if np.isfinite(r.bias_low) else ""
        share = f" ({abs(r.share) if r.share == 0 else r.share:.0%})" if np.isfinite(r.share) else ""
        return num(r.bias, 3, sign=True) + ci + share

    shown = []
    for (scenario, est, prop), g in parts.groupby(["scenario", "estimator", "propensity"], sort=False):
        row = {"scenario": scenario, "estimator": _name(est, prop)}
        row.update({("all parts on" if r.part == "all" else "all off" if r.part == "none" else r.part): cell(r)
                    for r in g.itertuples()})
        shown.append(row)
    naive = parts[(parts["estimator"] == "naive") & parts["part"].isin(PARTS)]
    fitted = parts[(parts["estimator"] == "ips") & (parts["propensity"] == "fitted") & (parts["part"] == "all")]
    lines = []
    for scenario in config.scenarios:
        s = naive[naive["scenario"] == scenario].set_index("part")
        f = fitted[fitted["scenario"] == scenario]
        main = s["share"].abs().idxmax() if s["share"].notna().any() else "none"
        lines.append(f"{scenario}: naive bias {parts[(parts['scenario'] == scenario) & (parts['estimator'] == 'naive') & (parts['part'] == 'all')]['bias'].iloc[0]:+.3f}, "
                     + ", ".join(f"{p} {s.loc[p, 'share']:.0%}" for p in PARTS if np.isfinite(s.loc[p, "share"]))
                     + f" (largest: {main}); IPS with the fitted submit model leaves {f['bias'].iloc[0]:+.3f}")
    verdict = ("Shares of the naive satisfaction-rate bias (Shapley, over seeds): " + "; ".join(lines) + ". "
               "The engagement part is what a submit model fitted on observables can remove; self-masking and "
               "random responders it cannot.")
    md = [f"Worlds: {', '.join(config.scenarios)} at {config.world.users.n_users:,} users, "
          f"{config.world.catalog.n_items:,} items, {config.world.platform.days} days under the production "
          f"policy; seeds {list(config.seeds)}; every on/off combination of the response model's parts that "
          "are on in the world (a part off in it has share 0).", "",
          "Estimand: the mean `true_satisfied` over the impressions eligible for a questionnaire. Each cell: "
          "the mean bias over seeds [t interval] and, in parentheses, the part's share of the bias with every "
          "part on (Shapley values add up to it).", "",
          markdown_table(pd.DataFrame(shown)), "", f"![bias by response part]({fig})"]
    return Summary(table=parts, markdown="\n".join(md), verdict=verdict, holds=None,
                   headline=[f"response_parts: {line}" for line in lines])


STUDY = register_study(
    NAME, "which share of the naive survey bias each response-model part causes (willingness, engagement, "
          "self-masking, random responders), and what the fitted submit model removes",
    config=ResponsePartsConfig, cells=cells, summarise=summarise,
    claim="USM §3.2: a survey-submit model fitted on observable behaviour removes the response bias. That holds "
          "for the part of the bias that observables explain (engagement, willingness) and not for self-masking; "
          "this study measures how large each part is in a world.")

if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
