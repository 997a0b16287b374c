"""Cosine nearest-neighbour index over L2-normalised gallery vectors (faiss).

Cosine similarity of unit vectors is their inner product, so the index is an
inner-product index that refuses vectors that are not unit norm (within
:data:`UNIT_NORM_TOLERANCE`): a silently rescaled vector would return scores that
are not cosines.

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
      ``M = HNSW_M``, ``efConstruction = HNSW_EF_CONSTRUCTION``, ``efSearch``
      passed per search (default :data:`HNSW_EF_SEARCH`).
    * ``"auto"``: flat while the index holds at most ``exact_threshold``
      positions; the :meth:`VectorIndex.add` call that crosses it builds an HNSW
      graph over every stored vector (this blocks that call, and every search, for
      the build: 1M vectors of dimension 128 took 15 minutes on 2 busy cores), and
      the index stays HNSW from then on (positions never go away, so it never
      switches back). The default threshold is 2M: on 2 CPU cores exact search
      over 1M 128-d vectors took 21.8 ms single-threaded while HNSW needed
      efSearch 12,288 (138 ms) to reach recall@10 0.99 on random unit vectors
      (``scripts/bench_search.py``), so exact search wins up to there.

Exact search of large galleries (float16 scan, exact rescoring):
    From :data:`SCAN_FROM` positions, exact searches of a few queries (below the
    BLAS switch) and masked searches first scan a float16 copy of the vectors
    (faiss ``IndexScalarQuantizer`` ``QT_fp16``, half the bytes of float32, and a
    flat scan over a million vectors is bound by memory bandwidth), split in shards
    of :data:`SCAN_SHARD_ROWS` rows scanned in parallel by :data:`SCAN_WORKERS`
    threads (one OpenMP thread each). Each shard returns ``k + SCAN_MARGIN``
    candidates, which are rescored in float32 from the stored vectors. The result
    is *certified exact*, not approximate: a float16 score is within
    :data:`SCAN_ERROR` of the float32 one (``|q . (x - fp16(x))| <= 2^-11 * sum |q_i x_i|
    <= 2^-11`` for unit vectors), so an entry a shard did not return scores at most
    its last candidate's float16 score plus ``SCAN_ERROR``; when that bound reaches
    the k-th rescored score, the query is answered by the float32 scan instead.
    A mask that keeps most rows (a rejection mask, removals) is applied after the
    scan, which then returns proportionally more rows (a selector would slow the
    SIMD scan down); sparser masks go into the scan as a bitmap.
    On 2 shared CPU cores, one query over 1M x 128: float32 scan 22-24 ms, float16
    scan 11 ms on one thread and 7.7 ms on two (``scripts/bench_search.py``).
    The float16 copy costs 2 bytes per dimension per entry (256 MB per million
    128-d vectors) and is rebuilt from the vectors on load, so files do not change.

Masks and HNSW:
    A graph search with a selector still walks the whole graph but keeps only
    selected entries, which works while most entries are selected. When fewer
    than :data:`HNSW_MIN_SELECTED_FRACTION` of the positions are selected, or when
    the graph returns fewer than ``k`` hits for a query although enough entries
    are selected, that query is answered exactly from the flat storage of the
    HNSW index instead. So a mask (or removals) never makes a search return fewer
    than ``min(k, selected entries)`` hits.

Threads (``search_threads``, default :data:`SEARCH_THREADS` = 1):
    Each search sets the OpenMP thread count of the *calling* thread only (an
    OpenMP setting is per thread) and restores it afterwards. One thread is the
    default because faiss splits even a single query over every core, which on
    a busy shared machine waits for descheduled threads: on 2 shared cores under
    load, one query over 100k x 128 took 2.5 ms with 1 thread and 21.5 ms with 2
    (1M: 30 ms vs 138 ms), and BLAS batches took seconds with 2 threads. On a
    dedicated multi-core machine, ``search_threads=None`` (all cores) can be faster.

Exact search speed (``distance_compute_blas_threshold``):
    faiss answers a flat search either with a SIMD scan (parallel over queries)
    or with BLAS matrix products. faiss 1.15 takes BLAS only from
    ``n_queries * dim >= 128000`` (1000 queries at dimension 128; older faiss
    switched at 20 queries), but with one thread BLAS wins from about 6 queries
    (100k x 128: 8 queries 15 ms with BLAS vs 23 ms scanning, 32 queries 24 ms vs
    91 ms), while single queries are 4x faster scanning. Unmasked exact searches
    therefore use BLAS from ``BLAS_QUERIES_PER_THREAD * threads`` queries; the
    process-wide faiss setting is changed only while such searches run and
    restored when the last one ends. Masked searches always scan (faiss does
    not combine selectors with BLAS).

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
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.cache import atomic_write
from cmce.errors import CmceError, GalleryError

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.index needs faiss: pip install faiss-cpu") from exc

logger = logging.getLogger(__name__)

__all__ = [
    "BLAS_QUERIES_PER_THREAD",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "HNSW_MIN_SELECTED_FRACTION",
    "INDEX_KINDS",
    "SCAN_ERROR",
    "SCAN_FROM",
    "SCAN_MARGIN",
    "SCAN_POSTFILTER_FRACTION",
    "SCAN_SHARD_ROWS",
    "SCAN_WORKERS",
    "SEARCH_THREADS",
    "UNIT_NORM_TOLERANCE",
    "SearchHit",
    "SearchResult",
    "VectorIndex",
]

INDEX_KINDS = ("auto", "flat", "hnsw")
"""Valid ``kind`` values of :class:`VectorIndex`."""

UNIT_NORM_TOLERANCE = 1e-3
"""Largest accepted ``| ||x|| - 1 |`` of a stored or query vector."""

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
``efSearch``: measure on your own data and pass ``ef_search`` to :class:`VectorIndex`.
"""

