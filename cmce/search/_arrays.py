"""Checks and shapes shared by the indexes of :mod:`cmce.search` (package-internal).

Every index validates its inputs the same way (unit rows of the right dimension,
positive ints, a bool mask of one entry per position) and pads faiss's answers to
``k`` columns the same way, so the messages and the padding are written once here.
"""

from __future__ import annotations

import numpy as np

from cmce.errors import CmceError
from cmce.search.base import UNIT_NORM_TOLERANCE

__all__ = ["bool_mask", "pad_to_k", "positive_int", "unit_matrix"]


def unit_matrix(value: object, dim: int, name: str, error: type[CmceError]) -> np.ndarray:
    """Return ``value`` as a C-contiguous float32 (N, dim) array of unit rows, or raise.

    Args:
        value: (N, dim) array-like of real numbers.
        dim: the expected dimension.
        name: what ``value`` is, for the error message ("queries", "vectors").
        error: the error class to raise (``CmceError`` for queries, ``GalleryError``
            for stored vectors).

    Raises:
        error: not a 2-D real array, another dimension, NaN/inf, or a row whose norm
            is not 1 within :data:`~cmce.search.base.UNIT_NORM_TOLERANCE`.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise error(f"{name} must be a numeric array of shape (N, {dim}): {exc}") from exc
    if arr.ndim != 2:
        raise error(f"{name} must be a 2-D array of shape (N, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise error(
            f"{name} have dimension {arr.shape[1]} but this index holds {dim}-d vectors "
            f"(expected shape (N, {dim}), got {arr.shape})"
        )
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise error(f"{name} must hold real numbers (float or int), got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] == 0:
        return arr
    norms = np.sqrt(np.einsum("ij,ij->i", arr, arr))
    bad = ~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE)  # NaN norms are bad too
    if bad.any():
        rows = np.flatnonzero(bad)
        first = int(rows[0])
        if not np.isfinite(arr[first]).all():
            raise error(f"{name} must be finite: row {first} holds NaN or inf")
        raise error(
            f"{name} must be L2-normalised (unit norm within {UNIT_NORM_TOLERANCE:g}): row "
            f"{first} has norm {norms[first]:.6g}, {rows.size} of {arr.shape[0]} rows are "
            "off; L2-normalise each row first (x / np.linalg.norm(x, axis=1, keepdims=True))"
        )
    return arr


def positive_int(value: object, name: str, minimum: int, error: type[CmceError]) -> int:
    """``value`` as an int ``>= minimum``, or ``error`` saying what was wrong (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise error(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise error(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def bool_mask(mask: object, n: int) -> np.ndarray:
    """``mask`` as an (n,) bool array (one entry per position), or CmceError saying what it is."""
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != (n,):
        raise CmceError(
            f"mask must be a bool array of shape ({n},) (one entry per position, "
            f"len(index)), got dtype {m.dtype} shape {m.shape}"
        )
    return m


def pad_to_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen (Q, <=k) faiss results to (Q, k) and turn faiss's 'no hit' into -1 / -inf."""
    q = ids.shape[0]
    out_scores = np.full((q, k), -np.inf, dtype=np.float32)
    out_ids = np.full((q, k), -1, dtype=np.int64)
    out_scores[:, : ids.shape[1]] = scores
    out_ids[:, : ids.shape[1]] = ids
    out_scores[out_ids < 0] = -np.inf
    return out_scores, out_ids
