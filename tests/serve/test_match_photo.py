"""A match opens in its source photo (issue 25): kept copies, their caps, and what a restored gallery says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from cmce.gallery.ingest import GalleryLimits, Photo
from cmce.gallery.source_photos import SourcePhotos
from cmce.io.images import content_hash
from cmce.io.limits import BundleAllowList, ServerLimits
from cmce.serve import people_view
from cmce.serve.display import match_photo_image
from cmce.serve.display.result_view import MATCH_GREEN
from cmce.serve.fairness import ClientGate, ClientLimits
from cmce.serve.handlers import DemoServer
from cmce.serve.sessions import photo_share, shipped_bundles
from cmce.serve.workdirs import TempFolders
from conftest import found_on_disk

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"


def _green(image) -> int:
    """Pixels of the match box's green."""
    a = np.asarray(image)
    return int((np.abs(a.astype(int) - np.array(MATCH_GREEN)).sum(axis=2) < 30).sum())


def test_a_kept_copy_is_downscaled_and_the_cap_holds(tmp_path):
    rng = np.random.default_rng(0)
    big = Photo("big.jpg", rng.integers(0, 255, (2000, 1500, 3), dtype=np.uint8), None, "aa" * 32)
    store = SourcePhotos(tmp_path / "photos", max_bytes=10**9)
    assert store.keep(big)
    image, scale = store.open("aa" * 32)
    assert max(image.shape[:2]) == 1024 and scale == pytest.approx(1024 / 2000, abs=1e-3)
    small = SourcePhotos(tmp_path / "small", max_bytes=store.bytes_held - 1)  # one byte short of that copy
    assert not small.keep(big) and small.refused == 1 and small.was_refused("aa" * 32) and small.bytes_held == 0
    store.keep_only(set())
    assert len(store) == 0 and not any((tmp_path / "photos").iterdir())
    store.keep(big)
    store.clear()
    assert not (tmp_path / "photos").exists()


def test_the_match_box_is_drawn_where_the_face_is():
    image = np.full((200, 300, 3), 90, np.uint8)
    drawn = np.asarray(match_photo_image(image, (50, 40, 150, 160), [(200, 20, 260, 90)]))
    assert _green(drawn[40:161, 50:151]) > 300 and _green(drawn) == _green(drawn[38:163, 48:153])
    assert (drawn[20:90, 200] > 100).all()  # the other face: a faint lighter frame


def test_the_sessions_photo_share_keeps_every_cap():
    client, server = ClientLimits(upload_bytes_per_client=80 * 2**20, sessions_per_client=8), ServerLimits(max_sessions=10)
    share = photo_share(client, server)
    assert share * client.sessions_per_client <= client.upload_bytes_per_client
    assert share * server.max_sessions <= client.upload_bytes_total


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoServer:
    limits = GalleryLimits()
    server = DemoServer(shipped_bundles(ROOT / "assets" / "bundles"), {"gallery": EXAMPLES / "gallery"}, limits,
                        ServerLimits.from_env(image=limits.image), BundleAllowList.from_env(),
                        TempFolders(tmp_path_factory.mktemp("temp"), sweep_on_start=False),
                        gate=ClientGate(ClientLimits()))
    server.engines.load_default()
    return server


def test_a_match_opens_in_its_photo_for_examples_uploads_and_says_so_for_a_restore(demo, tmp_path):
    query = str(EXAMPLES / "queries" / "Eileen_Collins_04.jpg")
    with pytest.raises(gr.Error, match="Search first"):
        demo.match_photo("ensemble", 1, None)
    session = demo.load_example_gallery("gallery", None, None, lambda *a, **k: None)[0]
    demo.search(query, state=session)
    image, note = demo.match_photo("ensemble", 1, session)
    assert image is not None and _green(image) > 100 and "Eileen_Collins" in note
    assert session.photos.bytes_held == 0  # shipped photos: shown as they are, nothing copied
    for column, rank, message in (("nope", 1, "The column must be one of ensemble"), ("ensemble", 9, "the rank must be")):
        with pytest.raises(gr.Error, match=message) as e:
            demo.match_photo(column, rank, session)
        assert str(tmp_path) not in str(e.value) and "/" not in e.value.message
    # uploads: a downscaled copy of each indexed photo in the session's folder, deleted with the gallery
    demo.clear_gallery(session, None)
    uploads = []
    for name in ("Eileen_Collins_11.jpg", "Eileen_Collins_12.jpg", "Grace_Hopper_11.jpg"):
        shutil.copy(EXAMPLES / "archive" / name, tmp_path / name)
        uploads.append(str(tmp_path / name))
    session = demo.index_gallery(uploads, state=session, progress=lambda *a, **k: None)[0]
    kept = sorted((session.workdir / "photos").iterdir())
    assert len(kept) == 3 and 0 < session.photos.bytes_held <= session.photos.max_bytes
    demo.search(query, state=session)
    image, note = demo.match_photo("query", 1, session)
    assert image is not None and _green(image) > 100 and "Eileen_Collins_1" in note
    archive = demo.download_gallery(session)
    demo.clear_gallery(session, None)
    assert not (session.workdir / "photos").exists()
    # a restored gallery holds no photos: said plainly, no image
    session = demo.restore_gallery(archive, session)[0]
    demo.search(query, state=session)
    image, note = demo.match_photo("ensemble", 1, session)
    assert image is None and "restored gallery" in note and "not the photos" in note
    # an expired session leaves nothing on disk
    demo.clear_gallery(session, None)
    session = demo.index_gallery(uploads, state=session, progress=lambda *a, **k: None)[0]
    assert (session.workdir / "photos").is_dir()
    demo.expire(session)
    assert not session.workdir.exists()


