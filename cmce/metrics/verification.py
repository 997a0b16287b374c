"""Verification metrics of scored pairs: TAR at a FAR, its threshold, best accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from cmce.errors import CmceError
from cmce.metrics._inputs import _fraction, _pair_inputs, _retrieval_inputs

__all__ = ["verification_scores", "threshold_at_far", "tar_at_far", "best_verification_accuracy"]


def verification_scores(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    gallery_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten every (query, kept gallery entry) pair into verification pairs.

    ``scores[q * G' + g] = similarity[q, g]`` and ``is_same[q * G' + g] =
    (query_labels[q] == gallery_labels[g])``, row-major over the ``G'`` kept
    gallery columns (in their original order).

    Args:
        similarity: ``(Q, G)`` real, finite; higher = more similar.
        query_labels: ``(Q,)`` labels of the queries.
        gallery_labels: ``(G,)`` labels of the gallery entries.
        gallery_mask: Optional ``(G,)`` bool; ``False`` entries are removed.

    Returns:
        ``(scores, is_same)``: float64 ``(Q * G',)`` and bool ``(Q * G',)``.

    Raises:
        CmceError: On a malformed shape, dtype or non-finite similarity.

    Example:
        >>> s, same = verification_scores(np.array([[0.9, 0.2]]), [1], [1, 2])
        >>> s.tolist(), same.tolist()
        ([0.9, 0.2], [True, False])
    """
    sim, pos = _retrieval_inputs(similarity, query_labels, gallery_labels, gallery_mask)
    return sim.ravel().copy(), pos.ravel().copy()


def _allowed_false_accepts(far: float, n_impostor: int) -> int:
    """Largest integer ``m`` in ``[0, n]`` with ``m / n <= far`` (as float division)."""
    m = min(int(math.floor(far * n_impostor)), n_impostor)
    while m < n_impostor and (m + 1) / n_impostor <= far:
        m += 1
    while m > 0 and m / n_impostor > far:
        m -= 1
    return m


def threshold_at_far(scores: np.ndarray, is_same: np.ndarray, far: float = 1e-3) -> float:
    """The smallest score threshold whose false accept rate is at most ``far``.

    A pair is accepted when ``score >= threshold``. With ``n`` impostor
    (``is_same == False``) scores, let ``m`` be the largest integer with
    ``m / n <= far`` and ``s_(m+1)`` the ``(m+1)``-th largest impostor score.
    Then the answer is the smallest float64 strictly above it::

        threshold = nextafter(s_(m+1), +inf)     (or -inf when m == n)

    so ``#{impostor score >= threshold} / n <= far`` and no smaller threshold
    satisfies that.

    Ties: impostor scores tied with ``s_(m+1)`` are all rejected together, so
    the achieved FAR can fall below ``far``; genuine scores equal to
    ``s_(m+1)`` are rejected too. When ``far >= 1`` (``m == n``) every
    threshold qualifies and ``-inf`` (accept everything) is returned.

    Args:
        scores: ``(N,)`` real, finite pair scores; higher = more likely same.
        is_same: ``(N,)`` bool, True for genuine (same identity) pairs.
        far: Target false accept rate in ``[0, 1]``.

    Returns:
        The threshold, to be used as ``accept = score >= threshold``.

    Raises:
        CmceError: On malformed inputs, ``far`` outside ``[0, 1]``, or no
            impostor pair (FAR is then undefined).

    Example:
        Impostors ``[0.1, 0.3, 0.5, 0.7]``, ``far=0.25``: one false accept is
        allowed (``m = 1``), so the threshold sits just above the 2nd largest
        impostor score 0.5 and only 0.7 is falsely accepted::

        >>> scores = np.array([0.1, 0.3, 0.5, 0.7, 0.6, 0.9])
        >>> same = np.array([False, False, False, False, True, True])
        >>> t = threshold_at_far(scores, same, far=0.25)
        >>> t == np.nextafter(0.5, np.inf)
        np.True_
    """
    s, same = _pair_inputs(scores, is_same)
    far = _fraction("far", far)
    impostor = s[~same]
    n = impostor.shape[0]
    if n == 0:
        raise CmceError("threshold_at_far needs at least one impostor pair (is_same == False)")
    m = _allowed_false_accepts(far, n)
    if m == n:
        return float("-inf")
    kth_largest = np.partition(impostor, n - 1 - m)[n - 1 - m]
    return float(np.nextafter(kth_largest, np.inf))


