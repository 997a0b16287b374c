"""Benchmark cmce.people: grouping N faces into people (100k exact-or-compact, 1M compact), time and memory.

Faces are synthetic clusters in the query model's space: P people with
photo counts drawn from a Zipf-like law (Zipf(2.0), capped at 200: most people have one or two
faces, a few have many, as in LFW and in photo libraries); each person a random unit centre, each
face ``centre + sigma * noise`` renormalised, with ``sigma`` per face drawn from [0.9, 1.6] x
``spread``, and different people near orthogonal. In the served setting ``spread`` is fitted
(:func:`fit_spread`) so that the mean same-person cosine of the grouping vectors (printed and
stored as ``same_person_cosine``) is the bundle's real one: that of its served grouping
vectors on the held-out LFW identities, measured by ``--measure-cosine DATA`` into
``docs/people-same-person-cosine.json`` (``target_same_person_cosine``). Random centres are
easier to tell apart than real people: the BCubed F here checks the code, the speed is the point.

Two settings (``--settings``): ``served``, the default bundle's served grouping (its query weight,
threshold, attach pass and doubt cut, in its query model's dimension, with a synthetic query-model
view of each face and two-face photos: :func:`one_run`), and ``plain``, one 512-d cosine at 0.40
without attach (the earlier measurement's setting).

Each size and setting runs in its own process (peak resident memory of that process is reported: the vectors,
the index and the graph). Stages: building the index (``exact``: ``VectorIndex`` flat; ``compact``:
``CompactIndex`` IVF-PQ over a float16 file), the k-NN graph (one search per face, k = 30),
the clustering (Chinese whispers) and the constraints/result step. Medians over ``--repeat`` runs.

Usage:
    PYTHONPATH=. python benchmarks/bench_people.py --bundle facenet-query --measure-cosine ../shared/data/lfw-train
    PYTHONPATH=. python benchmarks/bench_people.py --sizes 100000 --repeat 3 --json docs/people-scale-100k.json
    PYTHONPATH=. python benchmarks/bench_people.py --bundle facenet-query --settings served --sizes 100000 \
        --json docs/people-scale-100k-facenet-query.json
    PYTHONPATH=. python benchmarks/bench_people.py --sizes 1000000 --settings served --json docs/people-scale-1m-served.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 512
THRESHOLD = 0.40
SERVED_BUNDLE = "sface-query"
COSINES = ROOT / "docs" / "people-same-person-cosine.json"
"""Each bundle's real same-person cosine of its grouping vectors (``--measure-cosine``)."""


