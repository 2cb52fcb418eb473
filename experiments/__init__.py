"""Runs on top of the simulator and the policies: the A/B runner, its metrics, report and plots, and
off-policy data built from its runs. Nothing below (``simulator``, ``policies``, ``estimators``)
imports this package."""
