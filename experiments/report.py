"""The A/B report: `report.md` with the lift table and a plain-language reading, and PNG plots.

Cells are formatted by :mod:`experiments.reporting`, as in every study's report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.metrics import METRICS, METRICS_BY_NAME
from experiments.reporting import num, pct, pval
from simulator.atomic import atomic_write_text
from simulator.figures import COLORS, save_figure, subplots

PLOT_METRICS = ("aut", "avt", "p2n", "skip_rate", "survey_like_rate", "survey_like_rate_debiased",
                "survey_issue_rate_debiased", "oracle_satisfaction")


def _oracle_buckets(config) -> set[str]:
    from policies import is_oracle
    return {b.name for b in config.buckets if is_oracle(b.policy)}


def _metric_value(value: float, metric) -> str:
    """A bucket's value of ``metric``: seconds, a plain ratio (P2N) or an unsigned percentage."""
    if not np.isfinite(value):
        return "n/a"
    if metric.name in ("aut", "avt"):
        return f"{num(value, 1)} s"
    if metric.name == "p2n":
        return num(value, 2)
    return pct(value, sign=False)


def plot_daily_lifts(daily_lifts: pd.DataFrame, path: Path, oracle: set[str]) -> Path:
    """One panel per key metric: daily relative lift vs control with 95% CI bands per bucket."""
    metrics = [m for m in PLOT_METRICS if m in set(daily_lifts["metric"])]
    cols = 4
    rows = int(np.ceil(len(metrics) / cols))
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), constrained_layout=True, squeeze=False)
    buckets = list(dict.fromkeys(daily_lifts["bucket"]))
    for ax, name in zip(axes.ravel(), metrics):
        sub = daily_lifts[daily_lifts["metric"] == name]
        for color, bucket in zip(COLORS, buckets):
            d = sub[sub["bucket"] == bucket].sort_values("day")
            label = bucket + (" (item-wise oracle)" if bucket in oracle else "")
            ax.plot(d["day"], 100 * d["lift"], "o-", color=color, label=label, ms=3)
            ax.fill_between(d["day"], 100 * d["lift_ci_low"], 100 * d["lift_ci_high"], color=color, alpha=0.15)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(METRICS_BY_NAME[name].label, fontsize=9)
        ax.set_xlabel("day")
        ax.set_ylabel("lift vs control (%)")
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=8)
    save_figure(fig, path)
    return path


