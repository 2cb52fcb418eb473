"""Calibration: public figures a world should reproduce, and fitting a world's knobs to them.

Modules, one concept each:
    targets     a targets table (``targets.toml``: the public short-video figures) and the comparison
    measure     every figure a table may name, computed from a run's logs, and its interval over seeds
    fit         ``calibrate``: the simulated method of moments with common random numbers
    report      the outputs of a calibration: fitted config, target-vs-achieved table, plot

``satbed calibrate TARGETS.toml`` runs it; ``docs/calibration.md`` is the reference.
"""
