"""Mutation fuzzer of the image and archive readers (cmce/io/images.py, cmce/io/archives.py).

Seeds are valid files made here: JPEG (baseline, progressive, with EXIF orientation),
PNG (RGB, palette, 16-bit grey, RGBA), GIF (animated), TIFF (raw, LZW, 16-bit), WebP,
BMP, and zip (stored, deflated) / tar (plain, gzip) archives of such images in folders.
Each case is a seed mutated by a few seeded operations (bit flips, interesting bytes and
integers written over header fields, chunks inserted, deleted, duplicated, truncation,
splices of two seeds; half the PNG cases get their chunk CRCs fixed so that they reach
the decoder) and read the way an upload is: an image by
:func:`cmce.io.images.load_image`, an archive by :func:`cmce.io.archives.extract_images`,
then every extracted image by ``load_image``.

Every case must end in a decoded ``(H, W, 3) uint8`` image (within the pixel budget),
an extraction, or an ``ImageError`` / ``LimitError`` / ``ArchiveError`` whose message
names the file. Anything else is a finding: another exception, a message without the
file's name, a case over 2 s (the worker is killed and restarted), or a worker whose
peak memory grows past the pixel budget. Cases run in a worker process so a hang or a
crash in C code is caught too. Pure Python, seeded: the same ``--seed`` gives the same
cases::

    PYTHONPATH=. python tests/harness/fuzz_readers.py --cases 10000 --seed 0

Prints counts per seed kind and outcome, and every finding with the seed and case
number that reproduce it (``--replay N``); ``--json PATH`` also writes every figure
(``report_json``: the docs' fuzzing table is rendered from it). Exits 1 on any finding.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import select
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from datetime import datetime, timezone
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CASE_TIMEOUT_S = 2.0
FUZZ_MAX_PIXELS = 2_000_000  # small budget, so that mutated sizes reach it often
FUZZ_MAX_BYTES = 4 * 2**20
MAX_RSS_GROWTH = 4 * FUZZ_MAX_PIXELS * 8 + 96 * 2**20  # RGBA float working copies plus allocator slack
INTERESTING_8 = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_32 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# --------------------------------------------------------------------------- seeds


def _picture(width: int = 96, height: int = 72, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)
    rgb = (rgb + rng.integers(0, 32, rgb.shape, dtype=np.uint8)).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _encode(image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def image_seeds() -> dict[str, tuple[str, bytes]]:
    """Valid images: name -> (file suffix, bytes)."""
    import numpy as np
    from PIL import Image

    pic = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    grey16 = Image.fromarray((np.arange(48 * 40, dtype=np.uint16).reshape(40, 48) * 20))  # mode I;16
    frames = [_picture(40, 30, s) for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "jpeg": (".jpg", _encode(pic, "JPEG", quality=85)),
        "jpeg-progressive": (".jpg", _encode(pic, "JPEG", quality=70, progressive=True)),
        "jpeg-exif": (".jpg", _encode(pic, "JPEG", exif=exif.tobytes())),
        "png": (".png", _encode(pic, "PNG")),
        "png-palette": (".png", _encode(pic.convert("P"), "PNG")),
        "png-rgba": (".png", _encode(pic.convert("RGBA"), "PNG")),
        "png-grey16": (".png", _encode(grey16, "PNG")),
        "gif-animated": (".gif", buf.getvalue()),
        "tiff": (".tif", _encode(pic, "TIFF")),
        "tiff-lzw": (".tif", _encode(pic, "TIFF", compression="tiff_lzw")),
        "tiff-grey16": (".tif", _encode(grey16, "TIFF")),
        "webp": (".webp", _encode(pic, "WEBP", quality=80)),
        "webp-lossless": (".webp", _encode(pic, "WEBP", lossless=True)),
        "bmp": (".bmp", _encode(pic, "BMP")),
    }


def archive_seeds(images: dict[str, tuple[str, bytes]]) -> dict[str, tuple[str, bytes]]:
    """Valid archives of three images in two folders: name -> (suffix, bytes)."""
    members = [("alice/1.jpg", images["jpeg"][1]), ("alice/2.png", images["png"][1]),
               ("bob/1.webp", images["webp"][1])]
    out = {}
    for name, method in (("zip-stored", zipfile.ZIP_STORED), ("zip-deflated", zipfile.ZIP_DEFLATED)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as z:
            for member, data in members:
                z.writestr(member, data)
        out[name] = (".zip", buf.getvalue())
    for name, mode, suffix in (("tar", "w", ".tar"), ("tar-gz", "w:gz", ".tar.gz")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as t:
            for member, data in members:
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(data), 0
                t.addfile(info, io.BytesIO(data))
        out[name] = (suffix, buf.getvalue())
    return out


# --------------------------------------------------------------------------- mutations


def _flip(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    if data:
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)


def _byte(rng, data, _):
    if data:
        data[rng.randrange(len(data))] = rng.choice(INTERESTING_8) if rng.random() < 0.5 else rng.randrange(256)


def _int32(rng, data, _):
    if len(data) >= 4:
        i = rng.randrange(min(len(data) - 3, 512) if rng.random() < 0.7 else len(data) - 3)  # headers first
        fmt = rng.choice((">I", "<I", ">H", "<H"))
        value = rng.choice(INTERESTING_32) & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF)
        struct.pack_into(fmt, data, i, value)


def _insert(rng, data, _):
    i = rng.randrange(len(data) + 1)
    data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))


def _delete(rng, data, _):
    if len(data) > 2:
        i = rng.randrange(len(data) - 1)
        del data[i:i + rng.randrange(1, min(256, len(data) - i) + 1)]


def _duplicate(rng, data, _):
    if len(data) > 2:
        i = rng.randrange(len(data) - 1)
        chunk = data[i:i + rng.randrange(1, 512)]
        j = rng.randrange(len(data) + 1)
        data[j:j] = chunk * rng.randrange(1, 4)


def _truncate(rng, data, _):
    if len(data) > 1:
        del data[rng.randrange(1, len(data)):]


def _splice(rng, data, seeds):
    other = rng.choice(seeds)
    if data and other:
        i, j = rng.randrange(len(data)), rng.randrange(len(other))
        data[i:] = other[j:]


def fix_png_crcs(data: bytearray) -> None:
    """Recompute every PNG chunk's CRC in place, so that a mutation reaches the decoder instead
    of stopping at Pillow's CRC check (stops at the first chunk whose length runs past the end)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        struct.pack_into(">I", data, end, zlib.crc32(data[pos + 4:end]) & 0xFFFFFFFF)
        pos = end + 4


