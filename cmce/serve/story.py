"""What the ensemble buys: the measured story and the examples that show it.

Two things the demo puts on its page, both read from files the repository ships:

* the held-out evaluations of the shipped bundles (``docs/eval-*.json``, written by
  ``python -m cmce evaluate ... --heldout --json``), reduced to the columns the app
  shows: the CMCE ensemble, each gallery model through its transformer, and the query
  model alone. Clean and mixed-quality galleries are told apart by the fields the
  evaluation recorded (a gallery degradation spec, when there is one), never by file
  name, and nothing is typed in by hand;
* the example galleries and queries (``assets/examples/examples.json``), with the
  examples each bundle should be shown with.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from cmce.errors import CmceError, one_named
from cmce.metrics.intervals import format_interval
from cmce.metrics.results import EvaluationRow, ResultError, load_evaluations

logger = logging.getLogger(__name__)

__all__ = [
    "READING_GUIDE",
    "BundleExample",
    "EvalColumn",
    "EvalReport",
    "ExampleGallery",
    "ExampleQuery",
    "Examples",
    "StoryError",
    "ensemble_lift",
    "example_cover",
    "examples_markdown",
    "load_examples",
    "order_by_lift",
    "read_evaluation",
    "read_evaluations",
    "story_markdown",
    "tab_title",
    "what_it_buys",
]

READING_GUIDE = (
    "**How to read the columns.** *CMCE ensemble*: every gallery face stored as the mean of all "
    "gallery models' embeddings mapped into the query model's space. *model → query model*: one "
    "gallery model through its transformer alone. *query model alone*: the light query model on both "
    "sides, no transformer. Each column answers with its best match, or **unknown** when that match "
    "does not stand out from the next 50 people of the gallery (galleries of more than 50 faces; set so "
    "that few strangers get a name, lowered on a gallery of poor photos so that most searches still get "
    "one) or, in a smaller gallery, is less similar than the column's threshold "
    "(a 0.1% false-accept rate per comparison): the column does not claim to know the person. "
    "A **doubtful** gallery face (◌, amber "
    "dashed frame) scores above the bundle's calibrated quality threshold: it is still searched, and "
    "marked wherever it appears. A **rejected** face (purple frame, crossed out; only when you choose to reject) never "
    "matches, and a query whose best match it is answers unknown rather than naming the next person. "
    "The rejection line under each table is the paper's metric: Recall@1 of the queries kept after "
    "rejection."
)


class StoryError(CmceError):
    """An evaluation file or the examples manifest is missing or malformed."""


# --------------------------------------------------------------------------- evaluations


@dataclass(frozen=True)
class EvalColumn:
    """One column of the app, as measured on held-out identities.

    Attributes:
        view: the app's view name: ``"ensemble"``, a gallery model name, or ``"query"``.
        title: what the column is, in words.
        recall_at_1: share of queries whose top match is the right person.
        tar_at_far_1e3: true-accept rate at a 0.1% false-accept rate.
        recall_at_1_ci95: 95% interval of ``recall_at_1`` where the evaluation recorded one.
    """

    view: str
    title: str
    recall_at_1: float
    tar_at_far_1e3: float
    recall_at_1_ci95: tuple[float, float] | None = None


@dataclass(frozen=True)
class EvalReport:
    """One shipped evaluation of one bundle on one kind of gallery.

    Attributes:
        path: the JSON file.
        bundle: the bundle's folder name (``facenet-query``).
        query_model: its query model.
        gallery_models: its gallery models.
        gallery_degrade: the recorded gallery degradation spec (None: a clean gallery).
        queries: number of queries; gallery: number of gallery faces.
        columns: ensemble first, then each gallery model, then the query model alone.
        rejection: ``(rate, recall_at_1, random_recall_at_1)`` per rejection rate.
        quality: the quality score the bundle rejects by.
        plot: the risk-coverage plot written with it, if it is there.
    """

    path: Path
    bundle: str
    query_model: str
    gallery_models: tuple[str, ...]
    gallery_degrade: str | None
    queries: int
    gallery: int
    columns: tuple[EvalColumn, ...]
    rejection: tuple[tuple[float, float, float], ...]
    quality: str
    plot: Path | None

    @property
    def gallery_kind(self) -> str:
        """``"clean"`` or ``"mixed-quality (SPEC)"``."""
        return "clean" if self.gallery_degrade is None else f"mixed-quality ({self.gallery_degrade})"

    def column(self, view: str) -> EvalColumn:
        """The column of ``view``.

        Raises:
            StoryError: no such column; the message lists the ones there are.
        """
        return one_named(self.columns, view, key=lambda c: c.view, what="column", error=StoryError,
                         where=f" in {self.path.name}")


def _col(view: str, title: str, row: EvaluationRow) -> EvalColumn:
    ci = row.recall_at_1_ci95
    return EvalColumn(view, title, float(row.recall_at_1), float(row.tar_at_far_1e3),
                      None if ci is None else (float(ci[0]), float(ci[1])))


def read_evaluation(path: str | Path) -> EvalReport | None:
    """The app's columns from one ``evaluate --json`` file; None for an upgrade experiment.

    The ensemble row is the one fused from exactly the members the bundle serves
    (its gallery models, plus the query model's own embedding when it is a member).
    The file is read through ``cmce.metrics.results``.

    Raises:
        StoryError: unreadable JSON, several evaluations in one file, or a row the app's columns need is missing.
    """
    path = Path(path)
    try:
        evaluations = load_evaluations(path)
    except ResultError as e:
        if "not a readable evaluation JSON" in str(e):
            raise StoryError(str(e)) from e
        raise StoryError(f"{path}: not an `evaluate --json` file with the app's columns ({e})") from e
    if len(evaluations) != 1:
        raise StoryError(f"{path}: holds {len(evaluations)} evaluations; the app reads one per file")
    ev = evaluations[0]
    if ev.upgrade_results:
        return None
    try:
        b, rows = ev.bundle, ev.rows
        if b is None or ev.counts is None:
            raise KeyError("bundle" if b is None else "counts")
        query, gallery_models = b.query, b.gallery
        served = set(gallery_models) | ({query} if b.query_member else set())
        ensemble = next(r for r in rows if r.kind == "ensemble" and set(r.gallery) == served)
        columns = [_col("ensemble", "CMCE ensemble", ensemble)]
        for g in gallery_models:
            row = next(r for r in rows if r.kind == "asymmetric" and r.gallery == (g,) and r.query == query)
            columns.append(_col(g, f"{g} → {query}", row))
        alone = next(r for r in rows if r.kind == "symmetric" and r.gallery == (query,) and r.query == query)
        columns.append(_col("query", f"{query} alone (query model)", alone))
        rejection = tuple((float(r.rate), float(r.recall_at_1), float(r.random_recall_at_1)) for r in ev.rejection)
        source = b.source or path.stem.removeprefix("eval-")
        plot_name = ev.extra.get("plot") or path.name.replace("eval-", "risk-coverage-", 1).removesuffix(".json") + ".png"
        plot = path.parent / Path(plot_name).name
        return EvalReport(path, Path(source).name, query, gallery_models, ev.degrade_spec,
                          int(ev.counts["queries"]), int(ev.counts["gallery"]), tuple(columns), rejection,
                          str(b.quality or "disagreement"), plot if plot.is_file() else None)
    except (KeyError, TypeError, StopIteration) as e:
        raise StoryError(f"{path}: not an `evaluate --json` file with the app's columns (missing {e!r})") from e


def read_evaluations(folder: str | Path, bundles: Iterable[str] | None = None) -> list[EvalReport]:
    """Every evaluation in ``folder`` (``eval-*.json``) the app can show, optionally only of ``bundles``.

    Upgrade experiments and files that are not evaluations are left out (the latter logged).
    Sorted by bundle (in the order of ``bundles`` when given), clean galleries first.
    """
    order = list(bundles) if bundles is not None else None
    out = []
    for path in sorted(Path(folder).glob("eval-*.json")):
        try:
            report = read_evaluation(path)
        except StoryError as e:
            logger.warning("left out of the story: %s", e)
            continue
        if report is not None and (order is None or report.bundle in order):
            out.append(report)

    def key(r: EvalReport):
        return (order.index(r.bundle) if order is not None else 0, r.bundle, r.gallery_degrade is not None,
                r.gallery_degrade or "")

    return sorted(out, key=key)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ensemble_lift(report: EvalReport) -> float:
    """Recall@1 of the CMCE ensemble minus that of the query model alone (fraction, may be negative)."""
    return report.column("ensemble").recall_at_1 - report.column("query").recall_at_1


def order_by_lift(bundles: Iterable[str], reports: Sequence[EvalReport]) -> list[str]:
    """``bundles`` ordered by the ensemble's lift over the query model on a clean gallery, largest first.

    Bundles without a clean-gallery evaluation keep their order, after the others.
    """
    lift = {r.bundle: ensemble_lift(r) for r in reports if r.gallery_degrade is None}
    names = list(bundles)
    return sorted(names, key=lambda b: (b not in lift, -lift.get(b, 0.0), names.index(b)))


def _lift(report: EvalReport) -> str:
    ens, alone = report.column("ensemble"), report.column("query")
    best = max((c for c in report.columns if c.view not in ("ensemble", "query")), key=lambda c: c.recall_at_1,
               default=None)
    delta = 100 * (ens.recall_at_1 - alone.recall_at_1)
    text = (f"The ensemble finds the right person first for **{_pct(ens.recall_at_1)}%** of queries, "
            f"{'+' if delta >= 0 else '−'}{abs(delta):.1f} points against the query model alone "
            f"({_pct(alone.recall_at_1)}%)")
    if best is not None:
        text += f" and {100 * (ens.recall_at_1 - best.recall_at_1):+.1f} against its best single gallery model"
    return text + "."


#: Under this lift (points of Recall@1) on a clean gallery, a bundle is said to buy nothing there.
NO_LIFT_POINTS = 0.5


def _clean_and_mixed(reports: Sequence[EvalReport]) -> tuple[EvalReport | None, EvalReport | None]:
    clean = next((r for r in reports if r.gallery_degrade is None), None)
    return clean, next((r for r in reports if r.gallery_degrade is not None), None)


def tab_title(bundle: str, reports: Sequence[EvalReport]) -> str:
    """``"facenet-query: +3.2 points of Recall@1 over its query model"``: the bundle and its
    ensemble's lift on a clean gallery, if measured. Where that lift is under
    ``NO_LIFT_POINTS`` and a mixed-quality gallery was measured, the title says so plainly
    and gives the lift there: ``"sface-query: no better than sface on clean photos; +1.9 points
    on a mixed-quality gallery"``."""
    clean, mixed = _clean_and_mixed(reports)
    if clean is None:
        return bundle
    lift = 100 * ensemble_lift(clean)
    if abs(lift) >= NO_LIFT_POINTS or mixed is None:
        return f"{bundle}: {lift:+.1f} points of Recall@1 over its query model"
    return (f"{bundle}: no better than {clean.query_model} on clean photos; "
            f"{100 * ensemble_lift(mixed):+.1f} points on a mixed-quality gallery")


def what_it_buys(reports: Sequence[EvalReport]) -> str:
    """One plain sentence on what a bundle buys, where its clean-gallery lift is under
    ``NO_LIFT_POINTS`` and a mixed-quality gallery was measured ('' otherwise): Recall@1 of
    the ensemble and the query model alone on both, and the rejection rate that lifts the
    mixed gallery most, against random rejection. Every figure comes from ``reports``."""
    clean, mixed = _clean_and_mixed(reports)
    if clean is None or mixed is None or abs(100 * ensemble_lift(clean)) >= NO_LIFT_POINTS:
        return ""
    qm = clean.query_model
    text = (f"**What this bundle buys.** On clean photos nothing over {qm} alone: "
            f"{_pct(clean.column('ensemble').recall_at_1)}% against {_pct(clean.column('query').recall_at_1)}% "
            f"Recall@1. Its gain is robustness on galleries of poor photos, "
            f"{_pct(mixed.column('ensemble').recall_at_1)}% against {_pct(mixed.column('query').recall_at_1)}% "
            f"({100 * ensemble_lift(mixed):+.1f} points) on a mixed-quality gallery")
    steps = [(rate, rec, rnd) for rate, rec, rnd in mixed.rejection if not math.isnan(rec)]
    if steps:
        rate, rec, rnd = max(steps, key=lambda s: s[1])
        text += (f", and rejection: with the {100 * rate:.0f}% most doubtful gallery faces rejected, "
                 f"{_pct(rec)}% (random rejection: {_pct(rnd)}%)")
    return text + ". The examples show how its columns answer, not this gain."


def story_markdown(reports: Sequence[EvalReport]) -> str:
    """Markdown of the measured story of one bundle: a table per gallery kind, and what rejection does.

    Every figure comes from ``reports`` (see ``read_evaluation``).
    """
    if not reports:
        return "_No held-out evaluation of this bundle ships with the app._"
    blocks = [b for b in (what_it_buys(reports),) if b]
    for r in reports:
        head = (f"**{r.gallery_kind.capitalize()} gallery**: {r.queries} queries of {r.gallery} gallery faces, "
                f"identities never used in training (`{r.path.parent.name}/{r.path.name}`). {_lift(r)}")
        ci = any(c.recall_at_1_ci95 for c in r.columns)
        rows = ["| column | Recall@1 (%)" + (" (95% CI)" if ci else "") + " | TAR@FAR=0.1% (%) |", "|---|---:|---:|"]
        for c in r.columns:
            shown = format_interval(*c.recall_at_1_ci95, digits=1) if c.recall_at_1_ci95 else ""
            interval = f" {shown}" if shown else ""
            name = f"**{c.title}**" if c.view == "ensemble" else c.title
            rows.append(f"| {name} | {_pct(c.recall_at_1)}{interval} | {_pct(c.tar_at_far_1e3)} |")
        blocks += [head, "\n".join(rows)]
        if r.rejection:
            base = r.column("ensemble").recall_at_1
            steps = ", ".join(f"{100 * rate:.0f}% → {_pct(rec)}% (random {_pct(rnd)}%)"
                              for rate, rec, rnd in r.rejection if not math.isnan(rec))
            blocks.append(f"The paper's metric, rejecting the gallery faces the quality score (*{r.quality}*) "
                          f"doubts most (Recall@1 of the kept queries), ensemble from {_pct(base)}%: {steps}.")
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class ExampleGallery:
    """An example gallery: a folder of photos named ``Person_Name_NN.jpg``."""

    name: str
    folder: Path
    description: str


@dataclass(frozen=True)
class ExampleQuery:
    """An example query photo and its caption."""

    path: Path
    caption: str


@dataclass(frozen=True)
class BundleExample:
    """An example that shows a bundle's point: a gallery and a query, and what to look at."""

    bundle: str
    gallery: str
    query: Path
    shows: str


@dataclass(frozen=True)
class Examples:
    """The example galleries, queries and per-bundle examples of ``examples.json``."""

    galleries: tuple[ExampleGallery, ...]
    queries: tuple[ExampleQuery, ...]
    by_bundle: Mapping[str, tuple[BundleExample, ...]]

    def gallery(self, name: str) -> ExampleGallery:
        """The example gallery called ``name``.

        Raises:
            StoryError: unknown name; the message lists the valid ones.
        """
        for g in self.galleries:
            if g.name == name:
                return g
        raise StoryError(f"Unknown example gallery {name!r}; choose one of {[g.name for g in self.galleries]}")

    def caption(self, query: Path) -> str:
        """The caption of an example query (its file name if it has none)."""
        return next((q.caption for q in self.queries if q.path == query), query.name)

    def label(self, example: BundleExample) -> str:
        """Short button text of a bundle example: ``"Mixed-quality archive + Grace Hopper, grey"``."""
        return f"{example.gallery.split(' (')[0]} + {self.caption(example.query)}"


def example_cover(folder: str | Path, side: int = 192) -> Image.Image:
    """A ``side`` x ``side`` picture of an example gallery: its first four photos (sorted by
    name) as a 2 x 2 mosaic, each cropped to a square; grey where there are fewer.

    Raises:
        StoryError: the folder holds no readable JPEG or PNG photo.
    """
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:4]
    cover = Image.new("RGB", (side, side), (230, 230, 230))
    half = side // 2
    read = 0
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                tile = ImageOps.fit(img.convert("RGB"), (half, half))
        except OSError as e:
            logger.warning("example cover: %s left out (%s)", path.name, e)
            continue
        cover.paste(tile, ((i % 2) * half, (i // 2) * half))
        read += 1
    if not read:
        raise StoryError(f"{folder}: no readable photo for the example's picture")
    return cover


def examples_markdown(examples: Examples, bundle: str) -> str:
    """Numbered list of what each of ``bundle``'s examples shows."""
    items = examples.by_bundle.get(bundle, ())
    return "\n".join(f"{i}. **{examples.label(e)}**: {e.shows}." for i, e in enumerate(items, 1))


def load_examples(folder: str | Path) -> Examples:
    """Read ``folder/examples.json``; every file it names must exist.

    Raises:
        StoryError: the manifest is missing or malformed, or names a file that is not there.
    """
    folder = Path(folder)
    manifest = folder / "examples.json"
    try:
        d = json.loads(manifest.read_text())
        galleries = tuple(ExampleGallery(g["name"], folder / g["folder"], g["description"]) for g in d["galleries"])
        queries = tuple(ExampleQuery(folder / q["file"], q["caption"]) for q in d["queries"])
        by_bundle = {b: tuple(BundleExample(b, e["gallery"], folder / e["query"], e["shows"]) for e in items)
                     for b, items in d.get("bundles", {}).items()}
    except (OSError, ValueError) as e:
        raise StoryError(f"{manifest}: not a readable examples manifest ({e})") from e
    except (KeyError, TypeError) as e:
        raise StoryError(f"{manifest}: malformed examples manifest (missing {e!r})") from e
    names = {g.name for g in galleries}
    missing = [str(p) for p in [g.folder for g in galleries] + [q.path for q in queries] if not p.exists()]
    missing += [str(e.query) for items in by_bundle.values() for e in items if not e.query.is_file()]
    missing += [f"gallery {e.gallery!r}" for items in by_bundle.values() for e in items if e.gallery not in names]
    if missing:
        raise StoryError(f"{manifest} names what is not there: {', '.join(missing)}")
    return Examples(galleries, queries, by_bundle)
