"""Deprecated import path, kept for one release: use ``cmce.method.bundle``."""

import warnings

from cmce.method.bundle import *  # noqa: F403
from cmce.method.bundle import __all__  # noqa: F401

warnings.warn("cmce.bundle moved to cmce.method.bundle; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
