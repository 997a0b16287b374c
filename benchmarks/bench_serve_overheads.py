"""Two costs the public Space pays on every request or every 30 s, measured apart from the rest.

* **The query photo's hash** (``cmce.serve.preview.FacesPreview``): a query on an empty gallery
  hashes the photo (blake2b) to find a photo whose faces it already knows. Timed against reading
  the photo and the face detection it saves, on ``--photos`` lfw-train photos at their own size
  (250x250) and enlarged to 1024 px and to 4000x3000 (written as JPEG, read by ``load_image`` as
  the app reads them): medians per size of ``load_image``, of the hash of the decoded pixels, of
  the hash of the file's bytes, and of ``detect_query`` with the default bundle.
* **glibc's heap trim** (``cmce.serve.memwatch.limit_heap_growth``: ``malloc_trim(0)`` every 30 s
  from a thread, with 2 arenas and a 128 KiB mmap threshold). In a fresh process set up as the app
  sets itself up, ``--heap-mib`` of Python objects of mixed sizes (16 B - 4 KiB, as strings,
  lists and dicts are) are made, two thirds of them freed at random (a fragmented heap), and
  ``malloc_trim(0)`` timed: its first call and the median of ``--trims`` more after as many
  allocate-and-free rounds; the resident set before and after the first trim. The trim holds the
  arena's lock while it runs, so its time bounds the stall it can cause another thread's allocation.

Usage (from the repo root; the machine may be shared: medians, and ratios in one run):
    PYTHONPATH=. python benchmarks/bench_serve_overheads.py ../shared/data/lfw-train --json docs/bench-serve-overheads.json
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import machine, median_ms  # noqa: E402

logger = logging.getLogger("bench_serve_overheads")

SIZES = (("250x250 (LFW)", None), ("1024x1024", (1024, 1024)), ("4000x3000", (4000, 3000)))


def hash_against_detection(data_dir: str, photos: int, repeats: int) -> list[dict]:
    """Per size: median ms of the pixel hash and of the face detection, over ``photos`` photos."""
    from PIL import Image

    from cmce.gallery.searchable import detect_query
    from cmce.io.datasets import list_labelled_images
    from cmce.io.images import load_image
    from cmce.io.limits import ImageLimits
    from cmce.method.bundle import default_bundle_path, load_bundle
    from cmce.method.engine import FaceEngine

    engine = FaceEngine(load_bundle(default_bundle_path()))
    limits = ImageLimits()
    paths = list_labelled_images(data_dir).paths[::97][:photos]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in SIZES:
            reads, hashes, file_hashes, detections = [], [], [], []
            for i, path in enumerate(paths):
                if size is not None:  # the photo enlarged, saved as a camera would, read back as the app reads it
                    path = Path(tmp) / f"{i}.jpg"
                    Image.open(paths[i]).convert("RGB").resize(size, Image.BICUBIC).save(path, quality=90)
                image = load_image(str(path), limits=limits)
                reads.append(median_ms(lambda: load_image(str(path), limits=limits), repeats))
                hashes.append(median_ms(lambda: hashlib.blake2b(image.data, digest_size=16).hexdigest(), repeats))
                file_hashes.append(median_ms(lambda: hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest(),
                                             repeats))
                detections.append(median_ms(lambda: detect_query(engine, image, "q"), max(1, repeats // 3), warmup=1))
            r, h, f, d = (statistics.median(x) for x in (reads, hashes, file_hashes, detections))
            out.append({"size": label, "photos": len(paths), "megapixels": round(image.shape[0] * image.shape[1] / 1e6, 2),
                        "read_ms": round(r, 2), "pixel_hash_ms": round(h, 3), "file_hash_ms": round(f, 3),
                        "detect_ms": round(d, 1)})
            logger.info("%s: read %.1f ms, pixel hash %.3f ms, file hash %.3f ms, detection %.1f ms", label, r, h, f, d)
    return out


_TRIM_CHILD = r"""
import ctypes, json, random, resource, sys, time
from cmce.serve import memwatch
memwatch.limit_heap_growth(trim_every_s=1e9)  # the app's settings; no trimming thread at work
libc = ctypes.CDLL(None)
heap_mib, trims, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def fill(target):
    objs, made = [], 0
    while made < target:
        n = rng.choice((16, 48, 120, 300, 700, 1500, 4000))
        objs.append(b"x" * n if rng.random() < 0.6 else [None] * (n // 8))
        made += n + 56
    return objs

def free_two_thirds(objs):
    keep = [o for o in objs if rng.random() < 1 / 3]
    objs.clear()
    return keep

def timed_trim():
    t = time.perf_counter(); libc.malloc_trim(0); return 1000 * (time.perf_counter() - t)

objs = fill(heap_mib * 2**20)
full = rss_mib()
objs = free_two_thirds(objs)
before = rss_mib()
first = timed_trim()
after = rss_mib()
later = []
for _ in range(trims):
    objs += fill(heap_mib * 2**20 // 4)
    objs = free_two_thirds(objs)
    later.append(timed_trim())
later.sort()
print(json.dumps({"heap_mib": heap_mib, "rss_full_mib": round(full), "rss_before_trim_mib": round(before),
                  "rss_after_trim_mib": round(after), "first_trim_ms": round(first, 2),
                  "trims": trims, "median_trim_ms": round(later[len(later) // 2], 2), "max_trim_ms": round(later[-1], 2)}))
"""


def trim_cost(heap_mib: int, trims: int, seed: int = 0) -> dict:
    """``malloc_trim(0)`` timed in a fresh process on a fragmented heap (see the module's docstring)."""
    try:
        ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return {"heap_mib": heap_mib, "note": "not glibc: no trim to time"}
    done = subprocess.run([sys.executable, "-c", _TRIM_CHILD, str(heap_mib), str(trims), str(seed)],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="lfw-train (folder per person)")
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--heap-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--trims", type=int, default=9)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = machine()
    doc = {"started_utc": started, "machine_before": load_before,
           "hash": hash_against_detection(args.data, args.photos, args.repeats),
           "trim": [trim_cost(mib, args.trims, seed) for seed, mib in enumerate(args.heap_mib)],
           "machine_after": machine()}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    random.seed(0)
    main()
