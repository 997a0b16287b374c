"""What the web demo shows, rendered from library objects (no Gradio here).

Pictures (framed thumbnails, numbered face boxes), short texts (captions, reports,
the bundle card), the side-by-side results as HTML, the same results as a JSON-able
dict for API clients, and matplotlib figures (risk-coverage, uncertainty histogram).
Every function is a pure function of its arguments; the app only passes them on.

Two marks on gallery faces, never confused: **doubtful** (amber, dashed: the bundle's
quality score is above its calibrated threshold; the face is still searched) and
**rejected** (red: the face never matches, and a query whose best match it is answers
"Unknown" rather than naming the next person). Wrong matches are red too, but solid
and on a red background, and only in the results.
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from cmce.faces.geometry import Face
from cmce.gallery.ingest import IngestReport
from cmce.gallery.memory import Gallery
from cmce.gallery.persistence import LoadReport
from cmce.gallery.results import QueryResult, ViewResult
from cmce.io.uploads import UploadBatch
from cmce.method.answers import Answer, DoubtMarks, decide_answer
from cmce.method.ensemble import QUALITY_DESCRIPTIONS
from cmce.method.report import RiskCoverage

__all__ = [
    "ORDERS",
    "bundle_markdown",
    "bundle_choice",
    "reprojection_markdown",
    "index_report_markdown",
    "index_report_dict",
    "entry_tile",
    "entry_caption",
    "overview_tiles",
    "overview_summary",
    "face_choices",
    "annotate_faces",
    "view_title",
    "answer_rule_note",
    "result_html",
    "result_dict",
    "risk_coverage_figure",
    "risk_coverage_note",
    "uncertainty_figure",
]

ORDERS: tuple[str, ...] = ("upload order", "most uncertain first", "least uncertain first")
"""Sort orders of the gallery overview."""

REJECTED_RED = (217, 48, 37)
DOUBTFUL_AMBER = (227, 116, 0)
RULE_DESCRIPTIONS = {
    "similarity": "the best match's similarity alone",
    "query": "the best match's similarity, its margin over the next person and the query face's detector doubt",
    "combined": "the best match's similarity, its margin over the next person, the query face's detector doubt "
                "and the gallery face's quality",
}
"""What each answer rule (``answers.ANSWER_RULES``) looks at, for the user."""
_BOX_COLOURS = ((26, 115, 232), (249, 171, 0))  # other faces, chosen face
_MAX_LISTED = 12


def _short(text: str | None, limit: int = 16) -> str:
    text = text or "(no label)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(x: float) -> str:
    return f"{x * 100:.2g}%"


# --------------------------------------------------------------------------- texts


def bundle_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown card of a bundle from ``cmce.method.bundle.bundle_summary``: models and licences."""
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
        f"{_pct(summary['rejection_rate'])} of the calibration gallery"
        + (f", scored by {summary['quality_description']}" if summary.get("quality_description") else "")
        + "; marked and still searched (rejected only when you choose) · "
        + _unknown_rule_text(summary) + " · "
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


def _listing(title: str, rows: Sequence[str]) -> list[str]:
    if not rows:
        return []
    out = [f"**{title} ({len(rows)})**"]
    out += [f"- {r}" for r in rows[:_MAX_LISTED]]
    if len(rows) > _MAX_LISTED:
        out.append(f"- … and {len(rows) - _MAX_LISTED} more")
    return ["\n".join(out)]


def index_report_markdown(report: IngestReport, upload: UploadBatch | None, gallery: Gallery) -> str:
    """Short markdown report of one indexing request: counts, then what was left out and why."""
    labels = {gallery.entries[i].label for i in gallery.positions} - {None}
    blocks = [
        f"**{report.summary()}.** The gallery now holds {len(gallery)} faces"
        + (f" of {len(labels)} labelled people." if labels else " (no identity labels).")
    ]
    skipped = list(upload.skipped if upload else ()) + list(report.skipped)
    blocks += _listing("Skipped", [f"`{n}`: {why}" for n, why in skipped])
    blocks += _listing("Duplicates ignored", [f"`{n}`" for n in report.duplicates])
    blocks += _listing("Limits reached", (list(upload.notes) if upload else []) + list(report.limits_reached))
    return "\n\n".join(blocks)


