"""`scorecard`: every paper claim the replications test, in the default world and in the claim's own world.

One row per (paper claim, world). The claims are the directions the replication studies'
verdicts test (``CLAIMS`` of `saqrec_replication`, `usm_replication`, `sine_replication` and
`easq_online`); the worlds are the study's own (``default``) and the registered scenario built on
the paper's premise (``clickbait`` for SAQRec, ``engaged_response`` for USM, ``skip_rich`` for
SINE, ``drifting`` for EASQ; the paper-regime worlds ``saqrec_commercial`` and ``sine_kuaishou``
in the full variant). A scenario sets the base of the study's world and the study's own world
keys (its size) stay on top, so each (study, world) is that study's config of the chosen
variant with ``world.scenario = NAME``.

The cells are the replication studies' own cells, labelled with the study and the world; a
(study, world) whose cells equal those of ``satbed study NAME`` (the default world) has the same
cache keys, so its finished cells can be copied into this study's ``cells/``. The summary hands
each (study, world) its part of the table, lets the study summarise it into
``<out>/<study>/<world>/`` (its own report, tables, plots and config) and reads the claims off
that summary (:func:`studies._replication.claim_rows`):

- offline claims: the difference of two rows seed by seed (one world each), mean with a
  Student-t interval over the seeds (one seed: not testable);
- online claims: the bucket's lift vs the control, random-effects pooled over seeds (the
  study's lift table), or the difference of two buckets' lifts.

A claim *holds* where its 95% interval lies wholly on the claimed side of 0; the intervals are
not adjusted for the number of rows.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.atomic import atomic_write_text
from simulator.checks import check_choice
from simulator.config import ConfigError, doc_field, dump_toml
from simulator.figures import save_figure
from experiments.reporting import interval, markdown_table, num, pct
from studies import _replication as R
from studies.engine.base import VARIANTS, Summary, Study, check_seeds, get_study, load_config, register_study, study_main
from studies.engine.sweep import Cell

NAME = "scorecard"
VERDICTS = R.CLAIM_VERDICTS
COLUMNS = ("paper", "claim", "world", "measure", "claimed", "effect [95% CI]", "verdict")
"""The columns of the report's table (``table.csv`` has the numbers behind them)."""
HOLDS_COLORS = {"holds": "#1a9641", "does not hold": "#d7191c", "not testable": "#999999"}


def claim_rows_of(study: Study) -> Callable[[Any, Summary], list[dict]] | None:
    """The study's ``claim_rows(config, summary)``, or None if its module defines none."""
    return getattr(importlib.import_module(study.module), "claim_rows", None)


@dataclass(frozen=True, slots=True)
class ScorecardEntry:
    """One replication study and the worlds its claims are checked in."""
    study: str = doc_field("", "a study whose module defines claim_rows (saqrec_replication, usm_replication, "
                        "sine_replication, easq_online)")
    worlds: tuple[str, ...] = doc_field(("default",), "registered scenarios (satbed scenarios); default: the study's "
                                               "own world")
    overrides: dict = field(default_factory=dict, metadata={
        "doc": "dotted keys of the study's config set in these worlds, e.g. {\"world.users.n_users\" = 9756}"})

    def __post_init__(self) -> None:
        from simulator.scenarios import get_scenario
        study = get_study(self.study)
        if claim_rows_of(study) is None:
            raise ConfigError(f"study={self.study!r} lists no paper claims (its module has no claim_rows)")
        if not self.worlds:
            raise ConfigError(f"worlds=() of {self.study} must name at least one scenario")
        if len(set(self.worlds)) != len(self.worlds):
            raise ConfigError(f"worlds={list(self.worlds)} of {self.study} must not repeat a scenario")
        for w in self.worlds:
            try:
                get_scenario(w)
            except ConfigError as err:
                raise ConfigError(f"worlds of {self.study}: {err}") from None
        for key in self.overrides:
            if key in ("seeds", "world.scenario"):
                raise ConfigError(f"overrides: {key!r} is set by the scorecard (seeds, worlds), not per study")


@dataclass(frozen=True, slots=True)
class ScorecardConfig:
    """Config of `scorecard` (studies/configs/scorecard.toml)."""
    variant: str = doc_field("default", "each study's variant (fast, default, full): its seeds, sizes, rows and buckets")
    seeds: tuple[int, ...] = doc_field((), "world seeds of every study; empty: each study's own")
    studies: tuple[ScorecardEntry, ...] = field(default=(), metadata={"doc": "the studies and their worlds"})

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        if self.seeds:
            check_seeds("seeds", self.seeds)
        if not self.studies:
            raise ConfigError("studies=() must list at least one study and its worlds")
        pairs = [(e.study, w) for e in self.studies for w in e.worlds]
        twice = sorted({p for p in pairs if pairs.count(p) > 1})
        if twice:
            raise ConfigError(f"studies: (study, world) {twice[0]} is listed twice")
        self.parts()              # every study config loads in every world

    def parts(self) -> list[tuple[str, str, Any]]:
        """``(study, world, the study's config in that world)`` of every row group, in order."""
        out = []
        for e in self.studies:
            study = get_study(e.study)
            for w in e.worlds:
                overrides = {**e.overrides, "world.scenario": w}
                if self.seeds:
                    overrides["seeds"] = list(self.seeds)
                try:
                    config = load_config(study, variant=self.variant, overrides=overrides)
                except ConfigError as err:
                    raise ConfigError(f"studies: {e.study} in world {w!r}: {err}") from None
                out.append((e.study, w, config))
        return out


