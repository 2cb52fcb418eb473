"""The study engine: the study registry and command line (base), cells and executors (sweep), shared
reporting, and the offline protocol. The study modules are the other modules of ``studies``."""
