"""Galleries: in-memory (``memory``) and archive (``archive``) galleries, and upgrades.

``from cmce.gallery import FaceEngine, Gallery`` keeps working: this package re-exports
the in-memory gallery's public names.
"""

from cmce.gallery.memory import *  # noqa: F403
from cmce.gallery.memory import __all__, derive  # noqa: F401
