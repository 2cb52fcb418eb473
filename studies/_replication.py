"""Shared engine of the paper replications: `saqrec_replication`, `usm_replication`,
`sine_replication` and `easq_online`.

A replication has up to two parts, both over the config's seeds (one independent world each):

- **offline** (the paper's offline table): a world simulated for ``log_days`` under the
  production policy; the rows of ``offline`` (a registered policy and parameters each: the
  model, its ablations, the baselines) are fitted on all but the last ``test_days`` and
  evaluated on those by the shared protocol of :mod:`studies.engine.offline` (plus, for USM, the survey
  heads' AUC and calibration on the answered questionnaires, :mod:`studies.usm_replication`).
  One cell per seed; the table is mean ± sd over seeds.
- **online** (the paper's A/B test): ``pre_days`` served by production train the ``online``
  buckets, which then serve their users for ``days`` (``experiments.runner.run_experiment``,
  exactly as ``satbed ab``), with ``update()`` calls for online learners. One cell per seed;
  the lifts vs ``control`` are pooled over seeds by random effects (as in `head_to_head`), and
  the daily lifts (SAQRec Table 4, USM Fig. 5-6) and daily bucket means are plotted.

Each study module supplies its config (``studies/configs/NAME.toml``), its paper claim and a
verdict: does the claim's direction hold in simulation?
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from estimators import mean_ci, random_effects, world_means, z_value
from simulator.checks import check_choice, check_int_at_least
from simulator.config import ConfigError, SimConfig, doc_field, dump_toml, from_dict, to_dict, with_overrides
from simulator.figures import COLORS, save_figure
from experiments.config import ABSettings, BucketConfig, ExperimentConfig, ab_settings
from experiments.metrics import METRICS_BY_NAME
from experiments.reporting import band_plot, forest_plot, interval, markdown_table, pct
from studies.engine.base import (Summary, check_policies, check_seeds, is_oracle, lift_rows, policy_buckets,
                                 run_ab_cell, run_facts)
from studies.head_to_head import pooled_lifts
from studies.engine.offline import METRICS as OFFLINE_METRICS
from studies.engine.offline import TARGETS, evaluate_policies
from studies.engine.sweep import Cell

CACHE_VERSION = 2                    # 2: one learning schedule for every bucket; policy seeds
EXTRA_METRICS: dict[str, tuple[str, ...]] = {}
"""Offline metrics beyond :data:`studies.engine.offline.METRICS`, by ``extra`` name (registered by the
study module that computes them, e.g. ``"usm"``)."""
EXTRA_FUNCTIONS: dict[str, str] = {}
"""``extra`` name -> ``"module:function"`` ``(policy, task, logs) -> {metric: value}``."""


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Config of a paper replication (``studies/configs/<study>.toml``)."""
    world: SimConfig = field(default_factory=SimConfig, metadata={"doc": "world (its seed is replaced)"})
    seeds: tuple[int, ...] = doc_field((0, 1, 2), "world seeds: one offline and one online cell per seed")
    policy_seeds: tuple[int, ...] = doc_field((0,), "online: policy training seeds (ExperimentConfig.policy_seed); every "
                                             "world seed's A/B test runs with each")
    # offline
    offline: tuple[BucketConfig, ...] = field(default=(), metadata={"doc": "rows of the offline table"})
    log_days: int = doc_field(3, "offline: production-served days simulated; the last test_days are the test")
    test_days: int = doc_field(1, "offline: held-out days")
    n_negatives: int = doc_field(99, "offline: sampled negatives per ranking target")
    target: str = doc_field("effective_view", "offline ranking positive: effective_view or satisfied (oracle)")
    offline_metrics: tuple[str, ...] = doc_field(("ndcg@10", "mrr"), "offline metrics of the table")
    extra: str = doc_field("", "extra offline metrics ('' or 'usm': survey-head AUC / calibration)")
    # online
    online: tuple[BucketConfig, ...] = field(default=(), metadata={"doc": "A/B buckets, control included"})
    control: str = doc_field("production", "control bucket of the A/B test")
    ab: ABSettings = ab_settings(pre_days=2, days=3)
    online_metrics: tuple[str, ...] = doc_field(("aut", "avt", "p2n"), "A/B metrics of the lift table")
    daily_metrics: tuple[str, ...] = doc_field(("aut", "avt", "p2n"), "metrics plotted day by day")

    def __post_init__(self) -> None:
        check_seeds("seeds", self.seeds)
        check_seeds("policy_seeds", self.policy_seeds)
        check_int_at_least("test_days", self.test_days, 1)
        check_int_at_least("log_days", self.log_days, self.test_days + 1)
        check_int_at_least("n_negatives", self.n_negatives, 1)
        check_choice("target", self.target, TARGETS)
        check_choice("extra", self.extra, ("", *EXTRA_METRICS))
        if not self.offline and not self.online:
            raise ConfigError("a replication needs offline rows, online buckets or both; got neither")
        if self.offline:
            names = [p.name for p in self.offline]
            if len(set(names)) != len(names):
                raise ConfigError(f"offline names must be unique, got {names}")
            check_rows(self.offline)
            known = OFFLINE_METRICS + EXTRA_METRICS.get(self.extra, ())
            for m in self.offline_metrics:
                if m not in known:
                    raise ConfigError(f"offline_metrics: {m!r} is not one of {', '.join(known)}")
            if not self.offline_metrics:
                raise ConfigError("offline_metrics must name at least one metric")
        if self.online:
            check_policies(self.online, self.control)
            for name, ms in (("online_metrics", self.online_metrics), ("daily_metrics", self.daily_metrics)):
                for m in ms:
                    if m not in METRICS_BY_NAME:
                        raise ConfigError(f"{name}: {m!r} is not a metric; valid: {', '.join(METRICS_BY_NAME)}")
            if not self.online_metrics:
                raise ConfigError("online_metrics must name at least one metric")

    def offline_world(self, seed: int = 0) -> SimConfig:
        """The world the offline logs come from: ``log_days`` days, the given seed."""
        return with_overrides(self.world, {"platform.days": self.log_days, "seed": seed})

    def experiment(self, seed: int = 0, policy_seed: int = 0) -> ExperimentConfig:
        """The A/B test of one world seed and policy seed."""
        world = self.world
        return ExperimentConfig(world=replace(world, seed=seed), ab=self.ab,
                                policy_seed=policy_seed,
                                buckets=policy_buckets(self.online, world), control=self.control)


