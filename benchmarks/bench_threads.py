"""One or two torch intra-op threads on this machine, quiet and with one busy core.

Why cmce runs one torch thread by default (``CMCE_TORCH_THREADS``): torch's OpenMP
threads wait on each other, so on shared cores a second thread helps little when the
machine is quiet and costs a lot as soon as anything else runs. This script times
MTCNN per LFW photo and the torch backbones per face (batch 16) with 1 and 2 threads,
first on a quiet machine, then while a second process keeps one core busy.

Usage:
    PYTHONPATH=. python benchmarks/bench_threads.py ../shared/data/lfw-train
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import torch
from _harness import median_ms

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
    args = parser.parse_args()
    ds = list_labelled_images(args.images_dir)
    images = [load_image(p) for p in ds.paths[:16]]
    detector = FaceDetector(max_side=800)
    found = detector.detect_batch(images)
    pairs = [(img, [fs[pick_subject(fs)]]) for img, fs in zip(images, found) if fs]
    models = {m: create_backbone(m) for m in ("dlib-resnet34", "facenet-casia")}
    crops = {m: np.concatenate([bb.align(img, f) for img, f in pairs]) for m, bb in models.items()}

    def row(label: str) -> None:
        cells = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            mtcnn = median_ms(lambda: [detector.detect(img) for img in images[:4]], 5) / 4
            nets = {m: median_ms(lambda bb=bb, m=m: bb.embed(crops[m]), 3) / len(crops[m]) for m, bb in models.items()}
            cells.append(f"{threads} thread(s): MTCNN {mtcnn:.1f} ms/photo, "
                         + ", ".join(f"{m} {v:.1f} ms/face" for m, v in nets.items()))
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


if __name__ == "__main__":
    main()
