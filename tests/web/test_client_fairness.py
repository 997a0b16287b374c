"""Fairness per client and caps that hold, against a running app (issue 24, parts 1, 2 and 7).

Each group starts its own ``python app.py`` (conftest ``launch_app``) that believes
``X-Forwarded-For`` from loopback (``CMCE_TRUSTED_PROXIES=127.0.0.1``), as a Space's proxy is
believed, so that clients on this one machine have addresses of their own:

* a flood (one address, a new session on every request, raw queue joins) while other users
  search: they all get answers, their p95 is not blown up, the flood is refused with 429 (the
  issue's 2x p95 target is a speed goal: ``tests/harness/flood_test.py`` measures it, docs/flood.json);
* the session cap: live sessions (their folders) never exceed ``CMCE_MAX_SESSIONS``, and an
  evicted client is told its gallery was dropped; idle API sessions expire;
* the upload cap: one client's upload bytes on disk never exceed ``CMCE_UPLOAD_MB_PER_CLIENT``;
  old uploads are deleted after the retention;
* nothing left in the temporary folders after a stop, or after ``kill -9`` and a restart, and no
  zero-byte ``tmp*`` files while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, launch_app, lfw_people, server_pid

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

pytestmark = pytest.mark.e2e

MIB = 2**20
PROXY: dict[str, str] = {}  # launch_app trusts loopback's X-Forwarded-For already
sys.path.insert(0, str(ROOT / "tests" / "harness"))


def _client(server: dict, address: str) -> Client:
    return Client(server["url"], verbose=False, headers={"X-Forwarded-For": address})


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _upload(server: dict, address: str, name: str, data: bytes) -> tuple[int, dict | list]:
    """POST one file to /gradio_api/upload as ``address``: (status, JSON answer)."""
    boundary = "cmcefairness"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(server["url"] + "gradio_api/upload", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-Forwarded-For": address})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def people(lfw_dir):
    return lfw_people(lfw_dir, 8)


def test_a_flood_from_one_client_leaves_the_others_served(tmp_path, lfw_dir):
    """15 s without, then 15 s with a flood of raw queue joins (16 at once, a new session each):
    the other users' searches all succeed, their p95 is not blown up, and the flood is refused.

    Without the gate no search succeeded during the flood (docs/public-space.md, "before"). The 2x p95
    target is checked by the benchmark (40 s per phase, three runs); 15 s gives about 50 searches, whose
    p95 is their third slowest, so on a shared CI machine the guard here is 4x (one CI run gave 2.09)."""
    import flood_test

    with launch_app(tmp_path, **PROXY) as server:
        doc = flood_test.run(server["url"], lfw_dir, seconds=15, users=3, workers=16)
        log = server["log"].read_text()
    print(json.dumps(doc, indent=1))
    assert doc["baseline"]["success_rate"] == 1.0, doc["baseline"]
    assert doc["flood"]["success_rate"] >= 0.99, doc["flood"]
    assert doc["p95_ratio"] <= 4.0, doc
    refused = doc["flood_requests"].get("429", 0)
    # most of the flood refused, none for a full queue; how many get in depends on how fast the admitted
    # ones finish (an empty gallery's query opens no session and detects a repeated photo once: 81% refused)
    assert refused >= 0.5 * doc["flood_total"] and "503" not in doc["flood_requests"], doc["flood_requests"]
    assert "Queue is full" not in log and "Traceback" not in log


def test_session_cap_holds_and_an_evicted_client_is_told(tmp_path, people):
    """CMCE_MAX_SESSIONS=4, 2 per client: 3 clients open 12 sessions; live session folders never exceed 4;
    the first client's evicted session says its gallery was dropped, then works again."""
    photo = handle_file(str(sorted(people[0].glob("*.jpg"))[0]))
    with launch_app(tmp_path, CMCE_MAX_SESSIONS="4", CMCE_SESSIONS_PER_CLIENT="2", **PROXY) as server:
        first = _client(server, "10.9.0.1")
        first.predict(files=[photo], api_name="/index_gallery")
        live = []
        for i in range(12):
            _client(server, f"10.9.0.{1 + i % 3}").predict(files=[photo], api_name="/index_gallery")
            live.append(len(list(server["tmp"].glob("cmce-session-*"))))
        assert max(live) <= 4, live
        with pytest.raises(Exception, match="Your gallery was dropped: .*Index your photos again"):
            first.predict(image=photo, api_name="/search")
        _, report = first.predict(files=[photo], api_name="/index_gallery")  # told once, then a new session
        assert report["added"] >= 1
        assert len(list(server["tmp"].glob("cmce-session-*"))) <= 4


