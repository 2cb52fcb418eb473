"""`aa_validity`: A/A false-positive rate and CI coverage of every metric the A/B report shows.

Each replication (one cell per seed) is a small A/A test: a fresh world (``world.seed`` = the
cell's seed), ``pre_days`` served by production, then ``days`` in which ``n_buckets`` buckets
(users split by a salted hash, re-salted per replication) are *all* served by the same policy
(``run_experiment(..., aa=True)``). Every treatment bucket is compared with the control on every
metric of :data:`experiments.metrics.METRICS` exactly as ``satbed ab`` compares them (per-user
sums, Welch's test for per-user metrics, the delta method for ratio metrics).

Per metric, over all replications and treatment buckets:

- **false-positive rate**: share of tests with p < alpha (uncorrected: each metric's own level),
  with a 95% Wilson interval; it should be alpha;
- **CI coverage**: share of tests whose 1 - alpha interval for the difference covers 0; it
  should be 1 - alpha;
- **uniformity**: Kolmogorov-Smirnov p-value of the p-values against U(0, 1);
- **family-wise rate**: share of replications in which *any* test of the report's family (every
  non-oracle metric and bucket) rejects after the report's correction (Holm by default); it
  should be at most alpha.

A metric is flagged ``inflated`` (``conservative``) when its false-positive rate's Wilson
interval at level 1 - 0.05 / (number of metrics) (Bonferroni over metrics) lies above (below)
alpha; otherwise ``ok``. Undefined tests (e.g. no questionnaire answered in a bucket) are left
out and counted in ``undefined``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from estimators import wilson
from simulator.checks import check_int_at_least
from simulator.config import SimConfig, doc_field, from_dict, to_dict
from simulator.figures import COLORS, save_figure
from experiments.config import ABSettings, BucketConfig, ExperimentConfig, ab_settings
from experiments.runner import run_experiment
from experiments.metrics import METRICS, METRICS_BY_NAME
from experiments.reporting import markdown_table, num, pct
from studies.engine.base import Summary, check_policies, register_study, study_main
from studies.engine.sweep import Cell

NAME = "aa_validity"
CACHE_VERSION = 1
PVALUE_PLOTS = ("aut", "avt", "p2n", "skip_rate", "survey_like_rate_debiased", "oracle_satisfaction")


@dataclass(frozen=True, slots=True)
class AAValidityConfig:
    """Config of `aa_validity` (studies/configs/aa_validity.toml)."""
    world: SimConfig = field(default_factory=SimConfig, metadata={"doc": "world of every replication "
                                                                          "(its seed is replaced)"})
    replications: int = doc_field(200, "A/A tests; replication r uses seed first_seed + r")
    first_seed: int = doc_field(0, "seed of the first replication")
    ab: ABSettings = ab_settings(pre_days=1, days=1)
    n_buckets: int = doc_field(2, "buckets (all on the same policy); each non-control one is a test")
    policy: BucketConfig = field(default_factory=BucketConfig, metadata={"doc": "the policy of every bucket"})

    def __post_init__(self) -> None:
        check_int_at_least("replications", self.replications, 2)
        check_int_at_least("first_seed", self.first_seed, 0)
        check_int_at_least("n_buckets", self.n_buckets, 2)
        twin = BucketConfig(f"{self.policy.name}_twin", self.policy.policy, params=dict(self.policy.params))
        check_policies((self.policy, twin), self.policy.name)
        self.experiment(0)          # validates the buckets

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.first_seed, self.first_seed + self.replications))

    def experiment(self, seed: int) -> ExperimentConfig:
        """The A/A experiment of replication ``seed``."""
        share = 1.0 / self.n_buckets
        names = [self.policy.name] + [f"aa{i}" for i in range(1, self.n_buckets)]
        buckets = tuple(BucketConfig(n, self.policy.policy, share, dict(self.policy.params)) for n in names)
        return ExperimentConfig(world=replace(self.world, seed=seed), ab=self.ab,
                                buckets=buckets, control=self.policy.name, salt=f"satbed-aa-{seed}")


def run_cell(params: dict, seed: int) -> list[dict]:
    """One A/A test: every (bucket, metric) comparison's p-values and interval."""
    config = from_dict(ExperimentConfig, params["experiment"])
    config = replace(config, world=replace(config.world, seed=seed), salt=f"satbed-aa-{seed}")
    with tempfile.TemporaryDirectory(prefix="satbed-aa-") as tmp:
        result = run_experiment(config, Path(tmp) / "run", aa=True, progress=False, report=False)
    rows = []
    for r in result.lifts.to_dict("records"):
        defined = "p_value" in r and np.isfinite(r.get("p_value", np.nan))
        rows.append({
            "bucket": r["bucket"], "metric": r["metric"], "defined": bool(defined),
            "p_value": float(r["p_value"]) if defined else float("nan"),
            "p_adjusted": float(r["p_adjusted"]) if defined and np.isfinite(r["p_adjusted"]) else float("nan"),
            "difference": float(r["difference"]) if defined else float("nan"),
            "covers": bool(defined and r["diff_ci_low"] <= 0.0 <= r["diff_ci_high"]),
            "lift": float(r["lift"]) if defined else float("nan")})
    rows.append({"bucket": "", "metric": "srm", "defined": True, "p_value": float(result.srm_p_value),
                 "p_adjusted": float("nan"), "difference": float("nan"), "covers": True, "lift": float("nan")})
    return rows


