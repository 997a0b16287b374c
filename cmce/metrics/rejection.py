"""Uncertainty-based rejection: the risk-coverage curve, a gallery keep-mask, a threshold.

Conventions:

* Higher uncertainty is rejected first; ties are rejected in order of
  increasing index (a stable sort of ``-uncertainty``).
* A rejection ``rate`` in ``[0, 1]`` of ``N`` items rejects
  ``n = floor(rate * N + 0.5)`` items (round half up, so ``rate=0.5`` of 5
  items rejects 3), the same count in :func:`rejection_curve`,
  :func:`gallery_rejection_mask` and :func:`threshold_for_rate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np

from cmce.errors import CmceError
from cmce.metrics._inputs import (
    _fraction,
    _hits_vector,
    _real_array,
    _rejection_order,
    _round_half_up,
)

__all__ = ["rejection_curve", "gallery_rejection_mask", "threshold_for_rate"]


def rejection_curve(hits: np.ndarray, scores: np.ndarray, rates: Sequence[float]) -> np.ndarray:
    """Accuracy of the items kept after rejecting the most uncertain ones (risk-coverage).

    For each rate ``r``, reject the ``n_r = floor(r * N + 0.5)`` items with
    the highest ``scores`` (round half up; ties rejected in order of
    increasing index) and average ``hits`` over the ``N - n_r`` kept items::

        curve[j] = mean(hits[kept_j])        (nan when nothing is kept)

    Args:
        hits: ``(N,)`` bool (or 0/1) per query, True = correct.
        scores: ``(N,)`` uncertainty per query, higher = rejected first; may
            hold +-inf but not NaN.
        rates: Rejection rates, each in ``[0, 1]``.

    Returns:
        ``(len(rates),)`` float64 accuracies in ``[0, 1]`` (``nan`` where every
        item was rejected, e.g. ``r = 1`` or ``N = 0``).

    Raises:
        CmceError: On malformed shapes, non-0/1 hits, NaN scores or a rate
            outside ``[0, 1]``.

    Example:
        Rejecting the most uncertain of four items (the wrong one) lifts the
        accuracy from 3/4 to 1::

        >>> rejection_curve(np.array([True, True, False, True]),
        ...                 np.array([0.1, 0.2, 0.9, 0.3]), [0.0, 0.25, 1.0]).tolist()
        [0.75, 1.0, nan]
    """
    h = _hits_vector(hits)
    u = _real_array("scores", scores, 1, "(N,)", allow_inf=True)
    if u.shape != h.shape:
        raise CmceError(
            f"hits and scores must both have shape (N,), got {h.shape} and {u.shape}"
        )
    if isinstance(rates, (Real, np.integer, np.floating)) or not isinstance(
        rates, (Sequence, np.ndarray)
    ):
        raise CmceError(f"rates must be a sequence of floats in [0, 1], got {rates!r}")
    rate_list = [_fraction("every rate in rates", r) for r in rates]
    n = h.shape[0]
    cumulative = np.concatenate(([0.0], np.cumsum(h[_rejection_order(u)])))
    out = np.empty(len(rate_list), dtype=np.float64)
    for j, r in enumerate(rate_list):
        n_rejected = min(_round_half_up(r * n), n)
        kept = n - n_rejected
        out[j] = (cumulative[n] - cumulative[n_rejected]) / kept if kept > 0 else np.nan
    return out


def gallery_rejection_mask(uncertainty: np.ndarray, rate: float) -> np.ndarray:
    """Keep-mask that rejects the ``floor(rate * G + 0.5)`` most uncertain entries.

    Entries are rejected in order of decreasing uncertainty; ties are rejected
    in order of increasing index (stable), so exactly
    ``n = floor(rate * G + 0.5)`` entries are ``False``.

    Args:
        uncertainty: ``(G,)`` real, no NaN (+-inf allowed); higher = less
            trustworthy.
        rate: Fraction to reject, in ``[0, 1]``.

    Returns:
        ``(G,)`` bool, True = keep.

    Raises:
        CmceError: On a non-1-D / non-numeric / NaN ``uncertainty`` or a rate
            outside ``[0, 1]``.

    Example:
        ``0.5 * 4 = 2`` entries go; the tie at 0.9 leaves both 0.9 entries out
        and keeps the rest::

        >>> gallery_rejection_mask(np.array([0.9, 0.1, 0.9, 0.5]), 0.5).tolist()
        [False, True, False, True]
    """
    u = _real_array("uncertainty", uncertainty, 1, "(G,)", allow_inf=True)
    rate = _fraction("rate", rate)
    n = min(_round_half_up(rate * u.shape[0]), u.shape[0])
    keep = np.ones(u.shape[0], dtype=bool)
    keep[_rejection_order(u)[:n]] = False
    return keep


def threshold_for_rate(uncertainty: np.ndarray, rate: float) -> float:
    """Uncertainty threshold ``u*``: reject ``uncertainty > u*`` to reject about ``rate``.

    With ``n = floor(rate * G + 0.5)`` (the count of
    :func:`gallery_rejection_mask`) and ``d`` the uncertainties sorted in
    decreasing order (0-based)::

        u* = d[n]        for n < G   (an upper (1 - rate) quantile)
        u* = -inf        for n == G  (reject everything)

    Consistency: ``uncertainty > u*`` is exactly ``~gallery_rejection_mask(
    uncertainty, rate)`` whenever ``d[n-1] > d[n]`` (no tie across the cut).
    With a tie across the cut the strict ``>`` rejects *fewer* than ``n``
    entries (the tied ones are all kept), whereas the mask breaks the tie by
    index. ``rate = 0`` gives ``u* = max(uncertainty)``, which rejects nothing
    here but would reject a new, even more uncertain item.

    Args:
        uncertainty: ``(G,)`` real, no NaN (+-inf allowed), ``G >= 1``.
        rate: Fraction to reject, in ``[0, 1]``.

    Returns:
        The threshold ``u*`` (float).

    Raises:
        CmceError: On malformed / empty ``uncertainty`` or a rate outside
            ``[0, 1]``.

    Example:
        ``n = 0.25 * 4 = 1``; ``d = [0.9, 0.5, 0.3, 0.1]`` so ``u* = 0.5`` and
        only 0.9 is above it::

        >>> threshold_for_rate(np.array([0.1, 0.9, 0.3, 0.5]), 0.25)
        0.5
    """
    u = _real_array("uncertainty", uncertainty, 1, "(G,)", allow_inf=True)
    rate = _fraction("rate", rate)
    g = u.shape[0]
    if g == 0:
        raise CmceError("threshold_for_rate needs at least one uncertainty value (G >= 1)")
    n = min(_round_half_up(rate * g), g)
    if n == g:
        return float("-inf")
    # d[n] in decreasing order is the (g - 1 - n)-th smallest
    return float(np.partition(u, g - 1 - n)[g - 1 - n])
