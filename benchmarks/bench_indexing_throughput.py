"""Indexing faces/s of FaceEngine (detect + embed_gallery_batch) and Gallery.add_images, per variant.

Each variant runs in fresh worker processes (its settings are environment variables,
read when the models load), on the same N LFW photos: one process on all of them, then
two processes at once on disjoint halves (what 2 cores give). Workers load their models
first and start timing together. Figures are medians over repeats; variants alternate
within a repeat, so every before/after ratio comes from one run on the same noisy
machine, and each line says the load average beside it.

Variants (``--variants``, comma-separated; the first is the base of the ratios):
    before    as before this change: facenet-casia float32 in PyTorch, OpenCV on every core.
    cv1       OpenCV on 1 thread (``CMCE_OPENCV_THREADS=1``).
    int8      ``CMCE_FACENET_RUNTIME=int8``: facenet-casia int8 through onnxruntime, OpenCV on every core.
    int8-cv1  both.
MTCNN's exact int32 crop table is in every variant (it changes no face; its own before/after
is in the README).

Usage:
    python benchmarks/bench_indexing_throughput.py ../shared/data/lfw-train --n 128

``--json`` writes the medians per variant and process count (``summary``), every repeat (``runs``),
``repeat`` and ``variants``; docs/speed.md's throughput tables render from it (``scripts/render_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without PYTHONPATH

VARIANTS = {
    "before": {"CMCE_FACENET_RUNTIME": "torch", "CMCE_OPENCV_THREADS": str(os.cpu_count() or 1)},
    "cv1": {"CMCE_FACENET_RUNTIME": "torch", "CMCE_OPENCV_THREADS": "1"},
    "int8": {"CMCE_FACENET_RUNTIME": "int8", "CMCE_OPENCV_THREADS": str(os.cpu_count() or 1)},
    "int8-cv1": {"CMCE_FACENET_RUNTIME": "int8", "CMCE_OPENCV_THREADS": "1"},
}


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _pick(images_dir: str, n: int) -> list[str]:
    """``n`` photos spread over the folder (fixed seed)."""
    import numpy as np

    from cmce.io.datasets import list_labelled_images

    paths = list(list_labelled_images(images_dir).paths)
    rng = np.random.default_rng(0)
    return [str(paths[i]) for i in sorted(rng.choice(len(paths), min(n, len(paths)), replace=False))]


def worker(paths_file: str, go_file: str, out_file: str, chunk: int, gallery: bool) -> None:
    """Load the models, wait for ``go_file``, time one pass, write figures to ``out_file``."""
    from cmce.gallery.memory import Gallery
    from cmce.io.images import load_image
    from cmce.method.bundle import default_bundle_path, load_bundle
    from cmce.method.engine import FaceEngine

    paths = json.loads(Path(paths_file).read_text())
    engine = FaceEngine(load_bundle(default_bundle_path()))
    data = [Path(p).read_bytes() for p in paths]
    warm = [load_image(d, name="w") for d in data[:4]]  # first-call costs out of the timing
    engine.embed_gallery_batch(list(zip(warm, engine.detect(warm))))
    Path(out_file + ".ready").write_text("")
    while not Path(go_file).exists():
        time.sleep(0.01)
    stage = {"decode": 0.0, "detect": 0.0, **{m: 0.0 for m in engine.backbones}}
    faces_n = 0
    t0 = time.perf_counter()
    for i in range(0, len(data), chunk):
        t = time.perf_counter()
        images = [load_image(d, name=p) for d, p in zip(data[i : i + chunk], paths[i : i + chunk])]
        stage["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        faces = engine.detect(images)
        stage["detect"] += time.perf_counter() - t
        batch = list(zip(images, faces))
        for m in engine.backbones:
            t = time.perf_counter()
            emb = engine.embed_gallery_batch(batch, models=[m])[m]
            stage[m] += time.perf_counter() - t
        faces_n += len(emb)
    engine_s = time.perf_counter() - t0
    out = {"faces": faces_n, "photos": len(data), "engine_s": engine_s, "stage_s": stage}
    if gallery:
        g = Gallery(engine)
        t = time.perf_counter()
        g.add_images([(Path(p).name, p, None) for p in paths], batch_size=chunk)
        out["gallery_s"] = time.perf_counter() - t
        out["gallery_faces"] = len(g)
    Path(out_file).write_text(json.dumps(out))


def _run(variant: str, parts: list[list[str]], chunk: int, gallery: bool) -> dict:
    """Run one worker per part at once; aggregate faces/s over the slowest worker."""
    env = {**os.environ, **VARIANTS[variant], "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        go = str(Path(tmp) / "go")
        procs, outs = [], []
        for k, part in enumerate(parts):
            pf, of = str(Path(tmp) / f"paths{k}.json"), str(Path(tmp) / f"out{k}.json")
            Path(pf).write_text(json.dumps(part))
            outs.append(of)
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", pf, go, of, str(chunk), str(int(gallery))], env=env))
        while not all(Path(o + ".ready").exists() for o in outs):
            if any(p.poll() not in (None, 0) for p in procs):
                raise SystemExit(f"a {variant} worker failed")
            time.sleep(0.05)
        Path(go).write_text("")
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"a {variant} worker failed")
        res = [json.loads(Path(o).read_text()) for o in outs]
    faces = sum(r["faces"] for r in res)
    out = {"faces": faces, "engine_fps": faces / max(r["engine_s"] for r in res),
           "stage_ms_per_face": {k: 1e3 * sum(r["stage_s"][k] for r in res) / faces for k in res[0]["stage_s"]},
           "photos": sum(r["photos"] for r in res)}
    if gallery:
        out["gallery_fps"] = sum(r["gallery_faces"] for r in res) / max(r["gallery_s"] for r in res)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images_dir")
    parser.add_argument("--n", type=int, default=128, help="photos (default 128)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=16, help="photos per detect/embed batch")
    parser.add_argument("--variants", default="before,cv1,int8,int8-cv1")
    parser.add_argument("--processes", default="1,2", help="process counts to measure")
    parser.add_argument("--no-gallery", action="store_true", help="skip Gallery.add_images")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    paths = _pick(args.images_dir, args.n)
    counts = [int(c) for c in args.processes.split(",")]
    runs: dict[str, list[dict]] = {}
    for r in range(args.repeat):
        for procs in counts:
            for v in variants:
                parts = [paths[k::procs] for k in range(procs)]
                res = _run(v, parts, args.chunk, not args.no_gallery)
                res["load"] = os.getloadavg()[0]
                runs.setdefault(f"{v} x{procs}", []).append(res)
                stages = " ".join(f"{k} {ms:.1f}" for k, ms in res["stage_ms_per_face"].items())
                extra = f", add_images {res['gallery_fps']:.2f} faces/s" if "gallery_fps" in res else ""
                print(f"repeat {r} {v} x{procs}: {res['faces']} faces, engine {res['engine_fps']:.2f} faces/s"
                      f"{extra}; ms/face (summed over processes): {stages}; {_load()}", flush=True)
    print(f"\nmedians over {args.repeat} repeats, {len(paths)} LFW photos, chunks of {args.chunk}:")
    summary = {}
    for key, rs in runs.items():
        med = {"engine_fps": statistics.median(r["engine_fps"] for r in rs),
               "load": statistics.median(r["load"] for r in rs), "faces": rs[0]["faces"],
               "stage_ms_per_face": {k: statistics.median(r["stage_ms_per_face"][k] for r in rs)
                                     for k in rs[0]["stage_ms_per_face"]}}
        if "gallery_fps" in rs[0]:
            med["gallery_fps"] = statistics.median(r["gallery_fps"] for r in rs)
        summary[key] = med
        extra = f", Gallery.add_images {med['gallery_fps']:.2f} faces/s" if "gallery_fps" in med else ""
        print(f"  {key}: detect+embed {med['engine_fps']:.2f} faces/s{extra} (median load {med['load']:.2f})")
    base = variants[0]
    for v in variants[1:]:
        for procs in counts:
            a, b = runs[f"{base} x{procs}"], runs[f"{v} x{procs}"]
            ratio = statistics.median(y["engine_fps"] / x["engine_fps"] for x, y in zip(a, b))
            print(f"  {v} / {base} x{procs}: {ratio:.2f}x faces/s (median of per-repeat ratios)")
    if args.json:
        Path(args.json).write_text(json.dumps({"photos": len(paths), "chunk": args.chunk, "repeat": args.repeat,
                                               "variants": variants, "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