def _component_server(server: dict, address: str, session_hash: str) -> int:
    """POST /gradio_api/component_server naming ``session_hash`` as ``address``: the HTTP status.
    Gradio builds a state for that session before it looks at the rest."""
    body = {"session_hash": session_hash, "component_id": 1, "fn_name": "x", "data": None}
    request = urllib.request.Request(server["url"] + "gradio_api/component_server", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "X-Forwarded-For": address})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


def test_new_sessions_from_one_client_drop_no_one_elses_gallery(tmp_path, people):
    """CMCE_MAX_SESSIONS=6, so Gradio keeps the states of 6 sessions: a user indexes a photo, then another
    client names 20 new sessions (Gradio's store drops the user's state, least recently used first); her
    next search still finds her gallery (before: "The gallery is empty"). Past the requests per minute
    the other client is refused (429)."""
    photos = sorted(people[2].glob("*.jpg"))
    with launch_app(tmp_path, CMCE_MAX_SESSIONS="6", CMCE_CLIENT_REQUESTS_PER_MINUTE="40") as server:
        user = _client(server, "10.8.0.1")
        _, report = user.predict(files=[handle_file(str(photos[0]))], api_name="/index_gallery")
        assert report["added"] == 1
        codes = [_component_server(server, "10.8.0.66", uuid.uuid4().hex) for _ in range(20)]
        assert 429 not in codes, codes  # all 20 built a state (Gradio then answers 404: no such function)
        out = user.predict(image=handle_file(str(photos[1])), api_name="/search")
        assert "gallery is empty" not in str(out) and people[2].name in str(out), str(out)[:600]
        codes = [_component_server(server, "10.8.0.66", uuid.uuid4().hex) for _ in range(30)]
        assert codes.count(429) >= 10, codes  # 40 a minute: the last ones refused
        log = server["log"].read_text()
    assert "put back" in log and "Traceback" not in log


