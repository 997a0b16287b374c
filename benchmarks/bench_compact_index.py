"""Benchmark cmce.search.compact.CompactIndex on synthetic galleries drawn from real face embedding statistics.

Vectors: real 128-d sface embeddings of the lfw-train photos (read from the embedding
cache, no model runs) give
  * identity centroids: mean and covariance of the per-identity mean embedding
    (identities with >= 2 photos), the between-identity covariance corrected for
    the noise of a mean of n photos (Cov(mean) - E[1/n] * Sigma_within, eigenvalues
    clipped at 0);
  * within-identity residuals: covariance of photo - identity mean (scaled by
    sqrt(n / (n - 1)));
  * photos per identity: resampled from the real per-identity photo counts.
A synthetic identity is ``mu + L_b z``, each of its photos ``normalise(centroid + L_w z')``.
Rows are written as float16 to a .npy memmap under --workdir (not the repo), in chunks,
shuffled within each chunk. Queries: new photos of existing identities (90%) and of
unseen identities (10%). Ground truth: exact top-10 over the stored float16 rows
(chunked brute force), also under a mask that rejects 10% of the entries.

For each index configuration the main process builds and saves the index, then a
fresh subprocess loads it (RSS measured before/after), checks recall and times single
queries on one thread: plain, with the 10% rejection mask, and with a threshold.

Usage (from the repo root):
    python benchmarks/bench_compact_index.py --n 1000000 --configs ivfpq,opq,fastscan,ivfpq48
    python benchmarks/bench_compact_index.py --n 10000000 --configs ivfpq --json docs/bench-compact-index.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "ivfpq": "IVF{nlist}_HNSW32,PQ32",
    "opq": "OPQ32,IVF{nlist}_HNSW32,PQ32",
    "fastscan": "IVF{nlist}_HNSW32,PQ64x4fs",
    "fastscan48": "IVF{nlist}_HNSW32,PQ48x4fs",
    "opqfastscan48": "OPQ48,IVF{nlist}_HNSW32,PQ48x4fs",
    "opqfastscan": "OPQ64,IVF{nlist}_HNSW32,PQ64x4fs",
    "ivfpq48": "IVF{nlist}_HNSW32,PQ48",
    "ivfpq-flatq": "IVF{nlist},PQ32",
}


# --------------------------------------------------------------------------- memory


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


class AnonPeak:
    """Samples RssAnon every 0.2 s in a thread; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        self.peak = proc_status()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, proc_status()["RssAnon"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status()["RssAnon"])
        return self.peak


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# --------------------------------------------------------------------------- statistics


def real_statistics(data_dir: str) -> dict[str, np.ndarray]:
    """Centroid / residual statistics of the real sface embeddings of ``data_dir`` (cached)."""
    from cmce.io.datasets import list_labelled_images
    from cmce.models.embed import EmbeddingCache, embed_files

    ds = list_labelled_images(data_dir)
    embedded = embed_files(list(ds.paths), ["sface"], cache=EmbeddingCache())
    x = embedded.embeddings["sface"][embedded.found].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.asarray(ds.labels)[embedded.found]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    multi = counts >= 2
    centroids = np.zeros((counts.size, x.shape[1]))
    np.add.at(centroids, inverse, x)
    centroids /= counts[:, None]
    keep = multi[inverse]
    residuals = (x[keep] - centroids[inverse[keep]]) * np.sqrt(
        counts[inverse[keep]] / (counts[inverse[keep]] - 1)
    )[:, None]
    sigma_w = residuals.T @ residuals / len(residuals)
    c = centroids[multi]
    mu = c.mean(axis=0)
    cov_c = np.cov(c, rowvar=False)
    sigma_b = cov_c - np.mean(1.0 / counts[multi]) * sigma_w
    w, v = np.linalg.eigh(sigma_b)
    sigma_b = (v * np.clip(w, 0, None)) @ v.T
    return {
        "x": x.astype(np.float32), "labels": inverse, "counts": counts, "mu": mu,
        "L_b": _sqrtm(sigma_b), "L_w": _sqrtm(sigma_w),
    }


def _sqrtm(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0, None))).T  # z @ L has covariance cov