def tar_at_far(scores: np.ndarray, is_same: np.ndarray, far: float = 1e-3) -> float:
    """True accept rate at the threshold of :func:`threshold_at_far`.

    ``TAR = #{genuine score >= t} / #genuine`` with ``t =
    threshold_at_far(scores, is_same, far)``; see there for how the threshold
    and ties are handled (genuine scores tied with the last rejected impostor
    score are rejected).

    Args:
        scores: ``(N,)`` real, finite pair scores; higher = more likely same.
        is_same: ``(N,)`` bool, True for genuine pairs.
        far: Target false accept rate in ``[0, 1]``.

    Returns:
        TAR in ``[0, 1]``, or ``nan`` when there is no genuine pair.

    Raises:
        CmceError: On malformed inputs, ``far`` outside ``[0, 1]``, or no
            impostor pair.

    Example:
        Same pairs as :func:`threshold_at_far`: the threshold is just above
        0.5, so both genuine scores 0.6 and 0.9 pass; at ``far=0`` it is just
        above 0.7 and only 0.9 passes::

        >>> scores = np.array([0.1, 0.3, 0.5, 0.7, 0.6, 0.9])
        >>> same = np.array([False, False, False, False, True, True])
        >>> tar_at_far(scores, same, far=0.25), tar_at_far(scores, same, far=0.0)
        (1.0, 0.5)
    """
    s, same = _pair_inputs(scores, is_same)
    threshold = threshold_at_far(s, same, far)
    genuine = s[same]
    if genuine.shape[0] == 0:
        return float("nan")
    return float(np.mean(genuine >= threshold))


def best_verification_accuracy(scores: np.ndarray, is_same: np.ndarray) -> tuple[float, float]:
    """Best accuracy of the rule ``same = score >= threshold`` over all thresholds.

    The candidate thresholds are every distinct score (accept that score and
    above) plus ``+inf`` (reject everything); they cover every distinct
    decision. For a threshold ``t``::

        accuracy(t) = (#{genuine >= t} + #{impostor < t}) / N

    One ``O(N log N)`` sort and two cumulative sums evaluate all candidates.
    When several thresholds reach the best accuracy, the smallest is returned.

    Args:
        scores: ``(N,)`` real, finite pair scores, ``N >= 1``.
        is_same: ``(N,)`` bool, True for genuine pairs.

    Returns:
        ``(accuracy, threshold)``; ``threshold`` is ``+inf`` when rejecting
        every pair is (strictly) best.

    Raises:
        CmceError: On malformed inputs or no pair at all.

    Example:
        Genuine ``[0.8, 0.4]``, impostors ``[0.5, 0.1]``. Candidates
        ``0.1, 0.4, 0.5, 0.8, inf`` get ``2, 3, 2, 3, 2`` of 4 right; the best,
        3/4, is reached at 0.4 and 0.8 and the smaller, 0.4, is returned::

        >>> best_verification_accuracy(np.array([0.8, 0.4, 0.5, 0.1]),
        ...                            np.array([True, True, False, False]))
        (0.75, 0.4)
    """
    s, same = _pair_inputs(scores, is_same)
    n = s.shape[0]
    if n == 0:
        raise CmceError("best_verification_accuracy needs at least one pair (N >= 1)")
    order = np.argsort(s, kind="stable")
    s_sorted, same_sorted = s[order], same[order]
    # cut i rejects s_sorted[:i] and accepts s_sorted[i:]; i in 0..n
    impostors_rejected = np.concatenate(([0], np.cumsum(~same_sorted)))
    genuine_accepted = int(same_sorted.sum()) - np.concatenate(([0], np.cumsum(same_sorted)))
    correct = impostors_rejected + genuine_accepted
    valid = np.ones(n + 1, dtype=bool)  # a cut must fall between two distinct scores
    valid[1:n] = s_sorted[1:] > s_sorted[:-1]
    best = int(np.argmax(np.where(valid, correct, -1)))  # first max = smallest threshold
    threshold = float(s_sorted[best]) if best < n else float("inf")
    return float(correct[best] / n), threshold
