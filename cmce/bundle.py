"""Deprecated import path, kept for one release: use ``cmce.method.bundle`` (reading and
writing bundles) and ``cmce.method.bundle_model`` (the bundle in memory)."""

import warnings

from cmce.method.bundle import *  # noqa: F403
from cmce.method.bundle import __all__ as _files
from cmce.method.bundle_model import *  # noqa: F403
from cmce.method.bundle_model import __all__ as _model

__all__ = [*_files, *_model]

warnings.warn("cmce.bundle moved to cmce.method.bundle and cmce.method.bundle_model; the old path goes in the "
              "next release", DeprecationWarning, stacklevel=2)
