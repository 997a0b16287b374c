"""Clustering metrics: BCubed precision/recall/F and pairwise F (pure functions).

A *clustering* assigns each item a cluster id; the *truth* assigns it a class (identity).
Both are ``(N,)`` arrays of hashable labels, compared item by item.

BCubed (Bagga & Baldwin 1998; Amigó et al. 2009) scores every item:

* precision of item *i* = |C(i) ∩ L(i)| / |C(i)|: the share of its cluster that is its class;
* recall of item *i* = |C(i) ∩ L(i)| / |L(i)|: the share of its class that is in its cluster;

where C(i) is the set of items in *i*'s cluster (*i* included) and L(i) its class.
BCubed P and R are the means over items; F = 2PR / (P + R).

Pairwise precision/recall count the unordered pairs of distinct items: precision =
pairs together in both / pairs together in the clustering, recall = pairs together in both /
pairs together in the truth, F their harmonic mean. With no pair together in the clustering
(all singletons) pairwise precision is 1 by convention (nothing claimed, nothing wrong);
with no pair together in the truth, recall is 1.

Worked example (used in the doctests): truth ``[a, a, a, b, b]``, clustering ``[1, 1, 2, 2, 2]``.
Items 0 and 1: P = 2/2, R = 2/3; item 2: P = 1/3, R = 1/3; items 3 and 4: P = 2/3, R = 2/2.
BCubed P = (1 + 1 + 1/3 + 2/3 + 2/3) / 5 = 0.7333, R = (2/3 + 2/3 + 1/3 + 1 + 1) / 5 = 0.7333.
Pairs: clustering together {01, 23, 24, 34} (4), truth together {01, 02, 12, 34} (4), both
{01, 34} (2): pairwise P = R = F = 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cmce.errors import CmceError

__all__ = ["bcubed", "bcubed_items", "pairwise_prf", "same_person_cosine"]


def _codes(clusters: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, t = np.asarray(clusters), np.asarray(truth)
    if c.ndim != 1 or t.shape != c.shape:
        raise CmceError(f"clusters and truth must be (N,) arrays of the same length; got {c.shape} and {t.shape}")
    return np.unique(c, return_inverse=True)[1].ravel(), np.unique(t, return_inverse=True)[1].ravel()


def bcubed_items(clusters: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-item BCubed precision and recall, ``(N,)`` each (see the module's docstring).

    Example:
        >>> p, r = bcubed_items([1, 1, 2, 2, 2], ["a", "a", "a", "b", "b"])
        >>> [round(float(x), 3) for x in p], [round(float(x), 3) for x in r]
        ([1.0, 1.0, 0.333, 0.667, 0.667], [0.667, 0.667, 0.333, 1.0, 1.0])
    """
    c, t = _codes(clusters, truth)
    if not len(c):
        return np.zeros(0), np.zeros(0)
    # joint counts of (cluster, class): the distinct combined keys only (a dense table is clusters x classes)
    _, pair, joint = np.unique(c.astype(np.int64) * (int(t.max()) + 1) + t, return_inverse=True, return_counts=True)
    both = joint[pair.ravel()].astype(np.float64)
    return both / np.bincount(c)[c], both / np.bincount(t)[t]


def bcubed(clusters: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> tuple[float, float, float]:
    """BCubed (precision, recall, F) of a clustering against the truth.

    Example:
        >>> [round(x, 4) for x in bcubed([1, 1, 2, 2, 2], ["a", "a", "a", "b", "b"])]
        [0.7333, 0.7333, 0.7333]
    """
    p, r = bcubed_items(clusters, truth)
    if not len(p):
        raise CmceError("BCubed of an empty clustering is undefined")
    pm, rm = float(p.mean()), float(r.mean())
    return pm, rm, 2 * pm * rm / (pm + rm)


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def pairwise_prf(clusters: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> tuple[float, float, float]:
    """Pairwise (precision, recall, F): over unordered pairs of distinct items.

    Example:
        >>> pairwise_prf([1, 1, 2, 2, 2], ["a", "a", "a", "b", "b"])
        (0.5, 0.5, 0.5)
    """
    c, t = _codes(clusters, truth)
    if not len(c):
        raise CmceError("pairwise F of an empty clustering is undefined")
    both = _pairs(np.unique(c.astype(np.int64) * (int(t.max()) + 1) + t, return_counts=True)[1])
    claimed, true = _pairs(np.bincount(c)), _pairs(np.bincount(t))
    p = both / claimed if claimed else 1.0
    r = both / true if true else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def same_person_cosine(vectors: np.ndarray, truth: Sequence | np.ndarray) -> float:
    """Mean cosine of each face with the next face of the same class, faces taken class by class in
    the order given: how tightly a person's faces sit in a space (each face counts once, so large
    classes weigh by their faces, not by their pairs). Classes of one face count nothing.

    ``vectors``: (N, D) unit rows. Worked example: faces 0, 1 of class a at cosine 0.6, face 2
    alone in class b: the one pair (0, 1) gives 0.6.

    >>> v = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    >>> round(same_person_cosine(v, ["a", "a", "b"]), 3)
    0.6

    Raises:
        ValueError: no class holds two faces.
    """
    v = np.asarray(vectors, np.float32)
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    order = np.argsort(t, kind="stable")
    same = t[order[1:]] == t[order[:-1]]
    if not same.any():
        raise ValueError("same_person_cosine needs a class of two faces or more")
    a, b = order[:-1][same], order[1:][same]
    return float(np.einsum("ij,ij->i", v[a], v[b]).mean())
