"""What ``cmce evaluate`` prints: an evaluation's tables as text (``cmce.metrics.results.Evaluation``)."""

from __future__ import annotations

from collections.abc import Mapping

from cmce.experiments.evaluate_answers import answers_table
from cmce.faces.geometry import MIN_FACE_PIXELS
from cmce.method.card import render_rejection_tables, render_table, render_upgrade_table
from cmce.metrics.intervals import format_interval
from cmce.metrics.results import Evaluation, UpgradeResult

__all__ = ["degrade_line", "render_evaluation", "render_upgrade"]


def _lines(*lines: str) -> str:
    """``lines`` as ``print`` writes them, one after another."""
    return "".join(f"{line}\n" for line in lines)


def degrade_line(report: Mapping) -> str:
    """One line on a degraded gallery: how many photos, by which kind, how many kept clean (and why)."""
    n = sum(report.get("kept_clean_too_small", {}).values())
    small = f"; {n} of them a face or image under {MIN_FACE_PIXELS} px" if n else ""
    return _lines(f"gallery degraded ({report['spec']}, seed {report['seed']}): "
                  f"{report['degraded']} of {report['gallery_photos']} photos "
                  f"({', '.join(f'{k} {v}' for k, v in report['by_kind'].items())}); "
                  f"{sum(report['kept_clean_no_face'].values())} kept clean (no face found in the degraded copy"
                  f"{small})")


def render_evaluation(evaluation: Evaluation, detection: str) -> str:
    """The evaluation's tables: rows, answers, the paper's rejection metric, open set, score comparison, upgrade."""
    from cmce.experiments.score_comparison import ScoreComparison, render_score_comparison

    ev, c = evaluation, evaluation.counts
    text = _lines(
        f"{c['files']} files, {c['faces_found']} faces ({c['no_face_or_unreadable']} without a face or unreadable; "
        f"{detection} detection); gallery {c['gallery']} ({c['distractors']} distractors), queries {c['queries']}",
        render_table(ev.rows),
        "\nanswers as the app gives them (every query; CMCE ensemble column):\n",
        "\n".join(answers_table(ev.answers)),
        "\nthe paper's metric (Recall@1 of the kept queries):\n",
        render_rejection_tables(ev),
        "| rejected (shipped score) | open-set accuracy |\n|---:|---:|",
        *(f"| {100 * r.rate:.0f}% | {100 * r.open_set_accuracy:.2f} |" for r in ev.rejection))
    if ev.score_comparison is not None:
        text += _lines("\nquality scores compared (error cut of the shipped score minus each other's, paired; "
                       "95% intervals over query identities):\n",
                       render_score_comparison(ScoreComparison.from_dict(ev.score_comparison)))
    for up in ev.upgrade_results:
        text += render_upgrade(up)
    return text


def render_upgrade(up: UpgradeResult) -> str:
    """The upgrade experiment from one old side: its table, the paired gains, the ensemble-size curve."""
    text = _lines(f"\nupgrade from query {up.old.query} ({' + '.join(up.old.gallery)}) to query {up.new.query}: "
                  f"{up.counts['gallery']} gallery entries, {up.counts['queries']} queries")
    text += render_upgrade_table(up)
    text += _lines(*(f"{c.from_stage} -> {c.to_stage}: R@1 {100 * c.recall_at_1_gain:+.2f} points, 95% CI "
                     f"{format_interval(*c.ci95, signed=True)}" for c in up.comparisons))
    text += _lines("no-backfill ensemble size: " + "; ".join(
        f"{c['members']} member{'s' if c['members'] > 1 else ''}: R@1 {100 * c['recall_at_1']:.2f}, "
        f"TAR@1e-3 {100 * c['tar_at_far_1e-3']:.2f}" for c in up.ensemble_size or ()))
    p = up.precision
    if p:
        f32 = p["float32"]
        text += _lines(f"{p['precision']} re-projection (no backfill): the top-1 answer differs from float32's for "
                       f"{p['top1_changed']} of {p['queries']} queries (R@1 {100 * f32['recall_at_1']:.2f} in float32); "
                       f"cosine distance between the fused vectors: median {p['cosine_distance_median']:.1e}, "
                       f"max {p['cosine_distance_max']:.1e}")
    return text
