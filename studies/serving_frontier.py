"""`serving_frontier`: watch time against true satisfaction as each policy's serving weight moves.

Every questionnaire-aware policy has a *serving rule*, a weight that says how much its
questionnaire-trained part counts in the score it ranks by (:data:`KNOBS`):

- SAQRec (:mod:`policies.saqrec`): ``sat_weight``; the score is ``logit(y_hat) + sat_weight *
  logit(s_f_hat)``. The paper ranks by the click head: ``sat_weight = 0``. Weight 0 still reads
  questionnaires (SID, MLSE, the satisfaction loss), so its click-only twin is another bucket:
  SASRec.
- USM (:mod:`policies.usm`): a scale ``s`` on the survey heads' weights of Eq. 3 (the engagement
  heads keep theirs): ``s = 1`` is :data:`policies.usm.DEFAULT_WEIGHTS` (the paper's), ``s = 0``
  ranks by the engagement heads alone, the click-only twin (positive_control's ``usm_click``).
- EASQ (:mod:`policies.easq`): ``w_sat`` of ``fusion = (1, 1, 1, w_sat)`` (Eq. 3); the paper's is
  1, and ``w_sat = 0`` is the click-only twin (positive_control's ``easq_click``).

**Serving-only or not** (read off the code). SAQRec's ``sat_weight`` enters only the cached
serving tables (``SAQRec._cache_tables``): training never reads it. USM's survey weights enter
only Eq. 3 at serving (``USM.terms``): the survey model is fitted the same way at every scale
(the engagement model would be skipped only if *its* weights were 0, which the scale leaves
alone). EASQ's ``w_sat`` is **not** serving-only: the DPO alignment (Eq. 4) compares the fused
score with and without the side path, ``s - s_ref = w_sat (z_sat - z_sat|B=0)``, so ``w_sat``
multiplies the implicit reward, i.e. trains the side path at inverse temperature ``beta * w_sat``
(and scales the online steps' gradients up to their norm cap); at ``w_sat = 0`` the side path gets
no gradient at all. An EASQ point is therefore "EASQ trained *and* served with ``w_sat``". For the
other two a point is the same method trained the same way and served with weight ``w`` -- the
same *procedure*: each bucket of an A/B test fits its own copy from its own training stream and,
under ``learning = "update"``, keeps learning from the logs its own serving produced, so the
weight's effect includes that feedback (what a platform that deploys the weight would get).

**Design.** One cell is one A/B test (a world seed x a policy seed, in one named world of
``worlds``) with every point as an equal bucket: the ``baselines`` (SASRec) and every family at
every weight; every bucket learns on the same schedule. Per bucket the cell records the absolute
per-user metrics with their intervals, AUT (watch time per user per day) and oracle satisfaction,
and each point's lift against its family's twin (two arms of one run are randomised against each
other, as in :func:`experiments.runner.lifts_against`). Over the cells the absolute values are
averaged (their interval holds the users' sampling error and the policy seeds' spread, with the
worlds held fixed: the level of a world moves every bucket together, so the comparisons between
points are the lifts); the lifts are pooled by random effects
(:func:`studies.head_to_head.pooled_lifts`) and the oracle-satisfaction p-values Holm-corrected
over every non-twin point. A point is **Pareto-efficient** when no other point of its world is at
least as high on both axes and higher on one: a choice a platform team could defend. The verdict
says, per family, whether some weight beats the twin on oracle satisfaction and at what AUT cost,
and whether the paper's own setting is on the frontier.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import adjust_pvalues, world_means, z_value
from simulator.config import ConfigError, SimConfig, doc_field, dump_toml, from_dict, to_dict, with_overrides
from experiments.config import ABSettings, BucketConfig, ExperimentConfig, ab_settings
from experiments.runner import bucket_sums
from experiments.metrics import METRICS_BY_NAME
from experiments.reporting import interval, markdown_table, num, pct, pval
from simulator.scenarios import sized_scenario
from simulator.figures import COLORS, save_figure
from studies.engine.base import (Summary, check_policies, check_seeds, lift_rows, policy_buckets,
                                 register_study, run_facts, study_main)
from studies.head_to_head import pooled_lifts
from studies.engine.sweep import Cell

NAME = "serving_frontier"
CACHE_VERSION = 1
X, Y = "oracle_satisfaction", "aut"          # the frontier's axes; the verdict reads X
METRICS = (X, Y)


# ----------------------------------------------------------------------------- the serving knobs
def _saqrec_params(params: dict, weight: float) -> dict:
    return {**params, "sat_weight": weight}


def _usm_params(params: dict, weight: float) -> dict:
    from policies.usm import DEFAULT_WEIGHTS, SURVEY_HEADS
    base = {**DEFAULT_WEIGHTS, **params.get("weights", {})}
    return {**params, "weights": {**base, **{h: weight * base[h] + 0.0 for h in SURVEY_HEADS}}}   # + 0.0: no -0.0


def _easq_params(params: dict, weight: float) -> dict:
    fusion = tuple(params.get("fusion", (1.0, 1.0, 1.0, 1.0)))
    return {**params, "fusion": [*fusion[:-1], weight]}


@dataclass(frozen=True)
class Knob:
    """What a family's weight is for one policy, and what the code says it changes."""
    param: str                               # the policy parameter the weight sets
    what: str                                # the weight in words (tables, plot)
    zero_is_twin: bool                       # weight 0 leaves no questionnaire part in the policy's score
    serving_only: bool                       # training never reads the weight
    apply: Callable[[dict, float], dict]     # (family params, weight) -> the bucket's params