def check_rows(specs: tuple[BucketConfig, ...]) -> None:
    """Every offline row names a registered policy with valid parameters."""
    from policies import UnknownPolicyError, make_policy
    for i, p in enumerate(specs):
        try:
            make_policy(p.policy, **p.params)
        except (UnknownPolicyError, ValueError) as err:
            raise ConfigError(f"offline[{i}] ({p.name}): {err}") from None


# ----------------------------------------------------------------------------- cells

def _resolve(path: str) -> Callable:
    import importlib
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def run_offline(params: dict, seed: int) -> list[dict]:
    """One world's logs; every offline row fitted and evaluated on them."""
    from studies.engine.offline import simulate_logs
    world = with_overrides(from_dict(SimConfig, params["world"]), {"seed": seed})
    logs = simulate_logs(world)
    extra = _resolve(params["extra_fn"]) if params["extra_fn"] else None
    return evaluate_policies(logs, world, [BucketConfig(**p) for p in params["policies"]],
                             test_days=params["test_days"], n_negatives=params["n_negatives"], seed=seed,
                             target=params["target"], extra=extra)


def run_online(params: dict, seed: int) -> list[dict]:
    """One A/B test: overall lifts, daily lifts and daily bucket means, and a row of run facts."""
    result = run_ab_cell(params, seed, "repl")
    rows = [{"kind": "lift", **r} for r in lift_rows(result.lifts)]
    metrics = set(params["daily_metrics"])
    for r in result.daily_lifts.to_dict("records"):
        if r["metric"] in metrics:
            rows.append({"kind": "daily_lift", "bucket": r["bucket"], "metric": r["metric"], "day": int(r["day"]),
                         "lift": float(r["lift"]), "lift_ci_low": float(r["lift_ci_low"]),
                         "lift_ci_high": float(r["lift_ci_high"])})
    for r in result.daily.to_dict("records"):
        for m in metrics:
            rows.append({"kind": "daily", "bucket": r["bucket"], "metric": m, "day": int(r["day"]),
                         "value": float(r[m])})
    rows.append(run_facts(result))
    return rows


