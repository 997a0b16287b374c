"""What a search answers, counted as the app answers: right, wrong or unknown, on every query.

The paper scores gallery rejection on the queries that are *kept* (a query whose person
was rejected is dropped). The app drops nothing: every query gets a named person (right
or wrong) or "Unknown". This module counts answers that way and holds the rule that
decides when to say "Unknown" although a name scores above the similarity threshold.

Pure functions (no I/O) over a query-gallery similarity matrix, in ``cmce.answer_metrics``
and re-exported here:

* ``top_matches``: per query the best searchable entry, its score and the margin to
  the best entry of another person;
* ``answer_outcomes``: right / wrong / unknown per query for a similarity threshold,
  rejected entries (removed, or blocking: a query whose best match is such an entry
  gets "Unknown", never the next person) and the queries a rule abstains on;
* ``accuracy_coverage`` and ``accuracy_coverage_area``: answering the most confident
  queries first, the accuracy of the answered ones against the share answered;
* ``cohort_score`` / ``cohort_normalised`` and ``stranger_best``: the best score
  standardised by the query's scores against the next people of the gallery (adaptive
  Z-norm), and each query's best score as a stranger (its person taken out).

``CohortNorm`` is the "Unknown" threshold on the cohort-normalised score: a raw cosine
threshold names strangers more often the larger or the more degraded the gallery, while
"how far the best match stands out from the next 50 people" holds across galleries
(``scripts/unknown_threshold.py``). Galleries with fewer than ``cohort`` other people
keep the raw threshold.

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

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmce.answer_metrics import (
    OUTCOMES,
    RIGHT,
    UNKNOWN,
    WRONG,
    TopMatches,
    abstain_lowest,
    accuracy_at_abstention,
    accuracy_coverage,
    accuracy_coverage_area,
    answer_counts,
    answer_outcomes,
    cohort_normalised,
    cohort_score,
    stranger_best,
    top_matches,
    unknown_mask,
)
from cmce.errors import CmceError
from cmce.method.quality import detection_doubt, fit_logistic

__all__ = [
    "ANSWERS", "ANSWER_RULES", "DEFAULT_COHORT", "OUTCOMES", "UNKNOWN_BY", "RIGHT", "UNKNOWN", "WRONG", "Answer", "AnswerPolicy", "CohortNorm",
    "DoubtMarks", "TopMatches", "capped_rejection", "cohort_normalised", "cohort_score", "decide_answer",
    "doubt_marks", "gallery_doubt", "stranger_best", "unknown_mask", "unknown_norm", "unknown_note",
    "abstain_lowest", "accuracy_at_abstention", "accuracy_coverage", "accuracy_coverage_area", "answer_counts",
    "answer_outcomes", "choose_answer_rule", "fit_answer_policy", "out_of_fold_confidence", "policy_features",
    "top_matches",
]

ANSWER_RULES = ("similarity", "query", "combined")
UNKNOWN_BY = ("normalised", "strict", "similarity")
"""How a search decides "Unknown" before any answer rule: ``normalised`` (the bundle's
``CohortNorm`` where the gallery holds its cohort, lowered by its coverage guard on a
gallery of poor photos, the raw threshold elsewhere; the default), ``strict`` (the same
without the coverage guard: names the fewest strangers, says "Unknown" more on poor
galleries) or ``similarity`` (the raw similarity threshold only: names more strangers,
says "Unknown" less on galleries of poor photos)."""
DEFAULT_COHORT = 50
"""People whose scores normalise a query's best score (``CohortNorm``): galleries smaller
than this keep the raw similarity threshold."""
FEATURES = {
    "similarity": ("similarity",),
    "query": ("similarity", "margin", "query_doubt"),
    "combined": ("similarity", "margin", "query_doubt", "entry_quality", "entry_disagreement"),
}


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
    from cmce.metrics.intervals import cluster_bootstrap

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
class CohortNorm:
    """The "Unknown" threshold on cohort-normalised scores (adaptive Z-norm over the gallery).

    A query's best score counts by how far it stands out from its scores against the
    next ``cohort`` people of the gallery (``cohort_score``): below the view's threshold
    the answer is "Unknown". Each threshold names ``strangers_named`` of strangers (a
    query whose person is not in the gallery) on clean calibration galleries. A stranger
    meets more impostors in a larger gallery, so the threshold is calibrated per gallery
    size (``sizes``, ``by_size``) and interpolated in log size between them (``threshold``).
    Where the gallery holds fewer than ``cohort`` other people the raw similarity
    threshold applies.

    On a gallery of poorer photos than the calibration's, a person's own photo stands out
    less from the others, and a threshold that names few strangers would say "Unknown" to
    most searches. The *coverage guard* caps the threshold by the gallery's mean entry
    quality score (its *doubt*, ``gallery_doubt``): calibrated on clean, mixed and wholly
    degraded galleries so that the threshold alone says "Unknown" to at most
    ``guard_share`` of their queries (``guard_threshold``). A person's own photo also stands
    out less in a larger gallery (the next 50 people are closer), so the guard moves with
    the gallery's size by ``guard_slope`` per unit of log size from ``guard_size``. Where it
    binds, strangers are named more often; ``relaxed`` says so.

    Attributes:
        cohort: how many of the next people's scores the statistics come from.
        thresholds: per view, the normalised threshold at the calibration galleries' size.
        strangers_named: the share of strangers named on the calibration galleries.
        sizes: gallery sizes (entries) the ``by_size`` thresholds were calibrated at,
            ascending (empty: ``thresholds`` at every size, as in bundles calibrated before).
        by_size: per view, one threshold per size.
        guard_doubt: gallery doubts the guard was calibrated at, ascending (empty: no guard).
        guard: per view, the most the threshold may be at each of ``guard_doubt``
            (non-increasing; interpolated linearly, held at the ends).
        guard_share: ``{"clean": ..., "any": ...}``, the unknown shares the guard allowed.
        guard_size: the gallery size (entries) ``guard`` was calibrated at (0: no size term).
        guard_slope: per view, the guard's change per unit of log gallery size (applied
            between ``2 * cohort`` and ``16 * guard_size`` entries, held beyond).
    """

    cohort: int = DEFAULT_COHORT
    thresholds: Mapping[str, float] = None  # type: ignore[assignment]
    strangers_named: float = 0.05
    sizes: tuple[int, ...] = ()
    by_size: Mapping[str, tuple[float, ...]] = None  # type: ignore[assignment]
    guard_doubt: tuple[float, ...] = ()
    guard: Mapping[str, tuple[float, ...]] = None  # type: ignore[assignment]
    guard_share: Mapping[str, float] = None  # type: ignore[assignment]
    guard_size: int = 0
    guard_slope: Mapping[str, float] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("thresholds", "by_size", "guard", "guard_share", "guard_slope"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, {})
        if not isinstance(self.cohort, int) or self.cohort < 2:
            raise CmceError(f"a cohort is a count of people >= 2 (their scores' spread normalises), got {self.cohort!r}")
        if list(self.sizes) != sorted(set(self.sizes)) or any(len(v) != len(self.sizes) for v in self.by_size.values()):
            raise CmceError("CohortNorm sizes must ascend, with one threshold per size for every view")
        if (list(self.guard_doubt) != sorted(set(self.guard_doubt))
                or any(len(v) != len(self.guard_doubt) for v in self.guard.values())):
            raise CmceError("CohortNorm guard_doubt must ascend, with one guard value per doubt for every view")

    @property
    def hits_needed(self) -> int:
        """Hits a search fetches so that the cohort is there even when the best person has several entries."""
        return 2 * self.cohort + 10

    def hits_for(self, gallery_size: int) -> int:
        """Hits a search of a gallery of ``gallery_size`` entries fetches for the cohort (0: too
        small a gallery for it, the raw threshold decides)."""
        return self.hits_needed if gallery_size > self.cohort else 0

    def threshold(self, view: str, gallery_size: int | None = None,
                  gallery_doubt: float | None = None) -> float | None:
        """The view's normalised threshold for a gallery of ``gallery_size`` entries and mean
        doubt ``gallery_doubt`` (None: not calibrated).

        Interpolated linearly in log size between the calibrated sizes, held at the ends;
        without ``gallery_size`` or per-size thresholds, the calibration galleries' one;
        capped by the coverage guard where ``gallery_doubt`` is given (``guard_threshold``).

        Example:
            >>> n = CohortNorm(50, {"ensemble": 5.0}, 0.05, (100, 400), {"ensemble": (4.0, 5.0)})
            >>> n.threshold("ensemble", 200), n.threshold("ensemble", 60), n.threshold("ensemble")
            (4.5, 4.0, 5.0)
        """
        if view not in self.thresholds:
            return None
        per = self.by_size.get(view)
        if gallery_size is None or not per:
            t = float(self.thresholds[view])
        else:
            t = float(np.interp(np.log(max(gallery_size, 1)), np.log(np.asarray(self.sizes, np.float64)), per))
        g = self.guard_threshold(view, gallery_doubt, gallery_size)
        return t if g is None else min(t, g)

    def guard_threshold(self, view: str, gallery_doubt: float | None,
                        gallery_size: int | None = None) -> float | None:
        """The most the view's threshold may be in a gallery of this mean doubt and size (None: no guard).

        Example:
            >>> n = CohortNorm(50, {"ensemble": 5.0}, guard_doubt=(0.1, 0.5), guard={"ensemble": (6.0, 2.0)})
            >>> n.guard_threshold("ensemble", 0.3), n.threshold("ensemble", 800, 0.3), n.threshold("ensemble", 800, 0.0)
            (4.0, 4.0, 5.0)
            >>> m = dataclasses.replace(n, guard_size=400, guard_slope={"ensemble": -1.0})
            >>> round(m.guard_threshold("ensemble", 0.3, 400 * np.e), 3), m.guard_threshold("ensemble", 0.3)
            (3.0, 4.0)
        """
        per = self.guard.get(view)
        if not per or gallery_doubt is None or not np.isfinite(gallery_doubt):
            return None
        g = float(np.interp(float(gallery_doubt), np.asarray(self.guard_doubt, np.float64), per))
        slope = self.guard_slope.get(view)
        if slope and gallery_size and self.guard_size:
            size = min(max(gallery_size, 2 * self.cohort), 16 * self.guard_size)
            g += float(slope) * float(np.log(size / self.guard_size))
        return g

    def relaxed(self, view: str, gallery_size: int | None, gallery_doubt: float | None) -> bool:
        """Whether the coverage guard lowers the view's threshold in this gallery."""
        base = self.threshold(view, gallery_size)
        return base is not None and self.threshold(view, gallery_size, gallery_doubt) < base  # type: ignore[operator]

    def to_dict(self) -> dict:
        return {"cohort": self.cohort, "thresholds": dict(self.thresholds), "strangers_named": self.strangers_named,
                **({"sizes": list(self.sizes), "by_size": {k: list(v) for k, v in self.by_size.items()}}
                   if self.sizes else {}),
                **({"guard_doubt": list(self.guard_doubt), "guard": {k: list(v) for k, v in self.guard.items()},
                    "guard_share": dict(self.guard_share), "guard_size": self.guard_size,
                    "guard_slope": dict(self.guard_slope)} if self.guard_doubt else {})}

    @classmethod
    def from_dict(cls, d: Mapping) -> CohortNorm:
        return cls(int(d.get("cohort", DEFAULT_COHORT)), {k: float(v) for k, v in d.get("thresholds", {}).items()},
                   float(d.get("strangers_named", 0.05)), tuple(int(x) for x in d.get("sizes", ())),
                   {k: tuple(float(x) for x in v) for k, v in d.get("by_size", {}).items()},
                   tuple(float(x) for x in d.get("guard_doubt", ())),
                   {k: tuple(float(x) for x in v) for k, v in d.get("guard", {}).items()},
                   {k: float(v) for k, v in d.get("guard_share", {}).items()}, int(d.get("guard_size", 0)),
                   {k: float(v) for k, v in d.get("guard_slope", {}).items()})


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