KNOBS = {
    "saqrec": Knob("sat_weight", "sat_weight", False, True, _saqrec_params),
    "usm": Knob("weights", "survey-weight scale", True, True, _usm_params),
    "easq": Knob("fusion", "w_sat", True, False, _easq_params),
}
"""The policies whose serving weight the study sweeps (see the module docstring)."""


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True, slots=True)
class Family:
    """One policy served at several weights (a ``[[families]]`` table); its points are the
    buckets ``NAME_wWEIGHT`` (``usm_w0``, ``easq_w0p5``)."""
    name: str = doc_field("saqrec", "the family's name, the prefix of its buckets (letters, digits, '_', '-')")
    policy: str = doc_field("saqrec", f"the policy whose serving weight is swept: {', '.join(KNOBS)}")
    weights: tuple[float, ...] = doc_field((0.0, 1.0), "the weights, in the order the plot joins them")
    paper_weight: float = doc_field(0.0, "the paper's own setting, one of weights")
    twin: str = doc_field("", "the click-only twin: a bucket of baselines, or '' for this family's weight-0 point")
    params: dict = field(default_factory=dict, metadata={"doc": "the policy's other parameters, at every weight"})

    def __post_init__(self) -> None:
        where = f"families ({self.name})"
        if not self.name or not all(ch.isalnum() or ch in "_-" for ch in self.name):
            raise ConfigError(f"families: name={self.name!r} must be non-empty letters, digits, '_' or '-'")
        if self.policy not in KNOBS:
            raise ConfigError(f"{where}: policy={self.policy!r} has no serving knob; valid: {', '.join(KNOBS)}")
        if not self.weights or not all(math.isfinite(w) for w in self.weights):
            raise ConfigError(f"{where}: weights={list(self.weights)} must be a non-empty list of finite numbers")
        if len(set(self.weights)) != len(self.weights):
            raise ConfigError(f"{where}: weights={list(self.weights)} must not repeat a weight")
        if self.paper_weight not in self.weights:
            raise ConfigError(f"{where}: paper_weight={self.paper_weight:g} must be one of weights "
                              f"{list(self.weights)}")
        knob = KNOBS[self.policy]
        if knob.param in self.params:
            raise ConfigError(f"{where}: params must not set {knob.param!r}, the swept weight")
        if not self.twin and not knob.zero_is_twin:
            raise ConfigError(f"{where}: twin='' would make {knob.what} = 0 the click-only twin, but "
                              f"{self.policy} at weight 0 still reads questionnaires; name a click-only "
                              "bucket of baselines (e.g. sasrec)")
        if not self.twin and (0.0 not in self.weights or len(self.weights) < 2):
            raise ConfigError(f"{where}: twin='' is the weight-0 point, so weights={list(self.weights)} must hold "
                              "0 and at least one other weight")

    def bucket(self, weight: float) -> str:
        return f"{self.name}_w{weight:g}".replace(".", "p")

    def twin_bucket(self) -> str:
        return self.twin or self.bucket(0.0)


