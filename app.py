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
from cmce.serve import display, memwatch, people_tab, story
from cmce.serve.components import without_stray_files
from cmce.serve.fairness import ClientGate, ClientLimits
from cmce.serve.gate import ClientGateMiddleware
from cmce.serve.guard import GuardedBlocks, query_photo
from cmce.serve.handlers import (
    BUNDLE_SCORE,
    OVERVIEW_FIRST,
    REJECT_BY,
    DemoServer,
    calibrated_threshold,
    prepare_query,
    typed_threshold,
)
from cmce.serve.match_photo import NO_MATCH_YET
from cmce.serve.page_style import PAGE_CSS
from cmce.serve.pathalias import PathAliasMiddleware, new_alias
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

CSS = PAGE_CSS  # the page's look (cmce.serve.page_style)

# The browser keeps the folder structure of a folder upload only in webkitRelativePath;
# remember it so that folder names can become identity labels. (And one style rule the scoped css cannot hold.)
HEAD = """<style>/* Gradio scopes the css above under .gradio-container; this must reach the container itself:
clip (not hidden) lets the phone's sticky verdict line follow the page's scroll */
@media (max-width:640px){.gradio-container{overflow:clip!important}}</style>
<script>
window.cmceFolderPaths = [];
document.addEventListener("change", (e) => {
  const t = e.target;
  if (t && t.tagName === "INPUT" && t.type === "file" && t.webkitdirectory) {
    window.cmceFolderPaths = Array.from(t.files).map((f) => f.webkitRelativePath || f.name);
  }
}, true);
</script>"""
# a click on a match tile of the results selects it: (rank, column), read by _match_picked
MATCH_CLICK_JS = ("element.addEventListener('click', (e) => { const li = e.target.closest('li.cmce-match'); "
                  "const col = li && li.closest('section.cmce-view'); "
                  "if (col) trigger('select', {index: Number(li.dataset.rank), value: col.dataset.view, selected: true}); });")
PREVIEW_PATHS_JS = "(...args) => { args[2] = (window.cmceFolderPaths || []).join('\\n'); return args; }"
FOLDER_PATHS_JS = ("(...args) => { args[2] = (window.cmceFolderPaths || []).join('\\n'); "
                   "window.cmceFolderPaths = []; return args; }")


# --------------------------------------------------------------------------- models and sessions


SHIPPED = shipped_bundles(BUNDLES)
EVALUATIONS = story.read_evaluations(ROOT / "docs", SHIPPED)  # the shipped held-out evaluations, per bundle
# the first screen's one-click examples: every bundle's, the bundle whose ensemble lifts its query model most first
ONE_CLICK = [e for name in story.order_by_lift(SHIPPED, EVALUATIONS) for e in EXAMPLE_SET.by_bundle.get(name, ())]


def _picked(values: list) -> Any:
    """A select handler of a picture list: the values of the picture clicked."""
    def picked(evt: gr.SelectData):
        return values[evt.index]
    return picked


# --------------------------------------------------------------------------- the handlers (cmce.serve.handlers)


DEMO = DemoServer(SHIPPED, EXAMPLE_GALLERIES, LIMITS, SERVER, ALLOWED, TEMP, gpu=gpu, gate=GATE)
ENGINES = DEMO.engines
load_bundle_ui, pick_bundle, picked_bundle, pick_score = (DEMO.load_bundle_ui, DEMO.pick_bundle, DEMO.picked_bundle,
                                                          DEMO.pick_score)
index_gallery, load_example_gallery, open_bundle_example, clear_gallery = (
    DEMO.index_gallery, DEMO.load_example_gallery, DEMO.open_bundle_example, DEMO.clear_gallery)
refresh_overview, refresh_plots, search = DEMO.refresh_overview, DEMO.refresh_plots, DEMO.search
download_gallery, restore_gallery, preview_upload = DEMO.download_gallery, DEMO.restore_gallery, DEMO.preview_upload


def _match_picked(evt: gr.SelectData):
    """The match tile clicked in the results: its column and rank."""
    return evt.value, evt.index


