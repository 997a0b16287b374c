"""``evaluate``'s user metric: every query answered as the app answers it.

The paper's metric drops the queries whose person was rejected from the gallery. The
app answers them all: right (the query's person named), wrong (another person named)
or "Unknown". For one evaluation gallery this module counts those answers under each
rule the product can use, with 95% bootstrap intervals over query identities:

* ``answer_all``: nothing rejected, "Unknown" below the view's similarity threshold;
* ``removed``: the bundle's calibrated rejection, rejected entries removed from the
  search (what the app did before: a removed face hands its queries to the next person);
* ``blocking``: the same entries kept in the search, "Unknown" when one is the best match;
* ``policy``: the bundle's answer rule (``answer_rules.AnswerPolicy``) on top of
  ``answer_all``: the product's default;
* the query-side rules at the policy's coverage: answer only the queries with the
  highest top-1 similarity (or margin), as many as the policy answers.

Then the accuracy-coverage curve and its area for every confidence, and the accuracy
of answered queries at fixed abstention rates for each rule, with the paired
differences (combined against the query-side rules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmce.answer_metrics import (
    RIGHT,
    UNKNOWN,
    WRONG,
    abstain_lowest,
    accuracy_at_abstention,
    accuracy_coverage,
    accuracy_coverage_area,
    answer_counts,
    answer_outcomes,
    stranger_best,
    top_matches,
    unknown_mask,
)
from cmce.method.answer_rules import ANSWER_RULES, policy_features
from cmce.method.bundle_model import Bundle, Calibration, GalleryVectors
from cmce.method.unknown import gallery_doubt
from cmce.metrics.intervals import cluster_bootstrap, format_with_interval

__all__ = ["ABSTENTION_RATES", "answer_report", "gallery_overview"]

ABSTENTION_RATES = (0.05, 0.10, 0.20)


def _counts_with_ci(outcomes: np.ndarray, clusters: np.ndarray, resamples: int, seed: int) -> dict:
    """``answers.answer_counts`` plus 95% intervals of the right and wrong shares and the
    accuracy of the answered (bootstrap over identities)."""
    out = answer_counts(outcomes)
    q = len(outcomes)
    for name, code in (("right", RIGHT), ("wrong", WRONG)):
        _, lo, hi = cluster_bootstrap([(outcomes == code).astype(float)], clusters, resamples=resamples, seed=seed)
        out[f"{name}_ci95"] = [lo * q, hi * q]
    answered = np.where(outcomes == UNKNOWN, np.nan, (outcomes == RIGHT).astype(float))
    _, lo, hi = cluster_bootstrap([answered], clusters, resamples=resamples, seed=seed)
    out["answered_accuracy_ci95"] = [lo, hi]
    return out


def gallery_overview(bundle: Bundle, vectors: GalleryVectors) -> dict:
    """How many gallery entries score over the bundle's calibrated quality threshold, against
    the share the calibration gallery had (``Calibration.rejection_rate``); the gallery's
    mean quality score (``unknown.gallery_doubt``) and whether it lowers the ensemble's
    normalised "Unknown" threshold (``CohortNorm.relaxed``)."""
    cal = bundle.calibration
    thr = cal.threshold_for()
    over = int(np.sum(vectors.quality > thr)) if thr is not None else 0
    n = len(vectors.quality)
    doubt = gallery_doubt(vectors.quality)
    norm = cal.cohort_norm
    return {"entries": n, "over_threshold": over, "share_over_threshold": over / n if n else float("nan"),
            "calibrated_share": cal.rejection_rate, "threshold": thr, "score": cal.quality.kind,
            "mean_quality": doubt,
            "unknown_threshold_lowered": bool(norm is not None and n > norm.cohort and norm.relaxed("ensemble", n, doubt))}


def _curve(confidence: np.ndarray, correct: np.ndarray, points: int = 21) -> dict:
    cov, acc = accuracy_coverage(confidence, correct)
    picks = np.unique(np.clip(np.round(np.linspace(0, 1, points) * len(cov)).astype(int) - 1, 0, len(cov) - 1))
    return {"area": accuracy_coverage_area(confidence, correct),
            "coverage": [float(cov[i]) for i in picks], "accuracy": [float(acc[i]) for i in picks]}


@dataclass(frozen=True)
class _Answering:
    """One evaluation gallery's queries, answered under a bundle's calibration.

    Attributes:
        cal: the bundle's calibration.
        vectors: ``bundle.gallery_vectors`` of the gallery (G entries).
        query_vectors: (Q, Dq) query-model embeddings of the queries.
        query_probability: (Q,) the query faces' detector probability.
        q_lab, g_lab: identities; ``q_lab`` are also the bootstrap's clusters.
        doubt: the gallery's mean quality score (``unknown.gallery_doubt``).
        resamples, seed: of every bootstrap interval.
    """

    cal: Calibration
    vectors: GalleryVectors
    query_vectors: np.ndarray
    query_probability: np.ndarray
    q_lab: np.ndarray
    g_lab: np.ndarray
    doubt: float
    resamples: int
    seed: int

    def counts(self, outcomes: np.ndarray) -> dict:
        """``_counts_with_ci`` over query identities."""
        return _counts_with_ci(outcomes, self.q_lab, self.resamples, self.seed)

    def features_of(self, sim: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """The answer rules' features of each query's top match, whether it is wrong, and its score."""
        top = top_matches(sim, list(self.g_lab))
        pos = np.maximum(top.position, 0)
        feats = policy_features(top.score, top.margin, self.query_probability, self.vectors.quality[pos],
                                self.vectors.uncertainty[pos])
        return feats, self.g_lab[pos] != self.q_lab, top.score

    def unknown_rule(self, view: str) -> dict:
        """The view's "Unknown" threshold as the app applies it (normalised where the bundle has it)."""
        norm = self.cal.cohort_norm
        z_thr = None if norm is None else norm.threshold(view, len(self.g_lab), self.doubt)
        return {} if z_thr is None else {"cohort": norm.cohort, "norm_threshold": float(z_thr)}


