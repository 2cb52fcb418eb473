"""The outputs of a calibration, or of a check of a world against a targets table.

A calibration's directory::

    fitted.toml        the base world with the fitted knobs, every field (satbed simulate --config fitted.toml)
    knobs.csv          each knob: start, fitted value, step and bounds
    evaluations.csv    every simulated knob setting in order: the knobs, the objective, the fitted figures
    calibration.csv    target vs achieved at the fitted knobs on fresh seeds, with Student-t intervals
    calibration.png    each row's miss (error in tolerances) with its interval, start and fitted
    report.md          what the command printed
    status.json        {"state": "complete"} once everything above is written

A check's directory has ``config.toml`` (the world checked) in place of the first three. Every file
is written atomically (temporary path, then rename).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.atomic import atomic_path, atomic_write_text
from simulator.calibration.fit import Calibration
from simulator.config import SimConfig, dump_toml
from simulator.figures import COLORS, save_figure, subplots
from simulator.simulate import write_status


def _g(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4g}"


def format_table(table: pd.DataFrame) -> str:
    """The target-vs-achieved table as markdown: target and tolerance, achieved with its interval, the
    miss in tolerances, and whether it is within (a row that needs a longer run is left blank)."""
    lines = ["| figure | target | tolerance | achieved [95% CI] | miss | within |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        tol = f"±{100 * r['tolerance']:g}%" if r["tolerance_kind"] == "relative" else f"±{r['tolerance']:g}"
        ci = f" [{_g(r['ci_low'])}, {_g(r['ci_high'])}]" if np.isfinite(r["ci_low"]) else ""
        if not r["comparable"]:
            lines.append(f"| {r['figure']} | {_g(r['target'])} | {tol} | | | run too short |")
            continue
        lines.append(f"| {r['figure']} | {_g(r['target'])} | {tol} | {_g(r['measured'])}{ci} | "
                     f"{r['miss']:+.1f} | {'yes' if r['within'] else '**no**'} |")
    return "\n".join(lines)


def plot_table(table: pd.DataFrame, path: str | Path, *, title: str,
               start: Mapping[str, float] | None = None) -> Path:
    """One row per figure: its miss (error in tolerances, symmetric-log scale) with its interval over
    seeds; the band is the tolerance. ``start``: each figure's miss before the fit (hollow marks)."""
    shown = table[table["comparable"]].reset_index(drop=True)
    y = np.arange(len(shown))[::-1]
    fig, ax = subplots(figsize=(8, 0.38 * len(shown) + 2.2), constrained_layout=True)
    ax.axvspan(-1, 1, color="#dddddd", label="within tolerance")
    ax.axvline(0, color="#666666", lw=0.8)
    low, high = shown["miss_ci_low"].to_numpy(), shown["miss_ci_high"].to_numpy()
    miss = shown["miss"].to_numpy()
    xerr = np.vstack([np.where(np.isfinite(low), miss - low, 0), np.where(np.isfinite(high), high - miss, 0)])
    ax.errorbar(miss, y, xerr=xerr, fmt="o", color=COLORS[0], capsize=3,
                label="fitted (95% CI over seeds)" if start is not None else "measured (95% CI over seeds)")
    marks = [(start[f], yi) for f, yi in zip(shown["figure"], y) if f in start] if start is not None else []
    if marks:
        ax.plot(*zip(*marks), "o", mfc="none", color=COLORS[1], label="start (on the fit's seeds)")
    ax.set_xscale("symlog", linthresh=1.0)
    reach = np.nanmax(np.abs(np.r_[miss, low, high, [m for m, _ in marks], 1.0]))
    ticks = [t for t in (1, 3, 10, 30, 100, 300, 1000) if t <= 1.5 * reach]
    ax.set_xticks([-t for t in ticks[::-1]] + [0] + ticks, [f"{-t:g}" for t in ticks[::-1]] + ["0"] + [f"+{t:g}" for t in ticks])
    ax.set_yticks(y, [f"{f} ({_g(t)})" for f, t in zip(shown["figure"], shown["target"])])
    ax.set_xlabel("miss: the error in tolerances (symmetric log scale)")
    ax.set_title(title)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return save_figure(fig, path)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_check(table: pd.DataFrame, config: SimConfig, out: Path, *, header: str) -> str:
    """Write a check's directory (see the module's documentation); returns the report's text."""
    dump_toml(config, out / "config.toml")
    _write_csv(table, out / "calibration.csv")
    plot_table(table, out / "calibration.png", title="World vs targets")
    text = f"{header}\n\n{format_table(table)}\n\n![misses](calibration.png)\n"
    atomic_write_text(out / "report.md", text)
    write_status(out, "complete")
    return text


def write_calibration(cal: Calibration, out: Path, *, header: str) -> str:
    """Write a calibration's directory (see the module's documentation); returns the report's text."""
    dump_toml(cal.config, out / "fitted.toml")
    knobs = pd.DataFrame([{"knob": k.name, "start": k.start, "fitted": cal.fitted[k.name], "step": k.step,
                           "low": k.low, "high": k.high} for k in cal.knobs])
    _write_csv(knobs, out / "knobs.csv")
    _write_csv(cal.evaluations, out / "evaluations.csv")
    table = cal.table
    _write_csv(table, out / "calibration.csv")
    first = cal.evaluations.iloc[0]
    start = {t.name: t.miss(first[t.name]) for t in cal.rows.rows}
    plot_table(table, out / "calibration.png", title="Fitted world vs targets", start=start)
    knob_lines = "\n".join(f"- `{k.name}`: {k.start:g} → {cal.fitted[k.name]:g}" for k in cal.knobs)
    text = (f"{header}\n\n{knob_lines}\n\nObjective (mean squared miss over the fitted rows): "
            f"{first['objective']:.4g} at the start, {cal.objective:.4g} fitted, after {len(cal.evaluations)} "
            f"simulated settings ({cal.message}).\n\nAt the fitted knobs, on fresh seeds "
            f"{', '.join(map(str, cal.report_seeds))}:\n\n{format_table(table)}\n\n![misses](calibration.png)\n")
    atomic_write_text(out / "report.md", text)
    write_status(out, "complete")
    return text