@dataclass(frozen=True)
class Point:
    """One bucket of the A/B test, a point of the frontier."""
    bucket: str
    policy: str
    family: str       # '' for a baseline
    weight: float     # NaN for a baseline
    twin: str         # the bucket its lifts are against ('' for a baseline)
    is_twin: bool     # the click-only twin of some family
    is_paper: bool    # a family's paper setting


@dataclass(frozen=True, slots=True)
class ServingFrontierConfig:
    """Config of `serving_frontier` (studies/configs/serving_frontier.toml)."""
    world: SimConfig = field(default_factory=SimConfig, metadata={
        "doc": "the size of every world (users.n_users, catalog.n_items); worlds names the rest"})
    worlds: tuple[str, ...] = doc_field(("survey_rich",), "named worlds (satbed scenarios); one frontier each")
    seeds: tuple[int, ...] = doc_field((0, 1), "world seeds")
    policy_seeds: tuple[int, ...] = doc_field((0,), "policy training seeds: every world seed runs with each")
    ab: ABSettings = ab_settings(pre_days=2, days=3, learning="update", update_interval_s=21600.0)
    baselines: tuple[BucketConfig, ...] = field(default=(BucketConfig("sasrec", "sasrec"),),
                                              metadata={"doc": "buckets outside the families (twins, references)"})
    families: tuple[Family, ...] = field(default=(), metadata={"doc": "the swept policies"})

    def __post_init__(self) -> None:
        from simulator.scenarios import list_scenarios
        check_seeds("seeds", self.seeds)
        check_seeds("policy_seeds", self.policy_seeds)
        unknown = [w for w in self.worlds if w not in list_scenarios()]
        if not self.worlds or unknown or len(set(self.worlds)) != len(self.worlds):
            raise ConfigError(f"worlds={list(self.worlds)} must name distinct scenarios; unknown: {unknown}; "
                              f"known: {', '.join(list_scenarios())}")
        if replace(self.world, seed=0) != sized_scenario("default", self.world):
            raise ConfigError("world may set only the size (users.n_users, catalog.n_items): name the worlds "
                              "in worlds = [...] (scenarios), not in world.scenario or other world keys")
        if not self.families:
            raise ConfigError("families must list at least one policy to sweep")
        names = [b.name for b in self.baselines] + [f.name for f in self.families]
        if len(set(names)) != len(names):
            raise ConfigError(f"baseline and family names must be unique, got {names}")
        for f in self.families:
            if f.twin and f.twin not in {b.name for b in self.baselines}:
                raise ConfigError(f"families ({f.name}): twin={f.twin!r} is not a bucket of baselines "
                                  f"{[b.name for b in self.baselines]}")
        check_policies(self.specs(), self.families[0].twin_bucket())

    def specs(self) -> tuple[BucketConfig, ...]:
        """Every bucket: the baselines, then each family at each weight."""
        return (*self.baselines, *(BucketConfig(f.bucket(w), f.policy, params=KNOBS[f.policy].apply(f.params, w))
                                   for f in self.families for w in f.weights))

    def points(self) -> list[Point]:
        """The buckets as frontier points, in :meth:`specs` order."""
        twins = {f.twin_bucket() for f in self.families}
        out = [Point(b.name, b.policy, "", math.nan, "", b.name in twins, False) for b in self.baselines]
        return out + [Point(f.bucket(w), f.policy, f.name, w, f.twin_bucket(), f.bucket(w) in twins,
                            w == f.paper_weight) for f in self.families for w in f.weights]

    def setting(self, scenario: str) -> SimConfig:
        """The world ``scenario`` at this config's size."""
        return sized_scenario(scenario, self.world)

    def experiment(self, scenario: str, seed: int = 0, policy_seed: int = 0) -> ExperimentConfig:
        """The A/B test of one world and seeds (its control: the first family's twin)."""
        world = with_overrides(self.setting(scenario), {"seed": seed})
        return ExperimentConfig(world=world, ab=self.ab, policy_seed=policy_seed,
                                buckets=policy_buckets(self.specs(), world), control=self.families[0].twin_bucket())


