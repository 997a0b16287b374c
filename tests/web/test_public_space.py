"""The app as a public Space: caps at the HTTP layer, per-session quotas, the bundle
allow-list and rate limit, separate queues for indexing and search, a clear "busy"
answer when the queue is full, and temporary folders that never outlive the app.

Each test group starts its own ``python app.py`` (conftest ``launch_app``) with small
caps set through the ``CMCE_*`` variables, so a few small uploads reach them.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import launch_app, lfw_people, server_pid

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.e2e

MIB = 2**20


@pytest.fixture(scope="module")
def people(lfw_dir):
    return lfw_people(lfw_dir, 12)


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory) -> Iterator[dict]:
    """An app with 2 MiB per request (so per upload), 3 MiB and 6 faces per session-hour, 2 bundle
    switches per session-hour, one Hub id allowed, one indexing job at a time (2 in, taking turns) and
    2 waiting requests."""
    with launch_app(tmp_path_factory.mktemp("app-capped"), CMCE_MAX_REQUEST_MB="2", CMCE_QUOTA_MB_PER_HOUR="3",
                    CMCE_QUOTA_ENTRIES_PER_HOUR="6", CMCE_BUNDLE_LOADS_PER_HOUR="2",
                    CMCE_BUNDLES="someorg/allowed-bundle", CMCE_INDEX_CONCURRENCY="1",
                    CMCE_SEARCH_CONCURRENCY="1", CMCE_QUEUE_SIZE="2",
                    CMCE_CLIENT_JOBS="50") as server:  # its clients share one address: per-client caps off
        yield server


def _junk(tmp_path: Path, name: str, size: int) -> str:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return str(path)


def _uploads_on_disk(server: dict) -> int:
    """Bytes of every file in the app's Gradio upload folder."""
    root = server["root"] / "gradio"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def test_oversized_upload_is_cut_off_while_streaming(capped_server, tmp_path):
    """A 20 MiB body to /upload (cap 2 MiB) is refused with 413 and a message naming the cap;
    no more than the cap is ever written."""
    before = _uploads_on_disk(capped_server)
    boundary = "cmceboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    host, port = capped_server["url"].rstrip("/").rsplit("/", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/gradio_api/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + 20 * MIB))  # announces 20 MiB ...
    conn.endheaders()
    conn.send(head)
    for _ in range(3):  # ... sends 3 MiB, then waits for the answer
        conn.send(b"\xff" * MIB)
    response = conn.getresponse()
    assert response.status == 413
    assert f"File size exceeded maximum allowed size of {2 * MIB} bytes" in response.read().decode()
    conn.close()
    assert _uploads_on_disk(capped_server) - before < 2 * MIB

    client = Client(capped_server["url"], verbose=False)  # the same through gradio_client
    with pytest.raises(Exception, match="exceeds the maximum file size of 2097152 bytes|413|File size exceeded"):
        client.predict(files=[handle_file(_junk(tmp_path, "big.jpg", 3 * MIB))], api_name="/index_gallery")


def test_request_cap_and_byte_quota(capped_server, tmp_path):
    client = Client(capped_server["url"], verbose=False)
    two = [handle_file(_junk(tmp_path, f"Junk_Person_000{i}.jpg", int(1.2 * MIB))) for i in (1, 2)]
    with pytest.raises(AppError, match=r"2\.4 MiB, over the 2\.0 MiB allowed per indexing request"):
        client.predict(files=two, api_name="/index_gallery")
    for i in range(2):  # 1.4 MiB each: 2.8 MiB of the 3 MiB an hour (junk: read, refused, but counted)
        _, report = client.predict(files=[handle_file(_junk(tmp_path, f"junk{i}.jpg", int(1.4 * MIB)))],
                                   api_name="/index_gallery")
        assert report["files"] == 1 and report["added"] == 0
    with pytest.raises(AppError, match=r"quota reached: .*bytes indexed.*within 60 min.*try again in"):
        client.predict(files=[handle_file(_junk(tmp_path, "junk3.jpg", int(0.5 * MIB)))], api_name="/index_gallery")
    other = Client(capped_server["url"], verbose=False)  # a quota is per session
    _, report = other.predict(files=[handle_file(_junk(tmp_path, "junk4.jpg", int(0.5 * MIB)))],
                              api_name="/index_gallery")
    assert report["files"] == 1


def test_face_quota(capped_server, people):
    client = Client(capped_server["url"], verbose=False)
    photos = [handle_file(str(f)) for p in people[:3] for f in sorted(p.glob("*.jpg"))[:2]]
    _, report = client.predict(files=photos, api_name="/index_gallery")
    assert report["added"] >= 6
    with pytest.raises(AppError, match=r"quota reached: .*faces added"):
        client.predict(files=[handle_file(str(sorted(people[3].glob("*.jpg"))[0]))], api_name="/index_gallery")


