"""satbed: an offline A/B testbed for questionnaire-aware short-video recommendation.

The command line is :mod:`satbed.cli` (``satbed`` or ``python -m satbed``); the packages below it are
``estimators`` <- ``simulator`` <- ``policies`` <- ``experiments`` <- ``studies`` (see docs/architecture.md).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("satbed")
except PackageNotFoundError:      # a source tree that was never installed
    __version__ = "0+unknown"
