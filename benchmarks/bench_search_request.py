"""The app's whole search request, timed on two checkouts in one run: before issue 25 and now.

Issue 25 asked that search latency stay unchanged within noise (the verdict, the presence line,
the match bookkeeping were added to the search handler). This times ``DemoServer.search`` as the
``/search`` endpoint runs it, minus Gradio's transport: the query photo read and checked, its faces
detected and embedded, every column searched, the verdict, the results HTML and dict. Each
checkout runs in a worker process of its own (``--worker``), with its own code and shipped
assets, on the same example gallery and queries (``assets/examples``: the 9-photo archive
gallery, the 7 example queries in turn); the driver asks the two workers for ``--batch``
searches each in turn, ``--rounds`` times (ABBA order), so both see the same machine load.

Usage (from the repo root; make the older checkout first, e.g. the parent of the issue-25 merge):
    git worktree add --detach /tmp/wt-pre25 4bb82c8^1
    PYTHONPATH=. python benchmarks/bench_search_request.py --before /tmp/wt-pre25 --before-name 4bb82c8^1 \\
        --after-name "issue-25f branch" --json docs/bench-search-request.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(tree: Path, gallery: str) -> None:
    """Serve ``<n>`` lines on stdin with one JSON line of ``n`` search times (seconds) each."""
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    logging.basicConfig(level=logging.WARNING)
    from cmce.gallery.ingest import GalleryLimits
    from cmce.io.limits import BundleAllowList, ServerLimits
    from cmce.serve.handlers import DemoServer
    from cmce.serve.sessions import shipped_bundles
    from cmce.serve.workdirs import TempFolders

    examples = tree / "assets" / "examples"
    limits = GalleryLimits()
    demo = DemoServer(shipped_bundles(tree / "assets" / "bundles"), {gallery: examples / gallery}, limits,
                      ServerLimits.from_env(image=limits.image), BundleAllowList.from_env(), TempFolders())
    demo.engines.load_default()
    session = demo.load_example_gallery(gallery, None, None, lambda *a, **k: None)[0]
    queries = sorted(str(p) for p in (examples / "queries").glob("*.jpg"))
    turn = 0

    def one() -> float:
        nonlocal turn
        query = queries[turn % len(queries)]
        turn += 1
        start = time.perf_counter()
        out = demo.search(query, state=session)
        took = time.perf_counter() - start
        if "error" in out[3] and not str(out[3]["error"]).startswith("No face"):
            raise RuntimeError(f"search failed: {out[3]['error']}")
        return took

    for _ in range(2 * len(queries)):  # warm-up: models, caches, allocator
        one()
    print(json.dumps({"ready": True, "faces": len(session.gallery)}), flush=True)
    for line in sys.stdin:
        n = int(line)
        print(json.dumps([one() for _ in range(n)]), flush=True)


def _start(tree: Path, gallery: str) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--gallery", gallery],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())


def _ask(proc: subprocess.Popen, n: int) -> list[float]:
    proc.stdin.write(f"{n}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _commit(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="the older checkout (a git worktree)")
    ap.add_argument("--before-name", default="before", help="how the older checkout is named in the output")
    ap.add_argument("--after", type=Path, default=ROOT, help="the newer checkout (default: this one)")
    ap.add_argument("--after-name", default="after", help="how the newer checkout is named in the output")
    ap.add_argument("--gallery", default="archive", help="example gallery folder under assets/examples")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=7)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker.resolve(), args.gallery)
        return
    sys.path.insert(0, str(ROOT))  # the driver only: each worker imports its own checkout's cmce
    from _harness import machine

    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    procs, times = {}, {"before": [], "after": []}
    try:
        for name, tree in trees.items():
            procs[name], info = _start(tree, args.gallery)
            print(f"{name}: {tree} at {_commit(tree)}, example gallery {args.gallery!r} of {info['faces']} faces")
        per_round = []
        for r in range(args.rounds):  # ABBA: neither side always goes first
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            got = {name: _ask(procs[name], args.batch) for name in order}
            for name in order:
                times[name] += got[name]
            per_round.append(statistics.median(got["after"]) / statistics.median(got["before"]))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    med = {name: statistics.median(t) * 1000 for name, t in times.items()}
    q = {name: statistics.quantiles(t, n=4) for name, t in times.items()}
    ratio = med["after"] / med["before"]
    spread = sorted(per_round)
    import numpy as np  # a 95% bootstrap interval of the ratio of the two medians

    rng = np.random.default_rng(0)
    a, b = np.asarray(times["after"]), np.asarray(times["before"])
    boot = [np.median(rng.choice(a, len(a))) / np.median(rng.choice(b, len(b))) for _ in range(2000)]
    low, high = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    for name in ("before", "after"):
        print(f"{name:6}: median {med[name]:.1f} ms over {len(times[name])} searches "
              f"(quartiles {q[name][0] * 1000:.1f}-{q[name][2] * 1000:.1f} ms)")
    print(f"after / before: {ratio:.3f}, 95% bootstrap interval {low:.3f}-{high:.3f} (per-round ratios {spread[0]:.3f}-{spread[-1]:.3f}, "
          f"median {statistics.median(spread):.3f}); {machine()}")
    if args.json:
        doc = {"gallery": args.gallery, "rounds": args.rounds, "batch": args.batch, "machine": machine(),
               "before": {"name": args.before_name, "commit": _commit(trees["before"]), "median_ms": round(med["before"], 2),
                          "q1_ms": round(q["before"][0] * 1000, 2), "q3_ms": round(q["before"][2] * 1000, 2),
                          "searches": len(times["before"])},
               "after": {"name": args.after_name, "commit": _commit(trees["after"]), "median_ms": round(med["after"], 2),
                         "q1_ms": round(q["after"][0] * 1000, 2), "q3_ms": round(q["after"][2] * 1000, 2),
                         "searches": len(times["after"])},
               "ratio": round(ratio, 4), "ratio_ci95": [round(low, 4), round(high, 4)], "round_ratio_min": round(spread[0], 4), "round_ratio_max": round(spread[-1], 4),
               "round_ratio_median": round(statistics.median(spread), 4)}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
