"""The abstention rule (``AnswerPolicy``): when to say "Unknown" although a name scores above the threshold.

A confidence per query from its top-1 similarity and margin, the query face's own quality
and, for ``combined``, the quality of the gallery entry it lands on; the search abstains
below a calibrated threshold. Kinds (``ANSWER_RULES``):

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
"Unknown" to more than the bundle's abstention caps of the calibration queries: by
default 10% of clean and 17% of other queries, three points under the 20% promised on a
new gallery; ``cmce train --abstain-caps``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmce.answer_metrics import (
    accuracy_at_abstention,
    accuracy_coverage_area,
)
from cmce.errors import CmceError
from cmce.method.quality import detection_doubt, fit_logistic

__all__ = ["ANSWER_RULES", "AnswerPolicy", "FEATURES", "choose_answer_rule", "fit_answer_policy", "out_of_fold_confidence", "policy_features"]


ANSWER_RULES = ("similarity", "query", "combined")


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