def synthetic_faces(n: int, dim: int = DIM, spread: float = 0.03,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, dim) unit face vectors of Zipf-sized people, each face's person and its noise scale
    ``sigma`` (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    sizes = []
    total = 0
    while total < n:
        s = int(min(200, rng.zipf(2.0)))
        sizes.append(min(s, n - total))
        total += sizes[-1]
    truth = np.repeat(np.arange(len(sizes)), sizes)
    out = np.empty((n, dim), np.float32)
    sigmas = np.empty(n, np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        t = truth[start:stop]
        c = _centres(t, dim, seed)
        sigma = (rng.uniform(0.9, 1.6, size=(stop - start, 1)) * spread).astype(np.float32)
        x = c + sigma * rng.normal(size=(stop - start, dim)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
        sigmas[start:stop] = sigma[:, 0]
    return out, truth, sigmas


def _centres(people: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A fixed random unit centre per person id (seeded by id, so chunks agree)."""
    uniq, inv = np.unique(people, return_inverse=True)
    c = np.stack([np.random.default_rng((seed, int(p))).normal(size=dim) for p in uniq]).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c[inv]


def bundle_folder(bundle: str) -> Path:
    """A bundle by folder, or by the name of a shipped one (``assets/bundles/<name>``)."""
    return Path(bundle) if (Path(bundle) / "config.json").is_file() else ROOT / "assets" / "bundles" / bundle


def served_config(bundle: str = SERVED_BUNDLE) -> tuple[dict, int, float]:
    """The grouping a bundle serves (its ``info.people``), its query model's dimension and rejection rate."""
    cfg = json.loads((bundle_folder(bundle) / "config.json").read_text())
    cal = cfg["info"]["people"]
    keep = ("method", "threshold", "query_weight", "attach_above", "attach_margin", "detach_below")
    dim = int(cfg["gallery_models"][0]["transformer"]["out_dim"])  # the query model's space
    return {k: cal[k] for k in keep if k in cal}, dim, float(cfg["calibration"]["rejection_rate"])


def query_view(x: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """A second view of each face, as the query model's own embedding beside the ensemble's:
    ``x + 0.5 * spread * noise`` renormalised (the same face seen by another network)."""
    rng = np.random.default_rng((seed, 7))
    out = np.empty_like(x)
    for start in range(0, len(x), 100_000):
        y = x[start:start + 100_000]
        y = y + np.float32(0.5 * spread) * rng.normal(size=y.shape).astype(np.float32)
        out[start:start + 100_000] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return out


def synthetic_same_person_cosine(spread: float, dim: int, query_weight: float, n: int = 6000, seed: int = 0) -> float:
    """The mean same-person cosine (``cmce.metrics.clustering.same_person_cosine``) of the grouping
    vectors of ``n`` synthetic faces drawn with ``spread`` in ``dim`` dimensions, with their query view."""
    from cmce.metrics.clustering import same_person_cosine
    from cmce.people.grouping import grouping_vectors

    x, truth, _ = synthetic_faces(n, dim=dim, spread=spread, seed=seed)
    return same_person_cosine(grouping_vectors(x, query_view(x, spread, seed), query_weight), truth)


def fit_spread(target: float, dim: int, query_weight: float) -> float:
    """The ``spread`` whose synthetic faces have the mean same-person cosine ``target`` (bisection: the
    cosine falls as the spread grows), to 0.002.

    Raises:
        ValueError: a target outside (0.05, 0.99).
    """
    if not 0.05 < target < 0.99:
        raise ValueError(f"a same-person cosine must be in (0.05, 0.99) to fit a spread to; got {target}")
    lo, hi = 0.1 / np.sqrt(dim), 10.0 / np.sqrt(dim)  # cosines of about 0.99 and 0.01
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        got = synthetic_same_person_cosine(mid, dim, query_weight)
        if abs(got - target) < 0.002:
            return float(mid)
        lo, hi = (mid, hi) if got > target else (lo, mid)
    return float(0.5 * (lo + hi))


def real_same_person_cosine(bundle: str, data_dir: str) -> dict:
    """A bundle's mean same-person cosine of its served grouping vectors (the ensemble's and the query
    model's cosines weighted by its ``info.people`` query weight) on the held-out identities of
    ``data_dir`` (every found face, clean photos; the embedding cache is used), with the ensemble's and
    the query model's own, and the mean cosine of 20,000 random pairs of different people."""
    from cmce.experiments.evaluate_run import embed_evaluation_photos
    from cmce.method.bundle import load_bundle
    from cmce.metrics.clustering import same_person_cosine
    from cmce.models.embed import EmbeddingCache
    from cmce.people.grouping import grouping_vectors

    folder = bundle_folder(bundle)
    b = load_bundle(folder)
    cal, _, _ = served_config(bundle)
    photos = embed_evaluation_photos(data_dir, b, heldout=True, cache=EmbeddingCache(), progress=False)
    rows = np.flatnonzero(photos.clean.found)
    emb = {m: v[rows] for m, v in photos.clean.embeddings.items()}
    vec = b.gallery_vectors(emb, photos.clean.detection_probability[rows])

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ens, query = unit(vec.ensemble), unit(emb[b.query_model])
    grouped = grouping_vectors(ens, query, cal["query_weight"])
    truth = np.asarray(photos.dataset.labels)[rows]
    rng = np.random.default_rng(0)
    a, c = rng.integers(0, len(rows), 20_000), rng.integers(0, len(rows), 20_000)
    other = truth[a] != truth[c]
    return {"same_person_cosine": same_person_cosine(grouped, truth), "query_weight": cal["query_weight"],
            "ensemble": same_person_cosine(ens, truth), "query_model": same_person_cosine(query, truth),
            "different_people_cosine": float(np.einsum("ij,ij->i", grouped[a][other], grouped[c][other]).mean()),
            "faces": int(len(rows)), "people": int(len(set(truth.tolist()))), "data": str(data_dir),
            "measured_by": "benchmarks/bench_people.py --measure-cosine (held-out identities, clean photos)"}


def target_cosine(bundle: str) -> float:
    """The bundle's real same-person cosine, as ``--measure-cosine`` stored it.

    Raises:
        SystemExit: not measured yet (the message says the command).
    """
    name = bundle_folder(bundle).name
    known = json.loads(COSINES.read_text()) if COSINES.is_file() else {}
    if name not in known:
        raise SystemExit(f"{COSINES.name} has no same-person cosine for {name}; measure it first: PYTHONPATH=. "
                         f"python benchmarks/bench_people.py --bundle {bundle} --measure-cosine ../shared/data/lfw-train")
    return float(known[name]["same_person_cosine"])


def group_photos(n: int, seed: int, share: float = 0.2) -> np.ndarray:
    """A photo id per face: a random ``share`` of the faces are in photos of two (random faces: nearly
    always two people, as in a group photo), the others alone in theirs (faces of one photo are a
    cannot-link constraint of the grouping)."""
    rng = np.random.default_rng((seed, 9))
    photos = np.arange(n)
    pairs = rng.permutation(n)[:int(share * n) // 2 * 2].reshape(-1, 2)
    photos[pairs[:, 1]] = pairs[:, 0]
    return photos


def one_run(n: int, index_kind: str, seed: int, setting: str, bundle: str = SERVED_BUNDLE) -> dict:
    """Group n synthetic faces once, in this process; stage times and peak memory.

    ``setting`` ``plain``: one cosine (the 512-d query model's space), threshold 0.40, no attach,
    the prebuilt index passed in. ``served``: the default bundle's served grouping (its method,
    threshold, query weight and attach pass, its query model's dimension; an uncertainty per face,
    the noisier faces the more uncertain, cut at the bundle's rejection rate; a fifth of the faces
    in two-face photos: :func:`group_photos`), whose own index over
    the grouping vectors is built inside ``group_faces`` (its time is in ``seconds_grouping``).
    """
    from cmce.metrics.clustering import bcubed
    from cmce.people import GroupingConfig, group_faces
    from cmce.people.graph import search_index
    from cmce.people.grouping import grouping_vectors

    target = None
    if setting == "plain":
        dim, spread, cal, query, unc, photos = DIM, 0.03, {"threshold": THRESHOLD, "method": "chinese_whispers"}, None, None, None
    else:
        cal, dim, rate = served_config(bundle)
        target = target_cosine(bundle)
        spread = fit_spread(target, dim, cal.get("query_weight", 0.0))  # the bundle's real same-person cosine
    t0 = time.perf_counter()
    x, truth, sigma = synthetic_faces(n, dim=dim, spread=spread, seed=seed)
    if setting == "served":
        query = query_view(x, spread, seed)
        unc = sigma + np.random.default_rng((seed, 8)).normal(scale=0.1 * spread, size=n)
        cal = {**cal, "doubt_above": float(np.quantile(unc, 1.0 - rate))}
        photos = group_photos(n, seed)
    t_data = time.perf_counter() - t0
    cfg = GroupingConfig(k=30, index=index_kind, **cal)
    g_vec = grouping_vectors(x, query, cfg.query_weight)
    rng = np.random.default_rng(1)
    a = rng.integers(0, n, 20_000)
    b = np.minimum(a + 1, n - 1)
    same = truth[a] == truth[b]
    same_cos = float(np.einsum("ij,ij->i", g_vec[a][same], g_vec[b][same]).mean())
    t_index, index = 0.0, None
    if setting == "plain":
        t0 = time.perf_counter()
        index = search_index(x, index_kind)
        t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    g = group_faces(x, query_vectors=query, uncertainty=unc, photo_ids=photos, config=cfg, index=index)
    t_group = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    labels = g.labels.copy()
    labels[labels < 0] = labels.max() + 1 + np.arange(int((labels < 0).sum()))  # an unsure face: alone
    f = bcubed(labels, truth)[2]
    return {"faces": n, "setting": setting, "dim": int(g_vec.shape[1]), "config": {k: v for k, v in cal.items()},
            "index": type(index).__name__ if index is not None else index_kind, "people_true": int(truth.max() + 1),
            "people_found": len(g.people), "unsure": len(g.unsure), "bcubed_f": f, "same_person_cosine": same_cos,
            "target_same_person_cosine": target, "spread": spread,
            "seconds_data": t_data, "seconds_index": t_index, "seconds_grouping": t_group,
            "seconds_total": t_index + t_group, "cpu_seconds_grouping": cpu,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--index", choices=["auto", "exact", "compact"], default="auto")
    ap.add_argument("--settings", nargs="+", choices=["served", "plain"], default=["served", "plain"])
    ap.add_argument("--bundle", default=SERVED_BUNDLE, help="the bundle whose served grouping is measured")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--measure-cosine", metavar="DATA", default=None,
                    help=f"measure the bundle's real same-person cosine on DATA's held-out identities into {COSINES.name}")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process's run
    args = ap.parse_args()
    if args.measure_cosine:
        known = json.loads(COSINES.read_text()) if COSINES.is_file() else {}
        known[bundle_folder(args.bundle).name] = got = real_same_person_cosine(args.bundle, args.measure_cosine)
        COSINES.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
        print(f"{bundle_folder(args.bundle).name}: same-person cosine {got['same_person_cosine']:.3f} "
              f"({got['faces']} faces of {got['people']} people)")
        return
    if args.one is not None:
        print(json.dumps(one_run(args.one, args.index, 0, args.settings[0], args.bundle)))
        return
    sizes = []
    for n in args.sizes:
        for setting in args.settings:
            runs = []
            for r in range(args.repeat if n <= 200_000 else 1):
                out = subprocess.run([sys.executable, __file__, "--one", str(n), "--index", args.index,
                                      "--settings", setting, "--bundle", args.bundle], capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{n:>9,} faces, {setting}, run {r + 1}: {runs[-1]['seconds_total']:.1f} s "
                      f"(index {runs[-1]['seconds_index']:.1f}, grouping {runs[-1]['seconds_grouping']:.1f}, "
                      f"{runs[-1]['cpu_seconds_grouping']:.1f} CPU s), peak {runs[-1]['peak_rss_mib']:.0f} MiB, "
                      f"BCubed F {runs[-1]['bcubed_f']:.3f}, load {runs[-1]['load_average']:.1f}", flush=True)
            keys = [k for k in runs[0] if k.startswith(("seconds", "cpu_seconds")) or k in ("peak_rss_mib", "bcubed_f")]
            sizes.append({**runs[0], **{k: float(np.median([r[k] for r in runs])) for k in keys},
                          "repeats": len(runs), "runs_seconds_total": [r["seconds_total"] for r in runs],
                          "runs_load_average": [r["load_average"] for r in runs]})
    doc = {"benchmark": "benchmarks/bench_people.py", "index": args.index, "k": 30,
           "served_bundle": args.bundle, "machine": f"{platform.machine()}, 2 CPU cores shared with "
           "other jobs (medians of the repeats)", "sizes": sizes}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")

if __name__ == "__main__":
    main()
