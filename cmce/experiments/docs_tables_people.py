"""docs/people.md's tables: grouping held-out faces into people, rendered from ``evaluate --people --json``
and ``benchmarks/bench_people.py --json``.

``PEOPLE_TABLES`` maps the renderer names a page's ``<!-- table: NAME FILE -->`` marker uses to the
renderers (``docs_tables.JSON_TABLES`` registers them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cmce.errors import CmceError
from cmce.metrics.intervals import format_interval

__all__ = ["PEOPLE_TABLES", "render_people_calibration", "render_people_curve", "render_people_detach", "render_people_rows",
           "render_people_scale", "render_people_settings", "render_people_summary", "render_people_unsure"]


def _pts(x: float) -> str:
    return f"{100 * x:.2f}"


def _bundle(doc: Mapping) -> str:
    return Path(doc["bundle"]["source"] or doc["bundle"]["query"]).name


def _gallery_name(g: Mapping) -> str:
    return "clean" if g["gallery"] == "clean" else f"`{g['gallery']}`"


def render_people_rows(docs: Sequence[Mapping]) -> str:
    """One row per grouping and gallery: BCubed P / R / F (95% interval over identities), pairwise F,
    people found / true, share unsure, and the precision / recall of the faces grouped where some are unsure.

    Example:
        >>> row = {"name": "CMCE ensemble", "bcubed_precision": 0.9, "bcubed_recall": 0.8, "bcubed_f": 0.847,
        ...        "bcubed_f_ci95": [0.82, 0.87], "pairwise_f": 0.7, "people_found": 90, "people_true": 80,
        ...        "share_unsure": 0.0}
        >>> doc = {"bundle": {"source": "assets/bundles/x-query", "query": "q"},
        ...        "galleries": [{"gallery": "clean", "rows": [row]}]}
        >>> print(render_people_rows([doc]), end="")
        | bundle | gallery | grouping | BCubed P | BCubed R | BCubed F (95% CI) | pairwise F | people found / true | unsure | grouped P / R |
        |---|---|---|---:|---:|---:|---:|---:|---:|---:|
        | `x-query` | clean | CMCE ensemble | 90.00 | 80.00 | **84.70** (82.0 to 87.0) | 70.00 | 90 / 80 | 0.0% |  |
    """
    lines = ["| bundle | gallery | grouping | BCubed P | BCubed R | BCubed F (95% CI) | pairwise F | people found / true "
             "| unsure | grouped P / R |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for doc in docs:
        for g in doc["galleries"]:
            for r in g["rows"]:
                grouped = (f"{_pts(r['grouped_precision'])} / {_pts(r['grouped_recall'])}"
                           if "grouped_precision" in r else "")
                lines.append(f"| `{_bundle(doc)}` | {_gallery_name(g)} | {r['name']} | {_pts(r['bcubed_precision'])} | "
                             f"{_pts(r['bcubed_recall'])} | **{_pts(r['bcubed_f'])}** "
                             f"{format_interval(*r['bcubed_f_ci95'], digits=1)} | {_pts(r['pairwise_f'])} | "
                             f"{r['people_found']} / {r['people_true']} | {100 * r['share_unsure']:.1f}% | {grouped} |")
    return "\n".join(lines) + "\n"


def render_people_differences(docs: Sequence[Mapping]) -> str:
    """The served ensemble's BCubed F minus each other row's, paired over resampled identities."""
    lines = ["| bundle | gallery | served ensemble minus | BCubed F points (95% CI) |", "|---|---|---|---:|"]
    for doc in docs:
        for g in doc["galleries"]:
            for d in g["differences"]:
                lines.append(f"| `{_bundle(doc)}` | {_gallery_name(g)} | {d['minus']} | "
                             f"{100 * d['bcubed_f_difference']:+.2f} {format_interval(*d['ci95'], digits=1)} |")
    return "\n".join(lines) + "\n"


def render_people_unsure(docs: Sequence[Mapping]) -> str:
    """Precision (three decimals: the differences are small) and recall of the faces grouped against the
    share held out as unsure (most doubted first)."""
    lines = ["| bundle | gallery | vectors | held out | grouped BCubed P | grouped BCubed R | people found |",
             "|---|---|---|---:|---:|---:|---:|"]
    for doc in docs:
        for g in doc["galleries"]:
            for who, sweep in g["unsure_sweep"].items():
                for s in sweep:
                    lines.append(f"| `{_bundle(doc)}` | {_gallery_name(g)} | {who} | {100 * s['share']:.0f}% | "
                                 f"{100 * s['grouped_precision']:.3f} | {_pts(s['grouped_recall'])} | {s['people_found']} |")
    return "\n".join(lines) + "\n"


def render_people_curve(docs: Sequence[Mapping]) -> str:
    """BCubed F around the calibrated threshold: on the training identities (where it was chosen) and,
    for illustration only, on the held-out galleries."""
    lines = ["| bundle | faces | vectors | " + " | ".join(["threshold: BCubed F (people found)"]) + " |", "|---|---|---|---|"]
    for doc in docs:
        cal = doc["calibration"]
        for who in ("ensemble", "query"):
            c = cal[who]
            name = "CMCE ensemble" if who == "ensemble" else "query model alone"
            for key, where in (("curve", "training identities, clean"), ("curve_mixed", "training identities, mixed")):
                if key in c:
                    near = [p for p in c[key] if abs(p["threshold"] - c["threshold"]) <= 0.101]
                    lines.append(f"| `{_bundle(doc)}` | {where} | {name} | {_curve_cells(near, c['threshold'])} |")
        for g in doc["galleries"]:
            for who, curve in g["curve"].items():
                chosen = cal["ensemble" if who == "ensemble" else "query"]["threshold"]
                lines.append(f"| `{_bundle(doc)}` | held out, {_gallery_name(g)} | "
                             f"{'CMCE ensemble' if who == 'ensemble' else who} | {_curve_cells(curve, chosen)} |")
    return "\n".join(lines) + "\n"


def _curve_cells(points: Sequence[Mapping], chosen: float) -> str:
    cells = []
    for p in points:
        text = f"{p['threshold']:.2f}: {_pts(p['bcubed_f'])} ({p['people']})"
        cells.append(f"**{text}**" if abs(p["threshold"] - chosen) < 1e-9 else text)
    return "; ".join(cells)


def render_people_calibration(docs: Sequence[Mapping]) -> str:
    """The clusterings compared on the training identities (the served grouping's vectors): each at its best threshold."""
    lines = ["| bundle | clustering | best threshold | BCubed F | pairwise F | people found / true | chosen |",
             "|---|---|---:|---:|---:|---:|---|"]
    for doc in docs:
        cal = doc["calibration"]
        for m, c in cal["methods"].items():
            best = next(p for p in c["curve"] if p["threshold"] == c["threshold"])
            thr = f"{c['threshold']:.2f}" if m != "hdbscan" else "(none)"
            lines.append(f"| `{_bundle(doc)}` | {m.replace('_', ' ')} | {thr} | {_pts(best['bcubed_f'])} | "
                         f"{_pts(best['pairwise_f'])} | {best['people']} / {cal['identities']} | "
                         f"{'yes' if m == cal['method'] else ''} |")
    return "\n".join(lines) + "\n"


def render_people_settings(docs: Sequence[Mapping]) -> str:
    """The served grouping's settings and the query model's (the baseline row), each calibrated on the
    training identities: similarity, threshold, attach pass, detach pass, and the mean BCubed F over
    the clean and mixed training libraries at the threshold alone, with the attach pass, and with both
    passes (an older calibration without a detach pass shows none).

    Example:
        >>> c = {"threshold": 0.52, "query_weight": 0.5, "attach_above": 0.4, "attach_margin": 0.1,
        ...      "mean_f": 0.9699, "attach_mean_f": 0.9724, "detach_below": 0.5, "detach_mean_f": 0.9747}
        >>> doc = {"bundle": {"source": "b/x-query", "query": "q"}, "calibration": {"method": "chinese_whispers",
        ...        "out_of_fold": True, "ensemble": c, "query": {**c, "query_weight": 0.0, "attach_above": None,
        ...        "detach_below": None}}}
        >>> print(render_people_settings([doc]), end="")
        | bundle | vectors | training vectors | similarity | threshold | attach above (margin) | detach below | training F: threshold | with attach | with attach and detach |
        |---|---|---|---|---:|---:|---:|---:|---:|---:|
        | `x-query` | CMCE ensemble | out-of-fold | mean of the ensemble's and the query model's cosines | 0.52 | 0.40 (0.10) | 0.50 | 96.99 | 97.24 | 97.47 |
        | `x-query` | query model alone | out-of-fold | query model's cosine | 0.52 | (none) | (none) | 96.99 | 97.24 | 97.47 |
    """
    lines = ["| bundle | vectors | training vectors | similarity | threshold | attach above (margin) | detach below | "
             "training F: threshold | with attach | with attach and detach |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for doc in docs:
        cal = doc["calibration"]
        trained = "out-of-fold" if cal.get("out_of_fold") else "served (trained on)"
        for who, name in (("ensemble", "CMCE ensemble"), ("query", "query model alone")):
            c = cal[who]
            w = float(c.get("query_weight", 0.0))
            sim = ("query model's cosine" if who == "query" else "ensemble's cosine" if w == 0 else
                   "mean of the ensemble's and the query model's cosines" if w == 0.5 else
                   f"ensemble's cosine, query model's weighted {w:.2f}")
            attach = (f"{c['attach_above']:.2f} ({c['attach_margin']:.2f})" if c.get("attach_above") is not None
                      else "(none)")
            detach = f"{c['detach_below']:.2f}" if c.get("detach_below") is not None else "(none)"
            with_attach = _pts(c["attach_mean_f"]) if "attach_mean_f" in c else ""
            with_detach = _pts(c["detach_mean_f"]) if "detach_mean_f" in c else ""
            lines.append(f"| `{_bundle(doc)}` | {name} | {trained} | {sim} | {c['threshold']:.2f} | {attach} | "
                         f"{detach} | {_pts(c['mean_f'])} | {with_attach} | {with_detach} |")
    return "\n".join(lines) + "\n"


def render_people_detach(docs: Sequence[Mapping]) -> str:
    """The detach pass's calibration grid: per value of ``detach_below``, the BCubed F of the clean and
    mixed training libraries and their mean (the chosen value bold); calibrations without one are skipped.

    Example:
        >>> grid = [{"detach_below": None, "f": [0.989, 0.9558], "mean_f": 0.9724},
        ...         {"detach_below": 0.5, "f": [0.9912, 0.9582], "mean_f": 0.9747}]
        >>> doc = {"bundle": {"source": "b/x-query", "query": "q"}, "calibration": {"ensemble": {"detach_below": 0.5,
        ...        "detach_grid": grid}, "query": {}}}
        >>> print(render_people_detach([doc]), end="")
        | bundle | vectors | detach below: training F clean / mixed / mean |
        |---|---|---|
        | `x-query` | CMCE ensemble | none: 98.90 / 95.58 / 97.24; **0.50: 99.12 / 95.82 / 97.47** |
    """
    lines = ["| bundle | vectors | detach below: training F clean / mixed / mean |", "|---|---|---|"]
    for doc in docs:
        for who, name in (("ensemble", "CMCE ensemble"), ("query", "query model alone")):
            c = doc["calibration"][who]
            if "detach_grid" not in c:
                continue
            cells = []
            for p in c["detach_grid"]:
                b = p["detach_below"]
                cell = (f"{'none' if b is None else f'{b:.2f}'}: "
                        f"{' / '.join(_pts(f) for f in p['f'])} / {_pts(p['mean_f'])}")
                cells.append(f"**{cell}**" if b == c["detach_below"] else cell)
            lines.append(f"| `{_bundle(doc)}` | {name} | {'; '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _scale_setting(doc: Mapping, s: Mapping) -> str:
    """How a ``bench_people.py`` row grouped: the served bundle's grouping, or one cosine without attach."""
    if s.get("setting", "plain") == "plain":
        return f"one cosine ({s.get('dim', doc.get('dim', 512))}-d), no attach"
    c = s["config"]
    return (f"served `{doc.get('served_bundle', '?')}`: {c['method']} at {c['threshold']:.2f}, query weight "
            f"{c['query_weight']:.2f} ({s['dim']}-d), attach {c['attach_above']:.2f} ({c['attach_margin']:.2f})"
            + (f", detach {c['detach_below']:.2f}" if c.get("detach_below") is not None else ""))


def render_people_scale(docs: Sequence[Mapping]) -> str:
    """``bench_people.py``: faces grouped and how, the synthetic faces' mean same-person cosine (and the
    bundle's real one it was fitted to, where it was), the index, seconds (index, grouping, total, the
    grouping's CPU seconds; medians), the 1-minute load average during the runs, peak memory, BCubed F on
    the synthetic truth."""
    from cmce.people.graph import EXACT_BELOW

    lines = ["| faces | grouping | same-person cos (synthetic / real) | index | repeats | index s | grouping s | "
             "total s (median) | grouping CPU s | load | peak memory | BCubed F (synthetic) |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for doc in docs:
        for s in doc["sizes"]:
            index = s["index"]
            if index == "auto":
                index = f"auto: {'CompactIndex' if s['faces'] >= EXACT_BELOW else 'VectorIndex'}"
            cpu = f"{s['cpu_seconds_grouping']:.1f}" if "cpu_seconds_grouping" in s else ""
            loads = sorted({f"{x:.1f}" for x in (min(s.get("runs_load_average") or [0]),
                                                 max(s.get("runs_load_average") or [0]))}, key=float)
            load = "-".join(loads) if s.get("runs_load_average") else ""
            real = s.get("target_same_person_cosine")
            cos = f"{s['same_person_cosine']:.3f} / " + (f"{real:.3f}" if real is not None else "-")
            lines.append(f"| {s['faces']:,} | {_scale_setting(doc, s)} | {cos} | {index} | {s['repeats']} | "
                         f"{s['seconds_index']:.1f} | {s['seconds_grouping']:.1f} | **{s['seconds_total']:.1f}** | "
                         f"{cpu} | {load} | {s['peak_rss_mib'] / 1024:.2f} GiB | {_pts(s['bcubed_f'])} |")
    return "\n".join(lines) + "\n"


def render_people_summary(docs: Sequence[Mapping]) -> str:
    """One line per bundle: the served ensemble against the peers' recipes on the mixed gallery."""
    lines = []
    for doc in docs:
        mixed = [g for g in doc["galleries"] if g["gallery"] != "clean"]
        if not mixed:
            raise CmceError("the people summary reads a mixed gallery; the evaluation has none")
        rows = {r["name"].split(" (")[0]: r for r in mixed[0]["rows"]}
        lines.append(f"`{_bundle(doc)}`, `{mixed[0]['gallery']}`: BCubed F {_pts(rows['CMCE ensemble']['bcubed_f'])} "
                     f"served ensemble, {_pts(rows['query model alone']['bcubed_f'])} query model alone, "
                     f"{_pts(rows['face_recognition recipe']['bcubed_f'])} face_recognition recipe, "
                     f"{_pts(rows['Immich-like recipe']['bcubed_f'])} Immich-like recipe")
    return "\n\n".join(lines) + "\n"


PEOPLE_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "people-rows": render_people_rows,
    "people-differences": render_people_differences,
    "people-unsure": render_people_unsure,
    "people-curve": render_people_curve,
    "people-calibration": render_people_calibration,
    "people-scale": render_people_scale,
    "people-settings": render_people_settings,
    "people-detach": render_people_detach,
    "people-summary": render_people_summary,
}
