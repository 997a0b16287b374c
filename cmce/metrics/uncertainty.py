"""The ensemble's uncertainty: how much an entry's members disagree.
"""

from __future__ import annotations

import numpy as np

from cmce.errors import CmceError
from cmce.metrics._inputs import _real_array

__all__ = ["mean_pairwise_cosine_distance"]


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> np.ndarray:
    """Mean cosine distance ``1 - cos`` over all pairs within each group of embeddings.

    For group ``g`` with unit vectors ``v_1..v_N`` (rows are L2-normalised
    here, so any non-zero scale is fine), expanding the squared norm of the sum
    gives ``||sum_i v_i||^2 = sum_i ||v_i||^2 + 2 sum_{i<j} <v_i, v_j>``, i.e.::

        sum_{i<j} cos(v_i, v_j) = (||sum_i v_i||^2 - N) / 2
        mean distance = 1 - (||sum_i v_i||^2 - N) / (N (N - 1))

    which costs ``O(G * N * D)`` instead of ``O(G * N^2 * D)``. The result is
    clipped to ``[0, 2]`` against rounding. ``N = 1`` (no pair) gives 0.

    Args:
        embeddings: ``(G, N, D)`` real, finite, ``N >= 1``, ``D >= 1``, no
            all-zero row.

    Returns:
        ``(G,)`` float64 mean pairwise cosine distances in ``[0, 2]``.

    Raises:
        CmceError: On a non-3-D / non-numeric / non-finite input, ``N == 0``,
            ``D == 0`` or an all-zero vector (its direction is undefined).

    Example:
        Group 0: ``(1,0), (0,1), (1,0)`` has pair distances ``1, 0, 1`` ->
        ``2/3``; group 1 is three copies of one direction -> 0::

        >>> e = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]],
        ...               [[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]]])
        >>> np.round(mean_pairwise_cosine_distance(e), 6).tolist()
        [0.666667, 0.0]
    """
    e = _real_array("embeddings", embeddings, 3, "(G, N, D)", allow_inf=False)
    n_groups, n, dim = e.shape
    if n == 0 or dim == 0:
        raise CmceError(
            f"embeddings must have shape (G, N, D) with N >= 1 and D >= 1, got {e.shape}"
        )
    if n_groups == 0:
        return np.zeros(0, dtype=np.float64)
    # scale by the max |x| first so the norm neither overflows nor underflows
    scale = np.abs(e).max(axis=2, keepdims=True)
    if (scale == 0).any():
        raise CmceError("embeddings must not contain an all-zero vector (cannot L2-normalise it)")
    unit = e / scale
    unit = unit / np.linalg.norm(unit, axis=2, keepdims=True)
    if n == 1:
        return np.zeros(n_groups, dtype=np.float64)
    total = unit.sum(axis=1)  # (G, D)
    sq_norm = np.einsum("gd,gd->g", total, total)
    mean_cos = (sq_norm - n) / (n * (n - 1))
    return np.clip(1.0 - mean_cos, 0.0, 2.0)