def plot_overall_lifts(lifts: pd.DataFrame, path: Path, oracle: set[str]) -> Path:
    """Small multiples, one panel per metric (own scale): overall lift per bucket with its 95% CI."""
    metrics = [m.name for m in METRICS if m.name in set(lifts["metric"])]
    buckets = list(dict.fromkeys(lifts["bucket"]))
    cols = 4
    rows = int(np.ceil(len(metrics) / cols))
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 0.5 * len(buckets) * rows + 1.3 * rows),
                             constrained_layout=True, squeeze=False)
    for ax, name in zip(axes.ravel(), metrics):
        sub = lifts[lifts["metric"] == name].set_index("bucket").reindex(buckets)
        lift = 100 * sub["lift"].to_numpy(dtype=float)
        err = np.vstack([lift - 100 * sub["lift_ci_low"].to_numpy(dtype=float),
                         100 * sub["lift_ci_high"].to_numpy(dtype=float) - lift])
        y = np.arange(len(buckets))
        ax.barh(y, np.nan_to_num(lift), color=COLORS[:len(buckets)], xerr=np.nan_to_num(err), capsize=3)
        ax.set_yticks(y)
        ax.set_yticklabels([b + ("\n(item-wise oracle)" if b in oracle else "") for b in buckets], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(METRICS_BY_NAME[name].label, fontsize=9)
        ax.set_xlabel("lift vs control (%)", fontsize=8)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    save_figure(fig, path)
    return path


def reading(lifts: pd.DataFrame, oracle: set[str], control: str, aa: bool) -> list[str]:
    """Plain-language sentences on the significant (after correction) and oracle results."""
    lines = []
    for bucket in dict.fromkeys(lifts["bucket"]):
        sub = lifts[lifts["bucket"] == bucket]
        sig = sub[sub["significant"].fillna(False).astype(bool)]
        tag = (" (the item-wise oracle: it reads the ground truth and ranks item by item, ignoring fatigue within "
               "the page, so this is a reference, not a deployable policy nor a strict upper bound)"
               if bucket in oracle else "")
        if sig.empty:
            lines.append(f"- **{bucket}**{tag}: no metric differs from {control} significantly after correction.")
        else:
            parts = []
            for _, r in sig.iterrows():
                m = METRICS_BY_NAME[r["metric"]]
                good = (r["difference"] > 0) == m.higher_is_better
                parts.append(f"{m.label} {pct(r['lift'])} [{pct(r['lift_ci_low'])}, {pct(r['lift_ci_high'])}]"
                             f" ({'better' if good else 'worse'})")
            lines.append(f"- **{bucket}**{tag}: " + "; ".join(parts) + ".")
        o = sub[sub["metric"] == "oracle_satisfaction"]
        if not o.empty and np.isfinite(o["lift"].iloc[0]):
            lines.append(f"  Ground truth: its users' mean satisfaction moved {pct(o['lift'].iloc[0])} "
                         f"[{pct(o['lift_ci_low'].iloc[0])}, {pct(o['lift_ci_high'].iloc[0])}] vs {control} "
                         "(oracle metric, not observable on a real platform).")
    if aa:
        lines.append("- This is an **A/A test**: every bucket runs the same policy, so about "
                     "alpha of the uncorrected tests are expected to reject by chance.")
    return lines


def questionnaire_reading(pairs: pd.DataFrame) -> list[str]:
    """Plain words per (treatment, twin): did using questionnaires raise the users' satisfaction?"""
    lines = []
    for (treatment, twin), g in pairs.groupby(["bucket", "twin"], sort=False):
        g = g.set_index("metric")
        sat = g.loc["oracle_satisfaction"]
        low, high = sat["lift_ci_low"], sat["lift_ci_high"]
        if low > 0:
            answer = "**Yes.**"
        elif high < 0:
            answer = "**No: it lowered it.**"
        else:
            answer = "**Not detectably.**"
        watch = g.loc["aut"]
        watch_words = ("significantly " if bool(watch["significant"]) else "") + \
            ("up" if watch["lift"] > 0 else "down")
        lines.append(
            f"- {answer} `{treatment}` uses questionnaire answers; `{twin}` is the same method without them. "
            f"Its users' true mean satisfaction moved {pct(sat['lift'])} [{pct(low)}, {pct(high)}] against "
            f"`{twin}` (oracle metric, 95% CI), and their watch time per day (AUT) {pct(watch['lift'])} "
            f"[{pct(watch['lift_ci_low'])}, {pct(watch['lift_ci_high'])}] ({watch_words}). "
            f"The survey like rate, response-debiased, the platform's own view, moved "
            f"{pct(g.loc['survey_like_rate_debiased', 'lift'])}.")
    return lines


def write_report(out: Path, config, result, *, aa: bool = False) -> Path:
    oracle = _oracle_buckets(config)
    plot_daily_lifts(result.daily_lifts, out / "daily_lifts.png", oracle)
    plot_overall_lifts(result.lifts, out / "lifts.png", oracle)
    lifts = result.lifts
    title = "A/A test" if aa else "A/B test"
    lines = [f"# {title} report", "",
             f"World seed {config.world.seed}; {config.world.users.n_users:,} users, "
             f"{config.world.catalog.n_items:,} items; pre-period {config.ab.pre_days} days (production policy), "
             f"experiment {config.ab.days} days; {config.ab.describe_learning()}; policy seed {config.policy_seed}.", "",
             "| bucket | policy | share | users |", "|---|---|---|---|"]
    overall = pd.read_csv(out / "metrics_overall.csv").set_index("bucket")
    for b in config.buckets:
        flag = " **(item-wise oracle)**" if b.name in oracle else ""
        lines.append(f"| {b.name} | `{b.policy}`{flag} | {b.share:.3f} | {int(overall.loc[b.name, 'users']):,} |")
    lines += ["", f"Sample-ratio-mismatch check (assigned users vs shares): p = {result.srm_p_value:.3g}"
              + (" — **mismatch, do not trust the lifts**" if result.srm_p_value < 1e-3 else " (no mismatch)."), "",
              "## Reading", "", *reading(lifts, oracle, config.control, aa), ""]
    if len(result.questionnaire_lifts) and not aa:
        lines += ["## Did using questionnaires raise satisfaction?", "",
                  *questionnaire_reading(result.questionnaire_lifts), "",
                  "Every metric of each pair: `questionnaire_lifts.csv`.", ""]
    lines += [f"## Lifts vs `{config.control}` over the experiment", "",
              "Ratio metrics use the delta method on per-user sums, AUT and active-day rate Welch's test on "
              f"per-user values; p-values are {config.ab.correction}-corrected over all non-oracle tests. "
              "The response-debiased survey rates reweight respondents by 1 / P̂(submit | shown) from a "
              "submit model on observable behaviour (USM Eq. 13); where answering depends on the latent "
              "satisfaction itself they can be further from the truth than the raw rate — compare them "
              "with the oracle satisfaction row.", "",
              "| bucket | metric | control | treatment | lift | 95% CI | p | p adj. |", "|---|---|---|---|---|---|---|---|"]
    for _, r in lifts.iterrows():
        m = METRICS_BY_NAME[r["metric"]]
        if "control" not in r or pd.isna(r.get("control")):
            lines.append(f"| {r['bucket']} | {m.label} | n/a | n/a | n/a | | | |")
            continue
        star = " *" if bool(r["significant"]) else ""
        name = m.label + (" (oracle)" if m.oracle else "")
        lines.append(f"| {r['bucket']} | {name} | {_metric_value(r['control'], m)} | "
                     f"{_metric_value(r['treatment'], m)} | "
                     f"{pct(r['lift'])}{star} | [{pct(r['lift_ci_low'])}, {pct(r['lift_ci_high'])}] | "
                     f"{r['p_value']:.3g} | {pval(r['p_adjusted'])} |")
    lines += ["", "`*` significant at alpha = "
              f"{config.ab.alpha} after correction.", "",
              "## Daily lifts", "", "![daily lifts](daily_lifts.png)", "",
              "## Overall lifts", "", "![overall lifts](lifts.png)", "",
              "## Files", "",
              "`metrics.csv` (per bucket and day), `metrics_overall.csv`, `lifts.csv`, `daily_lifts.csv`, "
              "`logs/` (Parquet, by day and bucket; days before the experiment are the pre-period, bucket `pre`), "
              "`config.toml` (reproduces this run), `timings.json`."]
    if (out / "timings.json").exists():
        lines.append("Timings: " + json.dumps(json.loads((out / "timings.json").read_text())))
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