HNSW_MIN_SELECTED_FRACTION = 0.5
"""Below this fraction of selected positions an HNSW index searches exactly."""

BLAS_QUERIES_PER_THREAD = 8
"""Unmasked exact searches of at least this many queries per OpenMP thread use BLAS."""

SEARCH_THREADS = 1
"""Default OpenMP threads of one search call (``None``: faiss's default, every core)."""

SCAN_FROM = 65_536
"""Positions from which exact searches scan the float16 copy first (see module docstring)."""

SCAN_SHARD_ROWS = 262_144
"""Rows per float16 shard; shards are scanned in parallel."""

SCAN_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Threads scanning float16 shards (shared by every index of the process)."""

SCAN_MARGIN = 16
"""Extra candidates per shard rescored in float32 beyond ``k``."""

SCAN_POSTFILTER_FRACTION = 0.5
"""Masks keeping at least this fraction of the rows are applied after the float16 scan."""

SCAN_ERROR = 1e-3
"""Bound on ``|float16 score - float32 score|`` for unit vectors (2^-11 plus rounding slack)."""

_FORMAT = "cmce.VectorIndex"
_FORMAT_VERSION = 1

# faiss's BLAS switch is one process-wide integer; searches that want another value
# share it: the first sets it, the last restores what was there before.
_BLAS_STATE_LOCK = threading.Lock()
_blas_users = 0
_blas_saved = 0


@contextmanager
def _blas_threshold(value: int) -> Iterator[None]:
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


@contextmanager
def _omp_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` OpenMP threads in the calling thread (None: as is).

    The OpenMP thread count is a per-thread setting, so concurrent searches from
    other Python threads are not affected.
    """
    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


_SCAN_POOL: ThreadPoolExecutor | None = None
_SCAN_POOL_LOCK = threading.Lock()


