"""The user's corrections to a grouping, translated into corrections rows (must-links, cannot-links, names).

Each operation reads a grouping (:class:`cmce.people.library.GalleryPeople`) and returns a
:class:`CorrectionChange` (pure: nothing is written); :func:`checked` applies it to the
gallery's corrections and refuses a result no grouping could honour; :func:`apply_to_folder`
stores it (``cmce.storage.corrections.write_corrections``: atomic, nothing changes when refused).
Every later grouping of the gallery honours the stored rows (``group_gallery``).

* **name PERSON NAME** writes NAME to each of the person's entries (a name joins its faces:
  one name is one person).
* **merge PERSON PERSON** must-links the faces of both into one unit (a star from the
  smallest entry id, skipping faces already linked); a name either carries goes to all.
* **split PERSON** divides the person's faces into two halves by 2-means on their vectors
  (faces already must-linked stay together while there are two or more such units),
  must-links each half into a unit, cannot-links the two halves and drops must-links
  between them; a name stays with the half holding the person's smallest entry id.
* **not ENTRY PERSON** cannot-links the entry with every other face of the person, drops
  the entry's must-links (its must-linked neighbours stay linked to each other) and its name
  when it is the person's.

A person is named by its name, one of its entry ids, or a unique prefix of one
(:meth:`GalleryPeople.person`). Refused, with a message that says why (:class:`PeopleError`):
unknown people and entries, merging a person with itself, splitting a one-face person, and any
merge, split or "not" on a gallery of one face.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from cmce.errors import PeopleError
from cmce.people.constraints import Constraints
from cmce.people.library import GalleryPeople
from cmce.storage.corrections import check_corrections, read_corrections, write_corrections
from cmce.storage.records import Corrections

__all__ = ["CorrectionChange", "apply_to_folder", "checked", "merge_people", "name_person", "not_person",
           "split_person", "two_means"]

Pair = tuple[str, str]


@dataclass(frozen=True)
class CorrectionChange:
    """What one operation changes in a gallery's corrections, and a sentence saying so."""

    description: str
    must_link: tuple[Pair, ...] = ()
    cannot_link: tuple[Pair, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    drop_must_link: tuple[Pair, ...] = ()
    drop_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", MappingProxyType(dict(self.names)))

    def applied_to(self, corrections: Corrections) -> Corrections:
        """``corrections`` less the dropped rows, plus the new ones."""
        return (corrections.without(self.drop_must_link, (), self.drop_names)
                .merged(self.must_link, self.cannot_link, self.names))


def checked(people: GalleryPeople, corrections: Corrections, source: str = "the gallery") -> Corrections:
    """``corrections`` if the gallery's grouping can honour them, else a named error.

    Raises:
        UnknownEntryError, CorrectionError, ContradictionError: see ``check_corrections``.
        PeopleError: a must-link chain or one name joining two faces of one photo.
    """
    check_corrections(corrections, set(people.entry_ids) | set(people.skipped), source)
    where = {e: i for i, e in enumerate(people.entry_ids)}
    gone = corrections.entry_ids() - set(where)
    c = corrections.without_entries(gone) if gone else corrections
    try:
        Constraints(len(where), must_link=[(where[a], where[b]) for a, b in c.must_link.tolist()],
                    cannot_link=[(where[a], where[b]) for a, b in c.cannot_link.tolist()],
                    photo_ids=people.photo_ids, names={where[e]: n for e, n in c.names.items()})
    except PeopleError as exc:
        raise PeopleError(f"{source}: refused, nothing changed: {exc}") from None
    return corrections


def apply_to_folder(folder: str | os.PathLike, people: GalleryPeople, change: CorrectionChange) -> Corrections:
    """Store ``change`` in the gallery folder's corrections (checked first; refused: nothing changes)."""
    folder = Path(folder)
    return write_corrections(folder, checked(people, change.applied_to(read_corrections(folder)), str(folder)))


def _faces(people: GalleryPeople, ref: str) -> tuple[str, list[str]]:
    person = people.person(ref)
    return people.short_key(person), sorted(people.entry_ids[i] for i in person.members)


def _need_two(people: GalleryPeople, what: str) -> None:
    if people.grouping.size < 2:
        raise PeopleError(f"the gallery has one face: there is nothing to {what}")


def _link_all(faces: Sequence[str], must_link: Iterable[Sequence[str]]) -> list[Pair]:
    """Must-links that make ``faces`` one unit given the ``must_link`` already stored (a star from the first)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in must_link:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    out = []
    for f in faces[1:]:
        ra, rb = find(faces[0]), find(f)
        if ra != rb:
            parent[rb] = ra
            out.append((faces[0], f))
    return out


def name_person(people: GalleryPeople, ref: str, name: str) -> CorrectionChange:
    """Name a person: ``name`` written to each of its entries."""
    name = str(name).strip()
    key, faces = _faces(people, ref)
    return CorrectionChange(f"named person {key} ({len(faces)} faces) {name!r}", names={e: name for e in faces})


def merge_people(people: GalleryPeople, ref_a: str, ref_b: str) -> CorrectionChange:
    """Merge two people: their faces must-linked into one unit."""
    _need_two(people, "merge")
    a, b = people.person(ref_a), people.person(ref_b)
    if a.id == b.id:
        raise PeopleError(f"{ref_a!r} and {ref_b!r} are the same person ({people.short_key(a)}): merge two "
                          f"different people")
    if a.name is not None and b.name is not None and a.name != b.name:
        raise PeopleError(f"person {a.name!r} and person {b.name!r} have different names: name one of them like "
                          f"the other first (--name), then merge")
    faces = sorted(people.entry_ids[i] for i in a.members + b.members)
    name = a.name if a.name is not None else b.name
    names = {e: name for e in faces} if name is not None else {}
    links = _link_all(faces, people.corrections.must_link.tolist())
    return CorrectionChange(f"merged person {people.short_key(a)} ({len(a.members)} faces) and person "
                            f"{people.short_key(b)} ({len(b.members)} faces): {len(links)} must-links",
                            must_link=tuple(links), names=names)


def two_means(vectors: np.ndarray, weights: np.ndarray | None = None, iterations: int = 20) -> np.ndarray:
    """Two groups of unit ``vectors`` by 2-means on cosine similarity: (n,) 0/1, item 0 in group 0.

    Seeds: the item least like the (weighted) mean, then the item least like it; ties and an
    emptied group fall back to the seeds' split. E.g. vectors (1,0), (0.99,0.14), (0,1) give
    ``[0, 0, 1]``.
    """
    v = np.asarray(vectors, np.float64)
    n = len(v)
    if n < 2:
        raise PeopleError("two groups need two items or more")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    mean = (v * w[:, None]).sum(0)
    s1 = int(np.argmin(v @ mean))
    s2 = int(np.argmin(v @ v[s1]))
    if s2 == s1:
        s2 = (s1 + 1) % n
    centres = np.stack([v[s1], v[s2]])
    first = (v @ centres.T).argmax(1)
    first[s1], first[s2] = 0, 1
    labels = first.copy()
    for _ in range(iterations):
        new = (v @ centres.T).argmax(1)
        if new.min() == new.max():
            new = first.copy()
        if (new == labels).all():
            break
        labels = new
        for k in (0, 1):
            c = (v[labels == k] * w[labels == k, None]).sum(0)
            centres[k] = c / max(float(np.linalg.norm(c)), 1e-12)
    return labels if labels[0] == 0 else 1 - labels


def split_person(people: GalleryPeople, ref: str) -> CorrectionChange:
    """Split a person in two (module docstring); needs the grouping's vectors."""
    _need_two(people, "split")
    person = people.person(ref)
    if len(person.members) < 2:
        raise PeopleError(f"person {people.short_key(person)} has one face: there is nothing to split")
    if people.vectors is None:
        raise PeopleError("splitting needs the grouped faces' vectors (group with group_gallery)")
    order = sorted(person.members, key=lambda i: people.entry_ids[i])
    faces = [people.entry_ids[i] for i in order]
    inside = set(faces)
    stored_must = [(a, b) for a, b in people.corrections.must_link.tolist() if a in inside and b in inside]
    # units of the faces already must-linked: kept whole while there are two or more
    unit = {e: e for e in faces}

    def find(x: str) -> str:
        while unit[x] != x:
            x = unit[x]
        return x

    for a, b in stored_must:
        ra, rb = find(a), find(b)
        if ra != rb:
            unit[max(ra, rb)] = min(ra, rb)
    roots = sorted({find(e) for e in faces})
    vec = people.vectors[order]
    if len(roots) >= 2:
        members = {r: [k for k, e in enumerate(faces) if find(e) == r] for r in roots}
        means = np.stack([vec[m].mean(0) for m in members.values()])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        half_of_unit = two_means(means, np.array([len(m) for m in members.values()]))
        half = np.empty(len(faces), np.int64)
        for h, m in zip(half_of_unit, members.values()):
            half[m] = h
    else:
        half = two_means(vec)
    halves = [[e for e, h in zip(faces, half) if h == k] for k in (0, 1)]
    cross = tuple((a, b) for a, b in stored_must if (a in halves[0]) != (b in halves[0]))
    kept_must = [p for p in stored_must if p not in cross]
    links = _link_all(halves[0], kept_must) + _link_all(halves[1], kept_must)
    drop_names = tuple(halves[1]) if person.name is not None else ()
    return CorrectionChange(f"split person {people.short_key(person)} ({len(faces)} faces) into {len(halves[0])} "
                            f"and {len(halves[1])} faces (the second: {halves[1][0]})",
                            must_link=tuple(links), cannot_link=((halves[0][0], halves[1][0]),),
                            drop_must_link=cross, drop_names=drop_names)


def not_person(people: GalleryPeople, entry_ref: str, ref: str) -> CorrectionChange:
    """"Not this person": the entry cannot-linked with the person's other faces (module docstring)."""
    _need_two(people, "separate")
    entry = people.entry_ids[people.entry(entry_ref)]
    person = people.person(ref)
    others = sorted(people.entry_ids[i] for i in person.members if people.entry_ids[i] != entry)
    if not others:
        raise PeopleError(f"entry {entry!r} is the only face of person {people.short_key(person)}: it cannot be "
                          f"'not this person'")
    stored = people.corrections.must_link.tolist()
    mine = tuple((a, b) for a, b in stored if entry in (a, b))
    neighbours = sorted({b if a == entry else a for a, b in mine})
    relink = _link_all(neighbours, [p for p in stored if entry not in p])
    drop_names = (entry,) if person.name is not None and people.corrections.names.get(entry) == person.name else ()
    return CorrectionChange(f"entry {entry} is not person {people.short_key(person)}: {len(others)} cannot-links",
                            must_link=tuple(relink), cannot_link=tuple((entry, o) for o in others),
                            drop_must_link=mine, drop_names=drop_names)
