"""Compact approximate index for 1e7-1e8 unit vectors, re-ranked exactly from disk.

One implementation of :class:`cmce.search.base.VectorSearch` (the other is
:class:`cmce.search.index.VectorIndex`). Its settings are in
:mod:`cmce.search.compact_config`, its training in :mod:`cmce.search.compact_build`,
its vector file in :mod:`cmce.search.vector_file`.

:class:`cmce.search.index.VectorIndex` keeps every vector in RAM (float32, plus a float16
copy from 65k entries): about 768 bytes per 128-d entry, 7.7 GB at 10M. Above
:data:`COMPACT_FROM` entries a gallery can use a :class:`CompactIndex` instead:

* **Vectors on disk.** The (N, D) L2-normalised vectors live in one float16
  ``.npy`` file (written in chunks by
  :class:`~cmce.search.vector_file.VectorFileWriter`), memory-mapped read-only.
  Only the rows a search re-ranks are read.
* **In memory, only the compressed index**: a faiss inverted-file index with
  product-quantised codes, built with ``faiss.index_factory`` from
  :data:`~cmce.search.compact_config.COMPACT_FACTORY`, trained on a sample of the
  file. While adding, the coarse quantizer is an HNSW graph over the centroids, so
  assigning 10M vectors to their lists is a graph search, not a scan of every
  centroid; once built it is replaced by a flat quantizer over the same centroids,
  faster for the many lists a search probes.
* **Exact re-ranking.** A search fetches ``rerank`` candidates per query from the
  compressed index, reads their float16 rows from the file and scores them
  exactly: the returned scores are float32 inner products of the query with the
  stored float16 vectors (within ``2^-11`` of the float32 cosine, see
  :data:`cmce.search.scan.SCAN_ERROR`), never PQ estimates. Recall against exact
  search is what the candidate list misses; the score of every returned hit is exact.

Cosine of unit vectors is their inner product; the compressed index uses the L2
metric, whose order on unit vectors is the same (``|q - x|^2 = 2 - 2 q.x``) and which
is faiss's best-trodden path for IVF k-means and residual PQ.

Masks and threshold (as :meth:`cmce.search.index.VectorIndex.search`):
    ``mask`` is an (N,) bool array, ``False`` = never returned (rejected entries,
    removals). Entries are excluded *inside* the approximate search through a faiss
    ``IDSelectorBitmap``, so a mask does not eat into the candidate list. When the
    mask keeps at most :data:`COMPACT_EXACT_BELOW` entries, the search is exact over
    the selected rows instead (read from the file). A query whose probed lists hold
    fewer than ``min(k, selected)`` selected entries is searched again over every
    list, so a mask never makes a search return fewer than ``min(k, selected)``
    hits. ``threshold`` drops hits scoring below it (their slots become position
    -1, score ``-inf``, at the end of the row).

Measured figures: see the constants below and in :mod:`cmce.search.compact_config`,
and ``docs/bench-compact-index.json``
(``benchmarks/bench_compact_index.py``).

Persistence:
    :meth:`CompactIndex.save` writes a folder with ``index.faiss`` (the compressed
    index) and ``compact.json`` (settings, the vector file's path *relative to the
    folder*, its size and a fingerprint, the index file's sha256).
    :meth:`CompactIndex.load` checks both before use, so a missing, truncated or
    replaced vector file is a :class:`~cmce.errors.GalleryError`, not wrong answers.

Thread safety:
    A built or loaded index is immutable; concurrent searches are safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cmce.cache import atomic_write, atomic_write_bytes
from cmce.errors import CmceError, GalleryError
from cmce.search._arrays import bool_mask, pad_to_k, positive_int, unit_matrix
from cmce.search._threads import omp_threads
from cmce.search.base import SearchResult
from cmce.search.compact_build import BuildStats, build_ivf
from cmce.search.compact_config import COMPACT_PROBE_FRACTION, CompactConfig
from cmce.search.vector_file import file_fingerprint, open_vector_file

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.compact needs faiss: pip install faiss-cpu") from exc

logger = logging.getLogger(__name__)

__all__ = [
    "COMPACT_EXACT_BELOW",
    "COMPACT_FROM",
    "COMPACT_POSTFILTER_FRACTION",
    "INDEX_FILE",
    "META_FILE",
    "CompactIndex",
    "choose_index_kind",
]

COMPACT_FROM = 2_000_000
"""Entries from which a gallery should search a :class:`CompactIndex` (see :func:`choose_index_kind`).

