"""End to end at archive scale: shards -> archive derived data -> search, on one box.

Builds a synthetic gallery of ``--entries`` faces whose raw embeddings are drawn from the
joint statistics of real ones: the sface, dlib-resnet34 and facenet-casia embeddings of
the lfw-train photos (read from the embedding cache; no model runs) are concatenated per
photo, and a between-identity / within-identity Gaussian model is fitted to the
concatenation (so the three backbones stay correlated as they are on real faces). A
synthetic identity is ``mu + L_b z``; each of its photos ``centroid + L_w z'``, split back
into the three backbones and L2-normalised per backbone. Photos per identity are
resampled from the real counts. The gallery is written as Parquet shards of 100k rows
(``cmce.storage.write``), under ``--workdir`` (not the repo), and deleted afterwards.

Then, with the default bundle:
  * ``build_archive_index`` (streaming projection + compact index), timed;
  * a fresh process opens the ``ArchiveGallery`` (RSS before/after = the in-memory part),
    answers single queries on one thread with the bundle's calibrated rejection mask
    (queries: the query model's embedding of new photos of gallery identities), and
    checks recall@10 against exact search over the same stored vectors and mask.

Usage (from the repo root):
    python benchmarks/bench_archive.py ../shared/data/lfw-train --entries 2000000 --json docs/bench-archive.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("sface", "dlib-resnet34", "facenet-casia")
SHARD = 100_000


def _sqrtm(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0, None))).T  # z @ L has covariance cov


def joint_statistics(data_dir: str) -> dict:
    """Between/within-identity Gaussian model of the concatenated real embeddings."""
    from cmce.io.datasets import list_labelled_images
    from cmce.models.embed import EmbeddingCache, embed_files

    ds = list_labelled_images(data_dir)
    emb = embed_files(list(ds.paths), list(MODELS), cache=EmbeddingCache())
    found = emb.found
    parts = [emb.embeddings[m][found].astype(np.float64) for m in MODELS]
    x = np.concatenate(parts, axis=1)
    labels = np.asarray(ds.labels)[found]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    cent = np.zeros((counts.size, x.shape[1]))
    np.add.at(cent, inverse, x)
    cent /= counts[:, None]
    multi = counts >= 2
    keep = multi[inverse]
    res = (x[keep] - cent[inverse[keep]]) * np.sqrt(counts[inverse[keep]] / (counts[inverse[keep]] - 1))[:, None]
    sigma_w = res.T @ res / len(res)
    sigma_b = np.cov(cent[multi], rowvar=False) - np.mean(1.0 / counts[multi]) * sigma_w
    return {"mu": cent[multi].mean(axis=0), "L_b": _sqrtm(sigma_b), "L_w": _sqrtm(sigma_w),
            "counts": counts, "dims": [p.shape[1] for p in parts]}


def _split(x: np.ndarray, dims: list[int]) -> list[np.ndarray]:
    out, start = [], 0
    for d in dims:
        part = x[:, start : start + d]
        out.append((part / np.linalg.norm(part, axis=1, keepdims=True)).astype(np.float32))
        start += d
    return out


def write_synthetic_gallery(stats: dict, n: int, folder: Path, n_queries: int, seed: int = 0) -> np.ndarray:
    """Write the gallery; return (n_queries, Dq) query-model embeddings of new photos."""
    from cmce.storage.records import GalleryRecords, backbone_record
    from cmce.storage.write import append_entries, write_gallery

    rng = np.random.default_rng(seed)
    records = [backbone_record(m) for m in MODELS]
    dim = stats["mu"].size
    queries = []
    done = 0
    while done < n:
        rows = min(SHARD, n - done)
        counts = rng.choice(stats["counts"], size=rows)
        counts = counts[np.cumsum(counts) <= rows]
        counts = np.append(counts, rows - counts.sum()) if counts.sum() < rows else counts
        cents = stats["mu"] + rng.standard_normal((counts.size, dim)) @ stats["L_b"]
        label = np.repeat(np.arange(counts.size), counts)
        x = cents[label] + rng.standard_normal((rows, dim)) @ stats["L_w"]
        pick = rng.choice(counts.size, size=max(1, n_queries * rows // n), replace=False)
        q = cents[pick] + rng.standard_normal((pick.size, dim)) @ stats["L_w"]
        queries.append(_split(q, stats["dims"])[0])  # the query model (sface) part
        ids = np.array([f"{done + i:064x}:0" for i in range(rows)], dtype=object)
        names = np.array([f"synthetic/{done + i}.jpg" for i in range(rows)], dtype=object)
        labs = np.array([f"id{done}-{j}" for j in label], dtype=object)
        nothing = np.empty(rows, dtype=object)
        rec = GalleryRecords(ids, np.array([i[:64] for i in ids], dtype=object), names, nothing, labs,
                             np.zeros((rows, 4), np.float32), np.zeros((rows, 5, 2), np.float32),
                             np.full(rows, 0.999, np.float32), np.full((rows, 2), 250, np.int32), nothing.copy())
        for r, part in zip(records, _split(x, stats["dims"])):
            rec.backbones[r.key] = r
            rec.embeddings[r.key] = part
            rec.present[r.key] = np.ones(rows, bool)
        if done == 0:
            write_gallery(folder, rec)
        else:
            append_entries(folder, rec)
        done += rows
        logging.info("wrote %d / %d entries", done, n)
    return np.concatenate(queries)[:n_queries]


def measure(folder: Path, queries_path: Path, out_path: Path) -> None:
    """In a fresh process: open the archive, RSS, latency, recall@10 vs exact."""
    import faiss

    from cmce.gallery.archive import ArchiveGallery
    from cmce.method.bundle import load_bundle

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    faiss.omp_set_num_threads(1)
    bundle = load_bundle(None)
    queries = np.load(queries_path)
    before = rss()
    start = time.perf_counter()
    archive = ArchiveGallery.open(folder, bundle)
    open_s = time.perf_counter() - start
    after = rss()
    mask = archive.active  # searches reject nothing by default (doubtful entries are marked, still searched)
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        res = archive.search_vectors(q[None, :], k=10)[0]
        times.append(1000 * (time.perf_counter() - t))
        found.append([m.position for m in res.matches])
    vectors = np.load(folder / archive.meta["path"] / "vectors.npy", mmap_mode="r")
    best = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.full((len(queries), 10), -1, np.int64)
    for i in range(0, len(vectors), 1 << 19):
        block = np.asarray(vectors[i : i + (1 << 19)], np.float32)
        s = queries @ block.T
        s[:, ~mask[i : i + len(block)]] = -np.inf
        s = np.concatenate([best, s], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(i, i + len(block)), (len(queries), len(block)))], axis=1)
        top = np.argsort(-s, axis=1)[:, :10]
        best, best_ids = np.take_along_axis(s, top, 1), np.take_along_axis(ids, top, 1)
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, best_ids.tolist())]))
    n = len(archive)
    out_path.write_text(json.dumps({
        "entries": n, "rejected": int(archive.rejected().sum()), "open_seconds": round(open_s, 2),
        "ram_bytes": after - before, "ram_bytes_per_entry": round((after - before) / n, 1),
        "memory_bytes_per_entry": round(archive.memory_bytes() / n, 1),
        "search_p50_ms": round(float(np.median(times)), 2), "search_p95_ms": round(float(np.percentile(times, 95)), 2),
        "recall_at_10_vs_exact": round(recall, 4), "queries": len(queries),
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", nargs="?")
    p.add_argument("--entries", type=int, default=2_000_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--index", default="compact", choices=["compact", "exact"])
    p.add_argument("--workdir", default=None, help="where the synthetic gallery goes (default: a temp folder)")
    p.add_argument("--json", default=None)
    p.add_argument("--keep", action="store_true", help="keep the synthetic gallery (its folder is printed)")
    p.add_argument("--measure", nargs=3, metavar=("GALLERY", "QUERIES", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.measure:
        measure(Path(args.measure[0]), Path(args.measure[1]), Path(args.measure[2]))
        return
    import torch

    torch.set_num_threads(1)
    from cmce.gallery.archive_build import build_archive_index
    from cmce.method.bundle import load_bundle

    root = Path(tempfile.mkdtemp(prefix="cmce-bench-archive-", dir=args.workdir))
    try:
        start = time.perf_counter()
        stats = joint_statistics(args.data_dir)
        queries = write_synthetic_gallery(stats, args.entries, root / "gallery", args.queries)
        np.save(root / "queries.npy", queries)
        write_s = time.perf_counter() - start
        shard_bytes = sum(f.stat().st_size for f in (root / "gallery" / "shards").iterdir())
        report = build_archive_index(root / "gallery", load_bundle(None), index=args.index)
        derived_bytes = sum(f.stat().st_size for f in report.folder.rglob("*") if f.is_file())
        subprocess.run([sys.executable, __file__, "--measure", str(root / "gallery"), str(root / "queries.npy"),
                        str(root / "measure.json")], check=True)
        result = {
            "entries": args.entries, "index": report.index, "load": os.getloadavg(),
            "synthetic_gallery_seconds": round(write_s, 1),
            "shard_bytes_per_entry": round(shard_bytes / args.entries, 1),
            "projection_seconds": round(report.projection_seconds, 1),
            "projection_entries_per_s": round(args.entries / report.projection_seconds),
            "index_build_seconds": round(report.index_seconds, 1),
            "derived_bytes_per_entry": round(derived_bytes / args.entries, 1),
            **json.loads((root / "measure.json").read_text()),
        }
    finally:
        if args.keep:
            logging.info("kept %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
