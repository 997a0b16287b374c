"""One or two torch intra-op threads on this machine, quiet and with one busy core.

Why cmce runs one torch thread by default (``CMCE_TORCH_THREADS``): torch's OpenMP
threads wait on each other, so on shared cores a second thread helps little when the
machine is quiet and costs a lot as soon as anything else runs. This script times
MTCNN per LFW photo and the torch backbones per face (batch 16) with 1 and 2 threads,
first on a quiet machine, then while a second process keeps one core busy.

Usage:
    PYTHONPATH=. python benchmarks/bench_threads.py ../shared/data/lfw-train --json docs/bench-threads.json

``--json`` writes the figures (medians, ms) with the machine's load before and after; the
table in ``docs/speed.md`` is rendered from it (``scripts/render_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch
from _harness import machine, median_ms

from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import pick_subject
from cmce.io.datasets import list_labelled_images
from cmce.io.images import load_image
from cmce.models.backbones import create_backbone


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result: dict = {"mtcnn_photos": 4, "faces": 0, "machine_before": machine(), "rows": {}}
    ds = list_labelled_images(args.images_dir)
    images = [load_image(p) for p in ds.paths[:16]]
    detector = FaceDetector(max_side=800)
    found = detector.detect_batch(images)
    pairs = [(img, [fs[pick_subject(fs)]]) for img, fs in zip(images, found) if fs]
    models = {m: create_backbone(m) for m in ("dlib-resnet34", "facenet-casia")}
    crops = {m: np.concatenate([bb.align(img, f) for img, f in pairs]) for m, bb in models.items()}
    result["faces"] = len(pairs)

    def row(label: str) -> None:
        cells, figures = [], {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            mtcnn = median_ms(lambda: [detector.detect(img) for img in images[:4]], 5) / 4
            nets = {m: median_ms(lambda bb=bb, m=m: bb.embed(crops[m]), 3) / len(crops[m]) for m, bb in models.items()}
            cells.append(f"{threads} thread(s): MTCNN {mtcnn:.1f} ms/photo, "
                         + ", ".join(f"{m} {v:.1f} ms/face" for m, v in nets.items()))
            figures[str(threads)] = {"mtcnn_ms_per_photo": round(mtcnn, 4),
                                     "ms_per_face": {m: round(v, 4) for m, v in nets.items()}}
        result["rows"][label] = figures
        print(f"{label:>14}: " + " | ".join(cells), flush=True)

    row("quiet")
    stop = mp.Event()
    busy = mp.Process(target=_spin, args=(stop,), daemon=True)
    busy.start()
    try:
        time.sleep(0.5)
        row("one busy core")
    finally:
        stop.set()
        busy.join()
    result["machine_after"] = machine()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
