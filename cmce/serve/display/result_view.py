"""What the demo shows of a search: numbered face boxes, the side-by-side results as HTML
and the same results as a JSON-able dict for API clients. Wrong matches are red, solid
and on a red background.

Every function is a pure function of its arguments; the app only passes them on.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cmce.faces.geometry import Face
from cmce.gallery.memory import Gallery
from cmce.gallery.results import QueryResult, ViewResult
from cmce.gallery.verdict import QueryVerdict, column_title
from cmce.method.answers import Answer, decide_answer, person_presence
from cmce.serve.display.text import percent, uncertainty_text

__all__ = ["annotate_faces", "face_choices", "match_photo_image", "result_dict", "result_html", "view_title"]


_BOX_COLOURS = ((26, 115, 232), (249, 171, 0))  # other faces, chosen face


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


MATCH_GREEN = (30, 200, 60)  # the match's box in its source photo


def match_photo_image(image: np.ndarray, box: Sequence[float], others: Sequence[Sequence[float]] = ()) -> Image.Image:
    """A match's source photo with its face boxed in green, and the photo's other gallery faces
    (``others``, boxes in the same pixels) in thin faint white.

    Args:
        image: (H, W, 3) uint8 RGB.
        box: ``x1, y1, x2, y2`` of the match's face in ``image``'s pixels.
    """
    img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    w = max(int(max(img.size) / 120), 3)
    faint = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(faint)
    for x1, y1, x2, y2 in others:
        draw.rectangle((x1, y1, x2, y2), outline=(255, 255, 255, 150), width=max(w // 2, 1))
    img = Image.alpha_composite(img.convert("RGBA"), faint).convert("RGB")
    x1, y1, x2, y2 = box
    ImageDraw.Draw(img).rectangle((x1, y1, x2, y2), outline=MATCH_GREEN, width=w)
    return img


def view_title(view: str, query_model: str) -> str:
    """Column heading of a view: its name in a verdict (``verdict.column_title``), the query model's
    column marked as such."""
    title = column_title(view, query_model)
    return f"{title} (query model)" if view == "query" else title


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
                calibration=None, presence: str | None = None) -> dict[str, Any]:
    """The results of a query as plain JSON-able data (what API clients get).

    Per view: ``answer`` (the person named, or None), ``answer_kind`` (``match``, ``unknown``,
    ``unsure`` or ``doubtful``: see ``answers.Answer``), ``reason`` (one sentence),
    ``confidence`` (the answer rule's predicted chance of a right answer, or None) and
    ``rule`` (the answer rule that answered in that view, from ``calibration``, the bundle's
    ``Calibration``; None: no rule), ``normalised`` and ``norm_threshold`` (the best
    match's cohort-normalised score and its threshold where that decided "Unknown", else
    None: the raw ``threshold`` did). Per match: ``doubtful`` (searched, and marked).
    ``query_person`` (``presence``, see ``answers.PRESENCE``) says where the query's person stands in
    the gallery: absent, every photo rejected, every photo doubtful or rejected, or present.
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
        "query_person": presence,
        "faces": [{"box": [round(x, 1) for x in f.box], "probability": round(f.probability, 4)} for f in result.faces],
        "chosen_face": result.chosen,
        "false_accept_rate": result.far,
        "views": views,
    }


def _found_by_title(entry) -> str:
    """`` title='found by mtcnn, first pass, p=0.999; eyes 38 px apart · sharpness 0.42 · exposure 0.61'``
    for an entry's thumbnail ('' without a face record; no image quality where it is not known)."""
    face = getattr(entry, "face", None)
    if face is None:
        return ""
    quality = getattr(entry, "image_quality", None)
    measured = f"; {quality.describe()}" if quality is not None and quality.known else ""
    return f" title='found by {html.escape(face.found_by + measured)}'"


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


#: The frames of the results, said once above them (rejected faces never appear here: the overview
#: shows them crossed out in purple, a colour no match uses).
RESULTS_LEGEND = ("<div class='cmce-legend'><span class='cmce-key cmce-correct'>green: same person</span> "
                  "<span class='cmce-key cmce-wrong'>red, solid: someone else (a wrong match)</span> "
                  "<span class='cmce-key cmce-doubtful'>amber, dashed: a doubtful photo</span> "
                  "<span class='cmce-key cmce-rejected'>purple, crossed out (overview only): rejected, never a match</span></div>")

_UNKNOWN_MARKS = {
    "absent": (" ✓ (not in the gallery)", " cmce-correct"),
    "rejected": (" · every photo of them here is rejected", " cmce-doubtful"),
    "doubtful": (" · every photo of them here is doubtful or rejected", " cmce-doubtful"),
    "present": (" ✗ (person is in the gallery)", " cmce-wrong"),
}


