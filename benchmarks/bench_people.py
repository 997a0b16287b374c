"""Benchmark cmce.people: grouping N faces into people (100k exact-or-compact, 1M compact), time and memory.

Faces are synthetic clusters in the query model's space (facenet-casia, 512-d): P people with
photo counts drawn from a Zipf-like law (Zipf(2.0), capped at 200: most people have one or two
faces, a few have many, as in LFW and in photo libraries); each person a random unit centre, each
face ``centre + sigma * noise`` renormalised, with ``sigma`` per face drawn from [0.9, 1.6] x
``--spread`` so that the mean same-person cosine is near the real held-out ensemble's (printed and
stored as ``same_person_cosine``), and different people near orthogonal. Random centres in
512-d are easier to tell apart than real people: the BCubed F here checks the code, the speed is the point.

Each size runs in its own process (peak resident memory of that process is reported: the vectors,
the index and the graph). Stages: building the index (``exact``: ``VectorIndex`` flat; ``compact``:
``CompactIndex`` IVF-PQ over a float16 file), the k-NN graph (one search per face, k = 30),
the clustering (Chinese whispers) and the constraints/result step. Medians over ``--repeat`` runs.

Usage:
    PYTHONPATH=. python benchmarks/bench_people.py --sizes 100000 --repeat 3 --json docs/people-scale.json
    PYTHONPATH=. python benchmarks/bench_people.py --sizes 100000 1000000 --index compact --repeat 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 512
THRESHOLD = 0.40


def synthetic_faces(n: int, dim: int = DIM, spread: float = 0.03, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) unit face vectors of Zipf-sized people, and each face's person (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    sizes = []
    total = 0
    while total < n:
        s = int(min(200, rng.zipf(2.0)))
        sizes.append(min(s, n - total))
        total += sizes[-1]
    truth = np.repeat(np.arange(len(sizes)), sizes)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        t = truth[start:stop]
        c = _centres(t, dim, seed)
        sigma = (rng.uniform(0.9, 1.6, size=(stop - start, 1)) * spread).astype(np.float32)
        x = c + sigma * rng.normal(size=(stop - start, dim)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, truth


def _centres(people: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A fixed random unit centre per person id (seeded by id, so chunks agree)."""
    uniq, inv = np.unique(people, return_inverse=True)
    c = np.stack([np.random.default_rng((seed, int(p))).normal(size=dim) for p in uniq]).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c[inv]


def one_run(n: int, index_kind: str, seed: int) -> dict:
    """Group n synthetic faces once, in this process; stage times and peak memory."""
    from cmce.metrics.clustering import bcubed
    from cmce.people import GroupingConfig, group_faces
    from cmce.people.graph import search_index

    t0 = time.perf_counter()
    x, truth = synthetic_faces(n, seed=seed)
    t_data = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    a = rng.integers(0, n, 20_000)
    same = truth[a] == truth[np.minimum(a + 1, n - 1)]
    same_cos = float(np.einsum("ij,ij->i", x[a][same], x[np.minimum(a + 1, n - 1)][same]).mean())
    t0 = time.perf_counter()
    index = search_index(x, index_kind)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = group_faces(x, config=GroupingConfig(threshold=THRESHOLD, method="chinese_whispers", k=30), index=index)
    t_group = time.perf_counter() - t0
    f = bcubed(g.labels, truth)[2]
    return {"faces": n, "index": type(index).__name__, "people_true": int(truth.max() + 1),
            "people_found": len(g.people), "bcubed_f": f, "same_person_cosine": same_cos,
            "seconds_data": t_data, "seconds_index": t_index, "seconds_grouping": t_group,
            "seconds_total": t_index + t_group,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--index", choices=["auto", "exact", "compact"], default="compact")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process's run
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args.one, args.index, 0)))
        return
    sizes = []
    for n in args.sizes:
        runs = []
        for r in range(args.repeat if n <= 200_000 else 1):
            out = subprocess.run([sys.executable, __file__, "--one", str(n), "--index", args.index],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{n:>9,} faces, run {r + 1}: {runs[-1]['seconds_total']:.1f} s "
                  f"(index {runs[-1]['seconds_index']:.1f}, grouping {runs[-1]['seconds_grouping']:.1f}), "
                  f"peak {runs[-1]['peak_rss_mib']:.0f} MiB, BCubed F {runs[-1]['bcubed_f']:.3f}", flush=True)
        keys = [k for k in runs[0] if k.startswith("seconds") or k in ("peak_rss_mib", "bcubed_f")]
        sizes.append({**runs[0], **{k: float(np.median([r[k] for r in runs])) for k in keys},
                      "repeats": len(runs), "runs_seconds_total": [r["seconds_total"] for r in runs]})
    doc = {"benchmark": "benchmarks/bench_people.py", "index": args.index, "dim": DIM, "threshold": THRESHOLD,
           "k": 30, "method": "chinese_whispers", "machine": f"{platform.machine()}, 2 CPU cores shared with "
           "other jobs (medians of the repeats)", "sizes": sizes}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