def _call(server: dict, address: str, api: str, data: list) -> str:
    """A raw HTTP API call (``/gradio_api/call/{api}``, no heartbeat): the answer's event stream."""
    request = urllib.request.Request(server["url"] + f"gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "X-Forwarded-For": address})
    with urllib.request.urlopen(request, timeout=60) as answer:
        event_id = json.loads(answer.read())["event_id"]
    with urllib.request.urlopen(server["url"] + f"gradio_api/call/{api}/{event_id}", timeout=300) as answer:
        return answer.read().decode()


def test_idle_api_sessions_expire_and_heartbeat_sessions_stay(tmp_path, people):
    """CMCE_API_SESSION_IDLE_S=4: a raw HTTP call's session (no heartbeat) is closed once idle; a
    gradio_client session (it keeps Gradio's heartbeat open, as the page does) is not."""
    photo = sorted(people[1].glob("*.jpg"))[0]
    with launch_app(tmp_path, CMCE_API_SESSION_IDLE_S="4") as server:
        client = _client(server, "10.9.1.2")
        client.predict(files=[handle_file(str(photo))], api_name="/index_gallery")
        kept = set(server["tmp"].glob("cmce-session-*"))
        status, uploaded = _upload(server, "10.9.1.1", photo.name, photo.read_bytes())
        assert status == 200
        stream = _call(server, "10.9.1.1", "index_gallery",
                       [[{"path": uploaded[0], "meta": {"_type": "gradio.FileData"}}], None, "", None])
        assert "event: complete" in stream, stream[-500:]
        raw = set(server["tmp"].glob("cmce-session-*")) - kept
        assert len(raw) == 1
        deadline = time.monotonic() + 30
        while any(p.exists() for p in raw) and time.monotonic() < deadline:
            time.sleep(1)
        assert not any(p.exists() for p in raw), "the idle API session was not closed"
        assert all(p.exists() for p in kept)
        *_, result = client.predict(image=handle_file(str(sorted(people[1].glob("*.jpg"))[1])), api_name="/search")
        assert result["views"]["ensemble"]["matches"][0]["label"] == people[1].name


def test_one_clients_uploads_never_exceed_its_cap_on_disk(tmp_path):
    """CMCE_UPLOAD_MB_PER_CLIENT=3: 10 uploads of 1 MiB from one address; the upload cache never holds more
    than 3 MiB, the 4th and later are refused with 429 and when to retry, another client still uploads;
    after the retention (8 s) the files are deleted and the client may upload again."""
    with launch_app(tmp_path, CMCE_UPLOAD_MB_PER_CLIENT="3", CMCE_UPLOAD_RETENTION_S="8", **PROXY) as server:
        cache = server["root"] / "gradio"
        base = sum(p.stat().st_size for p in _files(cache))
        statuses, on_disk = [], []
        for i in range(10):
            status, answer = _upload(server, "10.9.2.1", f"junk{i}.jpg", os.urandom(MIB - 4096))
            statuses.append(status)
            on_disk.append(sum(p.stat().st_size for p in _files(cache)) - base)
            if status != 200:
                assert answer["error"] == "too_many_requests" and "too many uploads from you" in answer["detail"]
                assert answer["retry_after_s"] >= 1
        assert statuses[:3] == [200] * 3 and set(statuses[3:]) == {429}, statuses
        assert max(on_disk) <= 3 * MIB, on_disk
        assert _upload(server, "10.9.2.2", "other.jpg", os.urandom(1000))[0] == 200  # another client
        deadline = time.monotonic() + 30
        while _upload(server, "10.9.2.1", "again.jpg", os.urandom(1000))[0] != 200:
            assert time.monotonic() < deadline, "the client's uploads were never released"
            time.sleep(1)
        assert sum(p.stat().st_size for p in _files(cache)) - base < MIB  # the old uploads were deleted


def test_nothing_left_after_a_stop_or_after_kill_9_and_a_restart(tmp_path, people):
    """Indexing leaves no zero-byte tmp* file in the upload cache; kill -9 leaves the cache and session
    folders, which the next start removes; a stop (SIGTERM) removes its own: no file left at all."""
    photos = [handle_file(str(p)) for p in sorted(people[2].glob("*.jpg"))[:3]]
    roots = (tmp_path / "gradio", tmp_path / "tmp")
    with launch_app(tmp_path, **PROXY) as server:
        client = _client(server, "10.9.3.1")
        for _ in range(2):
            client.predict(files=photos, api_name="/index_gallery")
        assert not [p for p in _files(roots[0]) if p.name.startswith("tmp") and p.stat().st_size == 0]
        assert _files(roots[0]) and list(roots[1].glob("cmce-session-*"))
        os.kill(server_pid(server["url"]), signal.SIGKILL)
        time.sleep(1)
        left = {p for root in roots for p in root.glob("cmce-*")}
        assert any(p.name.startswith("cmce-gradio-") for p in left)
    with launch_app(tmp_path, **PROXY) as server:
        _client(server, "10.9.3.1").predict(files=photos[:1], api_name="/index_gallery")
        now = {p for root in roots for p in root.glob("cmce-*")}
        assert not now & left, now & left  # swept at start
    assert [p for root in roots for p in _files(root)] == []  # stopped: nothing left
