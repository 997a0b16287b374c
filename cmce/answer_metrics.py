"""Counting answers as the app gives them: pure functions over a query-gallery similarity matrix.

Every query is answered right (its person named), wrong (another person named) or
"unknown". These functions count that, with removed entries, blocking entries (a doubtful
best match never hands its query to another person) and abstention, and draw the
accuracy-coverage curve of any confidence. ``cmce.method.answers`` builds the answer rules on them
and re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.errors import CmceError

__all__ = [
    "OUTCOMES", "RIGHT", "UNKNOWN", "WRONG", "TopMatches", "abstain_lowest", "accuracy_at_abstention",
    "accuracy_coverage", "accuracy_coverage_area", "answer_counts", "answer_outcomes", "cohort_normalised",
    "cohort_score", "stranger_best", "top_matches", "unknown_mask",
]

RIGHT, WRONG, UNKNOWN = 0, 1, 2
OUTCOMES = ("right", "wrong", "unknown")


@dataclass(frozen=True)
class TopMatches:
    """Each query's best searchable gallery entry.

    Attributes:
        position: (Q,) gallery position of the best entry, -1 where none is searchable.
        score: (Q,) its similarity (-inf where none).
        margin: (Q,) its similarity minus the best similarity of an entry of another
            person (``score + 1`` where no other person is searchable: cosines lie in
            [-1, 1], so the margin stays finite).
    """

    position: np.ndarray
    score: np.ndarray
    margin: np.ndarray


def _identity_keys(gallery_labels: Sequence[str | None]) -> np.ndarray:
    """Per entry the key of its person: its label, or the entry itself when unlabelled."""
    return np.array([f"\0{i}" if lab is None else str(lab) for i, lab in enumerate(gallery_labels)], dtype=object)


def top_matches(similarity: np.ndarray, gallery_labels: Sequence[str | None],
                searchable: np.ndarray | None = None) -> TopMatches:
    """The best searchable entry per query and its margin over the best other person.

    Unlabelled entries count as a person each. Ties go to the lower gallery position.

    Args:
        similarity: (Q, G) query-gallery similarities.
        gallery_labels: (G,) identity per entry (None: unlabelled).
        searchable: (G,) bool, entries a query may land on (default all).

    Returns:
        TopMatches.

    Example:
        >>> t = top_matches(np.array([[0.9, 0.7, 0.2]]), ["a", "a", "b"])
        >>> t.position, t.score, np.round(t.margin, 2)
        (array([0]), array([0.9]), array([0.7]))
    """
    sim = np.asarray(similarity, np.float64)
    if sim.ndim != 2 or sim.shape[1] != len(gallery_labels):
        raise CmceError(f"similarity must be (Q, G) with G = {len(gallery_labels)} labels, got {sim.shape}")
    keys = _identity_keys(gallery_labels)
    if searchable is not None:
        mask = np.asarray(searchable, bool)
        if mask.shape != (sim.shape[1],):
            raise CmceError(f"searchable must be (G,) = ({sim.shape[1]},), got {mask.shape}")
        sim = np.where(mask[None, :], sim, -np.inf)
    q = sim.shape[0]
    if sim.shape[1] == 0:
        return TopMatches(np.full(q, -1), np.full(q, -np.inf), np.zeros(q))
    best = sim.argmax(axis=1)
    score = sim[np.arange(q), best]
    none = ~np.isfinite(score)
    same = keys[None, :] == keys[best][:, None]
    other = np.where(same, -np.inf, sim).max(axis=1)
    with np.errstate(invalid="ignore"):
        margin = np.where(np.isfinite(other), score - other, score + 1.0)
    best = np.where(none, -1, best)
    return TopMatches(best, score, np.where(none, 0.0, margin))


def answer_outcomes(
    similarity: np.ndarray,
    query_labels: Sequence[str],
    gallery_labels: Sequence[str | None],
    threshold: float,
    *,
    removed: np.ndarray | None = None,
    blocking: np.ndarray | None = None,
    abstain: np.ndarray | None = None,
    cohort: int | None = None,
    norm_threshold: float | None = None,
) -> np.ndarray:
    """Right, wrong or unknown per query, as the app answers.

    A query lands on its best entry among those not ``removed``. The answer is
    "unknown" when that entry scores below ``threshold``, is ``blocking`` (a doubtful
    entry that never hands its query to another person), or the rule ``abstain``s on
    the query; otherwise the entry's person is named: right when it is the query's,
    wrong when not. A query whose person is not in the gallery is never right here
    (the protocols measured keep every query's person in the gallery).

    Args:
        similarity: (Q, G).
        query_labels: (Q,) identity per query.
        gallery_labels: (G,) identity per entry.
        threshold: similarity below which the answer is "unknown".
        removed: (G,) bool, entries kept out of the search (default none).
        blocking: (G,) bool, entries that answer "unknown" when they are the best match.
        abstain: (Q,) bool, queries the answer rule abstains on.
        cohort, norm_threshold: the normalised "Unknown" threshold (``unknown.CohortNorm``):
            where the searchable gallery holds ``cohort`` other people, "unknown" is
            ``cohort_normalised`` below ``norm_threshold`` instead of the raw threshold.

    Returns:
        (Q,) int8 of ``RIGHT`` / ``WRONG`` / ``UNKNOWN`` (``OUTCOMES`` names them).

    Example:
        Query 0 finds its mate, query 1 another person, query 2 scores too low::

            >>> sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.1]])
            >>> answer_outcomes(sim, ["a", "a", "b"], ["a", "b"], 0.5).tolist()
            [0, 1, 2]
    """
    g_lab = np.asarray(gallery_labels, dtype=object)
    q_lab = np.asarray(query_labels, dtype=object)
    searchable = None if removed is None else ~np.asarray(removed, bool)
    top = top_matches(similarity, list(g_lab), searchable)
    q = len(top.score)
    if q_lab.shape != (q,):
        raise CmceError(f"query_labels must be ({q},), got {q_lab.shape}")
    found = top.position >= 0
    if cohort is not None and norm_threshold is not None:
        z = cohort_normalised(similarity, list(g_lab), cohort, searchable)
        unknown = ~found | unknown_mask(top.score, z, threshold, norm_threshold)
    else:
        unknown = ~found | (top.score < threshold)
    if blocking is not None:
        block = np.asarray(blocking, bool)
        unknown |= found & block[np.maximum(top.position, 0)]
    if abstain is not None:
        unknown |= np.asarray(abstain, bool)
    right = found & (g_lab[np.maximum(top.position, 0)] == q_lab)
    return np.where(unknown, UNKNOWN, np.where(right, RIGHT, WRONG)).astype(np.int8)


def answer_counts(outcomes: np.ndarray) -> dict[str, float]:
    """Counts of each outcome, the coverage (share answered) and the accuracy of the answered.

    Example:
        >>> answer_counts(np.array([0, 0, 1, 2]))
        {'right': 2, 'wrong': 1, 'unknown': 1, 'queries': 4, 'coverage': 0.75, 'answered_accuracy': 0.6666666666666666}
    """
    o = np.asarray(outcomes)
    right, wrong, unknown = (int((o == c).sum()) for c in (RIGHT, WRONG, UNKNOWN))
    answered = right + wrong
    return {"right": right, "wrong": wrong, "unknown": unknown, "queries": int(len(o)),
            "coverage": answered / len(o) if len(o) else float("nan"),
            "answered_accuracy": right / answered if answered else float("nan")}


def abstain_lowest(confidence: np.ndarray, rate: float) -> np.ndarray:
    """(Q,) bool: the ``round(rate * Q)`` least confident queries (ties: the later query first).

    Example:
        >>> abstain_lowest(np.array([0.9, 0.1, 0.5, 0.3]), 0.5).tolist()
        [False, True, False, True]
    """
    c = np.asarray(confidence, np.float64)
    if not 0.0 <= rate <= 1.0:
        raise CmceError(f"abstention rate must be in [0, 1], got {rate}")
    k = int(np.floor(rate * len(c) + 0.5))
    out = np.zeros(len(c), bool)
    if k:
        order = np.lexsort((-np.arange(len(c)), np.nan_to_num(c, nan=-np.inf)))
        out[order[:k]] = True
    return out


def accuracy_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Answering the most confident queries first: accuracy of the answered against coverage.

    With queries sorted by confidence, highest first (ties: the earlier query first),
    the point k (k = 1..Q) answers the first k: coverage ``k/Q``, accuracy
    ``sum(correct[:k]) / k``.

    Args:
        confidence: (Q,) higher = answer first.
        correct: (Q,) bool, the named person is the query's.

    Returns:
        ((Q,) coverage, (Q,) accuracy).
    """
    c = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    if c.shape != ok.shape or c.ndim != 1:
        raise CmceError(f"confidence and correct must be (Q,) alike, got {c.shape} and {ok.shape}")
    order = np.lexsort((np.arange(len(c)), -np.nan_to_num(c, nan=-np.inf)))
    k = np.arange(1, len(c) + 1)
    return k / len(c), np.cumsum(ok[order]) / k


