"""Per-client limits (cmce.serve.fairness), the session cap (cmce.serve.sessions) and the upload
field without stray files (cmce.serve.components), without a running app."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cmce.errors import LimitError
from cmce.serve.fairness import (ClientGate, ClientLimits, RateWindow, TakeTurns, TooManyRequests, UploadLedger,
                                 client_address)
from cmce.serve.workdirs import own_gradio_cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- who the client is


def test_forwarded_addresses_are_ignored_unless_the_peer_is_a_trusted_proxy():
    forged = {"x-forwarded-for": "1.2.3.4", "x-real-ip": "5.6.7.8"}
    assert client_address("203.0.113.9", forged, ClientLimits()) == "203.0.113.9"
    trusted = ClientLimits.from_env({"CMCE_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"})
    assert client_address("203.0.113.9", forged, trusted) == "203.0.113.9"  # not a proxy of ours
    # behind the proxy: the right-most entry that is not a proxy; what the client wrote to its left is ignored
    assert client_address("127.0.0.1", {"x-forwarded-for": "9.9.9.9, 81.2.69.160, 10.1.2.3"}, trusted) == "81.2.69.160"
    assert client_address("127.0.0.1", {"x-real-ip": "81.2.69.161"}, trusted) == "81.2.69.161"
    assert client_address("127.0.0.1", {"x-forwarded-for": "not an ip"}, trusted) == "127.0.0.1"  # fallback: the peer
    assert client_address(None, {}, ClientLimits()) == "unknown"


def test_on_a_space_the_visitor_is_the_right_most_public_forwarded_address():
    space = ClientLimits.from_env({"SPACE_ID": "org/demo"})
    assert space.behind_space_proxy
    assert client_address("10.16.3.80", {"x-forwarded-for": "81.2.69.160, 10.16.0.7"}, space) == "81.2.69.160"
    assert client_address("10.16.3.80", {}, space) == "10.16.3.80"


def test_client_limits_from_env_and_bad_values():
    limits = ClientLimits.from_env({"CMCE_CLIENT_JOBS": "3", "CMCE_UPLOAD_MB_PER_CLIENT": "5"})
    assert limits.jobs_per_kind == 3 and limits.upload_bytes_per_client == 5 * 2**20
    with pytest.raises(LimitError, match="CMCE_CLIENT_JOBS"):
        ClientLimits.from_env({"CMCE_CLIENT_JOBS": "0"})
    with pytest.raises(LimitError, match="not an IP address or network"):
        ClientLimits.from_env({"CMCE_TRUSTED_PROXIES": "proxy.example.com"})


# --------------------------------------------------------------------------- rates, jobs, uploads


def test_rate_window_refuses_with_when_to_retry_and_forgets_old_requests():
    clock = Clock()
    window = RateWindow(3, 60.0, clock=clock)
    for _ in range(3):
        window.take("a")
    window.take("b")  # another client is not affected
    clock.now += 20
    with pytest.raises(TooManyRequests, match=r"too many requests from you .*retry in 40 s") as refused:
        window.take("a")
    assert refused.value.retry_after_s == 40 and refused.value.status == 429
    clock.now += 40
    window.take("a")  # the first three left the window; the refused one was never counted


def test_job_cap_names_the_kind():
    gate = ClientGate(ClientLimits(jobs_per_kind=2))
    gate.check_jobs(1, "search")
    with pytest.raises(TooManyRequests, match="2 search jobs of yours are queued or running"):
        gate.check_jobs(2, "search")


def test_upload_ledger_caps_each_client_and_the_total_and_deletes_old_uploads(tmp_path):
    clock = Clock()
    ledger = UploadLedger(per_client=100, total=250, retention_s=60, clock=clock)
    files = []
    for i in range(3):
        folder = tmp_path / f"h{i}"
        folder.mkdir()
        files.append(folder / "photo.jpg")
        files[-1].write_bytes(b"x" * 10)
    a = ledger.reserve("a", 80)
    ledger.record(a, [str(files[0]), str(files[2])])
    with pytest.raises(TooManyRequests, match="too many uploads from you"):
        ledger.reserve("a", 30)
    refused = ledger.reserve("b", 90)
    ledger.release(refused)  # a refused upload is refunded
    assert ledger.held("b") == 0
    clock.now += 30
    b = ledger.reserve("b", 90)
    ledger.record(b, [str(files[1]), str(files[2])])  # the same content as one of a's (Gradio keeps one copy)
    with pytest.raises(TooManyRequests, match="upload space is full") as full:
        ledger.reserve("c", 90)
    assert full.value.status == 503
    clock.now += 31  # a's upload is past the retention, b's is not
    assert ledger.sweep() == [str(files[0])]
    assert not files[0].exists() and not files[0].parent.exists() and files[2].exists()
    assert ledger.held("a") == 0
    ledger.reserve("a", 100)


# --------------------------------------------------------------------------- indexing takes turns


def test_a_long_job_passes_its_turn_to_a_waiting_one():
    turns = TakeTurns(1)
    events: list[str] = []
    long_started = threading.Event()

    def long_job():
        with turns.turn() as turn:
            long_started.set()
            for chunk in range(6):
                time.sleep(0.05)
                events.append(f"long{chunk}")
                turn.pass_on()

    def short_job():
        long_started.wait()
        with turns.turn():
            events.append("short")

    threads = [threading.Thread(target=long_job), threading.Thread(target=short_job)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert events.index("short") < events.index("long5"), events  # served between chunks, not after the end
    with turns.turn() as turn:
        turn.pass_on()  # nobody waits: keeps its slot
        assert turn.passed == 0


# --------------------------------------------------------------------------- sessions


@pytest.fixture(scope="module")
def engine():
    from cmce.method.bundle import default_bundle_path
    from cmce.serve.sessions import Engines

    if not (default_bundle_path() / "config.json").is_file():
        pytest.skip("default bundle not built")
    return Engines(keep=1).load_default()


@pytest.fixture
def opened(engine, tmp_path):
    """Open a real session (its own folder under tmp_path) from a client address."""
    from cmce.gallery.ingest import GalleryLimits
    from cmce.io.limits import ServerLimits
    from cmce.serve.sessions import Session
    from cmce.serve.workdirs import TempFolders

    temp = TempFolders(tmp_path, sweep_on_start=False)

    def open_session(client: str | None = None) -> Session:
        session = Session.open(engine, GalleryLimits(), ServerLimits(), temp)
        session.client = client
        return session

    yield open_session
    temp.cleanup()


def test_live_sessions_never_exceed_the_cap_and_the_evicted_are_told(tmp_path, opened):
    from cmce.serve.sessions import SessionRegistry

    clock = Clock()
    registry = SessionRegistry(max_sessions=5, per_client=None, clock=clock)
    sessions = []
    for i in range(300):
        clock.now += 1
        sessions.append(registry.register(opened(f"10.0.{i % 50}.1"), f"hash{i}"))
        assert len(registry) <= 5
    assert sum(not s.closed for s in sessions) == 5
    assert len(list(tmp_path.glob("cmce-session-*"))) == 5  # the evicted sessions' folders are gone
    assert "Your gallery was dropped" in sessions[0].dropped and "Index your photos again" in sessions[0].dropped
    assert registry.take_note("hash0") == sessions[0].dropped  # also when Gradio no longer holds its state
    assert registry.take_note("hash0") is None and registry.take_note("hash299") is None  # said once; live


def test_one_client_opening_many_sessions_evicts_only_its_own(opened):
    from cmce.serve.sessions import SessionRegistry

    clock = Clock()
    registry = SessionRegistry(max_sessions=10, per_client=3, clock=clock)
    others = [registry.register(opened(f"10.1.0.{i}"), f"user{i}") for i in range(4)]
    for i in range(100):  # a flood: a new session on every request
        clock.now += 1
        registry.register(opened("10.6.6.6"), f"flood{i}")
    assert not any(s.closed for s in others)
    assert len(registry) == 7
    busy = opened("10.1.0.0")
    with busy.busy:  # a session at work is evicted last
        registry.register(busy, "busy")
        for i in range(3):
            registry.register(opened("10.1.0.0"), f"more{i}")
        assert not busy.closed and others[0].closed


def test_idle_api_sessions_expire_and_browser_tabs_stay(opened):
    from cmce.serve.sessions import SessionRegistry

    clock = Clock()
    registry = SessionRegistry(max_sessions=10, clock=clock)
    api, tab, recent = (registry.register(opened(), key) for key in ("api", "tab", "recent"))
    clock.now += 100
    registry.touch("recent", recent)
    clock.now += 1
    assert registry.expire_idle(60, has_heartbeat=lambda key: key == "tab") == ["api"]
    assert api.closed and "after 60 s without a request" in api.dropped
    assert not tab.closed and not recent.closed


# --------------------------------------------------------------------------- temporary files


def test_upload_field_leaves_no_empty_file_per_upload(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from gradio.data_classes import FileData, ListFiles

    from cmce.serve.components import without_stray_files

    field = without_stray_files(gr.File(file_count="multiple", file_types=["image"]))
    cache = tmp_path / "cache"
    cache.mkdir()
    field.GRADIO_CACHE = str(cache)
    photos = [FileData(path=str(tmp_path / f"p{i}.jpg")) for i in range(3)]
    assert field.preprocess(ListFiles(root=photos)) == [p.path for p in photos]
    assert list(cache.iterdir()) == []
    with pytest.raises(gr.Error, match="Invalid file type"):
        field.preprocess(ListFiles(root=[FileData(path=str(tmp_path / "notes.txt"))]))
    with pytest.raises(ValueError, match="gr.File of type 'filepath'"):
        without_stray_files(gr.File(type="binary"))


def test_gradio_cache_is_a_folder_of_this_process(tmp_path):
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    owner = own_gradio_cache(env)
    folder = Path(env["GRADIO_TEMP_DIR"])
    assert folder.parent == tmp_path / "gradio" and folder.name.startswith("cmce-gradio-")
    (folder / "upload").mkdir()
    (folder / "upload" / "photo.jpg").write_bytes(os.urandom(100))
    owner.cleanup()
    assert not folder.exists() and [p.name for p in (tmp_path / "gradio").iterdir()] == []


def test_a_query_photo_on_an_empty_gallery_is_detected_once(engine, lfw_dir):
    """The faces shown for a query on an empty gallery: a flood's repeated photo is not detected again."""
    from conftest import lfw_people

    from cmce.gallery.searchable import detect_query
    from cmce.io.limits import ImageLimits
    from cmce.serve.preview import FacesPreview

    first, second = sorted(lfw_people(lfw_dir, 1, min_images=2)[0].glob("*.jpg"))[:2]
    preview = FacesPreview(ImageLimits(), size=1)
    shown = preview.photo(engine, str(first), first.name)
    again = preview.photo(engine, str(first), "the same photo under another name.jpg")
    assert preview.detections == 1 and len(shown.faces) >= 1
    assert shown.faces == detect_query(engine, str(first), first.name).faces  # what a search would find
    assert [f.box for f in again.faces] == [f.box for f in shown.faces] and again.faces[0].source == again.name
    assert (again.image == shown.image).all()
    preview.photo(engine, str(second), second.name)  # the only place goes to the second photo
    preview.photo(engine, str(first), first.name)
    assert preview.detections == 3


