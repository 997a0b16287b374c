"""Benchmark cmce.search.index.VectorIndex on random unit vectors.

For each gallery size N: build time of the index ``kind="auto"`` chooses, single-query
search latency (p50/p95 over the queries, search call alone), recall@10 of that index
against exact search, and for comparison the p50 of a float32-only exact index (no
float16 scan, ``scan_from=None``) with one thread and with every core. At the largest N
also single queries with a mask that rejects 10% of the entries (what the app does). At the largest N it
also times exact batch search with faiss's default ``distance_compute_blas_threshold``
against the one cmce sets, and save/load of the auto index.

Random unit vectors have no cluster structure, the hardest case for approximate
search; real face embeddings reach the same recall with a smaller ``efSearch``.

Usage:
    PYTHONPATH=. python benchmarks/bench_search.py            # N = 1k, 100k, 1M (minutes)
    PYTHONPATH=. python benchmarks/bench_search.py --sizes 1000 100000 --queries 100
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from _harness import median_ms

from cmce.search.flat import BLAS_QUERIES_PER_THREAD
from cmce.search.hnsw import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from cmce.search.index import SEARCH_THREADS, VectorIndex

logger = logging.getLogger("bench_search")


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 random unit vectors, generated in chunks to bound memory."""
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - i), dim), dtype=np.float32)
        out[i : i + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def single_query_latency(index: VectorIndex, queries: np.ndarray, k: int):
    """Search each query alone; returns (latencies in ms, (Q, k) positions)."""
    index.search(queries[:1], k=k)  # warm-up
    latencies, positions = [], []
    for i in range(len(queries)):
        start = time.perf_counter()
        result = index.search(queries[i : i + 1], k=k)
        latencies.append((time.perf_counter() - start) * 1e3)
        positions.append(result.positions[0])
    return np.array(latencies), np.stack(positions)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k found."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="batch size of the BLAS comparison")
    parser.add_argument("--no-save", action="store_true", help="skip the save/load timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    threads = SEARCH_THREADS or faiss.omp_get_max_threads()
    print(
        f"faiss {faiss.__version__}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; dim={args.dim}, {args.queries} single queries, k={args.k}, "
        f"search_threads={SEARCH_THREADS}; HNSW M={HNSW_M} "
        f"efConstruction={HNSW_EF_CONSTRUCTION} efSearch={HNSW_EF_SEARCH}"
    )
    all_cores = faiss.omp_get_max_threads()
    header = (
        f"{'N':>9} {'auto':>5} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'recall@10':>9} {'fp32 p50 ms':>11} {f'fp32 p50 {all_cores} thr*':>15}"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(args.seed)
    queries = unit_vectors(rng, args.queries, args.dim)
    last = {}
    for n in args.sizes:
        gallery = unit_vectors(rng, n, args.dim)
        auto = VectorIndex(args.dim)
        start = time.perf_counter()
        auto.add(gallery)
        build_s = time.perf_counter() - start
        if auto.backend == "flat":
            flat = auto
        else:
            flat = VectorIndex(args.dim, kind="flat")
            flat.add(gallery)
        truth = flat.search(queries, k=args.k).positions  # one exact batch
        latencies, found = single_query_latency(auto, queries, args.k)
        fp32 = VectorIndex(args.dim, kind="flat", scan_from=None)
        fp32.add(flat.vectors)
        flat_latencies = single_query_latency(fp32, queries, args.k)[0]
        del fp32
        flat_all = VectorIndex(args.dim, kind="flat", search_threads=None, scan_from=None)
        flat_all.add(flat.vectors)
        all_latencies = single_query_latency(flat_all, queries[:50], args.k)[0]
        del flat_all
        print(
            f"{n:>9,} {auto.backend:>5} {build_s:>8.2f} {np.percentile(latencies, 50):>8.2f} "
            f"{np.percentile(latencies, 95):>8.2f} {recall_at_k(found, truth):>9.4f} "
            f"{np.percentile(flat_latencies, 50):>11.2f} {np.percentile(all_latencies, 50):>15.2f}",
            flush=True,
        )
        last = {"n": n, "auto": auto, "flat": flat}
        del gallery

    print("* every core, faiss's default, on the first 50 queries")
    n, auto, flat = last["n"], last["auto"], last["flat"]
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, n // 10, replace=False)] = False  # a 10% rejection mask
    masked = []
    auto.search(queries[:1], k=args.k, mask=keep)
    for i in range(len(queries)):
        start = time.perf_counter()
        auto.search(queries[i : i + 1], k=args.k, mask=keep)
        masked.append((time.perf_counter() - start) * 1e3)
    print(f"\nN={n:,} with a mask rejecting 10%: p50 {np.percentile(masked, 50):.2f} ms, "
          f"p95 {np.percentile(masked, 95):.2f} ms")
    ours = BLAS_QUERIES_PER_THREAD * threads * args.dim
    default = faiss.cvar.distance_compute_blas_threshold
    raw = faiss.IndexFlatIP(args.dim)  # the bare faiss index, to time the threshold alone
    raw.add(flat.vectors)
    print(
        f"\nexact flat search at N={n:,}, faiss IndexFlatIP, {threads} thread(s), median ms: "
        f"BLAS threshold "
        f"faiss default {default} (BLAS from {-(-default // args.dim)} queries) vs cmce "
        f"{ours} (BLAS from {ours // args.dim} queries)"
    )
    for batch in (1, args.batch):
        q = queries[:batch]
        repeats = 5 if batch == 1 else 3
        timings = {}
        faiss.omp_set_num_threads(threads)
        for name, value in (("default", default), ("cmce", ours)):
            faiss.cvar.distance_compute_blas_threshold = value
            try:
                timings[name] = median_ms(lambda raw=raw, q=q: raw.search(q, args.k), repeats)
            finally:
                faiss.cvar.distance_compute_blas_threshold = default
        faiss.omp_set_num_threads(all_cores)
        print(f"  {batch:>3} queries: default {timings['default']:9.1f}   "
              f"cmce {timings['cmce']:9.1f}")
    del raw

    if not args.no_save:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.npz"
            start = time.perf_counter()
            auto.save(path)
            save_s = time.perf_counter() - start
            start = time.perf_counter()
            loaded = VectorIndex.load(path)
            load_s = time.perf_counter() - start
            check = queries[:20]
            before = auto.search(check, k=args.k).positions
            same = np.array_equal(loaded.search(check, k=args.k).positions, before)
            print(
                f"\nsave/load of the {auto.backend} index at N={n:,}: file "
                f"{path.stat().st_size / 1e6:.0f} MB, save {save_s:.1f} s, load {load_s:.1f} s, "
                f"identical results (20 queries) after load: {same}"
            )


if __name__ == "__main__":
    main()
