"""Indexing throughput on a GPU machine (issue: >= 300 faces/s on one H100/H200 + 16 cores).

Indexes real photos through the product path, ``Gallery.add_images`` (read, decode,
MTCNN detection batched across images, every backbone's alignment and embedding
batched across images, transformers, fusion, faiss index), with the torch models
(MTCNN, facenet-casia, the transformers) on ``--device``; then times each stage
alone so the bottleneck is visible. One JSON line per figure is also written to
``--json``.

Usage (one short run; about 2 minutes on a GPU machine, longer on CPU):
    PYTHONPATH=. python benchmarks/bench_gpu_indexing.py ../shared/data/lfw-train \\
        --images 2000 --json gpu_indexing.json
    PYTHONPATH=. python benchmarks/bench_gpu_indexing.py ../shared/data/lfw-train --device cpu --images 64

Throughput depends on the CPU side as much as on the GPU: dlib-resnet34 and sface
run on CPU threads whatever the device.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import pick_subject
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.io.datasets import list_labelled_images
from cmce.io.images import load_image
from cmce.method.bundle import load_bundle
from cmce.method.engine import FaceEngine

logger = logging.getLogger("bench_gpu_indexing")


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir")
    parser.add_argument("--images", type=int, default=2000, help="photos to index")
    parser.add_argument("--batch-size", type=int, default=128, help="photos per indexing chunk")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bundle", default=None, help="bundle path or Hub id (default bundle)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    info = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(info))
    ds = list_labelled_images(args.images_dir)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ds), min(args.images, len(ds)), replace=False)
    files = [ds.paths[i] for i in pick]
    engine = FaceEngine(
        load_bundle(args.bundle), detector=FaceDetector(max_side=800, device=args.device),
        device=args.device,
    )
    # warm-up: load every model, CUDA context, cuDNN autotuning
    Gallery(engine).add_images([(str(f), f, None) for f in files[:8]], batch_size=8)

    limits = GalleryLimits(max_files=len(files), max_entries=10 * len(files))
    gallery = Gallery(engine, limits)
    start = time.perf_counter()
    report = gallery.add_images([(str(f), f, None) for f in files], batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    result = {
        "photos": len(files), "faces": report.added, "seconds": seconds,
        "faces_per_s": report.added / seconds, "photos_per_s": len(files) / seconds,
        "skipped": len(report.skipped),
    }
    print(json.dumps({"indexing": result}))

    # stages alone, on one chunk of real photos
    chunk = [load_image(f) for f in files[: args.batch_size]]
    stages = {"decode_photos_per_s": len(chunk) / _median_s(lambda: [load_image(f) for f in files[: args.batch_size]], 3)}
    found = engine.detect(chunk)
    stages["detect_photos_per_s"] = len(chunk) / _median_s(lambda: engine.detect(chunk), 3)
    pairs = [(img, [fs[pick_subject(fs)]]) for img, fs in zip(chunk, found) if fs]
    for name, bb in engine.backbones.items():
        crops = np.concatenate([bb.align(img, f) for img, f in pairs])
        stages[f"{name}_align_faces_per_s"] = len(pairs) / _median_s(
            lambda bb=bb: [bb.align(img, f) for img, f in pairs], 3
        )
        stages[f"{name}_embed_faces_per_s"] = len(crops) / _median_s(lambda bb=bb, c=crops: bb.embed(c), 3)
    print(json.dumps({"stages": stages}))
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "indexing": result, "stages": stages}, indent=2) + "\n")


if __name__ == "__main__":
    main()