def index_report_dict(report: IngestReport, upload: UploadBatch | None, gallery: Gallery) -> dict[str, Any]:
    """The same report as JSON-able data (what API clients get).

    ``rejected`` lists the faces a search rejects by default: none (doubtful faces are
    marked and still searched). ``doubtful`` lists those marked, most doubtful first, with
    their quality score and its calibrated threshold; ``doubt`` counts them
    (``over_threshold``, ``expected`` from the calibration, ``unfamiliar``, ``note``, and
    ``unknown_threshold_note`` where the photos lower the "Unknown" threshold).
    """
    marks = gallery.doubt() if len(gallery) else None
    labels: dict[str, int] = {}
    for i in gallery.positions:
        lab = gallery.entries[i].label
        if lab is not None:
            labels[lab] = labels.get(lab, 0) + 1
    return {
        "added": report.added,
        "files": report.files,
        "entries": len(gallery),
        "labels": labels,
        "skipped": [list(x) for x in (upload.skipped if upload else ())] + [list(x) for x in report.skipped],
        "duplicates": list(report.duplicates),
        "limits_reached": (list(upload.notes) if upload else []) + list(report.limits_reached),
        "rejected": [],
        "doubtful": rejected_entries(gallery, marks.doubtful) if marks is not None else [],
        "doubt": None if marks is None else {"over_threshold": marks.over_threshold,
                                              "expected": round(marks.expected, 2),
                                              "unfamiliar": marks.unfamiliar, "note": marks.note,
                                              "unknown_threshold_note": gallery.unknown_note()},
    }


def rejected_entries(gallery: Gallery, rejected: np.ndarray, score: str | None = None) -> list[dict[str, Any]]:
    """The live entries of a mask (rejected, or doubtful), most doubtful first: source, label,
    quality score and uncertainty.

    ``score`` names the quality score (``detection``, ``disagreement``, ``combined``, ``learned``;
    default the bundle's); ``threshold`` is its calibrated one (entries scoring above it are doubtful).
    """
    vec = gallery.vectors
    quality = score or gallery.bundle.calibration.quality.kind
    values = gallery.quality_scores(quality)
    t = gallery.bundle.calibration.threshold_for(quality)
    rows = [{"source": gallery.entries[i].source, "label": gallery.entries[i].label,
             "quality": float(values[i]), "score": quality,
             "threshold": t if t is not None and np.isfinite(t) else None,
             "uncertainty": None if np.isnan(vec.uncertainty[i]) else round(float(vec.uncertainty[i]), 4)}
            for i in gallery.positions if rejected[i]]
    return sorted(rows, key=lambda r: -r["quality"])


