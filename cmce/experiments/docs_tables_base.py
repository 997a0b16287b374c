"""What every docs table renderer reads its JSON through: one document, one evaluation, a row by name,
the bundle's name, an interval in whole points.

The renderers of ``docs_tables_results``, ``_speed``, ``_space``, ``_indexing``, ``_targets`` and
``_variants`` share these; ``cmce.experiments.docs_tables`` registers the renderers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cmce.errors import CmceError
from cmce.metrics.intervals import format_interval
from cmce.metrics.results import Evaluation, ResultError

__all__ = ["bundle_name", "evaluations_in", "one_doc", "one_evaluation", "row_named", "whole_points"]


def one_doc(docs: Sequence[Mapping]) -> Mapping:
    if len(docs) != 1:
        raise CmceError(f"this table reads one JSON file, not {len(docs)}")
    return docs[0]


def evaluations_in(doc: Mapping) -> list[Evaluation]:
    """The evaluations of one ``evaluate --json`` document (one, or ``{"evaluations": [...]}``)."""
    if list(doc) == ["evaluations"]:
        return [Evaluation.from_dict(e) for e in doc["evaluations"]]
    return [Evaluation.from_dict(doc)]


def one_evaluation(doc: Mapping) -> Evaluation:
    evaluations = evaluations_in(doc)
    if len(evaluations) != 1:
        raise ResultError(f"this table reads one evaluation per file, not {len(evaluations)}")
    return evaluations[0]


def bundle_name(evaluation: Evaluation) -> str:
    if evaluation.bundle is None or not evaluation.bundle.source:
        raise ResultError("this table names the bundle: the evaluation has no 'bundle.source'")
    return Path(evaluation.bundle.source).name


def row_named(rows: Sequence, name: str):
    for r in rows:
        if (r.name if hasattr(r, "name") else r["name"]) == name:
            return r
    raise ResultError(f"no row {name!r} in the evaluation")


def whole_points(ci) -> str:
    """An interval of fractions in whole points, ``(-1 to 61)``; a bound that rounds to zero is ``0``, not ``-0``."""
    if ci is None:
        return ""
    return format_interval(*(round(100 * x) / 100 for x in ci), digits=0)
