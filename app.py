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

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from cmce.gallery.ingest import GalleryLimits
from cmce.io.limits import BundleAllowList, ServerLimits
from cmce.method.bundle_model import bundle_summary
from cmce.method.engine import FaceEngine
from cmce.method.unknown import UNKNOWN_BY
from cmce.serve import display, story
from cmce.serve.components import without_stray_files
from cmce.serve.fairness import ClientGate, ClientLimits
from cmce.serve.gate import ClientGateMiddleware
from cmce.serve.handlers import BUNDLE_SCORE, REJECT_BY, DemoServer, calibrated_threshold, prepare_query, typed_threshold
from cmce.serve.sessions import shipped_bundles
from cmce.serve.workdirs import TempFolders, own_gradio_cache

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
GATE = ClientGate(ClientLimits.from_env())  # per client: CMCE_CLIENT_JOBS, CMCE_UPLOAD_MB_PER_CLIENT, ... (cmce.serve.fairness)
TEMP = TempFolders()  # session and example folders: removed at exit, swept at the next start if killed
REJECT_BY_LABELS = {"none": "none (mark doubtful faces)", "calibrated": "calibrated", "threshold": "threshold",
                    "rate": "rate"}
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


# --------------------------------------------------------------------------- the handlers (cmce.serve.handlers)


DEMO = DemoServer(SHIPPED, EXAMPLE_GALLERIES, LIMITS, SERVER, ALLOWED, TEMP, gpu=gpu, gate=GATE)
ENGINES = DEMO.engines
load_bundle_ui, pick_bundle, picked_bundle, pick_score = (DEMO.load_bundle_ui, DEMO.pick_bundle, DEMO.picked_bundle,
                                                          DEMO.pick_score)
index_gallery, load_example_gallery, open_bundle_example, clear_gallery = (
    DEMO.index_gallery, DEMO.load_example_gallery, DEMO.open_bundle_example, DEMO.clear_gallery)
refresh_overview, refresh_plots, search = DEMO.refresh_overview, DEMO.refresh_plots, DEMO.search


def _unload(request: gr.Request) -> None:
    """The tab was closed or reloaded: drop its session now (Gradio names this event after the function)."""
    DEMO.unload(request)


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
    page.picker = gr.Dropdown([(b.label, n) for n, b in SHIPPED.items()], value=DEMO.shipped_name(engine),
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
                page.files = without_stray_files(gr.File(label="Images or zip/tar archives", file_count="multiple",
                                file_types=["image", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz"],
                                height=150, elem_id="gallery-files"))
                page.folder = without_stray_files(gr.File(label="A folder (one sub-folder per person)", file_count="directory",
                                 height=150, elem_id="gallery-folder"))
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
        page.score = gr.Dropdown(DEMO.score_choices(engine), value=BUNDLE_SCORE,
                            label=display.score_choice_label(engine.bundle) if engine else "Rejection score",
                            scale=2, elem_id="reject-score")
        page.threshold = gr.Number(value=calibrated_threshold(engine), step=0.001,
                              label="Threshold (reject quality score above)", scale=2, elem_id="reject-threshold",
                              info=display.threshold_help(cal.quality.kind, calibrated_threshold(engine))
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
        page.state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=DEMO.expire)
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
# Indexing handlers take turns inside (DemoServer.index_turns: CMCE_INDEX_CONCURRENCY at once, passing the
# slot on between chunks), so Gradio lets as many more in, to wait there.
INDEX_QUEUE = {"concurrency_id": "index", "concurrency_limit": 2 * SERVER.index_concurrency}
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
    logger.info("limits: %s", "; ".join(f"{what}: {value}" for what, value in SERVER.describe() + GATE.limits.describe()))
    own_gradio_cache()  # Gradio's upload cache in a folder of this process: removed at exit, swept at start
    DEMO.start_tidying()  # old uploads deleted, idle API sessions closed
    engine = ENGINES.load_default(os.environ.get("CMCE_BUNDLE_REVISION") or None)
    if engine is not None and not ZERO_GPU:  # index the example galleries while the page loads
        threading.Thread(target=DEMO.example_cache.preload, args=(engine, EXAMPLE_GALLERIES.values()), daemon=True).start()
    demo = create_demo(engine)
    demo.queue(default_concurrency_limit=2, max_size=SERVER.queue_size).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", 7860))),
        app_kwargs={"middleware": [Middleware(ClientGateMiddleware, gate=GATE)]},  # per-client limits, before queueing
        **LAUNCH_KWARGS,
    )


if __name__ == "__main__":
    main()