def cells(config: ScorecardConfig) -> list[Cell]:
    """Every (study, world)'s own cells, labelled with the study and the world."""
    return [replace(c, labels={**c.labels, "study": name, "world": world})
            for name, world, sub in config.parts() for c in get_study(name).cells(sub)]


# ----------------------------------------------------------------------------- summary
def study_part(table: pd.DataFrame, study: str, world: str) -> pd.DataFrame:
    """The rows of one (study, world), as that study's own sweep table (without the two labels and
    the columns only other studies' rows fill)."""
    part = table[(table["study"] == study) & (table["world"] == world)]
    return part.drop(columns=["study", "world"]).dropna(axis=1, how="all").reset_index(drop=True)


def write_part(study: Study, config: Any, summary: Summary, out: Path, world: str) -> None:
    """A (study, world)'s results: its config, table.csv, further tables and report.md."""
    dump_toml(config, out / "config.toml")
    for name, frame in {"table": summary.table, **summary.tables}.items():
        atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False, float_format="%.10g"))
    verdict = {True: "**yes**", False: "**no**", None: "**mixed / not established**"}[summary.holds]
    text = [f"# Study `{study.name}` in world `{world}`", "", study.description, "", "## Paper claim", "",
            study.claim, "", f"Does its direction hold in simulation? {verdict} {summary.verdict}", "",
            summary.markdown.rstrip(), "",
            f"Part of the `scorecard` study. Rerun this part alone: `satbed study {study.name} --config "
            f"{out / 'config.toml'} --out DIR`."]
    atomic_write_text(out / "report.md", "\n".join(text) + "\n")


def effect_text(row: pd.Series | dict) -> str:
    """``value [low, high]`` in the claim's units: a signed % for lifts, the metric's units otherwise."""
    fmt = pct if row["unit"] == "lift" else (lambda x: num(x, 4, sign=True))
    if not np.isfinite(row["ci_low"]):                  # one seed, or not measured
        return fmt(row["effect"])
    return f"{fmt(row['effect'])} {interval(row['ci_low'], row['ci_high'], fmt)}"


def verdict_text(row: pd.Series | dict) -> str:
    if row["holds"] == "holds":
        return "**holds**"
    return f"{row['holds']} ({row['reason']})" if row["reason"] else row["holds"]


def scorecard_markdown(card: pd.DataFrame) -> str:
    rows = pd.DataFrame({"paper": card["paper"], "claim": card["claim"], "world": card["world"],
                         "measure": card["measure"], "claimed": np.where(card["direction"] > 0, "> 0", "< 0"),
                         "effect [95% CI]": [effect_text(r) for _, r in card.iterrows()],
                         "verdict": [verdict_text(r) for _, r in card.iterrows()]})
    return markdown_table(rows[list(COLUMNS)])


def counts(card: pd.DataFrame) -> pd.DataFrame:
    """Holds / does not hold / not testable per (paper, world)."""
    g = card.groupby(["paper", "world"], sort=False)["holds"].value_counts().unstack(fill_value=0)
    return g.reindex(columns=list(VERDICTS), fill_value=0).reset_index()


def short_label(claim: str) -> str:
    """The claim without a closing parenthesis (the ranking target, the questionnaires counted)."""
    return claim.rsplit(" (", 1)[0] if claim.endswith(")") else claim


def scorecard_plot(card: pd.DataFrame, out: Path) -> str | None:
    """A forest plot: one panel per (paper, offline / online), a row per (claim, world), the effect
    signed so that the claimed direction is to the right, green where the claim holds."""
    from simulator.figures import subplots
    from matplotlib.lines import Line2D
    card = card[np.isfinite(card["effect"].astype(float))]
    if card.empty:
        return None
    groups = list(dict.fromkeys(zip(card["paper"], card["part"])))
    sizes = [int(((card["paper"] == p) & (card["part"] == q)).sum()) for p, q in groups]
    fig, axes = subplots(len(groups), 1, figsize=(10, 0.9 * len(groups) + 0.2 * sum(sizes)),
                             gridspec_kw={"height_ratios": [s + 2 for s in sizes]}, constrained_layout=True,
                             squeeze=False)
    for ax, (paper, part) in zip(axes[:, 0], groups):
        g = card[(card["paper"] == paper) & (card["part"] == part)]
        scale = 100.0 if part == "online" else 1.0
        y = np.arange(len(g))
        for j, (_, r) in enumerate(g.iterrows()):
            color = HOLDS_COLORS[r["holds"]]
            v, lo, hi = (scale * r["direction"] * float(r[k]) for k in ("effect", "ci_low", "ci_high"))
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([min(lo, hi), max(lo, hi)], [j, j], color=color, lw=2)
            ax.plot([v], [j], "D", color=color, ms=5)
        ax.axvline(0, color="black", lw=0.8)
        low, high = ax.get_xlim()
        if high > 0:                                        # shade the claimed side
            ax.axvspan(0, high, color=HOLDS_COLORS["holds"], alpha=0.06, lw=0)
        ax.set_xlim(low, high)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{short_label(c)} · {w}" for c, w in zip(g["claim"], g["world"])], fontsize=7)
        ax.set_ylim(len(g) - 0.5, -0.5)
        ax.set_title(f"{paper}, {part}", fontsize=9, loc="left")
        ax.set_xlabel("lift in the claimed direction (%)" if part == "online"
                      else "difference in the claimed direction (metric units)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    handles = [Line2D([], [], color=c, marker="D", lw=2, label=k) for k, c in HOLDS_COLORS.items()]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower right")
    save_figure(fig, out / "scorecard.png")
    return "scorecard.png"