def cells(config: ReplicationConfig, name: str) -> list[Cell]:
    out = []
    if config.offline:
        params = {"world": to_dict(config.offline_world()), "policies": [to_dict(p) for p in config.offline],
                  "test_days": config.test_days, "n_negatives": config.n_negatives, "target": config.target,
                  "extra_fn": EXTRA_FUNCTIONS.get(config.extra, "")}
        out += [Cell("studies._replication:run_offline", params, s, labels={"part": "offline"},
                     version=CACHE_VERSION) for s in config.seeds]
    if config.online:
        out += [Cell("studies._replication:run_online",
                     {"experiment": to_dict(config.experiment(0, ps)), "daily_metrics": list(config.daily_metrics)},
                     s, labels={"part": "online", "policy_seed": ps}, version=CACHE_VERSION)
                for s in config.seeds for ps in config.policy_seeds]
    return out


# ----------------------------------------------------------------------------- summaries

def offline_summary(table: pd.DataFrame, config: ReplicationConfig) -> pd.DataFrame:
    """Long (policy, metric): mean and sd over seeds, seeds (no timings: this is the golden table)."""
    t = table[(table["kind"] == "offline") & table["metric"].isin(config.offline_metrics)]
    g = t.groupby(["policy", "metric"], sort=False)
    return g["value"].agg(mean="mean", sd=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                          seeds="count").reset_index()


def offline_markdown(summary: pd.DataFrame, config: ReplicationConfig, labels: dict[str, str],
                     fit_s: pd.Series) -> str:
    """Wide table: a row per offline policy, "mean ± sd" per metric, best mean in bold (the
    highest; for calibration, ``*_cal*``, the nearest 0)."""
    rows = []
    best = {}
    for m in config.offline_metrics:      # calibration (predicted / observed - 1): best nearest 0
        v = summary[summary["metric"] == m]["mean"]
        best[m] = v.loc[v.abs().idxmin()] if "cal" in m and v.notna().any() else v.max()
    for p in config.offline:
        s = summary[summary["policy"] == p.name].set_index("metric")
        row = {"policy": labels.get(p.name, p.name)}
        for m in config.offline_metrics:
            if m not in s.index or not np.isfinite(s.loc[m, "mean"]):
                row[m] = "n/a"
                continue
            v, sd = s.loc[m, "mean"], s.loc[m, "sd"]
            cell = f"{v:.4f}" + (f" ± {sd:.4f}" if np.isfinite(sd) else "")
            row[m] = f"**{cell}**" if np.isclose(v, best[m]) else cell
        row["fit (s)"] = f"{fit_s.get(p.name, float('nan')):.0f}"
        rows.append(row)
    return markdown_table(pd.DataFrame(rows))


def fit_seconds(table: pd.DataFrame) -> pd.Series:
    """Mean wall seconds of each offline row's fit over seeds."""
    t = table[table["kind"] == "offline"].drop_duplicates(["policy", "seed"])
    return t.groupby("policy", sort=False)["fit_s"].mean()


def offline_plot(summary: pd.DataFrame, table: pd.DataFrame, config: ReplicationConfig, out: Path,
                 labels: dict[str, str]) -> str:
    """One panel per offline metric: each row's mean with ± sd over seeds and the seeds as dots."""
    s = summary.assign(low=summary["mean"] - summary["sd"].fillna(0), high=summary["mean"] + summary["sd"].fillna(0))
    s["policy"] = s["policy"].map(lambda p: labels.get(p, p))
    pts = table[table["kind"] == "offline"].assign(policy=lambda f: f["policy"].map(lambda p: labels.get(p, p)))
    forest_plot(s, out / "offline.png", panels=list(config.offline_metrics),
                rows=[labels.get(p.name, p.name) for p in config.offline], panel_col="metric", row_col="policy",
                value="mean", low="low", high="high", points=pts, point_value="value", xlabel="mean ± sd over seeds",
                scale=1.0)
    return "offline.png"


def online_summary(table: pd.DataFrame, config: ReplicationConfig) -> pd.DataFrame:
    lifts = table[table["kind"] == "lift"]
    return pooled_lifts(lifts, alpha=config.ab.alpha, metrics=config.online_metrics, correction=config.ab.correction,
                        policy_of={p.name: p.policy for p in config.online})