def _expire(state: Any) -> None:
    """The session state's delete callback. A plain function, not ``DEMO.expire``: Gradio deep-copies
    the page's config (which holds it) on every ``/config`` request, and a bound method would copy the
    whole server with it (its engines and their torch models): seconds per page load, and a storm of
    time-outs when many clients connect at once."""
    DEMO.expire(state)


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
    one_click: Any = None
    query_examples: Any = None
    show_all: Any = None
    download_btn: Any = None
    download_file: Any = None
    restore_btn: Any = None
    upload_preview: Any = None
    scoreboard_md: Any = None
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
    match_column: Any = None
    match_rank: Any = None
    match_image: Any = None
    match_note: Any = None
    plots_note: Any = None
    rc_plot: Any = None
    hist_plot: Any = None
    people: dict = field(default_factory=dict)  # the People tab's components (people_tab.build)


def _header(page: _Page, engine: FaceEngine | None) -> None:
    """The title, one line on what the page does, and the bundle picker beside it."""
    with gr.Row(equal_height=True, elem_id="header"):
        with gr.Column(scale=3, min_width=300):
            gr.Markdown(
                "# CMCE Face Search\n"
                "Search your own photos with an ensemble of face models mapped into one space (CMCE): every "
                "column answers with a name or **Unknown**, and the verdict says which were right. Doubtful "
                "gallery faces are marked; you can **reject** them. Your gallery lives only in this browser "
                "session (download it to keep it).", elem_id="intro")
        with gr.Column(scale=2, min_width=280):
            page.picker = gr.Dropdown([(b.label, n) for n, b in SHIPPED.items()], value=DEMO.shipped_name(engine),
                                      label="Bundle: which face models search your photos",
                                      info=DEMO.picker_info(DEMO.shipped_name(engine)),
                                      elem_id="bundle-picker")
    page.bundle_note = gr.Markdown(elem_id="bundle-note")


def _bundle_section(page: _Page, engine: FaceEngine | None) -> None:
    """The bundle's details and the Hub loader (collapsed)."""
    with gr.Accordion("Model bundle: details, or one from the Hub", open=False, elem_id="bundle-details"):
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
                      open=False, elem_id="story"):
        gr.Markdown(story.READING_GUIDE, elem_classes="cmce-hint")
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



