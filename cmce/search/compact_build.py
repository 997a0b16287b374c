"""Training and filling the compressed index of a :class:`cmce.search.compact.CompactIndex`.

:func:`build_ivf` reads a float16 vector file (:mod:`cmce.search.vector_file`),
trains a faiss IVF index from :attr:`CompactConfig.factory` on a seeded sample of
its rows, adds every row in chunks and finally swaps the HNSW coarse quantizer for
a flat one (:func:`use_flat_quantizer`). How long that takes at 1M and 10M entries
is in :data:`cmce.search.compact_config.COMPACT_FACTORY`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.search._arrays import unit_matrix
from cmce.search.compact_config import CompactConfig, compact_nlist
from cmce.search.vector_file import open_vector_file

try:
    import faiss
except ImportError as exc:  # pragma: no cover - faiss-cpu is a core requirement
    raise ImportError("cmce.search.compact_build needs faiss: pip install faiss-cpu") from exc

logger = logging.getLogger(__name__)

__all__ = ["BuildStats", "build_ivf", "use_flat_quantizer"]

_ADD_CHUNK = 262_144  # rows read from the file and added per step


@dataclass(frozen=True)
class BuildStats:
    """What :meth:`cmce.search.compact.CompactIndex.build` did.

    Attributes:
        train_rows: vectors sampled for training.
        train_seconds: wall time of training (k-means, PQ, OPQ if any).
        add_seconds: wall time of reading, checking, assigning and encoding every row.
    """

    train_rows: int
    train_seconds: float
    add_seconds: float


def build_ivf(path: Path, config: CompactConfig) -> tuple[faiss.Index, BuildStats]:
    """Train and fill a faiss IVF index over the rows of a float16 vector file.

    Trains on ``min(N, nlist * train_per_list, train_max)`` rows sampled
    uniformly (seeded), then adds every row in chunks of 262,144 (rows checked to
    be unit norm). Runs with the caller's OpenMP thread count.

    Args:
        path: (N, D) float16 ``.npy`` file.
        config: the factory string, list count, sample sizes and seed.

    Returns:
        the filled index (ids = row numbers; L2 metric) and what building took.

    Raises:
        GalleryError: unreadable file, rows that are not unit norm, or a factory
            string that faiss refuses or that is not an IVF index.
    """
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
    sample = unit_matrix(vectors[rows], dim, f"{path}: vectors", GalleryError)
    logger.info("training %s on %d of %d vectors", factory, n_train, n)
    index.train(sample)
    del sample
    trained = time.perf_counter()
    for i in range(0, n, _ADD_CHUNK):
        chunk = vectors[i : i + _ADD_CHUNK]
        try:
            x = unit_matrix(chunk, dim, "vectors", GalleryError)
        except GalleryError as exc:
            raise GalleryError(f"{path}, rows {i}..{i + len(chunk) - 1}: {exc}") from exc
        index.add(x)
        logger.info("compact index: %d / %d added (%.0f s)", index.ntotal, n, time.perf_counter() - trained)
    use_flat_quantizer(ivf)
    logger.info(
        "built %s over %d vectors: train %.1f s, add %.1f s",
        factory, n, trained - start, time.perf_counter() - trained,
    )
    return index, BuildStats(n_train, trained - start, time.perf_counter() - trained)


def use_flat_quantizer(ivf: faiss.IndexIVF) -> None:
    """Replace an HNSW coarse quantizer by a flat one over the same centroids.

    The HNSW graph makes *adding* fast (10M assignments of one list each), but a
    search probes a large share of the lists (:data:`~cmce.search.compact_config.COMPACT_PROBE_FRACTION`), and
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
