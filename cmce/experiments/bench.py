"""``python -m cmce bench``: speed figures of this machine, medians over repeated runs.

Every ratio is taken within one run. Figures: per-backbone ms per face at batch 1 and
32; MTCNN ms per image; the asymmetric ratio (query path vs gallery path per face);
end-to-end query latency against galleries of 1k/100k/1M entries (real face vectors
where the folder has them, random unit vectors beyond); search alone with recall@10
against exact search; indexing throughput; memory per entry; cold start.
"""

from __future__ import annotations

import io
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cmce.assets import PROJECT_ROOT
from cmce.metrics.retrieval import l2_normalise

logger = logging.getLogger(__name__)

__all__ = ["format_table", "run_bench", "timings_ms"]


def timings_ms(fn: Callable[[], object], repeat: int, warmup: int = 1) -> list[float]:
    """Milliseconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for i in range(0, n, 200_000):
        x = rng.standard_normal((min(200_000, n - i), d), dtype=np.float32)
        out[i : i + len(x)] = l2_normalise(x)
    return out


def run_bench(
    images_dir: str | os.PathLike,
    *,
    bundle_path: str | None = None,
    sizes: Sequence[int] = (1_000, 100_000, 1_000_000),
    repeat: int = 15,
    index_images: int = 64,
    queries: int = 40,
) -> dict:
    """Measure everything in the module docstring.

    Args:
        images_dir: a folder of real face photos (e.g. a folder-per-identity dataset).
        bundle_path: bundle folder or Hub id (default bundle when None).
        sizes: gallery sizes for the end-to-end and search figures.
        repeat: timed runs per figure.
        index_images: photos embedded for the indexing-throughput figure.
        queries: queries per gallery size.

    Returns:
        JSON-ready dict of figures.
    """
    import cv2
    import torch

    from cmce.faces.geometry import pick_subject
    from cmce.io.datasets import list_labelled_images
    from cmce.io.images import load_image
    from cmce.method.bundle import load_bundle
    from cmce.method.engine import FaceEngine
    from cmce.models.embed import embed_files

    res: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "cuda": torch.cuda.is_available()}}
    bundle = load_bundle(bundle_path)
    engine = FaceEngine(bundle)
    ds = list_labelled_images(images_dir)
    rng = np.random.default_rng(0)  # one generator for the photos, the galleries and the indexing sample, in order
    files = [ds.paths[i] for i in rng.choice(len(ds), min(len(ds), 64), replace=False)]
    imgs = [load_image(f) for f in files]
    det = engine.detector
    pairs = [(img, fs[pick_subject(fs)]) for img, fs in zip(imgs, det.detect_batch(imgs)) if fs][:32]
    big = cv2.resize(imgs[0], (1155, 866))  # ~1 megapixel photo
    res["mtcnn_ms_per_image"] = _time_detection(det, imgs, big, repeat)
    res["backbones"] = backbones = _time_backbones(engine, pairs, repeat)
    res["transformer_ms"] = tr_ms = _time_transformers(engine, bundle, pairs, repeat)
    res["asymmetric"] = _asymmetric(bundle, backbones, tr_ms, res["mtcnn_ms_per_image"]["lfw_250px"])
    jpeg = _jpeg(big)
    real = embed_files(files, [bundle.query_model]).embeddings[bundle.query_model]
    res["query_e2e_1mp"], res["search"] = _time_search(engine, jpeg, real, rng, sizes, repeat, queries)
    # indexing throughput: the path `python -m cmce index` runs (read, decode, detect batched across
    # images, every backbone batched across images, fuse, index); no cache
    res["indexing"] = _indexing(engine, ds, rng, index_images)
    res["memory"] = _memory(engine, bundle)
    res["cold_start_s"] = _cold_start(bundle_path)
    return res


def _time_detection(det, imgs: Sequence[np.ndarray], big: np.ndarray, repeat: int) -> dict:
    """MTCNN ms per image: an LFW photo, a 1 MP photo, and per image in a batch of 32."""
    return {
        "lfw_250px": statistics.median(timings_ms(lambda: det.detect(imgs[1]), repeat)),
        "photo_1mp": statistics.median(timings_ms(lambda: det.detect(big), repeat)),
        "batch_32_lfw_per_image": statistics.median(timings_ms(lambda: det.detect_batch(imgs[:32]), 3)) / 32,
    }


def _time_backbones(engine, pairs: Sequence[tuple], repeat: int) -> dict:
    """Per backbone: ms per face at batch 1 and 32, and ms to align one face."""
    backbones = {}
    for name, bb in engine.backbones.items():
        crops = np.concatenate([bb.align(img, [f]) for img, f in pairs])
        one = timings_ms(lambda: bb.embed(crops[:1]), repeat)
        b32 = timings_ms(lambda: bb.embed(crops[:32]), max(3, repeat // 5))
        align = timings_ms(lambda: bb.align(pairs[0][0], [pairs[0][1]]), repeat)
        backbones[name] = {"batch1_ms": statistics.median(one), "batch32_ms_per_face": statistics.median(b32) / len(crops[:32]),
                           "align_ms": statistics.median(align)}
    return backbones


def _time_transformers(engine, bundle, pairs: Sequence[tuple], repeat: int) -> dict:
    """Per gallery model: ms to transform one face's embedding."""
    tr_ms = {}
    for m, t in bundle.transformers.items():
        from cmce.models.transform import transform_embeddings

        x = engine.backbones[m].embed(engine.backbones[m].align(pairs[0][0], [pairs[0][1]]))
        tr_ms[m] = statistics.median(timings_ms(lambda: transform_embeddings(t, x), repeat))
    return tr_ms


