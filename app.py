"""CMCE Face Search: the web demo.

A thin Gradio app over the ``cmce`` library: build a gallery from many photos, see
which entries the ensemble doubts (marked, still searched) and, if you choose, rejects,
search it with a photo and compare the CMCE ensemble with each single model side by side.

Run ``python app.py`` (binds 127.0.0.1:7860; ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``
change that). The bundle is ``assets/bundles/sface-query`` unless ``CMCE_BUNDLE`` (a
folder or a Hub id) and ``CMCE_BUNDLE_REVISION`` say otherwise; every bundle shipped in
``assets/bundles/`` can be picked in the page, and switching keeps the session's gallery
(re-projected into the new bundle's space, no photo re-read). Each browser session
has its own gallery, dropped with its temporary files when the tab closes or after
``CMCE_SESSION_TTL`` seconds without activity (default 3600). ``CMCE_DEVICE`` (e.g. ``cuda``)
picks the torch device; on a ZeroGPU Space the embedding handlers run under ``@spaces.GPU``.
Caps for a public Space (upload size, per-request bytes, per-session quotas, the bundle
allow-list ``CMCE_BUNDLES``, queue sizes) come from ``cmce.io.limits.ServerLimits.from_env``.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from cmce.errors import CmceError, LimitError
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.io.images import format_bytes, load_image
from cmce.io.limits import BundleAllowList, ServerLimits, SlidingQuota, check_request_bytes
from cmce.io.uploads import collect_uploads, query_label
from cmce.method.bundle_model import bundle_summary
from cmce.method.engine import FaceEngine
from cmce.method.ensemble import QUALITY_SCORES
from cmce.method.report import gallery_risk_coverage
from cmce.method.unknown import UNKNOWN_BY
from cmce.serve import display, story
from cmce.serve.sessions import Engines, ExampleCache, Session, SessionRegistry, shipped_bundles
from cmce.serve.workdirs import TempFolders

try:  # Hugging Face ZeroGPU: a GPU is attached only while a decorated handler runs
    import spaces

    gpu = spaces.GPU
    ZERO_GPU = True
except ImportError:
    ZERO_GPU = False

    def gpu(fn):
        return fn


logger = logging.getLogger("cmce.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "assets" / "examples"
BUNDLES = ROOT / "assets" / "bundles"
EXAMPLE_SET = story.load_examples(EXAMPLES)  # galleries, queries, and the examples each bundle is shown with
EXAMPLE_GALLERIES = {g.name: g.folder for g in EXAMPLE_SET.galleries}
EXAMPLE_QUERIES = [(q.path, q.caption) for q in EXAMPLE_SET.queries]
SESSION_TTL_S = float(os.environ.get("CMCE_SESSION_TTL", 3600))
LIMITS = GalleryLimits.from_env()  # CMCE_MAX_FILES, CMCE_MAX_ENTRIES, ... (see cmce.gallery)
SERVER = ServerLimits.from_env(image=LIMITS.image)  # CMCE_MAX_REQUEST_MB, CMCE_QUOTA_*, ... (see cmce.io.limits)
ALLOWED = BundleAllowList.from_env()  # CMCE_BUNDLES, CMCE_ALLOW_LOCAL_BUNDLES
TEMP = TempFolders()  # session and example folders: removed at exit, swept at the next start if killed
HUB_LOADS = SlidingQuota(SERVER.bundle_loads_per_hour, what="bundle loads from outside assets/ (whole server)")
# none: reject nothing, mark the doubtful faces (searched); calibrated: the session bundle's own threshold
# for the score; threshold / rate: the user's
REJECT_BY = ("none", "calibrated", "threshold", "rate")
REJECT_BY_LABELS = {"none": "none (mark doubtful faces)", "calibrated": "calibrated", "threshold": "threshold",
                    "rate": "rate"}
BUNDLE_SCORE = "bundle"  # the rejection-score choice that follows the session's bundle
UNKNOWN_BY_LABELS = {  # unknown.UNKNOWN_BY, as the search column offers them
    "normalised": "normal: most searches get a name",
    "strict": "strict: fewest strangers named",
    "similarity": "similarity threshold only",
}

CSS = """
.cmce-results-head{font-size:.9rem;margin:2px 0 8px}
.cmce-results{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:10px}
.cmce-view{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px;min-width:0}
.cmce-view h4{margin:0 0 6px;font-size:.95rem}
.cmce-verdict{padding:6px 8px;border-radius:6px;margin-bottom:8px;font-size:.82rem;line-height:1.3;
  background:var(--background-fill-secondary)}