def test_bundle_allow_list_and_rate_limit(capped_server):
    if not (capped_server["bundle"].parent / "facenet-query" / "config.json").is_file():
        pytest.skip("needs the shipped facenet-query bundle")
    client = Client(capped_server["url"], verbose=False)
    _, note, *_ = client.predict(repo_id="stranger/huge-bundle", revision="", api_name="/load_bundle")
    assert "Not loaded" in note and "not among the bundles this server may load" in note, note
    _, note, *_ = client.predict(repo_id="someorg/allowed-bundle", revision="", api_name="/load_bundle")
    assert "Not loaded" in note and "HF_HUB_OFFLINE is set" in note, note  # allowed; offline fails fast
    for name in ("facenet-query", "sface-query"):  # 2 switches an hour
        _, note, *_ = client.predict(repo_id=name, revision="", api_name="/load_bundle")
        assert "Not loaded" not in note, note
    _, note, *_ = client.predict(repo_id="facenet-query", revision="", api_name="/load_bundle")
    assert "Not loaded" in note and "quota reached" in note and "bundle loads" in note, note


def test_search_is_not_stalled_by_indexing_and_a_full_queue_says_busy(capped_server, people):
    """One client indexes 24 photos (one indexing slot); another searches meanwhile and is answered
    before the indexing ends. Indexing requests beyond the 2 inside (taking turns) and the 2 that may
    wait are refused at once."""
    searcher = Client(capped_server["url"], verbose=False)
    searcher.predict(files=[handle_file(str(sorted(people[4].glob("*.jpg"))[0]))], api_name="/index_gallery")
    query = handle_file(str(sorted(people[4].glob("*.jpg"))[1]))

    indexers = [Client(capped_server["url"], verbose=False) for _ in range(9)]
    big = [handle_file(str(f)) for p in people[5:12] for f in sorted(p.glob("*.jpg"))[:3]]
    jobs = [indexers[0].submit(files=big, api_name="/index_gallery")]
    deadline = time.monotonic() + 60
    while jobs[0].status().code.name not in ("PROCESSING", "PROGRESS") and time.monotonic() < deadline:
        time.sleep(0.2)
    start = time.monotonic()
    *_, result = searcher.predict(image=query, api_name="/search")
    searched = time.monotonic() - start
    assert result["views"]["ensemble"]["matches"][0]["label"] == people[4].name
    assert not jobs[0].done(), "indexing ended before the search: make the gallery larger"

    small = [handle_file(str(sorted(people[5].glob("*.jpg"))[0]))]
    jobs += [c.submit(files=small, api_name="/index_gallery") for c in indexers[1:]]
    outcomes = []
    for job in jobs:
        try:
            job.result(timeout=300)
            outcomes.append("ok")
        except Exception as e:  # noqa: BLE001 - the refusal is what is checked
            outcomes.append(str(e))
    busy = [o for o in outcomes if o != "ok"]
    assert outcomes[0] == "ok" and busy, outcomes
    assert all("Queue is full! Please try again." in o for o in busy), busy
    print(f"search answered in {searched:.2f} s while indexing ran; {len(busy)} of 8 queued jobs told busy")


# --------------------------------------------------------------------------- temporary folders


def _cmce_temp(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("cmce-"))


def test_temp_folders_removed_at_exit_and_on_the_next_start(tmp_path, people):
    """kill -9 leaves the session and example folders; the next start removes them; a normal
    stop (SIGTERM) removes its own. Three starts leave nothing."""
    photo = handle_file(str(sorted(people[0].glob("*.jpg"))[0]))
    with launch_app(tmp_path) as server:
        Client(server["url"], verbose=False).predict(files=[photo], api_name="/index_gallery")
        left = _cmce_temp(server["tmp"])
        assert any(n.startswith("cmce-session-") for n in left) and any(n.startswith("cmce-examples-") for n in left)
        os.kill(server_pid(server["url"]), signal.SIGKILL)
        time.sleep(1)
        assert _cmce_temp(server["tmp"]) == left  # killed: nothing could clean up
    with launch_app(tmp_path) as server:
        now = _cmce_temp(server["tmp"])
        assert not set(now) & set(left), now  # swept at start
        client = Client(server["url"], verbose=False)
        client.predict(files=[photo], api_name="/index_gallery")
        threading.Event().wait(1)
    assert _cmce_temp(tmp_path / "tmp") == []  # SIGTERM: removed at exit