def _scan_pool() -> ThreadPoolExecutor:
    """The process-wide thread pool scanning float16 shards (one OpenMP thread each)."""
    global _SCAN_POOL
    with _SCAN_POOL_LOCK:
        if _SCAN_POOL is None:
            _SCAN_POOL = ThreadPoolExecutor(
                max_workers=SCAN_WORKERS,
                thread_name_prefix="cmce-scan",
                initializer=faiss.omp_set_num_threads,
                initargs=(1,),
            )
        return _SCAN_POOL


class _HalfScan:
    """Float16 copy of an index's vectors in shards, for fast exact search.

    Not thread-safe on its own: the owning :class:`VectorIndex` calls :meth:`add`
    under its write lock and :meth:`candidates` under its read lock.
    """

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._shards: list[tuple[int, faiss.IndexScalarQuantizer]] = []  # (first position, codes)

    @property
    def count(self) -> int:
        if not self._shards:
            return 0
        start, last = self._shards[-1]
        return start + last.ntotal

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (positions continue from :attr:`count`)."""
        done = 0
        while done < len(vectors):
            if not self._shards or self._shards[-1][1].ntotal >= SCAN_SHARD_ROWS:
                shard = faiss.IndexScalarQuantizer(
                    self._dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
                )
                self._shards.append((self.count, shard))
            shard = self._shards[-1][1]
            take = min(len(vectors) - done, SCAN_SHARD_ROWS - shard.ntotal)
            shard.add(np.ascontiguousarray(vectors[done : done + take]))
            done += take

    def candidates(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k + SCAN_MARGIN`` selected rows of every shard by float16 score.

        A mask that keeps at least :data:`SCAN_POSTFILTER_FRACTION` of the rows (a
        rejection mask, removals) is applied after the scan: each shard returns
        proportionally more rows, unmasked (the SIMD scan), and the masked-out ones
        are dropped. Sparser masks go into the scan as a bitmap selector.

        Returns:
            (Q, C) candidate positions (-1 where dropped or where a shard had fewer
            rows) and (Q,) the bound ``b``: every selected row not among the
            candidates has a float32 score ``<= b`` (``-inf`` when none is left out).
        """
        want = k + SCAN_MARGIN
        total = self.count
        postfilter = selected is not None and n_selected >= SCAN_POSTFILTER_FRACTION * total
        if postfilter:
            want = int(np.ceil(want * total / max(n_selected, 1))) + SCAN_MARGIN
        jobs = []
        for start, shard in self._shards:
            params = None
            if selected is not None and not postfilter:
                bits = np.packbits(selected[start : start + shard.ntotal], bitorder="little")
                params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(bits))
            jobs.append((start, shard, min(want, shard.ntotal), params))

        def run(job):
            start, shard, kk, params = job
            scores, ids = shard.search(q, kk, params=params)
            return start, scores, ids, kk == shard.ntotal

        if len(jobs) > 1 and SCAN_WORKERS > 1:
            results = list(_scan_pool().map(run, jobs))
        else:
            results = [run(job) for job in jobs]
        positions, bound = [], np.full(len(q), -np.inf)
        for start, scores, ids, whole in results:
            pos = np.where(ids >= 0, ids + start, -1)
            if postfilter:
                hit = pos >= 0
                pos[hit] = np.where(selected[pos[hit]], pos[hit], -1)
            positions.append(pos)
            # a shard that filled its list (and was not returned whole) may hold more rows
            full = (ids[:, -1] >= 0) & (not whole)
            last = np.where(full, scores[:, -1] + SCAN_ERROR, -np.inf)
            bound = np.maximum(bound, last)
        return np.concatenate(positions, axis=1), bound


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- #
# results
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class SearchHit:
    """One gallery entry found for a query.

    Attributes:
        position: the entry's position in the index (``>= 0``).
        score: cosine similarity to the query, in about ``[-1, 1]``.
    """

    position: int
    score: float

    def __post_init__(self) -> None:
        if isinstance(self.position, bool) or not isinstance(self.position, (int, np.integer)):
            raise CmceError(f"SearchHit.position must be an int, got {self.position!r}")
        if self.position < 0:
            raise CmceError(f"SearchHit.position must be >= 0, got {self.position}")
        if not np.isfinite(self.score):
            raise CmceError(f"SearchHit.score must be finite, got {self.score!r}")
        object.__setattr__(self, "position", int(self.position))
        object.__setattr__(self, "score", float(self.score))


