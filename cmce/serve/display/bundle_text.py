"""What the demo says about a bundle: its card, choices, answer rule and score help texts.

Every function is a pure function of its arguments; the app only passes them on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmce.gallery.persistence import LoadReport
from cmce.serve.display.text import percent

__all__ = ["unknown_rule_text", "QUALITY_UNITS", "RULE_DESCRIPTIONS", "answer_rule_note", "bundle_choice", "bundle_markdown", "readable_number", "reprojection_markdown", "score_choice_label", "threshold_help"]


RULE_DESCRIPTIONS = {
    "similarity": "the best match's similarity alone",
    "query": "the best match's similarity, its margin over the next person and the query face's detector doubt",
    "combined": "the best match's similarity, its margin over the next person, the query face's detector doubt "
                "and the gallery face's quality",
}
"""What each answer rule (``answer_rules.ANSWER_RULES``) looks at, for the user."""


def bundle_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown card of a bundle from ``cmce.method.bundle_model.bundle_summary``: models and licences."""
    q = summary["query_model"]
    rows = [("query model", q)] + [("gallery model", g) for g in summary["gallery_models"]]
    source = summary.get("source") or "?"
    if not source.startswith("hf://"):
        source = Path(source).name  # a local folder: its name, not the server's path
    lines = [
        f"**Bundle** `{source}` · query model **{q['name']}** · "
        f"gallery models {', '.join('**' + g['name'] + '**' for g in summary['gallery_models'])}"
        + (" (+ the query model as an ensemble member)" if summary.get("query_member") else ""),
        "",
        "| role | model | licence | trained on |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {role} | {r['name']} | {r['license']} | {r['training_data']} |" for role, r in rows]
    rule = summary.get("answer_rule")
    lines += [
        "",
        "Doubtful: faces scoring above the threshold that marks "
        f"{percent(summary['rejection_rate'])} of the calibration gallery"
        + (f", scored by {summary['quality_description']}" if summary.get("quality_description") else "")
        + "; marked and still searched (rejected only when you choose) · "
        + unknown_rule_text(summary) + " · "
        + (f"answer rule: {rule} (says Unknown where a name is too likely wrong)." if rule
           else "no answer rule (calibrated before answer rules)."),
    ]
    return "\n".join(lines)


def bundle_choice(name: str, query_model: str, gallery_models: Sequence[str], purpose: str | None = None) -> str:
    """One line of the bundle picker: the bundle's name, what it is for, its models.

    ``"facenet-query — FaceNet queries (query facenet-casia; gallery sface + dlib-resnet34)"``;
    without a purpose only the models follow the name.
    """
    models = f"query {query_model}; gallery {' + '.join(gallery_models)}"
    purpose = (purpose or "").strip().rstrip(".")
    return f"{name} — {purpose} ({models})" if purpose else f"{name} — {models}"


def reprojection_markdown(report: LoadReport, bundle_name: str, query_model: str) -> str:
    """What switching bundles did to a gallery, from the load report of ``Gallery.reproject``.

    ``"**Bundle facenet-query.** Gallery of 8 faces re-projected into facenet-casia's space
    in 0.01 s; 0 photos re-read."``, followed by the faces that lack a member (◐), the
    faces no member of the bundle can match, and the stored backbones it does not use.
    """
    faces = "face" if report.entries == 1 else "faces"
    text = (f"**Bundle {bundle_name}.** Gallery of {report.entries} {faces} re-projected into "
            f"{query_model}'s space in {report.seconds:.2f} s; {report.photos_read} photos re-read")
    own = f"{query_model}'s own embedding"
    lacks = [f"{n} {'face lacks' if n == 1 else 'faces lack'} {own if m == 'query' else m} (◐)"
             for m, n in report.missing.items() if n]
    if lacks:
        text += "; " + "; ".join(lacks)
    if report.unusable:
        text += (f"; {report.unusable} {'face holds' if report.unusable == 1 else 'faces hold'} none of this "
                 "bundle's models: kept, never matched")
    if report.unused_backbones:
        names = ", ".join(dict.fromkeys(k.split("@")[0] for k in report.unused_backbones))
        text += f"; {names} embeddings kept for other bundles"
    return text + "."