def _per_view(a: _Answering) -> dict:
    """``views``: every view (the ensemble, then each member) answering all queries, and under its policy."""
    q_lab, g_lab = a.q_lab, a.g_lab
    per_view = {}
    for view, vecs in {"ensemble": a.vectors.ensemble, **a.vectors.views}.items():
        sim = a.query_vectors @ vecs.T
        thr = float(a.cal.similarity_thresholds.get(view, -np.inf))
        available = a.vectors.available[view]
        row = {"answer_all": a.counts(answer_outcomes(sim, q_lab, g_lab, thr, removed=~available,
                                                      **a.unknown_rule(view)))}
        policy = a.cal.answer_policy(view)
        if policy is not None:
            feats, _, _ = a.features_of(np.where(available[None, :], sim, -np.inf))
            row["policy"] = a.counts(answer_outcomes(sim, q_lab, g_lab, thr, removed=~available,
                                                     abstain=policy.abstains(feats), **a.unknown_rule(view)))
        per_view[view] = row
    return per_view


def _threshold_rules(a: _Answering, answer_all: dict, sim: np.ndarray, thr: float, unknown: dict,
                     rejected: np.ndarray) -> dict:
    """The ensemble's rules without an answer policy: ``answer_all``, ``removed``, ``blocking`` (and the
    raw threshold alone where the bundle has a normalised one)."""
    q_lab, g_lab = a.q_lab, a.g_lab
    rules = {
        "answer_all": answer_all,
        "removed": a.counts(answer_outcomes(sim, q_lab, g_lab, thr, removed=rejected, **unknown)),
        "blocking": a.counts(answer_outcomes(sim, q_lab, g_lab, thr, blocking=rejected, **unknown)),
    }
    if unknown:
        # the raw similarity threshold alone, for comparison (bundles calibrated before the normalised one)
        rules["answer_all_raw_threshold"] = a.counts(answer_outcomes(sim, q_lab, g_lab, thr))
    return rules


def _strangers(a: _Answering, sim: np.ndarray, thr: float, unknown: dict) -> dict:
    """The other side of the threshold: every query as a stranger (its person taken out of the gallery)."""
    raw_best = stranger_best(sim, a.q_lab, a.g_lab)
    named = {"raw_threshold": raw_best >= thr}
    if unknown:
        z = stranger_best(sim, a.q_lab, a.g_lab, unknown["cohort"])
        named["default"] = ~unknown_mask(raw_best, z, thr, unknown["norm_threshold"])
    strangers = {}
    for name, v in named.items():
        share, lo, hi = cluster_bootstrap([v.astype(float)], a.q_lab, resamples=a.resamples, seed=a.seed)
        strangers[name] = {"named": int(v.sum()), "share": share, "share_ci95": [lo, hi]}
    return strangers


def _coverage_matched_rules(a: _Answering, rules: dict, sim: np.ndarray, confidences: dict) -> dict:
    """Query-side rules answering as many queries as each product rule does (no threshold: the rule
    alone decides which queries are answered)."""
    out = {}
    for base in ("policy", "blocking", "removed"):
        if base not in rules:
            continue
        rate = 1.0 - rules[base]["coverage"]
        for conf in ("similarity", "margin"):
            outcomes = answer_outcomes(sim, a.q_lab, a.g_lab, -np.inf, abstain=abstain_lowest(confidences[conf], rate))
            out[f"{conf}_at_{base}_coverage"] = a.counts(outcomes)
    return out


