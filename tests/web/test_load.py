"""Eight gradio_client sessions at once (tests/harness/load_test.py at a small size), session
clean-up, and a corrupt bundle that leaves the current one in use.

The load test runs against ``app_server`` (conftest). Session expiry and local bundle
folders need other settings, so those tests start a second app with
``CMCE_SESSION_TTL`` small and ``CMCE_ALLOW_LOCAL_BUNDLES=1``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, app_bundle, launch_app, lfw_people, server_pid

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("load_test", ROOT / "tests" / "harness" / "load_test.py")
load_test = importlib.util.module_from_spec(_spec)
sys.modules["load_test"] = load_test  # dataclasses look their module up by name
_spec.loader.exec_module(load_test)

SESSION_TTL_S = 20


def _session_dirs(tmp: Path) -> set[Path]:
    return set(tmp.glob("cmce-session-*"))


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


# --------------------------------------------------------------------------- load


def test_check_loopback():
    for url in ("http://127.0.0.1:7860/", "http://127.3.2.1/", "http://localhost:80", "http://[::1]:7860/"):
        assert load_test.check_loopback(url) == url
    for url in ("http://10.0.0.1:7860/", "https://huggingface.co/spaces/x/y", "http://0.0.0.0:7860",
                "http://[::2]/", "file:///etc/passwd", "http://127.0.0.1.example.com/"):
        with pytest.raises(load_test.LoadTestError):
            load_test.check_loopback(url)


def test_percentile():
    assert load_test.percentile([1, 2, 3, 4], 50) == 2.5
    assert load_test.percentile([1, 2, 3, 4], 100) == 4
    assert load_test.percentile([5], 95) == 5


def test_people_are_disjoint(lfw_dir):
    groups = load_test.assign_people(lfw_dir, clients=8, people_per_client=2)
    names = [p.name for g in groups for p in g]
    assert len(names) == len(set(names)) == 16
    assert all(p.queries and not set(p.queries) & set(p.gallery) for g in groups for p in g)


def test_eight_sessions_at_once(app_server, lfw_dir):
    """8 clients x (2 people x 2 images, 1 search): no errors, each sees only its own gallery."""
    before = _session_dirs(app_server["tmp"])
    pid = server_pid(app_server["url"])
    report = load_test.run_load(app_server["url"], lfw_dir, clients=8, images_per_client=4,
                                searches_per_client=1, max_seconds=240, pid=pid)
    print(load_test.format_report(report))
    assert report.errors == [] and report.violations == []
    assert report.requests == 16
    assert all(o.results == 1 for o in report.outcomes)
    if pid is not None and report.rss_before_kib and report.rss_after_kib:
        assert report.rss_after_kib - report.rss_before_kib < 1.5 * 1024 * 1024
    # Each client closes its heartbeat when done: the app unloads the session, deleting its folder.
    assert _wait_until(lambda: not _session_dirs(app_server["tmp"]) - before, 60), \
        sorted(_session_dirs(app_server["tmp"]) - before)


def test_short_soak(app_server, lfw_dir):
    """tests/harness/load_test.py --soak at a small size: 6 clients for 30 s, each cycling sessions that index,
    search, switch the bundle and close. No errors, no foreign matches; every session folder is gone
    afterwards. (The 10-minute, 32-client soak and its memory and disk figures are in docs/public-space.md.)"""
    tmp = app_server["tmp"]
    before = _session_dirs(tmp)
    pid = server_pid(app_server["url"])
    report = load_test.run_soak(app_server["url"], lfw_dir, clients=6, seconds=30, pid=pid,
                                watch=[tmp, app_server["root"] / "gradio"], sample_s=5)
    print(load_test.format_soak(report))
    assert report.errors == [] and report.violations == []
    assert report.cycles >= 6 and report.latencies("/load_bundle") and report.latencies("close")
    assert sum(o.correct for o in report.outcomes) >= 0.9 * sum(o.results for o in report.outcomes)
    assert len(report.samples) >= 5
    assert _wait_until(lambda: not _session_dirs(tmp) - before, 60), sorted(_session_dirs(tmp) - before)
    doc = load_test.soak_json(report, url=app_server["url"], sample_s=5)  # what --json writes
    assert doc["sessions"] == report.cycles and doc["requests"] == report.requests and doc["errors"] == 0
    assert doc["endpoints"]["/search"]["n"] == len(report.latencies("/search")) and len(doc["samples"]) >= 5
    assert doc["rss"]["after_warmup_mib"] is not None


# --------------------------------------------------------------------------- a second app


@pytest.fixture(scope="module")
def short_ttl_server(tmp_path_factory) -> Iterator[dict]:
    """``python app.py`` like ``app_server``, with a short session TTL and local bundles allowed."""
    bundle = app_bundle()
    if bundle is None:
        pytest.skip("no bundle built yet")
    with launch_app(tmp_path_factory.mktemp("app-ttl"), CMCE_SESSION_TTL=str(SESSION_TTL_S),
                    CMCE_ALLOW_LOCAL_BUNDLES="1", CMCE_BUNDLE=str(bundle)) as server:
        yield server


@pytest.fixture(scope="module")
def two_people(lfw_dir):
    return lfw_people(lfw_dir, 2)


def test_idle_session_expires(short_ttl_server, two_people):
    """A client that stays connected but idle past CMCE_SESSION_TTL loses its session folder."""
    tmp = short_ttl_server["tmp"]
    client = Client(short_ttl_server["url"], verbose=False)
    try:
        _, report = client.predict(files=[handle_file(str(f)) for f in sorted(two_people[0].glob("*.jpg"))[:2]],
                                   api_name="/index_gallery")
        assert report["files"] == 2
        mine = _session_dirs(tmp)
        assert mine, "the session has no folder"
        assert _wait_until(lambda: not mine & _session_dirs(tmp), SESSION_TTL_S + 30), sorted(mine)
        # the folder goes first and the log line just after: wait for it rather than race it
        assert _wait_until(lambda: "session closed" in short_ttl_server["log"].read_text(), 10)
        # The expired session's gallery is gone: searching now finds an empty gallery.
        query = sorted(two_people[0].glob("*.jpg"))[2]
        _, _, _, result = client.predict(image=handle_file(str(query)), api_name="/search")
        assert "empty" in result["error"]
    finally:
        client.close()


def test_corrupt_bundle_keeps_current_bundle(short_ttl_server, two_people, tmp_path):
    corrupt = tmp_path / "corrupt-bundle"
    shutil.copytree(short_ttl_server["bundle"], corrupt)
    weights = corrupt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    weights.write_bytes(bytes(data))

    client = Client(short_ttl_server["url"], verbose=False)
    try:
        client.predict(files=[handle_file(str(f)) for p in two_people for f in sorted(p.glob("*.jpg"))[:2]],
                       api_name="/index_gallery")
        _, note, *_ = client.predict(repo_id=str(corrupt), revision="", api_name="/load_bundle")
        assert "Not loaded" in note and "current bundle stays in use" in note, note
        assert "model.safetensors" in note and "checksum" in note, note  # which file, and why
        query = sorted(two_people[1].glob("*.jpg"))[2]
        _, _, _, result = client.predict(image=handle_file(str(query)), api_name="/search")
        assert result["views"]["ensemble"]["matches"][0]["label"] == two_people[1].name
    finally:
        client.close()
