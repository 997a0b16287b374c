"""The ensemble's uncertainty: how much an entry's members disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cmce.errors import CmceError
from cmce.metrics._inputs import _bool_vector, _is_real_dtype

__all__ = ["mean_pairwise_cosine_distance", "member_sum"]


def _member_arrays(members: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate ``members``: a list or tuple of N >= 1 real (G, D) arrays of one shape, D >= 1."""
    if isinstance(members, np.ndarray) or not isinstance(members, (list, tuple)):
        raise CmceError(
            "members must be a list or tuple of N (G, D) arrays, one per member "
            "(for a (G, N, D) stack pass list(stack.transpose(1, 0, 2)))"
        )
    if not members:
        raise CmceError("members must hold at least one (G, D) array (N >= 1)")
    try:
        vs = [np.asarray(v) for v in members]
    except Exception as exc:  # ragged lists and the like
        raise CmceError(f"members must be numeric (G, D) arrays: {exc}") from exc
    shapes = [v.shape for v in vs]
    if vs[0].ndim != 2 or any(s != shapes[0] for s in shapes) or shapes[0][1] == 0:
        raise CmceError(f"members must be (G, D) arrays of one shape with D >= 1, got shapes {shapes}")
    bad = [str(v.dtype) for v in vs if not _is_real_dtype(v.dtype)]
    if bad:
        raise CmceError(f"members must hold real numbers (int or float), got dtype {bad[0]}")
    return vs


def _unit_rows(v: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """``v`` with every row scaled to unit length; the ``rows`` used (default all) must be finite, non-zero."""
    scale = np.abs(v).max(axis=1, keepdims=True)  # scale by max |x| first: no overflow, no underflow
    used = scale if rows is None else scale[rows]
    if not np.isfinite(used).all():
        raise CmceError("members must be finite (no NaN or inf)")
    if (used == 0).any():
        raise CmceError("members must not contain an all-zero vector (cannot L2-normalise it)")
    with np.errstate(invalid="ignore", divide="ignore"):  # absent rows may be zero; they are never read
        unit = v / scale
        return unit / np.linalg.norm(unit, axis=1, keepdims=True)


def mean_pairwise_cosine_distance(
    members: Sequence[np.ndarray],
    present: Sequence[np.ndarray] | None = None,
    *,
    normalise: bool = True,
) -> np.ndarray:
    """Per entry, the mean cosine distance ``1 - cos`` over all pairs of the members it has.

    The one uncertainty of the method (the paper's disagreement). Entry ``g`` has the
    ``n`` members ``present`` marks, unit vectors ``v_1..v_n``. Expanding the squared
    norm of their sum ``s`` gives ``||s||^2 = n + 2 sum_{i<j} <v_i, v_j>``, so::

        mean distance = 1 - (||s||^2 - n) / (n (n - 1))

    in ``O(G * N * D)``, member by member (no ``(G, N, D)`` copy); clipped to ``[0, 2]``.

    **Fewer than two members** (``n`` is 0 or 1): no pair to compare, no disagreement:
    **0.0**, never NaN. A caller that must tell "not measured" from "agrees" masks
    those entries itself (``Bundle.gallery_vectors`` stores NaN there).

    Args:
        members: N arrays ``(G, D)``, one per member, as a list or tuple (a bare
            ndarray is refused, so a ``(G, N, D)`` stack is never misread as
            ``(N, G, D)``); real; ``N >= 1``, ``D >= 1``. The rows used must be finite.
        present: N ``(G,)`` bool arrays, which entries have each member (default:
            every entry has every member). Absent rows are never read.
        normalise: True (default): each row used is L2-normalised first (any
            non-zero scale is fine; an all-zero row used raises). False: rows must
            already be unit vectors (a gallery's are; not checked, not copied): the
            result is exactly the one stored galleries were scored with.

    Returns:
        ``(G,)`` distances in ``[0, 2]``, in the members' float dtype (float32 stays
        float32, so a gallery keeps its stored numbers; ints and float64 give float64).

    Raises:
        CmceError: On members or ``present`` not as above; with ``normalise``, on an
            all-zero row used.

    Example:
        Entry 0: ``(1,0), (0,1), (1,0)`` has pair distances ``1, 0, 1`` -> ``2/3``;
        entry 1 is three copies of one direction -> 0; entry 2 has one member -> 0::

        >>> a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
        >>> b = np.array([[0.0, 2.0], [2.0, 2.0], [0.0, 1.0]])
        >>> c = np.array([[3.0, 0.0], [5.0, 5.0], [0.0, 0.0]])
        >>> only_a = np.array([True, True, False])
        >>> d = mean_pairwise_cosine_distance([a, b, c], [np.ones(3, bool), only_a, only_a])
        >>> np.round(d, 6).tolist()
        [0.666667, 0.0, 0.0]
    """
    total, count = member_sum(members, present, unit=normalise)
    sq = np.einsum("gd,gd->g", total, total)
    if not np.isfinite(sq).all():  # a NaN or inf in a row used reaches its entry's sum
        raise CmceError("members must be finite (no NaN or inf)")
    with np.errstate(divide="ignore", invalid="ignore"):  # n < 2: replaced by 0 below
        dist = np.clip(1.0 - (sq - count) / (count * (count - 1)), 0.0, 2.0)
    return np.where(count >= 2, dist, 0.0).astype(total.dtype, copy=False)


def member_sum(members: Sequence[np.ndarray], present: Sequence[np.ndarray] | None = None, *,
               unit: bool = False, dtype: np.dtype | type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, the sum of the members it has and how many it has: one pass, member by member.

    The one member loop of the method: the fused vector (``cmce.method.ensemble.fuse_members``)
    is this sum normalised, the uncertainty (``mean_pairwise_cosine_distance``) reads its
    squared norm. No ``(G, N, D)`` stack is made; absent rows are never read.

    Args:
        members: N arrays ``(G, D)``, one per member, as a list or tuple (see
            ``mean_pairwise_cosine_distance``).
        present: N ``(G,)`` bool arrays, which entries have each member (default all).
        unit: L2-normalise each row used first (an all-zero or non-finite row used raises).
        dtype: the sum's dtype (default: the members' float dtype, at least float32).

    Returns:
        ``total`` ``(G, D)`` and ``count`` ``(G,)``, both in ``dtype``.

    Raises:
        CmceError: members or ``present`` not as above.

    Example:
        >>> t, n = member_sum([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])], [np.array([True]), np.array([False])])
        >>> t.tolist(), n.tolist()
        ([[1.0, 0.0]], [1.0])
    """
    vs = _member_arrays(members)
    g, d = vs[0].shape
    if present is None:
        pres: list[np.ndarray | None] = [None] * len(vs)
    else:
        if isinstance(present, np.ndarray) or not isinstance(present, (list, tuple)) or len(present) != len(vs):
            raise CmceError(f"present must be a list or tuple of {len(vs)} (G,) bool arrays, one per member")
        pres = [_bool_vector("every array in present", p, g, "G") for p in present]
    if dtype is None:
        dtype = np.result_type(*(v.dtype for v in vs), np.float32)  # float32 stays float32; ints, float64: float64
    total = np.zeros((g, d), dtype)
    count = np.zeros(g, dtype)
    for v, w in zip(vs, pres):
        if w is not None and not w.any():
            continue
        v = v.astype(dtype, copy=False)
        if unit:
            v = _unit_rows(v, w)
        if w is None or w.all():
            total += v
            count += 1.0
        else:
            total[w] += v[w]
            count += w
    return total, count