def answer_rule_note(calibration) -> str:
    """Which rule decides that a column says "Unknown" although a name reaches its threshold.

    ``calibration``: the bundle's ``Calibration``. The rule's coverage is per query (it
    answers where the named person is more likely right than wrong); the share of the
    calibration queries it answered is given for scale.
    """
    rule = calibration.answer_rule
    policy = calibration.answer_policy("ensemble") if rule else None
    if policy is None:
        return ("Answers: this bundle has no answer rule (calibrated before answer rules), so a column names "
                "whoever reaches its similarity threshold, unless that best match is a rejected photo.")
    what = RULE_DESCRIPTIONS.get(rule, rule)
    if not np.isfinite(policy.threshold):
        return f"Answers: the bundle's **{rule}** rule ({what}) scores each answer; it never says Unknown by itself."
    return (f"Answers: the bundle's **{rule}** rule ({what}) says Unknown where the named person is too likely "
            f"wrong (predicted chance of a right answer below {policy.threshold:.2f}); decided per query, with the "
            f"similarity threshold it answered {1 - policy.rate:.0%} of the calibration queries.")


QUALITY_UNITS = {
    "disagreement": "mean cosine distance between the members' embeddings of the face (0 = they agree; 2 = opposite)",
    "detection": "detector doubt, -log10 of the face detector's probability p (0 = certain, p = 1; "
                 "0.000434 = p 0.999; 3 = p 0.001; at most 6)",
    "combined": "mean percentile rank of disagreement and detector doubt in the calibration gallery (0 to 1)",
    "learned": "predicted chance that a search for this person misses at rank 1 (0 to 1)",
}


def readable_number(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits`` significant digits (``0.000271188...`` -> ``0.000271``)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _meaning(kind: str, value: float) -> str:
    """What a value of the score means, in words (empty where the unit says it all)."""
    if kind == "detection":
        return f" = a detector probability of {10 ** -value:.6g}"
    if kind == "learned":
        return f" = searches predicted to miss {100 * value:.3g}% of the time"
    return ""


def threshold_help(kind: str, threshold: float | None, typed: float | None = None) -> str:
    """One line under the threshold box: the score's unit, what the value in the box means, and the
    calibrated threshold when the box holds another value.

    ``threshold`` is the calibrated threshold (None: not calibrated), ``typed`` the value in the
    box (None: the box holds the calibrated one).

    >>> threshold_help("detection", 0.000434, 3).split("This box: ")[1]
    '3 = a detector probability of 0.001, rejected above it; calibrated: 0.000434 (p 0.999).'
    """
    unit = QUALITY_UNITS.get(kind, kind)
    if typed is not None and (threshold is None or readable_number(typed) != readable_number(threshold)):
        calibrated = ("not calibrated for this score" if threshold is None else
                      f"calibrated: {readable_number(threshold):g}"
                      + (f" (p {10 ** -threshold:.3g})" if kind == "detection" else ""))
        return (f"Unit: {unit}. This box: {readable_number(typed):g}{_meaning(kind, typed)}, "
                f"rejected above it; {calibrated}.")
    if threshold is None:
        return f"Unit: {unit}. Not calibrated for this score: rejection falls back to the rate."
    return (f"Unit: {unit}. This box holds the calibrated threshold, {readable_number(threshold):g}"
            f"{_meaning(kind, threshold)}: 'calibrated' and 'threshold' both reject above it.")


def score_choice_label(bundle) -> str:
    """Label of the rejection-score picker: the bundle's choice and, where measured, what it did."""
    kind = bundle.calibration.quality.kind
    ev = (bundle.info or {}).get("evaluation_mixed") or (bundle.info or {}).get("evaluation") or {}
    cut = next((r.get("relative_error_cut") for r in ev.get("rejection", []) if abs(r.get("rate", 0) - 0.1) < 1e-9), None)
    where = "mixed-quality" if "evaluation_mixed" in (bundle.info or {}) else "held-out"
    figure = f": rejecting 10% cut the {where} error by {100 * cut:.0f}%" if cut is not None and cut == cut else ""
    return f"Rejection score (bundle's choice: {kind}{figure})"


def unknown_rule_text(summary: Mapping) -> str:
    """How the bundle decides "Unknown", in a few words for the overview."""
    far = f"{percent(summary['open_set_far'])} false-accept rate"
    norm = summary.get("cohort_norm")
    if not norm:
        return f"'unknown' thresholds set for a {far}"
    return (f"'unknown' when the best match does not stand out from the next {norm['cohort']} people of the "
            f"gallery (set to name {percent(norm['strangers_named'])} of strangers in calibration galleries"
            + ("; lowered on a gallery of poor photos so that most searches still get a name" if norm.get("guard")
               else "")
            + f"; smaller galleries: similarity thresholds at a {far})")