@dataclass(frozen=True)
class SearchResult:
    """The ``k`` best gallery entries of each query, best first.

    Attributes:
        scores: (Q, k) float32 cosine similarities, non-increasing along each row;
            ``-inf`` where ``positions`` is ``-1``.
        positions: (Q, k) int64 positions of the entries; ``-1`` fills the end of
            a row when fewer than ``k`` entries could be returned (fewer selected
            entries than ``k``).

    Both arrays are private read-only copies.
    """

    scores: np.ndarray
    positions: np.ndarray

    def __post_init__(self) -> None:
        try:
            scores = np.array(self.scores, dtype=np.float32)
            positions = np.array(self.positions)
        except (TypeError, ValueError) as exc:
            raise CmceError(f"SearchResult needs numeric (Q, k) arrays: {exc}") from exc
        if scores.ndim != 2 or positions.shape != scores.shape:
            raise CmceError(
                "SearchResult scores and positions must both have shape (Q, k), got "
                f"{scores.shape} and {positions.shape}"
            )
        if not np.issubdtype(positions.dtype, np.integer):
            raise CmceError(f"SearchResult positions must be integers, got dtype {positions.dtype}")
        positions = positions.astype(np.int64)
        valid = positions >= 0
        if (positions < -1).any():
            raise CmceError("SearchResult positions must be >= 0, or -1 for 'no entry'")
        if (valid[:, 1:] & ~valid[:, :-1]).any():
            raise CmceError("SearchResult positions: -1 may only fill the end of a row")
        if not np.isfinite(scores[valid]).all():
            raise CmceError("SearchResult scores must be finite where a position is given")
        scores[~valid] = -np.inf
        if ((scores[:, 1:] > scores[:, :-1]) & valid[:, 1:]).any():
            raise CmceError("SearchResult scores must be non-increasing along each row")
        scores.flags.writeable = False
        positions.flags.writeable = False
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "positions", positions)

    @property
    def num_queries(self) -> int:
        """Q, the number of queries."""
        return self.positions.shape[0]

    @property
    def k(self) -> int:
        """Hits asked for per query (columns of the arrays)."""
        return self.positions.shape[1]

    def hits(self, query: int) -> list[SearchHit]:
        """The hits of one query, best first, without the ``-1`` padding.

        Args:
            query: row index in ``[0, Q)``.
        """
        if not 0 <= query < self.num_queries:
            raise CmceError(f"query must be in [0, {self.num_queries}), got {query}")
        row = self.positions[query]
        n = int((row >= 0).sum())
        return [SearchHit(int(p), float(s)) for p, s in zip(row[:n], self.scores[query, :n])]


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #


def _unit_matrix(value: object, dim: int, name: str, error: type[CmceError]) -> np.ndarray:
    """Return ``value`` as a C-contiguous float32 (N, dim) array of unit rows, or raise."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise error(f"{name} must be a numeric array of shape (N, {dim}): {exc}") from exc
    if arr.ndim != 2:
        raise error(f"{name} must be a 2-D array of shape (N, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise error(
            f"{name} have dimension {arr.shape[1]} but this index holds {dim}-d vectors "
            f"(expected shape (N, {dim}), got {arr.shape})"
        )
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise error(f"{name} must hold real numbers (float or int), got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] == 0:
        return arr
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
    bad = ~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE)  # NaN norms are bad too
    if bad.any():
        rows = np.flatnonzero(bad)
        first = int(rows[0])
        if not np.isfinite(arr[first]).all():
            raise error(f"{name} must be finite: row {first} holds NaN or inf")
        raise error(
            f"{name} must be L2-normalised (unit norm within {UNIT_NORM_TOLERANCE:g}): row "
            f"{first} has norm {norms[first]:.6g}, {rows.size} of {arr.shape[0]} rows are "
            "off; L2-normalise each row first (x / np.linalg.norm(x, axis=1, keepdims=True))"
        )
    return arr


def _positive_int(value: object, name: str, minimum: int, error: type[CmceError]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise error(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise error(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _bool_mask(mask: object, n: int) -> np.ndarray:
    """``mask`` as an (n,) bool array (one entry per position), or CmceError saying what it is."""
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != (n,):
        raise CmceError(
            f"mask must be a bool array of shape ({n},) (one entry per position, "
            f"len(index)), got dtype {m.dtype} shape {m.shape}"
        )
    return m


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen faiss results to ``k`` columns and turn faiss's 'no hit' into -1 / -inf."""
    q = ids.shape[0]
    out_scores = np.full((q, k), -np.inf, dtype=np.float32)
    out_ids = np.full((q, k), -1, dtype=np.int64)
    out_scores[:, : ids.shape[1]] = scores
    out_ids[:, : ids.shape[1]] = ids
    out_scores[out_ids < 0] = -np.inf
    return out_scores, out_ids


