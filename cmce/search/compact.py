"""Compact approximate index for 1e7-1e8 unit vectors, re-ranked exactly from disk.

:class:`cmce.search.index.VectorIndex` keeps every vector in RAM (float32, plus a float16
copy from 65k entries): about 768 bytes per 128-d entry, 7.7 GB at 10M. Above
:data:`COMPACT_FROM` entries a gallery can use a :class:`CompactIndex` instead:

* **Vectors on disk.** The (N, D) L2-normalised vectors live in one float16
  ``.npy`` file (written in chunks by :class:`VectorFileWriter`), memory-mapped
  read-only. Only the rows a search re-ranks are read.
* **In memory, only the compressed index**: a faiss inverted-file index with
  product-quantised codes, built with ``faiss.index_factory`` from
  :data:`COMPACT_FACTORY`, trained on a sample of the file. While adding, the
  coarse quantizer is an HNSW graph over the centroids, so assigning 10M vectors
  to their lists is a graph search, not a scan of every centroid; once built it is
  replaced by a flat quantizer over the same centroids, faster for the many lists
  a search probes.
* **Exact re-ranking.** A search fetches ``rerank`` candidates per query from the
  compressed index, reads their float16 rows from the file and scores them
  exactly: the returned scores are float32 inner products of the query with the
  stored float16 vectors (within ``2^-11`` of the float32 cosine, see
  :data:`cmce.search.index.SCAN_ERROR`), never PQ estimates. Recall against exact search
  is what the candidate list misses; the score of every returned hit is exact.

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

Measured figures: see the constants below and ``docs/bench-compact-index.json``
(``scripts/bench_compact_index.py``).

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
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmce.cache import atomic_write, atomic_write_bytes
from cmce.errors import CmceError, GalleryError
from cmce.search.index import SearchResult, _bool_mask, _omp_threads, _pad, _positive_int, _unit_matrix

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.compact needs faiss: pip install faiss-cpu") from exc

logger = logging.getLogger(__name__)

__all__ = [
    "COMPACT_EXACT_BELOW",
    "COMPACT_TRAIN_MAX",
    "COMPACT_FACTORY",
    "COMPACT_FROM",
    "COMPACT_POSTFILTER_FRACTION",
    "COMPACT_PROBE_FRACTION",
    "COMPACT_QUANTIZER_EF",
    "COMPACT_RERANK",
    "COMPACT_TRAIN_PER_LIST",
    "INDEX_FILE",
    "META_FILE",
    "BuildStats",
    "CompactConfig",
    "CompactIndex",
    "VectorFileWriter",
    "choose_index_kind",
    "compact_nlist",
    "open_vector_file",
]

COMPACT_FROM = 2_000_000
"""Entries from which a gallery should search a :class:`CompactIndex` (see :func:`choose_index_kind`).

Below it the exact :class:`cmce.search.index.VectorIndex` stays the default: its float16
scan answers one query over 1M x 128 in about 11 ms on one thread, exact, and
2M entries cost about 1.5 GB of RAM, which one box holds. The compact index at 1M
answers in about 4-5 ms but finds only about 0.96 of the exact top-10.
"""

COMPACT_FACTORY = "IVF{nlist}_HNSW32,PQ64x4fs"
"""``faiss.index_factory`` string of the compressed index; ``{nlist}`` is filled by :func:`compact_nlist`.

IVF lists (an HNSW graph over the centroids while adding), residuals encoded by
64 sub-quantizers of 4 bits each (32 bytes, 2 dimensions each at D=128) scanned by
faiss's SIMD "fast-scan" kernel. In memory: 32 bytes of code + 8 bytes of id per
entry, plus the centroids: 40.8 bytes per entry serialized at 10M, 43.4 bytes
RssAnon after loading (loading took 0.7 s). On disk: the index plus 256 bytes per
entry of float16 vectors, 296.8 bytes per entry. Building at 10M took 370 s of
training (262,144 sampled rows) and 325 s of adding on 2 busy vCPUs.

Measured at 1M (``docs/bench-compact-index-1M.txt``; 2048 lists, 40% probed,
1,024 candidates re-ranked, 2 shared vCPUs, load 1.6-5):