def _listed_line(title: str, gallery: Gallery, mask: np.ndarray, limit: int = 8, score: str | None = None) -> str:
    rows = rejected_entries(gallery, mask, score)
    if not rows:
        return ""
    items = [f"`{r['source']}` ({r['score']} {r['quality']:.3g}"
             + ("" if r["uncertainty"] is None else f", u={r['uncertainty']:.2f}") + ")" for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{title}, most doubtful first: " + ", ".join(items) + more + "."


# --------------------------------------------------------------------------- gallery overview


def _dashed_frame(draw: ImageDraw.ImageDraw, size: int, width: int, colour: tuple[int, int, int]) -> None:
    """A dashed square frame ``width`` pixels thick along the edges of a ``size`` tile."""
    dash = max(size // 10, 6)
    for start in range(0, size, 2 * dash):
        end = min(start + dash, size) - 1
        draw.rectangle((start, 0, end, width - 1), fill=colour)
        draw.rectangle((start, size - width, end, size - 1), fill=colour)
        draw.rectangle((0, start, width - 1, end), fill=colour)
        draw.rectangle((size - width, start, size - 1, end), fill=colour)


def entry_tile(thumbnail: bytes, rejected: bool, size: int = 128, doubtful: bool = False) -> Image.Image:
    """Square tile of a gallery thumbnail: rejected entries greyed inside a red frame,
    doubtful ones (searched, marked) in colour inside a dashed amber frame."""
    img = Image.open(io.BytesIO(thumbnail)).convert("RGB")
    img = ImageOps.pad(img, (size, size), color=(240, 240, 240))
    w = max(size // 20, 4)
    if rejected:
        img = ImageOps.grayscale(img).convert("RGB")
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, size - 1, size - 1), outline=REJECTED_RED, width=w)
    elif doubtful:
        _dashed_frame(ImageDraw.Draw(img), size, w, DOUBTFUL_AMBER)
    return img


def entry_caption(label: str | None, uncertainty: float, rejected: bool, members: int | None = None,
                  of: int | None = None, face: Face | None = None, doubtful: bool = False) -> str:
    """``"Aaron_Peirsol · u=0.41"``, ``"rejected · u=0.41"`` or, for a doubtful entry (searched,
    marked), ``"◌ doubtful · Aaron_Pei… · u=0.41"`` (the label kept short).

    An entry fused from fewer members than the ensemble has gets a badge,
    ``"… · ◐ 2/3 models"``; ``u=–`` means there was no pair of members to compare.
    A face found by a second chance (not MTCNN's first pass) says how:
    ``"… · found: yunet, padded pass, p=0.930"``.
    """
    u = "–" if np.isnan(uncertainty) else f"{uncertainty:.2f}"
    badge = f" · ◐ {members}/{of} models" if members is not None and of is not None and members < of else ""
    if face is not None and face.detection_pass != "first":
        badge += f" · found: {face.found_by}"
    name = "rejected" if rejected else f"◌ doubtful · {_short(label, 9)}" if doubtful else _short(label, 11)
    return f"{name} · u={u}{badge}"


def _ordered(gallery: Gallery, order: str) -> np.ndarray:
    live = gallery.positions
    if order == ORDERS[0] or not len(live):
        return live
    u = gallery.vectors.uncertainty[live]
    idx = np.argsort(-u if order == ORDERS[1] else u, kind="stable")
    return live[idx]


def overview_tiles(
    gallery: Gallery, rejected: np.ndarray, order: str = ORDERS[0], limit: int = 600,
    doubtful: np.ndarray | None = None,
) -> list[tuple[Image.Image, str]]:
    """(tile, caption) for the live entries in ``order`` (one of ``ORDERS``), at most ``limit``.

    ``doubtful``: (N,) bool over all positions (default ``gallery.doubt().doubtful``).
    """
    if not len(gallery):
        return []
    if doubtful is None:
        doubtful = gallery.doubt().doubtful
    vec = gallery.vectors
    unc, total = vec.uncertainty, len(vec.members)
    out = []
    for pos in _ordered(gallery, order)[:limit]:
        e = gallery.entries[pos]
        cap = entry_caption(e.label, float(unc[pos]), bool(rejected[pos]), len(vec.entry_members(pos)), total,
                            e.face, bool(doubtful[pos]))
        out.append((entry_tile(e.thumbnail, bool(rejected[pos]), doubtful=bool(doubtful[pos])), cap))
    return out


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


def overview_summary(gallery: Gallery | None, rejected: np.ndarray, limit: int = 600,
                     score: str | None = None, doubt: DoubtMarks | None = None) -> str:
    """What the overview shows: counts of rejected, doubtful and over-threshold faces, the doubt
    note of an unfamiliar gallery, the scores behind them (``score``: the one rejecting, picked by
    the user; default the bundle's), the faces listed, and the answer rule.

    ``doubt``: the gallery's ``DoubtMarks`` (default ``gallery.doubt()``: the bundle's score).
    """
    n = len(gallery) if gallery is not None else 0
    if not n:
        return "The gallery is empty: upload images or pick an example gallery."
    live = gallery.positions
    cal = gallery.bundle.calibration
    marks = gallery.doubt() if doubt is None else doubt
    rej = np.asarray(rejected, bool)
    r = int(rej[live].sum())
    doubtful_only = marks.doubtful & ~rej
    d = int(doubtful_only[live].sum())
    quality = cal.quality_model(score)
    counts = (f"**{n} faces**: **{r} rejected** (red frame: never a match; a query whose best match is rejected "
              f"answers Unknown, never the next person), **{d} doubtful** (◌ amber dashed frame: searched, and "
              f"marked in the results). ")
    # an unfamiliar gallery: the note gives the count over the threshold and what it means
    counts += marks.note if marks.unfamiliar else (f"{marks.over_threshold} over the bundle's calibrated threshold "
                                                   f"(about {marks.expected:.0f} expected).")
    guard = gallery.unknown_note()
    if guard:
        counts += " " + guard
    threshold = cal.threshold_for()
    scores = (f"Doubtful by the bundle's quality score, {cal.quality.description}"
              + (f", above {readable_number(threshold)}" if threshold is not None else "") + ".")
    if r:
        scores += " Rejected by the same score." if quality.kind == cal.quality.kind else \
            f" Rejected by the chosen score, {quality.description}."
    scores += (" u = uncertainty, the disagreement of the ensemble's members"
               + (", so a face with a high u need not be doubtful." if cal.quality.kind != "disagreement" else "."))
    blocks = [counts, scores]
    listed = " ".join(x for x in (_listed_line("Rejected", gallery, rej, score=quality.kind),
                                  _listed_line("Doubtful", gallery, doubtful_only, score=cal.quality.kind)) if x)
    if listed:
        blocks.append(listed)
    blocks.append(answer_rule_note(cal))
    vec = gallery.vectors
    lacking = int((~vec.member_present[live].all(axis=1)).sum())
    tail = ""
    if lacking:
        tail += (f"**{lacking} faces lack a model** (◐: indexed before this bundle; fused from the "
                 f"models they have, and absent from the columns of the models they lack).")
    if n > limit:
        tail += f" Showing {limit} of {n}."
    if tail:
        blocks.append(tail.strip())
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- query


def face_choices(count: int) -> list[tuple[str, int]]:
    """Dropdown choices ``("face 1 (largest)", 0), ("face 2", 1), ...`` for ``count`` faces (largest first)."""
    return [(f"face {i + 1}" + (" (largest)" if i == 0 else ""), i) for i in range(max(count, 1))]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate_faces(image: np.ndarray, faces: Sequence[Face], chosen: int | None = 0) -> Image.Image:
    """The photo with a numbered box per face (``faces`` largest first); ``chosen`` in amber."""
    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    scale = max(img.size) / 640
    draw = ImageDraw.Draw(img)
    w = max(int(3 * scale), 2)
    font = _font(max(int(22 * scale), 12))
    for i, f in enumerate(faces):
        colour = _BOX_COLOURS[int(i == chosen)]
        x1, y1, x2, y2 = f.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=w * (2 if i == chosen else 1))
        tag = str(i + 1)
        tb = draw.textbbox((0, 0), tag, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y1 - th - 3 * w if y1 - th - 3 * w > 0 else y1
        draw.rectangle((x1, ty, x1 + tw + 2 * w, ty + th + 2 * w), fill=colour)
        draw.text((x1 + w, ty + w - tb[1]), tag, fill=(255, 255, 255), font=font)
    return img


def view_title(view: str, query_model: str) -> str:
    """Column heading of a view."""
    if view == "ensemble":
        return "CMCE ensemble"
    if view == "query":
        return f"{query_model} alone (query model)"
    return f"{view} → {query_model}"


def _correct(label: str | None, query_label: str | None) -> bool | None:
    if query_label is None or label is None:
        return None
    return label == query_label


def _answer(view: ViewResult) -> str | None:
    if view.unknown or not view.matches:
        return None
    m = view.matches[0]
    return m.label or m.source


def _view_answer(view: ViewResult) -> Answer:
    """The view's ``Answer``; for a result made without one, decided from its matches (the
    rejected entries are not among them, so nothing blocks)."""
    if view.answer is not None:
        return view.answer
    ms = view.matches
    return decide_answer([m.score for m in ms], [m.label for m in ms], [m.label or f"\0{m.position}" for m in ms],
                         threshold=view.threshold)


def _view_rule(calibration, view: str) -> str | None:
    """The answer rule that answers in ``view`` (None: no rule, or none calibrated for it)."""
    if calibration is None or not calibration.answer_rule:
        return None
    return calibration.answer_rule if calibration.answer_policy(view) is not None else None


def result_dict(result: QueryResult, query_model: str, query_label: str | None = None,
                calibration=None) -> dict[str, Any]:
    """The results of a query as plain JSON-able data (what API clients get).

    Per view: ``answer`` (the person named, or None), ``answer_kind`` (``match``, ``unknown``,
    ``unsure`` or ``doubtful``: see ``answers.Answer``), ``reason`` (one sentence),
    ``confidence`` (the answer rule's predicted chance of a right answer, or None) and
    ``rule`` (the answer rule that answered in that view, from ``calibration``, the bundle's
    ``Calibration``; None: no rule), ``normalised`` and ``norm_threshold`` (the best
    match's cohort-normalised score and its threshold where that decided "Unknown", else
    None: the raw ``threshold`` did). Per match: ``doubtful`` (searched, and marked).
    """
    views = {}
    for name, v in result.views.items():
        answer = _view_answer(v)
        views[name] = {
            "title": view_title(name, query_model),
            "threshold": v.threshold,
            "unknown": v.unknown,
            "answer": _answer(v),
            "answer_kind": answer.kind,
            "reason": answer.reason,
            "confidence": None if answer.confidence is None else round(answer.confidence, 4),
            "normalised": None if answer.normalised is None else round(answer.normalised, 3),
            "norm_threshold": None if answer.norm_threshold is None else round(answer.norm_threshold, 3),
            "rule": _view_rule(calibration, name),
            "correct": None if v.unknown or not v.matches else _correct(v.matches[0].label, query_label),
            "matches": [
                {
                    "position": m.position,
                    "label": m.label,
                    "source": m.source,
                    "similarity": round(m.score, 4),
                    "uncertainty": None if np.isnan(m.uncertainty) else round(m.uncertainty, 4),
                    "quality": None if np.isnan(m.quality) else round(m.quality, 4),
                    "member_similarities": {k: round(s, 4) for k, s in m.member_scores.items()},
                    "members": list(m.members),
                    "correct": _correct(m.label, query_label),
                    "doubtful": bool(m.doubtful),
                }
                for m in v.matches
            ],
        }
    return {
        "query_label": query_label,
        "faces": [{"box": [round(x, 1) for x in f.box], "probability": round(f.probability, 4)} for f in result.faces],
        "chosen_face": result.chosen,
        "false_accept_rate": result.far,
        "views": views,
    }


def _u(uncertainty: float) -> str:
    return "–" if np.isnan(uncertainty) else f"{uncertainty:.2f}"


def _found_by_title(entry) -> str:
    """`` title='found by mtcnn, first pass, p=0.999'`` for an entry's thumbnail ('' without a face record)."""
    face = getattr(entry, "face", None)
    return f" title='found by {html.escape(face.found_by)}'" if face is not None else ""


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


#: Where the query's person is in the gallery, and what "Unknown" then means (mark, verdict class).
_UNKNOWN_MARKS = {
    "absent": (" ✓ (not in the gallery)", " cmce-correct"),
    "rejected": (" · every photo of them here is rejected", " cmce-doubtful"),
    "doubtful": (" · every photo of them here is doubtful or rejected", " cmce-doubtful"),
    "present": (" ✗ (person is in the gallery)", " cmce-wrong"),
}


def _person_status(gallery: Gallery, query_label: str | None, rejected: np.ndarray | None,
                   doubtful: np.ndarray) -> str | None:
    """``absent``, ``rejected`` (every photo), ``doubtful`` (every photo doubtful or rejected) or
    ``present`` for the query's person among the live entries (None: no query label)."""
    if query_label is None:
        return None
    mine = [i for i in gallery.positions if gallery.entries[i].label == query_label]
    if not mine:
        return "absent"
    rej = np.zeros(len(gallery.entries), bool) if rejected is None else np.asarray(rejected, bool)
    if all(rej[i] for i in mine):
        return "rejected"
    if all(rej[i] or doubtful[i] for i in mine):
        return "doubtful"
    return "present"


def _unknown_rule_text(summary: Mapping) -> str:
    """How the bundle decides "Unknown", in a few words for the overview."""
    far = f"{_pct(summary['open_set_far'])} false-accept rate"
    norm = summary.get("cohort_norm")
    if not norm:
        return f"'unknown' thresholds set for a {far}"
    return (f"'unknown' when the best match does not stand out from the next {norm['cohort']} people of the "
            f"gallery (set to name {_pct(norm['strangers_named'])} of strangers in calibration galleries"
            + ("; lowered on a gallery of poor photos so that most searches still get a name" if norm.get("guard")
               else "")
            + f"; smaller galleries: similarity thresholds at a {far})")


def _reached(v: ViewResult, answer: Answer, score: float, far: float) -> str:
    """Why a name was reachable: the normalised score over its threshold, or the similarity over the raw one."""
    if answer.normalised is not None and answer.norm_threshold is not None:
        return (f"similarity {score:.2f}, {answer.normalised:.1f} spreads above the next people "
                f"≥ {answer.norm_threshold:.1f}")
    return f"similarity {score:.2f} ≥ {v.threshold:.2f} ({_pct(far)} false-accept rate)"


def _verdict(v: ViewResult, answer: Answer, far: float, query_label: str | None,
             status: str | None) -> tuple[str, str]:
    if answer.unknown:
        mark, cls = _UNKNOWN_MARKS.get(status, ("", " cmce-doubtful" if answer.kind == "doubtful" else ""))
        if answer.kind == "doubtful" and status == "present":  # a deliberate "Unknown" on a doubtful photo, no miss
            mark, cls = " (person is in the gallery)", " cmce-doubtful"
        detail = answer.reason.removeprefix("Unknown: ")
        if answer.kind == "unknown" and v.matches and answer.normalised is None:
            detail += f"; the threshold is set for a {_pct(far)} false-accept rate"
        elif answer.kind != "unknown" and np.isfinite(answer.score):  # it reached the threshold, yet no name
            detail += " · " + _reached(v, answer, answer.score, far)
        return f"<b>Unknown</b>{html.escape(mark)}<br><span>{html.escape(detail)}</span>", cls
    m = v.matches[0]
    ok = _correct(m.label, query_label)
    mark = "" if ok is None else (" ✓" if ok else " ✗")
    cls = "" if ok is None else (" cmce-correct" if ok else " cmce-wrong")
    extra = "" if answer.confidence is None else f" · chance of a right answer {answer.confidence:.2f}"
    if m.doubtful:
        extra += " · <span class='cmce-doubt-tag'>◌ a doubtful photo</span>"
    return (f"<b>{html.escape(_short(m.label or m.source, 28))}</b>{mark}<br>"
            f"<span>{html.escape(_reached(v, answer, m.score, far))}{extra}</span>", cls)


def result_html(
    result: QueryResult, gallery: Gallery, query_label: str | None = None, rejected: np.ndarray | None = None,
    doubtful: np.ndarray | None = None,
) -> str:
    """Side-by-side HTML columns, one per view: verdict, then the ranked matches.

    The verdict names the person, with the answer rule's chance of a right answer when
    the bundle has a rule, or says "Unknown" and why (``Answer.reason``). Each match shows
    the gallery thumbnail, label, similarity and the entry's uncertainty; ensemble matches
    also show each member's similarity. With a known ``query_label`` matches are marked
    green (same person) or red (someone else), and an "Unknown" says whether the person is
    in the gallery at all, or only as rejected or doubtful photos. Doubtful matches
    (``doubtful``: (N,) bool, default ``gallery.doubt().doubtful``) get a dashed amber frame
    and "◌ doubtful"; ``rejected`` entries never appear.
    """
    qm = gallery.bundle.query_model
    if doubtful is None:
        doubtful = gallery.doubt().doubtful
    status = _person_status(gallery, query_label, rejected, doubtful)
    cols = []
    for name, v in result.views.items():
        answer = _view_answer(v)
        verdict, vcls = _verdict(v, answer, result.far, query_label, status)
        items = []
        for rank, m in enumerate(v.matches, 1):
            ok = _correct(m.label, query_label)
            cls = "" if ok is None else (" cmce-correct" if ok else " cmce-wrong")
            cls += " cmce-below" if answer.normalised is None and m.score < v.threshold else ""
            cls += " cmce-doubtful" if m.doubtful else ""
            members = ""
            if m.member_scores:
                lacks = [qm if k == "query" else k for k in m.lacks]
                members = "<div class='cmce-members'>" + " · ".join(
                    f"{html.escape(qm if k == 'query' else k)} {s:.2f}" for k, s in m.member_scores.items()) + (
                    f" · ◐ lacks {html.escape(', '.join(lacks))}" if lacks else "") + "</div>"
            doubt = " · <span class='cmce-doubt-tag'>◌ doubtful</span>" if m.doubtful else ""
            items.append(
                f"<li class='cmce-match{cls}'><img src='{_data_uri(gallery.entries[m.position].thumbnail)}' alt=''"
                f"{_found_by_title(gallery.entries[m.position])}>"
                f"<div class='cmce-meta'><div class='cmce-label' title='{html.escape(m.source)}'>{rank}. "
                f"{html.escape(_short(m.label or m.source, 22))}</div>"
                f"<div>sim <b>{m.score:.2f}</b> · u {_u(m.uncertainty)}{doubt}</div>{members}</div></li>"
            )
        if not items:
            can_match = gallery.vectors.available.get(name)
            if can_match is not None and not can_match[gallery.positions].any():  # every face lacks this model
                model = html.escape(qm if name == "query" else name)
                items.append(f"<li class='cmce-empty'>◐ no gallery face has {model}'s embedding "
                             "(indexed before this bundle)</li>")
            else:
                items.append("<li class='cmce-empty'>no gallery entry left after rejection</li>")
        cols.append(
            f"<section class='cmce-view {'cmce-unknown' if v.unknown else 'cmce-known'}' "
            f"data-view='{html.escape(name)}' data-answer='{html.escape(answer.kind)}'>"
            f"<h4>{html.escape(view_title(name, qm))}</h4><div class='cmce-verdict{vcls}'>{verdict}</div>"
            f"<ol class='cmce-matches'>{''.join(items)}</ol></section>"
        )
    face = f"face {result.chosen + 1} of {len(result.faces)}"
    who = f" · query identity: <b>{html.escape(query_label)}</b>" if query_label else ""
    return (f"<div class='cmce-results-head'>Results for {face}{who}</div>"
            f"<div class='cmce-results'>{''.join(cols)}</div>")


def risk_coverage_note(rc: RiskCoverage, gallery: Gallery) -> str:
    """The sentences under the risk-coverage curve: what the leave-one-out measured (the paper's
    metric, which drops queries; the app does not), or why it could not.

    Each labelled face searches the rest with the query model's own embedding, so faces
    indexed before this bundle (◐, lacking that embedding) cannot be queries.
    """
    qm = gallery.bundle.query_model
    own = gallery.vectors.available.get("query")
    lacking = 0 if own is None else int((~own[gallery.positions]).sum())
    if not rc.usable:
        if lacking == len(gallery):
            return (f"The risk-coverage curve needs faces with {qm}'s own embedding (each labelled face searches "
                    f"the rest with it); every face here was indexed before this bundle (◐). Index the photos "
                    f"again with this bundle to see it.")
        return ("The risk-coverage curve needs labels: at least one person with two or more "
                "photos (folders per person, or `Name_0001.jpg`-style names).")
    text = (f"Leave-one-out: each of the {int(rc.queries[0])} labelled faces whose person has another photo "
            "searches the rest of the gallery with its query-model embedding.")
    if lacking:
        text += f" The {lacking} faces lacking {qm}'s own embedding (◐) are only matched, never queries."
    text += (" The curve is the paper's metric: rejected faces are removed, and the queries of a person left "
             "without a photo are dropped, so it counts only the queries that are kept. The search above drops "
             "no query: by default it rejects nothing and marks doubtful faces, and a query whose best match is "
             "rejected answers Unknown.")
    return text


# --------------------------------------------------------------------------- figures


def risk_coverage_figure(rc: RiskCoverage, current_rate: float | None = None, quality: str = "disagreement"):
    """matplotlib Figure: leave-one-out Recall@1 of the kept queries (the paper's metric) vs share of
    the gallery rejected.

    ``quality`` names the quality score that ranked the gallery (one of ``QUALITY_SCORES``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    label = "reject most uncertain (CMCE)" if quality == "disagreement" else f"reject by quality score ({quality})"
    ax.plot(rc.rates * 100, rc.recall_uncertainty * 100, "o-", color="#1a73e8", label=label)
    ax.plot(rc.rates * 100, rc.recall_random * 100, "s--", color="#80868b", label="reject at random")
    if current_rate is not None:
        ax.axvline(current_rate * 100, color="#d93025", lw=1, ls=":", label=f"current setting ({current_rate:.0%})")
    low = np.nanmin(np.concatenate([rc.recall_uncertainty, rc.recall_random])) if rc.usable else 0.0
    ax.set_ylim(max(0.0, np.floor(low * 10 - 1) * 10), 101)
    ax.set_xlabel("share of gallery rejected (%)")
    ax.set_ylabel("Recall@1 of kept queries (%)")
    ax.set_title(f"The paper's metric ({int(rc.queries[0])} queries)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def uncertainty_figure(uncertainty: np.ndarray, rejected: np.ndarray, wrong: np.ndarray | None = None,
                       description: str = QUALITY_DESCRIPTIONS["disagreement"], log_scale: bool = False,
                       threshold: float | None = None):
    """matplotlib Figure: histogram of a per-entry score, searched vs rejected; wrong LOO top-1 as ticks.

    ``uncertainty`` is the score rejection acts on (the bundle's quality score), and
    ``description`` says what it is (``QualityModel.description``). ``log_scale`` puts
    the score on a log axis (detector doubt spans several decades), with values
    below 1e-6 drawn at 1e-6. ``threshold``, the score's calibrated threshold, is drawn
    as a dashed amber line (faces above it are doubtful).
    """
    from matplotlib.figure import Figure

    u = np.asarray(uncertainty, np.float64)
    rej = np.asarray(rejected, bool)
    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    n_bins = min(30, max(5, len(u) // 3))
    if log_scale and len(u):
        u = np.maximum(u, 1e-6)
        lo, hi = np.log10(u.min()) - 1e-3, np.log10(u.max()) + 1e-3  # margins keep both ends inside
        bins = np.logspace(lo, max(hi, lo + 1), n_bins + 1)
        ax.set_xscale("log")
    else:
        bins = np.histogram_bin_edges(u, bins=n_bins) if len(u) else 10
    ax.hist([u[~rej], u[rej]], bins=bins, stacked=True, color=["#1a73e8", "#d93025"],
            label=[f"searched ({int((~rej).sum())})", f"rejected ({int(rej.sum())})"])
    if threshold is not None and np.isfinite(threshold):
        above = int((np.asarray(uncertainty, np.float64) > threshold).sum())
        x = max(threshold, 1e-6) if log_scale else threshold
        ax.axvline(x, color="#e37400", ls="--", lw=1.5, label=f"calibrated threshold ({above} above: doubtful)")
    if wrong is not None and np.any(wrong):
        ax.plot(u[np.asarray(wrong, bool)], np.zeros(int(np.sum(wrong))), "|", color="black", ms=14, mew=1.5,
                label="wrong top-1 (leave-one-out)")
    ax.set_xlabel(textwrap.fill(description, 80), fontsize=9)
    ax.set_ylabel("gallery faces")
    ax.set_title("Quality score of your gallery (doubt and rejection act on it)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- rejection score controls

#: The unit of each quality score, for the threshold box.
QUALITY_UNITS = {
    "disagreement": "mean cosine distance between the members' embeddings of the face (0 = they agree; 2 = opposite)",
    "detection": "detector doubt, -log10 of the face detector's probability (0 = certain; 3 = probability 0.999)",
    "combined": "mean percentile rank of disagreement and detector doubt in the calibration gallery (0 to 1)",
    "learned": "predicted chance that a search for this person misses at rank 1 (0 to 1)",
}


def readable_number(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded to ``digits`` significant digits (``0.000271188...`` -> ``0.000271``)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def threshold_help(kind: str, threshold: float | None) -> str:
    """One line under the threshold box: the score's unit and what the value means."""
    unit = QUALITY_UNITS.get(kind, kind)
    if threshold is None:
        return f"Unit: {unit}. Not calibrated for this score: rejection falls back to the rate."
    extra = ""
    if kind == "detection":
        extra = f" (a detector probability of {10 ** -threshold:.6g})"
    elif kind == "learned":
        extra = f" (searches predicted to miss {100 * threshold:.3g}% of the time)"
    return (f"Unit: {unit}. Calibrated threshold {readable_number(threshold)}{extra}: 'calibrated' rejects "
            "above it, 'threshold' above the value in this box.")


def score_choice_label(bundle) -> str:
    """Label of the rejection-score picker: the bundle's choice and, where measured, what it did."""
    kind = bundle.calibration.quality.kind
    ev = (bundle.info or {}).get("evaluation_mixed") or (bundle.info or {}).get("evaluation") or {}
    cut = next((r.get("relative_error_cut") for r in ev.get("rejection", []) if abs(r.get("rate", 0) - 0.1) < 1e-9), None)
    where = "mixed-quality" if "evaluation_mixed" in (bundle.info or {}) else "held-out"
    figure = f": rejecting 10% cut the {where} error by {100 * cut:.0f}%" if cut is not None and cut == cut else ""
    return f"Rejection score (bundle's choice: {kind}{figure})"
