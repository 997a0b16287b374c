"""The app against a stranger's inputs (issue 24): a decompression bomb as the search photo is refused
before decoding with little memory, and a corpus of malformed inputs over every API endpoint gets
no blank error, no server traceback, no leak and no ``/load_bundle`` oracle
(``tests/harness/malformed_corpus.py``, whose ``--json`` run feeds ``docs/public-space.md``).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, server_pid, write_bilevel_png

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

pytestmark = pytest.mark.e2e

MIB = 2**20
QUERY = ROOT / "assets" / "examples" / "queries" / "Eileen_Collins_04.jpg"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _PeakRss:
    """The server's largest resident memory while the block runs, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, _rss(pid), threading.Event()

    def __enter__(self) -> _PeakRss:
        self.base = _rss(self.pid)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_a_query_bomb_is_refused_before_decoding(app_server, tmp_path):
    """PNGs of 79, 100 and 179 megapixels (a few KB each) as the search photo: each answered with a
    message naming its size, while the server's memory rises by less than 50 MiB (issue 24: +373 MiB
    and +1,070 MiB when ``gr.Image`` decoded them first)."""
    pid = server_pid(app_server["url"])
    assert pid is not None, "the app's process was not found"
    client = Client(app_server["url"], verbose=False)
    client.predict(name="Two pioneers, clean (5 photos)", api_name="/load_example_gallery")
    client.predict(image=handle_file(str(QUERY)), api_name="/search")  # detector and models warm
    for side in (8_900, 10_000, 13_380):  # 79.2, 100 and 179.0 megapixels
        bomb = write_bilevel_png(tmp_path / f"bomb_{side}.png", side)
        assert bomb.stat().st_size < 100_000
        with _PeakRss(pid) as rss:
            _, _, html, result = client.predict(image=handle_file(str(bomb)), api_name="/search")
        rise = (rss.peak - rss.base) / MIB
        print(f"{side}x{side}: {bomb.stat().st_size / 1024:.0f} KB, server RSS +{rise:.1f} MiB; {result['error']!r}")
        assert f"{side}x{side} = {side * side:,} pixels" in result["error"], result
        assert "refused before decoding" in result["error"] and "refused before decoding" in html
        assert rise < 50, f"the server's memory rose by {rise:.0f} MiB for a {side}x{side} bomb"
    client.close()


def test_malformed_corpus_gets_no_blank_error_no_traceback_no_leak(app_server):
    """The whole corpus (about 150 cases over every named endpoint, gradio_client and raw HTTP)."""
    sys.path.insert(0, str(ROOT / "tests" / "harness"))
    import malformed_corpus

    report = malformed_corpus.run(app_server["url"], app_server["log"])
    for f in report["findings"]:
        print(f"FINDING {f['via']} {f['endpoint']} {f['case']}: {f['outcome']} {f['leaks']} {f['answer']!r}")
    assert set(report["endpoints"]) >= {"/search", "/index_gallery", "/load_bundle", "/load_example_gallery"}
    assert report["cases"] >= 140
    assert report["via"]["http"]["named"] >= 50 and report["via"]["gradio_client"]["named"] >= 40
    assert report["blank"] == 0 and report["leaks"] == 0, report["findings"]
    assert report["tracebacks"] == 0
    assert not report["bundle_oracle"]["told_apart"], report["bundle_oracle"]
