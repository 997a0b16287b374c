"""What the demo shows of a gallery: the ingest report, framed tiles, the overview, rejection figures.

Two marks on gallery faces, never confused: **doubtful** (amber, dashed: the bundle's
quality score is above its calibrated threshold; the face is still searched) and
**rejected** (purple, crossed out: the face never matches, and a query whose best match it is answers
"Unknown" rather than naming the next person).

Every function is a pure function of its arguments; the app only passes them on.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from cmce.faces.geometry import Face
from cmce.faces.image_quality import FaceImageQuality
from cmce.gallery.ingest import IngestReport
from cmce.gallery.memory import Gallery
from cmce.gallery.portable import ImportedGallery
from cmce.gallery.verdict import column_title
from cmce.io.uploads import LabelPreview, UploadBatch
from cmce.method.answers import DoubtMarks
from cmce.method.ensemble import QUALITY_DESCRIPTIONS
from cmce.method.report import RiskCoverage
from cmce.method.scoreboard import Scoreboard
from cmce.serve.display.bundle_text import answer_rule_note, readable_number

__all__ = ["DOUBTFUL_AMBER", "ORDERS", "REJECTED_PURPLE", "entry_caption", "entry_tile", "index_report_dict", "index_report_markdown", "label_preview_markdown", "overview_summary", "overview_tiles", "rejected_entries", "risk_coverage_figure", "restore_dict", "restore_markdown", "risk_coverage_note", "scoreboard_markdown", "uncertainty_figure"]


ORDERS: tuple[str, ...] = ("upload order", "most uncertain first", "least uncertain first")
"""Sort orders of the gallery overview."""


REJECTED_PURPLE = (123, 31, 162)  # no result frame uses it: a wrong match is red, a right one green


DOUBTFUL_AMBER = (227, 116, 0)


_MAX_LISTED = 12


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
    """Square tile of a gallery thumbnail: rejected entries greyed, crossed out, inside a purple frame,
    doubtful ones (searched, marked) in colour inside a dashed amber frame."""
    img = Image.open(io.BytesIO(thumbnail)).convert("RGB")
    img = ImageOps.pad(img, (size, size), color=(240, 240, 240))
    w = max(size // 20, 4)
    if rejected:
        img = ImageOps.grayscale(img).convert("RGB")
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, size - 1, size - 1), outline=REJECTED_PURPLE, width=w)
        draw.line((w, size - 1 - w, size - 1 - w, w), fill=REJECTED_PURPLE, width=max(w // 2, 2))
    elif doubtful:
        _dashed_frame(ImageDraw.Draw(img), size, w, DOUBTFUL_AMBER)
    return img


def entry_caption(label: str | None, uncertainty: float, rejected: bool, members: int | None = None,
                  of: int | None = None, face: Face | None = None, doubtful: bool = False,
                  image_quality: FaceImageQuality | None = None) -> str:
    """``"Aaron_Peirsol · u=0.41"``, ``"rejected · Aaron_Peirsol · u=0.41"`` or, for a doubtful entry
    (searched, marked), ``"◌ doubtful · Aaron_Peirsol · u=0.41"`` (the label never cut).

    An entry fused from fewer members than the ensemble has gets a badge,
    ``"… · ◐ 2/3 models"``; ``u=–`` means there was no pair of members to compare.
    A face found by a second chance (not MTCNN's first pass) says how:
    ``"… · found: yunet, padded pass, p=0.930"``. The face's measured image quality
    (``cmce.faces.image_quality``) closes the caption where it is known:
    ``"… · eyes 38 px apart · sharpness 0.42 · exposure 0.61"``.

    >>> from cmce.faces.image_quality import FaceImageQuality
    >>> entry_caption("Ann", 0.5, False, image_quality=FaceImageQuality(38.2, 0.4212, 0.6071))
    'Ann · u=0.50 · eyes 38 px apart · sharpness 0.42 · exposure 0.61'
    """
    u = "–" if np.isnan(uncertainty) else f"{uncertainty:.2f}"
    badge = f" · ◐ {members}/{of} models" if members is not None and of is not None and members < of else ""
    if face is not None and face.detection_pass != "first":
        badge += f" · found: {face.found_by}"
    if image_quality is not None and image_quality.known:
        badge += f" · {image_quality.describe()}"
    name = label or "(no label)"  # never cut: the overview's captions wrap
    name = f"rejected · {name}" if rejected else f"◌ doubtful · {name}" if doubtful else name
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
                            e.face, bool(doubtful[pos]), getattr(e, "image_quality", None))
        out.append((entry_tile(e.thumbnail, bool(rejected[pos]), doubtful=bool(doubtful[pos])), cap))
    return out


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
    counts = (f"**{n} faces**: **{r} rejected** (⊘ purple frame, crossed out: never a match; a query whose best match is rejected "
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


def scoreboard_markdown(scoreboard: Scoreboard | None, query_model: str | None) -> str:
    """The user's own "what the ensemble buys": one row per column of ``gallery_scoreboard``.

    Recall@1 and the share of queries answered Unknown (as a search of the gallery
    answers: the cohort-normalised threshold in galleries of more than 50 people, the
    bundle's answer rule, else the similarity threshold), and how many queries each column named right where the ensemble
    did not, and the reverse. None (no gallery yet) or no query: what it needs.
    """
    if scoreboard is None or query_model is None or not scoreboard.usable:
        return ("**Your gallery's scoreboard** needs labels: at least one person with two or more photos "
                "(folders per person, or `Name_0001.jpg`-style names). Each labelled face then searches the "
                "rest, and every column is scored.")
    rows = [f"**Your gallery's scoreboard**: each of the {scoreboard.queries} labelled faces ({scoreboard.people} "
            "people) whose person has another photo searches the rest with its query-model embedding, in every "
            "column (stored vectors only: no photo is read again). *Unknown*: what a search answers (with **Say "
            "Unknown** at normal: in a gallery of more than 50 people, the best match does not stand out from the "
            "next 50; else it is under the column's similarity threshold; or the answer rule finds it too likely "
            "wrong); *won*: queries the column named right where the ensemble did not; *lost*: "
            "queries the ensemble named right where the column did not.", "",
            "| column | Recall@1 | Unknown | won | lost |",
            "|---|---:|---:|---:|---:|"]
    for c in scoreboard.columns:
        name = column_title(c.view, query_model)
        wins = ("–", "–") if c.view == "ensemble" else (str(c.right_where_ensemble_missed),
                                                       str(c.missed_where_ensemble_right))
        rows.append(f"| {'**' + name + '**' if c.view == 'ensemble' else name} | {100 * c.recall_at_1:.1f}% | "
                    f"{100 * c.unknown_rate:.1f}% | {wins[0]} | {wins[1]} |")
    return "\n".join(rows)


def _labels(gallery: Gallery) -> dict[str, int]:
    labels: dict[str, int] = {}
    for i in gallery.positions:
        lab = gallery.entries[i].label
        if lab is not None:
            labels[lab] = labels.get(lab, 0) + 1
    return labels


def restore_markdown(restored: ImportedGallery, name: str, query_model: str) -> str:
    """What a gallery restored from a downloaded archive holds, and what was left out."""
    g = restored.gallery
    text = (f"**{len(g)} faces restored** from `{name}` ({len(_labels(g))} labelled people) in "
            f"{restored.seconds:.2f} s: re-projected into {query_model}'s space from the stored embeddings, "
            "no photo read again.")
    if g.load_report is not None and g.load_report.lacking:
        text += " " + g.load_report.summary()
    if restored.skipped:
        text += "\n\nLeft out of the archive: " + "; ".join(f"`{n}` ({why})" for n, why in restored.skipped[:10])
    return text


def restore_dict(restored: ImportedGallery) -> dict[str, Any]:
    """The same as JSON-able data (what API clients get)."""
    g = restored.gallery
    return {"restored": len(g), "entries": len(g), "labels": _labels(g), "seconds": round(restored.seconds, 3),
            "skipped": [list(x) for x in restored.skipped]}


def label_preview_markdown(preview: LabelPreview | None) -> str:
    """Before indexing: the first files of an upload and the label each will get ('' for none)."""
    if preview is None or (not preview.images and not preview.notes):
        return ""
    rows = [f"**Before indexing**: {preview.images} images, {preview.labelled} labelled, {preview.people} people. "
            f"The first {len(preview.rows)}:", "", "| file | label |", "|---|---|"]
    for name, label in preview.rows:
        shown = name.replace("|", "\\|").replace("`", "'")
        rows.append(f"| `{shown}` | {label.replace('|', '/') if label else '*(none: an unlabelled face)*'} |")
    if preview.notes:
        rows += ["", " ".join(preview.notes)]
    return "\n".join(rows)
