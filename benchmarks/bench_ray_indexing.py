"""Scaling of indexing: faces/s of the in-process runner and of Ray Data with 1 and 2 workers.

The same fixed photos (the first N of lfw-train in listing order, linked into a temporary
folder) are indexed into a fresh gallery by each runner, ``--repeat`` times; the script
prints each run, the median faces/s per runner and the ratios to the in-process runner,
with the machine's load (``_harness.machine``) before and after. Ray runs on a local cluster of
``--cpus`` CPUs started once (not timed); a Ray job's time includes starting its actors
and loading their models, the in-process time is shown with and without loading the
engine. Derived data (the search index) is not built: only the raw shards are timed.

    CMCE_TORCH_THREADS=1 PYTHONPATH=. python benchmarks/bench_ray_indexing.py --photos 500 --json docs/bench-ray-indexing.json

``--json`` also writes every run's faces/s, the medians and the load, with the facenet-casia
runtime (``CMCE_FACENET_RUNTIME``) they were measured with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_LFW = ROOT.parent / "shared" / "data" / "lfw-train"


def link_photos(lfw: Path, n: int, dest: Path) -> int:
    from cmce.io.datasets import list_labelled_images

    ds = list_labelled_images(lfw)
    for path, label in list(zip(ds.paths, ds.labels))[:n]:
        (dest / label).mkdir(parents=True, exist_ok=True)
        (dest / label / path.name).symlink_to(path)
    return min(n, len(ds))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    p.add_argument("--photos", type=int, default=500)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from cmce.method.bundle import load_bundle
    from cmce.method.engine import FaceEngine
    from cmce.pipeline import IngestJob, run_in_process, run_ray

    load_before = machine()
    print(f"load before: {load_before}", flush=True)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cmce-bench-ray-") as tmp:
        tmp = Path(tmp)
        n = link_photos(args.lfw, args.photos, tmp / "photos")
        print(f"{n} photos from {args.lfw} (first in listing order); batch size {args.batch_size}; "
              f"torch threads per process: {os.environ.get('CMCE_TORCH_THREADS', '1')}", flush=True)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            for r in range(args.repeat):
                start = time.perf_counter()
                engine = FaceEngine(load_bundle())
                load_s = time.perf_counter() - start
                job = IngestJob(str(tmp / "photos"), str(tmp / f"inproc-{r}"), batch_size=args.batch_size)
                rep = run_in_process(job, engine=engine)
                del engine
                faces = rep.added
                runs.setdefault("in-process", []).append(rep.added / rep.seconds)
                print(f"in-process   run {r}: {rep.added} faces in {rep.seconds:.1f} s = {rep.added / rep.seconds:.2f} "
                      f"faces/s ({rep.added / (rep.seconds + load_s):.2f} with the {load_s:.1f} s engine load) | "
                      f"{machine()}", flush=True)
                for w in args.workers:
                    job = IngestJob(str(tmp / "photos"), str(tmp / f"ray{w}-{r}"), batch_size=args.batch_size)
                    rep = run_ray(job, workers=w)
                    runs.setdefault(f"ray x{w}", []).append(rep.added / rep.seconds)
                    print(f"ray {w} worker{'s' if w > 1 else ' '} run {r}: {rep.added} faces in {rep.seconds:.1f} s "
                          f"(actor start and model load included) = {rep.added / rep.seconds:.2f} faces/s | {machine()}",
                          flush=True)
        finally:
            ray.shutdown()
    base = statistics.median(runs["in-process"])
    print("\nmedian faces/s (ratio to in-process, same run):")
    for name, values in runs.items():
        med = statistics.median(values)
        print(f"  {name:<11} {med:6.2f}  x{med / base:.2f}  ({len(values)} run{'s' if len(values) > 1 else ''})")
    print(f"load after: {machine()}")
    if args.json:
        args.json.write_text(json.dumps({
            "photos": n, "faces": faces, "batch_size": args.batch_size, "cpus": args.cpus,
            "facenet_runtime": os.environ.get("CMCE_FACENET_RUNTIME", "torch"),
            "torch_threads": os.environ.get("CMCE_TORCH_THREADS", "1"),
            "load_before": load_before, "load_after": machine(), "faces_per_s": runs,
            "median_faces_per_s": {name: statistics.median(v) for name, v in runs.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