def cells(config: AAValidityConfig) -> list[Cell]:
    base = to_dict(config.experiment(0))
    return [Cell(f"studies.{NAME}:run_cell", {"experiment": base}, s, labels={"replication": i},
                 version=CACHE_VERSION) for i, s in enumerate(config.seeds)]


def metric_rates(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per metric: tests, false-positive rate and CI coverage with Wilson intervals, KS p-value."""
    tests = table[table["metric"] != "srm"]
    names = [m.name for m in METRICS if m.name in set(tests["metric"])]
    strict = 0.05 / max(len(names), 1)
    rows = []
    for name in names:
        sub = tests[tests["metric"] == name]
        ok = sub[sub["defined"].astype(bool)]
        n = len(ok)
        rejected = int((ok["p_value"] < alpha).sum())
        covered = int(ok["covers"].astype(bool).sum())
        lo, hi = wilson(rejected, n)
        slo, shi = wilson(rejected, n, alpha=strict)
        clo, chi = wilson(covered, n)
        flag = "inflated" if slo > alpha else "conservative" if shi < alpha else "ok"
        ks = float(stats.kstest(ok["p_value"].to_numpy(float), "uniform").pvalue) if n >= 5 else float("nan")
        m = METRICS_BY_NAME[name]
        rows.append({"metric": name, "label": m.label + (" (oracle)" if m.oracle else ""), "tests": n,
                     "undefined": int(len(sub) - n), "false_positive_rate": rejected / n if n else float("nan"),
                     "fpr_low": lo, "fpr_high": hi, "coverage": covered / n if n else float("nan"),
                     "coverage_low": clo, "coverage_high": chi, "ks_p": ks, "flag": flag})
    return pd.DataFrame(rows)


def family_rates(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Family-wise rejection after the report's correction, and the SRM check's alarm rate."""
    tests = table[(table["metric"] != "srm") & table["defined"].astype(bool)]
    oracle = {m.name for m in METRICS if m.oracle}
    fam = tests[~tests["metric"].isin(oracle)]
    any_rej = fam.groupby("seed")["p_adjusted"].apply(lambda p: bool((p < alpha).any()))
    srm = table[table["metric"] == "srm"].groupby("seed")["p_value"].first()
    rows = []
    for what, hits, level in (("any test rejects after correction (family-wise)", any_rej, alpha),
                              ("SRM alarm (p < 0.001)", srm < 1e-3, 1e-3)):
        k, n = int(hits.sum()), int(len(hits))
        lo, hi = wilson(k, n)
        rows.append({"check": what, "replications": n, "rate": k / n if n else float("nan"),
                     "rate_low": lo, "rate_high": hi, "nominal": level})
    return pd.DataFrame(rows)


def _plots(rates: pd.DataFrame, table: pd.DataFrame, out: Path, alpha: float) -> list[str]:
    from simulator.figures import subplots
    fig, axes = subplots(1, 2, figsize=(11, 0.32 * len(rates) + 1.6), constrained_layout=True, sharey=True)
    y = np.arange(len(rates))
    for ax, (col, lo, hi, target, title) in zip(axes, (
            ("false_positive_rate", "fpr_low", "fpr_high", alpha, f"A/A false-positive rate (alpha = {alpha})"),
            ("coverage", "coverage_low", "coverage_high", 1 - alpha, f"{1 - alpha:.0%} CI coverage of 0"))):
        v = 100 * rates[col].to_numpy(float)
        err = np.clip(np.nan_to_num(np.vstack([v - 100 * rates[lo].to_numpy(float),
                                               100 * rates[hi].to_numpy(float) - v])), 0, None)
        colors = [COLORS[1] if f != "ok" else COLORS[0] for f in rates["flag"]]
        ax.barh(y, v, xerr=err, color=colors, capsize=2)
        ax.axvline(100 * target, color="black", lw=1, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("% of tests (95% Wilson interval)", fontsize=8)
        if col == "coverage":
            ax.set_xlim(max(0.0, 100 * (1 - alpha) - 30), 100)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(rates["metric"], fontsize=8)
    axes[0].invert_yaxis()
    save_figure(fig, out / "aa_rates.png")

    shown = [m for m in PVALUE_PLOTS if m in set(rates["metric"])]
    fig, axes = subplots(1, len(shown), figsize=(2.6 * len(shown), 2.6), constrained_layout=True,
                             squeeze=False)
    for ax, name in zip(axes.ravel(), shown):
        p = table.loc[(table["metric"] == name) & table["defined"].astype(bool), "p_value"].to_numpy(float)
        ax.hist(p, bins=np.linspace(0, 1, 11), color=COLORS[2], edgecolor="white")
        ax.axhline(len(p) / 10, color="black", lw=0.8, ls="--")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("p-value", fontsize=8)
    axes.ravel()[0].set_ylabel("tests")
    save_figure(fig, out / "aa_pvalues.png")
    return ["aa_rates.png", "aa_pvalues.png"]


def _uniformity_note(rates: pd.DataFrame) -> str:
    bad = rates[rates["ks_p"] < 0.01]
    if bad.empty:
        return ""
    return (" P-values far from uniform (KS p < 0.01): " + ", ".join(f"`{m}`" for m in bad["metric"]) +
            ". With rare events (few issue answers or reports per bucket) the test statistic is discrete and "
            "the p-values pile up at a few values; such a test tends to be conservative rather than invalid "
            "(compare its false-positive rate with alpha).")


def summarise(config: AAValidityConfig, table: pd.DataFrame, out: Path) -> Summary:
    rates = metric_rates(table, config.ab.alpha)
    family = family_rates(table, config.ab.alpha)
    _plots(rates, table, out, config.ab.alpha)                 # aa_rates.png and aa_pvalues.png, linked below
    flagged = rates[rates["flag"] != "ok"]
    holds = bool(flagged.empty) if len(rates) else None
    fw = family.iloc[0]
    if holds:
        verdict = (f"Every metric's A/A false-positive rate is consistent with alpha = {config.ab.alpha} "
                   f"(Bonferroni-adjusted Wilson intervals over {len(rates)} metrics), and the family-wise "
                   f"rate after {config.ab.correction} correction is {pct(fw['rate'], 1, False)}.")
    else:
        verdict = ("Not for every metric: " + ", ".join(f"{r.metric} is {r.flag} "
                                                          f"({pct(r.false_positive_rate, 1, False)})"
                                                          for r in flagged.itertuples()) + ".")
    shown = rates.assign(
        fpr=[f"{pct(v, 1, False)} [{pct(lo, 1, False)}, {pct(hi, 1, False)}]"
             for v, lo, hi in zip(rates["false_positive_rate"], rates["fpr_low"], rates["fpr_high"])],
        cov=[f"{pct(v, 1, False)} [{pct(lo, 1, False)}, {pct(hi, 1, False)}]"
             for v, lo, hi in zip(rates["coverage"], rates["coverage_low"], rates["coverage_high"])])
    shown = shown[["label", "tests", "undefined", "fpr", "cov", "ks_p", "flag"]].rename(columns={
        "label": "metric", "fpr": f"false-positive rate (alpha {config.ab.alpha})",
        "cov": f"{1 - config.ab.alpha:.0%} CI covers 0", "ks_p": "KS p (uniform p-values)"})
    fam_shown = family.assign(rate=[f"{pct(v, 1, False)} [{pct(lo, 1, False)}, {pct(hi, 1, False)}]"
                                    for v, lo, hi in zip(family["rate"], family["rate_low"], family["rate_high"])])
    fam_shown = fam_shown[["check", "replications", "rate", "nominal"]]
    tests_per = config.n_buckets - 1
    md = [f"{config.replications} A/A replications (seeds {config.seeds[0]}..{config.seeds[-1]}), each a fresh "
          f"world of {config.world.users.n_users:,} users and {config.world.catalog.n_items:,} items, "
          f"{config.ab.pre_days} pre-period day(s) and {config.ab.days} A/A day(s), {config.n_buckets} buckets on "
          f"`{config.policy.policy}` ({tests_per} test(s) per metric and replication).", "",
          "## False-positive rate and coverage per metric", "",
          markdown_table(shown, {"KS p (uniform p-values)": lambda v: num(v, 3)}), "",
          "Brackets: 95% Wilson intervals. `flag`: `inflated` / `conservative` when the Bonferroni-adjusted "
          "interval (over the metrics) lies above / below alpha." + _uniformity_note(rates), "",
          "## Family-wise checks", "", markdown_table(fam_shown), "",
          "![false-positive rate and coverage](aa_rates.png)", "", "![p-value histograms](aa_pvalues.png)"]
    headline = [f"aa_validity: {config.replications} A/A tests; " + ", ".join(
        f"{r.metric} FPR {pct(r.false_positive_rate, 1, False)}" for r in rates.itertuples()
        if r.metric in ("aut", "avt", "p2n", "survey_like_rate_debiased")) +
        f"; family-wise {pct(fw['rate'], 1, False)}; flagged: {', '.join(flagged['metric']) or 'none'}"]
    return Summary(table=rates, markdown="\n".join(md), verdict=verdict, holds=holds,
                   tables={"family": family}, headline=headline)


STUDY = register_study(
    NAME, "A/A false-positive rate and CI coverage of every reported A/B metric, over many small A/A tests",
    config=AAValidityConfig, cells=cells, summarise=summarise,
    claim="The A/B statistics behind every paper's online table (SAQRec §5.5 and Table 4: random bucketing, "
          "AUT / AVT / P2N lifts; USM §4.1.3-4.1.4: survey rates and the debiased rate of Eq. 13): with users as "
          "the randomisation unit (Welch's test for per-user metrics, the delta method for ratio metrics), an "
          "A/A test rejects at the nominal alpha and the interval for the difference covers 0 at 1 - alpha.")

if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