=============================  =======  =====  ==========  ==========  ======
factory                        train    add    B/entry     recall@10   p50
=============================  =======  =====  ==========  ==========  ======
IVF,PQ64x4fs (chosen)          11 s     15 s   42.7        0.961       4.4 ms
IVF,PQ32 (8-bit)               57 s     27 s   41.8        0.965       38 ms
OPQ32,IVF,PQ32                 682 s    68 s   41.8        0.964       55 ms
=============================  =======  =====  ==========  ==========  ======

The three reach the same recall at the same share of lists probed: what limits
recall is the coarse partition, not the precision of the codes (re-ranking fixes
that), so OPQ buys nothing here and the fast-scan kernel, about 8x faster per
scanned code, wins. ``PQ32x4fs`` (16 bytes) was too coarse (recall@10 0.83 with
half the lists probed, against 0.97).

Why so large a share of lists: real face embeddings are far from low-dimensional.
The between-identity covariance of the sface embeddings of lfw-train has a
participation ratio of about 94 dimensions out of 128, and an IVF with 64 lists
and exact distances finds only 0.937 of the true top-10 with half of its lists
probed, on the real 9,523 vectors as on synthetic ones drawn from their statistics
(``scripts/bench_compact_index.py --realism-only``). A query's top-10 are its
identity's few other photos plus impostors barely above the crowd, which are
spread over many lists.
"""

COMPACT_PROBE_FRACTION = 0.3
"""Share of the IVF lists probed per query when ``nprobe`` is not given.

At 10M entries (8,192 lists; ``docs/bench-compact-index.txt`` and ``-10M-run1.txt``;
300 single queries on one thread, 2 shared vCPUs at load 3-7), probed share /
candidates re-ranked -> recall@10 against exact, p50 and p95:

=====  ======  =========  ========  ========
share  rerank  recall@10  p50       p95
=====  ======  =========  ========  ========
0.2    1,024   0.921      12.8 ms   14.3 ms
0.2    2,048   0.929      14.0 ms   16.7 ms
0.25   2,048   0.950      16.1 ms   18.3 ms
0.3    1,024   0.952      16.7 ms   19.2 ms
0.3    2,048   0.963      18.1 ms   21.1 ms   (the defaults)
0.4    1,024   0.971      22.2 ms   23.9 ms
0.4    2,048   0.982      22.7 ms   25.8 ms
0.5    1,024   0.978      26.8 ms   28.9 ms
=====  ======  =========  ========  ========

0.3 with 2,048 candidates is the cheapest setting that clears recall@10 0.95 with
a margin (0.963, 300 queries) at a p50 under 20 ms; pass ``nprobe``/``rerank``
per search to trade one for the other. With the defaults, hits above an open-set
threshold of 0.523 (95% of real genuine pairs reach it) were found at 0.990.
"""

COMPACT_RERANK = 2048
"""Candidates per query fetched from the compressed index and re-ranked exactly (see above)."""

COMPACT_QUANTIZER_EF = 128
"""efSearch of an HNSW coarse quantizer at search time (raised to ``nprobe`` when smaller).

