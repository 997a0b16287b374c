"""The demo's handlers: what each control of ``app.py`` runs, over one server's sessions and engines.

``DemoServer`` holds what a running app shares between its browser sessions: the shipped bundles, the
engine cache, the session registry, the limits and quotas read from the environment, the temporary
folders and the example-gallery cache. Its public methods are the Gradio event handlers; ``app.py``
lays out the page and wires them (their parameter names are the API's). Needs the ``app`` extra
(gradio).
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from cmce.errors import CmceError, LimitError
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.gallery.portable import export_gallery, import_gallery
from cmce.gallery.verdict import query_verdict, searchable_labels
from cmce.io.images import format_bytes, load_image
from cmce.io.limits import (
    BundleAllowList,
    ServerLimits,
    SlidingQuota,
    check_request_bytes,
)
from cmce.io.files import link_or_copy
from cmce.io.uploads import collect_uploads, preview_labels, query_label, relative_names
from cmce.method.answers import person_presence
from cmce.method.bundle_model import bundle_summary
from cmce.method.engine import FaceEngine
from cmce.method.ensemble import QUALITY_SCORES, check_threshold
from cmce.method.report import gallery_risk_coverage
from cmce.method.scoreboard import gallery_scoreboard
from cmce.method.unknown import UNKNOWN_BY
from cmce.serve import display
from cmce.serve.fairness import ClientGate, ClientLimits, TakeTurns
from cmce.serve.gate import Restore, restore_state
from cmce.serve.guard import clean, clip, counted, user_error
from cmce.serve.inputs import rejection_rate, text_value, upload_paths, whole_number
from cmce.serve.match_photo import match_photo
from cmce.serve.preview import FacesPreview
from cmce.serve.sessions import (
    Engines,
    ExampleCache,
    Session,
    SessionRegistry,
    ShippedBundle,
    photo_share,
)
from cmce.serve.workdirs import TempFolders

__all__ = ["BUNDLE_SCORE", "OVERVIEW_FIRST", "REJECT_BY", "DemoServer", "calibrated_threshold", "prepare_query",
           "typed_threshold"]

logger = logging.getLogger("cmce.app")

# none: reject nothing, mark the doubtful faces (searched); calibrated: the session bundle's own threshold
# for the score; threshold / rate: the user's
REJECT_BY = ("none", "calibrated", "threshold", "rate")
BUNDLE_SCORE = "bundle"  # the rejection-score choice that follows the session's bundle
OVERVIEW_FIRST = 24  # faces the overview shows until "show all" is ticked


def calibrated_threshold(engine: FaceEngine | None, score: str | None = None) -> float | None:
    """A score's calibrated rejection threshold, rounded for the Number widget (None: not calibrated)."""
    return display.readable_number(engine.bundle.calibration.threshold_for(score)) if engine else None


def typed_threshold() -> Any:
    """A threshold typed in the box: reject by it."""
    return gr.update(value="threshold")


def prepare_query(image: str | None):
    """A new query photo: reset the face choice and guess its identity from the file name."""
    return gr.update(value=0), (query_label(image) or "") if image else ""


