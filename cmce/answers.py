"""What a search answers, counted as the app answers: right, wrong or unknown, on every query.

The paper scores gallery rejection on the queries that are *kept* (a query whose person
was rejected is dropped). The app drops nothing: every query gets a named person (right
or wrong) or "Unknown". This module counts answers that way and holds the rule that
decides when to say "Unknown" although a name scores above the similarity threshold.

Pure functions (no I/O) over a query-gallery similarity matrix:

* ``top_matches``: per query the best searchable entry, its score and the margin to
  the best entry of another person;
* ``answer_outcomes``: right / wrong / unknown per query for a similarity threshold,
  rejected entries (removed, or blocking: a query whose best match is such an entry
  gets "Unknown", never the next person) and the queries a rule abstains on;
* ``accuracy_coverage`` and ``accuracy_coverage_area``: answering the most confident
  queries first, the accuracy of the answered ones against the share answered.

``AnswerPolicy`` is the abstention rule: a confidence per query from its top-1
similarity and margin, the query face's own quality and, for ``combined``, the
quality of the gallery entry it lands on; the search abstains ("Unknown") below a
calibrated threshold. Kinds (``ANSWER_RULES``):

==============  ===================================================================
``similarity``  the top-1 similarity alone (a plain query-side threshold)
``query``       the top-1 similarity, the margin and the query face's detector doubt
``combined``    ``query`` plus the top-1 entry's quality score and disagreement
==============  ===================================================================

Each is a logistic model of "the named person is wrong" over its standardised
features, fitted on calibration queries whose persons the networks never saw; the
confidence is the predicted chance of a right answer. For ``similarity`` that is a
monotone function of the similarity, so it ranks queries exactly as the similarity
does. The search abstains where the confidence is below the threshold (calibrated
in training: 0.75, a wrong name costing three "Unknown"s, lowered where that would say
"Unknown" to more than 10% of clean or 20% of other calibration queries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CmceError
from .quality import detection_doubt, fit_logistic

__all__ = [
    "ANSWERS", "ANSWER_RULES", "OUTCOMES", "RIGHT", "UNKNOWN", "WRONG", "Answer", "AnswerPolicy", "DoubtMarks",
    "TopMatches", "capped_rejection", "decide_answer", "doubt_marks",
    "abstain_lowest", "accuracy_at_abstention", "accuracy_coverage", "accuracy_coverage_area", "answer_counts",
    "answer_outcomes", "choose_answer_rule", "fit_answer_policy", "out_of_fold_confidence", "policy_features",
    "top_matches",
]

RIGHT, WRONG, UNKNOWN = 0, 1, 2
OUTCOMES = ("right", "wrong", "unknown")
ANSWER_RULES = ("similarity", "query", "combined")
FEATURES = {
    "similarity": ("similarity",),
    "query": ("similarity", "margin", "query_doubt"),
    "combined": ("similarity", "margin", "query_doubt", "entry_quality", "entry_disagreement"),
}


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


def policy_features(similarity: np.ndarray, margin: np.ndarray, query_probability: np.ndarray,
                    entry_quality: np.ndarray, entry_disagreement: np.ndarray) -> dict[str, np.ndarray]:
    """The raw per-query inputs of ``AnswerPolicy``, each (Q,) float64.

    Args:
        similarity: top-1 similarity. margin: ``TopMatches.margin``.
        query_probability: the query face's detector probability.
        entry_quality: the bundle's quality score of the top-1 entry (higher = worse).
        entry_disagreement: its members' disagreement (NaN: not measurable).
    """
    return {
        "similarity": np.asarray(similarity, np.float64),
        "margin": np.asarray(margin, np.float64),
        "query_doubt": detection_doubt(query_probability).astype(np.float64) / 6.0,
        "entry_quality": np.asarray(entry_quality, np.float64),
        "entry_disagreement": np.asarray(entry_disagreement, np.float64),
    }


@dataclass(frozen=True)
class AnswerPolicy:
    """When a search says "Unknown" although a name scores above the similarity threshold.

    ``confidence`` is the predicted chance that the named person is right,
    ``1 - sigmoid(z . coef + intercept)`` over the standardised features ``z`` of
    ``FEATURES[kind]``; the search abstains where it is below ``threshold``. A feature
    a query lacks (NaN) is set to its training mean.

    Attributes:
        kind: one of ``ANSWER_RULES``.
        threshold: abstain below this confidence (``-inf``: never).
        mean, scale, coef: per feature of ``FEATURES[kind]``.
        intercept: the logistic intercept.
        rate: the share of calibration queries it abstained on (for the record).
    """

    kind: str
    threshold: float = float("-inf")
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    coef: tuple[float, ...] = ()
    intercept: float = 0.0
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_RULES:
            raise CmceError(f"answer rule must be one of {', '.join(ANSWER_RULES)}, got {self.kind!r}")
        n = len(FEATURES[self.kind])
        if not (len(self.mean) == len(self.scale) == len(self.coef) == n):
            raise CmceError(f"the {self.kind} answer rule needs {n} feature means, scales and coefficients")

    @property
    def features(self) -> tuple[str, ...]:
        return FEATURES[self.kind]

    def confidence(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """(Q,) confidence that the named person is right; higher = answer.

        Args:
            features: ``policy_features(...)`` (at least this kind's ``features``).
        """
        x = np.stack([np.asarray(features[f], np.float64) for f in self.features], axis=1)
        mean = np.asarray(self.mean)
        x = np.where(np.isnan(x), mean[None, :], x)
        z = (x - mean) / np.asarray(self.scale)
        logit = z @ np.asarray(self.coef) + self.intercept
        return 1.0 - 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))

    def abstains(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """(Q,) bool: the queries this rule answers "Unknown"."""
        return self.confidence(features) < self.threshold

    def with_threshold(self, threshold: float, rate: float | None = None) -> AnswerPolicy:
        return AnswerPolicy(self.kind, float(threshold), self.mean, self.scale, self.coef, self.intercept,
                            self.rate if rate is None else float(rate))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold, "mean": list(self.mean), "scale": list(self.scale),
                "coef": list(self.coef), "intercept": self.intercept, "rate": self.rate}

    @classmethod
    def from_dict(cls, data: Mapping) -> AnswerPolicy:
        try:
            return cls(str(data.get("kind", "similarity")), float(data.get("threshold", float("-inf"))),
                       tuple(float(x) for x in data.get("mean", ())), tuple(float(x) for x in data.get("scale", ())),
                       tuple(float(x) for x in data.get("coef", ())), float(data.get("intercept", 0.0)),
                       float(data.get("rate", 0.0)))
        except (TypeError, ValueError) as e:
            raise CmceError(f"answer policy: unreadable values ({e})") from e


def fit_answer_policy(kind: str, features: Mapping[str, np.ndarray], wrong: np.ndarray,
                      weight: np.ndarray | None = None, l2: float = 1.0) -> AnswerPolicy:
    """Fit the confidence of an answer rule on queries whose top-1 was right or wrong.

    A weighted L2 logistic regression (``quality.fit_logistic``) of ``wrong`` on the
    standardised features of ``FEATURES[kind]``. The returned policy never abstains:
    set its threshold with ``with_threshold``.

    Args:
        kind: one of ``ANSWER_RULES``.
        features: ``policy_features(...)`` of the calibration queries.
        wrong: (Q,) bool, the top-1 entry is another person.
        weight: (Q,) sample weights (default 1).
    """
    if kind not in ANSWER_RULES:
        raise CmceError(f"answer rule must be one of {', '.join(ANSWER_RULES)}, got {kind!r}")
    names = FEATURES[kind]
    x = np.stack([np.asarray(features[f], np.float64) for f in names], axis=1)
    y = np.asarray(wrong, np.float64)
    if len(y) < 2 or y.min() == y.max():
        raise CmceError(f"fitting the {kind} answer rule needs right and wrong answers; got {len(y)} queries, "
                        f"{int(y.sum())} wrong")
    mean = np.nanmean(x, axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    x = np.where(np.isnan(x), mean[None, :], x)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, np.float64)
    coef, intercept = fit_logistic((x - mean) / scale, y, w, l2=l2)
    return AnswerPolicy(kind, float("-inf"), tuple(map(float, mean)), tuple(map(float, scale)),
                        tuple(map(float, coef)), float(intercept))


def out_of_fold_confidence(kind: str, features: Mapping[str, np.ndarray], wrong: np.ndarray,
                           folds: np.ndarray) -> np.ndarray:
    """(Q,) each query's confidence under ``kind`` fitted on the other folds only.

    Args:
        features: ``policy_features`` of the calibration queries.
        wrong: (Q,) bool, the top-1 entry is another person.
        folds: (Q,) fold number per query (identity-disjoint folds).
    """
    folds = np.asarray(folds)
    out = np.full(len(folds), np.nan)
    for k in np.unique(folds):
        test = folds == k
        train = ~test
        policy = fit_answer_policy(kind, {f: v[train] for f, v in features.items()}, wrong[train])
        out[test] = policy.confidence({f: v[test] for f, v in features.items()})
    return out


def accuracy_at_abstention(confidence: np.ndarray, wrong: np.ndarray, rate: float) -> np.ndarray:
    """(Q,) 1.0 answered right, 0.0 answered wrong, NaN abstained (the ``rate`` least confident).

    Its mean over the non-NaN entries is the accuracy of the answered queries
    (the form ``metrics.cluster_bootstrap`` takes).
    """
    abstain = abstain_lowest(confidence, rate)
    return np.where(abstain, np.nan, (~np.asarray(wrong, bool)).astype(np.float64))


def choose_answer_rule(
    features: Mapping[str, np.ndarray],
    wrong: np.ndarray,
    folds: np.ndarray,
    conditions: np.ndarray,
    identities: np.ndarray,
    *,
    rates: Sequence[float] = (0.05, 0.10, 0.20),
    decide_on: tuple[str, float] = ("mixed", 0.10),
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[str, dict]:
    """Pick the answer rule by identity cross-validation, simplest first.

    Every rule of ``ANSWER_RULES`` is fitted on the other folds and scored on each
    fold (``out_of_fold_confidence``). A richer rule replaces a simpler one only when,
    on the ``decide_on`` condition and abstention rate, it answers more accurately by
    more than its interval: the 95% bootstrap interval over identities of the paired
    difference lies above zero. ``query`` must beat ``similarity``; then ``combined``
    (the gallery's quality joins) must beat whichever of the two won.

    Args:
        features, wrong, folds: as ``out_of_fold_confidence``.
        conditions: (Q,) gallery kind per query (``clean``, ``mixed``, ...).
        identities: (Q,) the query's person (bootstrap clusters; unique across conditions
            is not needed: each condition is resampled on its own).
        rates: abstention rates reported.
        decide_on: (condition, rate) of the decision.

    Returns:
        (chosen kind, report): per rule and condition the accuracy-coverage area and the
        accuracy of answered queries at each rate; the paired differences behind the
        decision with their intervals.
    """
    from .metrics import cluster_bootstrap

    wrong = np.asarray(wrong, bool)
    conditions = np.asarray(conditions)
    identities = np.asarray(identities)
    conf = {k: out_of_fold_confidence(k, features, wrong, folds) for k in ANSWER_RULES}
    report: dict = {"rules": {}, "queries": {str(c): int((conditions == c).sum()) for c in np.unique(conditions)},
                    "rates": list(rates)}
    for kind, c in conf.items():
        per = {}
        for cond in np.unique(conditions):
            sel = conditions == cond
            per[str(cond)] = {
                "area": accuracy_coverage_area(c[sel], ~wrong[sel]),
                "answered_accuracy": [float(np.nanmean(accuracy_at_abstention(c[sel], wrong[sel], r))) for r in rates],
            }
        report["rules"][kind] = per
    cond, rate = decide_on
    sel = conditions == cond
    if not sel.any():
        sel = np.ones(len(wrong), bool)
    chosen, decisions = "similarity", []
    for richer in ("query", "combined"):
        base = chosen
        a = accuracy_at_abstention(conf[base][sel], wrong[sel], rate)
        b = accuracy_at_abstention(conf[richer][sel], wrong[sel], rate)
        d, lo, hi = cluster_bootstrap([a, b], identities[sel], lambda x, y: y - x, resamples=resamples, seed=seed)
        decisions.append({"from": base, "to": richer, "condition": str(cond), "rate": rate,
                          "accuracy_gain": d, "ci95": [lo, hi]})
        if lo > 0:
            chosen = richer
    report["decisions"] = decisions
    report["chosen"] = chosen
    return chosen, report


# --------------------------------------------------------------------------- one query, as the app answers

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
    """

    kind: str
    label: str | None
    score: float
    confidence: float | None
    reason: str

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
    """
    if not len(scores):
        return Answer("unknown", None, float("nan"), None, "Unknown: the gallery has no face to match")
    s1, who = float(scores[0]), labels[0]
    name = who or "an unlabelled face"
    if s1 < threshold:
        return Answer("unknown", who, s1, None,
                      f"Unknown: no gallery face reaches the threshold (best {s1:.3f} < {threshold:.3f})")
    if blocked:
        return Answer("doubtful", who, s1, None, f"Unknown: the best match is a rejected photo of {name}")
    conf = None
    if policy is not None:
        feats = policy_features(np.array([s1]), np.array([_margin(scores, keys)]), np.array([query_probability]),
                                np.array([entry_quality]), np.array([entry_disagreement]))
        conf = float(policy.confidence(feats)[0])
        if conf < policy.threshold:
            if doubtful:
                return Answer("doubtful", who, s1, conf, f"Unknown: the best match is a doubtful photo of {name} "
                                                         f"(chance of a right answer {conf:.2f})")
            return Answer("unsure", who, s1, conf, f"Unknown: the best match, {name}, is too likely wrong "
                                                   f"(chance of a right answer {conf:.2f} < {policy.threshold:.2f})")
    tail = "" if conf is None else f" (chance of a right answer {conf:.2f})"
    return Answer("match", who, s1, conf, f"{name}{' (a doubtful photo)' if doubtful else ''}, similarity {s1:.3f}{tail}")


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
