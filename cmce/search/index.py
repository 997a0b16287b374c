"""Cosine nearest-neighbour index over L2-normalised gallery vectors (faiss), all in RAM.

One implementation of :class:`cmce.search.base.VectorSearch` (the other is
:class:`cmce.search.compact.CompactIndex`).

Cosine similarity of unit vectors is their inner product, so the index is an
inner-product index that refuses vectors that are not unit norm (within
:data:`~cmce.search.base.UNIT_NORM_TOLERANCE`): a silently rescaled vector would
return scores that are not cosines.

Positions:
    Every vector added gets the next *position* (``0, 1, 2, ...``), its id for
    life: positions are never reused or renumbered, also not by :meth:`VectorIndex.remove`.
    ``len(index)`` counts positions (removed ones included), so a search ``mask``
    always has shape ``(len(index),)``.

Removal:
    A soft delete: the position is cleared in the ``active`` mask and excluded
    from every search through a faiss ``IDSelector``; the vector stays stored and
    (for HNSW) stays a node of the graph, which keeps the graph navigable. Nothing
    is re-embedded and no index is rebuilt; memory is not given back.

Kinds (the faiss index behind the searches, see :attr:`VectorIndex.backend`):
    * ``"flat"``: ``IndexFlatIP``, exact.
    * ``"hnsw"``: ``IndexHNSWFlat`` with the inner-product metric,
      settings and building in :mod:`cmce.search.hnsw`, ``efSearch`` passed per
      search (default :data:`~cmce.search.hnsw.HNSW_EF_SEARCH`).
    * ``"auto"``: flat while the index holds at most ``exact_threshold``
      positions; the :meth:`VectorIndex.add` call that crosses it builds an HNSW
      graph over every stored vector (this blocks that call, and every search, for
      the build: 1M vectors of dimension 128 took 15 minutes on 2 busy cores), and
      the index stays HNSW from then on (positions never go away, so it never
      switches back). The default threshold is 2M: on 2 CPU cores exact search
      over 1M 128-d vectors took 21.8 ms single-threaded while HNSW needed
      efSearch 12,288 (138 ms) to reach recall@10 0.99 on random unit vectors
      (``benchmarks/bench_search.py``), so exact search wins up to there.

Exact search of large galleries (float16 scan, exact rescoring):
    From :data:`~cmce.search.scan.SCAN_FROM` positions, exact searches of a few
    queries (below the BLAS switch) and masked searches first scan a float16 copy
    of the vectors in parallel shards and rescore the candidates in float32; the
    result is certified exact (queries it cannot certify are answered by the
    float32 scan). See :mod:`cmce.search.scan`. The float16 copy costs 2 bytes per
    dimension per entry and is rebuilt from the vectors on load, so files do not change.

Masks and HNSW:
    A graph search with a selector still walks the whole graph but keeps only
    selected entries, which works while most entries are selected. When fewer
    than :data:`~cmce.search.hnsw.HNSW_MIN_SELECTED_FRACTION` of the positions are
    selected, or when the graph returns fewer than ``k`` hits for a query although
    enough entries are selected, that query is answered exactly from the flat
    storage of the HNSW index instead. So a mask (or removals) never makes a search return fewer
    than ``min(k, selected entries)`` hits.

Threads (``search_threads``, default :data:`SEARCH_THREADS` = 1):
    Each search sets the OpenMP thread count of the *calling* thread only (an
    OpenMP setting is per thread) and restores it afterwards. One thread is the
    default because faiss splits even a single query over every core, which on
    a busy shared machine waits for descheduled threads: on 2 shared cores under
    load, one query over 100k x 128 took 2.5 ms with 1 thread and 21.5 ms with 2
    (1M: 30 ms vs 138 ms), and BLAS batches took seconds with 2 threads. On a
    dedicated multi-core machine, ``search_threads=None`` (all cores) can be faster.

Exact search speed: unmasked searches of many queries use BLAS, others faiss's
    SIMD scan (:mod:`cmce.search.flat`).

Thread safety:
    :meth:`add` and :meth:`remove` take an exclusive lock; searches, :meth:`save`
    and the properties take a shared lock, so any number of searches (flat or
    HNSW; ``efSearch`` is passed per call, nothing is mutated) run concurrently
    with each other, never with a mutation. With ``search_threads`` above 1 each
    search also runs OpenMP threads, and concurrent searches share the cores.

File format (:meth:`VectorIndex.save`): one uncompressed ``.npz`` read with
``allow_pickle=False``: ``vectors`` ``(N, D)`` float32, ``active`` ``(N,)`` bool,
the settings, and for an HNSW index ``hnsw_graph``: the faiss graph serialised
without its vectors (``IO_FLAG_SKIP_STORAGE``, about 270 bytes per entry with
``M = 32``), re-attached to ``vectors`` on load. A 1M-entry HNSW index (128-d)
is a 785 MB file that saves in 2.8 s and loads in 4.8 s; rebuilding its graph
took 933 s on 2 busy cores.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmce.cache import atomic_write
from cmce.errors import CmceError, GalleryError
from cmce.search._arrays import bool_mask, pad_to_k, positive_int, unit_matrix
from cmce.search._threads import ReadWriteLock, omp_threads
from cmce.search.base import SearchResult
from cmce.search.flat import BLAS_QUERIES_PER_THREAD, search_flat
from cmce.search.hnsw import (
    HNSW_EF_SEARCH,
    HNSW_MIN_SELECTED_FRACTION,
    add_to_hnsw,
    graph_bytes,
    graph_from_bytes,
    new_hnsw,
)
from cmce.search.scan import SCAN_FROM, Float16Scan

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.index needs faiss: pip install faiss-cpu") from exc

logger = logging.getLogger(__name__)

__all__ = ["INDEX_KINDS", "SEARCH_THREADS", "VectorIndex"]

INDEX_KINDS = ("auto", "flat", "hnsw")
"""Valid ``kind`` values of :class:`VectorIndex`."""

SEARCH_THREADS = 1
"""Default OpenMP threads of one search call (``None``: faiss's default, every core)."""

_FORMAT = "cmce.VectorIndex"
_FORMAT_VERSION = 1


class VectorIndex:
    """Cosine k-nearest-neighbour index of unit gallery vectors with stable positions.

    Keeps its own float32 copy of every vector (``vectors``) and an ``active``
    mask next to the faiss index, so removals need no re-embedding and the index
    can always be rebuilt; this costs a second copy of the vectors in memory
    (512 MB per million 128-d vectors), plus the float16 copy of large indexes
    (256 MB per million 128-d vectors, from ``scan_from`` positions).

    Args:
        dim: dimension D of the vectors.
        kind: ``"flat"`` (exact), ``"hnsw"`` (approximate graph) or ``"auto"``
            (flat up to ``exact_threshold`` positions, HNSW above); see the module
            docstring.
        exact_threshold: largest number of positions ``"auto"`` keeps flat.
        ef_search: HNSW candidate list size per search (recall vs speed).
        search_threads: OpenMP threads per search call, ``None`` for faiss's
            default (every core); see the module docstring. Not saved with the index.
        scan_from: positions from which exact searches scan a float16 copy first
            (certified exact, see the module docstring); ``None`` never. Not saved.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal((100, 8)).astype(np.float32)
        >>> x /= np.linalg.norm(x, axis=1, keepdims=True)
        >>> index = VectorIndex(8)
        >>> index.add(x)[:3]
        array([0, 1, 2])
        >>> index.search(x[:2], k=1).positions
        array([[0],
               [1]])
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "auto",
        exact_threshold: int = 2_000_000,
        ef_search: int = HNSW_EF_SEARCH,
        search_threads: int | None = SEARCH_THREADS,
        scan_from: int | None = SCAN_FROM,
    ) -> None:
        self._dim = positive_int(dim, "dim", 1, GalleryError)
        if kind not in INDEX_KINDS:
            raise GalleryError(f"kind must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")
        self._kind = kind
        self._exact_threshold = positive_int(exact_threshold, "exact_threshold", 0, GalleryError)
        self._ef_search = positive_int(ef_search, "ef_search", 1, GalleryError)
        self._search_threads = (
            None
            if search_threads is None
            else positive_int(search_threads, "search_threads", 1, GalleryError)
        )
        self._scan_from = (
            None if scan_from is None else positive_int(scan_from, "scan_from", 0, GalleryError)
        )
        self._scan: Float16Scan | None = None  # float16 copy, from scan_from positions
        self._lock = ReadWriteLock()
        # row buffers with spare capacity; rows [0, _count) are valid and never change
        self._buffer = np.empty((0, self._dim), dtype=np.float32)
        self._active = np.zeros(0, dtype=bool)
        self._count = 0
        self._num_active = 0
        self._index: faiss.Index = faiss.IndexFlatIP(self._dim)
        self._exact: faiss.IndexFlat = self._index  # flat view used for exact searches
        self._backend = "flat"
        if kind == "hnsw":
            self._use_hnsw(new_hnsw(self._dim, self._ef_search))

    # ---------------------------------------------------------------- info

    @property
    def dim(self) -> int:
        """Dimension D of the vectors."""
        return self._dim

    @property
    def kind(self) -> str:
        """The kind asked for: ``"auto"``, ``"flat"`` or ``"hnsw"``."""
        return self._kind

    @property
    def backend(self) -> str:
        """The faiss index searched now: ``"flat"`` or ``"hnsw"``."""
        return self._backend

    @property
    def scan_shards(self) -> int:
        """Float16 shards exact searches scan first (0 below ``scan_from`` positions)."""
        with self._lock.read():
            return 0 if self._scan is None else self._scan.num_shards

    @property
    def exact_threshold(self) -> int:
        """Largest number of positions ``kind="auto"`` keeps flat."""
        return self._exact_threshold

    @property
    def ef_search(self) -> int:
        """HNSW candidate list size per search."""
        return self._ef_search

    @property
    def search_threads(self) -> int | None:
        """OpenMP threads per search call (None: faiss's default)."""
        return self._search_threads

    def __len__(self) -> int:
        """Number of positions, removed ones included (the length of a search mask)."""
        return self._count

    @property
    def num_active(self) -> int:
        """Number of positions not removed."""
        return self._num_active

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 read-only view of every stored vector, removed ones included."""
        with self._lock.read():
            view = self._buffer[: self._count]
        view.flags.writeable = False
        return view

    @property
    def active(self) -> np.ndarray:
        """(N,) bool copy of the mask of positions not removed."""
        with self._lock.read():
            return self._active[: self._count].copy()

    def memory_bytes(self) -> int:
        """Bytes of the stored float32 vectors, ``N * D * 4`` (removed ones included).

        The measure a gallery reports for an in-memory index, comparable across
        galleries; the process holds more: the faiss index's own copy of the vectors
        (as much again, plus about 270 bytes per entry for an HNSW graph), the
        spare capacity of the row buffer, and from ``scan_from`` positions the
        float16 copy (``N * D * 2``).
        """
        return self._count * self._dim * 4

    def __repr__(self) -> str:
        return (
            f"VectorIndex(dim={self._dim}, kind={self._kind!r}, backend={self._backend!r}, "
            f"positions={self._count}, active={self._num_active})"
        )

    # ---------------------------------------------------------------- mutation

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Store unit vectors and give them the next positions.

        Args:
            vectors: (N, D) L2-normalised rows (float32 preferred; other real
                dtypes are converted). N may be 0.

        Returns:
            (N,) int64 positions given to the rows, consecutive.

        Raises:
            GalleryError: wrong shape or dimension, NaN/inf, or a row whose norm is
                not 1 within :data:`~cmce.search.base.UNIT_NORM_TOLERANCE`.
        """
        x = unit_matrix(vectors, self._dim, "vectors", GalleryError)
        n = x.shape[0]
        with self._lock.write():
            start = self._count
            if n == 0:
                return np.arange(start, start, dtype=np.int64)
            end = start + n
            self._reserve(end)
            self._buffer[start:end] = x  # rows beyond _count: invisible until committed
            if self._backend == "flat" and self._kind == "auto" and end > self._exact_threshold:
                logger.info(
                    "index reaches %d > exact_threshold=%d positions: building HNSW over all",
                    end,
                    self._exact_threshold,
                )
                hnsw = new_hnsw(self._dim, self._ef_search)
                add_to_hnsw(hnsw, self._buffer[:end])
                self._use_hnsw(hnsw)
            elif self._backend == "hnsw":
                add_to_hnsw(self._index, x)
            else:
                self._index.add(x)
            self._sync_scan(end)
            self._active[start:end] = True
            self._count = end
            self._num_active += n
        return np.arange(start, end, dtype=np.int64)

    def remove(self, positions: Sequence[int] | np.ndarray) -> None:
        """Exclude positions from every later search (soft delete; see module docstring).

        Removing a position twice is allowed and does nothing the second time.

        Args:
            positions: (M,) positions in ``[0, len(self))``.

        Raises:
            GalleryError: positions that are not integers or out of range.
        """
        pos = np.asarray(positions)
        if pos.size == 0:
            return
        if pos.ndim != 1 or pos.dtype == np.bool_ or not np.issubdtype(pos.dtype, np.integer):
            raise GalleryError(
                f"positions must be a 1-D sequence of ints, got shape {pos.shape} dtype {pos.dtype}"
            )
        with self._lock.write():
            out = (pos < 0) | (pos >= self._count)
            if out.any():
                raise GalleryError(
                    f"position {int(pos[out][0])} does not exist; valid positions are "
                    f"0..{self._count - 1}"
                )
            unique = np.unique(pos)
            removed = int(self._active[unique].sum())
            self._active[unique] = False
            self._num_active -= removed
        logger.debug("removed %d positions (%d already removed)", removed, unique.size - removed)

    # ---------------------------------------------------------------- search

    def search(
        self, queries: np.ndarray, k: int = 10, mask: np.ndarray | None = None
    ) -> SearchResult:
        """Find the ``k`` most cosine-similar active entries of each query.

        Args:
            queries: (Q, D) L2-normalised rows.
            k: hits per query (>= 1). Rows are padded with position -1 and score
                ``-inf`` when fewer than ``k`` entries are selected.
            mask: optional (N,) bool with ``N = len(self)``; entries where it is
                ``False`` are never returned (as removed entries never are).

        Returns:
            (Q, k) scores and positions, best first.

        Raises:
            CmceError: queries of the wrong shape or not unit norm, bad ``k`` or mask.
        """
        q = unit_matrix(queries, self._dim, "queries", CmceError)
        k = positive_int(k, "k", 1, CmceError)
        with self._lock.read():
            n = self._count
            selected = self._active[:n]
            n_selected = self._num_active
            if mask is not None:
                selected = selected & bool_mask(mask, n)
                n_selected = int(selected.sum())
            k_found = min(k, n_selected)
            if q.shape[0] == 0 or k_found == 0:
                nothing = np.empty((q.shape[0], 0), dtype=np.int64)
                return SearchResult(*pad_to_k(nothing.astype(np.float32), nothing, k))
            if n_selected == n:
                selected = None
            with omp_threads(self._search_threads):
                if self._backend == "flat":
                    scores, ids = self._search_exact(q, k_found, selected, n_selected)
                else:
                    scores, ids = self._search_hnsw(q, k_found, selected, n_selected)
        return SearchResult(*pad_to_k(scores, ids, k))

    def _search_exact(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over the selected positions (all when ``selected`` is None)."""
        if self._scan is not None:
            threads = max(1, faiss.omp_get_max_threads())  # already the search's count
            few_queries = len(q) < BLAS_QUERIES_PER_THREAD * threads
            sparse = selected is not None and n_selected * 4 <= selected.size
            if (selected is None and few_queries) or (selected is not None and not sparse):
                return self._search_scan(q, k, selected, n_selected)
        return self._search_float32(q, k, selected, n_selected)

    def _search_float32(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by faiss's float32 scan or BLAS (:func:`cmce.search.flat.search_flat`)."""
        return search_flat(self._exact, q, k, selected, n_selected)

    def _search_scan(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k``: float16 candidates rescored in float32, certified (module docstring)."""
        assert self._scan is not None
        scores, ids, uncertain = self._scan.search(q, k, selected, n_selected, self._buffer)
        if uncertain.any():
            logger.debug("float16 scan could not certify %d of %d queries", uncertain.sum(), len(q))
            scores[uncertain], ids[uncertain] = self._search_float32(
                q[uncertain], k, selected, n_selected
            )
        return scores, ids

    def _search_hnsw(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """HNSW top-``k``, exact for sparse selections and for queries the graph under-fills."""
        if selected is not None and n_selected < HNSW_MIN_SELECTED_FRACTION * selected.size:
            return self._search_exact(q, k, selected, n_selected)
        params = faiss.SearchParametersHNSW(efSearch=max(self._ef_search, k))
        if selected is not None:
            params.sel = faiss.IDSelectorBitmap(np.packbits(selected, bitorder="little"))
        scores, ids = self._index.search(q, k, params=params)
        short = (ids < 0).any(axis=1)
        if short.any():
            logger.debug("HNSW under-filled %d of %d queries: exact search", short.sum(), len(q))
            scores[short], ids[short] = self._search_exact(q[short], k, selected, n_selected)
        return scores, ids

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to one ``.npz`` file, atomically (temp file + rename).

        Args:
            path: file to write (``.npz`` suffix recommended; written as given).
                Its folder is created if needed.

        Returns:
            the file written.
        """
        path = Path(path)
        with self._lock.read():
            arrays: dict[str, np.ndarray] = {
                "format": np.array(_FORMAT),
                "format_version": np.array(_FORMAT_VERSION, dtype=np.int64),
                "dim": np.array(self._dim, dtype=np.int64),
                "kind": np.array(self._kind),
                "exact_threshold": np.array(self._exact_threshold, dtype=np.int64),
                "ef_search": np.array(self._ef_search, dtype=np.int64),
                "vectors": self._buffer[: self._count],  # immutable rows
                "active": self._active[: self._count].copy(),
            }
            if self._backend == "hnsw":
                graph = graph_bytes(self._index)
                arrays["hnsw_graph"] = graph  # the graph without its vectors
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        logger.info("saved %r to %s", self, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        search_threads: int | None = SEARCH_THREADS,
        scan_from: int | None = SCAN_FROM,
    ) -> VectorIndex:
        """Read an index written by :meth:`save`.

        The HNSW graph stored in the file is reused (no rebuild); an index whose
        file lacks the graph it needs is rebuilt from the vectors.

        Args:
            path: the ``.npz`` file.
            search_threads, scan_from: as in :class:`VectorIndex` (properties of the
                machine, not of the file).

        Raises:
            GalleryError: missing file, not an index file, or inconsistent content.
        """
        path = Path(path)
        if search_threads is not None:
            positive_int(search_threads, "search_threads", 1, GalleryError)
        if not path.is_file():
            raise GalleryError(f"no index file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                content = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise GalleryError(f"{path} is not a readable cmce index .npz file: {exc}") from exc
        required = (
            "format", "format_version", "dim", "kind", "exact_threshold", "ef_search",
            "vectors", "active",
        )
        missing = [name for name in required if name not in content]
        if missing or str(content["format"]) != _FORMAT:
            what = ", ".join(missing) or "format tag"
            raise GalleryError(f"{path} is not a cmce VectorIndex file (missing {what})")
        if int(content["format_version"]) != _FORMAT_VERSION:
            raise GalleryError(
                f"{path} has index format version {int(content['format_version'])}; "
                f"this cmce reads version {_FORMAT_VERSION}"
            )
        try:
            index = cls(
                int(content["dim"]),
                kind=str(content["kind"]),
                exact_threshold=int(content["exact_threshold"]),
                ef_search=int(content["ef_search"]),
                search_threads=search_threads,
                scan_from=scan_from,
            )
        except (GalleryError, TypeError, ValueError) as exc:
            raise GalleryError(f"{path} holds invalid index settings: {exc}") from exc
        vectors, active = content["vectors"], content["active"]
        if (
            vectors.dtype != np.float32
            or active.dtype != np.bool_
            or active.shape != vectors.shape[:1]
        ):
            raise GalleryError(
                f"{path} is corrupt: vectors {vectors.dtype} {vectors.shape} and active "
                f"{active.dtype} {active.shape} do not match"
            )
        vectors = unit_matrix(vectors, index.dim, f"{path}: stored vectors", GalleryError)
        start = time.perf_counter()
        index._restore(vectors, active, content.get("hnsw_graph"), path)
        logger.info("loaded %r from %s in %.2f s", index, path, time.perf_counter() - start)
        return index

    def _restore(
        self, vectors: np.ndarray, active: np.ndarray, graph: np.ndarray | None, path: Path
    ) -> None:
        """Fill a new, empty index with saved content (called by :meth:`load` only)."""
        n = vectors.shape[0]
        want_hnsw = self._kind == "hnsw" or (self._kind == "auto" and n > self._exact_threshold)
        if want_hnsw and graph is not None:
            self._use_hnsw(graph_from_bytes(graph, vectors, path))
        elif want_hnsw:
            logger.warning("%s has no HNSW graph: rebuilding it over %d vectors", path, n)
            hnsw = new_hnsw(self._dim, self._ef_search)
            add_to_hnsw(hnsw, vectors)
            self._use_hnsw(hnsw)
        else:
            self._index.add(vectors)
        self._buffer = vectors
        self._sync_scan(n)
        self._active = np.array(active, dtype=bool)
        self._count = n
        self._num_active = int(self._active.sum())

    # ---------------------------------------------------------------- internals

    def _sync_scan(self, end: int) -> None:
        """Bring the float16 copy up to ``end`` rows once ``end`` reaches ``scan_from``."""
        if self._scan_from is None or end < max(1, self._scan_from):
            return
        if self._scan is None:
            self._scan = Float16Scan(self._dim)
        start = self._scan.count
        if end > start:
            self._scan.add(self._buffer[start:end])

    def _reserve(self, size: int) -> None:
        """Grow the row buffers to hold at least ``size`` rows (amortised doubling)."""
        capacity = self._buffer.shape[0]
        if size <= capacity:
            return
        capacity = max(size, 2 * capacity, 1024)
        buffer = np.empty((capacity, self._dim), dtype=np.float32)
        buffer[: self._count] = self._buffer[: self._count]
        active = np.zeros(capacity, dtype=bool)
        active[: self._count] = self._active[: self._count]
        self._buffer, self._active = buffer, active

    def _use_hnsw(self, hnsw: faiss.IndexHNSWFlat) -> None:
        self._exact = faiss.downcast_index(hnsw.storage)  # owned by hnsw, lives as long
        self._index = hnsw
        self._backend = "hnsw"
