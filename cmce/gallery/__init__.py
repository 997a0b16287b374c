"""Galleries: in-memory (``memory``) and archive (``archive``, built by ``archive_build``), and upgrades.

Every gallery is searched through ``searchable.SearchableGallery`` and answers with the
results of ``results``; the in-memory gallery's jobs are ``ingest``, ``view_search`` and
``persistence``. ``from cmce.gallery import FaceEngine, Gallery`` keeps working.
"""

from cmce.gallery.memory import Gallery
from cmce.method.engine import FaceEngine

__all__ = ["FaceEngine", "Gallery"]
