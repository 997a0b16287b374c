"""Tables of ``docs/speed.md``, ``docs/scale.md`` and ``docs/face-finding.md``, rendered from the
benchmarks' JSON (``cmce bench --json``, ``benchmarks/*.py --json``).

Pure functions: a benchmark's JSON document in, a Markdown table (ending in a newline) out.
``SPEED_TABLES`` maps the renderer names a page's ``<!-- table: NAME FILE -->`` marker uses
to them; ``cmce.experiments.docs_tables`` registers them in its ``JSON_TABLES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cmce.errors import CmceError
from cmce.experiments.docs_tables_base import one_doc
from cmce.metrics.intervals import format_with_interval
from cmce.search.scan import SCAN_FROM

__all__ = ["SPEED_TABLES", "render_archive", "render_bench_backbones", "render_bench_search", "render_bench_summary",
           "render_compact_index",
           "render_crops", "render_detection_cosines", "render_detection_lighting", "render_detection_sets",
           "render_int8_accuracy",
           "render_threads"]

#: How a backbone is named in the speed table, where its JSON name alone would mislead.
_BACKBONE_LABELS = {"dlib-resnet34": "dlib-resnet34 (PyTorch port)"}


def render_bench_backbones(bench: Mapping) -> str:
    """``cmce bench --json``'s per-backbone timings, then its MTCNN and query/gallery path lines.

    Example:
        >>> print(render_bench_backbones({
        ...     "backbones": {"sface": {"batch1_ms": 8.47, "batch32_ms_per_face": 7.83, "align_ms": 0.097}},
        ...     "mtcnn_ms_per_image": {"lfw_250px": 24.36, "photo_1mp": 95.7, "batch_32_lfw_per_image": 26.7},
        ...     "transformer_ms": {"facenet-casia": 0.331},
        ...     "asymmetric": {"query_embed_ms": 8.47, "gallery_embed_ms": 70.0, "embed_ratio": 0.121,
        ...                    "query_path_ms": 32.9, "gallery_path_ms": 95.1, "path_ratio": 0.346}}), end="")
        | backbone | batch 1 ms/face | batch 32 ms/face | align ms |
        |---|---:|---:|---:|
        | sface | 8.5 | 7.8 | 0.1 |
        <BLANKLINE>
        MTCNN ms/image: LFW 250px 24.4, 1 MP photo 95.7, batch of 32 LFW 26.7 per image; transformers facenet-casia 0.33 ms
        <BLANKLINE>
        asymmetric: query embed 8.5 ms vs gallery embed 70.0 ms (ratio 0.12); query path 32.9 ms vs gallery path 95.1 ms (ratio 0.35)
    """
    lines = ["| backbone | batch 1 ms/face | batch 32 ms/face | align ms |", "|---|---:|---:|---:|"]
    for name, b in bench["backbones"].items():
        lines.append(f"| {_BACKBONE_LABELS.get(name, name)} | {b['batch1_ms']:.1f} | {b['batch32_ms_per_face']:.1f} "
                     f"| {b['align_ms']:.1f} |")
    m, a = bench["mtcnn_ms_per_image"], bench["asymmetric"]
    lines += ["", f"MTCNN ms/image: LFW 250px {m['lfw_250px']:.1f}, 1 MP photo {m['photo_1mp']:.1f}, "
              f"batch of 32 LFW {m['batch_32_lfw_per_image']:.1f} per image; transformers "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in bench["transformer_ms"].items()),
              "", f"asymmetric: query embed {a['query_embed_ms']:.1f} ms vs gallery embed {a['gallery_embed_ms']:.1f} ms "
              f"(ratio {a['embed_ratio']:.2f}); query path {a['query_path_ms']:.1f} ms vs gallery path "
              f"{a['gallery_path_ms']:.1f} ms (ratio {a['path_ratio']:.2f})"]
    return "\n".join(lines) + "\n"


def render_bench_search(bench: Mapping) -> str:
    """``cmce bench --json``'s query and search timings per gallery size.

    Example:
        >>> print(render_bench_search({
        ...     "query_e2e_1mp": {"1000": {"p50_ms": 109.6, "p95_ms": 126.1}},
        ...     "search": {"1000": {"index": "flat", "p50_ms": 0.0568, "p95_ms": 0.111,
        ...                         "recall_at_10": 1.0, "build_s": 0.0004}}}), end="")
        | gallery size | index | query e2e p50 / p95 ms (1 MP photo) | search p50 / p95 ms | recall@10 vs exact | build s |
        |---:|---|---:|---:|---:|---:|
        | 1,000 | flat | 110 / 126 | 0.06 / 0.11 | 1.000 | 0.0 |
    """
    lines = ["| gallery size | index | query e2e p50 / p95 ms (1 MP photo) | search p50 / p95 ms | recall@10 vs exact "
             "| build s |", "|---:|---|---:|---:|---:|---:|"]
    for n, s in bench["search"].items():
        e = bench["query_e2e_1mp"][n]
        lines.append(f"| {int(n):,} | {s['index']} | {e['p50_ms']:.0f} / {e['p95_ms']:.0f} | {s['p50_ms']:.2f} / "
                     f"{s['p95_ms']:.2f} | {s['recall_at_10']:.3f} | {s['build_s']:.1f} |")
    return "\n".join(lines) + "\n"


def render_bench_summary(bench: Mapping) -> str:
    """``cmce bench --json``'s indexing, memory and cold-start figures, as one line under its tables.

    Example:
        >>> print(render_bench_summary({
        ...     "indexing": {"images": 64, "faces": 73, "seconds": 5.46, "faces_per_s": 13.36},
        ...     "memory": {"bytes_per_entry_with_indexes": 7176, "bytes_per_entry_with_indexes_from_scan_from": 8200},
        ...     "cold_start_s": 4.649}), end="")
        indexing: 73 faces from 64 photos in 5.5 s = 13.36 faces/s; memory 7,176 bytes per entry
        (8,200 from 65,536 entries, with the float16 copy); cold start 4.6 s
    """
    ix, mem = bench["indexing"], bench["memory"]
    return (f"indexing: {ix['faces']} faces from {ix['images']} photos in {ix['seconds']:.1f} s = "
            f"{ix['faces_per_s']:.2f} faces/s; memory {mem['bytes_per_entry_with_indexes']:,} bytes per entry\n"
            f"({mem['bytes_per_entry_with_indexes_from_scan_from']:,} from {SCAN_FROM:,} entries, with the float16 "
            f"copy); cold start {bench['cold_start_s']:.1f} s\n")


#: ``benchmarks/bench_threads.py``'s row names -> the table's.
_THREAD_ROWS = {"quiet": "quiet", "one busy core": "one other busy core"}


def render_threads(study: Mapping) -> str:
    """``benchmarks/bench_threads.py --json``: MTCNN and the torch backbones at one and two threads.

    Example:
        >>> one = {"mtcnn_ms_per_photo": 33.24, "ms_per_face": {"dlib-resnet34": 6.1, "facenet-casia": 37.2}}
        >>> two = {"mtcnn_ms_per_photo": 20.1, "ms_per_face": {"dlib-resnet34": 3.7, "facenet-casia": 18.94}}
        >>> print(render_threads({"rows": {"quiet": {"1": one, "2": two}}}), end="")
        | | MTCNN ms/photo, 1 / 2 threads | facenet-casia ms/face | dlib-resnet34 ms/face |
        |---|---:|---:|---:|
        | quiet | 33.2 / 20.1 | 37.2 / 18.9 | 6.1 / 3.7 |
    """
    models = ("facenet-casia", "dlib-resnet34")
    lines = ["| | MTCNN ms/photo, 1 / 2 threads | " + " | ".join(f"{m} ms/face" for m in models) + " |",
             "|---|---:|" + "---:|" * len(models)]
    for label, r in study["rows"].items():
        one, two = r["1"], r["2"]
        cells = [f"{one['mtcnn_ms_per_photo']:.1f} / {two['mtcnn_ms_per_photo']:.1f}"]
        cells += [f"{one['ms_per_face'][m]:.1f} / {two['ms_per_face'][m]:.1f}" for m in models]
        lines.append(f"| {_THREAD_ROWS.get(label, label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _one_config(report: Mapping) -> Mapping:
    configs = report["configs"]
    if len(configs) != 1:
        raise CmceError(f"the compact-index table reads a run of one configuration, not {', '.join(configs)}")
    return next(iter(configs.values()))


def render_compact_index(report: Mapping) -> str:
    """``benchmarks/bench_compact_index.py --json`` (one configuration): the archive index's figures against
    the targets of the 10M-entry issue (the targets are the issue's, not measured); "other settings" are the
    sweep's points re-ranking as many candidates as the default.

    Example:
        >>> print(render_compact_index({"machine": "2 cpus, x86_64", "configs": {"fastscan": {
        ...     "ram_anon_delta_bytes_per_entry": 43.43, "ram_serialized_bytes_per_entry": 40.84,
        ...     "disk_bytes_per_entry": 296.84, "disk_index_bytes_per_entry": 40.84,
        ...     "train_seconds": 369.8, "add_seconds": 324.9,
        ...     "default": {"rerank": 2048, "recall@10": 0.9627, "p50_ms": 18.11, "p95_ms": 21.07},
        ...     "mask_reject_10pct": {"recall@10": 0.9633, "excluded_returned": 0, "p50_ms": 22.16},
        ...     "threshold": {"threshold": 0.523, "recall_of_hits_above": 0.9897, "hits_below_returned": 0,
        ...                   "p50_ms": 20.4},
        ...     "sweep": [{"probe_fraction": 0.25, "rerank": 2048, "recall@10": 0.9503, "p50_ms": 16.05}]}}}),
        ...     end="")
        | | figure | target |
        |---|---:|---:|
        | RAM of the in-memory part | **43.4 bytes/entry** (RssAnon growth on load; 40.8 serialized) | <= 64 |
        | recall@10 against exact | **0.963** | >= 0.95 |
        | single-query p50 / p95 | **18.1 / 21.1 ms** | p50 <= 20 |
        | with a mask rejecting 10% | recall 0.963, p50 22.2 ms, no rejected entry returned | |
        | with the threshold 0.523 | 0.990 of the hits above it found, p50 20.4 ms, none below returned | |
        | build | 370 s training + 325 s adding (2 busy cores) | |
        | on disk | 296.8 bytes/entry (index 40.8 + float16 vectors 256) | |
        | other settings | 25% of lists: 0.950 at 16.1 ms | |
    """
    c = _one_config(report)
    d, mask, th = c["default"], c["mask_reject_10pct"], c["threshold"]
    cpus = str(report.get("machine", "")).split(" ")[0]
    returned = mask["excluded_returned"]
    below = th["hits_below_returned"]
    others = [s for s in c["sweep"] if s["rerank"] == d["rerank"]]
    settings = "; ".join(f"{100 * s['probe_fraction']:.0f}%{' of lists' if i == 0 else ''}: "
                         f"{s['recall@10']:.3f} at {s['p50_ms']:.1f} ms" for i, s in enumerate(others))
    rows = [
        ("RAM of the in-memory part", f"**{c['ram_anon_delta_bytes_per_entry']:.1f} bytes/entry** (RssAnon growth "
         f"on load; {c['ram_serialized_bytes_per_entry']:.1f} serialized)", "<= 64"),
        ("recall@10 against exact", f"**{d['recall@10']:.3f}**", ">= 0.95"),
        ("single-query p50 / p95", f"**{d['p50_ms']:.1f} / {d['p95_ms']:.1f} ms**", "p50 <= 20"),
        ("with a mask rejecting 10%", f"recall {mask['recall@10']:.3f}, p50 {mask['p50_ms']:.1f} ms, "
         + ("no rejected entry returned" if returned == 0 else f"{returned} rejected entries returned"), ""),
        (f"with the threshold {th['threshold']:.3f}", f"{th['recall_of_hits_above']:.3f} of the hits above it found, "
         f"p50 {th['p50_ms']:.1f} ms, " + ("none below returned" if below == 0 else f"{below} below returned"), ""),
        ("build", f"{c['train_seconds']:.0f} s training + {c['add_seconds']:.0f} s adding ({cpus} busy cores)", ""),
        ("on disk", f"{c['disk_bytes_per_entry']:.1f} bytes/entry (index {c['disk_index_bytes_per_entry']:.1f} + "
         f"float16 vectors {c['disk_bytes_per_entry'] - c['disk_index_bytes_per_entry']:.0f})", ""),
        ("other settings", settings, ""),
    ]
    lines = ["| | figure | target |", "|---|---:|---:|"]
    lines += [f"| {name} | {figure} | {target} |".replace("|  |", "| |") for name, figure, target in rows]
    return "\n".join(lines) + "\n"


def render_archive(bench: Mapping) -> str:
    """``benchmarks/bench_archive.py --json``: building and searching a synthetic archive end to end.

    Example:
        >>> print(render_archive({"projection_seconds": 74.6, "projection_entries_per_s": 26823,
        ...     "index_build_seconds": 72.7, "derived_bytes_per_entry": 425.6, "ram_bytes_per_entry": 47.8,
        ...     "search_p50_ms": 6.87, "search_p95_ms": 7.96, "recall_at_10_vs_exact": 0.957}), end="")
        | projection (transformers, fusion, scores) | compact index build | derived data on disk | RAM to search | search p50 / p95 (1 thread) | recall@10 vs exact, same mask |
        |---:|---:|---:|---:|---:|---:|
        | 74.6 s (26,800 entries/s) | 72.7 s | 426 bytes/entry | 47.8 bytes/entry | 6.9 / 8.0 ms | 0.957 |
    """
    b = bench
    lines = ["| projection (transformers, fusion, scores) | compact index build | derived data on disk | RAM to search "
             "| search p50 / p95 (1 thread) | recall@10 vs exact, same mask |", "|---:|---:|---:|---:|---:|---:|",
             f"| {b['projection_seconds']:.1f} s ({round(b['projection_entries_per_s'], -2):,.0f} entries/s) "
             f"| {b['index_build_seconds']:.1f} s | {b['derived_bytes_per_entry']:.0f} bytes/entry "
             f"| {b['ram_bytes_per_entry']:.1f} bytes/entry | {b['search_p50_ms']:.1f} / {b['search_p95_ms']:.1f} ms "
             f"| {b['recall_at_10_vs_exact']:.3f} |"]
    return "\n".join(lines) + "\n"


#: ``benchmarks/bench_crops.py``'s names -> the table's.
_CROP_KINDS = {"box": "MTCNN box", "in10": "10% inside", "face": "face only"}
_TREATMENTS = ("before", "landmarks", "after")


def render_crops(study: Mapping) -> str:
    """``benchmarks/bench_crops.py --json``: cosine of a tight crop's embedding with its full photo's, median
    (mean), per backbone, crop and treatment; a backbone the fix left unchanged (equal medians and means
    to three decimals) gets one row of medians.

    Example:
        >>> same = {"before": {"median": 0.996, "mean": 0.99}, "landmarks": {"median": 0.996, "mean": 0.99},
        ...         "after": {"median": 0.996, "mean": 0.99}}
        >>> print(render_crops({"cosine": {
        ...     "sface/box": {"before": {"median": 0.8012, "mean": 0.767}, "landmarks": {"median": 0.912, "mean": 0.905},
        ...                   "after": {"median": 0.937, "mean": 0.93}},
        ...     "dlib-resnet34/box": same, "dlib-resnet34/in10": same}}), end="")
        | backbone | crop | before | landmarks fixed, black fill | after (landmarks + two fills) |
        |---|---|---:|---:|---:|
        | sface | MTCNN box | 0.801 (0.767) | 0.912 (0.905) | **0.937 (0.930)** |
        | dlib-resnet34 | MTCNN box / 10% inside | 0.996 / 0.996 | same | same |
    """
    rows: dict[str, dict[str, Mapping]] = {}
    for key, figures in study["cosine"].items():
        model, kind = key.split("/")
        rows.setdefault(model, {})[kind] = figures

    def cell(f: Mapping) -> str:
        return f"{f['median']:.3f} ({f['mean']:.3f})"

    lines = ["| backbone | crop | before | landmarks fixed, black fill | after (landmarks + two fills) |",
             "|---|---|---:|---:|---:|"]
    for model, kinds in rows.items():
        if all(len({cell(f[t]) for t in _TREATMENTS}) == 1 for f in kinds.values()):
            lines.append(f"| {model} | {' / '.join(_CROP_KINDS.get(k, k) for k in kinds)} | "
                         f"{' / '.join(format(f['before']['median'], '.3f') for f in kinds.values())} | same | same |")
            continue
        for kind, f in kinds.items():
            lines.append(f"| {model} | {_CROP_KINDS.get(kind, kind)} | {cell(f['before'])} | {cell(f['landmarks'])} "
                         f"| **{cell(f['after'])}** |")
    return "\n".join(lines) + "\n"


def _found_rate(r: Mapping) -> str:
    """A found rate of ``benchmarks/bench_detection.py`` (percent, 95% bootstrap interval), as the benchmark prints it."""
    return format_with_interval(r["rate"], r["ci95"], scale=1, digits=1, unit="%")


#: ``benchmarks/bench_detection.py``'s tight-crop sets -> the table's rows (without their size).
_DETECTION_SETS = {"box": "tight crop = MTCNN box, 112-200 px wide", "box 10% inside": "10% inside the box, 112-200 px",
                   "ArcFace-aligned 112": "ArcFace-aligned 112x112"}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _found_by(counts: Mapping[str, int]) -> str:
    """``{"mtcnn/first": 297, "yunet/padded": 3}`` -> ``297 first, 3 padded (yunet)``."""
    parts = []
    for key, n in counts.items():
        detector, _, found_in = key.partition("/")
        parts.append(f"{n} {found_in}" + ("" if detector == "mtcnn" else f" ({detector})"))
    return ", ".join(parts)


def render_detection_sets(study: Mapping) -> str:
    """``benchmarks/bench_detection.py --json``: how often the first pass and the engine find a face, per set of
    images (95% bootstrap intervals over images), and how the engine found them; on the no-face images, the
    faces found (by the first pass: in how many images).

    Example:
        >>> print(render_detection_sets({
        ...     "full_photos": {"first_pass": {"n": 300, "rate": 100.0, "ci95": [100.0, 100.0]},
        ...                     "engine": {"n": 300, "rate": 100.0, "ci95": [100.0, 100.0]},
        ...                     "first_pass_faces_identical": "300/300"},
        ...     "tight_crops": {"box": {"first_pass": {"n": 300, "rate": 99.0, "ci95": [98.0, 100.0]},
        ...                             "engine": {"n": 300, "rate": 100.0, "ci95": [100.0, 100.0]},
        ...                             "found_by": {"mtcnn/first": 297, "mtcnn/padded": 3}}},
        ...     "no_face": {"images": 80, "false_faces": {"smiley": ["yunet/padded", "first-pass detector"]}}}), end="")
        | set (n) | first pass | engine | found by (engine) |
        |---|---:|---:|---|
        | full LFW photos (300) | 100.0% (100.0 to 100.0) | 100.0% (100.0 to 100.0) | first-pass faces identical on 300/300 |
        | tight crop = MTCNN box, 112-200 px wide (300) | 99.0% (98.0 to 100.0) | 100.0% (100.0 to 100.0) | 297 first, 3 padded |
        | no-face images (80) | faces in 1 image | 1 face | |
    """
    full = study["full_photos"]
    lines = ["| set (n) | first pass | engine | found by (engine) |", "|---|---:|---:|---|",
             f"| full LFW photos ({full['first_pass']['n']}) | {_found_rate(full['first_pass'])} "
             f"| {_found_rate(full['engine'])} | first-pass faces identical on {full['first_pass_faces_identical']} |"]
    for kind, r in study["tight_crops"].items():
        lines.append(f"| {_DETECTION_SETS.get(kind, kind)} ({r['first_pass']['n']}) | {_found_rate(r['first_pass'])} "
                     f"| {_found_rate(r['engine'])} | {_found_by(r['found_by'])} |")
    nf = study["no_face"]  # per image with a face: how the engine found each face, then "first-pass detector"
    first = sum("first-pass detector" in found for found in nf["false_faces"].values())
    engine = sum(f != "first-pass detector" for found in nf["false_faces"].values() for f in found)
    by_first = "0 faces" if first == 0 else "faces in " + _count(first, "image")
    lines.append(f"| no-face images ({nf['images']}) | {by_first} | {_count(engine, 'face')} | |")
    return "\n".join(lines) + "\n"


#: ``benchmarks/bench_detection.py``'s tight-crop sets -> the cosine table's rows.
_COSINE_CROPS = {"box": "MTCNN box", "box 10% inside": "10% inside the box"}


def render_detection_cosines(study: Mapping) -> str:
    """``benchmarks/bench_detection.py --json``: cosine between a found crop's embedding and the same face
    found in the full photo, mean / median / 5th percentile, per tight-crop set and backbone.

    Example:
        >>> print(render_detection_cosines({"tight_crops": {"box 10% inside": {"cosine_to_full_photo": {
        ...     "sface": {"mean": 0.8278, "median": 0.8307, "p5": 0.7325},
        ...     "dlib-resnet34": {"mean": 0.9804, "median": 0.981, "p5": 0.9673}}}}}), end="")
        | crop | sface | dlib-resnet34 |
        |---|---|---|
        | 10% inside the box | 0.828 / 0.831 / 0.733 | 0.980 / 0.981 / 0.967 |
    """
    crops = {k: r["cosine_to_full_photo"] for k, r in study["tight_crops"].items() if "cosine_to_full_photo" in r}
    if not crops:
        raise CmceError("bench_detection.py's JSON holds no crop cosines (tight_crops.*.cosine_to_full_photo)")
    backbones = list(dict.fromkeys(b for cos in crops.values() for b in cos))
    lines = ["| crop | " + " | ".join(backbones) + " |", "|---|" + "---|" * len(backbones)]
    for kind, cos in crops.items():
        cells = [f"{cos[b]['mean']:.3f} / {cos[b]['median']:.3f} / {cos[b]['p5']:.3f}" if b in cos else "—"
                 for b in backbones]
        lines.append(f"| {_COSINE_CROPS.get(kind, kind)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: ``benchmarks/bench_detection.py``'s lighting changes -> the table's name on a change's first row, and on the others.
_LIGHTING = {"side shading": ("side shading (right half darkened by)", "side shading"),
             "banding (levels)": ("banding (levels per channel)", "banding")}


def render_detection_lighting(study: Mapping) -> str:
    """``benchmarks/bench_detection.py --json``: found rates on the MTCNN-box crops under changed light, first
    pass and engine (95% bootstrap intervals over images).

    Example:
        >>> r = {"n": 150, "rate": 93.33, "ci95": [88.67, 97.33]}
        >>> print(render_detection_lighting({"lighting": {"side shading 0.7": {"first_pass": r, "engine": r},
        ...                                               "side shading 0.9": {"first_pass": r, "engine": r}}}), end="")
        | change | strength | first pass | engine |
        |---|---|---:|---:|
        | side shading (right half darkened by) | 0.7 | 93.3% (88.7 to 97.3) | 93.3% (88.7 to 97.3) |
        | side shading | 0.9 | 93.3% (88.7 to 97.3) | 93.3% (88.7 to 97.3) |
    """
    lines = ["| change | strength | first pass | engine |", "|---|---|---:|---:|"]
    seen: set[str] = set()
    for key, r in study["lighting"].items():
        change, _, strength = key.rpartition(" ")
        first_name, other_name = _LIGHTING.get(change, (change, change))
        lines.append(f"| {other_name if change in seen else first_name} | {strength} | {_found_rate(r['first_pass'])} "
                     f"| {_found_rate(r['engine'])} |")
        seen.add(change)
    return "\n".join(lines) + "\n"


def _row(evaluation: Mapping, pick: Callable[[Mapping], bool], what: str) -> Mapping:
    rows = [r for r in evaluation["rows"] if pick(r)]
    if not rows:
        raise CmceError(f"the evaluation of {evaluation['bundle'].get('source')} has no {what} row")
    return rows[0]


def render_int8_accuracy(evaluations: Sequence[Mapping]) -> str:
    """``cmce evaluate --heldout --json`` of each bundle in float32 and with ``CMCE_FACENET_RUNTIME=int8``, given
    as pairs (float32, int8): the served ensemble's Recall@1 (95% interval), its TAR@FAR=1e-3, and
    facenet-casia's own symmetric Recall@1, in points.

    Example:
        >>> def e(ensemble, ci, tar, facenet):
        ...     return {"bundle": {"source": "assets/bundles/sface-query"}, "rows": [
        ...         {"name": "facenet-casia symmetric", "kind": "symmetric", "query": "facenet-casia",
        ...          "recall_at_1": facenet},
        ...         {"name": "CMCE ensemble", "kind": "ensemble", "recall_at_1": ensemble, "recall_at_1_ci95": ci,
        ...          "tar_at_far_1e-3": tar}]}
        >>> print(render_int8_accuracy([e(0.99549, [0.98937, 1.0], 0.99549, 0.92454),
        ...                             e(0.99549, [0.98937, 1.0], 0.99549, 0.92567)]), end="")
        | bundle | served ensemble R@1, float32 | int8 | TAR@FAR=1e-3, float32 / int8 | facenet-casia symmetric R@1, float32 / int8 |
        |---|---:|---:|---:|---:|
        | `sface-query` | 99.55 (98.94 to 100.00) | 99.55 (98.94 to 100.00) | 99.55 / 99.55 | 92.45 / 92.57 |
    """
    if not evaluations or len(evaluations) % 2:
        raise CmceError(f"the int8 table reads pairs of evaluations (float32, int8), not {len(evaluations)} files")
    lines = ["| bundle | served ensemble R@1, float32 | int8 | TAR@FAR=1e-3, float32 / int8 "
             "| facenet-casia symmetric R@1, float32 / int8 |", "|---|---:|---:|---:|---:|"]
    for f32, int8 in zip(evaluations[::2], evaluations[1::2]):
        bundle = str(f32["bundle"].get("source", "")).rstrip("/").rsplit("/", 1)[-1]
        if int8["bundle"].get("source") != f32["bundle"].get("source"):
            raise CmceError(f"the int8 table pairs evaluations of one bundle, not {f32['bundle'].get('source')} "
                            f"and {int8['bundle'].get('source')}")
        served = [_row(e, lambda r: r["name"] == "CMCE ensemble", "'CMCE ensemble'") for e in (f32, int8)]
        facenet = [_row(e, lambda r: r["kind"] == "symmetric" and r["query"] == "facenet-casia",
                        "facenet-casia symmetric") for e in (f32, int8)]
        lines.append(f"| `{bundle}` | " + " | ".join(format_with_interval(r["recall_at_1"], r["recall_at_1_ci95"])
                                                     for r in served)
                     + f" | {100 * served[0]['tar_at_far_1e-3']:.2f} / {100 * served[1]['tar_at_far_1e-3']:.2f} "
                     f"| {100 * facenet[0]['recall_at_1']:.2f} / {100 * facenet[1]['recall_at_1']:.2f} |")
    return "\n".join(lines) + "\n"


def _single(render: Callable[[Mapping], str]) -> Callable[[Sequence[Mapping]], str]:
    return lambda docs: render(one_doc(docs))


#: Renderer name -> (the JSON documents of the marker's files -> the Markdown table).
SPEED_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "bench-backbones": _single(render_bench_backbones),
    "bench-search": _single(render_bench_search),
    "bench-summary": _single(render_bench_summary),
    "bench-threads": _single(render_threads),
    "compact-index": _single(render_compact_index),
    "bench-archive": _single(render_archive),
    "bench-crops": _single(render_crops),
    "detection-sets": _single(render_detection_sets),
    "detection-lighting": _single(render_detection_lighting),
    "detection-cosines": _single(render_detection_cosines),
    "int8-accuracy": render_int8_accuracy,
}