def summarise(config: ScorecardConfig, table: pd.DataFrame, out: Path) -> Summary:
    rows, worlds, tables = [], [], {}
    order = {}
    for name, world, sub in config.parts():
        study = get_study(name)
        sub_out = out / name / world
        sub_out.mkdir(parents=True, exist_ok=True)
        summary = study.summarise(sub, study_part(table, name, world), sub_out)
        write_part(study, sub, summary, sub_out, world)
        claims = claim_rows_of(study)(sub, summary)
        order.setdefault(name, len(order))
        rows += [{"study": name, "world": world, **r, "_order": (order[name], i, len(worlds))}
                 for i, r in enumerate(claims)]
        worlds.append({"study": f"`{name}`", "world": f"`{world}`", "users": f"{sub.world.users.n_users:,}",
                       "items": f"{sub.world.catalog.n_items:,}", "seeds": ", ".join(map(str, sub.seeds)),
                       "study verdict": {True: "yes", False: "no", None: "mixed"}[summary.holds],
                       "results": f"[{name}/{world}/report.md]({name}/{world}/report.md)"})
    card = pd.DataFrame(rows).sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    card = card[["paper", "study", "claim", "world", "part", "metric", "treatment", "baseline", "measure", "unit",
                 "direction", "effect", "ci_low", "ci_high", "n", "holds", "reason"]]
    tally = counts(card)
    tables["counts"] = tally
    fig = scorecard_plot(card, out)
    testable = card[card["holds"] != "not testable"]
    own = testable[testable["world"] != "default"]
    default = testable[testable["world"] == "default"]
    n_hold = int((testable["holds"] == "holds").sum())

    def share(frame: pd.DataFrame) -> str:
        return f"{int((frame['holds'] == 'holds').sum())} of {len(frame)}"

    md = [scorecard_markdown(card), "",
          "Effects: offline, the difference of the two rows' metric (mean over seeds, Student-t CI over the seeds, "
          "one world each); online, the relative lift vs the control (random-effects pooled over seeds), or the "
          "difference of two buckets' lifts. *holds*: the 95% CI lies wholly on the claimed side of 0 (not adjusted "
          "for the number of rows); the studies' own verdicts read the point estimates.", ""]
    if fig:
        md += [f"![scorecard]({fig})", "",
               "Each effect signed so that the claimed direction is to the right (shaded); green: holds, red: does "
               "not hold, grey: no CI (one seed).", ""]
    md += ["## Claims that hold, by paper and world", "", markdown_table(tally), "",
           "## Worlds", "", "Each (study, world) is the study's own config of the "
           f"`{config.variant}` variant with `world.scenario` set; the study's own world keys (its size) stay on top.",
           "", markdown_table(pd.DataFrame(worlds)), ""]
    verdict = (f"{share(testable)} testable (claim, world) rows hold ({len(card) - len(testable)} not testable): "
               f"{share(default)} in the default world, {share(own)} in the papers' own worlds.")
    holds = None if testable.empty else True if n_hold == len(testable) else False if n_hold == 0 else None
    headline = [f"scorecard {p}: " + ", ".join(f"{r['world']} {r['holds']}/{r['holds'] + r['does not hold']}"
                                               for _, r in g.iterrows())
                for p, g in tally.groupby("paper", sort=False)]
    return Summary(table=card, markdown="\n".join(md), verdict=verdict, holds=holds, tables=tables,
                   headline=headline)


STUDY = register_study(
    NAME, "replication scorecard: every paper claim the replications test, in the default world and the claim's own "
          "world (effect, 95% CI, holds / does not hold)",
    config=ScorecardConfig, cells=cells, summarise=summarise,
    claim="Each claim the replication studies test: SAQRec (CIKM'24) Tables 3-4, USM (2024) Tables 1-3 and Fig. 5-6, "
          "SINE (RecSys'23) Tables 3-4 and Fig. 4, EASQ (2026) online alignment; each is checked in the study's own "
          "world and in the world built on the paper's premise.")

if __name__ == "__main__":
    raise SystemExit(study_main(NAME))