def _task_section(page: _Page) -> None:
    """The first screen: the gallery upload, the query photo and the examples as pictures."""
    with gr.Row(elem_id="task"):
        with gr.Column(scale=5, min_width=320):
            gr.Markdown("### 1 · Your gallery", elem_classes="cmce-step")
            with gr.Row():
                page.files = without_stray_files(gr.File(label="Images or zip/tar archives", file_count="multiple",
                                                         file_types=["image", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz"],
                                                         height=120, elem_id="gallery-files"))
                page.folder = without_stray_files(gr.File(label="A folder (one sub-folder per person)",
                                                          file_count="directory", height=120, elem_id="gallery-folder"))
            page.folder_paths = gr.Textbox("", visible=False)
            page.upload_preview = gr.Markdown("", elem_id="upload-preview")
            with gr.Row():
                page.index_btn = gr.Button("Index faces", variant="primary", elem_id="index-btn")
                page.clear_btn = gr.Button("Clear gallery", elem_id="clear-btn")
            page.example_name = gr.Textbox(visible=False)
            page.gallery_examples = gr.Gallery(
                [(story.example_cover(g.folder), g.name) for g in EXAMPLE_SET.galleries],
                label="…or an example gallery (one click)", columns=4, height=170,
                object_fit="cover", allow_preview=False, buttons=[], elem_id="example-galleries",
                elem_classes="cmce-picks")
            gr.Markdown("Labels come from folder names, or from `Name_0001.jpg`-style file names.",
                        elem_classes="cmce-hint")
            page.report_md = gr.Markdown("No gallery yet.", elem_id="index-report")
        with gr.Column(scale=4, min_width=300):
            gr.Markdown("### 2 · A photo to search", elem_classes="cmce-step")
            page.query = query_photo(label="Query photo (upload, webcam or paste)",  # never decoded before the checks
                                     sources=["upload", "webcam", "clipboard"], height=200, elem_id="query-image",
                                     limits=LIMITS.image)
            page.query_examples = gr.Gallery(
                [(str(p), t) for p, t in EXAMPLE_QUERIES], label="…or an example query (one click)",
                columns=len(EXAMPLE_QUERIES), height=215, object_fit="cover", allow_preview=False, buttons=[],
                elem_id="example-queries", elem_classes="cmce-picks")
        with gr.Column(scale=3, min_width=260):
            gr.Markdown("### Or see it work in one click", elem_classes="cmce-step")
            page.one_click = gr.Gallery(
                [(str(e.query), f"{e.bundle}: {EXAMPLE_SET.label(e)}") for e in ONE_CLICK],
                label="bundle, example gallery and query, then the search", columns=2, height=430,
                object_fit="cover", allow_preview=False, buttons=[], elem_id="one-click", elem_classes="cmce-picks")
    page.report_json = gr.JSON(visible=False)


def _search_section(page: _Page) -> None:
    """The query's faces, the search options, the verdict and the results."""
    with gr.Row():
        with gr.Column(scale=2, min_width=240):
            page.faces_img = gr.Image(label="Faces found (numbered, largest first)", interactive=False, height=220,
                                      elem_id="faces-image")
        with gr.Column(scale=3, min_width=300):
            with gr.Row():
                page.face = gr.Dropdown(display.face_choices(1), value=0, label="Face", allow_custom_value=True,
                                        elem_id="face-choice")
                page.identity = gr.Textbox("", label="Who is it? (optional: gives the verdict)",
                                           placeholder="from Name_0003.jpg", elem_id="query-identity")
                page.k = gr.Slider(1, 10, value=5, step=1, label="Matches per column")
            page.unknown_by = gr.Radio([(UNKNOWN_BY_LABELS[v], v) for v in UNKNOWN_BY], value=UNKNOWN_BY[0],
                                       label="Say Unknown", elem_id="unknown-by",
                                       info="in galleries of more than 50 people; normal is lowered on a gallery "
                                            "of poor photos, strict never is")
            page.search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
    page.results = gr.HTML("<p>Results appear here, one column per model.</p>", elem_id="results",
                           js_on_load=MATCH_CLICK_JS)
    page.match_column, page.match_rank = gr.Textbox(visible=False), gr.Number(visible=False, precision=0)
    page.match_note = gr.Markdown(NO_MATCH_YET, elem_id="match-note", elem_classes="cmce-hint")
    page.match_image = gr.Image(label="The match in its photo", show_label=False, interactive=False, visible=False, height=420,
                                elem_id="match-photo", buttons=[])
    with gr.Accordion("Results as data (what the API returns)", open=False):
        page.results_json = gr.JSON()


def _gallery_section(page: _Page, engine: FaceEngine | None) -> None:
    """The gallery's faces: rejection controls and the overview."""
    cal = engine.bundle.calibration if engine else None
    gr.Markdown("## Your gallery: its faces, and what to reject")
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
    with gr.Row():
        page.download_btn = gr.Button("Download this gallery (.zip, no photos)",
                                      elem_id="download-btn", size="md")
        page.restore_btn = gr.UploadButton("Restore a downloaded gallery", file_types=[".zip"], file_count="single",
                                           elem_id="restore-btn", size="md")
    page.download_file = gr.File(label="Your gallery, to keep", interactive=False, visible=False,
                                 elem_id="gallery-download")
    page.overview_md = gr.Markdown(display.overview_summary(None, []), elem_id="overview-summary")
    page.show_all = gr.Checkbox(False, label=f"Show all faces (else the first {OVERVIEW_FIRST})",
                                elem_id="overview-all")
    page.overview = gr.Gallery(label="Gallery overview", columns=7, height="auto", object_fit="contain",
                               format="jpeg", elem_id="overview", buttons=[])


def _plots_section(page: _Page) -> None:
    """Step 3: what the ensemble buys on the user's own gallery, and rejection (the paper's metric)."""
    gr.Markdown("## 3 · What the ensemble buys on your gallery, and does rejection help?")
    page.plots_note = gr.Markdown("Index a labelled gallery to see how rejection works on it.")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            page.scoreboard_md = gr.Markdown(display.scoreboard_markdown(None, None), elem_id="scoreboard")
        with gr.Column(scale=1, min_width=300):
            page.rc_plot = gr.Plot(label="Recall@1 vs rejection", elem_id="risk-plot")
    page.hist_plot = gr.Plot(label="Quality score", elem_id="hist-plot")


def _wire(page: _Page) -> None:
    """Every event of the page: what runs on which input, in which queue, under which API name."""
    rejection = [page.reject_by, page.rate, page.threshold, page.score]
    search_inputs = [page.query, page.face, page.k, page.identity, *rejection, page.unknown_by, page.state]
    search_outputs = [page.faces_img, page.face, page.results, page.results_json, page.state]
    upload_outputs = [page.state, page.report_md, page.report_json]
    plot_outputs = [page.rc_plot, page.hist_plot, page.plots_note, page.scoreboard_md]

    def after_gallery_change(event, research: bool = True):
        """Overview and plots of the changed gallery, then the shown results searched again (or cleared)."""
        event = (event.then(refresh_overview, [page.state, page.order, *rejection, page.show_all],
                            [page.overview, page.overview_md], api_visibility="private")
                 .then(refresh_plots, [page.state, *rejection], plot_outputs, api_visibility="private"))
        return event.then(search, search_inputs, search_outputs, api_name="search_after_gallery_change",
                          api_visibility="private", **SEARCH_QUEUE) if research else event

    def after_bundle_switch(event, search_name: str):
        """Picker in step with the session, the query searched again (the new bundle's columns), then
        the overview and plots."""
        synced = event.then(picked_bundle, [page.state], [page.picker], api_visibility="private")
        return after_gallery_change(synced.then(search, search_inputs, search_outputs, api_name=search_name,
                                                api_visibility="private", **SEARCH_QUEUE), research=False)

    bundle_outputs = [page.state, page.bundle_md, page.bundle_note, *rejection]
    indexed = page.index_btn.click(index_gallery, [page.files, page.folder, page.folder_paths, page.state], upload_outputs,
                              js=FOLDER_PATHS_JS, api_name="index_gallery", **INDEX_QUEUE)
    after_gallery_change(indexed.then(lambda: (None, None, ""), None, [page.files, page.folder, page.folder_paths],
                                      api_visibility="private"))
    after_gallery_change(page.gallery_examples.select(
        _picked([g.name for g in EXAMPLE_SET.galleries]), None, [page.example_name], api_visibility="private").then(
        load_example_gallery, [page.example_name, page.state], upload_outputs, api_name="load_example_gallery",
        **INDEX_QUEUE))
    page.query_examples.select(_picked([str(p) for p, _ in EXAMPLE_QUERIES]), None, [page.query],
                               api_visibility="private")
    one_click = page.one_click.select(_picked([(e.bundle, e.gallery, str(e.query)) for e in ONE_CLICK]), None,
                                      [page.example_bundle, page.example_gallery, page.example_query],
                                      api_visibility="private")
    # bundle, gallery and query photo, then a search (the photo may be unchanged)
    for loaded in [one_click] + [examples.load_input_event for examples in page.bundle_examples]:
        after_gallery_change(loaded.then(
            open_bundle_example, [page.example_bundle, page.example_gallery, page.example_query, page.state],
            [*bundle_outputs, page.report_md, page.report_json, page.query], api_visibility="private", **INDEX_QUEUE)
            .then(picked_bundle, [page.state], [page.picker], api_visibility="private")
            .then(search, search_inputs, search_outputs, api_name="search_after_example",
                  api_visibility="private", **SEARCH_QUEUE), research=False)
    for picked in (page.files.change, page.folder.change):  # the labels it will get, before indexing
        picked(preview_upload, [page.files, page.folder, page.folder_paths], [page.upload_preview],
               js=PREVIEW_PATHS_JS, api_visibility="private")
    page.download_btn.click(download_gallery, [page.state], [page.download_file], api_name="download_gallery",
                            **INDEX_QUEUE).then(lambda: gr.update(visible=True), None, [page.download_file],
                                                api_visibility="private")
    after_gallery_change(page.restore_btn.upload(restore_gallery, [page.restore_btn, page.state], upload_outputs,
                                                 api_name="restore_gallery", **INDEX_QUEUE))
    after_gallery_change(page.clear_btn.click(clear_gallery, [page.state], [page.state, page.report_md, page.report_json],
                                         api_visibility="private"))
    after_bundle_switch(page.load_btn.click(load_bundle_ui, [page.hub_id, page.hub_rev, page.state], bundle_outputs,
                                       api_name="load_bundle", **BUNDLE_QUEUE), "search_after_load_bundle")
    after_bundle_switch(page.picker.select(pick_bundle, [page.picker, page.state], bundle_outputs, api_visibility="private",
                                      **BUNDLE_QUEUE), "search_after_pick_bundle")
    page.score.input(pick_score, [page.score, page.state], [page.threshold], api_visibility="private")
    page.threshold.input(typed_threshold, None, [page.reject_by], api_visibility="private")
    gr.on([page.threshold.change, page.score.change], DEMO.threshold_info, [page.threshold, page.score, page.state],
          [page.threshold], trigger_mode="always_last", api_visibility="private")  # the help follows the box
    gr.on([page.order.change, page.reject_by.change, page.rate.change, page.threshold.change, page.score.change,
           page.show_all.change], refresh_overview,
          [page.state, page.order, *rejection, page.show_all], [page.overview, page.overview_md],
          trigger_mode="always_last", api_visibility="private").then(
        refresh_plots, [page.state, *rejection], plot_outputs, trigger_mode="always_last",
        api_visibility="private").then(  # the shown results follow the rejection controls
        search, search_inputs, search_outputs, api_name="search_after_rejection", api_visibility="private",
        **SEARCH_QUEUE)
    page.search_btn.click(search, search_inputs, search_outputs, api_name="search", **SEARCH_QUEUE)
    # a click on a match tile: its column and rank, then its photo (/match_photo(column, rank) of the last search)
    page.results.select(_match_picked, None, [page.match_column, page.match_rank], api_visibility="private").then(
        DEMO.match_photo, [page.match_column, page.match_rank, page.state], [page.match_image, page.match_note],
        api_name="match_photo", scroll_to_output=True, **SEARCH_QUEUE).then(
        lambda image: gr.update(visible=image is not None), [page.match_image], [page.match_image],
        api_visibility="private")
    page.results.change(lambda: (gr.update(visible=False), NO_MATCH_YET), None, [page.match_image, page.match_note],
                        api_visibility="private")
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
    with GuardedBlocks(title="CMCE Face Search", delete_cache=(1800, 3600)) as demo:  # no blank error
        page.state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_expire)
        page.example_bundle, page.example_gallery, page.example_query = (gr.Textbox(visible=False) for _ in range(3))
        _header(page, engine)
        _task_section(page)
        _search_section(page)
        _gallery_section(page, engine)
        page.people = people_tab.build()  # the People tab (cmce.serve.people_tab)
        _plots_section(page)
        _bundle_section(page, engine)
        _story_section(page)
        _wire(page)
        people_tab.wire(page.people, page.state, refresh_overview,
                        [page.state, page.order, page.reject_by, page.rate, page.threshold, page.score, page.show_all],
                        [page.overview, page.overview_md], SEARCH_QUEUE)
        demo.unload(_unload)
    demo.session_state = page.state  # the gr.State a session lives in (see _restore)
    return demo


