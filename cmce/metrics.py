"""Pure numpy metrics for face retrieval, verification and uncertainty rejection.

Every function here is a small, side-effect-free function of numpy arrays (no
torch, no global state, no printing). Inputs are validated and anything invalid
raises :class:`cmce.errors.CmceError` with a message that says what is valid.

Conventions shared by the retrieval functions:

* ``similarity`` has shape ``(Q, G)``: row ``q`` holds the similarity of query
  ``q`` to every gallery entry; **higher means more similar**.
* Rankings sort a row by decreasing similarity; **ties are broken by the lower
  gallery index** (a stable sort), so every result is deterministic.
* ``gallery_mask`` (shape ``(G,)``, bool) drops the gallery entries where it is
  ``False`` exactly as if they had never been in the gallery.
* A query is *counted* only if at least one (kept) gallery entry carries its
  label; queries without any positive are left out of the denominator, because
  no ranking could ever retrieve them (this is the usual closed-set protocol).

Conventions shared by the rejection functions:

* Higher uncertainty is rejected first; ties are rejected in order of
  increasing index (a stable sort of ``-uncertainty``).
* A rejection ``rate`` in ``[0, 1]`` of ``N`` items rejects
  ``n = floor(rate * N + 0.5)`` items (round half up, so ``rate=0.5`` of 5
  items rejects 3), the same count in :func:`rejection_curve`,
  :func:`gallery_rejection_mask` and :func:`threshold_for_rate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import numpy as np

from cmce.errors import CmceError

__all__ = [
    "l2_normalise",
    "best_verification_accuracy",
    "bootstrap_mean_ci",
    "cluster_bootstrap",
    "top1_hits",
    "entry_misses",
    "tar_at_far_cluster_ci",
    "gallery_rejection_mask",
    "mean_average_precision",
    "mean_pairwise_cosine_distance",
    "recall_at_k",
    "rejection_curve",
    "relative_error_reduction",
    "tar_at_far",
    "threshold_at_far",
    "threshold_for_rate",
    "verification_scores",
]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (along its last axis) scaled to unit length, as float32; a zero row stays zero.

    The one normaliser of the experiments (evaluation, ablations, benchmarks).

    Example:
        >>> l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# retrieval
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# verification
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# uncertainty-based rejection
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# misc
# --------------------------------------------------------------------------- #


def bootstrap_mean_ci(
    values: np.ndarray, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-query values and its percentile bootstrap confidence interval.

    Queries are resampled with replacement ``resamples`` times; the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. For a
    paired comparison of two systems on the same queries, pass the per-query
    differences (e.g. ``hits_b - hits_a``): the interval then accounts for the pairing.

    Args:
        values: ``(Q,)`` real, finite (e.g. 0/1 top-1 hits, or their differences).
        level: confidence level in ``(0, 1)``.
        resamples: bootstrap resamples (>= 1).
        seed: random seed (the interval is reproducible).

    Returns:
        ``(mean, low, high)``; NaNs for an empty input.

    Raises:
        CmceError: non-1-D or non-finite ``values``, or ``level`` outside ``(0, 1)``.

    Example:
        Ninety hits in a hundred queries: mean 0.9, the interval about 0.84..0.95::

        >>> m, lo, hi = bootstrap_mean_ci(np.r_[np.ones(90), np.zeros(10)])
        >>> round(m, 2), 0.82 <= lo <= 0.86, 0.94 <= hi <= 0.97
        (0.9, True, True)
    """
    v = _real_array("values", values, 1, "(Q,)", allow_inf=False)
    if not 0.0 < float(level) < 1.0:
        raise CmceError(f"level must be in (0, 1), got {level!r}")
    if int(resamples) < 1:
        raise CmceError(f"resamples must be >= 1, got {resamples!r}")
    if v.shape[0] == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(int(resamples))
    for start in range(0, len(means), 256):  # bounded memory for large Q
        stop = min(start + 256, len(means))
        means[start:stop] = v[rng.integers(0, v.shape[0], size=(stop - start, v.shape[0]))].mean(axis=1)
    tail = (1.0 - float(level)) / 2.0
    return float(v.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


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


def cluster_bootstrap(
    values: Sequence[np.ndarray],
    clusters: np.ndarray,
    statistic: Callable[..., float] | None = None,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A statistic of per-query means, with a bootstrap interval over clusters (identities).

    Queries of one identity are not independent (same person, often the same event),
    so whole identities are resampled with replacement. Each of ``values`` is a
    per-query vector (NaN = query not counted, as ``top1_hits`` gives); its mean over
    the counted queries of a resample is passed to ``statistic``. Several vectors are
    resampled together (the same identities), which makes paired comparisons honest.

    Args:
        values: one or more ``(Q,)`` vectors on the same queries.
        clusters: ``(Q,)`` cluster label per query (the query's identity).
        statistic: ``f(mean_1, mean_2, ...) -> float``; default the first mean.
        level: confidence level in ``(0, 1)``.
        resamples: bootstrap resamples (>= 1).
        seed: random seed.

    Returns:
        ``(statistic on the data, low, high)``; NaNs when nothing is counted.

    Example:
        Two identities, one always right (3 queries), one always wrong (1 query):
        R@1 is 0.75; resampling identities swings it between 0 and 1::

        >>> m, lo, hi = cluster_bootstrap([np.array([1., 1., 1., 0.])], np.array([0, 0, 0, 1]))
        >>> m, lo, hi
        (0.75, 0.0, 1.0)
    """
    vs = [np.asarray(v, np.float64) for v in values]
    if not vs:
        raise CmceError("cluster_bootstrap needs at least one vector of values")
    q = vs[0].shape[0]
    if any(v.ndim != 1 or v.shape[0] != q for v in vs):
        raise CmceError(f"every value vector must be (Q,) with Q={q}; got {[v.shape for v in vs]}")
    cl = np.asarray(clusters)
    if cl.shape != (q,):
        raise CmceError(f"clusters must be (Q,)=({q},), got {cl.shape}")
    if not 0.0 < float(level) < 1.0:
        raise CmceError(f"level must be in (0, 1), got {level!r}")
    if int(resamples) < 1:
        raise CmceError(f"resamples must be >= 1, got {resamples!r}")
    stat = statistic or (lambda *means: means[0])
    _, inv = np.unique(cl, return_inverse=True)
    c = int(inv.max()) + 1 if q else 0
    sums = [np.bincount(inv, weights=np.nan_to_num(v), minlength=c) for v in vs]
    counts = [np.bincount(inv, weights=(~np.isnan(v)).astype(np.float64), minlength=c) for v in vs]

    def means(w: np.ndarray) -> list[np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return [(w @ s) / (w @ n) for s, n in zip(sums, counts)]

    point = stat(*[float(m) for m in means(np.ones(c))]) if c else float("nan")
    if c == 0 or not np.isfinite(point):
        return float(point), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty(int(resamples))
    for start in range(0, len(draws), 256):
        stop = min(start + 256, len(draws))
        w = np.stack([np.bincount(rng.integers(0, c, size=c), minlength=c) for _ in range(stop - start)]).astype(np.float64)
        ms = means(w)
        draws[start:stop] = [stat(*[float(m[b]) for m in ms]) for b in range(stop - start)]
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float(point), float("nan"), float("nan")
    tail = (1.0 - float(level)) / 2.0
    return float(point), float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def tar_at_far_cluster_ci(
    similarity: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    clusters: np.ndarray,
    far: float = 1e-3,
    *,
    level: float = 0.95,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[float, float, float]:
    """TAR at a FAR, with a bootstrap interval over query clusters (identities).

    The point value is ``tar_at_far`` on every (query, gallery) pair. Each resample
    draws identities with replacement; a query drawn ``w`` times weighs ``w`` in both
    the impostor distribution (whose weighted upper ``far`` quantile is the threshold)
    and the genuine pairs. One sort of the impostor scores serves every resample.

    Returns:
        ``(tar, low, high)``.

    Example:
        >>> sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
        >>> tar_at_far_cluster_ci(sim, [0, 1, 0], [0, 1], [0, 1, 0], far=0.0, resamples=50)[0]
        1.0
    """
    scores, same = verification_scores(similarity, query_labels, gallery_labels)
    point = tar_at_far(scores, same, far)
    q, g = np.asarray(similarity).shape
    cl = np.asarray(clusters)
    if cl.shape != (q,):
        raise CmceError(f"clusters must be (Q,)=({q},), got {cl.shape}")
    qidx = np.repeat(np.arange(q), g)
    imp, gen = ~same, same
    order = np.argsort(-scores[imp], kind="stable")
    imp_s, imp_q = scores[imp][order], qidx[imp][order]
    gen_s, gen_q = scores[gen], qidx[gen]
    _, inv = np.unique(cl, return_inverse=True)
    c = int(inv.max()) + 1 if q else 0
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(int(resamples)):
        wq = np.bincount(rng.integers(0, c, size=c), minlength=c)[inv].astype(np.float64)
        w_imp = wq[imp_q]
        total = w_imp.sum()
        if total <= 0 or wq[gen_q].sum() <= 0:
            continue
        cum = np.cumsum(w_imp)  # weighted impostors at or above each sorted score
        k = np.searchsorted(cum, far * total, side="right")  # first sorted score that must be rejected
        thr = np.nextafter(imp_s[k], np.inf) if k < len(imp_s) else -np.inf
        draws.append(float((wq[gen_q] * (gen_s >= thr)).sum() / wq[gen_q].sum()))
    if not draws:
        return float(point), float("nan"), float("nan")
    tail = (1.0 - float(level)) / 2.0
    return float(point), float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))


def relative_error_reduction(base_accuracy: float, new_accuracy: float) -> float:
    """Relative reduction of the error rate from ``base_accuracy`` to ``new_accuracy``.

    ::

        RER = ((1 - base) - (1 - new)) / (1 - base)

    Positive when the error shrinks (1.0 = all errors removed), negative when
    it grows.

    Args:
        base_accuracy: Accuracy before, in ``[0, 1]`` (or NaN).
        new_accuracy: Accuracy after, in ``[0, 1]`` (or NaN).

    Returns:
        The reduction; ``nan`` when either accuracy is NaN (e.g. an undefined
        recall) or when ``base_accuracy == 1`` (no error to reduce).

    Raises:
        CmceError: When an accuracy is not a real number in ``[0, 1]`` or NaN.

    Example:
        0.90 -> 0.92 cuts the error from 10 % to 8 %, a 20 % reduction::

        >>> round(relative_error_reduction(0.90, 0.92), 12)
        0.2
    """
    values = []
    for name, value in (("base_accuracy", base_accuracy), ("new_accuracy", new_accuracy)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (Real, np.integer, np.floating)
        ):
            raise CmceError(f"{name} must be a real number in [0, 1] (or NaN), got {value!r}")
        v = float(value)
        if not math.isnan(v) and not 0.0 <= v <= 1.0:
            raise CmceError(f"{name} must be in [0, 1] (or NaN), got {value!r}")
        values.append(v)
    base, new = values
    if math.isnan(base) or math.isnan(new) or base == 1.0:
        return float("nan")
    return ((1.0 - base) - (1.0 - new)) / (1.0 - base)


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