def online_markdown(pooled: pd.DataFrame, config: ReplicationConfig, labels: dict[str, str]) -> str:
    """A row per treatment bucket, a column per metric: pooled lift [CI], `*` significant."""
    rows = []
    for p in config.online:
        if p.name == config.control:
            continue
        g = pooled[pooled["policy"] == p.name].set_index("metric")
        row = {"bucket": labels.get(p.name, p.name) + (" (oracle)" if is_oracle(p.policy) else "")}
        for m in config.online_metrics:
            r = g.loc[m]
            mark = "*" if bool(r["significant"]) else ""
            row[METRICS_BY_NAME[m].label] = f"{pct(r['lift'])}{mark} {interval(r['lift_low'], r['lift_high'], pct)}"
        rows.append(row)
    return markdown_table(pd.DataFrame(rows))


def daily_plot(table: pd.DataFrame, config: ReplicationConfig, out: Path, labels: dict[str, str]) -> str | None:
    """Daily lift vs control per metric (random-effects pooled over seeds, CI band), and the
    daily bucket means below it."""
    from simulator.figures import subplots
    dl, dm = table[table["kind"] == "daily_lift"], table[table["kind"] == "daily"]
    metrics = list(config.daily_metrics)
    if dl.empty or not metrics:
        return None
    z = z_value(config.ab.alpha)
    fig, axes = subplots(2, len(metrics), figsize=(4.4 * len(metrics), 6.4), constrained_layout=True,
                             squeeze=False)
    treat = [p.name for p in config.online if p.name != config.control]
    for j, m in enumerate(metrics):
        ax = axes[0, j]
        for k, b in enumerate(treat):
            g = dl[(dl["bucket"] == b) & (dl["metric"] == m)]
            days, mean, low, high = [], [], [], []
            for d, gd in g.groupby("day"):
                se = ((gd["lift_ci_high"] - gd["lift_ci_low"]) / (2 * z)).to_numpy(float)
                v, s, _, _ = random_effects(*world_means(gd["lift"].to_numpy(float), se, gd["seed"].to_numpy())[1:])
                days.append(d + 1)
                mean.append(100 * v)
                low.append(100 * (v - z * s))
                high.append(100 * (v + z * s))
            band_plot(ax, days, mean, low, high, label=labels.get(b, b), color=COLORS[k % len(COLORS)])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{METRICS_BY_NAME[m].label}: lift vs {config.control}", fontsize=9)
        ax.set_xlabel("day", fontsize=8)
        ax.set_ylabel("lift (%)", fontsize=8)
        ax = axes[1, j]
        for k, b in enumerate([config.control, *treat]):
            g = dm[(dm["bucket"] == b) & (dm["metric"] == m)].groupby("day")["value"].mean()
            ax.plot(g.index + 1, g.to_numpy(), marker="o", ms=3, color="black" if b == config.control
                    else COLORS[(k - 1) % len(COLORS)], label=labels.get(b, b))
        ax.set_title(f"{METRICS_BY_NAME[m].label} by day (mean over seeds)", fontsize=9)
        ax.set_xlabel("day", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    save_figure(fig, out / "daily.png")
    return "daily.png"


def describe(config: ReplicationConfig) -> str:
    parts = [f"Seeds {list(config.seeds)}; worlds of {config.world.users.n_users:,} users and "
             f"{config.world.catalog.n_items:,} items."]
    if config.offline:
        parts.append(f"Offline: {config.log_days} production-served days, the first "
                     f"{config.log_days - config.test_days} train and the last {config.test_days} test "
                     f"(`studies.engine.offline`: next {config.target.replace('_', ' ')} against {config.n_negatives} "
                     "sampled items; clicks vs skips; one fit per seed).")
    if config.online:
        parts.append(f"Online: {config.ab.pre_days} production-served day(s) train the buckets, then a "
                     f"{config.ab.days}-day A/B test of {len(config.online)} equal buckets vs `{config.control}`; "
                     f"{config.ab.describe_learning()}.")
    return " ".join(parts)


def specs_table(config: ReplicationConfig) -> str:
    rows = [{"part": "offline", "row": p.name, "policy": f"`{p.policy}`", "params": str(p.params or "")}
            for p in config.offline]
    rows += [{"part": "online", "row": p.name, "policy": f"`{p.policy}`", "params": str(p.params or "")}
             for p in config.online]
    return markdown_table(pd.DataFrame(rows))


Verdict = Callable[[ReplicationConfig, pd.DataFrame, pd.DataFrame | None], tuple[str, bool | None]]


def summarise(config: ReplicationConfig, table: pd.DataFrame, out: Path, *, verdict: Verdict,
              labels: dict[str, str] | None = None, headline: Callable[..., list[str]] | None = None) -> Summary:
    """The report of a replication: offline table and plot, online lift table, daily plot."""
    labels = labels or {}
    md = [describe(config), "", specs_table(config), ""]
    tables: dict[str, pd.DataFrame] = {}
    off = offline_summary(table, config) if config.offline else pd.DataFrame()
    pooled = online_summary(table, config) if config.online else None
    if config.offline:
        fig = offline_plot(off, table, config, out, labels)
        md += ["## Offline (mean ± sd over seeds; best in bold, calibration: nearest 0)", "", offline_markdown(off, config, labels, fit_seconds(table)), "",
               f"![offline]({fig})", ""]
        tables["offline_by_seed"] = table[table["kind"] == "offline"]
    if pooled is not None:
        md += [f"## Online: lifts vs `{config.control}` (random-effects pooled over seeds, "
               f"{1 - config.ab.alpha:.0%} CI)", "", online_markdown(pooled, config, labels), "",
               f"`*` significant after {config.ab.correction} correction over the non-oracle tests of the table."]
        runs = table[table["kind"] == "run"]
        if "srm_p" in runs:
            md += [f"Sample-ratio-mismatch p-values: {', '.join(f'{v:.2f}' for v in runs['srm_p'])}."]
        fig = daily_plot(table, config, out, labels)
        if fig:
            md += ["", f"![daily lifts]({fig})"]
        dump_toml(config.experiment(config.seeds[0]), out / "experiment.toml")
        md += ["", f"One seed's full A/B report: `satbed ab --config {out / 'experiment.toml'} "
                   f"--seed {config.seeds[0]}`."]
        tables["lifts"] = pooled
        tables["daily"] = table[table["kind"].isin(["daily", "daily_lift"])]
    text, holds = verdict(config, off, pooled)
    main = off if config.offline else pooled
    heads = headline(config, off, pooled) if headline else []
    return Summary(table=main, markdown="\n".join(md), verdict=text, holds=holds, tables=tables, headline=heads)


def offline_value(summary: pd.DataFrame, policy: str, metric: str) -> float:
    s = summary[(summary["policy"] == policy) & (summary["metric"] == metric)]
    return float(s["mean"].iloc[0]) if len(s) else float("nan")


def lift_of(pooled: pd.DataFrame | None, bucket: str, metric: str) -> tuple[float, bool]:
    """(pooled lift, significant) of a bucket's metric; NaN where not measured."""
    if pooled is None:
        return float("nan"), False
    r = pooled[(pooled["policy"] == bucket) & (pooled["metric"] == metric)]
    return (float(r["lift"].iloc[0]), bool(r["significant"].iloc[0])) if len(r) else (float("nan"), False)


def combine(checks: list[bool]) -> bool | None:
    """True if every check holds, False if none does, None (mixed) otherwise."""
    return True if all(checks) else False if not any(checks) else None



# ----------------------------------------------------------------------------- claims (the scorecard)

CLAIM_VERDICTS = ("holds", "does not hold", "not testable")
"""What :func:`claim_rows` says of a claim: its interval lies wholly on the claimed side of 0; it
does not; or the config does not measure it (a row or bucket not configured, one seed, no value)."""


@dataclass(frozen=True)
class Claim:
    """One directional claim of a paper, read off a replication's own tables (``studies.scorecard``).

    Attributes:
        label: the claim in a few words, e.g. ``"T3: SAQRec > SASRec on NDCG@10"``.
        part: ``"offline"``: the difference of two offline rows, seed by seed, with a Student-t
            interval over the seeds (one world each); ``"online"``: the treatment bucket's pooled
            lift vs the control (the study's lift table), or, when ``baseline`` is another bucket,
            the difference of the two buckets' lifts.
        metric: the offline metric or the A/B metric.
        treatment: the offline row or online bucket the claim is about.
        baseline: the row or bucket it is compared with (online: the control or another bucket).
        direction: +1 if the claim puts the treatment above the baseline, -1 below.
        absolute: offline: compare ``|value|`` (calibration, where nearer 0 is better).
    """
    label: str
    part: str
    metric: str
    treatment: str
    baseline: str
    direction: int = 1
    absolute: bool = False

    def __post_init__(self) -> None:
        check_choice("part", self.part, ("offline", "online"))
        if self.direction not in (1, -1):
            raise ValueError(f"direction={self.direction!r} must be +1 or -1")


def _offline_claim(claim: Claim, config: ReplicationConfig, by_seed: pd.DataFrame) -> dict:
    """Per-seed difference treatment - baseline (of |value| with ``absolute``), mean and t interval."""
    from studies.engine.offline import RANK_METRICS
    name = claim.metric.upper() if claim.metric in OFFLINE_METRICS else claim.metric
    row = {"measure": f"Δ |{name}|" if claim.absolute else f"Δ {name}", "unit": "difference"}
    if claim.metric in RANK_METRICS:
        row["claim"] = f"{claim.label} (next {config.target.replace('_', ' ')})"
    rows = [p.name for p in config.offline]
    if claim.treatment not in rows or claim.baseline not in rows or claim.metric not in config.offline_metrics:
        return {**row, "reason": "not configured"}
    t = by_seed[by_seed["metric"] == claim.metric].pivot_table(index="seed", columns="policy", values="value",
                                                               aggfunc="mean")
    pair = t.reindex(columns=[claim.treatment, claim.baseline]).dropna()
    f = np.abs if claim.absolute else (lambda v: v)
    effect, low, high, n = mean_ci(f(pair[claim.treatment]) - f(pair[claim.baseline]), config.ab.alpha)
    return {**row, "effect": effect, "ci_low": low, "ci_high": high, "n": n,
            "reason": "one seed: no CI" if n == 1 else "no value" if n == 0 else ""}


def _online_claim(claim: Claim, config: ReplicationConfig, pooled: pd.DataFrame | None) -> dict:
    """The treatment's pooled lift vs the control, or its difference from another bucket's lift."""
    name = claim.metric.upper() if claim.metric in ("aut", "avt", "p2n") else claim.metric
    row = {"measure": f"{name} lift vs {config.control}" if claim.baseline == config.control
           else f"{name} lift - {claim.baseline}'s (both vs {config.control})", "unit": "lift"}
    buckets = [p.name for p in config.online]
    if pooled is None or claim.treatment not in buckets or claim.baseline not in buckets \
            or claim.metric not in config.online_metrics:
        return {**row, "reason": "not configured"}
    p = pooled[pooled["metric"] == claim.metric].set_index("policy")
    r = p.loc[claim.treatment]
    n = int(r["seeds"])
    if claim.baseline == config.control:
        effect, low, high = float(r["lift"]), float(r["lift_low"]), float(r["lift_high"])
    else:
        # both lifts share the control bucket, so their errors are positively correlated and the
        # independent-errors interval is conservative
        b = p.loc[claim.baseline]
        effect = float(r["lift"] - b["lift"])
        half = z_value(config.ab.alpha) * float(np.hypot(r["stderr"], b["stderr"]))
        low, high = effect - half, effect + half
    return {**row, "effect": effect, "ci_low": low, "ci_high": high, "n": n,
            "reason": "" if np.isfinite(effect) else "no value"}


def claim_rows(config: ReplicationConfig, summary: Summary, claims: tuple[Claim, ...], paper: str) -> list[dict]:
    """One row per claim, measured on a replication's summary (what its ``summarise`` returned).

    Each row: paper, claim, part, metric, treatment, baseline, measure, unit (``"difference"``: an
    offline difference in the metric's own units; ``"lift"``: a relative A/B lift), direction
    (+1 / -1), effect with its ``1 - alpha`` interval ``ci_low`` / ``ci_high``, n (seeds), holds
    (:data:`CLAIM_VERDICTS`) and the reason where it is not testable.
    """
    by_seed = summary.tables.get("offline_by_seed", pd.DataFrame(columns=["seed", "policy", "metric", "value"]))
    pooled = summary.tables.get("lifts")
    out = []
    for c in claims:
        row = {"paper": paper, "claim": c.label, "part": c.part, "metric": c.metric, "treatment": c.treatment,
               "baseline": c.baseline, "direction": c.direction, "effect": float("nan"), "ci_low": float("nan"),
               "ci_high": float("nan"), "n": 0}
        row.update(_offline_claim(c, config, by_seed) if c.part == "offline" else _online_claim(c, config, pooled))
        low, high = c.direction * row["ci_low"], c.direction * row["ci_high"]
        if not (np.isfinite(low) and np.isfinite(high)):
            row["holds"] = "not testable"
        else:
            row["holds"] = "holds" if min(low, high) > 0 else "does not hold"
            row["reason"] = ("CI on the claimed side of 0" if min(low, high) > 0 else
                             "CI on the other side of 0" if max(low, high) < 0 else "CI includes 0")
        out.append(row)
    return out
