"""Retrieval metrics of a query-vs-gallery similarity matrix: Recall@k, mAP, per-query top-1 hits.

Conventions (shared with ``verification.verification_scores``):

* ``similarity`` has shape ``(Q, G)``: row ``q`` holds the similarity of query
  ``q`` to every gallery entry; **higher means more similar**.
* Rankings sort a row by decreasing similarity; **ties are broken by the lower
  gallery index** (a stable sort), so every result is deterministic.
* ``gallery_mask`` (shape ``(G,)``, bool) drops the gallery entries where it is
  ``False`` exactly as if they had never been in the gallery.
* A query is *counted* only if at least one (kept) gallery entry carries its
  label; queries without any positive are left out of the denominator, because
  no ranking could ever retrieve them (this is the usual closed-set protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cmce.errors import CmceError
from cmce.metrics._inputs import _retrieval_inputs

__all__ = ["l2_normalise", "recall_at_k", "mean_average_precision", "top1_hits", "entry_misses"]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (along its last axis) scaled to unit length, as float32; a zero row stays zero.

    The one normaliser of the experiments (evaluation, ablations, benchmarks).

    Example:
        >>> l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def recall_at_k(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    gallery_mask: np.ndarray | None = None,
) -> dict[int, float]:
    """Recall@k (a.k.a. CMC top-k accuracy) of a query-vs-gallery similarity matrix.

    A query is a *hit at k* if any of its ``k`` most similar gallery entries
    carries its label. Ranking is by decreasing similarity with ties broken by
    the lower gallery index. With ``r_q`` the 0-based rank of the first gallery
    entry sharing query ``q``'s label and ``C`` the set of counted queries::

        recall@k = |{q in C : r_q < k}| / |C|

    Queries whose label is absent from the (masked) gallery are **not** in
    ``C`` (they could never be retrieved). A ``k`` larger than the number of
    kept gallery entries means "the whole gallery", so it gives 1.0.

    Computed in ``O(Q * G)`` without sorting: ``r_q`` is the number of entries
    scoring strictly above the best positive plus the entries tied with it at a
    lower index.

    Args:
        similarity: ``(Q, G)`` real, finite; higher = more similar.
        query_labels: ``(Q,)`` labels of the queries.
        gallery_labels: ``(G,)`` labels of the gallery entries.
        ks: Positive integers ``k`` to report.
        gallery_mask: Optional ``(G,)`` bool; ``False`` entries are removed.

    Returns:
        ``{k: recall@k}`` with values in ``[0, 1]``; every value is ``nan`` when
        no query is counted (no queries, or none has a positive in the gallery).

    Raises:
        CmceError: On a malformed shape, dtype, non-finite similarity or a
            non-positive / non-integer ``k``.

    Example:
        Query 0 (label 0) has its positive at rank 1 (behind gallery entry 1);
        query 1 (label 1) has it at rank 0; query 2 (label 9) has none and is
        not counted::

        >>> sim = np.array([[0.2, 0.9, 0.8],
        ...                 [0.1, 0.7, 0.3],
        ...                 [0.5, 0.5, 0.5]])
        >>> recall_at_k(sim, [0, 1, 9], [0, 1, 0], ks=(1, 2))
        {1: 0.5, 2: 1.0}
    """
    if isinstance(ks, (int, np.integer)) or not isinstance(ks, (Sequence, np.ndarray)):
        raise CmceError(f"ks must be a sequence of positive ints such as (1, 5), got {ks!r}")
    k_list: list[int] = []
    for k in ks:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise CmceError(f"every k in ks must be an int >= 1, got {k!r}")
        k_list.append(int(k))
    if not k_list:
        raise CmceError("ks must contain at least one k >= 1")

    sim, pos = _retrieval_inputs(similarity, query_labels, gallery_labels, gallery_mask)
    counted = pos.any(axis=1)
    if not counted.any():
        return {k: float("nan") for k in k_list}
    sim, pos = sim[counted], pos[counted]

    best = np.where(pos, sim, -np.inf).max(axis=1)  # best positive score per query
    at_best = sim == best[:, None]
    first = np.argmax(pos & at_best, axis=1)  # lowest index of a best positive
    cols = np.arange(sim.shape[1])
    rank = (sim > best[:, None]).sum(axis=1) + (at_best & (cols[None, :] < first[:, None])).sum(
        axis=1
    )
    return {k: float(np.mean(rank < k)) for k in k_list}


def mean_average_precision(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    gallery_mask: np.ndarray | None = None,
) -> float:
    """Mean average precision (mAP) of a query-vs-gallery similarity matrix.

    For query ``q``, rank the kept gallery by decreasing similarity (ties by
    lower gallery index), let ``rel_i`` be 1 when the entry at 1-based rank
    ``i`` shares ``q``'s label, ``P_q = sum_i rel_i`` and
    ``prec@i = (sum_{j<=i} rel_j) / i``. Then::

        AP_q = (1 / P_q) * sum_i rel_i * prec@i
        mAP  = mean of AP_q over the queries with P_q >= 1

    Queries without any positive in the (masked) gallery are left out.

    Args:
        similarity: ``(Q, G)`` real, finite; higher = more similar.
        query_labels: ``(Q,)`` labels of the queries.
        gallery_labels: ``(G,)`` labels of the gallery entries.
        gallery_mask: Optional ``(G,)`` bool; ``False`` entries are removed.

    Returns:
        mAP in ``[0, 1]``, or ``nan`` when no query has a positive.

    Raises:
        CmceError: On a malformed shape, dtype or non-finite similarity.

    Example:
        One query (label 0); the gallery ranks as ``[0, 1, 0]`` by label, so
        the positives sit at ranks 1 and 3: ``AP = (1/1 + 2/3) / 2 = 5/6``::

        >>> sim = np.array([[0.9, 0.8, 0.1]])
        >>> round(mean_average_precision(sim, [0], [0, 1, 0]), 4)
        0.8333
    """
    sim, pos = _retrieval_inputs(similarity, query_labels, gallery_labels, gallery_mask)
    counted = pos.any(axis=1)
    if not counted.any():
        return float("nan")
    sim, pos = sim[counted], pos[counted]
    order = np.argsort(-sim, axis=1, kind="stable")
    rel = np.take_along_axis(pos, order, axis=1)
    precision = np.cumsum(rel, axis=1) / np.arange(1, sim.shape[1] + 1)
    ap = (precision * rel).sum(axis=1) / rel.sum(axis=1)
    return float(ap.mean())


def top1_hits(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    gallery_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per-query top-1 hit: 1.0 right, 0.0 wrong, NaN where the query is not counted.

    The same counting as ``recall_at_k(..., ks=(1,))``: a query whose label is absent
    from the (masked) gallery is not counted, and ties go to the lower gallery index,
    so ``np.nanmean(top1_hits(...)) == recall_at_k(..., ks=(1,))[1]``.

    Example:
        >>> top1_hits(np.array([[0.2, 0.9], [0.8, 0.1], [0.5, 0.4]]), [0, 0, 7], [0, 1])
        array([ 0.,  1., nan])
    """
    sim, pos = _retrieval_inputs(similarity, query_labels, gallery_labels, gallery_mask)
    out = np.full(sim.shape[0], np.nan)
    if sim.shape[1] == 0:
        return out
    best = sim.argmax(axis=1)
    counted = pos.any(axis=1)
    out[counted] = pos[np.arange(sim.shape[0]), best][counted]
    return out


def entry_misses(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per gallery entry: how many queries of its label there are, and how many miss at rank 1.

    A query misses when its most similar gallery entry (ties to the lower index, as in
    ``top1_hits``) has another label. Each query counts for every gallery entry of its
    label, so the counts say which entries fail their people: the target of a learned
    quality score.

    Returns:
        ((G,) misses, (G,) queries), float64.

    Example:
        >>> entry_misses(np.array([[0.2, 0.9], [0.8, 0.1], [0.3, 0.6]]), [0, 0, 1], [0, 1])
        (array([1., 0.]), array([2., 1.]))
    """
    sim, pos = _retrieval_inputs(similarity, query_labels, gallery_labels, None)
    g = sim.shape[1]
    if sim.shape[0] == 0 or g == 0:
        return np.zeros(g), np.zeros(g)
    hit = pos[np.arange(sim.shape[0]), sim.argmax(axis=1)]
    queries = pos.sum(axis=0).astype(np.float64)
    misses = (pos & ~hit[:, None]).sum(axis=0).astype(np.float64)
    return misses, queries