def _side_by_side(paths: list[Path], dest: Path) -> Path:
    """One photo of the given photos' faces, left to right (a group photo)."""
    tiles = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), (90, 90, 90))
    for i, t in enumerate(tiles):
        canvas.paste(t, (sum(u.width for u in tiles[:i]), 0))
    canvas.save(dest, quality=92)
    return dest


def test_forgetting_a_person_deletes_the_photos_no_other_face_holds(demo, tmp_path):
    """Erasure in a session (issue 26): the kept copy of a photo whose faces are all forgotten leaves the
    disk and the session's photo room; a group photo keeps its copy for the face still there, which opens."""
    archive = EXAMPLES / "archive"
    alone = [shutil.copy(archive / n, tmp_path / n) for n in ("Grace_Hopper_11.jpg", "Grace_Hopper_12.jpg",
                                                             "Eileen_Collins_11.jpg")]
    pair = _side_by_side([archive / "Eileen_Collins_12.jpg", archive / "Grace_Hopper_13.jpg"], tmp_path / "pair.jpg")
    session = demo.index_gallery([*map(str, alone), str(pair)], state=None, progress=lambda *a, **k: None)[0]
    grace, eileen, two = (content_hash(tmp_path / n) for n in ("Grace_Hopper_11.jpg", "Eileen_Collins_11.jpg", "pair.jpg"))
    assert {h for h in (grace, eileen, two) if session.photos.get(h) is not None} == {grace, eileen, two}
    grace_jpeg = session.photos.get(grace).path.read_bytes()
    held = session.photos.bytes_held
    people_view.people_group(session)
    choices = people_view.people_name(f"{grace}:0", "Grace", session)[2]["choices"]  # a name, which forgetting drops
    # the page asks first: who and how many faces, and erases nothing; an unknown person is refused by name
    faces = len(session.gallery)
    shown, question = people_view.forget_question("Grace", session)
    assert shown["visible"] is True and question.startswith("Forget **Grace**? ") and "cannot be undone" in question
    n = re.search(r"\? (\d+) faces?, ", question).group(1)
    assert [label for label, key in choices if label.startswith("Grace ")] == [f"Grace · {n} face{'s' * (n != '1')}"]
    with pytest.raises(gr.Error, match="Not changed: no person 'Nobody'"):
        people_view.forget_question("Nobody", session)
    assert len(session.gallery) == faces and session.photos.get(grace) is not None
    html, summary, *_ = people_view.people_forget("Grace", session)
    assert summary.startswith("Forgot Grace:") and "Grace" not in {e.label for e in session.gallery.entries
                                                                    if e.content_hash in session.gallery.hashes}
    assert session.photos.get(grace) is None and not found_on_disk(session.workdir, {"Grace_Hopper_11": grace_jpeg})
    assert session.photos.get(two) is not None and session.photos.get(two).path.is_file()
    assert session.photos.bytes_held <= held - len(grace_jpeg)
    assert session.photos.bytes_held == sum(p.stat().st_size for p in (session.workdir / "photos").iterdir())
    assert not session.gallery.corrections.names  # her name went with her faces: the others can be named
    people_view.people_name(f"{eileen}:0", "Eileen", session)
    # the face that stays in the group photo opens in it, boxed
    demo.search(str(EXAMPLES / "queries" / "Eileen_Collins_04.jpg"), k=10, state=session)
    ids = session.last_matches["ensemble"]
    rank = next(r for r, e in enumerate(ids, 1) if e.startswith(two))
    image, note = demo.match_photo("ensemble", rank, session)
    assert image is not None and _green(image) > 100 and "pair.jpg" in note
    with pytest.raises(gr.Error, match="Not changed: no person 'Grace'"):
        people_view.people_forget("Grace", session)