def _abstention(a: _Answering, confidences: dict, wrong: np.ndarray, rates: Sequence[float]) -> dict:
    """Accuracy of the answered queries at each abstention rate per confidence, with the paired
    differences of the richer rules against the simpler ones."""
    abstention: dict = {"rates": list(rates), "answered_accuracy": {}, "answered_accuracy_ci95": {}, "comparisons": []}
    per_rule_values = {}
    for name, c in confidences.items():
        vals = [accuracy_at_abstention(c, wrong, r) for r in rates]
        per_rule_values[name] = vals
        stats = [cluster_bootstrap([v], a.q_lab, resamples=a.resamples, seed=a.seed) for v in vals]
        abstention["answered_accuracy"][name] = [s[0] for s in stats]
        abstention["answered_accuracy_ci95"][name] = [[s[1], s[2]] for s in stats]
    for richer in ("combined", "query"):
        for simpler in ("similarity", "query"):
            if richer == simpler or richer not in per_rule_values or simpler not in per_rule_values:
                continue
            for i, r in enumerate(rates):
                d, lo, hi = cluster_bootstrap([per_rule_values[simpler][i], per_rule_values[richer][i]], a.q_lab,
                                              lambda x, y: y - x, resamples=a.resamples, seed=a.seed)
                abstention["comparisons"].append({"rule": richer, "against": simpler, "rate": r,
                                                  "accuracy_gain": d, "ci95": [lo, hi]})
    return abstention


def answer_report(
    bundle: Bundle,
    vectors: GalleryVectors,
    query_vectors: np.ndarray,
    query_probability: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    rates: Sequence[float] = ABSTENTION_RATES,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """The app's answers on every query of one evaluation gallery, under every rule.

    Args:
        bundle: the serving bundle (thresholds, rejection, answer rules).
        vectors: ``bundle.gallery_vectors`` of the gallery (G entries).
        query_vectors: (Q, Dq) query-model embeddings of the queries.
        query_probability: (Q,) the query faces' detector probability.
        query_labels, gallery_labels: identities.
        rates: abstention rates for the rule comparison.
        resamples: bootstrap draws per interval.

    Returns:
        JSON-ready ``{"metric", "gallery", "rules", "strangers", "curves", "abstention",
        "views"}``; ``strangers``: every query asked as a stranger (its person taken out
        of the gallery), how many the raw threshold and the default name.
    """
    cal = bundle.calibration
    # the coverage guard of the normalised threshold reads the gallery's doubt
    a = _Answering(cal, vectors, query_vectors, query_probability, np.asarray(query_labels),
                   np.asarray(gallery_labels), gallery_doubt(vectors.quality), resamples, seed)
    rejected = bundle.rejected(vectors.quality)
    per_view = _per_view(a)
    sim = query_vectors @ vectors.ensemble.T
    thr = float(cal.similarity_thresholds.get("ensemble", -np.inf))
    unknown = a.unknown_rule("ensemble")
    feats, wrong, score = a.features_of(sim)
    rules = _threshold_rules(a, per_view["ensemble"]["answer_all"], sim, thr, unknown, rejected)
    strangers = _strangers(a, sim, thr, unknown)
    policy = cal.answer_policy("ensemble")
    confidences = {"similarity": score, "margin": feats["margin"]}
    if policy is not None:
        rules["policy"] = per_view["ensemble"]["policy"]  # the same dict: the view's row shows the rule too
        rules["policy"]["rule"] = policy.kind
        rules["policy"]["abstain_below"] = policy.threshold
        for rule in ANSWER_RULES:
            p = cal.answer_policy("ensemble", rule)
            if p is not None:
                confidences[rule] = p.confidence(feats)
    rules.update(_coverage_matched_rules(a, rules, sim, confidences))
    return {
        "metric": "every query answered as the app answers: right (its person named), wrong (another person "
                  "named) or unknown; the paper's kept-queries figures are under 'rejection'",
        "gallery": gallery_overview(bundle, vectors),
        "rules": rules,
        "strangers": strangers,
        "curves": {name: _curve(c, ~wrong) for name, c in confidences.items()},
        "abstention": _abstention(a, confidences, wrong, rates),
        "views": per_view,
    }


def answers_table(report: Mapping) -> list[str]:
    """Markdown lines of the rules' right / wrong / unknown counts (for the CLI and docs)."""
    lines = ["| rule | right | wrong | unknown | coverage | accuracy of answered |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in report["rules"].items():
        lines.append(f"| {name} | {r['right']} | {r['wrong']} | {r['unknown']} | {100 * r['coverage']:.1f}% | "
                     f"{format_with_interval(r['answered_accuracy'], r['answered_accuracy_ci95'], unit='%')} |")
    return lines