MUTATIONS: tuple[Callable, ...] = (_flip, _flip, _byte, _int32, _int32, _insert, _delete, _duplicate, _truncate,
                                   _splice)


@dataclass(frozen=True)
class Case:
    number: int
    seed_name: str
    kind: str  # "image" or "archive"
    suffix: str
    data: bytes


def make_case(number: int, seed: int, seeds: dict[str, tuple[str, str, bytes]]) -> Case:
    """Case ``number`` of run ``seed``: a seed mutated 1-8 times (the same every time)."""
    rng = random.Random(f"{seed}:{number}")
    name = rng.choice(sorted(seeds))
    kind, suffix, original = seeds[name]
    data = bytearray(original)
    pool = [s[2] for s in seeds.values()]
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 8))):
        rng.choice(MUTATIONS)(rng, data, pool)
    if name.startswith("png") and rng.random() < 0.5:  # half the PNG cases get past the CRC check
        fix_png_crcs(data)
    return Case(number, name, kind, suffix, bytes(data))


def all_seeds() -> dict[str, tuple[str, str, bytes]]:
    """name -> (kind, suffix, bytes) for every image and archive seed."""
    images = image_seeds()
    out = {n: ("image", s, d) for n, (s, d) in images.items()}
    out.update({n: ("archive", s, d) for n, (s, d) in archive_seeds(images).items()})
    return out


# --------------------------------------------------------------------------- running a case


def _check_image(array, name: str) -> str | None:
    import numpy as np

    if not (isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3):
        return f"{name}: load_image returned {type(array).__name__} {getattr(array, 'shape', '')}"
    if array.shape[0] * array.shape[1] > FUZZ_MAX_PIXELS:
        return f"{name}: decoded {array.shape[1]}x{array.shape[0]}, over the pixel budget"
    return None


