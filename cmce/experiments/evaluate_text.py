"""What ``cmce evaluate`` prints: an evaluation's tables as text, from its JSON-ready result."""

from __future__ import annotations

from collections.abc import Mapping

from cmce.experiments.evaluate_answers import answers_table
from cmce.faces.geometry import MIN_FACE_PIXELS
from cmce.method.card import render_rejection_tables, render_table, render_upgrade_table

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


def render_evaluation(result: Mapping, detection: str) -> str:
    """The evaluation's tables: rows, answers, the paper's rejection metric, open set, score comparison, upgrade."""
    from cmce.experiments.score_comparison import ScoreComparison, render_score_comparison

    c = result["counts"]
    text = _lines(
        f"{c['files']} files, {c['faces_found']} faces ({c['no_face_or_unreadable']} without a face or unreadable; "
        f"{detection} detection); gallery {c['gallery']} ({c['distractors']} distractors), queries {c['queries']}",
        render_table(result["rows"]),
        "\nanswers as the app gives them (every query; CMCE ensemble column):\n",
        "\n".join(answers_table(result["answers"])),
        "\nthe paper's metric (Recall@1 of the kept queries):\n",
        render_rejection_tables(result),
        "| rejected (shipped score) | open-set accuracy |\n|---:|---:|",
        *(f"| {100 * r['rate']:.0f}% | {100 * r['open_set_accuracy']:.2f} |" for r in result["rejection"]))
    if "score_comparison" in result:
        text += _lines("\nquality scores compared (error cut of the shipped score minus each other's, paired; "
                       "95% intervals over query identities):\n",
                       render_score_comparison(ScoreComparison.from_dict(result["score_comparison"])))
    for up in ([result["upgrade"]] if "upgrade" in result else result.get("upgrades", [])):
        text += render_upgrade(up)
    return text


def render_upgrade(up: Mapping) -> str:
    """The upgrade experiment from one old side: its table, the paired gains, the ensemble-size curve."""
    text = _lines(f"\nupgrade from query {up['from']['query']} ({' + '.join(up['from']['gallery'])}) "
                  f"to query {up['to']['query']}: {up['counts']['gallery']} gallery entries, "
                  f"{up['counts']['queries']} queries")
    text += render_upgrade_table(up)
    text += _lines(*(f"{c['from']} -> {c['to']}: R@1 {100 * c['recall_at_1_gain']:+.2f} points "
                     f"(95% CI {100 * c['ci95'][0]:+.2f} to {100 * c['ci95'][1]:+.2f})" for c in up["comparisons"]))
    text += _lines("no-backfill ensemble size: " + "; ".join(
        f"{c['members']} member{'s' if c['members'] > 1 else ''}: R@1 {100 * c['recall_at_1']:.2f}, "
        f"TAR@1e-3 {100 * c['tar_at_far_1e-3']:.2f}" for c in up["ensemble_size"]))
    p = up.get("precision")
    if p:
        f32 = p["float32"]
        text += _lines(f"{p['precision']} re-projection (no backfill): the top-1 answer differs from float32's for "
                       f"{p['top1_changed']} of {p['queries']} queries (R@1 {100 * f32['recall_at_1']:.2f} in float32); "
                       f"cosine distance between the fused vectors: median {p['cosine_distance_median']:.1e}, "
                       f"max {p['cosine_distance_max']:.1e}")
    return text
