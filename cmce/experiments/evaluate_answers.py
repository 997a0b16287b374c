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
from cmce.method.bundle_model import Bundle, GalleryVectors
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
    q_lab = np.asarray(query_labels)
    g_lab = np.asarray(gallery_labels)
    cal = bundle.calibration
    clusters = q_lab
    quality = vectors.quality
    doubt = gallery_doubt(quality)  # the coverage guard of the normalised threshold reads it
    rejected = bundle.rejected(quality)
    views = {"ensemble": vectors.ensemble, **vectors.views}

    def features_of(sim: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        top = top_matches(sim, list(g_lab))
        pos = np.maximum(top.position, 0)
        feats = policy_features(top.score, top.margin, query_probability, quality[pos], vectors.uncertainty[pos])
        return feats, g_lab[pos] != q_lab, top.score

    def unknown_rule(view: str) -> dict:
        """The view's "Unknown" threshold as the app applies it (normalised where the bundle has it)."""
        norm = cal.cohort_norm
        z_thr = None if norm is None else norm.threshold(view, len(g_lab), doubt)
        return {} if z_thr is None else {"cohort": norm.cohort, "norm_threshold": float(z_thr)}

    per_view = {}
    for view, vecs in views.items():
        sim = query_vectors @ vecs.T
        thr = float(cal.similarity_thresholds.get(view, -np.inf))
        available = vectors.available[view]
        row = {"answer_all": _counts_with_ci(answer_outcomes(sim, q_lab, g_lab, thr, removed=~available,
                                                             **unknown_rule(view)), clusters, resamples, seed)}
        policy = cal.answer_policy(view)
        if policy is not None:
            feats, _, _ = features_of(np.where(available[None, :], sim, -np.inf))
            row["policy"] = _counts_with_ci(answer_outcomes(sim, q_lab, g_lab, thr, removed=~available,
                                                            abstain=policy.abstains(feats), **unknown_rule(view)),
                                            clusters, resamples, seed)
        per_view[view] = row

    sim = query_vectors @ vectors.ensemble.T
    thr = float(cal.similarity_thresholds.get("ensemble", -np.inf))
    unknown = unknown_rule("ensemble")
    feats, wrong, score = features_of(sim)
    rules = {
        "answer_all": per_view["ensemble"]["answer_all"],
        "removed": _counts_with_ci(answer_outcomes(sim, q_lab, g_lab, thr, removed=rejected, **unknown), clusters,
                                   resamples, seed),
        "blocking": _counts_with_ci(answer_outcomes(sim, q_lab, g_lab, thr, blocking=rejected, **unknown), clusters,
                                    resamples, seed),
    }
    if unknown:
        # the raw similarity threshold alone, for comparison (bundles calibrated before the normalised one)
        rules["answer_all_raw_threshold"] = _counts_with_ci(answer_outcomes(sim, q_lab, g_lab, thr), clusters,
                                                            resamples, seed)
    # the other side of the threshold: every query as a stranger (its person taken out of the gallery)
    raw_best = stranger_best(sim, q_lab, g_lab)
    named = {"raw_threshold": raw_best >= thr}
    if unknown:
        z = stranger_best(sim, q_lab, g_lab, unknown["cohort"])
        named["default"] = ~unknown_mask(raw_best, z, thr, unknown["norm_threshold"])
    strangers = {}
    for name, v in named.items():
        share, lo, hi = cluster_bootstrap([v.astype(float)], clusters, resamples=resamples, seed=seed)
        strangers[name] = {"named": int(v.sum()), "share": share, "share_ci95": [lo, hi]}
    policy = cal.answer_policy("ensemble")
    confidences = {"similarity": score, "margin": feats["margin"]}
    if policy is not None:
        rules["policy"] = per_view["ensemble"]["policy"]
        rules["policy"]["rule"] = policy.kind
        rules["policy"]["abstain_below"] = policy.threshold
        for rule in ANSWER_RULES:
            p = cal.answer_policy("ensemble", rule)
            if p is not None:
                confidences[rule] = p.confidence(feats)
    # query-side rules answering as many queries as each product rule does (no threshold:
    # the rule alone decides which queries are answered)
    for base in ("policy", "blocking", "removed"):
        if base not in rules:
            continue
        rate = 1.0 - rules[base]["coverage"]
        for conf in ("similarity", "margin"):
            out = answer_outcomes(sim, q_lab, g_lab, -np.inf, abstain=abstain_lowest(confidences[conf], rate))
            rules[f"{conf}_at_{base}_coverage"] = _counts_with_ci(out, clusters, resamples, seed)
    curves = {name: _curve(c, ~wrong) for name, c in confidences.items()}
    abstention: dict = {"rates": list(rates), "answered_accuracy": {}, "answered_accuracy_ci95": {}, "comparisons": []}
    per_rule_values = {}
    for name, c in confidences.items():
        vals = [accuracy_at_abstention(c, wrong, r) for r in rates]
        per_rule_values[name] = vals
        stats = [cluster_bootstrap([v], clusters, resamples=resamples, seed=seed) for v in vals]
        abstention["answered_accuracy"][name] = [s[0] for s in stats]
        abstention["answered_accuracy_ci95"][name] = [[s[1], s[2]] for s in stats]
    for richer in ("combined", "query"):
        for simpler in ("similarity", "query"):
            if richer == simpler or richer not in per_rule_values or simpler not in per_rule_values:
                continue
            for i, r in enumerate(rates):
                d, lo, hi = cluster_bootstrap([per_rule_values[simpler][i], per_rule_values[richer][i]], clusters,
                                                lambda a, b: b - a, resamples=resamples, seed=seed)
                abstention["comparisons"].append({"rule": richer, "against": simpler, "rate": r,
                                                  "accuracy_gain": d, "ci95": [lo, hi]})
    return {
        "metric": "every query answered as the app answers: right (its person named), wrong (another person "
                  "named) or unknown; the paper's kept-queries figures are under 'rejection'",
        "gallery": gallery_overview(bundle, vectors),
        "rules": rules,
        "strangers": strangers,
        "curves": curves,
        "abstention": abstention,
        "views": per_view,
    }


def answers_table(report: Mapping) -> list[str]:
    """Markdown lines of the rules' right / wrong / unknown counts (for the CLI and docs)."""
    lines = ["| rule | right | wrong | unknown | coverage | accuracy of answered |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in report["rules"].items():
        lines.append(f"| {name} | {r['right']} | {r['wrong']} | {r['unknown']} | {100 * r['coverage']:.1f}% | "
                     f"{format_with_interval(r['answered_accuracy'], r['answered_accuracy_ci95'], unit='%')} |")
    return lines