def run_case(case: Case, workdir: Path) -> tuple[str, str]:
    """Read one case as an upload would be read: ``(outcome, detail)``.

    Outcomes: ``decoded``, ``extracted``, ``ImageError``, ``LimitError``, ``ArchiveError``
    (expected), and ``finding:...`` (a bug).
    """
    import shutil

    from cmce.errors import ArchiveError, CmceError, ImageError, LimitError
    from cmce.io.archives import ArchiveLimits, extract_images
    from cmce.io.images import ImageLimits, load_image

    limits = ImageLimits(max_pixels=FUZZ_MAX_PIXELS, max_bytes=FUZZ_MAX_BYTES)
    name = f"case{case.number}{case.suffix}"
    path = workdir / name
    path.write_bytes(case.data)

    def expected(e: CmceError, file_name: str) -> tuple[str, str]:
        if file_name not in str(e):
            return "finding:unnamed", f"{type(e).__name__} without the file name {file_name!r}: {e}"
        return type(e).__name__, str(e)[:200]

    try:
        if case.kind == "image":
            try:
                problem = _check_image(load_image(path, limits=limits, name=name), name)
                return ("finding:output", problem) if problem else ("decoded", "")
            except (ImageError, LimitError) as e:
                return expected(e, name)
        dest = workdir / "x"
        try:
            report = extract_images(path, dest, limits=ArchiveLimits(max_files=50, max_total_bytes=8 * 2**20,
                                                                     max_member_bytes=FUZZ_MAX_BYTES))
        except ArchiveError as e:
            return expected(e, name)
        outcomes = Counter()
        for member in report.extracted:
            rel = member.relative_to(dest.resolve()).as_posix()
            try:
                problem = _check_image(load_image(member, limits=limits, name=rel), rel)
                if problem:
                    return "finding:output", problem
                outcomes["decoded"] += 1
            except (ImageError, LimitError) as e:
                kind, detail = expected(e, rel)
                if kind.startswith("finding"):
                    return kind, detail
                outcomes[kind] += 1
        return "extracted", json.dumps(dict(outcomes))
    except Exception as e:  # noqa: BLE001 - any other exception is what the fuzzer looks for
        return "finding:exception", f"{type(e).__name__}: {e}"[:300]
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(workdir / "x", ignore_errors=True)


def _worker(seed: int) -> None:
    """The worker process: reads case numbers on stdin, answers one JSON line each on stdout."""
    import resource
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")  # Pillow's warnings on broken files are expected here
    import cmce.io.archives  # noqa: F401 - imported before the first case is timed
    import cmce.io.images  # noqa: F401

    seeds = all_seeds()
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    out.write("ready\n")
    out.flush()
    with tempfile.TemporaryDirectory(prefix="cmce-fuzz-") as tmp:
        for line in sys.stdin:
            number = int(line)
            start = time.monotonic()
            outcome, detail = run_case(make_case(number, seed, seeds), Path(tmp))
            rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out.write(json.dumps([outcome, detail, time.monotonic() - start, rss_kib]) + "\n")
            out.flush()


# --------------------------------------------------------------------------- the run


@dataclass
class FuzzReport:
    cases: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    by_seed: dict[str, Counter] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    rss_start_kib: int = 0
    rss_peak_kib: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