def accuracy_coverage_area(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the accuracy-coverage curve: the mean accuracy over coverages 1/Q..1.

    1 means every wrong answer is ranked after every right one *and* there are none
    early; a rule ranking at random scores about the overall accuracy.

    Example:
        Right, right, wrong ranked first to last: (1 + 1 + 2/3) / 3::

            >>> round(accuracy_coverage_area(np.array([3., 2., 1.]), np.array([True, True, False])), 4)
            0.8889
    """
    if len(np.asarray(confidence)) == 0:
        return float("nan")
    return float(np.mean(accuracy_coverage(confidence, correct)[1]))


def accuracy_at_abstention(confidence: np.ndarray, wrong: np.ndarray, rate: float) -> np.ndarray:
    """(Q,) 1.0 answered right, 0.0 answered wrong, NaN abstained (the ``rate`` least confident).

    Its mean over the non-NaN entries is the accuracy of the answered queries
    (the form ``metrics.cluster_bootstrap`` takes).
    """
    abstain = abstain_lowest(confidence, rate)
    return np.where(abstain, np.nan, (~np.asarray(wrong, bool)).astype(np.float64))


def cohort_score(scores: Sequence[float], keys: Sequence[str], cohort: int) -> float:
    """The best score standardised by the scores of the next ``cohort`` people (adaptive Z-norm).

    ``(s1 - mean) / std`` over the ``cohort`` best scores of entries of *other* people
    than the best one: how far the best match stands out from the gallery's impostors
    for this query. NaN when fewer than ``cohort`` such scores are given (too small a
    gallery: the raw threshold applies).

    Args:
        scores: a query's best hits' similarities, best first.
        keys: each hit's person key (its label, or a key of its own when unlabelled).
        cohort: how many impostor scores the statistics are taken from.

    Example:
        >>> round(cohort_score([0.9, 0.85, 0.5, 0.4, 0.3], ["a", "a", "b", "c", "d"], 3), 3)
        6.124
    """
    if not len(scores):
        return float("nan")
    others = [float(s) for s, k in zip(scores[1:], keys[1:]) if k != keys[0]][:cohort]
    if cohort < 1 or len(others) < cohort:
        return float("nan")
    return float((float(scores[0]) - np.mean(others)) / max(float(np.std(others)), 1e-6))


def cohort_normalised(similarity: np.ndarray, gallery_labels: Sequence[str | None], cohort: int,
                      searchable: np.ndarray | None = None) -> np.ndarray:
    """``cohort_score`` of every query's best searchable entry, from a (Q, G) similarity matrix.

    Example:
        >>> z = cohort_normalised(np.array([[0.9, 0.85, 0.5, 0.4, 0.3]]), ["a", "a", "b", "c", "d"], 3)
        >>> round(float(z[0]), 3)
        6.124
    """
    sim = np.asarray(similarity, np.float64)
    if sim.ndim != 2 or sim.shape[1] != len(gallery_labels):
        raise CmceError(f"similarity must be (Q, G) with G = {len(gallery_labels)} labels, got {sim.shape}")
    if searchable is not None:
        sim = np.where(np.asarray(searchable, bool)[None, :], sim, -np.inf)
    q, g = sim.shape
    if g == 0 or cohort < 1:
        return np.full(q, np.nan)
    keys = _identity_keys(gallery_labels)
    best = sim.argmax(axis=1)
    score = sim[np.arange(q), best]
    other = np.where(keys[None, :] == keys[best][:, None], -np.inf, sim)
    enough = np.isfinite(other).sum(axis=1) >= cohort
    if g <= cohort:
        return np.full(q, np.nan)
    top = -np.partition(-other, cohort - 1, axis=1)[:, :cohort]
    with np.errstate(invalid="ignore"):
        z = (score - top.mean(axis=1)) / np.maximum(top.std(axis=1), 1e-6)
    return np.where(enough & np.isfinite(score), z, np.nan)


def stranger_best(similarity: np.ndarray, query_labels: Sequence[str], gallery_labels: Sequence[str | None],
                  cohort: int | None = None) -> np.ndarray:
    """Per query, its best score with its own person taken out of the gallery: the query as a stranger.

    With ``cohort`` the score is ``cohort_normalised`` in that reduced gallery. The
    share of strangers a threshold names is ``mean(stranger_best(...) >= threshold)``.
    """
    sim = np.asarray(similarity, np.float64)
    keys = _identity_keys(gallery_labels)
    own = np.asarray([str(x) for x in query_labels], dtype=object)[:, None] == keys[None, :]
    reduced = np.where(own, -np.inf, sim)
    if cohort is None:
        return reduced.max(axis=1)
    return cohort_normalised(reduced, gallery_labels, cohort)


def unknown_mask(similarity: np.ndarray, normalised: np.ndarray, threshold: float,
                 norm_threshold: float | np.ndarray | None) -> np.ndarray:
    """Which queries answer "Unknown" before any answer rule: the normalised score below its
    threshold where both are known (a large enough gallery), else the raw similarity below its own.

    Args:
        similarity: (Q,) best raw similarity. normalised: (Q,) ``cohort_score`` (NaN: unknown).
        threshold: the raw threshold. norm_threshold: the normalised one, or (Q,) one per
            query (each in its own gallery; NaN: raw); None: raw only.

    Example:
        >>> unknown_mask(np.array([0.5, 0.5, 0.2]), np.array([1.0, np.nan, 3.0]), 0.3, np.array([2.0, 2.0, np.nan]))
        array([ True, False,  True])
    """
    sim = np.asarray(similarity, np.float64)
    raw = sim < threshold
    if norm_threshold is None:
        return raw
    z = np.asarray(normalised, np.float64)
    t = np.asarray(norm_threshold, np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(z) & np.isfinite(t), z < t, raw)