def _person_status(gallery: Gallery, query_label: str | None, rejected: np.ndarray | None,
                   doubtful: np.ndarray) -> str | None:
    """Where the query's person stands among the live entries (``answers.person_presence``)."""
    return person_presence([e.label for e in gallery.entries], gallery.positions, query_label, rejected, doubtful)


def _reached(v: ViewResult, answer: Answer, score: float, far: float) -> str:
    """Why a name was reachable: the normalised score over its threshold, or the similarity over the raw one."""
    if answer.normalised is not None and answer.norm_threshold is not None:
        return (f"similarity {score:.2f}, {answer.normalised:.1f} spreads above the next people "
                f"≥ {answer.norm_threshold:.1f}")
    return f"similarity {score:.2f} ≥ {v.threshold:.2f} ({percent(far)} false-accept rate)"


def _verdict(v: ViewResult, answer: Answer, far: float, query_label: str | None,
             status: str | None) -> tuple[str, str]:
    if answer.unknown:
        mark, cls = _UNKNOWN_MARKS.get(status, ("", " cmce-doubtful" if answer.kind == "doubtful" else ""))
        if answer.kind == "doubtful" and status == "present":  # a deliberate "Unknown" on a doubtful photo, no miss
            mark, cls = " (person is in the gallery)", " cmce-doubtful"
        detail = answer.reason.removeprefix("Unknown: ")
        if answer.kind == "unknown" and v.matches and answer.normalised is None:
            detail += f"; the threshold is set for a {percent(far)} false-accept rate"
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
    return (f"<b>{html.escape(m.label or m.source)}</b>{mark}<br>"
            f"<span>{html.escape(_reached(v, answer, m.score, far))}{extra}</span>", cls)


def result_html(
    result: QueryResult, gallery: Gallery, query_label: str | None = None, rejected: np.ndarray | None = None,
    doubtful: np.ndarray | None = None, verdict: QueryVerdict | None = None,
) -> str:
    """Side-by-side HTML columns, one per view: verdict, then the ranked matches.

    The verdict names the person, with the answer rule's chance of a right answer when
    the bundle has a rule, or says "Unknown" and why (``Answer.reason``). Each match shows
    the gallery thumbnail, label, similarity and the entry's uncertainty; ensemble matches
    also show each member's similarity. With a known ``query_label`` matches are marked
    green (same person) or red (someone else), and an "Unknown" says whether the person is
    in the gallery at all, or only as rejected or doubtful photos. Doubtful matches
    (``doubtful``: (N,) bool, default ``gallery.doubt().doubtful``) get a dashed amber frame
    and "◌ doubtful"; ``rejected`` entries never appear. ``verdict`` (``query_verdict``) is
    shown as one line above the columns (sticky on a phone, where the columns are swiped).
    """
    qm = gallery.bundle.query_model
    if doubtful is None:
        doubtful = gallery.doubt().doubtful
    status = _person_status(gallery, query_label, rejected, doubtful)
    cols = []
    for name, v in result.views.items():
        answer = _view_answer(v)
        said, vcls = _verdict(v, answer, result.far, query_label, status)
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
                f"<li class='cmce-match{cls}' data-rank='{rank}'><img src='{_data_uri(gallery.entries[m.position].thumbnail)}' alt=''"
                f"{_found_by_title(gallery.entries[m.position])}>"
                f"<div class='cmce-meta'><div class='cmce-label' title='{html.escape(m.source)}'>{rank}. "
                f"{html.escape(m.label or m.source)}</div>"
                f"<div>sim <b>{m.score:.2f}</b> · u {uncertainty_text(m.uncertainty)}{doubt}</div>{members}</div></li>"
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
            f"<h4>{html.escape(view_title(name, qm))}</h4><div class='cmce-verdict{vcls}'>{said}</div>"
            f"<ol class='cmce-matches'>{''.join(items)}</ol></section>"
        )
    face = f"face {result.chosen + 1} of {len(result.faces)}"
    who = f" · query identity: <b>{html.escape(query_label)}</b>" if query_label else ""
    line = ""
    if verdict is not None:
        won = verdict.ensemble_only
        ensemble = next((c for c in verdict.columns if c.view == "ensemble"), None)
        kind = "" if ensemble is None or ensemble.correct is None else (
            " cmce-correct" if ensemble.correct else " cmce-wrong")
        extra = (f" <span>(the ensemble is right where {len(won)} of the {len(verdict.columns) - 1} other "
                 f"columns failed)</span>") if won else ""
        line = (f"<div class='cmce-verdict-line{kind}' id='verdict-line'><b>Verdict:</b> "
                f"{html.escape(verdict.text)}{extra}</div>")
    return (f"<div class='cmce-results-head'>Results for {face}{who} · click a match to see it in its photo</div>"
            f"{line}{RESULTS_LEGEND}<div class='cmce-results'>{''.join(cols)}</div>")
