"""Figures without pyplot, and the one palette of every satbed plot.

:func:`subplots` builds a :class:`matplotlib.figure.Figure` directly, so importing satbed chooses no
backend (``matplotlib.use("Agg")`` at import broke Jupyter's inline plots) and no figure is left in
pyplot's global registry. :func:`save_figure` writes a PNG atomically (temporary path, then rename).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from simulator.atomic import atomic_path

COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
          "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6")
"""The palette (ColorBrewer Dark2, then Paired), in the order buckets and series take it."""


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             constrained_layout: bool = False, **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` without pyplot: a new Figure and its axes (``squeeze``, ``sharey``... as there)."""
    fig = Figure(figsize=figsize, layout="constrained" if constrained_layout else None)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
