"""How many faces changed person between two groupings of the same entries (e.g. before and after ``cmce upgrade``).

People have no identity across groupings, so each new person is matched to at most one old
person and each old person to at most one new one, maximising the faces they share (the
Hungarian assignment on the overlap counts). A face *changed person* when it is grouped in
both and its new person is not the one matched to its old person, or when it is grouped in
one grouping and unsure in the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from cmce.errors import PeopleError

__all__ = ["PartitionChange", "compare_partitions", "partition_of"]


@dataclass(frozen=True)
class PartitionChange:
    """Faces compared, faces that changed person, and of those how many moved in or out of the unsure set."""

    faces: int
    changed: int
    to_unsure: int
    from_unsure: int
    only_old: int = 0
    only_new: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.to_unsure + self.from_unsure <= self.changed <= self.faces:
            raise PeopleError("a partition change counts 0 <= unsure moves <= changed <= faces")

    def summary(self) -> str:
        """E.g. ``"3 of 120 faces changed person (1 now unsure, 0 no longer unsure)"``."""
        extra = ""
        if self.only_old or self.only_new:
            extra = f"; {self.only_old} faces only in the old grouping, {self.only_new} only in the new"
        return (f"{self.changed} of {self.faces} faces changed person ({self.to_unsure} now unsure, "
                f"{self.from_unsure} no longer unsure){extra}")


def partition_of(doc: Mapping) -> dict[str, int | None]:
    """Entry id -> person number (None: unsure) from a ``cmce people --json`` document.

    Raises:
        PeopleError: a document without ``people`` and ``unsure`` lists.
    """
    try:
        out: dict[str, int | None] = {e: int(p["id"]) for p in doc["people"] for e in p["entry_ids"]}
        out.update({u["entry_id"]: None for u in doc["unsure"]})
    except (KeyError, TypeError, ValueError) as exc:
        raise PeopleError(f"not a `cmce people --json` document (it needs 'people' with 'id' and 'entry_ids', and "
                          f"'unsure' with 'entry_id'): {exc!r}") from None
    return out


def compare_partitions(old: Mapping[str, int | None], new: Mapping[str, int | None]) -> PartitionChange:
    """Faces that changed person between two groupings (entry id -> person, None for unsure; module docstring).

    Only entries in both are compared. Worked example: old ``{a: 0, b: 0, c: 1, d: 1, e: None}``,
    new ``{a: 5, b: 5, c: 5, d: 7, e: 7}``: new 5 is matched to old 0 (2 shared faces) and new 7
    to old 1 (1 shared), so ``c`` changed person and ``e`` left the unsure set: 2 of 5 changed,
    0 now unsure, 1 no longer unsure.
    """
    common = sorted(set(old) & set(new))
    pairs = [(old[e], new[e]) for e in common if old[e] is not None and new[e] is not None]
    olds = sorted({o for o, _ in pairs})
    news = sorted({n for _, n in pairs})
    matched: dict[object, object] = {}
    if pairs:
        oi = {o: i for i, o in enumerate(olds)}
        ni = {n: i for i, n in enumerate(news)}
        overlap = np.zeros((len(olds), len(news)), np.int64)
        for o, n in pairs:
            overlap[oi[o], ni[n]] += 1
        rows, cols = linear_sum_assignment(-overlap)
        matched = {olds[r]: news[c] for r, c in zip(rows, cols) if overlap[r, c] > 0}
    moved = sum(matched.get(o) != n for o, n in pairs)
    to_unsure = sum(old[e] is not None and new[e] is None for e in common)
    from_unsure = sum(old[e] is None and new[e] is not None for e in common)
    return PartitionChange(len(common), moved + to_unsure + from_unsure, to_unsure, from_unsure,
                           len(set(old) - set(new)), len(set(new) - set(old)))