def gallery_doubt(quality: np.ndarray) -> float:
    """A gallery's *doubt*: the mean quality score of its entries (NaN scores left out; NaN when none).

    The coverage guard of ``CohortNorm`` reads it: a gallery of poorer photos than the
    calibration's scores higher.

    Example:
        >>> gallery_doubt(np.array([0.1, 0.3, np.nan]))
        0.2
    """
    q = np.asarray(quality, np.float64)
    q = q[np.isfinite(q)]
    return float(q.mean()) if len(q) else float("nan")


def unknown_note(norm: CohortNorm | None, view: str, gallery_size: int, doubt: float) -> str:
    """One sentence for the user where the coverage guard lowers the "Unknown" threshold ("" elsewhere)."""
    if norm is None or gallery_size <= norm.cohort or not norm.relaxed(view, gallery_size, doubt):
        return ""
    base, low = norm.threshold(view, gallery_size), norm.threshold(view, gallery_size, doubt)
    return (f"This gallery's photos look poorer than those the bundle was calibrated on (mean quality score "
            f"{doubt:.3f}): so that most searches still get a name, a match needs to stand out {low:.1f} spreads "
            f"from the next {norm.cohort} people instead of {base:.1f}, and strangers are named more often "
            f"(\"strict\" keeps {base:.1f}).")


def unknown_norm(norm: CohortNorm | None, unknown_by: str | None) -> CohortNorm | None:
    """The normalised threshold a search applies: ``norm``, without its coverage guard for
    ``strict``, none for ``similarity``.

    Raises:
        CmceError: ``unknown_by`` is not one of ``UNKNOWN_BY`` (or None).
    """
    if unknown_by is not None and unknown_by not in UNKNOWN_BY:
        raise CmceError(f"unknown_by must be one of {', '.join(UNKNOWN_BY)}, got {unknown_by!r}")
    if unknown_by == "similarity":
        return None
    if unknown_by == "strict" and norm is not None:
        return dataclasses.replace(norm, guard_doubt=(), guard={})
    return norm


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
