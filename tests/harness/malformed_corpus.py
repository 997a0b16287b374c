"""Send a corpus of malformed inputs to every API endpoint of a running app and count blank errors.

Every named endpoint (``/gradio_api/info``) gets each case twice: through ``gradio_client`` and as
raw HTTP (``POST /gradio_api/call/NAME`` then its event stream). A case is a user's mistake: a
2x2 image, an empty or corrupt file, a text file as a photo, a decompression bomb, None, a wrong
type, NaN, infinities, out-of-range numbers, a 1 MB string, too few or too many inputs. Each
answer is classified:

* ``named``: refused with a message (an ``AppError`` with text, or a result carrying ``error``);
* ``answered``: a normal result (the input was usable after all, e.g. a threshold with reject_by none,
  or an indexing report that lists the file as skipped, with the reason);
* ``blank``: an error without a message (``{"error": null}``, a bare "Error", an empty message).

Then every answer (message or result) is searched for leaks: an absolute server path, or more
than ``ECHO_LIMIT`` characters of an echoed 1 MB string (Gradio's file outputs too: their path and URL
must name the app's alias of its cache folder, ``cmce.serve.pathalias``), and so are the page, its
configuration, the API's description, an upload's answer and a missing ``file=``. ``/load_bundle`` is asked for server
folders that exist and ones that do not: the answers must not tell them apart. With ``--log``
(the app's output), the server tracebacks printed during the run are counted. Loopback only::

    python tests/harness/malformed_corpus.py --url http://127.0.0.1:7860/ --log app.log --json docs/malformed-corpus.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import DEFAULT_URL, check_loopback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ECHO_LIMIT = 200  # characters of an echoed input a message may hold
HUGE = "x" * 1_000_000
# an absolute path of this machine: /tmp/..., /root/..., the repository's folder, ...
_SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:tmp|root|home|work|var|usr|etc|proc|opt|srv|private)/[\w.\-/]+")
_TRACEBACK = "Traceback (most recent call last)"
_REFUSED_NOTES = ("**Not loaded:**", "**Not switched:**")


def write_files(folder: Path) -> dict[str, Path]:
    """The malformed files of the corpus, and one good photo (for a gallery to search)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_bilevel_png  # the tests' streaming bomb writer
    from PIL import Image

    files = {
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a photo\n" * 10,
        "notes.txt": b"plain text\n",
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        "random.jpg": bytes(range(256)) * 8,
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    Image.new("RGB", (2, 2), (200, 150, 120)).save(folder / "tiny_2x2.png")
    out["tiny_2x2.png"] = folder / "tiny_2x2.png"
    png = folder / "truncated.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(png)
    png.write_bytes(png.read_bytes()[:80])
    out["truncated.png"] = png
    out["bomb_100mp.png"] = write_bilevel_png(folder / "bomb_100mp.png", 10_000)
    with zipfile.ZipFile(folder / "tiny.zip", "w") as z:
        z.write(out["tiny_2x2.png"], "Tiny_Person/tiny_2x2.png")
    out["tiny.zip"] = folder / "tiny.zip"
    (folder / "broken.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    out["broken.zip"] = folder / "broken.zip"
    with zipfile.ZipFile(folder / "bad_manifest.zip", "w") as z:  # a "downloaded gallery" that is not one
        z.writestr("manifest.json", "{not json")
        z.writestr("shards/entries-000000.parquet", b"PAR1" + b"\x00" * 32)
    out["bad_manifest.zip"] = folder / "bad_manifest.zip"
    with zipfile.ZipFile(folder / "traversal.zip", "w") as z:
        z.writestr("../../manifest.json", "{}")
    out["traversal.zip"] = folder / "traversal.zip"
    return out


def cases(files: dict[str, Path], handle_file: Callable) -> dict[str, list[tuple[str, dict]]]:
    """Endpoint -> (case name, keyword inputs for gradio_client) of the corpus."""
    f = {n: handle_file(str(p)) for n, p in files.items()}
    photo = handle_file(str(ROOT / "assets" / "examples" / "queries" / "Eileen_Collins_04.jpg"))
    search = {
        **{f"image {n}": {"image": f[n]} for n in ("empty.jpg", "text.jpg", "notes.txt", "corrupt.png", "random.jpg",
                                                   "tiny_2x2.png", "truncated.png", "bomb_100mp.png")},
        "image None": {"image": None},
        "image a string": {"image": "not a file"},
        "image a number": {"image": 42},
        "face -1": {"image": photo, "face": -1},
        "face 'abc'": {"image": photo, "face": "abc"},
        "face 1e9": {"image": photo, "face": 1e9},
        "face NaN": {"image": photo, "face": math.nan},
        "k 0": {"image": photo, "k": 0},
        "k 1000": {"image": photo, "k": 1000},
        "k NaN": {"image": photo, "k": math.nan},
        "k 'five'": {"image": photo, "k": "five"},
        "identity 1 MB": {"image": photo, "identity": HUGE},
        "identity a list": {"image": photo, "identity": ["a"]},
        "reject_by 'bogus'": {"image": photo, "reject_by": "bogus"},
        "reject_by 1 MB": {"image": photo, "reject_by": HUGE},
        "rate -1": {"image": photo, "reject_by": "rate", "rate": -1},
        "rate 5": {"image": photo, "reject_by": "rate", "rate": 5},
        "rate NaN": {"image": photo, "reject_by": "rate", "rate": math.nan},
        "rate inf": {"image": photo, "reject_by": "rate", "rate": math.inf},
        "threshold -1": {"image": photo, "reject_by": "threshold", "threshold": -1},
        "threshold 5": {"image": photo, "reject_by": "threshold", "threshold": 5},
        "threshold NaN": {"image": photo, "reject_by": "threshold", "threshold": math.nan},
        "threshold +inf": {"image": photo, "reject_by": "threshold", "threshold": math.inf},
        "threshold -inf": {"image": photo, "reject_by": "threshold", "threshold": -math.inf},
        "threshold 'abc'": {"image": photo, "reject_by": "threshold", "threshold": "abc"},
        "score 'bogus'": {"image": photo, "score": "bogus"},
        "unknown_by 'bogus'": {"image": photo, "unknown_by": "bogus"},
        "unknown_by 1 MB": {"image": photo, "unknown_by": HUGE},
    }
    index = {
        **{f"files [{n}]": {"files": [f[n]]} for n in ("empty.jpg", "text.jpg", "notes.txt", "corrupt.png",
                                                       "random.jpg", "tiny_2x2.png", "truncated.png",
                                                       "bomb_100mp.png", "tiny.zip", "broken.zip")},
        "files None": {"files": None},
        "files []": {"files": []},
        "files a string": {"files": "not a file"},
        "files a number": {"files": 42},
        "files [None]": {"files": [None]},
        "folder a dict": {"files": None, "folder": {"a": 1}},
        "folder_paths 1 MB": {"files": [f["tiny_2x2.png"]], "folder_paths": HUGE},
        "folder_paths a number": {"files": None, "folder_paths": 42},
    }
    example = {
        "name 'bogus'": {"name": "bogus"},
        "name None": {"name": None},
        "name 1 MB": {"name": HUGE},
        "name a number": {"name": 42},
    }
    bundle = {
        "repo_id 1 MB": {"repo_id": HUGE, "revision": ""},
        "repo_id a number": {"repo_id": 42, "revision": ""},
        "repo_id None": {"repo_id": None, "revision": None},
        "repo_id '../../etc'": {"repo_id": "../../etc", "revision": ""},
        "repo_id 'a/b' revision 1 MB": {"repo_id": "a/b", "revision": HUGE},
        "repo_id with a NUL": {"repo_id": "org/na\x00me", "revision": ""},
        "repo_id '~nobody/x'": {"repo_id": "~nobody/x", "revision": ""},
    }
    restore = {
        **{f"file {n}": {"file": f[n]} for n in ("empty.jpg", "text.jpg", "corrupt.png", "bomb_100mp.png", "tiny.zip",
                                                 "broken.zip", "bad_manifest.zip", "traversal.zip")},
        "file None": {"file": None},
        "file a string": {"file": "not a file"},
        "file a number": {"file": 42},
    }
    download = {"the session's gallery": {}}
    match = {
        "the ensemble's best match": {"column": "ensemble", "rank": 1},
        "column None": {"column": None, "rank": 1},
        "column ''": {"column": "", "rank": 1},
        "column 1 MB": {"column": HUGE, "rank": 1},
        "column a number": {"column": 42, "rank": 1},
        "column a list": {"column": ["ensemble"], "rank": 1},
        "rank 0": {"column": "ensemble", "rank": 0},
        "rank 11": {"column": "ensemble", "rank": 11},
        "rank NaN": {"column": "ensemble", "rank": math.nan},
        "rank 'abc'": {"column": "ensemble", "rank": "abc"},
        "rank None": {"column": "ensemble", "rank": None},
    }
    who = {"None": None, "''": "", "a number": 42, "1 MB": HUGE, "unknown 'nobody'": "nobody", "a list": ["a"]}
    people = {
        "/people_group": [("the session's gallery", {})],
        "/people_name": [(f"person {n}", {"person": v, "name": "Ada"}) for n, v in who.items()]
                        + [("name 1 MB", {"person": "nobody", "name": HUGE}), ("name None", {"person": "x", "name": None})],
        "/people_merge": [(f"person {n}", {"person": v, "other": "nobody-else"}) for n, v in who.items()]
                         + [("a person with itself", {"person": "nobody", "other": "nobody"})],
        "/people_split": [(f"person {n}", {"person": v}) for n, v in who.items()],
        "/people_forget": [(f"person {n}", {"person": v}) for n, v in who.items()],
        "/people_not": [(f"entry {n}", {"entry": v, "person": "nobody"}) for n, v in who.items()],
        "/people_find": [(f"name {n}", {"name": v}) for n, v in who.items()],
    }
    return {"/search": list(search.items()), "/index_gallery": list(index.items()),
            "/load_example_gallery": list(example.items()), "/load_bundle": list(bundle.items()),
            "/restore_gallery": list(restore.items()), "/download_gallery": list(download.items()),
            "/match_photo": list(match.items()), **people}


def _text_of(value) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def classify(message: str | None, result=None) -> str:
    """``blank``, ``named`` or ``answered`` for one answer (see the module's docstring)."""
    if message is not None or result is None:
        text = (message or "").strip()
        return "blank" if text in ("", "None", "null", "Error") else "named"
    if isinstance(result, (list, tuple)) and any(isinstance(r, dict) and r.get("error") for r in result):
        return "named"
    if isinstance(result, (list, tuple)) and any(isinstance(r, str) and r.startswith(_REFUSED_NOTES) for r in result):
        return "named"  # /load_bundle's refusal, in its note
    return "answered"


_FILE_DATA = re.compile(r'\{"path": "[^"]*", "url": "[^"]*"')  # a file output, as Gradio's FileData sends it


def file_outputs(text: str) -> int:
    """File outputs in an answer (Gradio's FileData: the file's path and its /file= URL, under the cache's alias)."""
    return len(_FILE_DATA.findall(text))


def leaks(text: str) -> list[str]:
    """Absolute server paths (Gradio's file outputs included: their path and URL name an alias) and
    over-long echoes of the 1 MB input."""
    found = [f"path {m}" for m in sorted(set(_SERVER_PATH.findall(text)))]
    if "x" * (ECHO_LIMIT + 1) in text:
        found.append(f"echo of {text.count('x' * 100) * 100}+ characters")
    return found


def run_client(url: str, corpus: dict, name_of_example: str) -> list[dict]:
    """Every case through gradio_client, in one session that holds an example gallery."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False, download_files=False)  # file outputs as the server sends them
    client.predict(name=name_of_example, api_name="/load_example_gallery")  # a gallery, so searches reach the detector
    rows = []
    for endpoint, items in corpus.items():
        for case, kwargs in items:
            message, result = None, None
            try:
                result = client.predict(**kwargs, api_name=endpoint)
            except AppError as e:
                message = getattr(e, "message", None) if getattr(e, "message", None) is not None else str(e)
                message = "" if message is None else str(message)
            except Exception as e:  # noqa: BLE001 - the client's own refusal (a value it cannot send)
                message = f"client: {type(e).__name__}: {str(e)[:200]}"
            text = message if message is not None else _text_of(result)
            rows.append({"via": "gradio_client", "endpoint": endpoint, "case": case, "outcome": classify(message, result),
                         "leaks": leaks(text), "file_outputs": file_outputs(text), "answer": _FILE_DATA.sub("{FILE", text)[:160]})
    client.close()
    return rows


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 120) -> tuple[int, str]:
    """(status, body text) of one request. A server that answers before reading the whole body (the
    per-client gate refusing a 1 MB POST with 429) closes the connection while it is being sent: its
    answer is read all the same, as a browser would."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                         headers={"Content-Type": "application/json"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer, if the server sent one, is still there to read
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def raw_call(url: str, endpoint: str, data) -> tuple[str | None, object]:
    """(error message or None, result) of one ``/gradio_api/call`` request with ``data`` as sent."""
    body = data if isinstance(data, bytes) else json.dumps({"data": data}).encode()
    status, text = _http("POST", f"{url}gradio_api/call{endpoint}", body)
    if status != 200:
        try:
            detail = json.loads(text).get("detail") or json.loads(text).get("error")
        except (ValueError, AttributeError):
            detail = text
        return f"HTTP {status}: {_text_of(detail)[:300]}", None
    event_id = json.loads(text)["event_id"]
    status, stream = _http("GET", f"{url}gradio_api/call{endpoint}/{event_id}")
    event, payload = None, None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    if event == "error":
        try:
            value = json.loads(payload) if payload else None
        except ValueError:
            value = payload
        return ("" if value is None else _text_of(value)), None
    return None, json.loads(payload) if payload else None


def run_raw(url: str, corpus: dict, info: dict) -> list[dict]:
    """Every case as raw HTTP: the inputs in the API's order (a file as Gradio's FileData of an upload),
    plus too few, too many and non-list inputs per endpoint."""
    upload_cache: dict[str, dict] = {}

    def uploaded(path: str) -> dict:
        if path not in upload_cache:
            boundary = "cmcecorpus"
            data = Path(path).read_bytes()
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{Path(path).name}\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
            request = urllib.request.Request(f"{url}gradio_api/upload", data=body, method="POST",
                                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                server_path = json.loads(response.read())[0]
            upload_cache[path] = {"path": server_path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}
        return upload_cache[path]

    def as_raw(value):
        if isinstance(value, dict) and value.get("meta", {}).get("_type") == "gradio.FileData" and "path" in value:
            return uploaded(value["path"])
        if isinstance(value, list):
            return [as_raw(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # JSON has no NaN: sent as the string a careless client would send
        return value

    rows = []
    for endpoint, items in corpus.items():
        params = info["named_endpoints"][endpoint]["parameters"]
        defaults = {p["parameter_name"]: p.get("parameter_default") for p in params}
        extra = [("too few inputs", []), ("too many inputs", [None] * (len(params) + 3)),
                 ("data not a list", {"a": 1}), ("body not JSON", b"{not json")]
        for case, kwargs in [*items, *extra]:
            if isinstance(kwargs, dict) and set(kwargs) <= set(defaults):
                data = [as_raw(kwargs.get(p["parameter_name"], defaults[p["parameter_name"]])) for p in params]
            else:
                data = kwargs
            message, result = raw_call(url, endpoint, data)
            text = message if message is not None else _text_of(result)
            rows.append({"via": "http", "endpoint": endpoint, "case": case, "outcome": classify(message, result),
                         "leaks": leaks(text), "file_outputs": file_outputs(text), "answer": _FILE_DATA.sub("{FILE", text)[:160]})
    return rows


def bundle_oracle(url: str) -> dict:
    """``/load_bundle``'s answers for server folders that exist and ones that do not: told apart?"""
    from gradio_client import Client

    existing = ["/etc", "/tmp", "/usr", str(ROOT), str(ROOT / "assets"), "/root", "/proc/self", "/var", "~", ".."]
    missing = ["/nonexistent", "/etc/nonexistent-cmce", "/tmp/no-such-folder-cmce", "~/no-such", "../no-such"]
    client = Client(url, verbose=False)
    answers = {}
    for target in existing + missing:
        try:
            _, note, *_ = client.predict(repo_id=target, revision="", api_name="/load_bundle")
        except Exception as e:  # noqa: BLE001 - a refusal as an error is an answer too
            note = str(e)
        answers[target] = re.sub(r"'[^']*'", "TARGET", note)  # the refused name, quoted, is the only difference
    client.close()
    kinds = {a for a in answers.values()}
    return {"existing": len(existing), "missing": len(missing), "distinct_answers": len(kinds),
            "told_apart": len({answers[t] for t in existing} ^ {answers[t] for t in missing}) > 0,
            "example_answer": next(iter(kinds))[:300]}


def other_answers(url: str, photo: Path) -> dict:
    """Leaks in the answers that are no endpoint's: the page, its configuration, the API's description,
    an upload's answer and a ``file=`` request for a missing file in its folder; and whether the file a
    search's answer points to is served by its URL."""
    from gradio_client import Client, handle_file

    answers = {name: _http("GET", f"{url}{route}")[1]
               for name, route in (("page", ""), ("config", "config"), ("api info", "gradio_api/info"))}
    boundary = "cmcecorpus"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{photo.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answers["upload"] = response.read().decode(errors="replace")
    cache = json.loads(answers["upload"])[0].split("/")[0]  # the folder as the answer names it
    answers["missing file"] = _http("GET", f"{url}gradio_api/file={cache}/no-such-file.png")[1]
    client = Client(url, verbose=False, download_files=False)
    annotated = client.predict(image=handle_file(str(photo)), api_name="/search")[0]
    client.close()
    status, _ = _http("GET", annotated["url"])  # the aliased URL still serves the file
    found = {name: leaks(text) for name, text in answers.items()}
    return {"checked": sorted(answers), "leaks": sum(bool(f) for f in found.values()),
            "findings": {name: f for name, f in found.items() if f}, "file_by_its_url": status}


def tracebacks(log: Path | None, start: int) -> int:
    if log is None or not log.exists():
        return 0
    return log.read_bytes()[start:].decode(errors="replace").count(_TRACEBACK)


def run(url: str, log: Path | None = None) -> dict:
    """The whole corpus against the app at ``url``: every figure of the run."""
    from gradio_client import handle_file

    url = check_loopback(url).rstrip("/") + "/"
    log_start = log.stat().st_size if log is not None and log.exists() else 0
    info = json.loads(urllib.request.urlopen(f"{url}gradio_api/info", timeout=30).read())
    examples = json.loads((ROOT / "assets" / "examples" / "examples.json").read_text())
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cmce-corpus-") as folder:
        corpus = cases(write_files(Path(folder)), handle_file)
        missing = sorted(set(info["named_endpoints"]) - set(corpus))
        if missing:
            raise SystemExit(f"the corpus has no cases for the endpoints {missing}: add them")
        others = other_answers(url, ROOT / "assets" / "examples" / "queries" / "Grace_Hopper_05.jpg")  # first: within
        rows = run_client(url, corpus, examples["galleries"][0]["name"]) + run_raw(url, corpus, info)  # the rate
    oracle = bundle_oracle(url)
    time.sleep(1)  # the log is flushed line by line
    by = Counter((r["via"], r["outcome"]) for r in rows)
    return {
        "endpoints": sorted(corpus),
        "cases": len(rows),
        "by_endpoint": {e: dict(Counter(r["outcome"] for r in rows if r["endpoint"] == e)) for e in sorted(corpus)},
        "via": {v: {o: by[(v, o)] for o in ("named", "answered", "blank")} for v in ("gradio_client", "http")},
        "blank": sum(r["outcome"] == "blank" for r in rows),
        "leaks": sum(bool(r["leaks"]) for r in rows),
        "file_outputs": sum(r["file_outputs"] for r in rows),
        "tracebacks": tracebacks(log, log_start),
        "log_read": log is not None,
        "bundle_oracle": oracle,
        "other_answers": others,
        "seconds": round(time.monotonic() - start, 1),
        "findings": [r for r in rows if r["outcome"] == "blank" or r["leaks"]],
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--log", type=Path, help="the app's output (stdout and stderr), to count tracebacks")
    parser.add_argument("--json", type=Path, help="write every figure of the run here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case's answer")
    args = parser.parse_args(argv)
    report = run(args.url, args.log)
    if args.verbose:
        for r in report["rows"]:
            print(f"{r['via']:13} {r['endpoint']:21} {r['case'][:28]:28} {r['outcome']:8} {r['answer'][:110]!r}")
    for f in report["findings"]:
        print(f"FINDING {f['via']} {f['endpoint']} {f['case']}: {f['outcome']} {f['leaks']} {f['answer'][:200]!r}")
    print(f"{report['cases']} cases over {', '.join(report['endpoints'])}: {report['blank']} blank errors, "
          f"{report['leaks']} leaks, {report['tracebacks']} tracebacks"
          f"{'' if report['log_read'] else ' (no --log: not counted)'}; /load_bundle told "
          f"{'apart' if report['bundle_oracle']['told_apart'] else 'no'} existing and missing folders "
          f"({report['bundle_oracle']['distinct_answers']} distinct answers); {report['other_answers']['leaks']} leaks in "
          f"{', '.join(report['other_answers']['checked'])} {report['other_answers']['findings'] or ''}; {report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if (report["blank"] or report["leaks"] or report["tracebacks"] or report["bundle_oracle"]["told_apart"]
                 or report["other_answers"]["leaks"] or report["other_answers"]["file_by_its_url"] != 200) else 0


if __name__ == "__main__":
    sys.exit(main())
