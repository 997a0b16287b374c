"""Tables of the docs pages, rendered from the evaluation JSON they come from.

A page marks each generated table with where it comes from::

    <!-- table: rows eval-sface-query.json -->
    | row | kind | ... |
    <!-- /table -->

``render_page`` replaces everything between the two markers with the table rendered from
that JSON file (a path relative to the page) by the renderer named first: an evaluation's
(``TABLES``, the same renderers the model cards use), or any other measured JSON's
(``JSON_TABLES``: several files, comma-separated and without spaces, go to one renderer
as a list, e.g. ``<!-- table: app-answers a.json,b.json -->``). ``scripts/render_docs.py`` rewrites the pages;
``tests/experiments/test_docs.py`` fails when a committed page differs from its render, so a figure
in a table can no longer drift from the JSON it was measured into.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from cmce.errors import CmceError
from cmce.experiments.docs_tables_indexing import INDEXING_TABLES
from cmce.experiments.docs_tables_people import PEOPLE_TABLES
from cmce.experiments.docs_tables_base import one_doc
from cmce.experiments.docs_tables_results import RESULTS_TABLES
from cmce.experiments.docs_tables_space import SPACE_TABLES
from cmce.experiments.docs_tables_speed import SPEED_TABLES
from cmce.experiments.docs_tables_targets import TARGETS_TABLES
from cmce.experiments.docs_tables_variants import VARIANT_TABLES
from cmce.method.card import render_rejection_tables, render_table, render_upgrade_table
from cmce.metrics.intervals import format_interval
from cmce.metrics.results import Evaluation, ResultError, UpgradeResult, load_evaluations

__all__ = ["JSON_TABLES", "TABLES", "render_answer_inputs", "render_page", "render_upgrade_sides", "stale_pages"]

#: Renderer name -> (the evaluation -> the Markdown table, ending in a newline).
TABLES: dict[str, Callable[[Evaluation], str]] = {
    "rows": lambda e: render_table(e.rows),
    "upgrade": lambda e: render_upgrade_table(_one_upgrade(e)),
    "upgrade-sides": lambda e: render_upgrade_sides(e.upgrade_results),
    "rejection": render_rejection_tables,
}


def render_upgrade_sides(upgrades: Sequence[UpgradeResult]) -> str:
    """One row per old side of ``evaluate --upgrade-from A --upgrade-from B``: Recall@1 /
    TAR@FAR=1e-3 before, without and with backfill, and the paired Recall@1 gain without
    backfill with its 95% interval.

    Example:
        >>> from cmce.metrics.results import UpgradeResult
        >>> row = lambda stage, r: {"stage": stage, "members": ["g"], "query": "q", "recall_at_1": r,
        ...                         "tar_at_far_1e-3": r - 0.05}
        >>> up = UpgradeResult.from_dict({"from": {"query": "old", "gallery": ["g"], "source": "bundles/facenet-dlib"},
        ...     "to": {"query": "q", "gallery": ["g"]},
        ...     "rows": [row("before", 0.795), row("no_backfill", 0.8761), row("backfill", 0.9707)],
        ...     "comparisons": [{"from": "before", "to": "no_backfill", "recall_at_1_gain": 0.0811,
        ...                      "ci95": [0.0597, 0.1025]}]})
        >>> print(render_upgrade_sides([up]), end="")
        | old gallery | before R@1 / TAR@1e-3 | no_backfill | backfill | gain without backfill (95% CI) |
        |---|---:|---:|---:|---:|
        | `facenet-dlib` | 79.50 / 74.50 | 87.61 / 82.61 | 97.07 / 92.07 | +8.11 (+5.97 to +10.25) |
    """
    lines = ["| old gallery | before R@1 / TAR@1e-3 | no_backfill | backfill | gain without backfill (95% CI) |",
             "|---|---:|---:|---:|---:|"]
    for up in upgrades:
        stages = {r.stage: r for r in up.rows}
        cells = [f"{100 * stages[s].recall_at_1:.2f} / {100 * stages[s].tar_at_far_1e3:.2f}"
                 for s in ("before", "no_backfill", "backfill")]
        gain = next(c for c in up.comparisons if (c.from_stage, c.to_stage) == ("before", "no_backfill"))
        source = up.old.source or ""
        name = (f"`{source.rsplit('/', 1)[-1]}`" if not source.startswith("backbone:")
                else f"{source.split(':', 1)[1]} alone")
        lines.append(f"| {name} | {' | '.join(cells)} | {100 * gain.recall_at_1_gain:+.2f} "
                     f"{format_interval(*gain.ci95, signed=True)} |")
    return "\n".join(lines) + "\n"


def render_answer_inputs(study: Mapping) -> str:
    """The table of ``scripts/image_quality_study.py``'s JSON: each richer set of answer-rule
    inputs against the one it adds to, per abstention rate (points of accuracy of the answered
    queries, with the 95% interval of the paired difference).

    Example:
        >>> print(render_answer_inputs({"gains": [{"from": "query", "to": "combined", "rate": 0.1,
        ...                                        "gain": 0.002, "ci95": [-0.001, 0.006]}]}), end="")
        | inputs | added to | abstain | accuracy gain, points (95% CI) |
        |---|---|---:|---:|
        | combined | query | 10% | +0.20 (-0.10 to +0.60) |
    """
    lines = ["| inputs | added to | abstain | accuracy gain, points (95% CI) |", "|---|---|---:|---:|"]
    for g in study["gains"]:
        lines.append(f"| {g['to']} | {g['from']} | {100 * g['rate']:.0f}% | "
                     f"{100 * g['gain']:+.2f} {format_interval(*g['ci95'], signed=True)} |")
    return "\n".join(lines) + "\n"


#: Renderer name -> (the JSON documents of the marker's files, in order -> the Markdown table).
JSON_TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {
    "answer-inputs": lambda docs: render_answer_inputs(one_doc(docs)),
    **SPEED_TABLES,
}
# The results pages' tables (README.md, results, mixed-quality, upgrades, method): docs_tables_results.
JSON_TABLES.update(RESULTS_TABLES)
# public-space.md's soak, kill -9 and fuzzing tables (the test harnesses' --json): docs_tables_space.
JSON_TABLES.update(SPACE_TABLES)
# mixed-quality.md's targets and their verdicts (the bundles' evaluations): docs_tables_targets.
JSON_TABLES.update(TARGETS_TABLES)
# Training variants held out (the same bundle with one option changed): docs_tables_variants.
JSON_TABLES.update(VARIANT_TABLES)
# speed.md's and scale.md's indexing-throughput, Ray scaling and 1e8-photo cost tables: docs_tables_indexing.
JSON_TABLES.update(INDEXING_TABLES)
# people.md's tables (evaluate --people --json, benchmarks/bench_people.py --json): docs_tables_people.
JSON_TABLES.update(PEOPLE_TABLES)


def _one_upgrade(evaluation: Evaluation):
    if evaluation.upgrade is None:
        raise ResultError("an upgrade table reads an evaluation with one upgrade ('upgrade' in the JSON)")
    return evaluation.upgrade

# A marker may be indented (a table inside a list item): the rendered table is indented as it is.
_BLOCK = re.compile(r"(?P<open>^(?P<indent>[ \t]*)<!-- table: (?P<kind>\S+) (?P<src>\S+) -->\n)(?P<body>.*?)"
                    r"(?P<close>(?P=indent)<!-- /table -->)", re.S | re.M)


def _indented(table: str, indent: str) -> str:
    """``table`` with ``indent`` before each of its non-blank lines."""
    return "".join(indent + line if line.strip() else line for line in table.splitlines(keepends=True))


def render_page(text: str, folder: Path) -> str:
    """``text`` (a Markdown page in ``folder``) with every marked table rendered anew (indented as its
    marker is).

    Raises:
        CmceError: an unknown renderer name, a missing JSON file or one that is not a single
            evaluation (``ResultError``), naming the valid ones.
    """
    cache: dict[Path, Evaluation] = {}

    def block(m: re.Match) -> str:
        kind, srcs = m["kind"], [folder / s for s in m["src"].split(",")]
        if kind not in TABLES and kind not in JSON_TABLES:
            raise CmceError(f"unknown table {kind!r} in a docs page; valid: {', '.join([*TABLES, *JSON_TABLES])}")
        for src in srcs:
            if not src.is_file():
                raise CmceError(f"table {kind!r} reads {src}, which does not exist")
        if kind in JSON_TABLES:
            return m["open"] + _indented(JSON_TABLES[kind]([json.loads(s.read_text()) for s in srcs]), m["indent"]) + m["close"]
        if len(srcs) != 1:
            raise CmceError(f"table {kind!r} reads one evaluation file, not {len(srcs)}")
        src = srcs[0]
        if src not in cache:
            evaluations = load_evaluations(src)
            if len(evaluations) != 1:
                raise CmceError(f"table {kind!r} reads {src}, which holds {len(evaluations)} evaluations, not one")
            cache[src] = evaluations[0]
        return m["open"] + _indented(TABLES[kind](cache[src]), m["indent"]) + m["close"]

    return _BLOCK.sub(block, text)


def stale_pages(pages: Iterable[Path]) -> list[Path]:
    """The pages whose committed text differs from their render."""
    return [p for p in pages if render_page(p.read_text(), p.parent) != p.read_text()]