Below it the exact :class:`cmce.search.index.VectorIndex` stays the default: its float16
scan answers one query over 1M x 128 in about 11 ms on one thread, exact, and
2M entries cost about 1.5 GB of RAM, which one box holds. The compact index at 1M
answers in about 4-5 ms but finds only about 0.96 of the exact top-10.
"""

COMPACT_POSTFILTER_FRACTION = 0.5
"""Masks keeping at least this share of the entries are applied to the candidates, not in the scan.

faiss's fast-scan kernel slows down with an ``IDSelector`` (10M entries, 40% of
the lists, a mask rejecting 10%: p50 29.4 ms against 22.2 ms unmasked); such masks
instead fetch ``rerank * N / selected`` candidates unmasked and drop the excluded
ones (defaults, 10M, 10% rejected: recall@10 0.963, p50 22.2 ms against 18.1 ms
unmasked, most of the difference being the larger candidate list and the load).
"""

COMPACT_EXACT_BELOW = 16_384
"""Masks keeping at most this many entries are searched exactly (rows read from the file).

Reading scattered rows costs: an exact search over 50,000 selected rows took 16.5 ms
in a 1M file and 40 ms in a 10M one (rows spread over 2.5 GB, in the page cache),
where the approximate search with a selector took 29 ms; 16,384 rows keep the exact
path near the cost of an approximate search.
"""

INDEX_FILE = "index.faiss"
"""File name of the compressed index inside a saved folder."""

META_FILE = "compact.json"
"""File name of the settings and checks inside a saved folder."""

_FORMAT = "cmce.CompactIndex"
_FORMAT_VERSION = 1
_RERANK_CHUNK = 65_536  # rows scored per step of an exact scan over selected rows
_RERANK_TABLE_SHARE = 8  # a re-rank of at least N / 8 candidates finds its rows through a table over N


def choose_index_kind(n: int) -> str:
    """Which index a gallery of ``n`` entries should search.

    Args:
        n: number of entries (positions).

    Returns:
        ``"exact"`` (:class:`cmce.search.index.VectorIndex`) below :data:`COMPACT_FROM`,
        else ``"compact"`` (:class:`CompactIndex`).
    """
    n = positive_int(n, "n", 0, GalleryError)
    return "exact" if n < COMPACT_FROM else "compact"


def _sha256(path: Path) -> str:
    """sha256 of the whole file, read now (not :func:`cmce.cache.file_sha256`, which memoises)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _valid_first(candidates: np.ndarray) -> np.ndarray:
    """Move the ``-1`` entries of each row to its end, keeping the order of the others."""
    order = np.argsort(candidates < 0, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def _inner_products_by_index(q: np.ndarray, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(Q, R) float32: ``q[i] . rows[index[i, j]]``, ``-inf`` where ``index[i, j] < 0``.

    One call of faiss's ``fvec_inner_products_by_idx`` (SIMD dot products, no (Q, R, D)
    temporary); the ``-1`` slots are set here (some faiss versions skip them, leaving them
    unwritten). Example: ``q = [[1, 0]]``, ``rows = [[0.6, 0.8], [0, 1]]``,
    ``index = [[1, -1, 0]]`` gives ``[[0.0, -inf, 0.6]]``.
    """
    q = np.ascontiguousarray(q, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    index = np.ascontiguousarray(index, dtype=np.int64)
    out = np.empty(index.shape, dtype=np.float32)
    if index.size:
        if rows.shape[0] == 0:  # every slot is -1
            out.fill(-np.inf)
        else:
            faiss.fvec_inner_products_by_idx(
                faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(rows), faiss.swig_ptr(index),
                q.shape[1], index.shape[0], index.shape[1],
            )
            out[index < 0] = -np.inf
    return out


# --------------------------------------------------------------------------- #
# the index
# --------------------------------------------------------------------------- #


class CompactIndex:
    """Approximate cosine k-NN over a float16 vector file, with exact re-ranking.

    Build with :meth:`build` (or :meth:`load` a saved one); immutable afterwards.
    Positions are row numbers of the vector file.

    Args:
        index: a trained and filled faiss IVF index (possibly behind a transform)
            holding exactly the rows of ``vectors``, ids = row numbers.
        vectors_path: the float16 ``.npy`` vector file.
        config: the build/search settings.
        search_threads: OpenMP threads per search call (None: faiss's default).

    Example:
        >>> index = CompactIndex.build("vectors.npy")          # doctest: +SKIP
        >>> index.search(queries, k=10, mask=keep, threshold=0.4)  # doctest: +SKIP
    """

    def __init__(
        self,
        index: faiss.Index,
        vectors_path: str | os.PathLike[str],
        config: CompactConfig,
        *,
        search_threads: int | None = 1,
    ) -> None:
        self._vectors_path = Path(vectors_path)
        self._vectors = open_vector_file(self._vectors_path)
        self._dim = int(self._vectors.shape[1])
        self._count = int(self._vectors.shape[0])
        if index.d != self._dim or index.ntotal != self._count:
            raise GalleryError(
                f"faiss index ({index.ntotal} vectors of dimension {index.d}) does not match "
                f"{self._vectors_path} ({self._count} x {self._dim})"
            )
        try:
            self._ivf = faiss.extract_index_ivf(index)
        except RuntimeError as exc:
            raise GalleryError(f"the compact index must be an IVF index: {exc}") from exc
        self._index = index
        self._config = config
        self._search_threads = (
            None if search_threads is None else positive_int(search_threads, "search_threads", 1, GalleryError)
        )
        self._build_stats: BuildStats | None = None
        self._hnsw_quantizer = isinstance(faiss.downcast_index(self._ivf.quantizer), faiss.IndexHNSW)

    # ---------------------------------------------------------------- info

    @property
    def dim(self) -> int:
        """Dimension D of the vectors."""
        return self._dim

    def __len__(self) -> int:
        """Number of positions N (the length of a search mask)."""
        return self._count

    @property
    def config(self) -> CompactConfig:
        """Build and search settings."""
        return self._config

    @property
    def nlist(self) -> int:
        """IVF lists of the compressed index."""
        return int(self._ivf.nlist)

    @property
    def nprobe(self) -> int:
        """IVF lists probed per query by default."""
        if self._config.nprobe is not None:
            return min(self._config.nprobe, self.nlist)
        return max(1, math.ceil(COMPACT_PROBE_FRACTION * self.nlist))

    @property
    def build_stats(self) -> BuildStats | None:
        """Timings of :meth:`build` (None for a loaded index)."""
        return self._build_stats

    @property
    def vectors_path(self) -> Path:
        """The float16 vector file re-ranking reads."""
        return self._vectors_path

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) read-only float16 memmap of the stored vectors."""
        return self._vectors

    def memory_bytes(self) -> int:
        """Bytes of the in-memory part: the serialized size of the compressed index."""
        return int(faiss.serialize_index(self._index).nbytes)

    def __repr__(self) -> str:
        return (
            f"CompactIndex(dim={self._dim}, positions={self._count}, nlist={self.nlist}, "
            f"factory={self._config.factory!r}, vectors={str(self._vectors_path)!r})"
        )

    # ---------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        vectors_path: str | os.PathLike[str],
        config: CompactConfig = CompactConfig(),
        *,
        search_threads: int | None = 1,
        build_threads: int | None = None,
    ) -> CompactIndex:
        """Train and fill the compressed index from a float16 vector file.

        Trains on ``min(N, nlist * train_per_list, train_max)`` rows sampled
        uniformly (seeded), then adds every row in chunks of 262,144 (rows
        checked to be unit norm). Only one chunk in float32 is in memory at a time
        besides the growing index.

        Args:
            vectors_path: (N, D) float16 ``.npy`` file (see
                :class:`~cmce.search.vector_file.VectorFileWriter`).
            config: build and search settings.
            search_threads: OpenMP threads per search (None: faiss's default).
            build_threads: OpenMP threads of training and adding (None: faiss's
                default, every core). On a busy shared machine 1 can be much faster
                for small builds: training on 8,192 rows took 2.8 s on 1 thread and
                61 s on 2 threads at load 7 (OpenMP threads waiting for each other).

        Raises:
            GalleryError: unreadable file, rows that are not unit norm, or a factory
                string that faiss refuses or that is not an IVF index.
        """
        if build_threads is not None:
            positive_int(build_threads, "build_threads", 1, GalleryError)
        path = Path(vectors_path)
        with omp_threads(build_threads):
            index, stats = build_ivf(path, config)
            built = cls(index, path, config, search_threads=search_threads)
        built._build_stats = stats
        return built

    # ---------------------------------------------------------------- search

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        mask: np.ndarray | None = None,
        threshold: float | None = None,
        *,
        nprobe: int | None = None,
        rerank: int | None = None,
    ) -> SearchResult:
        """Find the ``k`` most cosine-similar selected entries of each query.

        Args:
            queries: (Q, D) L2-normalised rows.
            k: hits per query (>= 1). Rows are padded with position -1 and score
                ``-inf`` when fewer than ``k`` entries are selected (or pass the threshold).
            mask: optional (N,) bool; entries where it is ``False`` are never returned.
            threshold: optional; hits scoring below it are dropped.
            nprobe, rerank: override the config's values for this call.

        Returns:
            (Q, k) exact scores (float32 of the float16 rows) and positions, best first.

        Raises:
            CmceError: queries of the wrong shape or not unit norm, bad ``k``, mask,
                threshold, nprobe or rerank.
        """
        q = unit_matrix(queries, self._dim, "queries", CmceError)
        k = positive_int(k, "k", 1, CmceError)
        nprobe = self.nprobe if nprobe is None else positive_int(nprobe, "nprobe", 1, CmceError)
        rerank = self._config.rerank if rerank is None else positive_int(rerank, "rerank", 1, CmceError)
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
                raise CmceError(f"threshold must be a number or None, got {threshold!r}")
            if not np.isfinite(threshold):
                raise CmceError(f"threshold must be finite, got {threshold!r}")
        n = self._count
        selected = None
        n_selected = n
        if mask is not None:
            m = bool_mask(mask, n)
            n_selected = int(np.count_nonzero(m))
            if n_selected < n:
                selected = m
        k_found = min(k, n_selected)
        if q.shape[0] == 0 or k_found == 0:
            nothing = np.empty((q.shape[0], 0), dtype=np.int64)
            return SearchResult(*pad_to_k(nothing.astype(np.float32), nothing, k))
        with omp_threads(self._search_threads):
            if selected is not None and n_selected <= COMPACT_EXACT_BELOW:
                scores, ids = self._search_selected_exactly(q, k_found, np.flatnonzero(selected))
            else:
                scores, ids = self._search_approximate(
                    q, k_found, selected, n_selected, nprobe, max(rerank, k_found)
                )
        if threshold is not None:
            below = scores < threshold
            ids = np.where(below, -1, ids)
            scores = np.where(below, -np.inf, scores).astype(np.float32)
        return SearchResult(*pad_to_k(scores, ids, k))

    def _params(self, nprobe: int, selected: np.ndarray | None) -> faiss.SearchParametersIVF:
        params = faiss.SearchParametersIVF(nprobe=min(nprobe, self.nlist), max_codes=0)
        if self._hnsw_quantizer:
            ef = max(self._config.quantizer_ef, params.nprobe)
            params.quantizer_params = faiss.SearchParametersHNSW(efSearch=ef)
        if selected is not None:
            params.sel = faiss.IDSelectorBitmap(np.packbits(selected, bitorder="little"))
        return params

    def _search_approximate(
        self, q: np.ndarray, k: int, selected: np.ndarray | None, n_selected: int, nprobe: int, rerank: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``rerank`` candidates from the compressed index, re-ranked exactly to top-``k``."""
        if selected is not None and n_selected >= COMPACT_POSTFILTER_FRACTION * self._count:
            # most entries kept: search unmasked for proportionally more candidates and
            # drop the excluded ones (a selector slows the fast-scan kernel down)
            want = min(self._count, math.ceil(rerank * self._count / n_selected) + 16)
            _, candidates = self._index.search(q, want, params=self._params(nprobe, None))
            hit = candidates >= 0
            candidates[hit] = np.where(selected[candidates[hit]], candidates[hit], -1)
            candidates = _valid_first(candidates)[:, :rerank]
        else:
            _, candidates = self._index.search(q, rerank, params=self._params(nprobe, selected))
        short = (candidates[:, k - 1] < 0) if k <= candidates.shape[1] else np.ones(len(q), bool)
        if short.any():
            # the probed lists held fewer than k selected entries: probe them all
            logger.debug("compact index: %d of %d queries under-filled, probing all lists", short.sum(), len(q))
            everything = self._params(self.nlist, selected)
            _, again = self._index.search(q[short], rerank, params=everything)
            candidates[short] = again
        return self._rerank(q, candidates, k)

    def _rerank(self, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of (Q, R) candidate positions (-1 = none) from the vector file; top ``k``.

        The candidates' rows are read once (sorted, so the file is read in order) and every
        (query, candidate) inner product is computed in one faiss call
        (``fvec_inner_products_by_idx``; a ``-1`` slot scores ``-inf``), not in a Python loop
        over the queries. Ties keep the candidate order (a stable sort).
        """
        valid = candidates >= 0
        if candidates.size * _RERANK_TABLE_SHARE >= self._count:
            # many candidates (a graph's chunk of queries): a table over the positions beats sorting them
            seen = np.zeros(self._count, dtype=bool)
            seen[candidates[valid]] = True
            flat = np.flatnonzero(seen)
            table = np.full(self._count, -1, dtype=np.int64)
            table[flat] = np.arange(flat.size)
            local = np.where(valid, table[np.where(valid, candidates, 0)], -1)
        else:
            flat = np.unique(candidates[valid])
            local = np.where(valid, np.searchsorted(flat, np.where(valid, candidates, 0)), -1).astype(np.int64)
        rows = np.asarray(self._vectors[flat]).astype(np.float32)  # (U, D), sorted: the file read in order
        exact = _inner_products_by_index(q, rows, local)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(exact, order, axis=1)
        ids = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
        ids[~np.isfinite(scores)] = -1
        return scores, ids

    def _search_selected_exactly(
        self, q: np.ndarray, k: int, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over the given (sorted) positions, rows read from the file."""
        best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_ids = np.empty((len(q), 0), dtype=np.int64)
        for i in range(0, positions.size, _RERANK_CHUNK):
            pos = positions[i : i + _RERANK_CHUNK]
            rows = np.asarray(self._vectors[pos], dtype=np.float32)
            scores = q @ rows.T  # (Q, P)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_ids = np.concatenate([best_ids, np.broadcast_to(pos, scores.shape)], axis=1)
            if best_scores.shape[1] > k:
                top = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(best_scores, top, axis=1)
                best_ids = np.take_along_axis(best_ids, top, axis=1)
        # best first; equal scores by position, as the stable sort over sorted positions gives
        order = np.lexsort((best_ids, -best_scores), axis=1) if best_ids.size else best_ids
        return (
            np.take_along_axis(best_scores, order, axis=1).astype(np.float32),
            np.take_along_axis(best_ids, order, axis=1).astype(np.int64),
        )

    # ---------------------------------------------------------------- persistence

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``index.faiss`` and ``compact.json`` into ``folder`` (each atomically).

        The vector file is not copied: ``compact.json`` records its path relative
        to ``folder`` (keep the two together when moving them), its size and a
        fingerprint.

        Returns:
            the folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self._index)
        atomic_write_bytes(folder / INDEX_FILE, data.tobytes())
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "dim": self._dim,
            "count": self._count,
            "nlist": self.nlist,
            "config": asdict(self._config),
            "index_file": INDEX_FILE,
            "index_bytes": int(data.nbytes),
            "index_sha256": hashlib.sha256(data).hexdigest(),
            "vectors": {
                "path": os.path.relpath(self._vectors_path.resolve(), folder.resolve()),
                "bytes": self._vectors_path.stat().st_size,
                "fingerprint": file_fingerprint(self._vectors_path),
            },
        }
        atomic_write(folder / META_FILE, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
        logger.info("saved %r to %s", self, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, search_threads: int | None = 1) -> CompactIndex:
        """Read an index written by :meth:`save` (and memory-map its vector file).

        Raises:
            GalleryError: missing or corrupt files; a vector file that is missing,
                of another size or fingerprint than recorded, or does not fit the index.
        """
        folder = Path(folder)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise GalleryError(f"no compact index at {folder} (missing {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
            fmt, version = meta["format"], int(meta["format_version"])
            config = CompactConfig(**meta["config"])
            vec_meta = meta["vectors"]
            vec_path = (folder / vec_meta["path"]).resolve()
            vec_bytes, vec_fp = int(vec_meta["bytes"]), str(vec_meta["fingerprint"])
            index_sha = str(meta["index_sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GalleryError(f"{meta_path} is not a readable compact index description: {exc}") from exc
        if fmt != _FORMAT or version != _FORMAT_VERSION:
            raise GalleryError(
                f"{meta_path} holds {fmt!r} version {version}; this cmce reads {_FORMAT!r} "
                f"version {_FORMAT_VERSION}"
            )
        if not vec_path.is_file():
            raise GalleryError(
                f"the vector file of the compact index at {folder} is missing: expected {vec_path} "
                f"({vec_bytes} bytes); rebuild the index or put the file back"
            )
        size = vec_path.stat().st_size
        if size != vec_bytes:
            raise GalleryError(
                f"the vector file {vec_path} has {size} bytes but the compact index at {folder} "
                f"was built over {vec_bytes} bytes (truncated or replaced); rebuild the index"
            )
        if file_fingerprint(vec_path) != vec_fp:
            raise GalleryError(
                f"the vector file {vec_path} is not the one the compact index at {folder} was "
                "built over (fingerprint differs); rebuild the index"
            )
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise GalleryError(f"no {INDEX_FILE} in {folder}")
        if _sha256(index_path) != index_sha:
            raise GalleryError(f"{index_path} is corrupt (sha256 differs from {META_FILE}); rebuild the index")
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise GalleryError(f"{index_path} is not a readable faiss index: {exc}") from exc
        loaded = cls(index, vec_path, config, search_threads=search_threads)
        logger.info("loaded %r", loaded)
        return loaded

