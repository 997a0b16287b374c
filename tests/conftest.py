"""Test set-up: offline, never the user's caches, real LFW faces from ../shared."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub, gradio or cmce: offline, no telemetry, and a
# private cache folder for converted weights and embeddings.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["CMCE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cmce-test-cache-")
# A bundle given to pytest is kept for the app tests only (until the default bundle exists).
_GIVEN_BUNDLE = os.environ.pop("CMCE_BUNDLE", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LFW_DIR = Path(os.environ.get("CMCE_LFW_DIR", ROOT.parent / "shared" / "data" / "lfw-train"))

needs_lfw = pytest.mark.skipif(not LFW_DIR.is_dir(), reason=f"LFW images not found at {LFW_DIR}")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not LFW_DIR.is_dir():
        pytest.skip(f"LFW images not found at {LFW_DIR}")
    return LFW_DIR


LOCAL_BACKBONES = ["sface", "dlib-resnet34", "facenet-casia"]


def lfw_pairs_subset(lfw_dir: Path, per_class: int = 300):
    """A fixed subset of pairsDevTrain.txt: ``per_class`` same and different pairs."""
    from cmce.io.datasets import read_lfw_pairs, sample_pairs

    return sample_pairs(read_lfw_pairs(lfw_dir / "pairsDevTrain.txt", lfw_dir), per_class, seed=0)


@pytest.fixture(scope="session")
def lfw_pairs_embedded(lfw_dir):
    """The 600 pairs and every image in them embedded by every local backbone.

    Uses the default embedding cache, which lives in this session's private
    CMCE_CACHE_DIR, so later tests (training, evaluation, CLI) reuse it.
    """
    from cmce.models.embed import EmbeddingCache, embed_files

    pairs = lfw_pairs_subset(lfw_dir)
    files = sorted({str(p) for a, b, _ in pairs for p in (a, b)})
    return pairs, embed_files(files, LOCAL_BACKBONES, cache=EmbeddingCache(), chunk_size=32)


@pytest.fixture(scope="session")
def lfw_pairs_labelled(lfw_pairs_embedded):
    """``lfw_pairs_embedded``'s embedded files and each file's person (its folder name)."""
    import numpy as np

    _, res = lfw_pairs_embedded
    return res, np.array([Path(p).parent.name for p in res.paths])


DEFAULT_BUNDLE = ROOT / "assets" / "bundles" / "sface-query"


def app_bundle() -> Path | None:
    """The bundle the app tests run on: the default one once it exists, else ``CMCE_BUNDLE``."""
    if (DEFAULT_BUNDLE / "config.json").is_file():
        return DEFAULT_BUNDLE
    if _GIVEN_BUNDLE and (Path(_GIVEN_BUNDLE) / "config.json").is_file():
        return Path(_GIVEN_BUNDLE)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launch_app(root: Path, **extra_env: str) -> Iterator[dict]:
    """Run ``python app.py`` on a free port of 127.0.0.1 until the block ends.

    Yields url, bundle, tmp (the app's TMPDIR), log and root. ``extra_env`` adds or
    overrides environment variables of the app process. The app believes ``X-Forwarded-For`` from
    loopback (``CMCE_TRUSTED_PROXIES``), so a test's clients can have addresses of their own.
    """
    bundle = app_bundle()
    if bundle is None:
        pytest.skip(f"no bundle: {DEFAULT_BUNDLE} is not built yet; run with CMCE_BUNDLE=<bundle folder>")
    (root / "tmp").mkdir(exist_ok=True)
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_TEMP_DIR=str(root / "gradio"), TMPDIR=str(root / "tmp"), CMCE_SESSION_TTL="900",
               CMCE_TRUSTED_PROXIES="127.0.0.1")  # as behind a Space's proxy: harness clients send X-Forwarded-For
    if bundle != DEFAULT_BUNDLE:
        env["CMCE_BUNDLE"] = str(bundle)
    env.update(extra_env)
    log = root / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "gradio_api/info", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer within 300 s:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield {"url": url, "bundle": bundle, "tmp": root / "tmp", "log": log, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> Iterator[dict]:
    """The app with default settings, shared by the app tests of a session."""
    with launch_app(tmp_path_factory.mktemp("app")) as server:
        yield server


def lfw_people(lfw_dir: Path, count: int, min_images: int = 3) -> list[Path]:
    """The first ``count`` LFW identity folders (sorted) with at least ``min_images`` images.

    Skips the calling test when there are fewer.
    """
    out = []
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        if len(list(person.glob("*.jpg"))) >= min_images:
            out.append(person)
            if len(out) == count:
                break
    if len(out) < count:
        pytest.skip(f"LFW subset too small: {len(out)} of {count} people with {min_images}+ images")
    return out


TIGHT_CROP_PEOPLE = ["Aaron_Peirsol", "Abel_Pacheco", "Ahmed_Chalabi", "Alejandro_Toledo"]
"""lfw-train people whose first photo the tight-crop tests cut up (issue 22)."""


def tight_crops(img, face) -> dict:
    """Tight crops of a photo's face, as ``benchmarks/bench_crops.py`` cuts them (issue 22).

    Returns:
        ``box`` (the MTCNN box), ``in10`` (10% inside it) and ``face`` (the face alone, from
        its landmarks): each ``((h, w, 3) uint8 crop, (2,) offset of its top-left corner)``.
    """
    import numpy as np

    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    lm = face.landmarks_array().astype(np.float64)
    eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
    d, m = np.hypot(*(lm[1] - lm[0])), np.hypot(*(mouth - eyes))
    boxes = {"box": (x1, y1, x2, y2), "in10": (x1 + 0.1 * w, y1 + 0.1 * h, x2 - 0.1 * w, y2 - 0.1 * h),
             "face": (eyes[0] - d, eyes[1] - 0.45 * m, eyes[0] + d, mouth[1] + 0.8 * m)}
    out = {}
    for kind, (a, b, c, e) in boxes.items():
        a, b = int(max(a, 0)), int(max(b, 0))
        out[kind] = (np.ascontiguousarray(img[b:int(min(e, img.shape[0])), a:int(min(c, img.shape[1]))]),
                     np.array([a, b], np.float64))
    return out


def server_pid(url: str) -> int | None:
    """The app.py process serving ``url`` (matched on GRADIO_SERVER_PORT in its environment), if readable."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"app.py" in (proc / "cmdline").read_bytes() and \
                    f"GRADIO_SERVER_PORT={port}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    return None


# ---- tiers and CI strictness -------------------------------------------------------------
# Tiers: "e2e" (a browser or an app.py process), "slow" (crash, soak, Ray, fuzzing, and
# tests on the SLOW_FIXTURES: training and LFW-accuracy runs), and the fast rest.
# `pytest -m "not e2e and not slow"` is the developer's tier; CI runs everything. Every
# run prints what ran in each tier.
# CMCE_TEST_STRICT=1 (set by .ci/run) turns every skip into a failure: a missing data
# folder, browser, Ray or bundle must not pass CI by skipping what needs it.

STRICT = os.environ.get("CMCE_TEST_STRICT", "") not in ("", "0")
TIERS = ("fast", "e2e", "slow")


def tier_of(item: pytest.Item) -> str:
    """The tier of a collected test: its ``e2e`` or ``slow`` mark, else fast."""
    for name in ("e2e", "slow"):
        if item.get_closest_marker(name) is not None:
            return name
    return "fast"


#: Fixtures that embed hundreds of LFW photos or train a bundle: their tests are slow.
SLOW_FIXTURES = {"lfw_pairs_embedded", "trained_bundle"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a browser or an app.py process")
    config.addinivalue_line("markers", "slow: crash, soak, Ray, training or LFW-accuracy runs")
    config._cmce_tiers = {t: {} for t in TIERS}  # tier -> outcome -> count


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        result = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        if STRICT and report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"skipped under CMCE_TEST_STRICT=1 (CI): {reason}"
            result = "failed"
        counts = item.config._cmce_tiers[tier_of(item)]
        counts[result] = counts.get(result, 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    tiers = getattr(config, "_cmce_tiers", None)
    if not tiers:
        return
    line = "; ".join(f"{t}: " + (", ".join(f"{n} {o}" for o, n in sorted(c.items())) or "none")
                     for t, c in tiers.items())
    terminalreporter.write_line(f"tests by tier{' (strict)' if STRICT else ''}: {line}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under strict mode a module skipped at import (``importorskip``) fails too."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"module skipped under CMCE_TEST_STRICT=1 (CI): {reason}"


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (offline paths must not try)."""
    import socket as _socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(_socket, "create_connection", refuse)
    monkeypatch.setattr(_socket.socket, "connect", refuse)
    monkeypatch.setattr(_socket.socket, "connect_ex", refuse)


# --------------------------------------------------------------------------- images the tests write


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_bilevel_png(path: Path, side: int, *, rows_written: int | None = None) -> Path:
    """Write a side x side 1-bit black PNG by streaming zero rows through zlib (a decompression bomb
    of a few KB: the image and app tests upload it).

    Memory stays at one row; ``rows_written`` below ``side`` leaves the pixel data
    truncated (a valid header over too little data).
    """
    row = bytes(1 + (side + 7) // 8)  # filter byte 0 + packed bits
    compressor = zlib.compressobj(9)
    idat = bytearray()
    for _ in range(side if rows_written is None else rows_written):
        idat += compressor.compress(row)
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", bytes(idat))
        + _png_chunk(b"IEND", b"")
    )
    return path


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_frames(data: bytes) -> Iterator[bytes]:
    """The decompressed content of every zstd frame inside ``data`` (Parquet's zstd pages: their
    bytes are not the values they hold), whether a file's footer lists the page or not."""
    import zstandard

    start = data.find(_ZSTD_MAGIC)
    while start >= 0:
        obj = zstandard.ZstdDecompressor().decompressobj()
        try:
            out = obj.decompress(data[start:])
        except zstandard.ZstdError:  # the magic bytes by chance, not a frame
            out = b""
        if out:
            yield out
        start = data.find(_ZSTD_MAGIC, start + 1)


def found_on_disk(folder: Path, needles: dict[str, bytes]) -> dict[str, list[str]]:
    """Every file under ``folder`` (hidden ones included) holding each needle's bytes, as stored or inside
    a zstd-compressed page: ``{needle name: [relative paths]}``, names found nowhere left out."""
    hits: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            views = [data, *_zstd_frames(data)]
            for what, needle in needles.items():
                if any(needle in view for view in views):
                    hits.setdefault(what, []).append(str(path.relative_to(folder)))
    return hits