# ----------------------------------------------------------------------------- one A/B test
def run_cell(params: dict, seed: int) -> list[dict]:
    """One A/B test: every bucket's AUT and oracle satisfaction with intervals, each point's
    lifts against its twin, and the run's facts (with the pre-period's answered share)."""
    from experiments.runner import run_experiment
    from simulator.logs import read_impressions
    from experiments.metrics import bucket_estimates, lift_table
    config = from_dict(ExperimentConfig, params["experiment"])
    config = replace(config, world=replace(config.world, seed=seed))
    rows = []
    with tempfile.TemporaryDirectory(prefix="satbed-sf-") as tmp:
        out = Path(tmp) / "run"
        result = run_experiment(config, out, progress=False, report=False)
        sums = bucket_sums(out, config)
        for bucket, s in sums.items():
            est = bucket_estimates(s, alpha=config.ab.alpha)
            rows += [{"kind": "point", "bucket": bucket, "metric": m, "value": est[m].value, "stderr": est[m].stderr,
                      "ci_low": est[m].ci_low, "ci_high": est[m].ci_high, "users": len(s)}
                     for m in METRICS if est[m] is not None]
        for bucket, twin in params["twins"]:
            table = lift_table({twin: sums[twin], bucket: sums[bucket]}, twin, alpha=config.ab.alpha,
                               correction=config.ab.correction)
            rows += [{"kind": "lift", **r, "twin": twin} for r in lift_rows(table[table["metric"].isin(METRICS)])]
        pre = read_impressions(out / "logs", days=range(config.ab.pre_days),
                               columns=["effective_view", "survey_submitted"])
        answered = float(pre["survey_submitted"].sum() / max(pre["effective_view"].sum(), 1))
    return rows + [{**run_facts(result), "answered_per_effective_view": answered}]


def cells(config: ServingFrontierConfig) -> list[Cell]:
    twins = [[p.bucket, p.twin] for p in config.points() if p.twin and p.twin != p.bucket]
    return [Cell(f"studies.{NAME}:run_cell", {"experiment": to_dict(config.experiment(w, 0, ps)), "twins": twins},
                 s, labels={"scenario": w, "policy_seed": ps}, version=CACHE_VERSION)
            for w in config.worlds for s in config.seeds for ps in config.policy_seeds]


# ----------------------------------------------------------------------------- summary
def pareto_efficient(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) bool: the points that no other point dominates (at least as high on both axes and
    higher on one); a point with a non-finite coordinate is neither efficient nor dominates."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    at_least = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])      # (n, n): j is >= i on both
    higher = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    return ok & ~(at_least & higher & ok[None, :]).any(axis=1)


