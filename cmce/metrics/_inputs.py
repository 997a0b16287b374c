"""Input checks shared by the metric modules: each returns a validated array or raises
:class:`cmce.errors.CmceError` with a message that says what is valid.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from cmce.errors import CmceError


def _is_real_dtype(dtype: np.dtype) -> bool:
    """True for integer and floating dtypes (not bool, complex, str or object)."""
    return (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)) and (
        dtype != np.bool_
    )


def _real_array(name: str, value: object, ndim: int, shape_hint: str, allow_inf: bool) -> np.ndarray:
    """Return ``value`` as a float64 array of ``ndim`` dims, or raise CmceError."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise CmceError(f"{name} must be a numeric array of shape {shape_hint}: {exc}") from exc
    if arr.ndim != ndim:
        raise CmceError(
            f"{name} must be a {ndim}-D array of shape {shape_hint}, got shape {arr.shape}"
        )
    if not _is_real_dtype(arr.dtype):
        raise CmceError(
            f"{name} must hold real numbers (int or float), got dtype {arr.dtype}"
        )
    arr = arr.astype(np.float64, copy=False)
    if allow_inf:
        if np.isnan(arr).any():
            raise CmceError(f"{name} must not contain NaN")
    elif not np.isfinite(arr).all():
        raise CmceError(f"{name} must be finite (no NaN or inf)")
    return arr


def _labels(name: str, value: object, size: int, size_name: str) -> np.ndarray:
    """Return ``value`` as a 1-D label array of length ``size``, or raise."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != size:
        raise CmceError(
            f"{name} must be a 1-D array of shape ({size_name},) = ({size},), got shape {arr.shape}"
        )
    return arr


def _bool_vector(name: str, value: object, size: int, size_name: str) -> np.ndarray:
    """Return ``value`` as a 1-D bool array of length ``size``, or raise."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != size:
        raise CmceError(
            f"{name} must be a 1-D bool array of shape ({size_name},) = ({size},), "
            f"got shape {arr.shape}"
        )
    if arr.dtype != np.bool_:
        raise CmceError(f"{name} must have dtype bool, got dtype {arr.dtype}")
    return arr


def _hits_vector(value: object) -> np.ndarray:
    """Return ``hits`` as a 1-D float64 array of 0/1 values, or raise."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise CmceError(f"hits must be a 1-D array of shape (N,), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if not _is_real_dtype(arr.dtype):
        raise CmceError(f"hits must be bool (or 0/1 numbers), got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isin(out, (0.0, 1.0)).all():
        raise CmceError("hits must contain only 0/1 (False/True) values")
    return out


def _fraction(name: str, value: object) -> float:
    """Return ``value`` as a float in ``[0, 1]``, or raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.integer, np.floating)):
        raise CmceError(f"{name} must be a real number in [0, 1], got {value!r}")
    out = float(value)
    if not 0.0 <= out <= 1.0:  # also rejects NaN
        raise CmceError(f"{name} must be in [0, 1], got {value!r}")
    return out


def _round_half_up(x: float) -> int:
    """``floor(x + 0.5)`` as an int: the rounding used for every rejection count."""
    return int(math.floor(x + 0.5))


def _retrieval_inputs(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    gallery_mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate retrieval inputs; return the masked ``(Q, G')`` similarity and positives.

    Returns:
        ``(sim, pos)``: float64 similarity of shape ``(Q, G')`` with masked-out
        gallery columns removed, and the bool matrix ``pos[q, g] = (query
        label q == gallery label g)`` of the same shape.
    """
    sim = _real_array("similarity", similarity, 2, "(Q, G)", allow_inf=False)
    n_q, n_g = sim.shape
    ql = _labels("query_labels", query_labels, n_q, "Q")
    gl = _labels("gallery_labels", gallery_labels, n_g, "G")
    if gallery_mask is not None:
        mask = _bool_vector("gallery_mask", gallery_mask, n_g, "G")
        sim = sim[:, mask]
        gl = gl[mask]
    try:
        pos = np.asarray(ql[:, None] == gl[None, :])
    except Exception as exc:
        raise CmceError(f"query_labels and gallery_labels must be comparable: {exc}") from exc
    if pos.shape != sim.shape:
        raise CmceError(
            "query_labels and gallery_labels must be comparable element by element "
            f"(got dtypes {ql.dtype} and {gl.dtype})"
        )
    return sim, pos.astype(bool, copy=False)


def _pair_inputs(scores: np.ndarray, is_same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate verification pairs: finite float64 scores (N,) and bool is_same (N,)."""
    s = _real_array("scores", scores, 1, "(N,)", allow_inf=False)
    same = _bool_vector("is_same", is_same, s.shape[0], "N")
    return s, same


def _rejection_order(uncertainty: np.ndarray) -> np.ndarray:
    """Indices in rejection order: decreasing uncertainty, ties by increasing index."""
    return np.argsort(-uncertainty, kind="stable")
