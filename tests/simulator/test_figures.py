"""Plots use the Figure API: importing satbed chooses no matplotlib backend and touches no pyplot state."""
import subprocess
import sys

import numpy as np

from simulator.figures import COLORS, save_figure, subplots


def test_importing_the_plotting_modules_leaves_pyplot_and_the_backend_alone():
    code = ("import matplotlib; before = matplotlib.get_backend(); "
            "import simulator.plots, experiments.report, experiments.reporting, studies.scorecard; "
            "import sys; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'; "
            "assert matplotlib.get_backend() == before, matplotlib.get_backend()")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"MPLBACKEND": "svg", "PATH": ""})
    assert run.returncode == 0, run.stderr


def test_a_figure_is_written_as_a_png_with_no_temporary_file_left(tmp_path):
    fig, axes = subplots(1, 2, figsize=(4, 2), squeeze=False, constrained_layout=True)
    assert axes.shape == (1, 2)
    axes[0, 0].plot(np.arange(3), color=COLORS[0])
    path = save_figure(fig, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    assert len(set(COLORS)) == len(COLORS)