def pair_scores(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator, pairs: int = 200_000) -> dict:
    """Quantiles of genuine and impostor cosine scores of unit rows ``x``."""
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    same = np.flatnonzero(lab[1:] == lab[:-1])
    same = rng.choice(same, size=min(pairs, same.size), replace=False)
    genuine = np.einsum("ij,ij->i", x[order[same]], x[order[same + 1]])
    a, b = rng.integers(0, len(x), size=(2, pairs))
    ok = labels[a] != labels[b]
    impostor = np.einsum("ij,ij->i", x[a[ok]], x[b[ok]])
    q = [0.05, 0.5, 0.95]
    return {
        "impostor_far1e-3": round(float(np.quantile(impostor, 0.999)), 4),
        "genuine_q05_50_95": np.round(np.quantile(genuine, q), 3).tolist(),
        "impostor_q05_50_95": np.round(np.quantile(impostor, q), 3).tolist(),
    }


def ivf_difficulty(stats: dict, seed: int = 5) -> dict:
    """Recall@10 of an exact-within-lists IVF (64 lists) at growing probe shares, real vs synthetic.

    Both sets have the size of the real one; queries are 500 members (self excluded).
    Similar curves mean the synthetic vectors are as hard for an IVF index as real ones.
    """
    import tempfile

    import faiss

    x = stats["x"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small.npy"
        generate(stats, len(x), 10, path, seed=seed)
        y = np.asarray(np.load(path), dtype=np.float32)
    out = {}
    for name, data in (("real", x), ("synthetic", y)):
        rng = np.random.default_rng(0)
        q = data[rng.choice(len(data), 500, replace=False)]
        exact = faiss.IndexFlatIP(data.shape[1])
        exact.add(data)
        _, truth = exact.search(q, 11)
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], 64)
        ivf.train(data)
        ivf.add(data)
        curve = {}
        for nprobe in (4, 8, 16, 32):
            _, found = ivf.search(q, 11, params=faiss.SearchParametersIVF(nprobe=nprobe))
            curve[f"{nprobe / 64:.3f}"] = round(recall(found[:, 1:], truth[:, 1:]), 3)
        out[name] = curve
    return out


# --------------------------------------------------------------------------- data


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def generate(stats: dict, n: int, n_queries: int, path: Path, seed: int = 0, chunk: int = 1 << 20) -> dict:
    """Write ``n`` synthetic unit vectors to ``path`` (float16 .npy) and make queries."""
    from cmce.search.vector_file import VectorFileWriter

    rng = np.random.default_rng(seed)
    dim = stats["mu"].size
    counts = rng.choice(stats["counts"], size=int(n / stats["counts"].mean() * 1.2) + 16)
    ends = np.cumsum(counts)
    m = int(np.searchsorted(ends, n)) + 1
    counts = counts[:m]
    counts[-1] -= ends[m - 1] - n
    counts = counts[counts > 0]
    m = counts.size
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_seen = n_queries - n_queries // 10
    query_ids = np.sort(rng.choice(m, size=n_seen, replace=False))
    query_centroids = np.zeros((n_seen, dim))
    labels_sample, x_sample = [], []  # for the realism check
    start = time.perf_counter()
    with VectorFileWriter(path, count=n, dim=dim) as out:
        ident = 0
        while ident < m:
            block_rng = np.random.default_rng([seed, ident])
            stop = int(np.searchsorted(first_row, first_row[ident] + chunk, side="left"))
            stop = max(stop, ident + 1)
            block = counts[ident:stop]
            cents = stats["mu"] + block_rng.standard_normal((block.size, dim)) @ stats["L_b"]
            label = np.repeat(np.arange(ident, stop), block)
            x = normalise(cents[label - ident] + block_rng.standard_normal((label.size, dim)) @ stats["L_w"])
            perm = block_rng.permutation(label.size)  # shuffle within the chunk
            out.write(x[perm])
            sel = (query_ids >= ident) & (query_ids < stop)
            query_centroids[sel] = cents[query_ids[sel] - ident]
            if len(x_sample) < 1:
                labels_sample.append(label[:20000])
                x_sample.append(x[:20000])
            ident = stop
    gen_seconds = time.perf_counter() - start
    q_rng = np.random.default_rng([seed, 10**9])
    seen = normalise(query_centroids + q_rng.standard_normal((n_seen, dim)) @ stats["L_w"])
    new_c = stats["mu"] + q_rng.standard_normal((n_queries - n_seen, dim)) @ stats["L_b"]
    unseen = normalise(new_c + q_rng.standard_normal((n_queries - n_seen, dim)) @ stats["L_w"])
    queries = np.concatenate([seen, unseen])
    realism = pair_scores(np.concatenate(x_sample), np.concatenate(labels_sample), q_rng)
    return {
        "queries": queries, "identities": m, "photos_per_identity": n / m,
        "generate_seconds": gen_seconds, "synthetic_pairs": realism,
    }


