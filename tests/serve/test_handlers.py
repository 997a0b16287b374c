"""The app's handlers (cmce.serve.handlers) without a browser: what they do before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from cmce.gallery.ingest import GalleryLimits
from cmce.io.limits import BundleAllowList, ServerLimits
from cmce.serve.handlers import DemoServer, prepare_query, relative_names
from cmce.serve.sessions import shipped_bundles
from cmce.serve.workdirs import TempFolders

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def demo(tmp_path) -> DemoServer:
    limits = GalleryLimits()
    wrapped = []

    def gpu(fn):
        wrapped.append(fn.__name__)
        return fn

    server = DemoServer(shipped_bundles(ROOT / "assets" / "bundles"), {}, limits,
                        ServerLimits.from_env(image=limits.image), BundleAllowList.from_env(),
                        TempFolders(tmp_path, sweep_on_start=False), gpu=gpu)
    server.wrapped = wrapped
    return server


def test_the_handlers_that_embed_faces_are_wrapped_for_the_gpu(demo) -> None:
    assert sorted(demo.wrapped) == ["index_gallery", "load_example_gallery", "search"]


def test_without_a_bundle_a_handler_says_so(demo) -> None:
    """No engine loaded yet (ENGINES.load_default not called): a named error, not a crash."""
    with pytest.raises(gr.Error, match="No bundle is loaded"):
        demo.clear_gallery(None, None)


def test_a_search_without_a_photo_changes_nothing(demo) -> None:
    faces, _, html, data, state = demo.search(None)
    assert (faces, html, data, state) == (None, "", {}, None)


def test_the_shipped_bundles_are_named_in_the_picker(demo) -> None:
    assert demo.shipped_name(None) is None
    assert {"sface-query", "facenet-query"} <= set(demo.shipped)


def test_folder_uploads_keep_the_browsers_relative_paths() -> None:
    uploads = ["/tmp/gradio/a1/photo1.jpg", "/tmp/gradio/b2/photo2.jpg"]
    # the browser's order and names: the relative paths are taken as they are
    assert relative_names(uploads, "Ada/photo1.jpg\nBob/photo2.jpg\n") == ["Ada/photo1.jpg", "Bob/photo2.jpg"]
    # one file dropped on the way: paired by file name, the rest keeps its bare name
    assert relative_names(uploads[::-1], "Ada/photo1.jpg\n") == ["photo2.jpg", "Ada/photo1.jpg"]
    assert relative_names(uploads, None) == ["photo1.jpg", "photo2.jpg"]


def test_a_new_query_photo_resets_the_face_and_guesses_the_name() -> None:
    update, label = prepare_query("/tmp/x/Grace_Hopper_0005.jpg")
    assert update["value"] == 0 and label == "Grace_Hopper"
    assert prepare_query(None)[1] == ""
