"""Send one oversized upload to a running app and report how it is cut off (loopback only).

Announces and streams ``--mb`` MiB of a fake JPEG to ``/gradio_api/upload`` in 1 MiB
chunks, stops sending as soon as the server answers or closes, and prints the HTTP
status, the server's message, how many MiB were sent and the seconds it took; with
``--watch`` (the app's GRADIO_TEMP_DIR), how many bytes were left on the server's disk::

    python tests/harness/upload_cap_check.py --url http://127.0.0.1:7860/ --mb 286 --watch $GRADIO_TEMP_DIR
"""

from __future__ import annotations

import argparse
import http.client
import select
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import DEFAULT_URL, LoadTestError, check_loopback, disk_bytes  # noqa: E402

MIB = 2**20


def send_oversized(url: str, mb: int) -> tuple[int | None, str, int, float]:
    """(HTTP status or None, message, MiB sent, seconds) of one ``mb`` MiB upload."""
    parsed = urllib.parse.urlparse(check_loopback(url))
    boundary = "cmcecapcheck"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"huge.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=120)
    start = time.monotonic()
    conn.putrequest("POST", parsed.path.rstrip("/") + "/gradio_api/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(head) + mb * MIB))
    conn.endheaders()
    conn.send(head)
    sent = 0
    chunk = b"\xff" * MIB
    try:
        while sent < mb:
            if select.select([conn.sock], [], [], 0)[0]:  # the server answered (or closed) early
                break
            conn.send(chunk)
            sent += 1
        response = conn.getresponse()
        status, message = response.status, response.read().decode(errors="replace")
    except OSError as e:  # reset while sending: the server stopped reading
        status, message = None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return status, message, sent, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--mb", type=int, default=286)
    parser.add_argument("--watch", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    try:
        before = disk_bytes(args.watch)
        status, message, sent, seconds = send_oversized(args.url, args.mb)
    except LoadTestError as e:
        print(f"upload_cap_check: {e}", file=sys.stderr)
        return 2
    print(f"HTTP {status}: {message.strip()[:300]}")
    print(f"sent {sent} of {args.mb} MiB in {seconds:.2f} s")
    if args.watch:
        print(f"server disk use grew by {(disk_bytes(args.watch) - before) / MIB:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