Indexes built by :meth:`CompactIndex.build` search with a flat quantizer (see
``_search_with_flat_quantizer``); this applies to indexes built elsewhere."""

COMPACT_TRAIN_PER_LIST = 32
"""Training vectors sampled per IVF list (k-means and PQ), capped by :data:`COMPACT_TRAIN_MAX`."""

COMPACT_TRAIN_MAX = 262_144
"""Most vectors sampled from the file for training."""

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
_ADD_CHUNK = 262_144  # rows read from the file and added per step
_RERANK_CHUNK = 65_536  # rows scored per step of an exact scan over selected rows
_FINGERPRINT_BLOCK = 1 << 16
_FINGERPRINT_BLOCKS = 32


def choose_index_kind(n: int) -> str:
    """Which index a gallery of ``n`` entries should search.

    Args:
        n: number of entries (positions).

    Returns:
        ``"exact"`` (:class:`cmce.search.index.VectorIndex`) below :data:`COMPACT_FROM`,
        else ``"compact"`` (:class:`CompactIndex`).
    """
    n = _positive_int(n, "n", 0, GalleryError)
    return "exact" if n < COMPACT_FROM else "compact"


def compact_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: the power of two nearest ``2 * sqrt(n)``, 64..65536.

    At 1M this gives 2048 lists (about 490 vectors each), at 10M 8192 (1220 each),
    at 100M 16384. Fewer, longer lists keep k-means training affordable on a few
    cores (training 8192 lists on 262,144 vectors took 576 s on 2 busy vCPUs) and
    suit the fast-scan kernel; with 512 instead of 2048 lists at 1M, recall at a
    given share of probed lists was slightly lower (0.969 against 0.978 at half).
    """
    n = _positive_int(n, "n", 1, GalleryError)
    return int(min(65_536, max(64, 2 ** round(math.log2(2 * math.sqrt(n))))))


@dataclass(frozen=True)
class CompactConfig:
    """How a :class:`CompactIndex` is built and searched.

    Attributes:
        factory: ``faiss.index_factory`` string; ``{nlist}`` is replaced by ``nlist``.
            Must describe an IVF index (optionally behind a transform such as OPQ).
        nlist: IVF lists; None: :func:`compact_nlist` of the vector count.
        nprobe: lists probed per query; None: :data:`COMPACT_PROBE_FRACTION` of ``nlist``.
        rerank: candidates per query re-ranked exactly (raised to ``k`` when smaller).
        quantizer_ef: efSearch of an HNSW coarse quantizer (ignored for a flat one).
        train_per_list: training vectors sampled per list.
        train_max: most training vectors.
        seed: seed of the training sample and of k-means.
    """

    factory: str = COMPACT_FACTORY
    nlist: int | None = None
    nprobe: int | None = None
    rerank: int = COMPACT_RERANK
    quantizer_ef: int = COMPACT_QUANTIZER_EF
    train_per_list: int = COMPACT_TRAIN_PER_LIST
    train_max: int = COMPACT_TRAIN_MAX
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.factory, str) or not self.factory:
            raise GalleryError(f"factory must be a faiss index_factory string, got {self.factory!r}")
        if self.nlist is not None:
            _positive_int(self.nlist, "nlist", 1, GalleryError)
        if self.nprobe is not None:
            _positive_int(self.nprobe, "nprobe", 1, GalleryError)
        for name in ("rerank", "quantizer_ef", "train_per_list", "train_max"):
            _positive_int(getattr(self, name), name, 1, GalleryError)
        _positive_int(self.seed, "seed", 0, GalleryError)


@dataclass(frozen=True)
class BuildStats:
    """What :meth:`CompactIndex.build` did.

    Attributes:
        train_rows: vectors sampled for training.
        train_seconds: wall time of training (k-means, PQ, OPQ if any).
        add_seconds: wall time of reading, checking, assigning and encoding every row.
    """

    train_rows: int
    train_seconds: float
    add_seconds: float


# --------------------------------------------------------------------------- #
# the vector file
# --------------------------------------------------------------------------- #


