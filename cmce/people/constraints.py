"""Must-link and cannot-link constraints, and the step that makes a clustering honour them.

Faces joined by must-link pairs form *units* (union-find); a unit is never split. Two units
conflict when a cannot-link pair joins them, when they hold faces of one photo, or when they
carry different names. :func:`honour` takes any clustering and returns one in which every unit
is in one cluster and no cluster holds two conflicting units: a unit goes to the cluster most
of its faces were given; a cluster with a conflict is re-split greedily, each unit (largest
first) joining the conflict-free part it is most strongly connected to, or a new part.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from cmce.errors import PeopleError

__all__ = ["Constraints", "honour", "pairs_array", "violations"]



def pairs_array(pairs: Iterable[Sequence[int]] | None, n: int, what: str) -> np.ndarray:
    if pairs is None:
        return np.zeros((0, 2), np.int64)
    try:
        arr = np.asarray(pairs if isinstance(pairs, np.ndarray) else list(pairs), dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise PeopleError(f"{what} must be pairs of integer positions: {exc}") from exc
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise PeopleError(f"{what} pairs must be positions in 0..{n - 1}; got {arr[(arr < 0) | (arr >= n)][0]}")
    return arr


class Constraints:
    """The constraints on ``n`` faces, checked for contradictions.

    Args:
        n: the number of faces.
        must_link: pairs of positions that are one person.
        cannot_link: pairs of positions that are different people.
        photo_ids: (n,) one id per face's photo (faces of one photo are different people), or None.
        names: position -> name of the faces already named (one name is one person; two names,
            two people).

    Raises:
        PeopleError: positions out of range, or a contradiction (a must-link chain joining two
            faces of one photo, a cannot-link pair or two different names).
    """

    def __init__(self, n: int, *, must_link=None, cannot_link=None, photo_ids: Sequence | None = None,
                 names: Mapping[int, str] | None = None) -> None:
        self.n = int(n)
        must = pairs_array(must_link, self.n, "must_link")
        cannot = pairs_array(cannot_link, self.n, "cannot_link")
        names = dict(names or {})
        bad = [p for p in names if not 0 <= int(p) < self.n]
        if bad:
            raise PeopleError(f"known_labels positions must be in 0..{self.n - 1}; got {bad[0]}")
        parent = np.arange(self.n)

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        by_name: dict[str, list[int]] = defaultdict(list)
        for p, name in names.items():
            by_name[str(name)].append(int(p))
        links = [tuple(x) for x in must.tolist()]
        links += [(ps[0], q) for ps in by_name.values() for q in ps[1:]]
        for a, b in links:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[rb] = ra
        self.unit = np.array([find(i) for i in range(self.n)], np.int64)
        self.unit_name: dict[int, str] = {}
        for p, name in names.items():
            u = int(self.unit[p])
            if self.unit_name.setdefault(u, str(name)) != str(name):
                raise PeopleError(f"faces named {self.unit_name[u]!r} and {name!r} are must-linked: one face has one name")
        pairs = [cannot]
        if photo_ids is not None:
            ids = np.asarray(photo_ids)
            if ids.shape != (self.n,):
                raise PeopleError(f"photo_ids must hold one id per face ({self.n}); got shape {ids.shape}")
            _, code = np.unique(ids, return_inverse=True)
            order = np.argsort(code, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(code[order])) + 1)
            pairs += [np.array([(a, b) for i, a in enumerate(g) for b in g[i + 1:]], np.int64).reshape(-1, 2)
                      for g in groups if len(g) > 1]
        self.cannot = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        self.conflicts: dict[int, set[int]] = defaultdict(set)
        for a, b in self.unit[self.cannot].tolist():
            if a == b:
                raise PeopleError("a must-link chain (or one name) joins two faces that must be different people "
                                  "(a cannot-link pair or two faces of one photo)")
            self.conflicts[a].add(b)
            self.conflicts[b].add(a)

    @property
    def constrained(self) -> np.ndarray:
        """(n,) bool: faces that are in a must-link unit of two or more, or named."""
        sizes = np.bincount(self.unit, minlength=self.n)
        named = np.zeros(self.n, bool)
        named[[u for u in self.unit_name]] = True
        return (sizes[self.unit] > 1) | named[self.unit]

    def conflict(self, a: int, b: int) -> bool:
        """Whether units ``a`` and ``b`` must be different people."""
        na, nb = self.unit_name.get(a), self.unit_name.get(b)
        return b in self.conflicts.get(a, ()) or (na is not None and nb is not None and na != nb)


def violations(labels: np.ndarray, constraints: Constraints, must_link=None) -> int:
    """How many constraints ``labels`` breaks (must-link pairs apart, cannot pairs together, two names in a person).

    Faces labelled ``-1`` (unsure) are in no person and break nothing.
    """
    labels = np.asarray(labels)
    bad = 0
    for a, b in pairs_array(must_link, constraints.n, "must_link").tolist():
        bad += labels[a] != labels[b]
    for a, b in constraints.cannot.tolist():
        bad += labels[a] >= 0 and labels[a] == labels[b]
    names: dict[int, set[str]] = defaultdict(set)
    for u, name in constraints.unit_name.items():
        for p in np.flatnonzero(constraints.unit == u):
            if labels[p] >= 0:
                names[int(labels[p])].add(name)
    return int(bad + sum(len(v) - 1 for v in names.values()))


def honour(labels: np.ndarray, graph: sp.csr_matrix, constraints: Constraints) -> np.ndarray:
    """``labels`` changed as little as this greedy step can so that every constraint holds (module docstring)."""
    labels = np.asarray(labels, np.int64).copy()
    unit = constraints.unit
    # 1. one cluster per unit: the one most of its faces were given (ties: the lowest label)
    multi = np.flatnonzero(np.bincount(unit, minlength=len(unit)) > 1)
    for u in multi.tolist():
        members = np.flatnonzero(unit == u)
        vals, counts = np.unique(labels[members], return_counts=True)
        labels[members] = vals[np.argmax(counts)]
    # 2. re-split every cluster that holds two conflicting units
    if not constraints.conflicts and len(constraints.unit_name) < 2:
        return labels
    next_label = int(labels.max()) + 1 if len(labels) else 0
    units_of: dict[int, set[int]] = defaultdict(set)
    for p, lab in enumerate(labels.tolist()):
        units_of[lab].add(int(unit[p]))
    g = graph.tocsr()
    for lab, us in units_of.items():
        ulist = sorted(us)
        marked = [u for u in ulist if u in constraints.conflicts or u in constraints.unit_name]
        if not any(constraints.conflict(a, b) for i, a in enumerate(marked) for b in marked[i + 1:]):
            continue
        members = {u: np.flatnonzero((unit == u) & (labels == lab)) for u in ulist}
        ulist.sort(key=lambda u: (-len(members[u]), u))
        parts: list[list[int]] = []
        part_faces: list[np.ndarray] = []
        for u in ulist:
            best, best_w = None, 0.0
            for i, part in enumerate(parts):
                if any(constraints.conflict(u, v) for v in part):
                    continue
                w = float(g[members[u]][:, part_faces[i]].sum())
                if w > best_w:
                    best, best_w = i, w
            if best is None:
                parts.append([u])
                part_faces.append(members[u])
            else:
                parts[best].append(u)
                part_faces[best] = np.concatenate([part_faces[best], members[u]])
        for faces in part_faces[1:]:
            labels[faces] = next_label
            next_label += 1
    return labels
