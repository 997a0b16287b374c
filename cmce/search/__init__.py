"""Vector search over L2-normalised gallery vectors: one interface, two implementations.

* :class:`VectorSearch` (:mod:`cmce.search.base`): what every index offers
  (``dim``, ``len``, ``search``, ``memory_bytes``, ``save``/``load``), answering
  with one :class:`SearchResult` of :class:`SearchHit`.
* :class:`VectorIndex` (:mod:`cmce.search.index`): every vector in RAM, exact
  (flat, with the float16 scan of :mod:`cmce.search.scan`) or HNSW
  (:mod:`cmce.search.hnsw`); grows with ``add``/``remove``.
* :class:`CompactIndex` (:mod:`cmce.search.compact`): IVF-PQ over a float16 vector
  file on disk (:mod:`cmce.search.vector_file`), re-ranked exactly; settings in
  :mod:`cmce.search.compact_config`, training in :mod:`cmce.search.compact_build`.
"""

from cmce.search.base import SearchHit, SearchResult, VectorSearch
from cmce.search.compact import CompactIndex
from cmce.search.index import VectorIndex

__all__ = ["CompactIndex", "SearchHit", "SearchResult", "VectorIndex", "VectorSearch"]
