"""Settings of the compact IVF-PQ index, with the measurements that chose them.

:class:`CompactConfig` says how a :class:`cmce.search.compact.CompactIndex` is built
(:mod:`cmce.search.compact_build`) and searched; its defaults are the constants
below, each with the figures behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cmce.errors import GalleryError
from cmce.search._arrays import positive_int

__all__ = [
    "COMPACT_FACTORY",
    "COMPACT_PROBE_FRACTION",
    "COMPACT_QUANTIZER_EF",
    "COMPACT_RERANK",
    "COMPACT_TRAIN_MAX",
    "COMPACT_TRAIN_PER_LIST",
    "CompactConfig",
    "compact_nlist",
]

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
(``benchmarks/bench_compact_index.py --realism-only``). A query's top-10 are its
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

Indexes built by :meth:`~cmce.search.compact.CompactIndex.build` search with a flat
quantizer (see :func:`cmce.search.compact_build.use_flat_quantizer`); this applies to
indexes built elsewhere."""

COMPACT_TRAIN_PER_LIST = 32
"""Training vectors sampled per IVF list (k-means and PQ), capped by :data:`COMPACT_TRAIN_MAX`."""

COMPACT_TRAIN_MAX = 262_144
"""Most vectors sampled from the file for training."""


def compact_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: the power of two nearest ``2 * sqrt(n)``, 64..65536.

    At 1M this gives 2048 lists (about 490 vectors each), at 10M 8192 (1220 each),
    at 100M 16384. Fewer, longer lists keep k-means training affordable on a few
    cores (training 8192 lists on 262,144 vectors took 576 s on 2 busy vCPUs) and
    suit the fast-scan kernel; with 512 instead of 2048 lists at 1M, recall at a
    given share of probed lists was slightly lower (0.969 against 0.978 at half).
    """
    n = positive_int(n, "n", 1, GalleryError)
    return int(min(65_536, max(64, 2 ** round(math.log2(2 * math.sqrt(n))))))


@dataclass(frozen=True)
class CompactConfig:
    """How a :class:`~cmce.search.compact.CompactIndex` is built and searched.

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
            positive_int(self.nlist, "nlist", 1, GalleryError)
        if self.nprobe is not None:
            positive_int(self.nprobe, "nprobe", 1, GalleryError)
        for name in ("rerank", "quantizer_ef", "train_per_list", "train_max"):
            positive_int(getattr(self, name), name, 1, GalleryError)
        positive_int(self.seed, "seed", 0, GalleryError)
