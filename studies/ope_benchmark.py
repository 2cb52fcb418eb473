"""`ope_benchmark`: every registered off-policy estimator against the simulated truth.

**Question.** Logged under the stochastic ``production`` policy, can the registered estimators
(:func:`estimators.list_estimators`) tell what a new policy would do: each target's watch time,
effective-view rate and satisfaction per impression (and per page), and which target is best?

**Design.** One cell is one world seed at one logging temperature ``T_log``: one A/B test
(:func:`experiments.runner.run_experiment`) whose world serves the pre-period and the control
bucket with ``production`` at ``T_log`` and logs every request's candidates
(``platform.log_candidates``). Besides the control (``control_share`` of the users) it has one
bucket per target policy and target temperature, served online by a Plackett-Luce draw at that
temperature, and a ``twin``: ``production`` at ``T_log`` again, the logging policy as a target
(importance weight 1 everywhere). Every target bucket is also a *shadow*: its policy scores each
of the control's requests too, and the scores are logged with the candidates
(:meth:`simulator.platform.Platform.set_shadow`). Learning is ``frozen``, so the model scored in
the shadow is exactly the one serving its bucket. Then, per target, reward and level
(:func:`experiments.ope_data.satbed_ope_datasets`):

- the **estimates**: every registered estimator of that level on the control's experiment-day
  impressions, with the target's exact Plackett-Luce propensities (marginal for the item-position
  estimators, conditional for the slate ones); the DM / DR family reads a deliberately simple
  reward model (:class:`experiments.ope_data.ItemMeanReward`: each item's mean reward in the
  pre-period, shrunk to the global mean; position- and user-blind);
- the **truth**: the target bucket's own mean reward per impression (per page) over the same days,
  online, in the same world and seeds, with its user-clustered interval (users are the
  randomised unit). ``true_satisfied`` is an oracle reward: no platform can log it, so its
  estimates are what the estimators would give if satisfaction were observed.

**Temperatures.** A temperature divides a policy's scores, so the same ``T`` means different
things for policies whose scores live on different scales (``production`` sums popularity and
interest shares, SASRec's are dot products, the oracle's are probabilities in [0, 1],
``most_popular``'s are log counts). The config gives each target its own temperatures, chosen from
the spread of its scores so that the sharp one concentrates each page on a few dozen of the
candidates and the soft one on about a hundred; the report gives what each meant in the run: the
*perplexity* (effective number of candidates for the first slot) and the importance weights'
effective sample size.

**What no per-impression estimator sees.** The logs fix the sessions: which users came, how deep
each scrolled, when each quit and whether they came back. The estimators reweight items within
those sessions; a target changes them (a page users like is scrolled further, a bad one ends the
session). So the truth differs from what the estimators estimate by the target's effect on the
sessions (interference between the impressions of a session, retention, long-term effects), and
the report measures how big that is here: each target's pages per user and impressions per page
online against the control's, and its truth recomputed with the control's mix of positions.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import z_value
from simulator.config import ConfigError, SimConfig, doc_field, dump_toml, from_dict, to_dict, with_overrides
from simulator.figures import COLORS, save_figure
from experiments.config import ABSettings, BucketConfig, ExperimentConfig, ab_settings
from experiments.reporting import markdown_table, num, pct
from studies.engine.base import Summary, check_policies, check_seeds, register_study, run_facts, study_main
from studies.engine.sweep import Cell

NAME = "ope_benchmark"
CACHE_VERSION = 1
CONTROL, TWIN = "control", "twin"
LEVELS = ("impression", "page")


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True, slots=True)
class Target:
    """One target policy (a ``[[targets]]`` table), served at each of its temperatures: the
    buckets ``NAME_tT`` (``sasrec_t0p05``)."""
    name: str = doc_field("sasrec", "bucket-name prefix (letters, digits, '_', '-')")
    policy: str = doc_field("sasrec", "registered policy (`satbed policies`)")
    temperatures: tuple[float, ...] = doc_field((0.05, 0.2), "its Plackett-Luce temperatures, on its own score scale")
    params: dict = field(default_factory=dict, metadata={"doc": "the policy's other parameters"})

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "_-" for ch in self.name):
            raise ConfigError(f"targets: name={self.name!r} must be non-empty letters, digits, '_' or '-'")
        where = f"targets ({self.name})"
        if not self.temperatures or not all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0
                                            for t in self.temperatures):
            raise ConfigError(f"{where}: temperatures={list(self.temperatures)} must be a non-empty list of "
                              "numbers > 0")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ConfigError(f"{where}: temperatures={list(self.temperatures)} must not repeat a temperature")
        if not isinstance(self.params, dict):
            raise ConfigError(f"{where}: params={self.params!r} must be a table")
        if "temperature" in self.params:
            raise ConfigError(f"{where}: params must not set 'temperature' (give temperatures = [...])")

    def bucket(self, temperature: float) -> str:
        return f"{self.name}_t{temperature:g}".replace(".", "p")


@dataclass(frozen=True, slots=True)
class OPEBenchmarkConfig:
    """Config of `ope_benchmark` (studies/configs/ope_benchmark.toml)."""
    world: SimConfig = field(default_factory=SimConfig, metadata={
        "doc": "the world (its seed, platform.temperature and platform.log_candidates are set per cell)"})
    seeds: tuple[int, ...] = doc_field((0, 1), "world seeds")
    logging_temperatures: tuple[float, ...] = doc_field((0.5, 1.0), "temperatures of the logging (production) policy: "
                                                             "the pre-period, the control and the twin")
    ab: ABSettings = ab_settings(pre_days=1, days=2)
    control_share: float = doc_field(0.5, "share of users in the control (the logs); the rest split equally")
    twin: bool = doc_field(True, "add the logging policy itself as a target (weights 1: IPS is the on-policy mean)")
    targets: tuple[Target, ...] = field(default=(), metadata={"doc": "the target policies"})
    rewards: tuple[str, ...] = doc_field(("watch_time", "effective_view", "true_satisfied"),
                                  "impression columns estimated (true_satisfied: an oracle reward)")
    n_samples: int = doc_field(32, "Monte-Carlo target pages per request for the reward model's imputed_target")
    prior_count: float = doc_field(20.0, "the reward model's pseudo-impressions at the global mean")

    def __post_init__(self) -> None:
        from experiments.ope_data import REWARDS
        check_seeds("seeds", self.seeds)
        temps = self.logging_temperatures
        if not temps or not all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in temps) \
                or len(set(temps)) != len(temps):
            raise ConfigError(f"logging_temperatures={list(temps)} must be distinct numbers > 0")
        if self.ab.learning != "frozen":
            raise ConfigError(f"ab.learning={self.ab.learning!r}: the benchmark needs \"frozen\" (the model that "
                              "serves a target online is the one evaluated off-policy on the control's logs)")
        if not (isinstance(self.control_share, (int, float)) and 0 < self.control_share < 1):
            raise ConfigError(f"control_share={self.control_share!r} must be in (0, 1)")
        if not self.targets:
            raise ConfigError("targets must list at least one target policy")
        buckets = self.bucket_names()
        if len(set(buckets)) != len(buckets):
            raise ConfigError(f"target buckets must be unique, got {buckets}")
        if not self.rewards or len(set(self.rewards)) != len(self.rewards):
            raise ConfigError(f"rewards={list(self.rewards)} must be a non-empty list without repeats")
        for r in self.rewards:
            if r not in REWARDS:
                raise ConfigError(f"rewards: {r!r} is not a reward; valid: {', '.join(REWARDS)}")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 2:
            raise ConfigError(f"n_samples={self.n_samples!r} must be an integer >= 2 (its error needs two)")
        if not (isinstance(self.prior_count, (int, float)) and math.isfinite(self.prior_count)
                and self.prior_count >= 0):
            raise ConfigError(f"prior_count={self.prior_count!r} must be >= 0")
        check_policies(self.specs(1.0), CONTROL)

    def bucket_names(self) -> list[str]:
        """The target buckets (shadow targets), in order: the twin, then each target at each temperature."""
        return ([TWIN] if self.twin else []) + [t.bucket(T) for t in self.targets for T in t.temperatures]

    def specs(self, logging_temperature: float) -> list[BucketConfig]:
        """Every bucket as a policy spec: the control, the twin, the targets."""
        log = {"temperature": logging_temperature}
        out = [BucketConfig(CONTROL, "production", params=log)]
        out += [BucketConfig(TWIN, "production", params=log)] if self.twin else []
        return out + [BucketConfig(t.bucket(T), t.policy, params={**t.params, "temperature": T})
                      for t in self.targets for T in t.temperatures]

    def target_info(self) -> pd.DataFrame:
        """One row per target bucket: bucket, policy, temperature (NaN for the twin: T_log)."""
        rows = [{"target": TWIN, "policy": "production", "temperature": math.nan}] if self.twin else []
        return pd.DataFrame(rows + [{"target": t.bucket(T), "policy": t.policy, "temperature": float(T)}
                                    for t in self.targets for T in t.temperatures])

    def experiment(self, logging_temperature: float, seed: int = 0) -> ExperimentConfig:
        """The A/B test of one world seed at one logging temperature."""
        world = with_overrides(self.world, {"seed": seed, "platform.temperature": logging_temperature,
                                            "platform.log_candidates": True})
        control, *targets = self.specs(logging_temperature)    # the targets split the rest equally
        buckets = (replace(control, share=self.control_share), *targets)
        return ExperimentConfig(world=world, ab=self.ab, buckets=buckets, control=CONTROL,
                                shadow=tuple(self.bucket_names()))


# ----------------------------------------------------------------------------- one cell
def perplexity(scores: np.ndarray, temperature: float) -> float:
    """Mean over requests of exp(entropy) of softmax(scores / T): the effective number of candidates
    the first slot is drawn from (C for a uniform ranking, 1 for a deterministic one)."""
    from scipy.special import entr, softmax
    return float(np.exp(entr(softmax(np.asarray(scores, float) / temperature, axis=1)).sum(axis=1)).mean())


def session_facts(run_dir: Path, bucket: str, days: list[int], rewards: tuple[str, ...],
                  position_share: pd.Series | None) -> dict:
    """A bucket's sessions online: pages per user, impressions per page, and per reward its value
    per impression recomputed with ``position_share`` (the control's mix of positions)."""
    from simulator.logs import read_impressions
    logs = read_impressions(run_dir / "logs", days=days, buckets=[bucket],
                            columns=["user_id", "request_id", "position", *rewards])
    out = {"users": int(logs["user_id"].nunique()),
           "pages_per_user": float(logs["request_id"].nunique() / max(logs["user_id"].nunique(), 1)),
           "impressions_per_page": float(len(logs) / max(logs["request_id"].nunique(), 1))}
    if position_share is not None:
        by_position = logs.groupby("position")[list(rewards)].mean()
        for r in rewards:
            means = by_position[r].reindex(position_share.index)
            out[f"at_logged_positions:{r}"] = float((means * position_share).sum()) if means.notna().all() \
                else math.nan
    return out


def run_cell(params: dict, seed: int) -> list[dict]:
    """One A/B test with shadow targets: every estimator's estimate of every target, reward and
    level with the truth, each target's diagnostics, and the run's facts."""
    from estimators import get_estimator, list_estimators
    from experiments.runner import run_experiment
    from simulator.logs import read_impressions
    from experiments.ope_data import logged_pages, satbed_ope_datasets
    config = from_dict(ExperimentConfig, params["experiment"])
    config = replace(config, world=replace(config.world, seed=seed))
    rewards = tuple(params["rewards"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="satbed-ope-") as tmp:
        out = Path(tmp) / "run"
        result = run_experiment(config, out, progress=False, report=False)
        datasets = satbed_ope_datasets(out, rewards, levels=LEVELS, n_samples=params["n_samples"], seed=seed,
                                       prior_count=params["prior_count"], alpha=config.ab.alpha)
        for d in datasets:
            base = {"kind": "estimate", "target": d.target, "reward": d.reward, "level": d.level,
                    "truth": d.truth.value, "truth_se": d.truth.stderr, "truth_low": d.truth.ci_low,
                    "truth_high": d.truth.ci_high, "logged": d.logged.value, "n": d.data.n,
                    "mc_stderr": d.mc_stderr}
            for name in list_estimators(d.level):
                try:
                    e = get_estimator(name)(d.data, alpha=config.ab.alpha)
                except ValueError as err:      # recorded, counted and reported, not dropped
                    rows.append({**base, "estimator": name, "value": math.nan, "stderr": math.nan,
                                 "ci_low": math.nan, "ci_high": math.nan, "error": str(err)[:300]})
                    continue
                rows.append({**base, "estimator": name, "value": e.value, "stderr": e.stderr, "ci_low": e.ci_low,
                             "ci_high": e.ci_high, "error": ""})
        days = list(range(config.ab.pre_days, config.ab.pre_days + config.ab.days))
        pages = logged_pages(out, bucket=config.control, days=days, columns=[])
        control_logs = read_impressions(out / "logs", days=days, buckets=[config.control], columns=["position"])
        share = control_logs["position"].value_counts(normalize=True).sort_index()
        control = session_facts(out, config.control, days, rewards, None)
        temperature = {b.name: b.params["temperature"] for b in config.buckets}
        first = {(d.target, d.level): d.data for d in datasets if d.reward == rewards[0]}
        for target in config.shadow:
            w = first[(target, "impression")].action_dist / first[(target, "impression")].pscore
            page = first[(target, "page")]
            prefix = np.cumprod(page.action_dist_cascade / page.pscore_cascade, axis=1)     # (pages, k): RIPS
            rows.append({"kind": "target", "target": target, "temperature_used": float(temperature[target]),
                         "perplexity": perplexity(pages.scores[target], temperature[target]),
                         "logging_perplexity": perplexity(pages.scores["logging"], temperature[config.control]),
                         "ess": float(w.sum() ** 2 / (len(w) * (w ** 2).sum())), "max_weight": float(w.max()),
                         "mean_weight": float(w.mean()), "mean_prefix_weight_last": float(prefix[:, -1].mean()),
                         **session_facts(out, target, days, rewards, share),
                         **{f"control_{k}": v for k, v in control.items()}})
    return rows + [run_facts(result)]


def cells(config: OPEBenchmarkConfig) -> list[Cell]:
    params = {"rewards": list(config.rewards), "n_samples": config.n_samples, "prior_count": config.prior_count}
    return [Cell(f"studies.{NAME}:run_cell", {**params, "experiment": to_dict(config.experiment(t, 0))}, s,
                 labels={"logging_temperature": float(t)}, version=CACHE_VERSION)
            for s in config.seeds for t in config.logging_temperatures]


# ----------------------------------------------------------------------------- summary
def scored(estimates: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """The estimate rows with their errors: ``rel_error`` (estimate / truth - 1), ``covered`` (the
    estimate's interval holds the truth's value) and ``covered_joint`` (the interval of the
    difference holds 0: ``|estimate - truth| <= z sqrt(se^2 + truth_se^2)``, which counts the
    truth's own sampling error too). A failed estimate (NaN) has NaN error and is not covered."""
    z = z_value(alpha)
    out = estimates.copy()
    value, truth = out["value"].to_numpy(float), out["truth"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_error"] = np.where(truth != 0, value / truth - 1, np.nan)
    out["covered"] = (out["ci_low"] <= out["truth"]) & (out["truth"] <= out["ci_high"])
    out["covered_joint"] = (np.abs(value - truth) <= z * np.hypot(out["stderr"].to_numpy(float),
                                                                  out["truth_se"].to_numpy(float)))
    return out


def accuracy(errors: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: ``runs`` (finite estimates), ``failed``, and over the runs the relative
    ``bias`` (mean rel_error), relative ``rmse`` and the two coverages (failed runs count as not
    covered)."""
    rows = []
    for key, g in errors.groupby(by, sort=False):
        e = g["rel_error"].to_numpy(float)
        ok = np.isfinite(e)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "runs": int(ok.sum()),
                     "failed": int((~ok).sum()), "bias": float(e[ok].mean()) if ok.any() else math.nan,
                     "rmse": float(np.sqrt(np.mean(e[ok] ** 2))) if ok.any() else math.nan,
                     "coverage": float(g["covered"].mean()), "coverage_joint": float(g["covered_joint"].mean())})
    return pd.DataFrame(rows)


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau) of the finite pairs; NaN with fewer than 3 of them or
    a constant side."""
    from scipy import stats
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(stats.kendalltau(x[ok], y[ok]).statistic)


def kendall_taus(errors: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, logging temperature, level, estimator, reward): Kendall's tau between the targets'
    estimates and their truths (:func:`kendall`)."""
    keys = ["seed", "logging_temperature", "level", "estimator", "reward"]
    rows = [{**dict(zip(keys, key)), "targets": len(g),
             "tau": kendall(g["value"].to_numpy(float), g["truth"].to_numpy(float))}
            for key, g in errors.groupby(keys, sort=False)]
    return pd.DataFrame(rows)


def order_rows(frame: pd.DataFrame, estimators: list[str], targets: list[str] | None = None) -> pd.DataFrame:
    """Sorted by level, registered estimator order (and target order)."""
    key = {"level": lambda s: s.map({lev: i for i, lev in enumerate(LEVELS)}),
           "estimator": lambda s: s.map({e: i for i, e in enumerate(estimators)})}
    cols = ["level", "estimator"]
    if targets is not None:
        key["target"] = lambda s: s.map({t: i for i, t in enumerate(targets)})
        cols.append("target")
    return frame.sort_values(cols, key=lambda s: key[s.name](s), kind="stable").reset_index(drop=True)


def diagnostics(config: OPEBenchmarkConfig, table: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    """Per target (means over the cells): perplexity, weights' ESS, and its sessions against the
    control's; per reward, how much of its per-impression truth its own mix of positions makes
    (truth / the truth at the control's mix of positions - 1)."""
    t = table[table["kind"] == "target"].copy()
    truth = errors[errors["level"] == "impression"].groupby(["seed", "logging_temperature", "target", "reward"])[
        "truth"].first()
    for r in config.rewards:
        keyed = pd.MultiIndex.from_arrays([t["seed"], t["logging_temperature"], t["target"], [r] * len(t)])
        t[f"position_effect:{r}"] = truth.reindex(keyed).to_numpy(float) / t[f"at_logged_positions:{r}"] - 1
    t["pages_vs_control"] = t["pages_per_user"] / t["control_pages_per_user"] - 1
    t["depth_vs_control"] = t["impressions_per_page"] / t["control_impressions_per_page"] - 1
    cols = ["perplexity", "logging_perplexity", "ess", "max_weight", "mean_weight", "mean_prefix_weight_last", "users",
            "pages_vs_control", "depth_vs_control", *(f"position_effect:{r}" for r in config.rewards)]
    out = t.groupby("target", sort=False)[cols].mean().reindex(config.bucket_names()).reset_index()
    return config.target_info().merge(out, on="target")


def by_target(main: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """The per-target accuracy table as text, one row per estimator and one column per target:
    "bias / RMSE / coverage"."""
    text = main.assign(cell=[f"{pct(b, 1)} / {pct(r, 1, sign=False)} / {pct(c, 0, sign=False)}"
                             for b, r, c in zip(main["bias"], main["rmse"], main["coverage"])])
    wide = text.pivot(index=["level", "estimator"], columns="target", values="cell")
    return wide.reindex(columns=targets).reindex(text[["level", "estimator"]].drop_duplicates()).reset_index()


def by_reward(tau_table: pd.DataFrame, rewards: tuple[str, ...]) -> pd.DataFrame:
    """The Kendall tau table as text, one row per estimator and one column per reward: "mean (min)"."""
    text = tau_table.assign(cell=[f"{num(m, 2)} ({num(lo, 2)})" for m, lo in
                                  zip(tau_table["mean_tau"], tau_table["min_tau"])])
    wide = text.pivot(index=["level", "estimator"], columns="reward", values="cell")
    return wide.reindex(columns=list(rewards)).reindex(text[["level", "estimator"]].drop_duplicates()).reset_index()


def estimate_plot(config: OPEBenchmarkConfig, errors: pd.DataFrame, estimators: dict[str, list[str]],
                  path: Path) -> Path:
    """Estimate (with its interval) against the truth (with its interval), a panel per level and
    reward, a colour per estimator; points outside the panel are drawn on its edge as triangles."""
    from simulator.figures import subplots
    fig, axes = subplots(len(LEVELS), len(config.rewards), figsize=(4.6 * len(config.rewards), 8.4),
                             squeeze=False, constrained_layout=True)
    for i, level in enumerate(LEVELS):
        for j, reward in enumerate(config.rewards):
            ax = axes[i, j]
            g = errors[(errors["level"] == level) & (errors["reward"] == reward)]
            lo, hi = float(g["truth_low"].min()), float(g["truth_high"].max())
            pad = 0.6 * (hi - lo) + 1e-9
            ylo, yhi = max(lo - pad, 0.0), hi + pad          # every reward is >= 0
            ax.plot([ylo, yhi], [ylo, yhi], color="black", lw=0.8, ls="--")
            for k, name in enumerate(estimators[level]):
                e = g[(g["estimator"] == name) & np.isfinite(g["value"])]
                if not len(e):
                    continue
                c = COLORS[k % len(COLORS)]
                x = e["truth"].to_numpy(float) + (k - len(estimators[level]) / 2) * 0.004 * (hi - lo)
                y = e["value"].to_numpy(float)
                inside = (y >= ylo) & (y <= yhi)
                ax.errorbar(x[inside], y[inside],
                            xerr=[(e["truth"] - e["truth_low"])[inside], (e["truth_high"] - e["truth"])[inside]],
                            yerr=[np.clip(y - e["ci_low"], 0, None)[inside],
                                  np.clip(e["ci_high"] - y, 0, None)[inside]],
                            fmt="o", ms=3, color=c, elinewidth=0.6, alpha=0.8, label=name)
                ax.plot(x[y > yhi], np.full((y > yhi).sum(), yhi), "^", color=c, ms=5)
                ax.plot(x[y < ylo], np.full((y < ylo).sum(), ylo), "v", color=c, ms=5)
            ax.set_ylim(ylo, yhi)
            ax.set_xlim(ylo, yhi)
            ax.set_xlabel(f"truth: the target online ({'per impression' if level == 'impression' else 'per page'})",
                          fontsize=8)
            ax.set_ylabel("off-policy estimate", fontsize=8)
            oracle = " (oracle reward)" if reward.startswith("true_") else ""
            ax.set_title(f"{reward}{oracle}, {level} level", fontsize=9)
            if j == 0:
                ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


def temperature_plot(by_temperature: pd.DataFrame, estimators: dict[str, list[str]], path: Path) -> Path:
    """Relative RMSE (over targets, rewards and seeds) against the logging temperature, a line per
    estimator, a panel per level: exposure bias is the left end."""
    from simulator.figures import subplots
    fig, axes = subplots(1, len(LEVELS), figsize=(11, 4.2), squeeze=False, constrained_layout=True)
    for ax, level in zip(axes[0], LEVELS):
        g = by_temperature[by_temperature["level"] == level]
        for k, name in enumerate(estimators[level]):
            e = g[g["estimator"] == name].sort_values("logging_temperature")
            ax.plot(e["logging_temperature"], 100 * e["rmse"], "o-", color=COLORS[k % len(COLORS)], label=name, ms=4)
        ax.set_yscale("log")
        ax.set_xlabel("logging (production) temperature: lower = sharper logging, less overlap", fontsize=8)
        ax.set_ylabel("RMSE, % of the truth", fontsize=8)
        ax.set_title(f"{level}-level estimators", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def summarise(config: OPEBenchmarkConfig, table: pd.DataFrame, out: Path) -> Summary:
    from estimators import list_estimators
    estimators = {level: list(list_estimators(level)) for level in LEVELS}
    order = estimators["impression"] + estimators["page"]
    targets = config.bucket_names()
    errors = scored(table[table["kind"] == "estimate"], config.ab.alpha)
    info = config.target_info().set_index("target")
    main = accuracy(errors, ["level", "estimator", "target"])
    main.insert(3, "policy", main["target"].map(info["policy"]))
    main.insert(4, "temperature", main["target"].map(info["temperature"]))
    main = order_rows(main, order, targets)
    overall = order_rows(accuracy(errors, ["level", "estimator"]), order)
    by_temperature = order_rows(accuracy(errors, ["level", "estimator", "logging_temperature"]), order)
    taus = kendall_taus(errors)
    tau_table = (taus.groupby(["level", "estimator", "reward"], sort=False)["tau"]
                 .agg(mean_tau="mean", min_tau="min", cells="count").reset_index())
    tau_table = order_rows(tau_table, order)
    diag = diagnostics(config, table, errors)
    estimate_plot(config, errors, estimators, out / "estimate_vs_truth.png")
    temperature_plot(by_temperature, estimators, out / "rmse_vs_temperature.png")
    dump_toml(config.experiment(config.logging_temperatures[0], config.seeds[0]), out / "experiment.toml")
    verdict, holds = verdict_text(config, overall, tau_table, diag, errors)
    markdown = report(config, main, overall, tau_table, diag, errors)
    best = overall.sort_values("rmse").groupby("level", sort=False).head(1)
    headline = [f"ope_benchmark: best {r.level}-level estimator {r.estimator}: RMSE {pct(r.rmse, 1, sign=False)} "
                f"of the truth, coverage {pct(r.coverage, 0, sign=False)}" for r in best.itertuples()]
    return Summary(table=main, markdown=markdown, verdict=verdict, holds=holds,
                   tables={"by_estimator": overall, "by_logging_temperature": by_temperature,
                           "kendall_tau": tau_table, "taus_by_cell": taus, "targets": diag, "estimates": errors},
                   headline=headline)


def verdict_text(config: OPEBenchmarkConfig, overall: pd.DataFrame, tau_table: pd.DataFrame,
                 diag: pd.DataFrame, errors: pd.DataFrame) -> tuple[str, bool | None]:
    """The verdict in words, and whether the benchmark's claim holds: some estimator ranks the targets
    as the truth does (mean tau >= 0.8 on every reward) with |bias| <= 5% and coverage >= 90%;
    False when no estimator reaches a mean tau of 0.5 on every reward."""
    parts = []
    for level in LEVELS:
        o = overall[overall["level"] == level].sort_values("rmse")
        best, worst = o.iloc[0], o.iloc[-1]
        parts.append(f"At the {level} level the most accurate estimator is `{best['estimator']}` (relative RMSE "
                     f"{pct(best['rmse'], 1, sign=False)}, bias {pct(best['bias'], 1)}, its interval covers the truth "
                     f"{pct(best['coverage'], 0, sign=False)} of the time, "
                     f"{pct(best['coverage_joint'], 0, sign=False)} allowing for the truth's own error) and the "
                     f"least `{worst['estimator']}` (RMSE {pct(worst['rmse'], 1, sign=False)}).")
    tau = tau_table.groupby(["level", "estimator"], sort=False)["mean_tau"].min()
    ranked = tau.sort_values(ascending=False)
    top = ranked.index[0]
    parts.append(f"Ranking the {len(config.bucket_names())} targets against the truth's ranking, `{top[1]}` does best "
                 f"(mean Kendall tau {num(ranked.iloc[0], 2)} on its worst reward); the median estimator's is "
                 f"{num(float(ranked.median()), 2)}.")
    if config.twin:
        twin = errors[(errors["target"] == TWIN) & (errors["estimator"] == "ips") & np.isfinite(errors["rel_error"])]
        if len(twin):
            floor = float(np.sqrt(np.mean(twin["rel_error"] ** 2)))
            parts.append(f"On the twin (the logging policy as its own target, weights exactly 1) IPS is the logged "
                         f"mean and misses its online twin by {pct(floor, 1, sign=False)} (RMSE): the floor set by "
                         "two randomised arms' sampling error.")
    sessions = diag[diag["target"] != TWIN]
    if len(sessions):
        worst_depth = sessions.iloc[int(np.nanargmax(np.abs(sessions["depth_vs_control"].to_numpy(float))))]
        parts.append(f"Every estimator holds the logged sessions fixed, while the targets change them: impressions "
                     f"per page differ from the control's by up to {pct(worst_depth['depth_vs_control'], 0)} "
                     f"(`{worst_depth['target']}`), pages per user by up to "
                     f"{pct(float(sessions['pages_vs_control'].abs().max()), 0, sign=False)}; no per-impression "
                     "estimator sees who quits when, who comes back, or what the target does to users' state.")
    failed = errors[~np.isfinite(errors["value"])]
    if len(failed):
        parts.append(f"{len(failed)} estimates failed (e.g. {failed['estimator'].iloc[0]} on "
                     f"{failed['target'].iloc[0]}: {failed['error'].iloc[0][:120]}).")
    good = overall[(overall["bias"].abs() <= 0.05) & (overall["coverage"] >= 0.9)]
    good = [(r.level, r.estimator) for r in good.itertuples() if tau.get((r.level, r.estimator), np.nan) >= 0.8]
    holds = True if good else False if not (tau >= 0.5).any() else None
    return " ".join(parts), holds


def report(config: OPEBenchmarkConfig, main: pd.DataFrame, overall: pd.DataFrame, tau_table: pd.DataFrame,
           diag: pd.DataFrame, errors: pd.DataFrame) -> str:
    cells = len(config.seeds) * len(config.logging_temperatures)
    fmt_pct = {c: (lambda v: pct(v, 1)) for c in ("bias",)} | {c: (lambda v: pct(v, 1, sign=False))
                                                                for c in ("rmse", "coverage", "coverage_joint")}
    lines = [f"{cells} A/B tests (world seeds {list(config.seeds)} x logging temperatures "
             f"{list(config.logging_temperatures)}), each on a fresh world of {config.world.users.n_users:,} users: "
             f"{config.ab.pre_days} production-served day(s) train the targets and the reward model, then "
             f"{config.ab.days} day(s) with the control ({pct(config.control_share, 0, sign=False)} of the users, served "
             "by `production` at the logging temperature: its logs are evaluated) and one bucket per target below, "
             "each also scoring every control request in the shadow; learning `frozen` (the shadow model is the one "
             f"serving online). Rewards: {', '.join(f'`{r}`' for r in config.rewards)}"
             + (" (`true_satisfied` is an oracle reward: no platform logs it)" if "true_satisfied" in config.rewards
                else "") + ". The truth is each target's value online, in its own bucket, per impression (per "
             "page for the page-level estimators), with a user-clustered interval. Errors are relative: "
             "estimate / truth - 1, pooled over seeds, logging temperatures and rewards.", "",
             "## Targets and what their temperatures meant", "",
             markdown_table(diag.assign(temperature=[("T_log" if not np.isfinite(t) else f"{t:g}")
                                                     for t in diag["temperature"]]),
                            {"perplexity": lambda v: num(v, 1), "logging_perplexity": lambda v: num(v, 1),
                             "ess": lambda v: pct(v, 1, sign=False), "max_weight": lambda v: f"{v:.3g}",
                             "mean_weight": lambda v: num(v, 2), "mean_prefix_weight_last": lambda v: num(v, 2),
                             "users": lambda v: f"{v:.0f}", "pages_vs_control": pct, "depth_vs_control": pct}
                            | {f"position_effect:{r}": pct for r in config.rewards}), "",
             "`perplexity`: the effective number of candidates (of "
             f"{config.world.platform.n_candidates}) the first slot is drawn from, exp(entropy) of softmax(score / T), "
             "mean over the control's requests; `logging_perplexity` the same for the logging policy. `ess`: the "
             "item-position importance weights' effective sample size, (sum w)^2 / (n sum w^2); `max_weight`, "
             "`mean_weight` their largest and mean (1 in expectation); `mean_prefix_weight_last` the mean of the "
             "slate (RIPS) weight of a page's whole logged prefix (1 in expectation). "
             "`pages_vs_control`, `depth_vs_control`: the target's pages per user and impressions per page online "
             "against the control's. `position_effect:R`: the target's per-impression truth against the same truth "
             "recomputed with the control's mix of positions (how much of it comes from how deep its users "
             "scroll, which the logs cannot show).", "",
             "## Accuracy per estimator (over targets, seeds, logging temperatures and rewards)", "",
             markdown_table(overall, fmt_pct), "",
             "`coverage`: the estimate's interval holds the truth's value; `coverage_joint`: the interval of the "
             "difference (both standard errors) holds 0. Every estimator's interval treats the rows as independent; "
             "impressions of one user are not.", "",
             "## Accuracy per estimator and target", "",
             markdown_table(by_target(main, config.bucket_names())), "",
             "Each cell: relative bias / relative RMSE / coverage over the seeds, logging temperatures and rewards "
             "(`table.csv` has each number, the runs and both coverages).", "",
             "## Ranking the targets: Kendall tau of the estimates against the truths", "",
             markdown_table(by_reward(tau_table, config.rewards)), "",
             f"Each cell: the mean (minimum) over the cells of Kendall's tau over the {len(config.bucket_names())} "
             "targets of one cell (scipy.stats.kendalltau, tau-b; 1: the truth's order).", ""
             "![estimate vs truth](estimate_vs_truth.png)", "",
             "![RMSE vs logging temperature](rmse_vs_temperature.png)", "",
             "## Where the estimators fail", "",
             "- **The sessions are held fixed.** An item-position estimator reweights the logged items slot by "
             "slot; the logged slots are those the control's users reached. A target that users like is scrolled "
             "deeper and returned to more; one they dislike ends sessions early. The truth counts the target's own "
             "impressions, so it differs from any per-impression estimate by the target's effect on session depth "
             "(`depth_vs_control`, `position_effect`) and on returns (`pages_vs_control`).",
             "- **Interference between impressions.** A user's reaction to an item depends on what came before in "
             "the session (fatigue, the running mood of the session); the item-position estimators assume it "
             "depends only on the item at that slot, the cascade ones (RIPS) only on the items above it.",
             "- **Retention and long-term effects.** The shadow target scores the control's users in the state the "
             "control put them in (their histories, their fatigue); online, the target's users drift to the "
             "state the target puts them in. Over the experiment days the two part; no logged probability "
             "accounts for it.",
             "- **Overlap.** A sharp target on a sharp logging policy leaves few logged items with weight: see "
             "`ess`, the errors of the pure importance-weighting estimators and the logging temperature plot.",
             "- **Heavy-tailed page weights.** The slate estimators multiply one ratio per position down the page. "
             "The product's mean is 1, but it is carried by rare pages: in these samples the mean prefix weight at "
             "the last position is "
             + ", ".join(f"{r.mean_prefix_weight_last:.2f} (`{r.target}`)" for r in diag.itertuples()
                         if r.target != TWIN)
             + " (the item-position weights' mean: "
             + ", ".join(f"{r.mean_weight:.2f}" for r in diag.itertuples() if r.target != TWIN)
             + "), so RIPS and standard slate IPS come out low in logs of this size, and SNRIPS, which divides by "
             "those weights, is carried by a handful of pages.",
             "- **The reward model** of DM and the DR family is an item mean, blind to the user and the position: "
             "DM's error is that model's error under the target; its interval covers the model's value, not the "
             "truth.", ""]
    failed = errors[~np.isfinite(errors["value"])]
    if len(failed):
        lines += ["Failed estimates:", "", markdown_table(
            failed.groupby(["level", "estimator", "error"], sort=False).size().rename("count").reset_index()), ""]
    lines += ["`experiment.toml`: the first cell's A/B test. `estimates.csv`: every estimate with its truth. "
              "`targets.csv`, `by_estimator.csv`, `by_logging_temperature.csv`, `kendall_tau.csv`, "
              "`taus_by_cell.csv`: the tables above."]
    return "\n".join(lines)


STUDY = register_study(
    NAME, "every registered off-policy estimator against the online truth of five target policies at two "
          "temperatures, from production's logs",
    config=OPEBenchmarkConfig, cells=cells, summarise=summarise,
    claim="An off-policy benchmark (Saito et al. 2021's Open Bandit Pipeline style, with a simulated "
          "truth): from a stochastic production policy's logs, some registered estimator recovers each target "
          "policy's online per-impression value (|relative bias| <= 5%, 95% intervals covering >= 90%) and ranks "
          "the targets as the truth does (mean Kendall tau >= 0.8 on every reward).")


if __name__ == "__main__":
    study_main(NAME)
