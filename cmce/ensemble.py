"""Deprecated import path, kept for one release: use ``cmce.method.ensemble``."""

import warnings

from cmce.method.ensemble import *  # noqa: F403
from cmce.method.ensemble import __all__  # noqa: F401

warnings.warn("cmce.ensemble moved to cmce.method.ensemble; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
