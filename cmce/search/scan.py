"""Float16 scan of large galleries for :class:`cmce.search.index.VectorIndex`, certified exact.

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
scan 11 ms on one thread and 7.7 ms on two (``benchmarks/bench_search.py``).
The float16 copy costs 2 bytes per dimension per entry (256 MB per million
128-d vectors) and is rebuilt from the vectors on load, so files do not change.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.scan needs faiss: pip install faiss-cpu") from exc

__all__ = [
    "SCAN_ERROR",
    "SCAN_FROM",
    "SCAN_MARGIN",
    "SCAN_POSTFILTER_FRACTION",
    "SCAN_SHARD_ROWS",
    "SCAN_WORKERS",
    "Float16Scan",
]

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


class Float16Scan:
    """Float16 copy of an index's vectors in shards, for fast exact search.

    Not thread-safe on its own: the owning :class:`~cmce.search.index.VectorIndex`
    calls :meth:`add` under its write lock and :meth:`search` under its read lock.

    Args:
        dim: dimension D of the vectors.
    """

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._shards: list[tuple[int, faiss.IndexScalarQuantizer]] = []  # (first position, codes)

    @property
    def count(self) -> int:
        """Rows copied so far (positions ``0 .. count - 1``)."""
        if not self._shards:
            return 0
        start, last = self._shards[-1]
        return start + last.ntotal

    @property
    def num_shards(self) -> int:
        """Shards scanned in parallel."""
        return len(self._shards)

    def add(self, vectors: np.ndarray) -> None:
        """Append (N, D) rows (positions continue from :attr:`count`)."""
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

    def search(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int, vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact top-``k``: float16 candidates rescored in float32, with a certificate.

        Args:
            q: (Q, D) unit queries.
            k: hits per query, at most ``n_selected``.
            selected: (N,) bool mask of the rows searched, or None for all.
            n_selected: ``selected.sum()`` (N when ``selected`` is None).
            vectors: (>= N, D) float32 rows the candidates are rescored from.

        Returns:
            (Q, k) float32 scores, (Q, k) int64 positions, and (Q,) bool ``uncertain``:
            queries whose top-``k`` the scan could not certify (a row it left out may
            score higher); the caller answers those by a float32 search.
        """
        candidates, bound = self.candidates(q, k, selected, n_selected)
        valid = candidates >= 0
        rows = vectors[np.where(valid, candidates, 0)]  # (Q, C, D)
        exact = np.einsum("qcd,qd->qc", rows, q)
        exact[~valid] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(exact, order, axis=1).astype(np.float32)
        ids = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        uncertain = ~(scores[:, k - 1] > bound)
        return scores, ids, uncertain

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