def ground_truth(path: Path, queries: np.ndarray, mask: np.ndarray, k: int = 10, chunk: int = 1 << 19) -> dict:
    """Exact top-``k`` (scores float32 of the float16 rows), without and with ``mask``."""
    vectors = np.load(path, mmap_mode="r")
    n = vectors.shape[0]
    best = {name: (np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.int64))
            for name in ("plain", "masked")}
    start = time.perf_counter()
    for i in range(0, n, chunk):
        rows = np.asarray(vectors[i : i + chunk], dtype=np.float32)
        scores = queries @ rows.T
        for name in best:
            s = scores if name == "plain" else np.where(mask[i : i + chunk], scores, -np.inf)
            bs, bi = best[name]
            ids = np.broadcast_to(np.arange(i, i + len(rows)), s.shape)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            bs = np.concatenate([bs, np.take_along_axis(s, top, 1)], axis=1)
            bi = np.concatenate([bi, np.take_along_axis(ids, top, 1)], axis=1)
            order = np.argsort(-bs, axis=1, kind="stable")[:, :k]
            best[name] = (np.take_along_axis(bs, order, 1), np.take_along_axis(bi, order, 1))
    out = {f"{name}_{what}": arr for name, (s, ids) in best.items() for what, arr in (("scores", s), ("ids", ids))}
    out["seconds"] = np.array(time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- measure (subprocess)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true hits (``>= 0``) that were found; queries without any are skipped."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) / (t >= 0).sum() for f, t in zip(found, truth) if (t >= 0).any()]
    return float(np.mean(hits)) if hits else float("nan")


def timed(fn, queries: np.ndarray) -> tuple[list, np.ndarray]:
    results, times = [], []
    for i in range(len(queries)):
        t = time.perf_counter()
        results.append(fn(queries[i : i + 1]))
        times.append(time.perf_counter() - t)
    return results, np.array(times) * 1000


def measure(folder: Path, gt_path: Path, sweep: list[tuple[int, int]]) -> dict:
    """Load the index in this fresh process and measure memory, recall and latency."""
    import faiss

    from cmce.search.compact import CompactIndex

    faiss.omp_set_num_threads(1)
    before = proc_status()
    t = time.perf_counter()
    index = CompactIndex.load(folder, search_threads=1)
    load_seconds = time.perf_counter() - t
    after = proc_status()
    gt = dict(np.load(gt_path))
    queries, mask, threshold = gt["queries"], gt["mask"], float(gt["threshold"])
    n = len(index)
    # warm the page cache of the vector file as a serving process would have it
    vec = index.vectors
    for i in range(0, n, 1 << 20):
        np.asarray(vec[i : i + (1 << 20)]).sum()
    out = {
        "load_seconds": round(load_seconds, 2),
        "ram_anon_delta_bytes_per_entry": round((after["RssAnon"] - before["RssAnon"]) / n, 2),
        "ram_serialized_bytes_per_entry": round(index.memory_bytes() / n, 2),
        "load": load_avg(),
        "sweep": [],
    }
    for fraction, rerank in sweep:
        nprobe = max(1, round(fraction * index.nlist))
        res, ms = timed(lambda q: index.search(q, 10, nprobe=nprobe, rerank=rerank), queries)
        found = np.concatenate([r.positions for r in res])
        out["sweep"].append({
            "probe_fraction": fraction, "nprobe": nprobe, "rerank": rerank, "recall@10": round(recall(found, gt["plain_ids"]), 4),
            "p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
        })
        print(f"  nprobe={nprobe:4d} rerank={rerank:4d}  recall@10 {out['sweep'][-1]['recall@10']:.4f}  "
              f"p50 {out['sweep'][-1]['p50_ms']:.2f} ms  p95 {out['sweep'][-1]['p95_ms']:.2f} ms", flush=True)
    # defaults of the config: plain, masked, threshold
    res, ms = timed(lambda q: index.search(q, 10), queries)
    out["default"] = {"nprobe": index.nprobe, "rerank": index.config.rerank,
                      "recall@10": round(recall(np.concatenate([r.positions for r in res]), gt["plain_ids"]), 4),
                      "p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}
    res, ms = timed(lambda q: index.search(q, 10, mask=mask), queries)
    found = np.concatenate([r.positions for r in res])
    excluded = int((~mask[found[found >= 0]]).sum())
    out["mask_reject_10pct"] = {"recall@10": round(recall(found, gt["masked_ids"]), 4), "excluded_returned": excluded,
                                "p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}
    res, ms = timed(lambda q: index.search(q, 10, threshold=threshold), queries)
    found = np.concatenate([r.positions for r in res])
    truth = np.where(gt["plain_scores"] >= threshold, gt["plain_ids"], -1)
    below = int(sum((r.scores[r.positions >= 0] < threshold).sum() for r in res))
    out["threshold"] = {"threshold": round(threshold, 4), "recall_of_hits_above": round(recall(found, truth), 4),
                        "hits_below_returned": below, "queries_with_hits_above": int((truth >= 0).any(1).sum()), "mean_hits": round(float((found >= 0).sum(1).mean()), 2),
                        "p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}
    sparse = np.zeros(n, bool)
    sparse[np.random.default_rng(1).choice(n, size=50_000, replace=False)] = True
    _, ms = timed(lambda q: index.search(q, 10, mask=sparse), queries[:50])
    out["mask_keep_50k_exact_p50_ms"] = round(float(np.median(ms)), 2)
    out["peak_rss_bytes"] = proc_status()["VmHWM"]
    out["rss_anon_bytes"] = proc_status()["RssAnon"]
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--configs", default="ivfpq,opq,fastscan")
    ap.add_argument("--sweep", default="0.125:1024,0.25:1024,0.375:256,0.375:1024,0.5:1024",
                    help="probe fraction:rerank pairs searched besides the defaults")
    ap.add_argument("--data", default="/work/shared/data/lfw-train")
    ap.add_argument("--workdir", default="/tmp/cmce-compact-bench")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the vector file and indexes")
    ap.add_argument("--realism-only", action="store_true", help="only compare real and synthetic statistics")
    ap.add_argument("--measure", nargs=2, metavar=("FOLDER", "GT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sweep = [(float(s.split(":")[0]), int(s.split(":")[1])) for s in args.sweep.split(",") if s]

    if args.measure:
        result = measure(Path(args.measure[0]), Path(args.measure[1]), sweep)
        print("RESULT " + json.dumps(result), flush=True)
        return

    import logging

    import faiss
    import torch

    from cmce.search.compact import CompactIndex
    from cmce.search.compact_config import CompactConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("cmce.search.compact", "cmce.search.compact_build"):  # loading; training and add progress
        logging.getLogger(name).setLevel(logging.INFO)

    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    peak = AnonPeak()
    report: dict = {"n": args.n, "queries": args.queries, "machine": f"{os.cpu_count()} cpus, {platform.machine()}",
                    "faiss": faiss.__version__, "load_start": load_avg(), "configs": {}}
    print(f"N={args.n:,} queries={args.queries} load {load_avg()}", flush=True)
    stats = real_statistics(args.data)
    report["real_pairs"] = pair_scores(stats["x"], stats["labels"], np.random.default_rng(0))
    report["real_photos"] = int(len(stats["x"]))
    cov_b = stats["L_b"].T @ stats["L_b"]
    eig = np.linalg.eigvalsh(cov_b)
    report["between_identity_participation_ratio"] = round(float(eig.sum() ** 2 / (eig**2).sum()), 1)
    print(f"between-identity covariance: participation ratio {report['between_identity_participation_ratio']} "
          f"dimensions of {cov_b.shape[0]}", flush=True)
    report["ivf_recall_by_probe_share"] = ivf_difficulty(stats)
    print(f"IVF64 recall@10 by share of lists probed (real vs synthetic, {len(stats['x'])} vectors): "
          f"{report['ivf_recall_by_probe_share']}", flush=True)
    if args.realism_only:
        print(json.dumps(report, indent=2))
        return
    vec_path = work / "vectors.npy"
    gen = generate(stats, args.n, args.queries, vec_path)
    report.update({k: gen[k] for k in ("identities", "photos_per_identity", "generate_seconds", "synthetic_pairs")})
    print(f"generated {args.n:,} vectors ({gen['identities']:,} identities, {gen['photos_per_identity']:.2f} photos "
          f"each) in {gen['generate_seconds']:.0f} s; real pairs {report['real_pairs']}, synthetic "
          f"{gen['synthetic_pairs']}", flush=True)
    mask = np.random.default_rng(2).random(args.n) >= 0.10
    gt = ground_truth(vec_path, gen["queries"], mask)
    # open-set threshold: the score 95% of real genuine pairs reach (impostor hits of a
    # 10M gallery pass a FAR 1e-3 pair threshold by the thousand, so that one filters nothing)
    threshold = report["real_pairs"]["genuine_q05_50_95"][0]
    gt_path = work / "gt.npz"
    np.savez(gt_path, queries=gen["queries"], mask=mask, threshold=threshold, **gt)
    report["ground_truth_seconds"] = round(float(gt["seconds"]), 1)
    print(f"exact ground truth in {float(gt['seconds']):.0f} s", flush=True)
    del gt
    vec_bytes = vec_path.stat().st_size
    for name in args.configs.split(","):
        factory = CONFIGS.get(name, name)
        gc.collect()
        print(f"\n== {name}: {factory}  (load {load_avg()})", flush=True)
        index = CompactIndex.build(vec_path, CompactConfig(factory=factory))
        st = index.build_stats
        folder = work / f"index-{name}"
        index.save(folder)
        index_bytes = (folder / "index.faiss").stat().st_size
        entry = {
            "factory": factory.replace("{nlist}", str(index.nlist)), "nlist": index.nlist,
            "train_rows": st.train_rows, "train_seconds": round(st.train_seconds, 1),
            "add_seconds": round(st.add_seconds, 1), "load_build": load_avg(),
            "disk_bytes_per_entry": round((index_bytes + vec_bytes) / args.n, 2),
            "disk_index_bytes_per_entry": round(index_bytes / args.n, 2),
        }
        print(f"  train {st.train_seconds:.0f} s on {st.train_rows:,} rows, add {st.add_seconds:.0f} s; disk "
              f"{entry['disk_bytes_per_entry']} B/entry (index {entry['disk_index_bytes_per_entry']})", flush=True)
        del index
        gc.collect()
        proc = subprocess.run(
            [sys.executable, __file__, "--measure", str(folder), str(gt_path), "--sweep", args.sweep],
            capture_output=True, text=True,
        )
        lines = proc.stdout.splitlines()
        for line in lines:
            if not line.startswith("RESULT "):
                print(line, flush=True)
        result = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
        if proc.returncode != 0 or not result:
            print(proc.stderr[-3000:], flush=True)
            raise SystemExit(f"measuring {name} failed")
        entry.update(result[0])
        r = entry
        print(f"  RAM {r['ram_serialized_bytes_per_entry']} B/entry serialized, {r['ram_anon_delta_bytes_per_entry']} "
              f"B/entry RssAnon delta; default nprobe={r['default']['nprobe']} rerank={r['default']['rerank']}: "
              f"recall@10 {r['default']['recall@10']} p50 {r['default']['p50_ms']} ms p95 {r['default']['p95_ms']} ms; "
              f"mask 10%: recall {r['mask_reject_10pct']['recall@10']} p50 {r['mask_reject_10pct']['p50_ms']} ms "
              f"(excluded returned {r['mask_reject_10pct']['excluded_returned']}); threshold "
              f"{r['threshold']['threshold']}: recall {r['threshold']['recall_of_hits_above']} p50 "
              f"{r['threshold']['p50_ms']} ms; mask keeping 50k (exact): p50 {r['mask_keep_50k_exact_p50_ms']} ms; "
              f"search process peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB (anon {r['rss_anon_bytes'] / 2**30:.2f})",
              flush=True)
        report["configs"][name] = entry
        if not args.keep:
            shutil.rmtree(folder)
    report["build_process_peak_rss_anon_bytes"] = peak.stop()
    report["build_process_peak_rss_bytes"] = proc_status()["VmHWM"]
    report["load_end"] = load_avg()
    print(f"\nbuild process peak RssAnon {report['build_process_peak_rss_anon_bytes'] / 2**30:.2f} GiB, "
          f"VmHWM {report['build_process_peak_rss_bytes'] / 2**30:.2f} GiB; load {load_avg()}", flush=True)
    if not args.keep:
        vec_path.unlink()
        gt_path.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