def _asymmetric(bundle, backbones: dict, tr_ms: dict, det_ms: float) -> dict:
    """The query path against the gallery path per face: embedding alone, and with detection and alignment."""
    q = bundle.query_model
    query_embed = backbones[q]["batch1_ms"]
    gallery_embed = sum(backbones[m]["batch1_ms"] for m in bundle.gallery_models) + sum(tr_ms.values())
    if bundle.query_member:
        gallery_embed += backbones[q]["batch1_ms"]
    query_path = det_ms + backbones[q]["align_ms"] + query_embed
    gallery_path = det_ms + sum(backbones[m]["align_ms"] for m in bundle.models) + gallery_embed
    return {
        "query_embed_ms": query_embed, "gallery_embed_ms": gallery_embed,
        "embed_ratio": query_embed / gallery_embed,
        "query_path_ms": query_path, "gallery_path_ms": gallery_path, "path_ratio": query_path / gallery_path,
    }


def _jpeg(image: np.ndarray) -> bytes:
    """``image`` as JPEG bytes (quality 90), the end-to-end query."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _time_search(engine, jpeg: bytes, real: np.ndarray, rng: np.random.Generator, sizes: Sequence[int],
                 repeat: int, queries: int) -> tuple[dict, dict]:
    """``(query_e2e_1mp, search)``: per gallery size, end-to-end query latency and search alone."""
    e2e, search = {}, {}
    for n in sizes:
        e2e[str(n)], search[str(n)] = _time_gallery(engine, jpeg, real, rng, n, repeat, queries)
    return e2e, search


def _time_gallery(engine, jpeg: bytes, real: np.ndarray, rng: np.random.Generator, n: int, repeat: int,
                  queries: int) -> tuple[dict, dict]:
    """One gallery of ``n`` entries (the real face vectors first, random unit vectors beyond, 10% rejected):
    end-to-end latency of a 1 MP query photo, and search alone with its recall@10 against exact search."""
    from cmce.io.images import load_image
    from cmce.search.index import VectorIndex

    det, qb = engine.detector, engine.query_backbone
    dq = qb.embedding_size
    vec = _unit(rng, n, dq)
    vec[: min(n, len(real))] = real[: min(n, len(real))]
    t0 = time.perf_counter()
    index = VectorIndex(dq)
    index.add(vec)
    build_s = time.perf_counter() - t0
    keep = np.ones(n, bool)
    keep[rng.choice(n, n // 10, replace=False)] = False  # 10% rejected

    def query_once() -> None:
        img = load_image(jpeg, name="q.jpg")
        fs = det.detect(img)
        f = max(fs, key=lambda x: x.area)
        v = qb.embed_faces(img, [f])
        index.search(v, k=5, mask=keep)

    lat = timings_ms(query_once, min(repeat, queries))
    qv = _unit(rng, queries, dq)
    s_lat, found = [], []
    for i in range(queries):
        t = time.perf_counter()
        r = index.search(qv[i : i + 1], k=10)
        s_lat.append((time.perf_counter() - t) * 1e3)
        found.append(r.positions[0])
    exact = np.argsort(-(qv @ vec.T), axis=1)[:, :10]
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
    return ({"p50_ms": _p(lat, 50), "p95_ms": _p(lat, 95)},
            {"p50_ms": _p(s_lat, 50), "p95_ms": _p(s_lat, 95), "recall_at_10": recall,
             "index": index.backend + (f" + float16 scan ({index.scan_shards} shards)" if index.scan_shards else ""),
             "build_s": build_s})


def _memory(engine, bundle) -> dict:
    """Bytes per entry: raw embeddings + every view + uncertainty/quality + index copies."""
    dq = engine.query_backbone.embedding_size
    raw = sum(engine.backbones[m].embedding_size for m in bundle.models) * 4
    views = (len(bundle.view_names)) * dq * 4
    return {"bytes_per_entry_vectors": raw + views + 8, "bytes_per_entry_with_indexes": raw + 2 * views + 8,
            "bytes_per_entry_with_indexes_from_scan_from": raw + 2 * views + views // 2 + 8,
            "note": "flat indexes keep one more copy of every view; from SCAN_FROM entries "
                    "also a float16 copy"}


def _cold_start(bundle_path: str | None) -> float | None:
    """Seconds for a fresh interpreter to load the bundle and detect once (None: it failed)."""
    code = ("import time;t=time.time();from cmce.method.bundle import load_bundle;from cmce.gallery import FaceEngine;"
            "e=FaceEngine(load_bundle(%r));import numpy as np;e.detector.detect(np.zeros((64,64,3),np.uint8));"
            "print(time.time()-t)" % (bundle_path,))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    return time.perf_counter() - t if p.returncode == 0 else None


def _indexing(engine, ds, rng: np.random.Generator, index_images: int) -> dict:
    from cmce.gallery.ingest import GalleryLimits
    from cmce.gallery.memory import Gallery

    idx_files = [ds.paths[i] for i in rng.choice(len(ds), min(len(ds), index_images), replace=False)]
    gallery = Gallery(engine, GalleryLimits(max_files=len(idx_files), max_entries=10 * len(idx_files)))
    t = time.perf_counter()
    report = gallery.add_images([(str(f), f, None) for f in idx_files])
    dt = time.perf_counter() - t
    return {"images": len(idx_files), "faces": report.added, "seconds": dt,
            "faces_per_s": report.added / dt, "path": "Gallery.add_images"}


def bench_indexing(images_dir: str | os.PathLike, bundle_path: str | None, index_images: int, seed: int = 0) -> dict:
    """Indexing throughput alone (the path ``python -m cmce index`` runs), faces per second."""
    from cmce.io.datasets import list_labelled_images
    from cmce.method.bundle import load_bundle
    from cmce.method.engine import FaceEngine

    return _indexing(FaceEngine(load_bundle(bundle_path)), list_labelled_images(images_dir),
                     np.random.default_rng(seed), index_images)


def bench_upgrade(
    bundle_path: str | None, entries: int, *, from_models: Sequence[str] = ("dlib-resnet34", "facenet-casia"),
    workdir: str | os.PathLike | None = None, seed: int = 0, precisions: Sequence[str] = ("float32", "int8"),
) -> dict:
    """Time ``upgrade_gallery`` on a synthetic gallery of ``entries`` faces.

    The gallery holds random unit raw embeddings of ``from_models`` (what an old
    bundle stored; the transformers' cost does not depend on the values) and no
    embedding of the new query model. Timed: the whole upgrade (reading the Parquet
    shards, the transformers, fusion, scores, the index, writing the derived data),
    and the projection alone (transformers + fusion + scores) as entries per second.

    Returns:
        ``{"entries", "from", "to", "threads", "precision": {precision: {"seconds",
        "projection_seconds", "projection_entries_per_s"}}}``, one upgrade per precision.
    """
    import shutil
    import tempfile

    import torch

    from cmce.gallery.upgrade import upgrade_gallery
    from cmce.method.bundle import load_bundle
    from cmce.storage.records import GalleryRecords, backbone_record
    from cmce.storage.write import write_gallery

    bundle = load_bundle(bundle_path)
    rng = np.random.default_rng(seed)
    ids = np.array([f"{i:064x}:0" for i in range(entries)], dtype=object)
    nothing = np.empty(entries, dtype=object)
    records = GalleryRecords(ids, np.array([i[:64] for i in ids], dtype=object), ids, nothing, nothing.copy(),
                             np.zeros((entries, 4), np.float32), np.zeros((entries, 5, 2), np.float32),
                             np.full(entries, 0.999, np.float32), np.full((entries, 2), 250, np.int32), nothing.copy())
    for m in from_models:
        rec = backbone_record(m)
        records.backbones[rec.key] = rec
        records.embeddings[rec.key] = _unit(rng, entries, rec.dim)
        records.present[rec.key] = np.ones(entries, bool)
    root = Path(tempfile.mkdtemp(prefix="cmce-bench-upgrade-", dir=workdir))
    try:
        write_gallery(root / "gallery", records)
        del records
        runs = {}
        for precision in precisions:
            report = upgrade_gallery(root / "gallery", bundle, precision=precision)
            runs[precision] = {"seconds": report.seconds, "projection_seconds": report.projection_seconds,
                               "projection_entries_per_s": entries / report.projection_seconds}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"entries": entries, "from": list(from_models), "to": bundle.query_model,
            "threads": torch.get_num_threads(), "precision": runs}


def format_table(r: dict) -> str:
    """The figures as Markdown."""
    lines = [f"machine: {r['machine']}", "", "| backbone | batch 1 ms/face | batch 32 ms/face | align ms |", "|---|---:|---:|---:|"]
    for n, b in r["backbones"].items():
        lines.append(f"| {n} | {b['batch1_ms']:.1f} | {b['batch32_ms_per_face']:.1f} | {b['align_ms']:.1f} |")
    m = r["mtcnn_ms_per_image"]
    lines += ["", f"MTCNN ms/image: LFW 250px {m['lfw_250px']:.1f}, 1 MP photo {m['photo_1mp']:.1f}, "
              f"batch of 32 LFW {m['batch_32_lfw_per_image']:.1f} per image; transformers "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in r["transformer_ms"].items())]
    a = r["asymmetric"]
    lines += ["", f"asymmetric: query embed {a['query_embed_ms']:.1f} ms vs gallery embed {a['gallery_embed_ms']:.1f} ms "
              f"(ratio {a['embed_ratio']:.2f}); query path {a['query_path_ms']:.1f} ms vs gallery path "
              f"{a['gallery_path_ms']:.1f} ms (ratio {a['path_ratio']:.2f})", "",
              "| gallery size | index | query e2e p50 / p95 ms (1 MP photo) | search p50 / p95 ms | recall@10 vs exact | build s |",
              "|---:|---|---:|---:|---:|---:|"]
    for n in r["search"]:
        e, s = r["query_e2e_1mp"][n], r["search"][n]
        lines.append(f"| {int(n):,} | {s['index']} | {e['p50_ms']:.0f} / {e['p95_ms']:.0f} | {s['p50_ms']:.2f} / {s['p95_ms']:.2f} | "
                     f"{s['recall_at_10']:.3f} | {s['build_s']:.1f} |")
    i = r["indexing"]
    lines += ["", f"indexing: {i['faces']} faces from {i['images']} photos in {i['seconds']:.1f} s = {i['faces_per_s']:.2f} faces/s; "
              f"memory {r['memory']['bytes_per_entry_with_indexes']} bytes per entry; cold start "
              + (f"{r['cold_start_s']:.1f} s" if r["cold_start_s"] else "failed")]
    return "\n".join(lines)


def format_upgrade(r: dict) -> str:
    """The upgrade figures, one line per precision."""
    u, rate = r["upgrade"], r["indexing"]["faces_per_s"]
    reembed = u["entries"] / rate
    lines = [f"upgrade of {u['entries']:,} entries ({' + '.join(u['from'])} -> {u['to']} query space, "
             f"{u['threads']} torch threads); re-embedding the same photos at the measured {rate:.2f} faces/s "
             f"would take {reembed / 3600:.1f} h:"]
    for precision, p in u["precision"].items():
        lines.append(f"- {precision}: {p['seconds']:.1f} s in all (shards read, transformers, fusion, scores, index, "
                     f"derived data written), {reembed / p['seconds']:,.0f} times faster than re-embedding; projection "
                     f"alone {p['projection_seconds']:.1f} s = {p['projection_entries_per_s']:,.0f} entries/s")
    return "\n".join(lines)


def main_bench(args) -> int:
    if args.only == "upgrade":
        r = {"indexing": bench_indexing(args.images_dir, args.bundle, args.index_images)}
    else:
        r = run_bench(args.images_dir, bundle_path=args.bundle, sizes=args.sizes, repeat=args.repeat,
                      index_images=args.index_images)
        print(format_table(r))
    if args.upgrade_entries:
        r["upgrade"] = bench_upgrade(args.bundle, args.upgrade_entries)
        print(format_upgrade(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0