def test_an_empty_gallery_is_said_before_the_photo_is_read(engine):
    """A flood's new sessions search empty galleries: answered without decoding or detecting anything."""
    from cmce.errors import GalleryError
    from cmce.gallery.memory import Gallery

    with pytest.raises(GalleryError, match="the gallery is empty"):
        Gallery(engine).search_image(b"not even an image")


def test_a_closed_sessions_gradio_state_is_dropped_not_kept_an_hour():
    """Gradio's per-session copy of the page (and the gr.State values) goes once the heartbeat closed."""
    from types import SimpleNamespace

    import gradio as gr
    from gradio.state_holder import StateHolder

    from cmce.serve.gate import forget_closed_session

    deleted = []
    with gr.Blocks() as blocks:
        state = gr.State(None, delete_callback=deleted.append)
        gr.Textbox("a component whose configuration every session copies")
    holder = StateHolder()
    holder.set_blocks(blocks)
    app = SimpleNamespace(state_holder=holder, get_blocks=lambda: blocks)
    holder["open"][state._id] = "still in use"
    holder["closed"][state._id] = "the gallery of a closed page"
    holder["closed"].is_closed = True
    blocks._queue.pending_event_ids_session["closed"] = {"an event still running"}
    assert not forget_closed_session(app, "open") and not forget_closed_session(app, "closed")
    assert set(holder.session_data) == {"open", "closed"} and deleted == []
    blocks._queue.pending_event_ids_session["closed"].clear()
    assert forget_closed_session(app, "closed") and not forget_closed_session(app, "closed")
    assert set(holder.session_data) == {"open"} and deleted == ["the gallery of a closed page"]
    assert "closed" not in blocks._queue.pending_event_ids_session