# --------------------------------------------------------------------------- #
# the index
# --------------------------------------------------------------------------- #


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
        self._dim = _positive_int(dim, "dim", 1, GalleryError)
        if kind not in INDEX_KINDS:
            raise GalleryError(f"kind must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")
        self._kind = kind
        self._exact_threshold = _positive_int(exact_threshold, "exact_threshold", 0, GalleryError)
        self._ef_search = _positive_int(ef_search, "ef_search", 1, GalleryError)
        self._search_threads = (
            None
            if search_threads is None
            else _positive_int(search_threads, "search_threads", 1, GalleryError)
        )
        self._scan_from = (
            None if scan_from is None else _positive_int(scan_from, "scan_from", 0, GalleryError)
        )
        self._scan: _HalfScan | None = None  # float16 copy, from scan_from positions
        self._lock = _ReadWriteLock()
        # row buffers with spare capacity; rows [0, _count) are valid and never change
        self._buffer = np.empty((0, self._dim), dtype=np.float32)
        self._active = np.zeros(0, dtype=bool)
        self._count = 0
        self._num_active = 0
        self._index: faiss.Index = faiss.IndexFlatIP(self._dim)
        self._exact: faiss.IndexFlat = self._index  # flat view used for exact searches
        self._backend = "flat"
        if kind == "hnsw":
            self._use_hnsw(self._new_hnsw())

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
            return 0 if self._scan is None else len(self._scan._shards)

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
                not 1 within :data:`UNIT_NORM_TOLERANCE`.
        """
        x = _unit_matrix(vectors, self._dim, "vectors", GalleryError)
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
                hnsw = self._new_hnsw()
                self._build(hnsw, self._buffer[:end])
                self._use_hnsw(hnsw)
            elif self._backend == "hnsw":
                self._build(self._index, x)
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
        q = _unit_matrix(queries, self._dim, "queries", CmceError)
        k = _positive_int(k, "k", 1, CmceError)
        with self._lock.read():
            n = self._count
            selected = self._active[:n]
            n_selected = self._num_active
            if mask is not None:
                selected = selected & _bool_mask(mask, n)
                n_selected = int(selected.sum())
            k_found = min(k, n_selected)
            if q.shape[0] == 0 or k_found == 0:
                nothing = np.empty((q.shape[0], 0), dtype=np.int64)
                return SearchResult(*_pad(nothing.astype(np.float32), nothing, k))
            if n_selected == n:
                selected = None
            with _omp_threads(self._search_threads):
                if self._backend == "flat":
                    scores, ids = self._search_exact(q, k_found, selected, n_selected)
                else:
                    scores, ids = self._search_hnsw(q, k_found, selected, n_selected)
        return SearchResult(*_pad(scores, ids, k))

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
        """Exact top-``k`` by faiss's float32 scan or BLAS."""
        if selected is None:
            threads = max(1, faiss.omp_get_max_threads())  # already the search's count
            with _blas_threshold(BLAS_QUERIES_PER_THREAD * threads * self._dim):
                return self._exact.search(q, k)
        if n_selected * 4 <= selected.size:
            # few selected: faiss scores only the listed ids
            selector = faiss.IDSelectorArray(np.flatnonzero(selected).astype(np.int64))
        else:
            selector = faiss.IDSelectorBitmap(np.packbits(selected, bitorder="little"))
        return self._exact.search(q, k, params=faiss.SearchParameters(sel=selector))

    def _search_scan(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k``: float16 candidates rescored in float32, certified (module docstring)."""
        assert self._scan is not None
        candidates, bound = self._scan.candidates(q, k, selected, n_selected)
        valid = candidates >= 0
        rows = self._buffer[np.where(valid, candidates, 0)]  # (Q, C, D)
        exact = np.einsum("qcd,qd->qc", rows, q)
        exact[~valid] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(exact, order, axis=1).astype(np.float32)
        ids = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        uncertain = ~(scores[:, k - 1] > bound)
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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to one ``.npz`` file, atomically (temp file + rename).

        Args:
            path: file to write (``.npz`` suffix recommended; written as given).
                Its folder is created if needed.
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
                graph = faiss.serialize_index(self._index, faiss.IO_FLAG_SKIP_STORAGE)
                arrays["hnsw_graph"] = graph  # the graph without its vectors
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        logger.info("saved %r to %s", self, path)

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
            _positive_int(search_threads, "search_threads", 1, GalleryError)
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
        vectors = _unit_matrix(vectors, index.dim, f"{path}: stored vectors", GalleryError)
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
            try:
                hnsw = faiss.deserialize_index(
                    np.ascontiguousarray(graph, dtype=np.uint8), faiss.IO_FLAG_SKIP_STORAGE
                )
            except RuntimeError as exc:
                raise GalleryError(f"{path} holds a corrupt HNSW graph: {exc}") from exc
            if (
                not isinstance(hnsw, faiss.IndexHNSWFlat)
                or hnsw.d != self._dim
                or hnsw.ntotal != n
                or hnsw.metric_type != faiss.METRIC_INNER_PRODUCT
            ):
                raise GalleryError(
                    f"{path} holds an HNSW graph that does not fit its {n} vectors of dimension "
                    f"{self._dim}"
                )
            storage = faiss.IndexFlatIP(self._dim)
            storage.add(vectors)
            hnsw.storage = storage
            storage.this.disown()  # the graph index owns and frees its storage
            hnsw.own_fields = True
            self._use_hnsw(hnsw)
        elif want_hnsw:
            logger.warning("%s has no HNSW graph: rebuilding it over %d vectors", path, n)
            hnsw = self._new_hnsw()
            self._build(hnsw, vectors)
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
            self._scan = _HalfScan(self._dim)
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

    def _new_hnsw(self) -> faiss.IndexHNSWFlat:
        hnsw = faiss.IndexHNSWFlat(self._dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = self._ef_search
        return hnsw

    def _use_hnsw(self, hnsw: faiss.IndexHNSWFlat) -> None:
        self._exact = faiss.downcast_index(hnsw.storage)  # owned by hnsw, lives as long
        self._index = hnsw
        self._backend = "hnsw"

    @staticmethod
    def _build(hnsw: faiss.IndexHNSWFlat, vectors: np.ndarray) -> None:
        """Add ``vectors`` to an HNSW graph, logging progress of long builds."""
        start = time.perf_counter()
        chunk = 100_000
        for i in range(0, vectors.shape[0], chunk):
            hnsw.add(vectors[i : i + chunk])
            if vectors.shape[0] > chunk:
                logger.info(
                    "HNSW: %d / %d added (%.0f s)",
                    min(i + chunk, vectors.shape[0]),
                    vectors.shape[0],
                    time.perf_counter() - start,
                )
