"""Tables of ``docs/public-space.md``, rendered from the test harnesses' JSON
(``tests/harness/load_test.py --soak ... --json``, ``crash_test.py --json``, ``fuzz_readers.py --json``,
``malformed_corpus.py --json``, ``flood_test.py --json``).

Pure functions: a harness's JSON document in, a Markdown table (ending in a newline) out.
``SPACE_TABLES`` maps the renderer names a page's ``<!-- table: NAME FILE -->`` marker uses
to them; ``cmce.experiments.docs_tables`` registers them in its ``JSON_TABLES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cmce.errors import CmceError
from cmce.experiments.docs_tables_base import one_doc

__all__ = ["SPACE_TABLES", "render_crash_test", "render_flood", "render_fuzz_readers", "render_keep", "render_search_request",
           "render_malformed_corpus", "render_serve_overheads", "render_soak", "render_soak_summary"]

#: The soak's endpoints in the table's order, and how the table names them (``{photos}``: photos per indexing).
_SOAK_ROWS = {
    "/index_gallery": "`/index_gallery` ({photos} photos)",
    "/search": "`/search`",
    "/load_bundle": "`/load_bundle` (switch, gallery re-projected)",
    "close": "session close (`Client.close`)",
}


def _seconds(value: float) -> str:
    """A latency as the soak table writes it: ``29.2 s`` from 10 s up, ``0.68 s`` below."""
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def render_soak(soak: Mapping) -> str:
    """``load_test.py --soak ... --json``: requests, p50, p95 and max latency per endpoint.

    Example:
        >>> print(render_soak({"photos_per_index": 4, "endpoints": {
        ...     "/index_gallery": {"n": 601, "p50_s": 29.24, "p95_s": 34.3, "max_s": 36.9},
        ...     "/search": {"n": 1888, "p50_s": 0.681, "p95_s": 1.02, "max_s": 2.08}}}), end="")
        | | n | p50 | p95 | max |
        |---|---:|---:|---:|---:|
        | `/index_gallery` (4 photos) | 601 | 29.2 s | 34.3 s | 36.9 s |
        | `/search` | 1,888 | 0.68 s | 1.02 s | 2.08 s |
    """
    endpoints = soak["endpoints"]
    unknown = sorted(set(endpoints) - set(_SOAK_ROWS))
    if unknown:
        raise CmceError(f"the soak table does not know the endpoints {unknown}; known: {', '.join(_SOAK_ROWS)}")
    lines = ["| | n | p50 | p95 | max |", "|---|---:|---:|---:|---:|"]
    for endpoint, label in _SOAK_ROWS.items():
        if endpoint not in endpoints:
            continue
        e = endpoints[endpoint]
        if not e["n"]:
            raise CmceError(f"the soak made no {endpoint} request: no latency to show")
        lines.append(f"| {label.format(photos=soak['photos_per_index'])} | {e['n']:,} | {_seconds(e['p50_s'])} | "
                     f"{_seconds(e['p95_s'])} | {_seconds(e['max_s'])} |")
    return "\n".join(lines) + "\n"


def render_soak_summary(soak: Mapping) -> str:
    """``load_test.py --soak ... --json``: the run in one line (sessions, requests, errors, isolation).

    Example:
        >>> print(render_soak_summary({"clients": 32, "seconds": 601.0, "sessions": 590, "requests": 1710,
        ...                            "errors": 0, "violations": 0, "searches_with_result": 842,
        ...                            "top1_correct": 842}), end="")
        32 clients for 10 minutes: **590 sessions opened and closed, 1,710 requests, 0 errors, 0 isolation
        violations**; 842 of 842 searches right at rank 1.
    """
    return (f"{soak['clients']} clients for {soak['seconds'] / 60:.0f} minutes: **{soak['sessions']:,} sessions opened "
            f"and closed, {soak['requests']:,} requests, {soak['errors']:,} errors, {soak['violations']:,} isolation\n"
            f"violations**; {soak['top1_correct']:,} of {soak['searches_with_result']:,} searches right at rank 1.\n")


def _trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def render_crash_test(crash: Mapping) -> str:
    """``crash_test.py --json``: per command, the trials, those killed and the state each killed one's
    gallery held, those that finished first, the mixed or unusable ones (bold) and those leaving stray
    temporary files.

    Example:
        >>> print(render_crash_test({"operations": {"index": {
        ...     "trials": 20, "killed": 15, "killed_old": 9, "killed_new": 6, "finished": 5, "finished_new": 5,
        ...     "mixed_or_failed": 0, "trials_with_stray_files": 1}}}), end="")
        | command | trials | killed | gallery after the kill: old / new | finished before the kill | mixed or unusable | stray temporary files after the kill |
        |---|---:|---:|---:|---:|---:|---:|
        | `cmce index` | 20 | 15 | 9 / 6 | 5 (new) | **0** | 1 trial |
    """
    lines = ["| command | trials | killed | gallery after the kill: old / new | finished before the kill "
             "| mixed or unusable | stray temporary files after the kill |", "|---|---:|---:|---:|---:|---:|---:|"]
    for operation, c in crash["operations"].items():
        finished = f"{c['finished']} (new)" if c["finished_new"] == c["finished"] else \
            f"{c['finished']} ({c['finished_new']} new)"
        lines.append(f"| `cmce {operation}` | {c['trials']} | {c['killed']} | {c['killed_old']} / {c['killed_new']} "
                     f"| {finished} | **{c['mixed_or_failed']}** | {_trials(c['trials_with_stray_files'])} |")
    return "\n".join(lines) + "\n"


#: ``fuzz_readers.py``'s expected outcomes in the table's order, and how the table names them.
_FUZZ_ROWS = {
    "decoded": "decoded image (within the pixel budget)",
    "ImageError": "`ImageError` naming the file",
    "LimitError": "`LimitError` naming the file",
    "extracted": "archive extracted (its images then decoded or refused by name)",
    "ArchiveError": "`ArchiveError` naming the archive",
}


def render_fuzz_readers(fuzz: Mapping) -> str:
    """``fuzz_readers.py --json``: cases per expected outcome (a ``LimitError`` row only when one
    occurred), then the findings (bold): any other exception, a message without the file's name, a case
    over the time limit, a worker crash, or the worker's memory past the pixel budget.

    Example:
        >>> print(render_fuzz_readers({"case_timeout_s": 2.0, "findings": [], "outcomes": {
        ...     "ImageError": 52229, "decoded": 25435, "extracted": 12597, "ArchiveError": 9739}}), end="")
        | outcome | cases |
        |---|---:|
        | decoded image (within the pixel budget) | 25,435 |
        | `ImageError` naming the file | 52,229 |
        | archive extracted (its images then decoded or refused by name) | 12,597 |
        | `ArchiveError` naming the archive | 9,739 |
        | any other exception, message without the file's name, case over 2 s, worker crash | **0** |
    """
    outcomes = fuzz["outcomes"]
    unknown = sorted(o for o in outcomes if o not in _FUZZ_ROWS and not o.startswith("finding"))
    if unknown:
        raise CmceError(f"the fuzzing table does not know the outcomes {unknown}; known: {', '.join(_FUZZ_ROWS)}")
    lines = ["| outcome | cases |", "|---|---:|"]
    for outcome, label in _FUZZ_ROWS.items():
        if outcome in outcomes or outcome != "LimitError":
            lines.append(f"| {label} | {outcomes.get(outcome, 0):,} |")
    lines.append(f"| any other exception, message without the file's name, case over {fuzz['case_timeout_s']:g} s, "
                 f"worker crash | **{len(fuzz['findings']):,}** |")
    return "\n".join(lines) + "\n"


def render_malformed_corpus(corpus: Mapping) -> str:
    """``malformed_corpus.py --json``: per endpoint, the cases sent (through gradio_client and raw HTTP)
    and how each was answered; then the findings (bold): blank errors, server tracebacks, leaks (an
    absolute server path in an answer, file outputs included, or more than 200 characters of an echoed
    input), whether ``/load_bundle`` told existing server folders from missing ones, and server paths
    in the answers that are no endpoint's (the page, its configuration, an upload's answer, ...).

    Example:
        >>> print(render_malformed_corpus({"cases": 10, "blank": 0, "leaks": 0, "tracebacks": 0,
        ...     "by_endpoint": {"/search": {"named": 7, "answered": 1}, "/load_bundle": {"named": 2}},
        ...     "bundle_oracle": {"existing": 10, "missing": 5, "told_apart": False},
        ...     "other_answers": {"checked": ["config", "upload"], "leaks": 0, "file_by_its_url": 200}}), end="")
        | endpoint | cases | refused with a message | answered (input usable) | blank error |
        |---|---:|---:|---:|---:|
        | `/load_bundle` | 2 | 2 | 0 | **0** |
        | `/search` | 8 | 7 | 1 | **0** |
        | all endpoints | 10 | 9 | 1 | **0** |
        <BLANKLINE>
        Server tracebacks during the run: **0**; leaks (a server path in an answer, an echo over 200 characters): **0**; `/load_bundle` answers for 10 existing and 5 missing server folders: **the same**; server paths in config, upload: **0** (a file output's path and URL name an alias of the folder; the file is served by its URL).
    """
    lines = ["| endpoint | cases | refused with a message | answered (input usable) | blank error |",
             "|---|---:|---:|---:|---:|"]
    totals = {"named": 0, "answered": 0, "blank": 0}
    for endpoint, counts in sorted(corpus["by_endpoint"].items()):
        unknown = sorted(set(counts) - set(totals))
        if unknown:
            raise CmceError(f"the corpus table does not know the outcomes {unknown}; known: {', '.join(totals)}")
        n = sum(counts.values())
        for outcome in totals:
            totals[outcome] += counts.get(outcome, 0)
        lines.append(f"| `{endpoint}` | {n:,} | {counts.get('named', 0):,} | {counts.get('answered', 0):,} "
                     f"| **{counts.get('blank', 0):,}** |")
    if sum(totals.values()) != corpus["cases"] or totals["blank"] != corpus["blank"]:
        raise CmceError(f"the corpus counts do not add up: {totals} over {corpus['cases']} cases")
    lines.append(f"| all endpoints | {corpus['cases']:,} | {totals['named']:,} | {totals['answered']:,} "
                 f"| **{totals['blank']:,}** |")
    oracle = corpus["bundle_oracle"]
    told = "**told apart**" if oracle["told_apart"] else "**the same**"
    return ("\n".join(lines) + "\n\n"
            f"Server tracebacks during the run: **{corpus['tracebacks']:,}**; leaks (a server path in an answer, "
            f"an echo over 200 characters): **{corpus['leaks']:,}**; `/load_bundle` answers for "
            f"{oracle['existing']} existing and {oracle['missing']} missing server folders: {told}"
            + _other_answers(corpus.get("other_answers")) + ".\n")


def _other_answers(others: Mapping | None) -> str:
    """The corpus's check of the answers that are no endpoint's (none in older runs)."""
    if others is None:
        return ""
    served = "served" if others["file_by_its_url"] == 200 else f"**not served (HTTP {others['file_by_its_url']})**"
    return (f"; server paths in {', '.join(others['checked'])}: **{others['leaks']:,}** (a file output's path and URL "
            f"name an alias of the folder; the file is {served} by its URL)")


_VIEW_NAMES = {"ensemble": "**CMCE ensemble**", "query": "{q} alone"}


def render_keep(doc: Mapping) -> str:
    """``benchmarks/bench_keep.py --json``: the scoreboard of a gallery and its cost, the download ->
    restore round trip, and what the verdict adds to a search.

    Example:
        >>> col = lambda v, r, u, w, m: {"view": v, "recall_at_1": r, "unknown_rate": u,
        ...                              "right_where_ensemble_missed": w, "missed_where_ensemble_right": m}
        >>> print(render_keep({"bundle": "sface-query", "query_model": "sface", "scoreboard": {
        ...     "faces": 2000, "queries": 2000, "people": 386, "median_ms": 339.6,
        ...     "columns": [col("ensemble", 0.997, 0.001, 0, 0), col("query", 0.9965, 0.0005, 1, 2)]},
        ...     "restore": {"faces": 500, "export_median_ms": 96.0, "restore_median_ms": 204.0,
        ...                 "archive_bytes": 2470396, "identical_vectors": True, "identical_answers": True,
        ...                 "searches_compared": 50, "photos_read": 0},
        ...     "verdict": {"search_median_ms": 6.18, "verdict_median_ms": 0.013}}), end="")
        | column (sface-query, 2000 faces, 2000 queries of 386 people) | Recall@1 | Unknown | right where the ensemble was not | ensemble right where it was not |
        |---|---:|---:|---:|---:|
        | **CMCE ensemble** | 99.70% | 0.10% | – | – |
        | sface alone | 99.65% | 0.05% | 1 | 2 |
        <BLANKLINE>
        Scoreboard computed in **0.34 s** (median). Download -> restore of 500 faces: export 0.10 s, restore **0.20 s** (medians), archive 2.4 MiB; identical vectors: yes, identical answers to 50 searches: yes; photos read: 0. A search of every view takes 6.18 ms, its verdict 0.013 ms (0.2%).
    """
    b, r, v = doc["scoreboard"], doc["restore"], doc["verdict"]
    qm = doc.get("query_model", "query model")
    lines = [f"| column ({doc['bundle']}, {b['faces']} faces, {b['queries']} queries of {b['people']} people) "
             "| Recall@1 | Unknown | right where the ensemble was not | ensemble right where it was not |",
             "|---|---:|---:|---:|---:|"]
    for c in b["columns"]:
        name = _VIEW_NAMES.get(c["view"], f"{c['view']} → {{q}}").format(q=qm)
        wins = ("–", "–") if c["view"] == "ensemble" else (c["right_where_ensemble_missed"],
                                                          c["missed_where_ensemble_right"])
        lines.append(f"| {name} | {100 * c['recall_at_1']:.2f}% | {100 * c['unknown_rate']:.2f}% | {wins[0]} | "
                     f"{wins[1]} |")
    yes = {True: "yes", False: "**no**"}
    lines += ["", f"Scoreboard computed in **{b['median_ms'] / 1000:.2f} s** (median). Download -> restore of "
              f"{r['faces']} faces: export {r['export_median_ms'] / 1000:.2f} s, restore "
              f"**{r['restore_median_ms'] / 1000:.2f} s** (medians), archive {r['archive_bytes'] / 2**20:.1f} MiB; "
              f"identical vectors: {yes[r['identical_vectors']]}, identical answers to {r['searches_compared']} "
              f"searches: {yes[r['identical_answers']]}; photos read: {r['photos_read']}. A search of every view "
              f"takes {v['search_median_ms']:.2f} ms, its verdict {v['verdict_median_ms']:.3f} ms "
              f"({100 * v['verdict_median_ms'] / v['search_median_ms']:.1f}%)."]
    return "\n".join(lines) + "\n"


def render_search_request(doc: Mapping) -> str:
    """``benchmarks/bench_search_request.py --json``: the whole search request before and after a change,
    timed in one run on the same machine, alternating.

    Example:
        >>> side = lambda name, m: {"name": name, "commit": "abc1234", "median_ms": m, "q1_ms": m - 20,
        ...                         "q3_ms": m + 40, "searches": 210}
        >>> print(render_search_request({"gallery": "archive", "rounds": 30, "batch": 7, "machine": "2 CPUs",
        ...     "before": side("4bb82c8^1", 145.2), "after": side("issue-25 branch", 143.8), "ratio": 0.990,
        ...     "ratio_ci95": [0.93, 1.06], "round_ratio_min": 0.39, "round_ratio_max": 1.86}), end="")
        | checkout | commit | searches | median | quartiles |
        |---|---|---:|---:|---:|
        | 4bb82c8^1 | abc1234 | 210 | 145.2 ms | 125.2-185.2 ms |
        | issue-25 branch | abc1234 | 210 | 143.8 ms | 123.8-183.8 ms |
        <BLANKLINE>
        After / before: **0.99** (95% bootstrap interval 0.93-1.06), 30 rounds of 7 searches each, alternating; example gallery `archive`; 2 CPUs.
    """
    lines = ["| checkout | commit | searches | median | quartiles |", "|---|---|---:|---:|---:|"]
    for side in (doc["before"], doc["after"]):
        lines.append(f"| {side['name']} | {side['commit']} | {side['searches']} | {side['median_ms']:.1f} ms | "
                     f"{side['q1_ms']:.1f}-{side['q3_ms']:.1f} ms |")
    low, high = doc["ratio_ci95"]
    lines += ["", f"After / before: **{doc['ratio']:.2f}** (95% bootstrap interval {low:.2f}-{high:.2f}), "
              f"{doc['rounds']} rounds of {doc['batch']} searches each, alternating; example gallery "
              f"`{doc['gallery']}`; {doc['machine']}."]
    return "\n".join(lines) + "\n"


def _flood_rows(doc: Mapping, when: str) -> list[str]:
    rows = []
    for phase, label in (("baseline", "no flood"), ("flood", "during the flood")):
        p = doc[phase]
        if not p["searches"]:
            raise CmceError(f"the flood test's {phase} phase made no search: no rate to show")
        rows.append(f"| {when} | {label} ({doc['seconds']:g} s) | {p['searches']:,} | {p['succeeded']:,} "
                    f"({100 * p['success_rate']:.1f}%) | {_seconds(p['p50_s']) if p['p50_s'] else '-'} | "
                    f"{_seconds(p['p95_s']) if p['p95_s'] else '-'} |")
    return rows


def render_flood(docs: Sequence[Mapping]) -> str:
    """``flood_test.py --json``: the other users' searches without and during one client's flood, then
    what happened to the flood's queue joins; one block per document (the first ``before``, the last
    ``after``, when two are given), and the indexing-turns figures where measured.

    Example:
        >>> doc = {"seconds": 40.0, "users": 4, "flood_workers": 16, "flood_seconds": 41.8, "p95_ratio": 1.18,
        ...        "baseline": {"searches": 95, "succeeded": 95, "success_rate": 1.0, "p50_s": 0.906, "p95_s": 2.616},
        ...        "flood": {"searches": 69, "succeeded": 69, "success_rate": 1.0, "p50_s": 1.815, "p95_s": 3.077},
        ...        "flood_requests": {"429": 2178, "200": 6}, "flood_total": 2184}
        >>> print(render_flood([doc]), end="")
        | code | other users' searches | searches | answered | p50 | p95 |
        |---|---|---:|---:|---:|---:|
        | this change | no flood (40 s) | 95 | 95 (100.0%) | 0.91 s | 2.62 s |
        | this change | during the flood (40 s) | 69 | 69 (100.0%) | 1.81 s | 3.08 s |
        <BLANKLINE>
        | code | flood: queue joins from one address (16 at once, a new session each) | queued (200) | refused: too many (429) | refused: queue full (503) | users' p95, flood / no flood |
        |---|---:|---:|---:|---:|---:|
        | this change | 2,184 in 41.8 s | 6 | 2,178 | 0 | 1.18x |
    """
    if not 1 <= len(docs) <= 2:
        raise CmceError(f"the flood table takes the flood test's JSON, or the one before and the one after; "
                        f"got {len(docs)} files")
    names = ["this change"] if len(docs) == 1 else ["before", "this change"]
    lines = ["| code | other users' searches | searches | answered | p50 | p95 |", "|---|---|---:|---:|---:|---:|"]
    for doc, name in zip(docs, names):
        lines += _flood_rows(doc, name)
    workers = {d["flood_workers"] for d in docs}
    lines += ["", f"| code | flood: queue joins from one address ({'/'.join(map(str, sorted(workers)))} at once, a new "
              f"session each) | queued (200) | refused: too many (429) | refused: queue full (503) "
              f"| users' p95, flood / no flood |", "|---|---:|---:|---:|---:|---:|"]
    for doc, name in zip(docs, names):
        r = doc["flood_requests"]
        lines.append(f"| {name} | {doc['flood_total']:,} in {doc['flood_seconds']:g} s | {r.get('200', 0):,} | "
                     f"{r.get('429', 0):,} | {r.get('503', 0):,} | "
                     f"{'no search answered' if doc['p95_ratio'] is None else format(doc['p95_ratio'], '.2f') + 'x'} |")
    timed = [(d["indexing"], n) for d, n in zip(docs, names) if d.get("indexing")]
    if timed:
        lines += ["", "| code | one client indexes | another client, 2 s later, indexes | the other's request took "
                  "| the first's took |", "|---|---:|---:|---:|---:|"]
        for ix, name in timed:
            lines.append(f"| {name} | {ix['big_photos']} photos | {ix['small_photos']} photos | "
                         f"{_seconds(ix['small_s'])} | {_seconds(ix['big_s'])} |")
    return "\n".join(lines) + "\n"


def render_serve_overheads(doc: Mapping) -> str:
    """``benchmarks/bench_serve_overheads.py --json``: a query photo's hash against reading and detecting it,
    per photo size; then ``malloc_trim(0)`` on a fragmented heap, per heap size.

    Example:
        >>> print(render_serve_overheads({"machine_before": "2 CPUs", "hash": [{"size": "4000x3000", "photos": 20,
        ...     "megapixels": 12.0, "read_ms": 109.8, "pixel_hash_ms": 38.133, "file_hash_ms": 0.655,
        ...     "detect_ms": 96.2}], "trim": [{"heap_mib": 1024, "rss_before_trim_mib": 1043, "rss_after_trim_mib": 747,
        ...     "first_trim_ms": 87.71, "trims": 9, "median_trim_ms": 43.2, "max_trim_ms": 78.59}]}), end="")
        | photo | photos | read (`load_image`) | hash of the decoded pixels | hash of the file | face detection |
        |---|---:|---:|---:|---:|---:|
        | 4000x3000 | 20 | 109.8 ms | 38.13 ms | 0.66 ms | 96.2 ms |
        <BLANKLINE>
        | fragmented heap (2/3 freed) | resident before the trim | after | first trim | median of the next 9 | slowest |
        |---|---:|---:|---:|---:|---:|
        | 1,024 MiB | 1,043 MiB | 747 MiB | 87.7 ms | 43.2 ms | 78.6 ms |
        <BLANKLINE>
        Medians over the photos of each one's median; 2 CPUs.
    """
    lines = ["| photo | photos | read (`load_image`) | hash of the decoded pixels | hash of the file | face detection |",
             "|---|---:|---:|---:|---:|---:|"]
    for h in doc["hash"]:
        lines.append(f"| {h['size']} | {h['photos']} | {h['read_ms']:.1f} ms | {h['pixel_hash_ms']:.2f} ms | "
                     f"{h['file_hash_ms']:.2f} ms | {h['detect_ms']:.1f} ms |")
    trims = [t for t in doc["trim"] if "first_trim_ms" in t]
    if trims:
        lines += ["", f"| fragmented heap (2/3 freed) | resident before the trim | after | first trim | median of the "
                  f"next {trims[0]['trims']} | slowest |", "|---|---:|---:|---:|---:|---:|"]
        for t in trims:
            lines.append(f"| {t['heap_mib']:,} MiB | {t['rss_before_trim_mib']:,} MiB | {t['rss_after_trim_mib']:,} MiB | "
                         f"{t['first_trim_ms']:.1f} ms | {t['median_trim_ms']:.1f} ms | {t['max_trim_ms']:.1f} ms |")
    lines += ["", f"Medians over the photos of each one's median; {doc['machine_before']}."]
    return "\n".join(lines) + "\n"


#: Renderer name -> (the JSON documents of the marker's files, in order -> the Markdown table).
SPACE_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "soak": lambda docs: render_soak(one_doc(docs)),
    "soak-summary": lambda docs: render_soak_summary(one_doc(docs)),
    "crash-test": lambda docs: render_crash_test(one_doc(docs)),
    "fuzz-readers": lambda docs: render_fuzz_readers(one_doc(docs)),
    "malformed-corpus": lambda docs: render_malformed_corpus(one_doc(docs)),
    "keep": lambda docs: render_keep(one_doc(docs)),
    "search-request": lambda docs: render_search_request(one_doc(docs)),
    "flood": render_flood,
    "serve-overheads": lambda docs: render_serve_overheads(one_doc(docs)),
}