class DemoServer:
    """One app's shared state, and the handlers of its page.

    Args:
        shipped: the bundles shipped in assets/bundles/, by name (``sessions.shipped_bundles``).
        example_galleries: example gallery name -> its folder.
        limits: per-gallery caps (``GalleryLimits.from_env``).
        server: server-wide caps and quotas (``ServerLimits.from_env``).
        allowed: which bundles from outside assets/ may be loaded.
        temp: where session and example folders go.
        gpu: wraps the handlers that embed faces (``spaces.GPU`` on a ZeroGPU Space; identity elsewhere).
        gate: the per-client limits (``cmce.serve.fairness``); sessions are capped at
            ``server.max_sessions`` and ``gate.limits.sessions_per_client``.
    """

    def __init__(self, shipped: dict[str, ShippedBundle], example_galleries: dict[str, Path], limits: GalleryLimits,
                 server: ServerLimits, allowed: BundleAllowList, temp: TempFolders,
                 gpu: Callable[[Callable], Callable] = lambda fn: fn, gate: ClientGate | None = None) -> None:
        self.shipped, self.example_galleries = shipped, example_galleries
        self.limits, self.server, self.allowed, self.temp = limits, server, allowed, temp
        self.engines = Engines(max_bundle_bytes=server.max_bundle_bytes, device=os.environ.get("CMCE_DEVICE") or None)
        self.gate = gate or ClientGate(ClientLimits())
        self.sessions = SessionRegistry(server.max_sessions, self.gate.limits.sessions_per_client)
        self.index_turns = TakeTurns(server.index_concurrency)  # indexing jobs pass their slot on between chunks
        self.hub_loads = SlidingQuota(server.bundle_loads_per_hour,
                                      what="bundle loads from outside assets/ (whole server)")
        self.example_cache = ExampleCache(temp.mkdtemp("examples"), limits)
        self.previews = FacesPreview(limits.image)  # the faces of a query on an empty gallery, detected once per photo
        # the handlers that embed faces run on the GPU where one is attached per call (also when called
        # from another handler, as open_bundle_example calls load_example_gallery)
        self.index_gallery = gpu(self.index_gallery)
        self.load_example_gallery = gpu(self.load_example_gallery)
        self.search = gpu(self.search)

    def shipped_name(self, engine: FaceEngine | None) -> str | None:
        """The picker's value for an engine: the name of its shipped bundle (None: a Hub or other bundle)."""
        if engine is None or engine.bundle.source.startswith("hf://"):
            return None
        source = Path(engine.bundle.source).resolve()
        return next((n for n, b in self.shipped.items() if b.path.resolve() == source), None)

    def _register(self, session: Session, request: gr.Request | None) -> Session:
        client = getattr(request, "client", None)
        if client is not None or getattr(request, "headers", None) is not None:
            session.client = self.gate.client(getattr(client, "host", None),
                                              {k.lower(): v for k, v in dict(request.headers or {}).items()})
        return self.sessions.register(session, getattr(request, "session_hash", None))

    def _open_session(self, engine: FaceEngine) -> Session:
        return Session.open(engine, self.limits, self.server, self.temp, photo_share(self.gate.limits, self.server))

    def _session(self, state: Session | None, request: gr.Request | None, open_new: bool = True) -> Session | None:
        """This browser's session, opened on the default bundle on first use (``open_new=False``: None
        instead, after the same checks)."""
        if state is not None and not state.closed:
            self.sessions.touch(getattr(request, "session_hash", None), state)
            return state
        key = getattr(request, "session_hash", None)
        note = self.sessions.take_note(key)  # evicted or expired: say so once, then start afresh
        if state is not None and state.dropped:
            note, state.dropped = state.dropped, None
        if note:
            raise gr.Error(note)
        if self.engines.default is None:
            raise user_error(f"No bundle is loaded ({self.engines.default_error}). Load one under 'Model bundle'.")
        return self._register(self._open_session(self.engines.default), request) if open_new else None

    def restorer(self, state_id: int) -> Restore:
        """The gate's ``restore``: before a join, Gradio's state of an open session of that client,
        pushed out of Gradio's store, is put back (the ``gr.State`` of block ``state_id`` holds the session)."""
        def restore(app: Any, session_hash: str, client: str) -> None:
            session = self.sessions.held(session_hash, client)
            if session is not None:
                restore_state(app, session_hash, state_id, session)
        return restore

    def tidy(self) -> None:
        """Housekeeping, every ``start_tidying`` interval: uploads older than their retention deleted,
        API sessions idle past their timeout closed."""
        self.gate.uploads.sweep()
        self.sessions.expire_idle(self.gate.limits.api_session_idle_s, self.gate.has_heartbeat)

    def start_tidying(self, interval_s: float | None = None) -> threading.Thread:
        """Run ``tidy`` every ``interval_s`` seconds in a daemon thread (default: 30 s, or half the upload
        retention or API-session timeout when that is shorter)."""
        limits = self.gate.limits
        interval_s = interval_s or min(30.0, limits.upload_retention_s / 2, limits.api_session_idle_s / 2)
        def loop() -> None:
            while True:
                time.sleep(interval_s)
                try:
                    self.tidy()
                except Exception:  # noqa: BLE001 - housekeeping must outlive one failure
                    logger.exception("housekeeping failed")

        thread = threading.Thread(target=loop, name="cmce-tidy", daemon=True)
        thread.start()
        return thread

    def expire(self, session: Session | None) -> None:
        """delete_callback of the session state: idle for SESSION_TTL_S, or gone an hour after unload."""
        self.sessions.expire(session)

    def unload(self, request: gr.Request) -> None:
        """The tab was closed or reloaded: drop its session now."""
        self.sessions.drop(request.session_hash)

    def _rejected(self, gallery: Gallery, reject_by: str, rate: float | None, threshold: float | None,
                  score: str | None = None):
        """Rejection mask from the controls: none (the default: doubtful faces are marked, not
        rejected), the score's calibrated threshold, a typed threshold or a rate."""
        if reject_by not in REJECT_BY:
            raise user_error(f"Reject by must be one of {', '.join(REJECT_BY)}, got {clip(reject_by, 40)}")
        if score not in (None, BUNDLE_SCORE, *QUALITY_SCORES):
            raise user_error(f"The rejection score must be one of {', '.join((BUNDLE_SCORE, *QUALITY_SCORES))}, "
                             f"got {clip(score, 40)}")
        score = score if score in QUALITY_SCORES else None
        if reject_by == "none":
            return np.zeros(len(gallery.entries), bool)
        try:
            if reject_by == "rate" and rate is not None:
                return gallery.rejected(rate=rejection_rate(rate), quality=score)
            if reject_by == "threshold" and threshold is not None:
                kind = score or gallery.bundle.calibration.quality.kind
                return gallery.rejected(threshold=check_threshold(kind, threshold), quality=score)
            return gallery.rejected(quality=score)  # the score's calibrated threshold in this session's bundle
        except CmceError as e:
            raise user_error(f"Not rejected: {e}") from None

    def _threshold_update(self, engine: FaceEngine | None, score: str | None) -> Any:
        score = score if score in QUALITY_SCORES else None
        kind = score or (engine.bundle.calibration.quality.kind if engine else "disagreement")
        t = calibrated_threshold(engine, score)
        return gr.update(value=t, info=display.threshold_help(kind, t))

    def score_choices(self, engine: FaceEngine | None) -> list[tuple[str, str]]:
        kind = engine.bundle.calibration.quality.kind if engine else "?"
        kinds = engine.bundle.calibration.quality.kinds if engine else QUALITY_SCORES
        return [(f"bundle's choice ({kind})", BUNDLE_SCORE)] + [(k, k) for k in kinds]

    def _rejection_defaults(self, engine: FaceEngine) -> tuple[Any, Any, Any, Any]:
        return (gr.update(value=REJECT_BY[0]), gr.update(value=engine.bundle.calibration.rejection_rate),
                self._threshold_update(engine, None),
                gr.update(choices=self.score_choices(engine), value=BUNDLE_SCORE,
                          label=display.score_choice_label(engine.bundle)))

    def threshold_info(self, threshold: float | None, score: str | None, state: Session | None):
        """The help under the threshold box, for the value now in it (and a warning for a value out of range)."""
        engine = state.engine if state is not None and not state.closed else self.engines.default
        score = score if score in QUALITY_SCORES else None
        kind = score or (engine.bundle.calibration.quality.kind if engine else "disagreement")
        try:
            typed = None if threshold is None else check_threshold(kind, threshold)
        except CmceError as e:
            return gr.update(info=f"⚠ {clean(e)}: not used.")
        return gr.update(info=display.threshold_help(kind, calibrated_threshold(engine, score), typed))

    def pick_score(self, score: str, state: Session | None, request: gr.Request):
        """Another rejection score: its own calibrated threshold, in its own unit."""
        session = self._session(state, request)
        return self._threshold_update(session.engine, score)

    def load_bundle_ui(self, repo_id: str, revision: str, state: Session | None, request: gr.Request,
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
        target = text_value(repo_id, "The bundle id").strip() or None
        rev = text_value(revision, "The revision").strip() or None
        shipped = self.shipped.get(target or "")
        if shipped is not None:  # shipped bundles are always allowed
            target, rev = str(shipped.path), None
        keep = gr.update()
        unchanged = (keep,) * 4  # reject_by, rate, threshold, score unchanged
        progress(0.1, desc=f"Loading {clip((repo_id or '').strip(), 60) or 'the default bundle'} (Hub download if needed)")
        try:
            if target and shipped is None and (refused := self.allowed.refusal(target)):
                raise LimitError(refused)
            if state is not None and not state.closed:
                state.bundle_loads.check(1)  # per session: CMCE_BUNDLE_LOADS_PER_HOUR (charged on a switch)
            if target and shipped is None and not self.engines.cached(target, rev):
                self.hub_loads.take(1)  # whole server: bundles from outside assets/ fetched per hour
            engine = self.engines.load(target, rev) if target or rev else (self.engines.default or self.engines.load(None))
        except CmceError as e:  # refused, unreachable Hub, missing repo, broken bundle: keep the current one
            gr.Warning(f"{clean(e)}. The current bundle stays in use.", duration=None)
            return state, keep, f"**Not loaded:** {clean(e)}. The current bundle stays in use.", *unchanged
        progress(0.8, desc="Models loaded")
        card = display.bundle_markdown(bundle_summary(engine.bundle))
        if state is None or state.closed:
            session = self._register(self._open_session(engine), request)
            session.bundle_loads.charge(1)
            return session, card, "Bundle loaded.", *self._rejection_defaults(engine)
        with state.busy:
            if state.engine is engine:
                return state, keep, "This bundle is already in use.", *unchanged
            if len(state.gallery):
                progress(0.9, desc="Re-projecting the gallery into the new bundle's space (no photo is read)")
                try:
                    gallery = state.gallery.reproject(engine)
                except CmceError as e:  # no backbone in common: the gallery stays with the current bundle
                    gr.Warning(f"{clean(e)}. The current bundle and gallery stay in use.", duration=None)
                    return (state, keep, f"**Not switched:** {clean(e)}. The current bundle and gallery stay in use.",
                            *unchanged)
                note = display.reprojection_markdown(gallery.load_report, self.shipped_name(engine) or engine.bundle.source,
                                                     engine.bundle.query_model)
            else:
                gallery, note = Gallery(engine, self.limits), "Bundle loaded; the gallery is empty."
            state.engine = engine
            state.use_gallery(gallery, same_photos=True)
            state.bundle_loads.charge(1)
        logger.info("session switched to bundle %s: %s", engine.bundle.source, note)
        return state, card, note, *self._rejection_defaults(engine)

    def pick_bundle(self, name: str | None, state: Session | None, request: gr.Request, progress=gr.Progress()):
        """The bundle picker: switch to a shipped bundle by name (see ``load_bundle_ui``)."""
        current = state.engine if state is not None and not state.closed else self.engines.default
        if not name or name == self.shipped_name(current):  # picked again: nothing to do, nothing to say
            return state, *(gr.update(),) * 6  # card, note, reject_by, rate, threshold, score unchanged
        return self.load_bundle_ui(name, "", state, request, progress)

    def picker_info(self, name: str | None) -> str:
        """The help under the bundle picker: what the picked bundle is for (the picker's own line is short)."""
        shipped = self.shipped.get(name or "")
        return (f"{shipped.description}. " if shipped else "") + "Switching keeps your gallery (re-projected, no photo read again)."

    def picked_bundle(self, state: Session | None):
        """The picker's value after a switch (or a failed one): the session's shipped bundle, if any."""
        name = self.shipped_name(state.engine if state is not None and not state.closed else self.engines.default)
        return gr.update(value=name, info=self.picker_info(name))

    def index_gallery(self, files: list[str] | None, folder: list[str] | None = None, folder_paths: str | None = None,
                      state: Session | None = None, request: gr.Request = None, progress=gr.Progress()):
        """Add uploaded images, archives and folders to this session's gallery.

        Returns the session, a markdown report and the report as a dict.
        """
        files, folder = upload_paths(files, "files"), upload_paths(folder, "folder")
        folder_paths = text_value(folder_paths, "folder_paths")
        session = self._session(state, request)
        if not files and not folder:
            gr.Warning("Choose some images, a zip/tar archive or a folder first.")
            return session, "Nothing uploaded yet.", {}
        named = [(Path(p).name, p) for p in files] + list(zip(relative_names(folder, folder_paths), folder))
        try:  # request cap and per-session quotas, before any file is read (cmce.io.limits)
            size = check_request_bytes((os.path.getsize(p) for p in {p for _, p in named}), self.server.max_request_bytes)
            session.added_faces.check(1)
            session.indexed_bytes.take(size, format_amount=format_bytes)
        except (CmceError, OSError) as e:
            raise user_error(str(e) if isinstance(e, CmceError) else
                             f"Could not read the uploaded files ({e.strerror or type(e).__name__})") from None
        batch = Path(tempfile.mkdtemp(dir=session.workdir, prefix="upload-"))
        try:
            moved, seen = [], {}
            for n, (name, path) in enumerate(named):  # the session works on its own copy of each upload
                if path not in seen:  # the same upload twice: the gallery reports the duplicate
                    seen[path] = batch / f"{n:05d}{''.join(Path(name).suffixes[-2:]) or '.bin'}"
                    link_or_copy(path, seen[path])
                moved.append((name, seen[path]))
            progress(0.0, desc=f"Waiting for the indexing slot ({self.index_turns.waiting} ahead)")
            with self.index_turns.turn() as turn:  # between chunks of 16 photos, a waiting job goes first
                progress(0.0, desc=f"Reading {len(moved)} files")
                upload = collect_uploads(moved, batch / "extracted")

                def chunk_done(fraction: float, message: str) -> None:
                    progress(fraction, desc=message)
                    if fraction < 1:  # after the last chunk it finishes at once
                        turn.pass_on()

                with session.busy:
                    report = session.gallery.add_images(upload.items, progress=chunk_done)  # photos kept: Session.photos
            session.added_faces.charge(report.added)
        except CmceError as e:
            raise user_error(e) from None
        except OSError as e:
            raise user_error(f"Could not read the uploaded files ({e.strerror or type(e).__name__}); please upload "
                             "them again.") from None
        finally:
            shutil.rmtree(batch, ignore_errors=True)
        return (session, display.index_report_markdown(report, upload, session.gallery),
                display.index_report_dict(report, upload, session.gallery))

    def preview_upload(self, files: list[str] | None, folder: list[str] | None = None,
                       folder_paths: str | None = None) -> str:
        """The labels the chosen files will get, before indexing (file names only; archives listed, not extracted)."""
        files, folder = list(files or []), list(folder or [])
        named = [(Path(p).name, p) for p in files] + list(zip(relative_names(folder, folder_paths), folder))
        return display.label_preview_markdown(preview_labels(named) if named else None)

    def load_example_gallery(self, name: str, state: Session | None, request: gr.Request, progress=gr.Progress()):
        """Replace this session's gallery with an example gallery (indexed once per bundle, then copied)."""
        folder = self.example_galleries.get(name) if isinstance(name, str) else None
        if folder is None:
            raise user_error(f"Unknown example gallery {clip(name, 60)!r}; choose one of {list(self.example_galleries)}")
        session = self._session(state, request)
        progress(0.0, desc="Loading the example gallery")
        try:
            with session.busy:
                saved, report, upload = self.example_cache.get(session.engine, folder, lambda f, m: progress(f, desc=m))
                # the example's photos ship with the app: shown as they are
                session.use_gallery(Gallery.load(saved, session.engine, self.limits))
                for digest, path in self.example_cache.shipped_photos(folder).items():
                    session.photos.add_shipped(digest, path)
        except CmceError as e:
            raise user_error(e) from None
        session.risk_cache = None
        return (session, display.index_report_markdown(report, upload, session.gallery),
                display.index_report_dict(report, upload, session.gallery))

    def open_bundle_example(self, bundle: str, gallery_name: str, query_path: str, state: Session | None,
                            request: gr.Request, progress=gr.Progress()):
        """One click on a bundle's example: switch to the bundle, load the example gallery, set the query.

        Returns the outputs of ``load_bundle_ui`` and ``load_example_gallery``, then the query photo
        (setting it searches).
        """
        switched = self.pick_bundle(bundle, state, request, progress)
        loaded = self.load_example_gallery(gallery_name, switched[0], request, progress)
        return (loaded[0], *switched[1:], *loaded[1:], query_path)

    def clear_gallery(self, state: Session | None, request: gr.Request):
        """Empty this session's gallery."""
        session = self._session(state, request)
        with session.busy:
            session.use_gallery(Gallery(session.engine, self.limits))
        return session, "Gallery cleared.", {}

    def refresh_overview(self, state: Session | None, order: str, reject_by: str, rate: float, threshold: float,
                         score: str | None = None, show_all: bool = True):
        """Thumbnails of the entries (rejected ones framed red, doubtful ones amber; the first
        ``OVERVIEW_FIRST`` unless ``show_all``) and a summary that says how many are shown."""
        if state is None or state.closed or not len(state.gallery):
            return [], display.overview_summary(None, [])
        try:
            rejected = self._rejected(state.gallery, reject_by, rate, threshold, score)
        except gr.Error as e:  # a refused threshold or rate: said where the counts stand, the tiles kept
            return gr.update(), f"**Rejection not applied:** {e.message}"
        limit = len(state.gallery) if show_all else min(OVERVIEW_FIRST, len(state.gallery))
        shown = (f"\n\nShowing {limit} of {len(state.gallery)} faces"
                 + (" · tick **Show all faces** to see every one." if limit < len(state.gallery) else "."))
        return (display.overview_tiles(state.gallery, rejected, order, limit=limit),
                display.overview_summary(state.gallery, rejected, score=score if score in QUALITY_SCORES else None)
                + shown)

    def refresh_plots(self, state: Session | None, reject_by: str, rate: float, threshold: float, score: str | None = None):
        """Risk-coverage curve and quality-score histogram of this session's gallery, the note under
        them, and its scoreboard (every column's leave-one-out Recall@1 and Unknown rate,
        ``cmce.method.scoreboard``), both computed once per gallery state."""
        if state is None or state.closed or not len(state.gallery):
            return (None, None, "Index a labelled gallery to see how rejection works on it.",
                    display.scoreboard_markdown(None, None))
        g = state.gallery
        key = (len(g.entries), len(g))
        if state.risk_cache is None or state.risk_cache[:2] != key:  # once per gallery state: stored vectors only
            state.risk_cache = (*key, gallery_risk_coverage(g), gallery_scoreboard(g))
        rc, board = state.risk_cache[2:]
        board_md = display.scoreboard_markdown(board, g.bundle.query_model)
        live = g.positions
        try:
            rejected = self._rejected(g, reject_by, rate, threshold, score)[live]
        except gr.Error as e:  # a refused threshold or rate: the plots kept, the note says why
            return gr.update(), gr.update(), f"**Rejection not applied:** {e.message}", board_md
        quality = g.bundle.calibration.quality_model(score if score in QUALITY_SCORES else None)
        hist = display.uncertainty_figure(g.quality_scores(quality.kind)[live], rejected, rc.is_query & ~rc.hits,
                                          quality.description, log_scale=quality.log_axis,
                                          threshold=g.bundle.calibration.threshold_for(quality.kind))
        note = display.risk_coverage_note(rc, g)
        if not rc.usable:
            return None, hist, note, board_md
        return display.risk_coverage_figure(rc, float(rejected.mean()), quality.kind), hist, note, board_md

    def _faces_only(self, image: str, name: str, face_index: int, session: Session | None):
        """The search's outputs for an empty gallery (or no session yet: returned as None): the photo with
        its faces numbered (the chosen one kept, so that it is searched once the gallery is back), and
        what to do. A photo seen before is not detected again (``FacesPreview``)."""
        engine = session.engine if session is not None else self.engines.default
        try:
            photo = self.previews.photo(engine, image, clip(name, 60))
        except CmceError as e:
            message = clean(e)
            gr.Warning(message)
            return (None, gr.update(choices=display.face_choices(1), value=0), f"<p>{html.escape(message)}</p>",
                    {"error": message}, session)
        found = len(photo.faces)
        text = (f"{counted(found, 'face')} found. The gallery is empty: upload photos or pick an "
                "example gallery, and this photo is searched.")
        chosen = min(face_index, found - 1) if found else None
        return (display.annotate_faces(photo.image, photo.faces, chosen),
                gr.update(choices=display.face_choices(found), value=chosen or 0), f"<p>{html.escape(text)}</p>",
                {"error": text, "faces": [{"box": [round(x, 1) for x in f.box], "probability": round(f.probability, 4)}
                                          for f in photo.faces]}, session)

    def download_gallery(self, state: Session | None, request: gr.Request = None) -> str:
        """This session's gallery as one zip file (raw embeddings and thumbnails, no photo) to keep."""
        session = self._session(state, request)
        with session.busy:
            try:
                return str(export_gallery(session.gallery, session.workdir / f"cmce-gallery-{len(session.gallery)}-faces.zip"))
            except CmceError as e:
                raise gr.Error(str(e)) from e

    def restore_gallery(self, file: str | None, state: Session | None, request: gr.Request = None):
        """Replace this session's gallery with a downloaded one (``download_gallery``): the archive is
        checked like any upload, and the gallery re-projected into this session's bundle, no photo read.

        Returns the session, a markdown report and the report as a dict.
        """
        session = self._session(state, request)
        if not file:
            gr.Warning("Choose a gallery .zip downloaded from this app first.")
            return session, "Nothing uploaded yet.", {}
        try:
            size = check_request_bytes([os.path.getsize(file)], self.server.max_request_bytes)
            session.indexed_bytes.take(size, format_amount=format_bytes)
            with session.busy:
                restored = import_gallery(file, session.engine, session.workdir, limits=self.limits)
                session.use_gallery(restored.gallery)  # a downloaded gallery holds no photo
        except CmceError as e:
            raise gr.Error(str(e)) from e
        except OSError as e:
            raise gr.Error(f"Could not read the uploaded gallery ({e.strerror or e}); please upload it again.") from e
        return (session, display.restore_markdown(restored, Path(file).name, session.engine.bundle.query_model),
                display.restore_dict(restored))

    def search(self, image: str | None, face: int | None = 0, k: int = 5, identity: str | None = None,
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
        if image is None:  # no photo (or it was removed): nothing to show
            return None, gr.update(), "<p>Choose a query photo to search.</p>", {}, state
        if not isinstance(image, str):
            raise user_error(f"The query photo must be an uploaded image file, got {type(image).__name__}")
        face_index = whole_number(0 if face is None else face, "Face", 0, 999)
        k = whole_number(k, "Matches per column", 1, 10)
        identity = text_value(identity, "Who is it?")
        if unknown_by not in UNKNOWN_BY:
            raise user_error(f"Say Unknown must be one of {', '.join(UNKNOWN_BY)}, got {clip(unknown_by, 40)}")
        name = Path(image).name
        session = self._session(state, request, open_new=False)  # a query never opens a session: none has a gallery
        if session is None or not len(session.gallery):  # nothing to search yet: still show the faces the photo holds
            return self._faces_only(image, name, face_index, session)
        label = clip(identity.strip(), 100) or query_label(name)
        img = None
        try:
            img = load_image(image, name=clip(name, 60), limits=self.limits.image)  # size, then header, then decode
            rejected = self._rejected(session.gallery, reject_by, rate, threshold, score)
            result = session.gallery.search_image(img, face_index=face_index, k=k, rejected=rejected, name=clip(name, 60),
                                                  unknown_by=unknown_by)
        except (CmceError, gr.Error) as e:  # no face, unreadable photo, empty gallery, a refused threshold: the
            message = clean(e.message if isinstance(e, gr.Error) else e)  # old results make way for the message
            gr.Warning(message)
            # an unreadable photo resets the face choice; a photo refused for the gallery's sake (empty, a
            # refused threshold) keeps it, so that the same face is searched once the gallery is back
            face_choice = gr.update(choices=display.face_choices(1), value=0) if img is None else gr.update()
            return None, face_choice, f"<p>{html.escape(message)}</p>", {"error": message}, session
        g = session.gallery
        presence = person_presence([e.label for e in g.entries], g.positions, label or None, rejected, g.doubt().doubtful)
        query_model = session.engine.bundle.query_model
        verdict = query_verdict(result, query_model, label, searchable_labels(g, rejected))
        session.last_matches = {name: tuple(m.entry_id for m in v.matches) for name, v in result.views.items()}
        return (display.annotate_faces(img, result.faces, result.chosen),
                gr.update(choices=display.face_choices(len(result.faces)), value=result.chosen),
                display.result_html(result, g, label, rejected, verdict=verdict),
                {**display.result_dict(result, query_model, label, session.engine.bundle.calibration, presence),
                 "verdict": verdict.as_dict(), "unknown_by": unknown_by},
                session)

    def match_photo(self, column: str | None, rank: int | None = 1, state: Session | None = None,
                    request: gr.Request = None):
        """Match ``rank`` (1 = best) of ``column`` (``ensemble``, a gallery model's name or ``query``) in this
        session's last search, shown in its source photo with its face boxed (``cmce.serve.match_photo``).

        Returns the photo (None where none is kept: a restored gallery) and a markdown line.
        """
        column = text_value(column, "The column").strip()
        rank = whole_number(1 if rank is None else rank, "The rank", 1, 10)
        return match_photo(self._session(state, request), column, rank)