class VectorFileWriter:
    """Write an (N, D) float16 ``.npy`` vector file in chunks, atomically.

    Rows go to a temporary file beside ``path`` that is renamed into place by
    :meth:`close` once all ``count`` rows are written; an interrupted write leaves
    no file at ``path``. Each chunk is checked to hold unit rows.

    Args:
        path: the ``.npy`` file to create (replaced if it exists).
        count: N, the number of rows that will be written.
        dim: D.

    Example:
        >>> with VectorFileWriter(tmp / "vectors.npy", count=len(x), dim=x.shape[1]) as out:
        ...     for chunk in np.array_split(x, 4):
        ...         out.write(chunk)
    """

    def __init__(self, path: str | os.PathLike[str], count: int, dim: int) -> None:
        self.path = Path(path)
        self.count = _positive_int(count, "count", 1, GalleryError)
        self.dim = _positive_int(dim, "dim", 1, GalleryError)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        self._array = np.lib.format.open_memmap(
            self._tmp, mode="w+", dtype=np.float16, shape=(self.count, self.dim)
        )
        self._written = 0

    @property
    def written(self) -> int:
        """Rows written so far."""
        return self._written

    def write(self, rows: np.ndarray) -> None:
        """Append (n, D) unit rows (any real dtype; stored as float16).

        Raises:
            GalleryError: wrong shape, rows not unit norm, or more than ``count`` rows.
        """
        if self._array is None:
            raise GalleryError(f"{self.path}: writer is closed")
        x = _unit_matrix(rows, self.dim, "vectors", GalleryError)
        end = self._written + x.shape[0]
        if end > self.count:
            raise GalleryError(f"{self.path}: {end} rows written but the file holds {self.count}")
        self._array[self._written : end] = x
        self._written = end

    def close(self) -> Path:
        """Flush and move the file into place.

        Returns:
            the path written.

        Raises:
            GalleryError: fewer rows were written than ``count``.
        """
        if self._array is None:
            return self.path
        if self._written != self.count:
            self.abort()
            raise GalleryError(f"{self.path}: only {self._written} of {self.count} rows were written")
        self._array.flush()
        del self._array
        self._array = None
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at ``path``."""
        self._array = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VectorFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_vector_file(path: str | os.PathLike[str], dim: int | None = None) -> np.ndarray:
    """Memory-map a float16 vector file read-only.

    Args:
        path: a ``.npy`` file of shape (N, D), dtype float16.
        dim: expected D, or None.

    Returns:
        (N, D) read-only float16 memmap.

    Raises:
        GalleryError: missing, unreadable, not float16 (N, D), or of another dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"no vector file at {path}; expected an (N, D) float16 .npy file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise GalleryError(
            f"{path} is not a readable (N, D) float16 .npy vector file (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(arr, np.memmap) or arr.dtype != np.float16 or arr.ndim != 2 or arr.shape[0] == 0:
        raise GalleryError(
            f"{path} must hold a non-empty (N, D) float16 array, got {arr.dtype} {arr.shape}"
        )
    if dim is not None and arr.shape[1] != dim:
        raise GalleryError(f"{path} holds {arr.shape[1]}-d vectors, expected {dim}-d")
    return arr


