"""Exact float32 search of a faiss flat index: SIMD scan, BLAS or an id selector.

Used by :class:`cmce.search.index.VectorIndex` for its exact searches (and for the
queries its float16 scan or HNSW graph cannot answer).

Exact search speed (``distance_compute_blas_threshold``):
    faiss answers a flat search either with a SIMD scan (parallel over queries)
    or with BLAS matrix products. faiss 1.15 takes BLAS only from
    ``n_queries * dim >= 128000`` (1000 queries at dimension 128; older faiss
    switched at 20 queries), but with one thread BLAS wins from about 6 queries
    (100k x 128: 8 queries 15 ms with BLAS vs 23 ms scanning, 32 queries 24 ms vs
    91 ms), while single queries are 4x faster scanning. Unmasked exact searches
    therefore use BLAS from ``BLAS_QUERIES_PER_THREAD * threads`` queries; the
    process-wide faiss setting is changed only while such searches run and
    restored when the last one ends (:func:`blas_threshold`). Masked searches
    always scan (faiss does not combine selectors with BLAS).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.flat needs faiss: pip install faiss-cpu") from exc

__all__ = ["BLAS_QUERIES_PER_THREAD", "blas_threshold", "search_flat"]

BLAS_QUERIES_PER_THREAD = 8
"""Unmasked exact searches of at least this many queries per OpenMP thread use BLAS."""

# faiss's BLAS switch is one process-wide integer; searches that want another value
# share it: the first sets it, the last restores what was there before.
_BLAS_STATE_LOCK = threading.Lock()
_blas_users = 0
_blas_saved = 0


@contextmanager
def blas_threshold(value: int) -> Iterator[None]:
    """Set ``faiss.cvar.distance_compute_blas_threshold`` while the block runs.

    Concurrent blocks (other threads) share one setting: the first one in sets
    ``value``, the last one out restores the value found before the first.
    """
    global _blas_users, _blas_saved
    with _BLAS_STATE_LOCK:
        if _blas_users == 0:
            _blas_saved = faiss.cvar.distance_compute_blas_threshold
            faiss.cvar.distance_compute_blas_threshold = int(value)
        _blas_users += 1
    try:
        yield
    finally:
        with _BLAS_STATE_LOCK:
            _blas_users -= 1
            if _blas_users == 0:
                faiss.cvar.distance_compute_blas_threshold = _blas_saved


def search_flat(
    exact: faiss.IndexFlat, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of a flat inner-product index by faiss's float32 scan or BLAS.

    Args:
        exact: the flat index (N vectors).
        q: (Q, D) float32 unit queries.
        k: hits per query.
        selected: (N,) bool mask of the rows searched, or None for all (BLAS from
            ``BLAS_QUERIES_PER_THREAD`` queries per OpenMP thread of the caller).
        n_selected: ``selected.sum()`` (N when ``selected`` is None); a quarter or
            less of N is searched through a list of ids, more through a bitmap.

    Returns:
        (Q, k) float32 scores and int64 ids, faiss's -1 where fewer than ``k`` rows.
    """
    if selected is None:
        threads = max(1, faiss.omp_get_max_threads())  # already the search's count
        with blas_threshold(BLAS_QUERIES_PER_THREAD * threads * q.shape[1]):
            return exact.search(q, k)
    if n_selected * 4 <= selected.size:
        # few selected: faiss scores only the listed ids
        selector = faiss.IDSelectorArray(np.flatnonzero(selected).astype(np.int64))
    else:
        selector = faiss.IDSelectorBitmap(np.packbits(selected, bitorder="little"))
    return exact.search(q, k, params=faiss.SearchParameters(sel=selector))
