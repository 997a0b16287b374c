"""Indexing-throughput tables of ``docs/speed.md`` and ``docs/scale.md``, rendered from the benchmarks' JSON
(``benchmarks/bench_indexing_throughput.py --json``, ``benchmarks/bench_ray_indexing.py --json``).

Pure functions: the benchmark's JSON documents in, a Markdown table (ending in a newline) out.
``INDEXING_TABLES`` maps the renderer names a page's ``<!-- table: NAME FILE -->`` marker uses
to them; ``cmce.experiments.docs_tables`` registers them in its ``JSON_TABLES``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence

from cmce.errors import CmceError
from cmce.experiments.docs_tables_base import one_doc

__all__ = ["INDEXING_TABLES", "render_indexing_cost", "render_indexing_ratios", "render_indexing_throughput", "render_ray_scaling"]

#: ``bench_indexing_throughput.py``'s variants -> the table's rows.
_VARIANTS = {
    "before": "before (float32, OpenCV default threads)",
    "cv1": "`CMCE_OPENCV_THREADS=1`",
    "int8": "`CMCE_FACENET_RUNTIME=int8`",
    "int8-cv1": "both",
}


def _processes(n: int) -> str:
    return f"{n} process" + ("" if n == 1 else "es")


def render_indexing_throughput(bench: Mapping) -> str:
    """``benchmarks/bench_indexing_throughput.py --json``: per variant, the median faces/s of detect+embed and of
    ``Gallery.add_images`` and the median load, at each process count (``1 / 2``). A variant whose detect+embed
    is the fastest at every process count is bold.

    Example:
        >>> def fig(engine, gallery, load):
        ...     return {"faces": 150, "engine_fps": engine, "gallery_fps": gallery, "load": load}
        >>> print(render_indexing_throughput({"repeat": 5, "summary": {
        ...     "before x1": fig(10.881, 11.94, 3.3), "int8 x1": fig(17.04, 17.25, 2.93),
        ...     "before x2": fig(11.51, 11.79, 4.0), "int8 x2": fig(15.4, 15.6, 4.3)}}), end="")
        | variant (5 repeats) | detect+embed faces/s, 1 process / 2 processes | Gallery.add_images faces/s, 1 / 2 | median load, 1 / 2 |
        |---|---:|---:|---:|
        | before (float32, OpenCV default threads) | 10.88 / 11.51 | 11.94 / 11.79 | 3.3 / 4.0 |
        | `CMCE_FACENET_RUNTIME=int8` | **17.04 / 15.40** | **17.25 / 15.60** | 2.9 / 4.3 |
    """
    summary = bench["summary"]
    variants: list[str] = []
    counts: list[int] = []
    for key in summary:
        variant, _, procs = key.rpartition(" x")
        if variant not in _VARIANTS:
            raise CmceError(f"the indexing-throughput table does not know the variant {variant!r}; "
                            f"known: {', '.join(_VARIANTS)}")
        variants += [variant] if variant not in variants else []
        counts += [int(procs)] if int(procs) not in counts else []
    missing = [f"{v} x{c}" for v in variants for c in counts if f"{v} x{c}" not in summary]
    if missing:
        raise CmceError(f"the indexing-throughput table needs every variant at every process count; missing: {missing}")
    gallery = all("gallery_fps" in s for s in summary.values())
    fastest = [v for v in variants if len(variants) > 1 and all(
        summary[f"{v} x{c}"]["engine_fps"] >= max(summary[f"{w} x{c}"]["engine_fps"] for w in variants)
        for c in counts)]

    def cells(variant: str, key: str, digits: int) -> str:
        cell = " / ".join(f"{summary[f'{variant} x{c}'][key]:.{digits}f}" for c in counts)
        return f"**{cell}**" if variant in fastest and key != "load" else cell

    per = " / ".join(str(c) for c in counts)
    repeat = bench.get("repeat")
    header = [f"variant ({repeat} repeats)" if repeat else "variant",
              "detect+embed faces/s, " + " / ".join(_processes(c) for c in counts)]
    header += [f"Gallery.add_images faces/s, {per}"] if gallery else []
    header += [f"median load, {per}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for v in variants:
        row = [_VARIANTS[v], cells(v, "engine_fps", 2)] + ([cells(v, "gallery_fps", 2)] if gallery else [])
        lines.append("| " + " | ".join([*row, cells(v, "load", 1)]) + " |")
    return "\n".join(lines) + "\n"


def render_indexing_ratios(bench: Mapping) -> str:
    """``benchmarks/bench_indexing_throughput.py --json``: each variant's detect+embed faces/s against the first
    variant's, as the median of the per-repeat ratios (both measured in the same repeat, so a load that moves
    between repeats cancels), and the median ms per face of each stage in one process.

    Example:
        >>> def run(fps, facenet):
        ...     return {"engine_fps": fps, "stage_ms_per_face": {"detect": 30.0, "facenet-casia": facenet}}
        >>> print(render_indexing_ratios({"variants": ["before", "int8"], "runs": {
        ...     "before x1": [run(10.0, 37.1), run(12.0, 36.0)], "int8 x1": [run(15.0, 9.5), run(17.0, 9.1)],
        ...     "before x2": [run(11.0, 40.0), run(12.0, 41.0)], "int8 x2": [run(16.0, 10.0), run(15.0, 11.0)]},
        ...     "summary": {"before x1": {"stage_ms_per_face": {"detect": 30.0, "facenet-casia": 36.55}},
        ...                 "int8 x1": {"stage_ms_per_face": {"detect": 30.0, "facenet-casia": 9.3}}}}), end="")
        | variant | faces/s against `before`, 1 process / 2 processes | ms per face, 1 process: detect / facenet-casia |
        |---|---:|---:|
        | before (float32, OpenCV default threads) | x1.00 / x1.00 | 30.0 / 36.5 |
        | `CMCE_FACENET_RUNTIME=int8` | x1.46 / x1.35 | 30.0 / 9.3 |
    """
    variants, runs = list(bench["variants"]), bench["runs"]
    unknown = [v for v in variants if v not in _VARIANTS]
    if unknown:
        raise CmceError(f"the indexing ratios do not know the variants {unknown}; known: {', '.join(_VARIANTS)}")
    counts = sorted({int(key.rpartition(" x")[2]) for key in runs})
    missing = [f"{v} x{c}" for v in variants for c in counts if f"{v} x{c}" not in runs]
    if missing:
        raise CmceError(f"the indexing ratios need every variant at every process count; missing: {missing}")
    base, one = variants[0], min(counts)
    stages = list(bench["summary"][f"{base} x{one}"]["stage_ms_per_face"])

    def ratio(v: str, c: int) -> str:
        pairs = zip(runs[f"{base} x{c}"], runs[f"{v} x{c}"])
        return f"x{statistics.median(b['engine_fps'] / a['engine_fps'] for a, b in pairs):.2f}"

    header = [f"variant | faces/s against `{base}`, " + " / ".join(_processes(c) for c in counts),
              f"ms per face, {_processes(one)}: " + " / ".join(stages)]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|"]
    for v in variants:
        ms = bench["summary"][f"{v} x{one}"]["stage_ms_per_face"]
        lines.append(f"| {_VARIANTS[v]} | {' / '.join(ratio(v, c) for c in counts)} | "
                     f"{' / '.join(f'{ms[k]:.1f}' for k in stages)} |")
    return "\n".join(lines) + "\n"


#: ``bench_ray_indexing.py``'s runners -> the table's rows.
_RUNNERS = {"in-process": "in-process (reader thread + one model thread)"}
#: ``CMCE_FACENET_RUNTIME`` -> how the tables name what it runs.
_RUNTIMES = {"torch": "float32", "int8": "facenet-casia int8"}


def _runner(name: str) -> str:
    """``ray x2`` -> ``Ray, 2 workers``."""
    if name in _RUNNERS:
        return _RUNNERS[name]
    workers = _ray_workers(name)
    return f"Ray, {workers} worker" + ("" if workers == 1 else "s")


def _ray_workers(name: str) -> int:
    if not name.startswith("ray x") or not name[5:].isdigit():
        raise CmceError(f"the Ray tables do not know the runner {name!r}; known: in-process, ray xN")
    return int(name[5:])


def _runtime(bench: Mapping) -> str:
    runtime = bench.get("facenet_runtime", "torch")
    if runtime not in _RUNTIMES:
        raise CmceError(f"the Ray tables do not know the facenet runtime {runtime!r}; known: {', '.join(_RUNTIMES)}")
    return _RUNTIMES[runtime]


def render_ray_scaling(benches: Sequence[Mapping]) -> str:
    """``benchmarks/bench_ray_indexing.py --json`` of one or more runs on the same photos (each with its facenet
    runtime): per runner, each run's median faces/s (each repeat's in parentheses when there were several) and
    its ratio to the in-process runner of the same run. The fastest runner of the first run is bold.

    Example:
        >>> int8 = {"photos": 500, "faces": 576, "facenet_runtime": "int8",
        ...         "faces_per_s": {"in-process": [16.79, 20.19], "ray x2": [21.79, 21.93]}}
        >>> f32 = {"photos": 500, "faces": 576, "facenet_runtime": "torch",
        ...        "faces_per_s": {"in-process": [12.62], "ray x2": [14.66]}}
        >>> print(render_ray_scaling([int8, f32]), end="")
        | runner | faces/s, facenet-casia int8 (median of 2) | ratio | faces/s, float32 | ratio |
        |---|---:|---:|---:|---:|
        | in-process (reader thread + one model thread) | 18.49 (16.79, 20.19) | x1.00 | 12.62 | x1.00 |
        | Ray, 2 workers | **21.86** (21.79, 21.93) | x1.18 | 14.66 | x1.16 |
    """
    if not benches:
        raise CmceError("the Ray scaling table reads at least one bench_ray_indexing.py JSON")
    first = benches[0]
    for b in benches[1:]:
        if (b["photos"], b["faces"], list(b["faces_per_s"])) != (first["photos"], first["faces"],
                                                                  list(first["faces_per_s"])):
            raise CmceError("the Ray scaling table compares runs of the same photos, faces and runners; got "
                            f"{first['photos']} photos / {first['faces']} faces / {list(first['faces_per_s'])} and "
                            f"{b['photos']} / {b['faces']} / {list(b['faces_per_s'])}")
    medians = [{name: statistics.median(v) for name, v in b["faces_per_s"].items()} for b in benches]
    for m in medians:
        if "in-process" not in m:
            raise CmceError("the Ray scaling table needs the in-process runner, the base of its ratios")
    best = max(medians[0], key=medians[0].__getitem__)
    header = ["runner"]
    for b in benches:
        repeats = {len(v) for v in b["faces_per_s"].values()}
        header += [f"faces/s, {_runtime(b)}" + (f" (median of {max(repeats)})" if max(repeats) > 1 else ""), "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in first["faces_per_s"]:
        row = [_runner(name)]
        for k, (b, m) in enumerate(zip(benches, medians)):
            cell = f"**{m[name]:.2f}**" if k == 0 and name == best else f"{m[name]:.2f}"
            runs = b["faces_per_s"][name]
            cell += f" ({', '.join(f'{v:.2f}' for v in runs)})" if len(runs) > 1 else ""
            row += [cell, f"x{m[name] / m['in-process']:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _sig3(x: float) -> str:
    """``1461.3`` -> ``1,460``: three significant figures, thousands separated."""
    digits = 3 - 1 - math.floor(math.log10(abs(x))) if x else 0
    return f"{round(x, digits):,.{max(digits, 0)}f}"


_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

#: Photos to index, and nodes the measured per-node rate is spread over, in the cost table.
_PHOTOS, _NODES = 1e8, 100


def render_indexing_cost(bench: Mapping) -> str:
    """What indexing 1e8 photos costs, on paper, from ``benchmarks/bench_ray_indexing.py --json``: faces per
    photo of its photos (two decimals), its most-workers Ray rate as one node's (a node = its ``cpus``), and
    the GPU worker's unmeasured rate ``R`` as a formula.

    Example:
        >>> print(render_indexing_cost({"photos": 500, "faces": 576, "cpus": 2, "facenet_runtime": "int8",
        ...     "faces_per_s": {"in-process": [18.49], "ray x1": [15.24], "ray x2": [21.79, 21.93]}}), end="")
        | workers | rate per worker | 1e8 photos take | worker-hours |
        |---|---|---:|---:|
        | 2-core CPU nodes, int8 | 21.9 faces/s (measured here, two Ray workers per node) | 14.6 h on 100 nodes | 1,460 node-hours (2,920 core-hours) |
        | GPU workers (one GPU + 16 cores each) | **unmeasured**: no device was lent to this work | `1.15e8 / (N x R)` s | `32,000 / R` GPU-hours |
    """
    per_photo = round(bench["faces"] / bench["photos"], 2)
    faces = per_photo * _PHOTOS
    ray = [name for name in bench["faces_per_s"] if name != "in-process"]
    if not ray:
        raise CmceError("the indexing cost table needs a Ray run (a 'ray xN' runner), the per-node rate")
    name = max(ray, key=_ray_workers)
    workers, rate = _ray_workers(name), statistics.median(bench["faces_per_s"][name])
    runtime = "int8" if bench.get("facenet_runtime") == "int8" else _runtime(bench)
    node_hours = faces / rate / 3600
    cpu = (f"| {bench['cpus']}-core CPU nodes, {runtime} | {rate:.1f} faces/s (measured here, "
           f"{_WORDS.get(workers, str(workers))} Ray worker{'' if workers == 1 else 's'} per node) "
           f"| {node_hours / _NODES:.1f} h on {_NODES} nodes "
           f"| {_sig3(node_hours)} node-hours ({_sig3(bench['cpus'] * node_hours)} core-hours) |")
    gpu = ("| GPU workers (one GPU + 16 cores each) | **unmeasured**: no device was lent to this work "
           f"| `{per_photo:.2f}e8 / (N x R)` s | `{round(faces / 3600, -3):,.0f} / R` GPU-hours |")
    return "\n".join(["| workers | rate per worker | 1e8 photos take | worker-hours |", "|---|---|---:|---:|",
                      cpu, gpu]) + "\n"


#: Renderer name -> (the JSON documents of the marker's files, in order -> the Markdown table).
INDEXING_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "indexing-throughput": lambda docs: render_indexing_throughput(one_doc(docs)),
    "indexing-ratios": lambda docs: render_indexing_ratios(one_doc(docs)),
    "ray-scaling": render_ray_scaling,
    "indexing-cost": lambda docs: render_indexing_cost(one_doc(docs)),
}
