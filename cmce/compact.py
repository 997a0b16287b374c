"""Deprecated import path, kept for one release: use ``cmce.search.compact``."""

import warnings

from cmce.search.compact import *  # noqa: F403
from cmce.search.compact import __all__  # noqa: F401

warnings.warn("cmce.compact moved to cmce.search.compact; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