def pooled_points(points: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per (scenario, bucket, metric): the mean of the runs' absolute values and its interval with
    the worlds held fixed (a world's runs, its policy seeds, share its users:
    :func:`estimators.world_means`; the worlds' means are then averaged)."""
    z, rows = z_value(alpha), []
    for (scenario, bucket, metric), g in points.groupby(["scenario", "bucket", "metric"], sort=False):
        _, means, errs = world_means(g["value"].to_numpy(float), g["stderr"].to_numpy(float), g["seed"].to_numpy())
        value, se = float(means.mean()), float(np.sqrt((errs ** 2).sum()) / len(means))
        rows.append({"scenario": scenario, "bucket": bucket, "metric": metric, "value": value,
                     "low": value - z * se, "high": value + z * se, "runs": len(g)})
    return pd.DataFrame(rows)


def frontier_table(config: ServingFrontierConfig, table: pd.DataFrame) -> pd.DataFrame:
    """One row per (world, point): absolute AUT and oracle satisfaction, lifts against the twin
    (0 for the twin itself), the corrected verdict test, and whether the point is Pareto-efficient."""
    absolute = pooled_points(table[table["kind"] == "point"], config.ab.alpha).set_index(["scenario", "bucket", "metric"])
    lifts = table[table["kind"] == "lift"]
    policy_of = {p.bucket: p.policy for p in config.points()}
    pooled = pd.concat([pooled_lifts(g, alpha=config.ab.alpha, metrics=METRICS, correction=config.ab.correction,
                                     policy_of=policy_of).assign(scenario=w)
                        for w, g in lifts.groupby("scenario", sort=False)]).set_index(["scenario", "policy", "metric"])
    rows = []
    for w in config.worlds:
        for p in config.points():
            row = {"scenario": w, "bucket": p.bucket, "policy": p.policy, "family": p.family, "weight": p.weight,
                   "twin": p.twin, "is_twin": p.is_twin, "is_paper": p.is_paper}
            for m in METRICS:
                a = absolute.loc[(w, p.bucket, m)]
                row |= {m: a["value"], f"{m}_low": a["low"], f"{m}_high": a["high"]}
                if p.twin and p.twin != p.bucket:
                    r = pooled.loc[(w, p.bucket, m)]
                    row |= {f"{m}_lift": r["lift"], f"{m}_lift_low": r["lift_low"], f"{m}_lift_high": r["lift_high"],
                            f"{m}_p": r["p_value"]}
                else:    # the twin against itself, or a baseline that is no point's twin
                    same = 0.0 if p.is_twin else math.nan
                    row |= {f"{m}_lift": same, f"{m}_lift_low": same, f"{m}_lift_high": same, f"{m}_p": math.nan}
            row["runs"] = int(absolute.loc[(w, p.bucket, X), "runs"])
            rows.append(row)
    out = pd.DataFrame(rows)
    tested = out[f"{X}_p"].notna().to_numpy()
    out[f"{X}_p_adjusted"] = np.nan
    out.loc[tested, f"{X}_p_adjusted"] = adjust_pvalues(out.loc[tested, f"{X}_p"].to_numpy(), config.ab.correction)
    out[f"{X}_significant"] = out[f"{X}_p_adjusted"] < config.ab.alpha
    out[f"{Y}_significant"] = (out[f"{Y}_lift_low"] > 0) | (out[f"{Y}_lift_high"] < 0)
    out["pareto"] = False
    for w, g in out.groupby("scenario", sort=False):
        out.loc[g.index, "pareto"] = pareto_efficient(g[X].to_numpy(), g[Y].to_numpy())
    return out


def family_verdicts(config: ServingFrontierConfig, front: pd.DataFrame) -> tuple[list[str], list[bool]]:
    """Per (world, family): does some weight beat the twin on oracle satisfaction (significant after
    correction), at what AUT cost; is the paper's point on the frontier."""
    parts, wins = [], []
    for w in config.worlds:
        for f in config.families:
            g = front[(front["scenario"] == w) & (front["family"] == f.name)]
            knob = KNOBS[f.policy].what
            tried = g[g["bucket"] != f.twin_bucket()]
            winners = tried[tried[f"{X}_significant"] & (tried[f"{X}_lift"] > 0)]
            best = (winners if len(winners) else tried).sort_values(f"{X}_lift", na_position="first").iloc[-1]
            said = (f"{knob} {best['weight']:g}: oracle satisfaction {pct(best[f'{X}_lift'])} "
                    f"{interval(best[f'{X}_lift_low'], best[f'{X}_lift_high'], pct)}, AUT {pct(best[f'{Y}_lift'])} "
                    f"{interval(best[f'{Y}_lift_low'], best[f'{Y}_lift_high'], pct)}")
            paper = g[g["is_paper"]].iloc[0]
            where = f"{w}: " if len(config.worlds) > 1 else ""
            parts.append(f"{where}`{f.name}` " + (f"beats `{f.twin_bucket()}` at {said}" if len(winners) else
                                                   f"never beats `{f.twin_bucket()}` (best {said})")
                         + f"; the paper's {knob} {f.paper_weight:g} is "
                         + ("on the frontier" if paper["pareto"] else "not on the frontier"))
            wins.append(bool(len(winners)))
    return parts, wins


def twins_of(config: ServingFrontierConfig) -> dict[str, str]:
    """``{twin bucket: the families it is the twin of}``, for labels."""
    out: dict[str, list[str]] = {}
    for f in config.families:
        out.setdefault(f.twin_bucket(), []).append(f.name)
    return {k: ", ".join(v) for k, v in out.items()}


def frontier_plot(config: ServingFrontierConfig, front: pd.DataFrame, path: Path) -> Path:
    """x = oracle satisfaction, y = AUT, one panel per world: each family's weights joined in
    order and labelled, twins hollow, the paper's settings as stars, the Pareto frontier as steps."""
    from simulator.figures import subplots
    fig, axes = subplots(1, len(config.worlds), figsize=(6.4 * len(config.worlds), 4.8), squeeze=False,
                             constrained_layout=True)
    colour = {f.name: COLORS[i % len(COLORS)] for i, f in enumerate(config.families)}
    twin_of = twins_of(config)
    for ax, w in zip(axes[0], config.worlds):
        g = front[front["scenario"] == w]
        for f in config.families:
            fam = g[g["family"] == f.name]
            ax.plot(fam[X], fam[Y], "-", color=colour[f.name], lw=1, alpha=0.6,
                    label=f"{f.name} ({KNOBS[f.policy].what})")
        for r in g.to_dict("records"):
            c = colour.get(r["family"], "#666666")
            ax.errorbar(r[X], r[Y], xerr=[[r[X] - r[f"{X}_low"]], [r[f"{X}_high"] - r[X]]],
                        yerr=[[r[Y] - r[f"{Y}_low"]], [r[f"{Y}_high"] - r[Y]]],
                        fmt="*" if r["is_paper"] else "o", ms=13 if r["is_paper"] else 7, color=c, ecolor=c,
                        elinewidth=0.8, alpha=0.9, mfc="white" if r["is_twin"] else c, mec=c, mew=1.5)
            text = (f"{r['weight']:g}" if r["family"] else
                    f"{r['bucket']} (twin of {twin_of[r['bucket']]})" if r["is_twin"] else r["bucket"])
            ax.annotate(text, (r[X], r[Y]), textcoords="offset points", xytext=(6, 5), fontsize=8, color=c)
        eff = g[g["pareto"]].sort_values(X)
        ax.step(eff[X], eff[Y], where="post", color="black", lw=1, ls="--", label="Pareto frontier")
        ax.set_xlabel(METRICS_BY_NAME[X].label, fontsize=9)
        ax.set_ylabel(f"{METRICS_BY_NAME[Y].label}, s", fontsize=9)
        ax.set_title(f"world `{w}`: hollow = click-only twin, star = paper's setting", fontsize=9)
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def report_table(config: ServingFrontierConfig, front: pd.DataFrame) -> pd.DataFrame:
    """The frontier table as report text: values with intervals, lifts vs the twin (`*`:
    significant after correction, oracle satisfaction only), the corrected p-value."""
    twin_of = twins_of(config)

    def lift(r: dict, m: str) -> str:
        if r["is_twin"]:
            return "(reference)"
        star = "*" if m == X and r[f"{X}_significant"] else ""
        return f"{pct(r[f'{m}_lift'])}{star} {interval(r[f'{m}_lift_low'], r[f'{m}_lift_high'], pct)}"

    rows = []
    for r in front.to_dict("records"):
        role = ([f"twin of {twin_of[r['bucket']]}"] if r["is_twin"] else []) + (["paper"] if r["is_paper"] else [])
        rows.append({"world": r["scenario"], "bucket": r["bucket"], "family": r["family"],
                     "weight": "" if not np.isfinite(r["weight"]) else f"{r['weight']:g}", "role": ", ".join(role),
                     "oracle satisfaction": f"{num(r[X])} {interval(r[f'{X}_low'], r[f'{X}_high'])}",
                     "AUT (s/day)": f"{num(r[Y], 1)} {interval(r[f'{Y}_low'], r[f'{Y}_high'], lambda v: num(v, 1))}",
                     "satisfaction vs twin": lift(r, X), "AUT vs twin": lift(r, Y),
                     f"p ({config.ab.correction})": pval(r[f"{X}_p_adjusted"]),
                     "Pareto": "yes" if r["pareto"] else ""})
    out = pd.DataFrame(rows)
    return out if len(config.worlds) > 1 else out.drop(columns="world")


def summarise(config: ServingFrontierConfig, table: pd.DataFrame, out: Path) -> Summary:
    front = frontier_table(config, table)
    frontier_plot(config, front, out / "frontier.png")
    dump_toml(config.experiment(config.worlds[0], config.seeds[0], config.policy_seeds[0]), out / "experiment.toml")
    parts, wins = family_verdicts(config, front)
    holds = True if all(wins) else False if not any(wins) else None
    answered = table.loc[table["kind"] == "run", "answered_per_effective_view"].to_numpy(float)
    verdict = (f"{sum(wins)} of {len(wins)} families have a serving weight that raises oracle satisfaction "
               f"significantly over their click-only twin ({config.ab.correction} over the "
               f"{int(front[f'{X}_p'].notna().sum())} non-twin points): " + "; ".join(parts) + ".")
    knobs = ["| family | policy | weights | paper | twin | serving-only |", "|---|---|---|---|---|---|"]
    knobs += [f"| {f.name} | `{f.policy}` | {KNOBS[f.policy].what} = {', '.join(f'{w:g}' for w in f.weights)} | "
              f"{f.paper_weight:g} | `{f.twin_bucket()}` | {'yes' if KNOBS[f.policy].serving_only else '**no**'} |"
              for f in config.families]
    lines = [f"{len(config.worlds) * len(config.seeds) * len(config.policy_seeds)} A/B tests (worlds "
             f"{list(config.worlds)} x world seeds {list(config.seeds)} x policy seeds {list(config.policy_seeds)}), "
             f"each on a fresh world of {config.world.users.n_users:,} users: {config.ab.pre_days} production-served "
             f"day(s) train the policies, then {config.ab.days} day(s) with {len(config.specs())} equal buckets; "
             f"{config.ab.describe_learning()}. Answered questionnaires per effective view in the pre-period: "
             f"{', '.join(pct(a, sign=False) for a in answered)}.", "", "## The serving knobs", "", *knobs, "",
             "SAQRec's `sat_weight` and USM's survey-weight scale change only the score served (training never "
             "reads them); EASQ's `w_sat` also scales the DPO alignment's implicit reward (Eq. 4: `s - s_ref = "
             "w_sat (z_sat - z_sat|B=0)`), so an EASQ point is EASQ trained *and* served with that weight, and its "
             "weight-0 twin never trains its side path. Every bucket fits its own copy and learns from its own "
             "logs (studies/serving_frontier.py).", "",
             "## The frontier", "", markdown_table(report_table(config, front)), "",
             f"Absolute values: the mean over runs, with a {1 - config.ab.alpha:.0%} interval holding the users' "
             "sampling error and the policy seeds' spread with the worlds held fixed (a world's level moves every "
             "bucket together); compare points through the lifts vs the twin (same runs, random-effects pooled "
             f"over world seeds). `*`: significant after {config.ab.correction} correction over every non-twin point. "
             "Pareto: no other point of the world has both at least the AUT and at least the satisfaction (and more "
             "of one), on the point estimates.", "", "![frontier](frontier.png)"]
    headline = [f"serving_frontier: {p}" for p in parts]
    return Summary(table=front, markdown="\n".join(lines), verdict=verdict, holds=holds,
                   tables={"by_run": table[table["kind"] != "run"]}, headline=headline)


STUDY = register_study(
    NAME, "each questionnaire-aware policy served at several weights of its questionnaire term: the frontier of "
          "watch time against oracle satisfaction, with each click-only twin and the paper's setting marked",
    config=ServingFrontierConfig, cells=cells, summarise=summarise,
    claim="A frontier, not a paper claim: each policy's serving rule is a choice a platform "
          "team makes. Direction tested per method (SAQRec, USM, EASQ): some serving weight raises users' true "
          "satisfaction over the click-only twin, significant after correction over all the weights; the report "
          "gives each weight's AUT price and whether the paper's own setting is Pareto-efficient.")


if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
