"""Deprecated import path, kept for one release: use ``cmce.method.quality``."""

import warnings

from cmce.method.quality import *  # noqa: F403
from cmce.method.quality import __all__  # noqa: F401

warnings.warn("cmce.quality moved to cmce.method.quality; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)
