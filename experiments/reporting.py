"""Formatting and generic plots of every report: the A/B report and the studies' summaries.

Cells read the same everywhere (``n/a`` for an undefined number, a blank for a missing p-value);
figures take the one palette of :mod:`simulator.figures` and are built without pyplot.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.figures import COLORS, save_figure, subplots


# ----------------------------------------------------------------------------- formatting
def pct(x: float, digits: int = 2, sign: bool = True) -> str:
    """``x`` as a percentage (0.0123 -> ``+1.23%``); ``n/a`` when undefined."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100 * x:+.{digits}f}%" if sign else f"{100 * x:.{digits}f}%"


def num(x: float, digits: int = 4, sign: bool = False) -> str:
    """``x`` with ``digits`` decimals; ``n/a`` when undefined."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def pval(p: float) -> str:
    """A p-value to three significant digits; blank when missing or undefined."""
    return "" if pd.isna(p) or not np.isfinite(p) else f"{p:.3g}"


def interval(low: float, high: float, fmt: Callable[[float], str] = num) -> str:
    """``[low, high]`` with each end formatted by ``fmt``; ``n/a`` when either end is undefined."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return f"[{fmt(low)}, {fmt(high)}]"


def markdown_table(frame: pd.DataFrame, formats: Mapping[str, Callable[[object], str]] | None = None) -> str:
    """A GitHub-markdown table of ``frame`` (its columns as the header, no index).

    Args:
        formats: optional ``{column: value -> str}``; other cells use ``str`` (floats ``.4g``).
    """
    formats = dict(formats or {})

    def cell(col: str, value: object) -> str:
        if col in formats:
            text = formats[col](value)
        elif isinstance(value, float):
            text = "n/a" if not np.isfinite(value) else f"{value:.4g}"
        else:
            text = str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(cols, row)) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def band_plot(ax, x: Sequence, mean: Sequence[float], low: Sequence[float], high: Sequence[float], *,
              label: str, color: str, marker: str = "o", linestyle: str = "-") -> None:
    """A line with a shaded interval band; ``x`` may be categorical (strings are placed 0..n-1)."""
    x = list(x)
    pos = np.arange(len(x)) if any(isinstance(v, str) for v in x) else np.asarray(x, dtype=float)
    mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
    ax.plot(pos, mean, marker=marker, linestyle=linestyle, color=color, label=label, ms=4)
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any():
        ax.fill_between(pos[ok], low[ok], high[ok], color=color, alpha=0.15, linewidth=0)
    if any(isinstance(v, str) for v in x):
        ax.set_xticks(pos)
        ax.set_xticklabels(x, rotation=20, fontsize=8)


def forest_plot(table: pd.DataFrame, path: str | Path, *, panels: Sequence[str], rows: Sequence[str],
                panel_col: str, row_col: str, value: str, low: str, high: str,
                titles: Mapping[str, str] | None = None, points: pd.DataFrame | None = None,
                point_value: str | None = None, xlabel: str = "lift vs control (%)",
                scale: float = 100.0, highlight: Mapping[str, str] | None = None) -> Path:
    """Small multiples, one panel per ``panels`` entry: a row per ``rows`` entry with its
    estimate and interval (and optionally the per-replication ``points`` as faint dots).

    Args:
        table: one row per (panel, row) with columns ``value``, ``low``, ``high``.
        points: optional long table with ``panel_col``, ``row_col`` and ``point_value``.
        scale: multiplier of the plotted values (100 for percentages).
        highlight: ``{row: suffix}`` appended to a row's tick label (e.g. " (oracle)").
    """
    titles, highlight = dict(titles or {}), dict(highlight or {})
    cols = min(3, max(1, len(panels)))
    nrows = int(np.ceil(len(panels) / cols))
    fig, axes = subplots(nrows, cols, figsize=(4.6 * cols, 0.45 * len(rows) * nrows + 1.4 * nrows),
                         constrained_layout=True, squeeze=False)
    y = np.arange(len(rows))
    for ax, panel in zip(axes.ravel(), panels):
        sub = table[table[panel_col] == panel].set_index(row_col).reindex(list(rows))
        v = scale * sub[value].to_numpy(dtype=float)
        lo = scale * sub[low].to_numpy(dtype=float)
        hi = scale * sub[high].to_numpy(dtype=float)
        for j in range(len(rows)):
            color = COLORS[j % len(COLORS)]
            if np.isfinite(lo[j]) and np.isfinite(hi[j]):
                ax.plot([lo[j], hi[j]], [y[j], y[j]], color=color, lw=2)
            if np.isfinite(v[j]):
                ax.plot([v[j]], [y[j]], "D", color=color, ms=6)
        if points is not None and point_value is not None:
            pts = points[points[panel_col] == panel]
            for j, r in enumerate(rows):
                vals = scale * pts.loc[pts[row_col] == r, point_value].to_numpy(dtype=float)
                ax.plot(vals, np.full(len(vals), y[j] + 0.22), ".", color="#999999", ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r}{highlight.get(r, '')}" for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(titles.get(panel, panel), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    return save_figure(fig, path)
