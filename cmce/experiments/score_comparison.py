"""Paired comparison of quality scores: how much more error one rejection score cuts than another.

For each rejection rate, the difference in relative error cut between the bundle's quality
score and every other score, with a 95% bootstrap interval over query identities in which
both scores are resampled together (paired): the interval is that of the difference itself,
not two overlapping intervals. ``cmce evaluate --compare-scores`` adds it to the evaluation
(``score_comparison`` in the JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from cmce.errors import CmceError
from cmce.experiments.evaluate import quality_scores_by_kind
from cmce.method.bundle_model import Bundle
from cmce.metrics.intervals import cluster_bootstrap, format_with_interval, relative_error_reduction
from cmce.metrics.rejection import gallery_rejection_mask
from cmce.metrics.retrieval import top1_hits
from cmce.models.embed import EmbeddedFiles
from cmce.models.transform import first_image_protocol

__all__ = ["RATES", "ScoreComparison", "ScoreStep", "bundle_score_comparison", "compare_quality_scores",
           "error_cut_difference", "render_score_comparison"]

RATES = (0.05, 0.1, 0.2, 0.3)

Estimate = tuple[float, float, float]
"""``(value, low, high)``: a figure and its 95% interval."""


def error_cut_difference(base_hits: np.ndarray, hits: np.ndarray, other_hits: np.ndarray, clusters: np.ndarray, *,
                         resamples: int = 2000, seed: int = 0) -> Estimate:
    """Error cut of one rejection minus that of another, with a paired bootstrap interval.

    ``RER(base, hits) - RER(base, other_hits)`` where ``RER`` is
    ``cmce.metrics.intervals.relative_error_reduction`` of the mean hits; the three
    vectors are resampled over the same clusters (query identities).

    Args:
        base_hits: ``(Q,)`` top-1 hits with nothing rejected (1, 0, NaN = not counted).
        hits: ``(Q,)`` top-1 hits after the first rejection.
        other_hits: ``(Q,)`` top-1 hits after the other rejection.
        clusters: ``(Q,)`` the query's identity.

    Returns:
        ``(difference, low, high)``; NaNs when the base has no error to cut.

    Example:
        Ten people, four errors; one rejection fixes two of them (error cut 0.5), the other
        none (0.0), so the difference is 0.5; with ten people the interval still reaches 0::

        >>> base = np.r_[np.ones(6), np.zeros(4)]
        >>> fixed = np.r_[np.ones(8), np.zeros(2)]
        >>> d, lo, hi = error_cut_difference(base, fixed, base, np.arange(10), resamples=200)
        >>> round(d, 2), round(lo, 2), round(hi, 2)
        (0.5, 0.0, 1.0)
    """

    def diff(b: float, a: float, o: float) -> float:
        return relative_error_reduction(b, a) - relative_error_reduction(b, o)

    return cluster_bootstrap([base_hits, hits, other_hits], clusters, diff, resamples=resamples, seed=seed)


@dataclass(frozen=True)
class ScoreStep:
    """One rejection rate of a comparison.

    Attributes:
        rate: share of the gallery rejected.
        error_cut: the shipped score's relative error cut ``(value, low, high)``.
        minus: other score -> the shipped score's error cut minus that score's, ``(value, low, high)``.
    """

    rate: float
    error_cut: Estimate
    minus: Mapping[str, Estimate]

    def to_dict(self) -> dict:
        return {"rate": self.rate, "error_cut": list(self.error_cut), "minus": {k: list(v) for k, v in self.minus.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> ScoreStep:
        return cls(d["rate"], tuple(d["error_cut"]), MappingProxyType({k: tuple(v) for k, v in d["minus"].items()}))


@dataclass(frozen=True)
class ScoreComparison:
    """The shipped quality score against every other one, rate by rate.

    Attributes:
        score: the shipped score (the bundle's quality kind).
        recall_at_1: Recall@1 with nothing rejected.
        errors: wrong top-1 answers with nothing rejected; queries: queries counted.
        steps: one per rejection rate.
    """

    score: str
    recall_at_1: float
    errors: int
    queries: int
    steps: tuple[ScoreStep, ...]

    @property
    def others(self) -> tuple[str, ...]:
        """The scores compared against, in order."""
        return tuple(self.steps[0].minus) if self.steps else ()

    def to_dict(self) -> dict:
        return {"score": self.score, "recall_at_1": self.recall_at_1, "errors": self.errors, "queries": self.queries,
                "rates": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: Mapping) -> ScoreComparison:
        return cls(d["score"], d["recall_at_1"], d["errors"], d["queries"],
                   tuple(ScoreStep.from_dict(s) for s in d["rates"]))


def compare_quality_scores(similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                           scores: Mapping[str, np.ndarray], shipped: str, *, rates: Sequence[float] = RATES,
                           resamples: int = 2000, seed: int = 0) -> ScoreComparison:
    """The shipped quality score's error cut, and its paired difference with every other score's.

    Args:
        similarity: ``(Q, G)`` query-gallery similarities (the served ensemble).
        query_labels: ``(Q,)``; gallery_labels: ``(G,)``.
        scores: score name -> ``(G,)`` quality score (higher = rejected first); must hold ``shipped``.
        shipped: the score the others are compared with.
        rates: shares of the gallery rejected.

    Raises:
        CmceError: ``shipped`` is not among ``scores``, or nothing to compare it with.

    Example:
        A gallery whose second entry misleads the first query: the score that rejects it
        cuts all the error (1.0); the one that rejects the second query's mate leaves only
        the error counted (-1.0), two apart::

        >>> sim = np.array([[0.9, 0.95, 0.1], [0.2, 0.1, 0.9]])
        >>> good, bad = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
        >>> c = compare_quality_scores(sim, np.array([0, 2]), np.array([0, 1, 2]), {"good": good, "bad": bad},
        ...                            "good", rates=(0.3,), resamples=50)
        >>> c.steps[0].error_cut[0], c.steps[0].minus["bad"][0]
        (1.0, 2.0)
    """
    if shipped not in scores:
        raise CmceError(f"no score {shipped!r} to compare; the scores are {', '.join(scores)}")
    others = [k for k in scores if k not in ("bundle", shipped)]
    if not others:
        raise CmceError(f"only {shipped!r} is there: nothing to compare it with")
    q_lab, g_lab = np.asarray(query_labels), np.asarray(gallery_labels)
    base = top1_hits(similarity, q_lab, g_lab)
    steps = []
    for rate in rates:
        hits = {k: top1_hits(similarity, q_lab, g_lab, gallery_rejection_mask(scores[k], rate))
                for k in (shipped, *others)}
        cut = cluster_bootstrap([base, hits[shipped]], q_lab, relative_error_reduction, resamples=resamples, seed=seed)
        minus = {k: error_cut_difference(base, hits[shipped], hits[k], q_lab, resamples=resamples, seed=seed)
                 for k in others}
        steps.append(ScoreStep(rate, cut, MappingProxyType(minus)))
    counted = ~np.isnan(base)
    return ScoreComparison(shipped, float(np.nanmean(base)) if counted.any() else float("nan"),
                           int(np.nansum(1 - base)), int(counted.sum()), tuple(steps))


def bundle_score_comparison(embedded: EmbeddedFiles, labels: Sequence[str], bundle: Bundle, *,
                            rates: Sequence[float] = RATES, resamples: int = 2000, seed: int = 0) -> ScoreComparison:
    """``compare_quality_scores`` for the ensemble ``bundle`` serves, on ``evaluate``'s protocol.

    The first face-found photo of each identity is the gallery, the others are queries (as
    ``evaluate_embedded``); the shipped score is the bundle's quality kind, compared with
    every other score ``quality_scores_by_kind`` gives (no random column: one random draw is
    too noisy to pair with; ``evaluate`` reports the mean of many).
    """
    labels = np.asarray(labels)
    idx = np.flatnonzero(embedded.found)
    gi_l, qi_l = first_image_protocol(labels[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    prob = embedded.detection_probability
    gv = bundle.gallery_vectors({m: v[gi] for m, v in embedded.embeddings.items()}, prob[gi])
    sim = embedded.embeddings[bundle.query_model][qi] @ gv.ensemble.T
    scores = quality_scores_by_kind(bundle, gv, prob[gi])
    return compare_quality_scores(sim, labels[qi], labels[gi], scores, bundle.calibration.quality.kind, rates=rates,
                                  resamples=resamples, seed=seed)


def render_score_comparison(comparison: ScoreComparison) -> str:
    """Markdown: the shipped score's error cut and its paired difference with each other score, per rate.

    A figure is ``—`` where there is no error to cut.
    """
    c, others = comparison, comparison.others

    def cell(e: Estimate, signed: bool, unit: str = "") -> str:
        return format_with_interval(e[0], e[1:], digits=1, interval_digits=0, signed=signed, unit=unit)

    lines = [f"R@1 {100 * c.recall_at_1:.2f}, {c.errors} errors in {c.queries} queries; shipped score {c.score}", "",
             f"| rejected | {c.score} error cut | " + " | ".join(f"{c.score} minus {k}" for k in others) + " |",
             "|---:|---:|" + "---:|" * len(others)]
    for s in c.steps:
        lines.append(f"| {100 * s.rate:.0f}% | {cell(s.error_cut, False, '%')} | "
                     + " | ".join(cell(d, True) for d in s.minus.values()) + " |")
    return "\n".join(lines) + "\n"