class _Worker:
    """``python fuzz_readers.py --worker SEED`` as a child process, killed on a hang."""

    def __init__(self, seed: int):
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "--seed", str(seed)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True, bufsize=1)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)  # imports numpy, Pillow, OpenCV, cmce
        if not ready or self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"fuzz worker did not start (exit code {self.proc.wait()})")

    def send(self, number: int) -> None:
        self.proc.stdin.write(f"{number}\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> tuple | None:
        """The next answer, None after ``timeout`` seconds; raises EOFError if the worker died."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError
        return tuple(json.loads(line))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def fuzz(cases: int, seed: int = 0, start: int = 0, max_seconds: float = 3600,
         progress: Callable[[int], None] | None = None) -> FuzzReport:
    """Run cases ``start .. start + cases - 1`` of run ``seed`` (stops at ``max_seconds``)."""
    seeds = all_seeds()
    report = FuzzReport()
    worker = _Worker(seed)
    t0 = time.monotonic()
    try:
        for number in range(start, start + cases):
            if time.monotonic() - t0 > max_seconds:
                break
            case = make_case(number, seed, seeds)
            worker.send(number)
            try:
                answer = worker.answer(CASE_TIMEOUT_S)
            except EOFError:
                answer = ("finding:crash", f"worker died with exit code {worker.proc.wait()}", 0.0, 0)
                worker = _Worker(seed)
            if answer is None:
                report.findings.append(f"case {number} ({case.seed_name}): hang over {CASE_TIMEOUT_S} s")
                outcome = "finding:hang"
                worker.stop(kill=True)
                worker = _Worker(seed)
            else:
                outcome, detail, seconds, rss = answer
                if outcome != "finding:crash":
                    report.rss_start_kib = report.rss_start_kib or rss
                report.slowest_s = max(report.slowest_s, seconds)
                if seconds > CASE_TIMEOUT_S:
                    outcome, detail = "finding:slow", f"{seconds:.2f} s"
                report.rss_peak_kib = max(report.rss_peak_kib, rss)
                if outcome.startswith("finding"):
                    report.findings.append(f"case {number} ({case.seed_name}): {outcome}: {detail}")
            report.outcomes[outcome] += 1
            report.by_seed.setdefault(case.seed_name, Counter())[outcome] += 1
            report.cases += 1
            if progress:
                progress(report.cases)
    finally:
        worker.stop()
    report.seconds = time.monotonic() - t0
    if report.rss_start_kib and (report.rss_peak_kib - report.rss_start_kib) * 1024 > MAX_RSS_GROWTH:
        report.findings.append(f"memory: worker peak RSS grew {(report.rss_peak_kib - report.rss_start_kib) / 1024:.0f}"
                               f" MiB, over {MAX_RSS_GROWTH / 2**20:.0f} MiB (pixel budget {FUZZ_MAX_PIXELS:,})")
    return report


def format_report(report: FuzzReport) -> str:
    lines = [f"cases: {report.cases} in {report.seconds:.0f} s ({report.cases / max(report.seconds, 1e-9):.0f}/s); "
             f"findings: {len(report.findings)}; slowest case {report.slowest_s:.2f} s; worker peak RSS "
             f"{report.rss_peak_kib / 1024:.0f} MiB (first case {report.rss_start_kib / 1024:.0f} MiB)",
             "outcomes: " + ", ".join(f"{k} {v}" for k, v in report.outcomes.most_common())]
    for name in sorted(report.by_seed):
        lines.append(f"  {name:<18} " + ", ".join(f"{k} {v}" for k, v in report.by_seed[name].most_common()))
    lines += [f"finding: {f}" for f in report.findings[:50]]
    return "\n".join(lines)


def report_json(report: FuzzReport, *, seed: int, start: int, started_utc: str,
                load_before: float, load_after: float) -> dict:
    """Every figure of a run, for ``--json``: counts per outcome and per seed, timings, the worker's memory,
    findings, and when and under what load (1-minute load average, CPUs) it ran."""
    return {
        "harness": "fuzz_readers", "seed": seed, "start": start, "cases": report.cases,
        "seconds": round(report.seconds, 1), "cases_per_s": round(report.cases / max(report.seconds, 1e-9), 1),
        "outcomes": dict(report.outcomes.most_common()),
        "by_seed": {name: dict(report.by_seed[name].most_common()) for name in sorted(report.by_seed)},
        "findings": list(report.findings), "slowest_case_s": round(report.slowest_s, 3),
        "worker_rss_first_case_mib": round(report.rss_start_kib / 1024, 1),
        "worker_rss_peak_mib": round(report.rss_peak_kib / 1024, 1),
        "case_timeout_s": CASE_TIMEOUT_S, "max_pixels": FUZZ_MAX_PIXELS,
        "run": {"started_utc": started_utc, "cpus": os.cpu_count(), "load_1min_before": round(load_before, 2),
                "load_1min_after": round(load_after, 2)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--replay", type=int, help="run only this case, in this process, and show it")
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure of the run to PATH")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.seed)
        return 0
    if args.replay is not None:
        case = make_case(args.replay, args.seed, all_seeds())
        with tempfile.TemporaryDirectory() as tmp:
            print(case.seed_name, len(case.data), "bytes:", *run_case(case, Path(tmp)))
        return 0
    started, load_before = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), os.getloadavg()[0]
    report = fuzz(args.cases, args.seed, args.start, args.max_seconds,
                  progress=lambda n: print(f"{n} cases", file=sys.stderr) if n % 1000 == 0 else None)
    print(format_report(report))
    if args.json:
        doc = report_json(report, seed=args.seed, start=args.start, started_utc=started, load_before=load_before,
                          load_after=os.getloadavg()[0])
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
