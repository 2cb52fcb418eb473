"""`bias_ablation`: how far questionnaire-based rates are from the truth, knob by knob.

One-at-a-time sweep around a base world: the questionnaire exposure rate
(``questionnaire.base_rate``), the exposure targeting rule (``questionnaire.targeting``), the
response-bias strength (``questionnaire.response_bias``: the submit-logit lift when satisfied,
MNAR) and the random-responder share (``users.random_responder_share``). Each setting and seed
is one cell: a world simulated for ``world.platform.days`` days under the production policy
(``world.seed`` = the cell's seed, so the settings of one seed share their random numbers),
then every estimator below is computed from its logs and compared with the oracle.

**Populations and estimands** (like is compared with like):

*Satisfaction rate.* Units: the impressions **eligible for a questionnaire** at the moment of
the exposure draw, ``E = {true_p_show > 0}`` (an effective view when exposure requires one, the
user under the daily cap, no questionnaire earlier on the page). Truth: the mean of
``true_satisfied`` (the realised latent satisfaction) over E. A unit is observed when a
satisfaction questionnaire was shown *and* submitted; its answer is ``like`` (reward 1) or not.
Its observation probability factorises as
``pscore = true_p_show x (1 - inappropriate_share) x P(submit | shown)``: the first two factors
are the platform's own exposure design (known exactly), the last is either the survey-submit
model's fitted prediction (``propensity = fitted``: the A/B pipeline's model,
:func:`experiments.metrics.submit_propensity`, from observable behaviour only, not clipped) or the simulator's true ``true_p_submit`` (``propensity = true``: what no
platform has). Estimators (:mod:`estimators.rates`): ``naive`` (respondents' like share, USM
Eq. 1), ``ips`` (SAQRec Eq. 4), ``snips``, ``dr`` (imputation: a logistic like-model fitted on
the respondents' observable behaviour: watch fraction, like/share/comment/follow,
dislike/report, log tenure). Sequential exposure (at most one questionnaire per page) keeps
IPS unbiased over E, because each unit's ``true_p_show`` is its probability given the page so
far.

*Issue rate.* Units: the **shown inappropriate-content questionnaires**. Truth: the mean of
``true_issue`` over them. ``naive`` is the respondents' share of "unsuitable" / "adults only"
answers (USM Eq. 2); ``usm`` is USM's response-debiased rate (Eq. 13,
:func:`estimators.usm_debiased_rate`) with the fitted or the true submit propensity.

Random responders answer uniformly at random, so no propensity recovers the truth from their
answers: the bias the ``random_responder_share`` knob adds is what weighting cannot remove.

Per (knob, level, estimator): **bias** = mean over seeds of (estimate - truth) with a t
interval over seeds, **RMSE** = sqrt(mean (estimate - truth)^2), and **coverage** = share of
seeds whose 95% interval covers that seed's truth.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import LogisticPropensity, doubly_robust, ips, mean_ci, naive, snips, usm_debiased_rate
from simulator.config import ConfigError, SimConfig, doc_field, from_dict, to_dict, with_overrides
from experiments.metrics import submit_propensity
from experiments.reporting import band_plot, markdown_table, num
from simulator.schema import ISSUE_ANSWERS, NEGATIVE_FEEDBACK, POSITIVE_FEEDBACK
from simulator.figures import COLORS, save_figure
from studies.engine.base import Summary, check_seeds, register_study, study_main
from studies.engine.sweep import Cell

NAME = "bias_ablation"
CACHE_VERSION = 2   # 2: fitted submit model with session depth, not clipped
KNOBS = {
    "base_rate": "questionnaire.base_rate",
    "targeting": "questionnaire.targeting",
    "response_bias": "questionnaire.response_bias",
    "random_responder_share": "users.random_responder_share",
}
"""Swept knob -> the world config field it sets."""
ESTIMATORS = (("satisfaction", "naive", "none"), ("satisfaction", "ips", "fitted"),
              ("satisfaction", "snips", "fitted"), ("satisfaction", "dr", "fitted"),
              ("satisfaction", "ips", "true"), ("satisfaction", "snips", "true"), ("satisfaction", "dr", "true"),
              ("issue", "naive", "none"), ("issue", "usm", "fitted"), ("issue", "usm", "true"))
"""(estimand, estimator, propensity) rows of every cell, in table order."""


@dataclass(frozen=True, slots=True)
class BiasAblationConfig:
    """Config of `bias_ablation` (studies/configs/bias_ablation.toml). An empty knob list skips it."""
    world: SimConfig = field(default_factory=SimConfig, metadata={"doc": "base world (its seed is replaced)"})
    seeds: tuple[int, ...] = doc_field((0, 1, 2, 3, 4), "world seeds; every setting runs every seed")
    base_rate: tuple[float, ...] = doc_field((0.02, 0.06, 0.15, 0.3), "questionnaire.base_rate values")
    targeting: tuple[str, ...] = doc_field(("none", "popular_items", "fresh_items", "active_users"),
                                    "questionnaire.targeting values")
    response_bias: tuple[float, ...] = doc_field((0.0, 1.0, 2.0, 3.0), "questionnaire.response_bias values")
    random_responder_share: tuple[float, ...] = doc_field((0.0, 0.05, 0.15, 0.3), "users.random_responder_share values")
    alpha: float = doc_field(0.05, "1 - confidence level of the estimators' intervals and the bias bands")

    def __post_init__(self) -> None:
        check_seeds("seeds", self.seeds)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha={self.alpha!r} must be in (0, 1)")
        if not any(getattr(self, k) for k in KNOBS):
            raise ConfigError(f"at least one knob ({', '.join(KNOBS)}) must list values")
        for knob in KNOBS:
            values = getattr(self, knob)
            if len(set(values)) != len(values):
                raise ConfigError(f"{knob}={values} must not repeat a value")
            for v in values:
                self.setting(knob, v)          # validates the value against the world config

    def setting(self, knob: str, value: float | str) -> SimConfig:
        """The base world with ``knob`` set to ``value`` (seed 0: the cell seed replaces it)."""
        try:
            return with_overrides(replace(self.world, seed=0), {KNOBS[knob]: value})
        except ConfigError as err:
            raise ConfigError(f"{knob}: {err}") from None

    def base_value(self, knob: str) -> float | str:
        section, name = KNOBS[knob].split(".")
        return getattr(getattr(self.world, section), name)


# ----------------------------------------------------------------------------- one cell
def _features(imp: pd.DataFrame, users: pd.DataFrame) -> np.ndarray:
    """Observable behaviour of each impression (the DR imputation model's inputs)."""
    tenure = users.set_index("user_id")["tenure_days"].reindex(imp["user_id"].to_numpy()).to_numpy(float)
    return np.column_stack([
        np.clip(imp["watch_time"].to_numpy(float) / imp["duration"].to_numpy(float), 0, 1),
        *(imp[c].to_numpy(float) for c in (*POSITIVE_FEEDBACK, *NEGATIVE_FEEDBACK)), np.log1p(tenure)])


def _row(estimand: str, estimator: str, propensity: str, fn, truth: float, n_units: int, n_observed: int,
         **extra) -> dict:
    base = {"estimand": estimand, "estimator": estimator, "propensity": propensity, "truth": float(truth),
            "n_units": int(n_units), "n_observed": int(n_observed), **extra}
    try:
        e = fn()
    except ValueError as err:           # too few observations at this size: recorded, not hidden
        nan = float("nan")
        return {**base, "value": nan, "stderr": nan, "ci_low": nan, "ci_high": nan, "error": str(err)[:200]}
    return {**base, "value": e.value, "stderr": e.stderr, "ci_low": e.ci_low, "ci_high": e.ci_high, "error": ""}


def estimate_rows(imp: pd.DataFrame, users: pd.DataFrame, world: SimConfig, *, alpha: float = 0.05) -> list[dict]:
    """Every estimator of :data:`ESTIMATORS` on one log, with its population's oracle truth."""
    shown = imp["survey_shown"].to_numpy(bool)
    stype = imp["survey_type"].astype(object).to_numpy()
    submitted = imp["survey_submitted"].to_numpy(bool)
    answer = imp["survey_answer"].astype(object).to_numpy()
    p_show = imp["true_p_show"].to_numpy(float)
    # p̂(submit | shown), not clipped: the A/B metrics cap its inverse at 20 to bound variance,
    # which biases a rate down wherever willingness is low (clipped IPS is another estimator)
    p_fitted = np.where(shown, submit_propensity(imp, users), 1.0)
    p_true = np.where(shown, imp["true_p_submit"].to_numpy(float), 1.0)
    rows = []

    # satisfaction rate over the eligible impressions E
    elig = p_show > 0
    sat_obs = (shown & (stype == "satisfaction") & submitted)[elig]
    like = (answer == "like")[elig].astype(float)
    truth = float(imp["true_satisfied"].to_numpy(bool)[elig].mean()) if elig.any() else float("nan")
    extra = {"truth_p": float(imp["true_p_satisfied"].to_numpy(float)[elig].mean()) if elig.any() else float("nan"),
             "truth_all_impressions": float(imp["true_satisfied"].mean())}
    n_e, n_o = int(elig.sum()), int(sat_obs.sum())
    design = p_show[elig] * (1.0 - world.questionnaire.inappropriate_share)
    x = _features(imp.loc[elig], users)
    try:
        imputed = LogisticPropensity(l2=1.0).fit(x[sat_obs], like[sat_obs]).predict_proba(x)
    except ValueError:                   # respondents all of one answer: impute their mean
        imputed = np.full(n_e, like[sat_obs].mean() if n_o else 0.5)
    rows.append(_row("satisfaction", "naive", "none", lambda: naive(like, sat_obs, alpha=alpha), truth, n_e, n_o,
                     **extra))
    for prop, p_submit in (("fitted", p_fitted[elig]), ("true", p_true[elig])):
        ps = np.where(sat_obs, design * p_submit, 1.0)       # read only where observed
        rows += [_row("satisfaction", "ips", prop, lambda ps=ps: ips(like, sat_obs, ps, alpha=alpha), truth,
                      n_e, n_o, **extra),
                 _row("satisfaction", "snips", prop, lambda ps=ps: snips(like, sat_obs, ps, alpha=alpha), truth,
                      n_e, n_o, **extra),
                 _row("satisfaction", "dr", prop,
                      lambda ps=ps: doubly_robust(like, sat_obs, ps, imputed, alpha=alpha), truth, n_e, n_o,
                      **extra)]

    # issue rate over the shown inappropriate-content questionnaires
    inap = shown & (stype == "inappropriate")
    issue_answer = np.isin(answer, ISSUE_ANSWERS)[inap].astype(float)
    sub = submitted[inap]
    truth = float(imp["true_issue"].to_numpy(bool)[inap].mean()) if inap.any() else float("nan")
    n_s, n_o = int(inap.sum()), int(sub.sum())
    rows.append(_row("issue", "naive", "none", lambda: naive(issue_answer, sub, alpha=alpha), truth, n_s, n_o))
    for prop, p_submit in (("fitted", p_fitted[inap]), ("true", p_true[inap])):
        rows.append(_row("issue", "usm", prop, lambda p=p_submit: usm_debiased_rate(issue_answer, sub, p, alpha=alpha),
                         truth, n_s, n_o))
    return rows


def run_cell(params: dict, seed: int) -> list[dict]:
    """Simulate one setting's world with ``seed`` and estimate every rate."""
    from simulator.logs import read_run
    from experiments.simulate import simulate
    world = replace(from_dict(SimConfig, params["world"]), seed=seed)
    with tempfile.TemporaryDirectory(prefix="satbed-bias-") as tmp:
        simulate(world, Path(tmp) / "run", progress=False)
        logs = read_run(Path(tmp) / "run")
    return estimate_rows(logs.impressions, logs.users, world, alpha=params["alpha"])


def _label(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def cells(config: BiasAblationConfig) -> list[Cell]:
    out = []
    for knob in KNOBS:
        for value in getattr(config, knob):
            params = {"world": to_dict(config.setting(knob, value)), "alpha": config.alpha}
            labels = {"knob": knob, "level": _label(value), "base": value == config.base_value(knob)}
            out += [Cell(f"studies.{NAME}:run_cell", params, s, labels=labels, version=CACHE_VERSION)
                    for s in config.seeds]
    return out


# ----------------------------------------------------------------------------- summary
def aggregate(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Bias (with a t interval over seeds), RMSE and coverage per (knob, value, estimator)."""
    t = table.assign(error_=table["value"] - table["truth"],
                     covered_=(table["ci_low"] <= table["truth"]) & (table["truth"] <= table["ci_high"]))
    rows = []
    keys = ["knob", "level", "base", "estimand", "estimator", "propensity"]
    for key, g in t.groupby(keys, sort=False):
        ok = g[np.isfinite(g["error_"])]
        bias, lo, hi, n = mean_ci(ok["error_"].to_numpy(), alpha)
        rows.append({**dict(zip(keys, key)), "seeds": n, "truth": float(g["truth"].mean()),
                     "estimate": float(ok["value"].mean()) if n else float("nan"),
                     "bias": bias, "bias_low": lo, "bias_high": hi,
                     "rmse": float(np.sqrt((ok["error_"] ** 2).mean())) if n else float("nan"),
                     "coverage": float(ok["covered_"].mean()) if n else float("nan"),
                     "observed": float(g["n_observed"].mean())})
    return pd.DataFrame(rows)


def _name(estimator: str, propensity: str) -> str:
    return estimator if propensity == "none" else f"{estimator} ({propensity} p)"


def _plot(agg: pd.DataFrame, config: BiasAblationConfig, out: Path) -> str:
    from simulator.figures import subplots
    knobs = [k for k in KNOBS if getattr(config, k)]
    fig, axes = subplots(len(knobs), 2, figsize=(11, 2.9 * len(knobs)), constrained_layout=True,
                             squeeze=False)
    styles = {"none": "-", "fitted": "-", "true": "--"}
    for r, knob in enumerate(knobs):
        order = [_label(v) for v in getattr(config, knob)]
        for c, estimand in enumerate(("satisfaction", "issue")):
            ax = axes[r, c]
            sub = agg[(agg["knob"] == knob) & (agg["estimand"] == estimand)]
            combos = [(e, p) for (m, e, p) in ESTIMATORS if m == estimand]
            for j, (est, prop) in enumerate(combos):
                s = sub[(sub["estimator"] == est) & (sub["propensity"] == prop)].set_index("level").reindex(order)
                band_plot(ax, order if knob == "targeting" else [float(v) for v in order], s["bias"], s["bias_low"],
                          s["bias_high"], label=_name(est, prop), color=COLORS[j % len(COLORS)],
                          linestyle=styles[prop], marker="o" if prop != "true" else "s")
            ax.axhline(0, color="black", lw=0.8)
            ax.axvline(order.index(_label(config.base_value(knob))) if knob == "targeting"
                       else float(config.base_value(knob)), color="#bbbbbb", lw=0.8, ls=":")
            ax.set_xlabel(KNOBS[knob], fontsize=8)
            ax.set_ylabel("bias (estimate - truth)", fontsize=8)
            ax.set_title(f"{estimand} rate vs {knob}", fontsize=9)
            if r == 0:
                ax.legend(fontsize=7, ncol=2)
    save_figure(fig, out / "bias_vs_knob.png")
    return "bias_vs_knob.png"


def _pivot(agg: pd.DataFrame, estimand: str, what: str) -> pd.DataFrame:
    sub = agg[agg["estimand"] == estimand]
    combos = [(e, p) for (m, e, p) in ESTIMATORS if m == estimand]
    rows = []
    for (knob, level), g in sub.groupby(["knob", "level"], sort=False):
        base = bool(g["base"].iloc[0])
        row = {"knob": knob, "level": level + (" (base)" if base else ""), "truth": num(g["truth"].iloc[0], 3)}
        for est, prop in combos:
            r = g[(g["estimator"] == est) & (g["propensity"] == prop)].iloc[0]
            if what == "bias":
                ci = "" if not np.isfinite(r["bias_low"]) else f" [{r['bias_low']:+.3f}, {r['bias_high']:+.3f}]"
                row[_name(est, prop)] = num(r["bias"], 3, sign=True) + ci
            else:
                row[_name(est, prop)] = num(r["rmse"], 3)
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(config: BiasAblationConfig, table: pd.DataFrame, out: Path) -> Summary:
    agg = aggregate(table, config.alpha)
    fig = _plot(agg, config, out)

    def mean_abs(estimand: str, estimator: str, propensity: str) -> float:
        s = agg[(agg["estimand"] == estimand) & (agg["estimator"] == estimator) & (agg["propensity"] == propensity)]
        return float(s["bias"].abs().mean())

    sat_naive, sat_ips, sat_ips_true = (mean_abs("satisfaction", "naive", "none"),
                                        mean_abs("satisfaction", "ips", "fitted"),
                                        mean_abs("satisfaction", "ips", "true"))
    iss_naive, iss_usm, iss_usm_true = (mean_abs("issue", "naive", "none"), mean_abs("issue", "usm", "fitted"),
                                        mean_abs("issue", "usm", "true"))
    ips_ok, usm_ok = sat_ips < sat_naive, iss_usm < iss_naive
    holds = True if ips_ok and usm_ok else False if not ips_ok and not usm_ok else None
    verdict = (f"Mean |bias| over the {agg.groupby(['knob', 'level']).ngroups} settings: satisfaction rate naive "
               f"{sat_naive:.4f} vs IPS with the fitted submit model {sat_ips:.4f} ({'smaller' if ips_ok else 'not smaller'}"
               f"; with the true propensity {sat_ips_true:.4f}); issue rate naive {iss_naive:.4f} vs USM Eq. 13 "
               f"{iss_usm:.4f} ({'smaller' if usm_ok else 'not smaller'}; true propensity {iss_usm_true:.4f}). "
               "Weighting removes the exposure and response bias only as far as the propensity is right, and "
               "none of the bias random responders add (see the random_responder_share rows).")
    md = [f"World: {config.world.users.n_users:,} users, {config.world.catalog.n_items:,} items, "
          f"{config.world.platform.days} days under the production policy; seeds {list(config.seeds)}; one knob "
          "varied at a time around the base world (marked `(base)`).", "",
          "Satisfaction rate: units are the impressions eligible for a questionnaire (`true_p_show > 0`), truth = "
          "their mean `true_satisfied`. Issue rate: units are the shown inappropriate-content questionnaires, truth "
          "= their mean `true_issue`. `fitted p`: the survey-submit model on observable behaviour (what a "
          "platform has); `true p`: the simulator's `true_p_submit`. Exposure probabilities are the platform's "
          "own design and always known.", "",
          f"## Bias (estimate - truth), mean over seeds [{1 - config.alpha:.0%} t interval]", "",
          "### Satisfaction rate", "", markdown_table(_pivot(agg, "satisfaction", "bias")), "",
          "### Issue rate", "", markdown_table(_pivot(agg, "issue", "bias")), "",
          "## RMSE vs the oracle", "", "### Satisfaction rate", "", markdown_table(_pivot(agg, "satisfaction", "rmse")),
          "", "### Issue rate", "", markdown_table(_pivot(agg, "issue", "rmse")), "",
          f"![bias vs knob]({fig})", "",
          "Coverage of the estimators' own 95% intervals and the mean number of observed answers per cell are in "
          "`table.csv` (`coverage`, `observed`)."]
    base = agg[agg["base"].astype(bool)].drop_duplicates(["estimand", "estimator", "propensity"])
    headline = ["bias_ablation (base setting): " + ", ".join(
        f"{r.estimand}/{_name(r.estimator, r.propensity)} bias {r.bias:+.3f}" for r in base.itertuples()
        if (r.estimator, r.propensity) in (("naive", "none"), ("ips", "fitted"), ("ips", "true"), ("usm", "fitted")))]
    return Summary(table=agg, markdown="\n".join(md), verdict=verdict, holds=holds, headline=headline)


STUDY = register_study(
    NAME, "bias and RMSE vs the oracle of naive / IPS / SNIPS / DR satisfaction rates and USM's debiased issue "
          "rate, sweeping exposure rate, targeting, response bias and random responders",
    config=BiasAblationConfig, cells=cells, summarise=summarise,
    claim="SAQRec §4.2.2 (Eq. 4-6): weighting questionnaire feedback by the inverse observation propensity "
          "removes its selection bias; USM §3.2 and §4.1.4 (Eq. 13): weighting submitted surveys by the inverse "
          "survey-submit prediction debiases the survey issue rate, which the raw rate over respondents "
          "misstates. Direction tested: |bias| of the weighted estimators (with the fitted submit model a "
          "platform can build) below that of the naive rate, averaged over the swept settings.")

if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