# Fair queueing: indexing, searching and bundle loads wait in separate queues with their own
# concurrency, so a long indexing job never holds a search slot; past CMCE_QUEUE_SIZE waiting
# requests a caller is told the app is busy ("try again") at once.
# Indexing handlers take turns inside (DemoServer.index_turns: CMCE_INDEX_CONCURRENCY at once, passing the
# slot on between chunks), so Gradio lets as many more in, to wait there.
INDEX_QUEUE = {"concurrency_id": "index", "concurrency_limit": 2 * SERVER.index_concurrency}
SEARCH_QUEUE = {"concurrency_id": "search", "concurrency_limit": SERVER.search_concurrency}
BUNDLE_QUEUE = {"concurrency_id": "bundle", "concurrency_limit": 1}
# state_session_capacity bounds Gradio's per-session copies of the page's configuration (CMCE_MAX_SESSIONS); an open
# session whose copy Gradio pushed out gets it back at its next join (DEMO.restorer): new sessions drop no gallery
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
    memwatch.limit_heap_growth()  # freed memory goes back to the system (glibc kept it: RSS grew in a soak)
    memwatch.start_from_env()  # CMCE_MEMWATCH=SECONDS: where memory goes, in the log (off by default)
    DEMO.start_tidying()  # old uploads deleted, idle API sessions closed
    engine = ENGINES.load_default(os.environ.get("CMCE_BUNDLE_REVISION") or None)
    if engine is not None and not ZERO_GPU:  # index the example galleries while the page loads
        threading.Thread(target=DEMO.example_cache.preload, args=(engine, EXAMPLE_GALLERIES.values()), daemon=True).start()
    demo = create_demo(engine)
    demo.queue(default_concurrency_limit=2, max_size=SERVER.queue_size).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", os.environ.get("PORT", 7860))),
        app_kwargs={"middleware": [  # the outermost first
            Middleware(PathAliasMiddleware, aliases={os.environ["GRADIO_TEMP_DIR"]: new_alias("files"),  # no server
                                                     str(Path(__file__).resolve().parent): new_alias("app")}),  # path out
            Middleware(ClientGateMiddleware, gate=GATE, restore=DEMO.restorer(demo.session_state._id)),  # per-client limits
        ]},
        **LAUNCH_KWARGS,
    )


if __name__ == "__main__":
    main()
