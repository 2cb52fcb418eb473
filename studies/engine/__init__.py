"""The study engine: the study registry and command line (base), cells and executors (sweep), and the
offline protocol. The study modules are the other modules of ``studies``; their reports are formatted
with :mod:`experiments.reporting` and pooled with :mod:`estimators.pooling`."""