def _file_fingerprint(path: Path) -> str:
    """sha256 of the size and of evenly spaced 64 KiB blocks (first and last included).

    Detects a replaced, truncated or regenerated file in milliseconds; it does not
    detect every bit flip (hashing 2.5 GB at each load would take seconds).
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _FINGERPRINT_BLOCK * _FINGERPRINT_BLOCKS:
            h.update(fh.read())
        else:
            last = size - _FINGERPRINT_BLOCK
            for i in range(_FINGERPRINT_BLOCKS):
                fh.seek(last * i // (_FINGERPRINT_BLOCKS - 1))
                h.update(fh.read(_FINGERPRINT_BLOCK))
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _valid_first(candidates: np.ndarray) -> np.ndarray:
    """Move the ``-1`` entries of each row to its end, keeping the order of the others."""
    order = np.argsort(candidates < 0, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def _search_with_flat_quantizer(ivf: faiss.IndexIVF) -> None:
    """Replace an HNSW coarse quantizer by a flat one over the same centroids.

    The HNSW graph makes *adding* fast (10M assignments of one list each), but a
    search probes a large share of the lists (:data:`COMPACT_PROBE_FRACTION`), and
    finding 3,277 of 8,192 centroids took 9.7 ms with HNSW (efSearch 3,277) against
    1.1 ms for a flat scan of the centroids (one thread).
    """
    quantizer = faiss.downcast_index(ivf.quantizer)
    if not isinstance(quantizer, faiss.IndexHNSW):
        return
    storage = faiss.downcast_index(quantizer.storage)
    flat = faiss.IndexFlatL2(ivf.d)
    flat.add(storage.reconstruct_n(0, storage.ntotal))
    if ivf.own_fields:
        quantizer.this.acquire()  # freed by Python once replaced
    ivf.quantizer = flat
    flat.this.disown()  # now owned by the IVF index
    ivf.own_fields = True


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
            None if search_threads is None else _positive_int(search_threads, "search_threads", 1, GalleryError)
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
            vectors_path: (N, D) float16 ``.npy`` file (see :class:`VectorFileWriter`).
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
            _positive_int(build_threads, "build_threads", 1, GalleryError)
        with _omp_threads(build_threads):
            return cls._build(Path(vectors_path), config, search_threads)

    @classmethod
    def _build(cls, path: Path, config: CompactConfig, search_threads: int | None) -> CompactIndex:
        vectors = open_vector_file(path)
        n, dim = vectors.shape
        nlist = config.nlist or compact_nlist(n)
        factory = config.factory.replace("{nlist}", str(nlist))
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError as exc:
            raise GalleryError(f"faiss cannot build an IVF index from {factory!r}: {exc}") from exc
        ivf.cp.seed = config.seed
        if hasattr(ivf, "do_polysemous_training"):
            # index_factory turns it on for IVF-PQ; it reorders codes for Hamming
            # filtering we do not use and made training 50x slower
            ivf.do_polysemous_training = False
        n_train = min(n, nlist * config.train_per_list, config.train_max)
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(n, size=n_train, replace=False))
        start = time.perf_counter()
        sample = _unit_matrix(vectors[rows], dim, f"{path}: vectors", GalleryError)
        logger.info("training %s on %d of %d vectors", factory, n_train, n)
        index.train(sample)
        del sample
        trained = time.perf_counter()
        for i in range(0, n, _ADD_CHUNK):
            chunk = vectors[i : i + _ADD_CHUNK]
            try:
                x = _unit_matrix(chunk, dim, "vectors", GalleryError)
            except GalleryError as exc:
                raise GalleryError(f"{path}, rows {i}..{i + len(chunk) - 1}: {exc}") from exc
            index.add(x)
            logger.info("compact index: %d / %d added (%.0f s)", index.ntotal, n, time.perf_counter() - trained)
        _search_with_flat_quantizer(ivf)
        logger.info(
            "built %s over %d vectors: train %.1f s, add %.1f s",
            factory, n, trained - start, time.perf_counter() - trained,
        )
        built = cls(index, path, config, search_threads=search_threads)
        built._build_stats = BuildStats(n_train, trained - start, time.perf_counter() - trained)
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
        q = _unit_matrix(queries, self._dim, "queries", CmceError)
        k = _positive_int(k, "k", 1, CmceError)
        nprobe = self.nprobe if nprobe is None else _positive_int(nprobe, "nprobe", 1, CmceError)
        rerank = self._config.rerank if rerank is None else _positive_int(rerank, "rerank", 1, CmceError)
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
                raise CmceError(f"threshold must be a number or None, got {threshold!r}")
            if not np.isfinite(threshold):
                raise CmceError(f"threshold must be finite, got {threshold!r}")
        n = self._count
        selected = None
        n_selected = n
        if mask is not None:
            m = _bool_mask(mask, n)
            n_selected = int(np.count_nonzero(m))
            if n_selected < n:
                selected = m
        k_found = min(k, n_selected)
        if q.shape[0] == 0 or k_found == 0:
            nothing = np.empty((q.shape[0], 0), dtype=np.int64)
            return SearchResult(*_pad(nothing.astype(np.float32), nothing, k))
        with _omp_threads(self._search_threads):
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
        return SearchResult(*_pad(scores, ids, k))

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
        """Exact scores of (Q, R) candidate positions (-1 = none) from the vector file; top ``k``."""
        valid = candidates >= 0
        flat = np.unique(candidates[valid])  # sorted: reads the file in order
        rows = np.asarray(self._vectors[flat], dtype=np.float32)  # (U, D)
        where = np.searchsorted(flat, np.where(valid, candidates, flat[0] if flat.size else 0))
        exact = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for i in range(len(q)):
            exact[i, valid[i]] = rows[where[i, valid[i]]] @ q[i]
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
                "fingerprint": _file_fingerprint(self._vectors_path),
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
        if _file_fingerprint(vec_path) != vec_fp:
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