.cmce-verdict span{font-size:.75rem;opacity:.85}
.cmce-verdict.cmce-correct{background:#e6f4ea;color:#0d3d1a}
.cmce-verdict.cmce-wrong{background:#fce8e6;color:#5c0a05}
.cmce-matches{list-style:none;padding:0!important;margin:0!important}
.cmce-match{display:flex;gap:8px;align-items:center;padding:4px;margin:0 0 4px!important;border-radius:6px;
  border:2px solid var(--border-color-primary);font-size:.78rem;line-height:1.3}
.cmce-match img{width:56px;height:56px;object-fit:cover;border-radius:4px;flex:none;margin:0!important}
.cmce-match.cmce-correct{border-color:#1e8e3e;background:#e6f4ea;color:#0d3d1a}
.cmce-match.cmce-wrong{border-color:#d93025;background:#fce8e6;color:#5c0a05}
.cmce-match.cmce-below{opacity:.6}
.cmce-match.cmce-doubtful{border-style:dashed;border-color:#e37400}
.cmce-doubt-tag{color:#b06000;font-weight:600;white-space:nowrap}
.cmce-verdict.cmce-doubtful{background:#fef7e0;color:#5c3c00}
.cmce-meta{min-width:0}
.cmce-label{font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.cmce-members{font-size:.7rem;opacity:.8}
.cmce-empty{font-size:.8rem;opacity:.7}
#overview .caption-label{font-size:11px;padding:1px 4px;max-width:calc(100% - 6px);white-space:normal;line-height:1.25}
"""

# The browser keeps the folder structure of a folder upload only in webkitRelativePath;
# remember it so that folder names can become identity labels.
HEAD = """<script>
window.cmceFolderPaths = [];
document.addEventListener("change", (e) => {
  const t = e.target;
  if (t && t.tagName === "INPUT" && t.type === "file" && t.webkitdirectory) {
    window.cmceFolderPaths = Array.from(t.files).map((f) => f.webkitRelativePath || f.name);
  }
}, true);
</script>"""
FOLDER_PATHS_JS = ("(...args) => { args[2] = (window.cmceFolderPaths || []).join('\\n'); "
                   "window.cmceFolderPaths = []; return args; }")


# --------------------------------------------------------------------------- models and sessions


SHIPPED = shipped_bundles(BUNDLES)
EVALUATIONS = story.read_evaluations(ROOT / "docs", SHIPPED)  # the shipped held-out evaluations, per bundle


def _shipped_name(engine: FaceEngine | None) -> str | None:
    """The picker's value for an engine: the name of its shipped bundle (None: a Hub or other bundle)."""
    if engine is None or engine.bundle.source.startswith("hf://"):
        return None
    source = Path(engine.bundle.source).resolve()
    return next((n for n, b in SHIPPED.items() if b.path.resolve() == source), None)


ENGINES = Engines(max_bundle_bytes=SERVER.max_bundle_bytes, device=os.environ.get("CMCE_DEVICE") or None)


SESSIONS = SessionRegistry()


def _register(session: Session, request: gr.Request | None) -> Session:
    return SESSIONS.register(session, getattr(request, "session_hash", None))


def _open_session(engine: FaceEngine) -> Session:
    return Session.open(engine, LIMITS, SERVER, TEMP)


def _session(state: Session | None, request: gr.Request | None) -> Session:
    """This browser's session, opened on the default bundle on first use."""
    if state is not None and not state.closed:
        return state
    if ENGINES.default is None:
        raise gr.Error(f"No bundle is loaded ({ENGINES.default_error}). Load one under 'Model bundle'.")
    return _register(_open_session(ENGINES.default), request)


def _expire(session: Session | None) -> None:
    """delete_callback of the session state: idle for SESSION_TTL_S, or gone an hour after unload."""
    SESSIONS.expire(session)


def _unload(request: gr.Request) -> None:
    """The tab was closed or reloaded: drop its session now."""
    SESSIONS.drop(request.session_hash)


def _rejected(gallery: Gallery, reject_by: str, rate: float | None, threshold: float | None,
              score: str | None = None):
    """Rejection mask from the controls: none (the default: doubtful faces are marked, not
    rejected), the score's calibrated threshold, a typed threshold or a rate."""
    score = score if score in QUALITY_SCORES else None
    if reject_by not in REJECT_BY[1:]:
        return np.zeros(len(gallery.entries), bool)
    try:
        if reject_by == "rate" and rate is not None:
            return gallery.rejected(rate=float(rate), quality=score)
        if reject_by == "threshold" and threshold is not None:
            return gallery.rejected(threshold=float(threshold), quality=score)
        return gallery.rejected(quality=score)  # the score's calibrated threshold in this session's bundle
    except CmceError as e:
        raise gr.Error(str(e)) from e


def _calibrated_threshold(engine: FaceEngine | None, score: str | None = None) -> float | None:
    """A score's calibrated rejection threshold, rounded for the Number widget (None: not calibrated)."""
    return display.readable_number(engine.bundle.calibration.threshold_for(score)) if engine else None


def _threshold_update(engine: FaceEngine | None, score: str | None) -> Any:
    score = score if score in QUALITY_SCORES else None
    kind = score or (engine.bundle.calibration.quality.kind if engine else "disagreement")
    t = _calibrated_threshold(engine, score)
    return gr.update(value=t, info=display.threshold_help(kind, t))


def _score_choices(engine: FaceEngine | None) -> list[tuple[str, str]]:
    kind = engine.bundle.calibration.quality.kind if engine else "?"
    kinds = engine.bundle.calibration.quality.kinds if engine else QUALITY_SCORES
    return [(f"bundle's choice ({kind})", BUNDLE_SCORE)] + [(k, k) for k in kinds]


def _rejection_defaults(engine: FaceEngine) -> tuple[Any, Any, Any, Any]:
    return (gr.update(value=REJECT_BY[0]), gr.update(value=engine.bundle.calibration.rejection_rate),
            _threshold_update(engine, None),
            gr.update(choices=_score_choices(engine), value=BUNDLE_SCORE,
                      label=display.score_choice_label(engine.bundle)))


def pick_score(score: str, state: Session | None, request: gr.Request):
    """Another rejection score: its own calibrated threshold, in its own unit."""
    session = _session(state, request)
    return _threshold_update(session.engine, score)


def typed_threshold() -> Any:
    """A threshold typed in the box: reject by it."""
    return gr.update(value="threshold")


# --------------------------------------------------------------------------- handlers


def load_bundle_ui(repo_id: str, revision: str, state: Session | None, request: gr.Request,
                   progress=gr.Progress()):
    """Switch this session to another bundle, keeping its gallery.

    ``repo_id`` is the name of a bundle shipped in assets/bundles/ (``facenet-query``), a Hub
    id (``org/name``, at ``revision``) or empty for the default bundle. The gallery is
    re-projected into the new bundle's space from its stored embeddings: no photo is read
    again. If the new bundle cannot serve it (no backbone in common), the current bundle
    and gallery stay.

    Returns the session, the bundle card, a note on what happened, and the new bundle's
    rejection defaults.
    """
    target, rev = (repo_id or "").strip() or None, (revision or "").strip() or None
    shipped = SHIPPED.get(target or "")
    if shipped is not None:  # shipped bundles are always allowed
        target, rev = str(shipped.path), None
    elif target and Path(target).expanduser().exists() and not ALLOWED.allows_folder(target):
        raise gr.Error("Type a Hub id of the form org/name (local folders need CMCE_ALLOW_LOCAL_BUNDLES=1 "
                       "or their path in CMCE_BUNDLES).")
    keep = gr.update()
    unchanged = (keep,) * 4  # reject_by, rate, threshold, score unchanged
    progress(0.1, desc=f"Loading {(repo_id or '').strip() or 'the default bundle'} (Hub download if needed)")
    try:
        if target and shipped is None and (refused := ALLOWED.refusal(target)):
            raise LimitError(refused)
        if state is not None and not state.closed:
            state.bundle_loads.check(1)  # per session: CMCE_BUNDLE_LOADS_PER_HOUR (charged on a switch)
        if target and shipped is None and not ENGINES.cached(target, rev):
            HUB_LOADS.take(1)  # whole server: bundles from outside assets/ fetched per hour
        engine = ENGINES.load(target, rev) if target or rev else (ENGINES.default or ENGINES.load(None))
    except CmceError as e:  # refused, unreachable Hub, missing repo, broken bundle: keep the current one
        gr.Warning(f"{e}. The current bundle stays in use.", duration=None)
        return state, keep, f"**Not loaded:** {e}. The current bundle stays in use.", *unchanged
    progress(0.8, desc="Models loaded")
    card = display.bundle_markdown(bundle_summary(engine.bundle))
    if state is None or state.closed:
        session = _register(_open_session(engine), request)
        session.bundle_loads.charge(1)
        return session, card, "Bundle loaded.", *_rejection_defaults(engine)
    with state.busy:
        if state.engine is engine:
            return state, keep, "This bundle is already in use.", *unchanged
        if len(state.gallery):
            progress(0.9, desc="Re-projecting the gallery into the new bundle's space (no photo is read)")
            try:
                gallery = state.gallery.reproject(engine)
            except CmceError as e:  # no backbone in common: the gallery stays with the current bundle
                gr.Warning(f"{e}. The current bundle and gallery stay in use.", duration=None)
                return (state, keep, f"**Not switched:** {e}. The current bundle and gallery stay in use.",
                        *unchanged)
            note = display.reprojection_markdown(gallery.load_report, _shipped_name(engine) or engine.bundle.source,
                                                 engine.bundle.query_model)
        else:
            gallery, note = Gallery(engine, LIMITS), "Bundle loaded; the gallery is empty."
        state.engine, state.gallery, state.risk_cache = engine, gallery, None
        state.bundle_loads.charge(1)
    logger.info("session switched to bundle %s: %s", engine.bundle.source, note)
    return state, card, note, *_rejection_defaults(engine)


def pick_bundle(name: str | None, state: Session | None, request: gr.Request, progress=gr.Progress()):
    """The bundle picker: switch to a shipped bundle by name (see ``load_bundle_ui``)."""
    current = state.engine if state is not None and not state.closed else ENGINES.default
    if not name or name == _shipped_name(current):  # picked again: nothing to do, nothing to say
        return state, *(gr.update(),) * 6  # card, note, reject_by, rate, threshold, score unchanged
    return load_bundle_ui(name, "", state, request, progress)


def picked_bundle(state: Session | None):
    """The picker's value after a switch (or a failed one): the session's shipped bundle, if any."""
    return gr.update(value=_shipped_name(state.engine if state is not None and not state.closed else ENGINES.default))


def _relative_names(folder: list[str], folder_paths: str | None) -> list[str]:
    """Pair the uploaded folder files with the relative paths the browser reported.

    Uploads keep the browser's order; if some files were dropped on the way, pair by file name.
    """
    rels = [r.strip() for r in (folder_paths or "").splitlines() if r.strip()]
    same = sum(Path(r).name == Path(p).name for r, p in zip(rels, folder))
    if len(rels) == len(folder) and 2 * same >= len(folder):  # names the server cleaned may differ
        return rels
    queue: dict[str, list[str]] = {}
    for rel in rels:
        queue.setdefault(Path(rel).name, []).append(rel)
    return [queue[Path(p).name].pop(0) if queue.get(Path(p).name) else Path(p).name for p in folder]


def _link_or_copy(src: str, dst: Path) -> None:
    """Gradio keeps one cached file per content, shared by every session that uploads the same
    bytes: take a hard link (or a copy) and leave the cached file to Gradio's clean-up, so that a
    concurrent session's upload of the same photo stays readable."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@gpu
def index_gallery(files: list[str] | None, folder: list[str] | None = None, folder_paths: str | None = None,
                  state: Session | None = None, request: gr.Request = None, progress=gr.Progress()):
    """Add uploaded images, archives and folders to this session's gallery.

    Returns the session, a markdown report and the report as a dict.
    """
    session = _session(state, request)
    files, folder = list(files or []), list(folder or [])
    if not files and not folder:
        gr.Warning("Choose some images, a zip/tar archive or a folder first.")
        return session, "Nothing uploaded yet.", {}
    named = [(Path(p).name, p) for p in files] + list(zip(_relative_names(folder, folder_paths), folder))
    try:  # request cap and per-session quotas, before any file is read (cmce.io.limits)
        size = check_request_bytes((os.path.getsize(p) for p in {p for _, p in named}), SERVER.max_request_bytes)
        session.added_faces.check(1)
        session.indexed_bytes.take(size, format_amount=format_bytes)
    except (CmceError, OSError) as e:
        raise gr.Error(str(e) if isinstance(e, CmceError) else f"Could not read the uploaded files ({e})") from e
    batch = Path(tempfile.mkdtemp(dir=session.workdir, prefix="upload-"))
    try:
        moved, seen = [], {}
        for n, (name, path) in enumerate(named):  # the session works on its own copy of each upload
            if path not in seen:  # the same upload twice: the gallery reports the duplicate
                seen[path] = batch / f"{n:05d}{''.join(Path(name).suffixes[-2:]) or '.bin'}"
                _link_or_copy(path, seen[path])
            moved.append((name, seen[path]))
        progress(0.0, desc=f"Reading {len(moved)} files")
        upload = collect_uploads(moved, batch / "extracted")
        with session.busy:
            report = session.gallery.add_images(upload.items, progress=lambda f, m: progress(f, desc=m))
        session.added_faces.charge(report.added)
    except CmceError as e:
        raise gr.Error(str(e)) from e
    except OSError as e:
        raise gr.Error(f"Could not read the uploaded files ({e.strerror or e}); please upload them again.") from e
    finally:
        shutil.rmtree(batch, ignore_errors=True)
    return (session, display.index_report_markdown(report, upload, session.gallery),
            display.index_report_dict(report, upload, session.gallery))


@gpu
def load_example_gallery(name: str, state: Session | None, request: gr.Request, progress=gr.Progress()):
    """Replace this session's gallery with an example gallery (indexed once per bundle, then copied)."""
    session = _session(state, request)
    folder = EXAMPLE_GALLERIES.get(name)
    if folder is None:
        raise gr.Error(f"Unknown example gallery {name!r}; choose one of {list(EXAMPLE_GALLERIES)}")
    progress(0.0, desc="Loading the example gallery")
    try:
        with session.busy:
            saved, report, upload = _EXAMPLE_CACHE.get(session.engine, folder, lambda f, m: progress(f, desc=m))
            session.gallery = Gallery.load(saved, session.engine, LIMITS)
    except CmceError as e:
        raise gr.Error(str(e)) from e
    session.risk_cache = None
    return (session, display.index_report_markdown(report, upload, session.gallery),
            display.index_report_dict(report, upload, session.gallery))


def open_bundle_example(bundle: str, gallery_name: str, query_path: str, state: Session | None,
                        request: gr.Request, progress=gr.Progress()):
    """One click on a bundle's example: switch to the bundle, load the example gallery, set the query.

    Returns the outputs of ``load_bundle_ui`` and ``load_example_gallery``, then the query photo
    (setting it searches).
    """
    switched = pick_bundle(bundle, state, request, progress)
    loaded = load_example_gallery(gallery_name, switched[0], request, progress)
    return (loaded[0], *switched[1:], *loaded[1:], query_path)


_EXAMPLE_CACHE = ExampleCache(TEMP.mkdtemp("examples"), LIMITS)


def clear_gallery(state: Session | None, request: gr.Request):
    """Empty this session's gallery."""
    session = _session(state, request)
    with session.busy:
        session.gallery = Gallery(session.engine, LIMITS)
    session.risk_cache = None
    return session, "Gallery cleared.", {}


def refresh_overview(state: Session | None, order: str, reject_by: str, rate: float, threshold: float,
                     score: str | None = None):
    """Thumbnails of every entry (rejected ones framed red, doubtful ones amber) and a summary."""
    if state is None or state.closed or not len(state.gallery):
        return [], display.overview_summary(None, [])
    rejected = _rejected(state.gallery, reject_by, rate, threshold, score)
    return (display.overview_tiles(state.gallery, rejected, order),
            display.overview_summary(state.gallery, rejected, score=score if score in QUALITY_SCORES else None))


def refresh_plots(state: Session | None, reject_by: str, rate: float, threshold: float, score: str | None = None):
    """Risk-coverage curve and quality-score histogram of this session's gallery."""
    if state is None or state.closed or not len(state.gallery):
        return None, None, "Index a labelled gallery to see how rejection works on it."
    g = state.gallery
    key = (len(g.entries), len(g))
    if state.risk_cache is None or state.risk_cache[:2] != key:
        state.risk_cache = (*key, gallery_risk_coverage(g))
    rc = state.risk_cache[2]
    live = g.positions
    rejected = _rejected(g, reject_by, rate, threshold, score)[live]
    quality = g.bundle.calibration.quality_model(score if score in QUALITY_SCORES else None)
    hist = display.uncertainty_figure(g.quality_scores(quality.kind)[live], rejected, rc.is_query & ~rc.hits,
                                      quality.description, log_scale=quality.log_axis,
                                      threshold=g.bundle.calibration.threshold_for(quality.kind))
    note = display.risk_coverage_note(rc, g)
    if not rc.usable:
        return None, hist, note
    return display.risk_coverage_figure(rc, float(rejected.mean()), quality.kind), hist, note


def prepare_query(image: str | None):
    """A new query photo: reset the face choice and guess its identity from the file name."""
    return gr.update(value=0), (query_label(image) or "") if image else ""


@gpu
def search(image: str | None, face: int | None = 0, k: int = 5, identity: str | None = None,
           reject_by: str = REJECT_BY[0], rate: float | None = None, threshold: float | None = None,
           score: str | None = None, unknown_by: str = UNKNOWN_BY[0], state: Session | None = None,
           request: gr.Request = None):
    """Search this session's gallery with one face of a photo, in every view.

    ``unknown_by`` (``unknown.UNKNOWN_BY``) says when a column answers "Unknown": ``normalised``
    (the bundle's default), ``strict`` (never lowered on a gallery of poor photos) or
    ``similarity`` (the raw similarity threshold).

    Returns the photo with numbered face boxes, the face choice, the side-by-side
    results (HTML), the results as a dict, and the session.
    """
    if image is None:
        return None, gr.update(), "", {}, state
    session = _session(state, request)
    name = Path(image).name
    try:
        face_index = int(face or 0)
    except (TypeError, ValueError):
        raise gr.Error(f"Face must be a face number from the list, got {face!r}") from None
    label = (identity or "").strip() or query_label(name)
    if unknown_by not in UNKNOWN_BY:
        raise gr.Error(f"unknown_by must be one of {', '.join(UNKNOWN_BY)}, got {str(unknown_by)[:40]!r}")
    try:
        img = load_image(image, name=name)
        rejected = _rejected(session.gallery, reject_by, rate, threshold, score)
        result = session.gallery.search_image(img, face_index=face_index, k=int(k), rejected=rejected, name=name,
                                              unknown_by=unknown_by)
    except CmceError as e:  # no face, unreadable photo, empty gallery: reported, not a crash
        gr.Warning(str(e))
        return (None, gr.update(choices=display.face_choices(1), value=0), f"<p>{html.escape(str(e))}</p>",
                {"error": str(e)}, session)
    return (display.annotate_faces(img, result.faces, result.chosen),
            gr.update(choices=display.face_choices(len(result.faces)), value=result.chosen),
            display.result_html(result, session.gallery, label, rejected),
            {**display.result_dict(result, session.engine.bundle.query_model, label,
                                   session.engine.bundle.calibration), "unknown_by": unknown_by},
            session)


# --------------------------------------------------------------------------- layout


@dataclass
class _Page:
    """The page's components, as the section builders create them (wired by ``_wire``)."""

    state: Any = None
    picker: Any = None
    bundle_note: Any = None
    bundle_md: Any = None
    hub_id: Any = None
    hub_rev: Any = None
    load_btn: Any = None
    bundle_examples: list = field(default_factory=list)
    example_bundle: Any = None
    example_gallery: Any = None
    example_query: Any = None
    files: Any = None
    folder: Any = None
    folder_paths: Any = None
    index_btn: Any = None
    clear_btn: Any = None
    report_md: Any = None
    example_name: Any = None
    gallery_examples: Any = None
    report_json: Any = None
    order: Any = None
    reject_by: Any = None
    rate: Any = None
    score: Any = None
    threshold: Any = None
    overview_md: Any = None
    overview: Any = None
    query: Any = None
    faces_img: Any = None
    face: Any = None
    identity: Any = None
    k: Any = None
    unknown_by: Any = None
    search_btn: Any = None
    results: Any = None
    results_json: Any = None
    plots_note: Any = None
    rc_plot: Any = None
    hist_plot: Any = None


def _bundle_section(page: _Page, engine: FaceEngine | None) -> None:
    """The bundle picker, its note, and the details / Hub loader."""
    page.picker = gr.Dropdown([(b.label, n) for n, b in SHIPPED.items()], value=_shipped_name(engine),
                         label="Bundle: which face models search your photos",
                         info="Switching keeps your gallery: it is re-projected into the new bundle's space "
                              "without reading a photo again.", elem_id="bundle-picker")
    page.bundle_note = gr.Markdown(elem_id="bundle-note")
    with gr.Accordion("Model bundle: details, or one from the Hub", open=False):
        page.bundle_md = gr.Markdown(
            display.bundle_markdown(bundle_summary(engine.bundle)) if engine
            else f"**No bundle loaded** ({ENGINES.default_error}). Set `CMCE_BUNDLE` or load one below."
        )
        with gr.Row(equal_height=True):
            page.hub_id = gr.Textbox(label="Hub bundle id", scale=3, elem_id="hub-id",
                                placeholder="org/name, or a shipped bundle's name (empty = the default bundle)")
            page.hub_rev = gr.Textbox(label="Revision (optional)", placeholder="main, a tag or a commit", scale=2)
            page.load_btn = gr.Button("Load bundle", scale=1)



def _story_section(page: _Page) -> None:
    """"What the ensemble buys": one tab per shipped bundle, its examples, story and plots."""
    page.bundle_examples = []  # (gr.Examples, ...) of each bundle's tab, wired below
    with gr.Accordion("What the ensemble buys: measured on faces never seen in training, and shown in one click",
                      open=True, elem_id="story"):
        gr.Markdown(story.READING_GUIDE, elem_classes="cmce-hint")
        page.example_bundle, page.example_gallery, page.example_query = (gr.Textbox(visible=False) for _ in range(3))
        with gr.Tabs():  # the bundle where the ensemble lifts its query model most comes first
            for name in story.order_by_lift(SHIPPED, EVALUATIONS):
                reports = [r for r in EVALUATIONS if r.bundle == name]
                with gr.Tab(story.tab_title(name, reports), elem_id=f"story-{name}"):
                    with gr.Row():
                        with gr.Column(scale=3):
                            shows = EXAMPLE_SET.by_bundle.get(name, ())
                            if shows:
                                gr.Markdown(story.examples_markdown(EXAMPLE_SET, name))
                                page.bundle_examples.append(gr.Examples(
                                    [[name, e.gallery, str(e.query)] for e in shows],
                                    inputs=[page.example_bundle, page.example_gallery, page.example_query],
                                    example_labels=[EXAMPLE_SET.label(e) for e in shows],
                                    label=f"One click: switch to {name}, load the gallery, search the query",
                                    api_visibility="private"))
                            gr.Markdown(story.story_markdown(reports))
                        with gr.Column(scale=2):  # one risk-coverage plot per gallery kind, stacked
                            for r in (r for r in reports if r.plot is not None):
                                gr.Image(str(r.plot), label=f"Recall@1 vs share rejected, {r.gallery_kind} gallery",
                                         interactive=False, height=300)



def _gallery_section(page: _Page, engine: FaceEngine | None) -> None:
    """Step 1: uploads, the ingest report, example galleries, rejection controls and the overview."""
    cal = engine.bundle.calibration if engine else None
    gr.Markdown("## 1 · Build a gallery")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                page.files = gr.File(label="Images or zip/tar archives", file_count="multiple",
                                file_types=["image", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz"],
                                height=150, elem_id="gallery-files")
                page.folder = gr.File(label="A folder (one sub-folder per person)", file_count="directory",
                                 height=150, elem_id="gallery-folder")
            page.folder_paths = gr.Textbox("", visible=False)
            with gr.Row():
                page.index_btn = gr.Button("Index faces", variant="primary", elem_id="index-btn")
                page.clear_btn = gr.Button("Clear gallery", elem_id="clear-btn")
            gr.Markdown("Labels come from folder names, or from `Name_0001.jpg`-style file names.",
                        elem_classes="cmce-hint")
        with gr.Column(scale=2):
            page.report_md = gr.Markdown("No gallery yet.", elem_id="index-report")
            page.example_name = gr.Textbox(visible=False)
            page.gallery_examples = gr.Examples([[n] for n in EXAMPLE_GALLERIES], inputs=[page.example_name],
                                           label="Example gallery (one click)", api_visibility="private")
    page.report_json = gr.JSON(visible=False)

    with gr.Row(equal_height=True):
        page.order = gr.Dropdown(list(display.ORDERS), value=display.ORDERS[0], label="Sort", scale=2)
        page.reject_by = gr.Radio([(REJECT_BY_LABELS[v], v) for v in REJECT_BY], value=REJECT_BY[0],
                             label="Reject by", scale=2, elem_id="reject-by",
                             info="Rejected faces never match; a query whose best match is rejected answers "
                                  "Unknown.")
        page.rate = gr.Slider(0.0, 0.9, value=cal.rejection_rate if cal else 0.1, step=0.01,
                         label="Rejection rate (share of the gallery)", scale=3, elem_id="reject-rate")
        page.score = gr.Dropdown(_score_choices(engine), value=BUNDLE_SCORE,
                            label=display.score_choice_label(engine.bundle) if engine else "Rejection score",
                            scale=2, elem_id="reject-score")
        page.threshold = gr.Number(value=_calibrated_threshold(engine), step=0.001,
                              label="Threshold (reject quality score above)", scale=2, elem_id="reject-threshold",
                              info=display.threshold_help(cal.quality.kind, _calibrated_threshold(engine))
                              if cal else None)
    page.overview_md = gr.Markdown(display.overview_summary(None, []), elem_id="overview-summary")
    page.overview = gr.Gallery(label="Gallery overview", columns=7, height=360, object_fit="contain",
                          format="jpeg", elem_id="overview", buttons=[])



def _search_section(page: _Page) -> None:
    """Step 2: the query photo, its faces, the search options and the results."""
    gr.Markdown("## 2 · Search")
    with gr.Row():
        with gr.Column(scale=2):
            page.query = gr.Image(label="Query photo", type="filepath", sources=["upload", "webcam", "clipboard"],
                             height=260, elem_id="query-image")
            gr.Examples([[str(p)] for p, _ in EXAMPLE_QUERIES], inputs=[page.query], label="Example queries",
                        example_labels=[t for _, t in EXAMPLE_QUERIES], api_visibility="private")
        with gr.Column(scale=2):
            page.faces_img = gr.Image(label="Faces found (numbered, largest first)", interactive=False, height=260,
                                 elem_id="faces-image")
        with gr.Column(scale=1, min_width=200):
            page.face = gr.Dropdown(display.face_choices(1), value=0, label="Face", allow_custom_value=True,
                               elem_id="face-choice")
            page.identity = gr.Textbox("", label="Who is it? (optional)", placeholder="from Name_0003.jpg",
                                  elem_id="query-identity")
            page.k = gr.Slider(1, 10, value=5, step=1, label="Matches per column")
            page.unknown_by = gr.Radio([(UNKNOWN_BY_LABELS[v], v) for v in UNKNOWN_BY], value=UNKNOWN_BY[0],
                                  label="Say Unknown", elem_id="unknown-by",
                                  info="in galleries of more than 50 people; normal is lowered on a gallery "
                                       "of poor photos, strict never is")
            page.search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
    page.results = gr.HTML("<p>Results appear here, one column per model.</p>", elem_id="results")
    with gr.Accordion("Results as data (what the API returns)", open=False):
        page.results_json = gr.JSON()



def _plots_section(page: _Page) -> None:
    """Step 3: rejection on the user's own gallery (the paper's metric)."""
    gr.Markdown("## 3 · Does rejection help on your gallery? (the paper's metric)")
    page.plots_note = gr.Markdown("Index a labelled gallery to see how rejection works on it.")
    with gr.Row():
        page.rc_plot = gr.Plot(label="Recall@1 vs rejection", elem_id="risk-plot")
        page.hist_plot = gr.Plot(label="Quality score", elem_id="hist-plot")



def _wire(page: _Page) -> None:
    """Every event of the page: what runs on which input, in which queue, under which API name."""
    rejection = [page.reject_by, page.rate, page.threshold, page.score]
    search_inputs = [page.query, page.face, page.k, page.identity, *rejection, page.unknown_by, page.state]
    search_outputs = [page.faces_img, page.face, page.results, page.results_json, page.state]
    upload_outputs = [page.state, page.report_md, page.report_json]

    def after_gallery_change(event):
        return (event.then(refresh_overview, [page.state, page.order, *rejection], [page.overview, page.overview_md],
                           api_visibility="private")
                .then(refresh_plots, [page.state, *rejection], [page.rc_plot, page.hist_plot, page.plots_note],
                      api_visibility="private"))

    def after_bundle_switch(event, search_name: str):
        """Picker in step with the session, the query searched again (the new bundle's columns), then
        the overview and plots."""
        synced = event.then(picked_bundle, [page.state], [page.picker], api_visibility="private")
        return after_gallery_change(synced.then(search, search_inputs, search_outputs, api_name=search_name,
                                                api_visibility="private", **SEARCH_QUEUE))

    bundle_outputs = [page.state, page.bundle_md, page.bundle_note, *rejection]
    indexed = page.index_btn.click(index_gallery, [page.files, page.folder, page.folder_paths, page.state], upload_outputs,
                              js=FOLDER_PATHS_JS, api_name="index_gallery", **INDEX_QUEUE)
    after_gallery_change(indexed.then(lambda: (None, None, ""), None, [page.files, page.folder, page.folder_paths],
                                      api_visibility="private"))
    after_gallery_change(page.gallery_examples.load_input_event.then(
        load_example_gallery, [page.example_name, page.state], upload_outputs, api_name="load_example_gallery",
        **INDEX_QUEUE))
    for examples in page.bundle_examples:  # bundle, gallery and query photo, then a search (the photo may be unchanged)
        after_gallery_change(examples.load_input_event.then(
            open_bundle_example, [page.example_bundle, page.example_gallery, page.example_query, page.state],
            [*bundle_outputs, page.report_md, page.report_json, page.query], api_visibility="private", **INDEX_QUEUE)
            .then(picked_bundle, [page.state], [page.picker], api_visibility="private")
            .then(search, search_inputs, search_outputs, api_name="search_after_example",
                  api_visibility="private", **SEARCH_QUEUE))
    after_gallery_change(page.clear_btn.click(clear_gallery, [page.state], [page.state, page.report_md, page.report_json],
                                         api_visibility="private"))
    after_bundle_switch(page.load_btn.click(load_bundle_ui, [page.hub_id, page.hub_rev, page.state], bundle_outputs,
                                       api_name="load_bundle", **BUNDLE_QUEUE), "search_after_load_bundle")
    after_bundle_switch(page.picker.select(pick_bundle, [page.picker, page.state], bundle_outputs, api_visibility="private",
                                      **BUNDLE_QUEUE), "search_after_pick_bundle")
    page.score.input(pick_score, [page.score, page.state], [page.threshold], api_visibility="private")
    page.threshold.input(typed_threshold, None, [page.reject_by], api_visibility="private")
    gr.on([page.order.change, page.reject_by.change, page.rate.change, page.threshold.change, page.score.change], refresh_overview,
          [page.state, page.order, *rejection], [page.overview, page.overview_md], trigger_mode="always_last",
          api_visibility="private").then(
        refresh_plots, [page.state, *rejection], [page.rc_plot, page.hist_plot, page.plots_note], trigger_mode="always_last",
        api_visibility="private")
    page.search_btn.click(search, search_inputs, search_outputs, api_name="search", **SEARCH_QUEUE)
    page.query.change(prepare_query, [page.query], [page.face, page.identity], api_visibility="private").then(
        search, search_inputs, search_outputs, api_name="search_new_photo", api_visibility="private",
        **SEARCH_QUEUE)
    page.face.input(search, search_inputs, search_outputs, api_name="search_other_face", api_visibility="private",
               **SEARCH_QUEUE)
    page.unknown_by.input(search, search_inputs, search_outputs, api_name="search_unknown_by", api_visibility="private",
                     **SEARCH_QUEUE)


def create_demo(engine: FaceEngine | None) -> gr.Blocks:
    """The Blocks app; ``engine`` gives the defaults shown (None: no bundle could be loaded)."""
    page = _Page()
    with gr.Blocks(title="CMCE Face Search", delete_cache=(1800, 3600)) as demo:
        page.state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_expire)
        gr.Markdown(
            "# CMCE Face Search\n"
            "Search your own photos with an ensemble of face models mapped into one space "
            "(CMCE). Every gallery face shows its **uncertainty** (how much the models disagree "
            "on it); faces the bundle's quality score doubts are marked **doubtful** and still searched, "
            "and every column says why it answers **Unknown**. You can also **reject** faces: a query "
            "whose best match is rejected answers Unknown, never the next person. Your gallery lives "
            "only in this browser session."
        )
        _bundle_section(page, engine)
        _story_section(page)
        _gallery_section(page, engine)
        _search_section(page)
        _plots_section(page)
        _wire(page)
        demo.unload(_unload)
    return demo


# Fair queueing: indexing, searching and bundle loads wait in separate queues with their own
# concurrency, so a long indexing job never holds a search slot; past CMCE_QUEUE_SIZE waiting
# requests a caller is told the app is busy ("try again") at once.
INDEX_QUEUE = {"concurrency_id": "index", "concurrency_limit": SERVER.index_concurrency}
SEARCH_QUEUE = {"concurrency_id": "search", "concurrency_limit": SERVER.search_concurrency}
BUNDLE_QUEUE = {"concurrency_id": "bundle", "concurrency_limit": 1}
# state_session_capacity bounds Gradio's per-session copies of the page's configuration (CMCE_MAX_SESSIONS)
LAUNCH_KWARGS = {"css": CSS, "head": HEAD, "max_file_size": SERVER.max_file_bytes,
                 "state_session_capacity": SERVER.max_sessions}


def _exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (a Space restarting, ``kill``) exits like Ctrl-C, so the temporary folders are removed."""
    raise SystemExit(0)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logger.info("limits: %s", "; ".join(f"{what}: {value}" for what, value in SERVER.describe()))
    engine = ENGINES.load_default(os.environ.get("CMCE_BUNDLE_REVISION") or None)
    if engine is not None and not ZERO_GPU:  # index the example galleries while the page loads
        threading.Thread(target=_EXAMPLE_CACHE.preload, args=(engine, EXAMPLE_GALLERIES.values()), daemon=True).start()
    demo = create_demo(engine)
    demo.queue(default_concurrency_limit=2, max_size=SERVER.queue_size).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", 7860))),
        **LAUNCH_KWARGS,
    )


if __name__ == "__main__":
    main()
