"""``python -m satbed``: the same command line as ``satbed``."""
import sys

from satbed.cli import main

sys.exit(main())
