"""What a search answers: a named person, "Unknown", unsure, or a doubtful photo's person.

The paper scores gallery rejection on the queries that are *kept* (a query whose person
was rejected is dropped). The app drops nothing: every query gets a named person (right
or wrong) or "Unknown". ``decide_answer`` turns a view's ranked matches, the "Unknown"
threshold (``cmce.method.unknown``) and the answer rule (``cmce.method.answer_rules``)
into one ``Answer``; ``doubt_marks`` and ``capped_rejection`` mark the gallery faces the
quality score doubts, and cap what is rejected on a gallery unlike the calibration ones.
Counting answers (right / wrong / unknown) is in ``cmce.answer_metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cmce.answer_metrics import (
    cohort_score,
)
from cmce.method.answer_rules import AnswerPolicy, policy_features
from cmce.method.unknown import CohortNorm

__all__ = ["ANSWERS", "PRESENCE", "Answer", "DoubtMarks", "capped_rejection", "decide_answer", "doubt_marks",
           "person_presence"]


#: What a search can answer: a named person, or one of three kinds of "Unknown".
ANSWERS = ("match", "unknown", "unsure", "doubtful")


@dataclass(frozen=True)
class Answer:
    """What one view answers to one query.

    Attributes:
        kind: ``match`` (a person is named), ``unknown`` (nothing reaches the similarity
            threshold), ``unsure`` (the answer rule abstains: the named person is more
            likely wrong: its chance of a right answer is below the rule's threshold), ``doubtful`` (the best match is a rejected photo,
            or a doubtful photo the rule is unsure of: never handed to the next person).
        label: the named person (``match``), or the person of the best match.
        score: the best match's similarity (NaN: nothing to match).
        confidence: the answer rule's predicted chance of a right answer (None: no rule).
        reason: one sentence for the user.
        normalised: the best score's ``cohort_score`` when the bundle's normalised
            "Unknown" threshold decided (None: the raw similarity threshold did).
        norm_threshold: that threshold (None: the raw one decided).
    """

    kind: str
    label: str | None
    score: float
    confidence: float | None
    reason: str
    normalised: float | None = None
    norm_threshold: float | None = None

    @property
    def unknown(self) -> bool:
        return self.kind != "match"


def _margin(scores: Sequence[float], keys: Sequence[str]) -> float:
    """Top score minus the best score of another person among the listed hits (``top_matches``'
    convention: ``score + 1`` where no other person is listed and nothing else is; a lower
    bound, the top minus the last listed score, where the list is cut before another person)."""
    for s, key in zip(scores[1:], keys[1:]):
        if key != keys[0]:
            return float(scores[0] - s)
    return float(scores[0] - scores[-1]) if len(scores) > 1 else float(scores[0] + 1.0)


def decide_answer(
    scores: Sequence[float],
    labels: Sequence[str | None],
    keys: Sequence[str],
    *,
    threshold: float,
    policy: AnswerPolicy | None = None,
    query_probability: float = 1.0,
    entry_quality: float = float("nan"),
    entry_disagreement: float = float("nan"),
    blocked: bool = False,
    doubtful: bool = False,
    norm: CohortNorm | None = None,
    view: str = "ensemble",
    gallery_size: int | None = None,
    gallery_doubt: float | None = None,
) -> Answer:
    """The answer to one query from its best hits over every searchable entry.

    Args:
        scores: the hits' similarities, best first (rejected entries included: a
            rejected best match blocks, it is never skipped for the next person).
        labels: each hit's person (None: unlabelled).
        keys: each hit's person key (the label, or a key of its own when unlabelled).
        threshold: the view's similarity threshold.
        policy: the answer rule (None: answer whatever reaches the threshold).
        query_probability: the query face's detector probability.
        entry_quality, entry_disagreement: the best hit's quality score and disagreement.
        blocked: the best hit is rejected.
        doubtful: the best hit is marked doubtful.
        norm: the bundle's cohort-normalised "Unknown" threshold (None: raw threshold
            only); the hits must then reach past the next ``norm.cohort`` people
            (``CohortNorm.hits_needed``), else the raw threshold applies.
        view: the view searched (whose normalised threshold applies).
        gallery_size: entries searched (the normalised threshold depends on it).
        gallery_doubt: the searched entries' mean quality score (``gallery_doubt``): on a
            gallery of poor photos the normalised threshold is capped (``CohortNorm.guard``).
    """
    if not len(scores):
        return Answer("unknown", None, float("nan"), None, "Unknown: the gallery has no face to match")
    s1, who = float(scores[0]), labels[0]
    name = who or "an unlabelled face"
    z_thr = None if norm is None else norm.threshold(view, gallery_size, gallery_doubt)
    z = cohort_score(scores, keys, norm.cohort) if z_thr is not None else float("nan")
    zz: dict = {}
    if z_thr is not None and np.isfinite(z):
        zz = {"normalised": z, "norm_threshold": float(z_thr)}
        if z < z_thr:
            low = " (lowered for this gallery's poor photos)" if norm.relaxed(view, gallery_size, gallery_doubt) else ""
            return Answer("unknown", who, s1, None,
                          f"Unknown: the best match, {name} ({s1:.3f}), does not stand out from the next "
                          f"{norm.cohort} people of the gallery ({z:.1f} spreads above them, {z_thr:.1f} needed{low})",
                          **zz)
    elif s1 < threshold:
        return Answer("unknown", who, s1, None,
                      f"Unknown: no gallery face reaches the threshold (best {s1:.3f} < {threshold:.3f})")
    if blocked:
        return Answer("doubtful", who, s1, None, f"Unknown: the best match is a rejected photo of {name}", **zz)
    conf = None
    if policy is not None:
        feats = policy_features(np.array([s1]), np.array([_margin(scores, keys)]), np.array([query_probability]),
                                np.array([entry_quality]), np.array([entry_disagreement]))
        conf = float(policy.confidence(feats)[0])
        if conf < policy.threshold:
            if doubtful:
                return Answer("doubtful", who, s1, conf, f"Unknown: the best match is a doubtful photo of {name} "
                                                         f"(chance of a right answer {conf:.2f})", **zz)
            return Answer("unsure", who, s1, conf, f"Unknown: the best match, {name}, is too likely wrong "
                                                   f"(chance of a right answer {conf:.2f} < {policy.threshold:.2f})",
                          **zz)
    tail = "" if conf is None else f" (chance of a right answer {conf:.2f})"
    stands = f", {z:.1f} spreads above the next {norm.cohort} people" if zz else ""  # type: ignore[union-attr]
    return Answer("match", who, s1, conf,
                  f"{name}{' (a doubtful photo)' if doubtful else ''}, similarity {s1:.3f}{stands}{tail}", **zz)


@dataclass(frozen=True)
class DoubtMarks:
    """Which gallery entries are doubtful, and whether the gallery looks unlike the calibration.

    Attributes:
        doubtful: (G,) bool, entries whose quality score is above the calibrated threshold.
        over_threshold: how many.
        expected: how many the calibration share predicts.
        unfamiliar: far more than predicted (see ``doubt_marks``).
        note: one sentence for the user ("" when there is nothing to say).
    """

    doubtful: np.ndarray
    over_threshold: int
    expected: float
    unfamiliar: bool
    note: str


def doubt_marks(quality: np.ndarray, threshold: float | None, calibrated_share: float) -> DoubtMarks:
    """Mark the entries over the bundle's calibrated quality threshold as doubtful.

    The threshold marked ``calibrated_share`` of the calibration galleries. A gallery is
    *unfamiliar* when far more of it scores over it: more than twice that share, more
    than three binomial standard deviations above it, and at least 5 entries. Its faces
    are then still searched (marked doubtful), and a calibrated rejection is capped at
    the calibrated share (``capped_rejection``).

    Example:
        >>> m = doubt_marks(np.array([0.9] * 31 + [0.01] * 7), 0.07, 0.10)
        >>> m.over_threshold, m.unfamiliar
        (31, True)
    """
    q = np.asarray(quality, np.float64)
    n = len(q)
    if threshold is None or n == 0:
        return DoubtMarks(np.zeros(n, bool), 0, 0.0, False, "")
    doubtful = q > threshold
    over = int(doubtful.sum())
    p = float(calibrated_share)
    expected = p * n
    unfamiliar = over >= 5 and over > 2 * expected and over > expected + 3 * np.sqrt(n * p * (1 - p))
    faces = "face" if n == 1 else "faces"
    if unfamiliar:
        note = (f"{over} of {n} {faces} score above the bundle's calibrated threshold (about {expected:.0f} expected); "
                f"this gallery looks unlike the photos the bundle was calibrated on, so they are marked doubtful "
                f"and still searched.")
    elif over:
        note = f"{over} of {n} {faces} marked doubtful (quality score above the calibrated threshold); still searched."
    else:
        note = ""
    return DoubtMarks(doubtful, over, expected, bool(unfamiliar), note)


def capped_rejection(quality: np.ndarray, marks: DoubtMarks, calibrated_share: float) -> np.ndarray:
    """(G,) bool: the calibrated rejection, capped at the calibrated share on an unfamiliar gallery.

    On a familiar gallery every doubtful entry is rejected; on an unfamiliar one only the
    ``calibrated_share`` worst (by score) are, and the rest stay searchable, marked doubtful.
    """
    if not marks.unfamiliar:
        return marks.doubtful.copy()
    q = np.asarray(quality, np.float64)
    k = int(np.floor(calibrated_share * len(q) + 0.5))
    out = np.zeros(len(q), bool)
    if k:
        order = np.lexsort((np.arange(len(q)), -np.nan_to_num(q, nan=-np.inf)))
        out[order[:k]] = True
    return out & marks.doubtful


#: Where the query's person stands in the gallery, as an "Unknown" answer is explained: ``absent`` (no
#: photo of them: Unknown is right), ``rejected`` (every photo of them is rejected: Unknown is what
#: rejection asks for), ``doubtful`` (every photo doubtful or rejected) or ``present`` (a usable photo:
#: Unknown is a miss).
PRESENCE = ("absent", "rejected", "doubtful", "present")


def person_presence(labels: Sequence[str | None], live: Sequence[int] | np.ndarray, person: str | None,
                    rejected: np.ndarray | None = None, doubtful: np.ndarray | None = None) -> str | None:
    """Where ``person`` stands among the gallery's live entries (one of ``PRESENCE``; None: no person given).

    Args:
        labels: the label of every entry position (deleted ones included).
        live: the positions of the live entries.
        person: the query's identity.
        rejected, doubtful: (N,) bool over all positions (None: none).

    Example: entries 0-2 are "Ann", "Bob", "Ann"; with both of Ann's rejected she is
    ``rejected``, not ``absent``:

    >>> r = np.array([True, False, True])
    >>> person_presence(["Ann", "Bob", "Ann"], [0, 1, 2], "Ann", r), person_presence(["Ann", "Bob"], [0, 1], "Cy", r)
    ('rejected', 'absent')
    """
    if person is None:
        return None
    mine = [int(i) for i in live if labels[int(i)] == person]
    if not mine:
        return "absent"
    rej = np.zeros(len(labels), bool) if rejected is None else np.asarray(rejected, bool)
    doubt = np.zeros(len(labels), bool) if doubtful is None else np.asarray(doubtful, bool)
    if all(rej[i] for i in mine):
        return "rejected"
    if all(rej[i] or doubt[i] for i in mine):
        return "doubtful"
    return "present"
