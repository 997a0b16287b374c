"""The app's handlers (cmce.serve.handlers) without a browser: what they do before any model is loaded."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest

from cmce.gallery.ingest import GalleryLimits
from cmce.io.limits import BundleAllowList, ServerLimits
from cmce.io.uploads import relative_names
from cmce.serve.handlers import DemoServer, prepare_query
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
    assert (faces, data, state) == (None, {}, None) and "Choose a query photo" in html  # old results cleared


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


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"image": 42}, "The query photo must be an uploaded image file, got int"),
    ({"image": "q.png", "k": 0}, "Matches per column must be a whole number from 1 to 10, got 0"),
    ({"image": "q.png", "k": float("nan")}, "Matches per column must be a whole number from 1 to 10, got nan"),
    ({"image": "q.png", "face": float("inf")}, "Face must be a whole number from 0 to 999, got inf"),
    ({"image": "q.png", "face": "abc"}, "Face must be a whole number from 0 to 999, got abc"),
    ({"image": "q.png", "identity": ["a"]}, "Who is it? must be text, got list"),
    ({"image": "q.png", "unknown_by": "x" * 10**6}, "Say Unknown must be one of normalised, strict, similarity"),
])
def test_a_search_with_a_wrong_input_is_refused_by_name(demo, kwargs, message) -> None:
    """Checked before any session or model (issue 24): a named error, no traceback in the log, the
    echo of the input cut."""
    with pytest.raises(gr.Error) as caught:
        demo.search(**kwargs)
    assert caught.value.message.startswith(message) and len(caught.value.message) < 200
    assert caught.value.print_exception is False


def test_load_bundle_answers_the_same_for_existing_and_missing_server_folders(demo, tmp_path) -> None:
    """No oracle (issue 24): a refused folder that exists and one that does not get one answer."""
    notes = []
    for target in (str(tmp_path), str(tmp_path / "no-such-folder"), "/etc", "/no/such/etc"):
        _, _, note, *_ = demo.load_bundle_ui(target, "", None, None)
        notes.append(re.sub(r"'[^']*'", "TARGET", note))  # the refused name, quoted, is the only difference
    assert len(set(notes)) == 1 and "TARGET is not among the bundles this server may load" in notes[0], notes
    assert str(tmp_path) not in notes[0]


@pytest.mark.parametrize("module", ["cmce.serve.guard", "cmce.serve.inputs", "cmce.serve.display.bundle_text",
                                    "cmce.method.answers", "cmce.method.ensemble", "cmce.io.limits"])
def test_docstring_examples_of_the_input_checks(module) -> None:
    """The worked examples of issue 24's checks: message cleaning, whole numbers, thresholds by the
    score's range, the threshold help, where the query's person stands, the bundle refusal."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted >= 1


def test_the_query_photo_reaches_the_handler_undecoded(tmp_path, monkeypatch) -> None:
    """query_photo hands over the upload's path without opening it, and writes a base64 data URL to a
    file as it is (capped, never decoded): the app's own checks run first (issue 24)."""
    import base64

    from gradio.components.image import ImageData
    from PIL import Image

    from cmce.io.images import ImageLimits
    from cmce.serve.guard import query_photo

    def no_open(*args, **kwargs):
        raise AssertionError("the upload was opened before the handler")

    monkeypatch.setattr(Image, "open", no_open)
    with gr.Blocks():
        photo = query_photo(label="Query photo", limits=ImageLimits(max_bytes=1000))
    assert photo.preprocess(ImageData(path=str(tmp_path / "bomb.png"))) == str(tmp_path / "bomb.png")
    assert photo.preprocess(None) is None
    data = b"\x89PNG\r\n\x1a\n not decoded"
    written = photo.preprocess(ImageData(url="data:image/png;base64," + base64.b64encode(data).decode()))
    assert Path(written).read_bytes() == data
    Path(written).unlink()
    with pytest.raises(gr.Error, match="not valid base64"):
        photo.preprocess(ImageData(url="data:image/png;base64,@@@"))
    with pytest.raises(gr.Error, match="larger than the limit of 1000 bytes"):
        photo.preprocess(ImageData(url="data:image/png;base64," + "A" * 4000))
