"""One vector-search interface and one result type for every index of gallery vectors.

Every index answers the same question: the ``k`` entries of a gallery most
cosine-similar to each query, by *position* (the entry's row, its id for life),
optionally among the entries a boolean ``mask`` keeps. Vectors and queries are
L2-normalised, so cosine similarity is their inner product; an index refuses
vectors whose norm is off by more than :data:`UNIT_NORM_TOLERANCE`.

Implementations (each module's docstring says how it searches):

* :class:`cmce.search.index.VectorIndex`: exact (faiss flat, with a float16 scan of
  large galleries, :mod:`cmce.search.scan`) or HNSW (:mod:`cmce.search.hnsw`), every
  vector in RAM, growing (``add``/``remove``).
* :class:`cmce.search.compact.CompactIndex`: IVF-PQ over a float16 vector file on
  disk, re-ranked exactly; built once, immutable.

Callers that only search (a gallery, a benchmark) type their index as
:class:`VectorSearch` and never need to know which one they hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np

from cmce.errors import CmceError

__all__ = ["UNIT_NORM_TOLERANCE", "SearchHit", "SearchResult", "VectorSearch"]

UNIT_NORM_TOLERANCE = 1e-3
"""Largest accepted ``| ||x|| - 1 |`` of a stored or query vector."""


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


@runtime_checkable
class VectorSearch(Protocol):
    """What every vector index offers: cosine top-``k`` by position, a mask, a file.

    Implemented by :class:`cmce.search.index.VectorIndex` and
    :class:`cmce.search.compact.CompactIndex`; ``isinstance(x, VectorSearch)``
    checks that the methods exist (not their signatures).

    Positions are ``0 .. len(index) - 1``, never reused; a ``mask`` has one entry
    per position. Implementations may take more keyword arguments (how they are
    built, searched or loaded) than the ones declared here.
    """

    @property
    def dim(self) -> int:
        """Dimension D of the vectors."""
        ...

    def __len__(self) -> int:
        """Number of positions N (the length of a search mask)."""
        ...

    def search(self, queries: np.ndarray, k: int = 10, mask: np.ndarray | None = None) -> SearchResult:
        """Find the ``k`` most cosine-similar selected entries of each query.

        Args:
            queries: (Q, D) L2-normalised rows.
            k: hits per query (>= 1). Rows are padded with position -1 and score
                ``-inf`` when fewer than ``k`` entries are selected.
            mask: optional (N,) bool; entries where it is ``False`` are never returned.

        Returns:
            (Q, k) scores and positions, best first.

        Raises:
            CmceError: queries of the wrong shape or not unit norm, bad ``k`` or mask.
        """
        ...

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM for searching (each implementation says what it counts)."""
        ...

    def save(self, path: str | os.PathLike[str], /) -> Path:
        """Write the index to ``path`` (a file or a folder, per implementation) and return it."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike[str], /, *, search_threads: int | None = 1) -> Self:
        """Read an index written by :meth:`save`.

        Raises:
            GalleryError: missing, unreadable or inconsistent files.
        """
        ...
