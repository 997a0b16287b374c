"""HNSW graphs of :class:`cmce.search.index.VectorIndex`: settings, building, graph files.

An HNSW index (faiss ``IndexHNSWFlat``, inner-product metric) is a graph over the
stored vectors; ``M = HNSW_M`` neighbours per node, ``efConstruction =
HNSW_EF_CONSTRUCTION``, and ``efSearch`` passed per search (default
:data:`HNSW_EF_SEARCH`). How :class:`~cmce.search.index.VectorIndex` chooses it and
searches it (masks, the exact fallback) is in that module's docstring.

A saved graph (:func:`graph_bytes`) leaves out its vectors (``IO_FLAG_SKIP_STORAGE``,
about 270 bytes per entry with ``M = 32``); :func:`graph_from_bytes` re-attaches the
vectors on load. Rebuilding a 1M-entry graph took 933 s on 2 busy cores, loading
its saved graph 4.8 s.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.hnsw needs faiss: pip install faiss-cpu") from exc

logger = logging.getLogger(__name__)

__all__ = [
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "HNSW_MIN_SELECTED_FRACTION",
    "add_to_hnsw",
    "graph_bytes",
    "graph_from_bytes",
    "new_hnsw",
]

HNSW_M = 32
"""Neighbours per node of the HNSW graph (64 on the bottom layer)."""

HNSW_EF_CONSTRUCTION = 80
"""Candidate list size while building the HNSW graph."""

HNSW_EF_SEARCH = 12_288
"""Default candidate list size of an HNSW search (raised to ``k`` when smaller).

Chosen for recall@10 >= 0.99 of exact search at 1M random unit vectors in 128-d,
the hardest case (no cluster structure). Measured with M=32, efConstruction=80,
single queries (200 at 100k; 100 at 1M, 50 from efSearch 8192, 200 for 12288),
one thread, on 2 busy shared cores (load ~5):

=====  ========  =========  ======  ==========================
N      efSearch  recall@10  p50     exact flat p50, 1 thread
=====  ========  =========  ======  ==========================
100k   512       0.93       2.4 ms  2.5-3.8 ms
100k   1024      0.989      4.8 ms
100k   1536      0.999      7.1 ms
1M     1024      0.69       11 ms   22-30 ms
1M     4096      0.95       41 ms
1M     8192      0.986      79 ms
1M     12288     0.998      138 ms
=====  ========  =========  ======  ==========================

So on random vectors HNSW at this recall is *slower* than exact search (building
the 1M graph also took 15 minutes). Real face embeddings are far from random
(identities form tight clusters) and reach a given recall with a much smaller
``efSearch``: measure on your own data and pass ``ef_search`` to
:class:`~cmce.search.index.VectorIndex`.
"""

HNSW_MIN_SELECTED_FRACTION = 0.5
"""Below this fraction of selected positions an HNSW index searches exactly."""

_ADD_CHUNK = 100_000  # vectors added per step of a build (progress is logged per step)


def new_hnsw(dim: int, ef_search: int) -> faiss.IndexHNSWFlat:
    """An empty inner-product HNSW index with the settings above.

    Args:
        dim: dimension D of the vectors.
        ef_search: its default ``efSearch`` (searches pass their own).
    """
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.hnsw.efSearch = ef_search
    return hnsw


def add_to_hnsw(hnsw: faiss.IndexHNSWFlat, vectors: np.ndarray) -> None:
    """Add (N, D) float32 unit ``vectors`` to an HNSW graph, logging progress of long builds."""
    start = time.perf_counter()
    for i in range(0, vectors.shape[0], _ADD_CHUNK):
        hnsw.add(vectors[i : i + _ADD_CHUNK])
        if vectors.shape[0] > _ADD_CHUNK:
            logger.info(
                "HNSW: %d / %d added (%.0f s)",
                min(i + _ADD_CHUNK, vectors.shape[0]),
                vectors.shape[0],
                time.perf_counter() - start,
            )


def graph_bytes(hnsw: faiss.IndexHNSWFlat) -> np.ndarray:
    """The graph of ``hnsw`` serialised without its vectors, as a uint8 array."""
    return faiss.serialize_index(hnsw, faiss.IO_FLAG_SKIP_STORAGE)


def graph_from_bytes(graph: np.ndarray, vectors: np.ndarray, path: Path) -> faiss.IndexHNSWFlat:
    """An HNSW index from a graph saved by :func:`graph_bytes` and the (N, D) vectors it was built on.

    Args:
        graph: the serialised graph (uint8 array).
        vectors: (N, D) float32 unit rows, in position order.
        path: the file the graph came from, for error messages.

    Raises:
        GalleryError: a corrupt graph, or one that does not fit ``vectors``.
    """
    n, dim = vectors.shape
    try:
        hnsw = faiss.deserialize_index(np.ascontiguousarray(graph, dtype=np.uint8), faiss.IO_FLAG_SKIP_STORAGE)
    except RuntimeError as exc:
        raise GalleryError(f"{path} holds a corrupt HNSW graph: {exc}") from exc
    if (
        not isinstance(hnsw, faiss.IndexHNSWFlat)
        or hnsw.d != dim
        or hnsw.ntotal != n
        or hnsw.metric_type != faiss.METRIC_INNER_PRODUCT
    ):
        raise GalleryError(f"{path} holds an HNSW graph that does not fit its {n} vectors of dimension {dim}")
    storage = faiss.IndexFlatIP(dim)
    storage.add(vectors)
    hnsw.storage = storage
    storage.this.disown()  # the graph index owns and frees its storage
    hnsw.own_fields = True
    return hnsw
