"""Indexing faces/s of Gallery.add_images on 96 lfw-train photos, for before/after comparisons.

Run it from two checkouts (the commit before a change and after it), alternating, on the
same quiet machine, and compare medians:

    for i in 1 2 3; do for w in ../before .; do (cd $w && CMCE_TORCH_THREADS=1 \\
        python /path/to/benchmarks/bench_add_images.py); done; done

It imports ``cmce`` from the current folder and serves the bundle of this checkout
(``assets/bundles/sface-query`` by default; ``--bundle`` to choose).
"""

import glob
import os
import sys
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("CMCE_CACHE_DIR", "/tmp/bench-cache-" + os.path.basename(os.getcwd()))
from cmce.gallery.memory import Gallery
from cmce.method.bundle import load_bundle  # noqa: E402
from cmce.method.engine import FaceEngine  # noqa: E402

DATA = os.environ.get("CMCE_LFW_DIR", os.path.join(os.getcwd(), "..", "shared", "data", "lfw-train"))
paths = sorted(glob.glob(os.path.join(DATA, "*", "*_0001.jpg")))[::40][:96]
engine = FaceEngine(load_bundle(sys.argv[sys.argv.index("--bundle") + 1] if "--bundle" in sys.argv
                                 else os.path.join(os.getcwd(), "assets/bundles/sface-query")))
Gallery(engine).add_images([(os.path.basename(p), p, None) for p in paths[:8]])  # warm-up
t = time.perf_counter()
g = Gallery(engine)
rep = g.add_images([(os.path.basename(p), p, None) for p in paths])
dt = time.perf_counter() - t
print(f"{os.path.basename(os.getcwd())} faces {rep.added} seconds {dt:.2f} faces/s {rep.added/dt:.2f}")
