"""``group_gallery``: the people of a saved gallery, named by its entries and source files.

It reads the gallery's raw embeddings (the source of truth) and fuses them with the serving
bundle into the served ensemble vectors and quality scores (the derived data of that bundle),
beside the query model's own embeddings (the grouping's similarity may weigh their cosine in);
the neighbours are found with the gallery's own saved ensemble index when it is current
(otherwise one is built over the fused vectors). Then it groups them (:func:`cmce.people.grouping.group_faces`) with the bundle's grouping
calibration (``info["people"]``, written by ``cmce evaluate DATA --heldout --people --record``
from the bundle's training identities) unless a config is given. Faces of one photo (one
content hash) are different people; constraints and names are keyed by entry id.

The gallery's stored corrections (``cmce.storage.corrections``: must-links, cannot-links and
names, written by ``cmce people GALLERY --name/--merge/--split/--not``) are always honoured:
a folder's are read with it, records' are passed as ``corrections``. Corrections that mention
an entry the bundle cannot fuse (``skipped``) are left out of the grouping.

**Person keys.** A person's number (``Person.id``, largest first) changes whenever the
grouping does; its *key* does not while the person keeps its faces: the person's name when it
has one, else its smallest entry id (``<content hash>:<face number>``). A command names a
person by its name, by any of its entry ids, or by a unique prefix of one
(:meth:`GalleryPeople.person`); the summary prints each person's shortest unique prefix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmce.errors import PeopleError
from cmce.gallery.persistence import bundle_inputs, check_servable
from cmce.method.bundle_model import Bundle
from cmce.people.grouping import GroupingConfig, PeopleGrouping, Person, group_faces
from cmce.storage.read import read_gallery
from cmce.storage.records import Corrections, GalleryRecords

logger = logging.getLogger(__name__)

__all__ = ["GalleryPeople", "bundle_grouping_config", "calibrated_extras", "group_gallery"]


@dataclass(frozen=True)
class GalleryPeople:
    """A gallery's grouping, with the entry id and source file of each grouped position.

    Entries the bundle cannot fuse (none of its members stored) are not grouped: ``skipped``.
    ``vectors`` (the grouped ensemble vectors), ``photo_ids`` (their content hashes) and
    ``corrections`` (the stored ones honoured) are what the correction operations
    (:mod:`cmce.people.corrections`) need; they are not part of equality.
    """

    grouping: PeopleGrouping
    entry_ids: tuple[str, ...]
    sources: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    vectors: np.ndarray | None = field(default=None, compare=False, repr=False)
    photo_ids: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    corrections: Corrections = field(default_factory=Corrections.empty, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not len(self.entry_ids) == len(self.sources) == self.grouping.size:
            raise PeopleError("one entry id and one source file per grouped face")
        if self.vectors is not None and len(self.vectors) != self.grouping.size:
            raise PeopleError("one vector per grouped face")
        if self.photo_ids is not None and len(self.photo_ids) != self.grouping.size:
            raise PeopleError("one photo id per grouped face")

    def key(self, person: Person) -> str:
        """The person's stable key: its name, else its smallest entry id (module docstring)."""
        return person.name if person.name is not None else min(self.entry_ids[i] for i in person.members)

    def short_key(self, person: Person) -> str:
        """The key as printed: the name, else the shortest unique prefix (8+ characters) of its smallest entry id."""
        if person.name is not None:
            return person.name
        return _short_prefix(min(self.entry_ids[i] for i in person.members), self.entry_ids)

    def entry(self, ref: str) -> int:
        """The position of an entry named by its id or a unique prefix of it.

        Raises:
            PeopleError: no entry, or several, start with ``ref`` (the message shows a few valid ids).
        """
        ref = str(ref).strip()
        if ref in self._where:
            return self._where[ref]
        hits = [i for i, e in enumerate(self.entry_ids) if _matches(e, ref)] if len(ref) >= 4 else []
        if len(hits) == 1:
            return hits[0]
        shown = ", ".join(repr(_short_prefix(e, self.entry_ids)) for e in sorted(self.entry_ids)[:3])
        if len(hits) > 1:
            raise PeopleError(f"entry {ref!r} is ambiguous: {len(hits)} entry ids start with it; type more of it")
        raise PeopleError(f"no entry {ref!r} among the {len(self.entry_ids)} grouped faces (entry ids look like "
                          f"'<content hash>:<face number>'; a unique prefix of 4+ characters, or of the hash before ':<face number>', will do: e.g. {shown})")

    def person(self, ref: str) -> Person:
        """The person named by ``ref``: its name, an entry id of one of its faces, or a unique prefix of one.

        Raises:
            PeopleError: an unknown name or entry, or an entry that is unsure (in no person).
        """
        ref = str(ref).strip()
        named = [p for p in self.grouping.people if p.name == ref]
        if named:
            return named[0]
        try:
            pos = self.entry(ref)
        except PeopleError:
            names = sorted({p.name for p in self.grouping.people if p.name})
            known = f"; the named people are {', '.join(map(repr, names[:10]))}" if names else "; no person is named yet"
            raise PeopleError(f"no person {ref!r}: name a person by its name or by one of its entry ids (or a "
                              f"unique prefix of 4+ characters, as `cmce people GALLERY` prints them){known}") from None
        label = int(self.grouping.labels[pos])
        if label < 0:
            raise PeopleError(f"entry {self.entry_ids[pos]!r} is unsure, in no person; `--not` and `--merge` take "
                              f"a person (its name or one of its entry ids)")
        return self.grouping.people[label]

    @property
    def _where(self) -> dict[str, int]:
        return {e: i for i, e in enumerate(self.entry_ids)}

    def lines(self) -> list[str]:
        """The summary, then one line per person: its key as it can be typed back (quoted when a name), its faces."""
        out = [self.summary()]
        for p in self.grouping.people:
            key = repr(p.name) if p.name is not None else self.short_key(p)
            out.append(f"  {key:<24} {len(p.members):>4} faces")
        return out

    def summary(self) -> str:
        """``"N people, M faces grouped, K unsure"``."""
        return self.grouping.summary()

    def to_dict(self) -> dict:
        """JSON-ready: the summary, people (id, name, entry ids, source files, cohesion), unsure faces."""
        g = self.grouping
        return {
            "summary": g.summary(),
            "threshold": g.config.threshold, "method": g.config.method,
            "people": [{"id": p.id, "key": self.key(p), "name": p.name, "entry_ids": [self.entry_ids[i] for i in p.members],
                        "source_files": [self.sources[i] for i in p.members], "cohesion": round(p.cohesion, 4)}
                       for p in g.people],
            "unsure": [{"entry_id": self.entry_ids[u.position], "source_file": self.sources[u.position],
                        "reason": u.reason} for u in g.unsure],
            "skipped": list(self.skipped),
        }


def _short_prefix(entry: str, ids: Sequence[str], least: int = 8) -> str:
    """``entry`` cut short but still unique among ``ids``: ``<hash prefix>:<face number>`` (the hash prefix
    ``least`` characters or more), or a plain prefix for ids without a face number."""
    head, sep, face = entry.rpartition(":")
    if not sep:
        head, face = entry, ""
    others = [e for e in ids if e != entry]
    for n in range(min(least, len(head)), len(head) + 1):
        short = head[:n] + sep + face
        if not any(_matches(e, short) for e in others):
            return short
    return entry


def _matches(entry: str, ref: str) -> bool:
    """Whether ``ref`` names ``entry``: a prefix of it, or ``<hash prefix>:<face number>``."""
    if entry.startswith(ref):
        return True
    head, sep, face = ref.rpartition(":")
    e_head, e_sep, e_face = entry.rpartition(":")
    return bool(sep and e_sep and head and face == e_face and e_head.startswith(head))


def bundle_grouping_config(bundle: Bundle, *, min_faces: int = 1, unsure: bool = True) -> GroupingConfig:
    """The grouping a bundle serves: its calibrated method and threshold, its rejection cut as the doubt cut.

    Raises:
        PeopleError: a bundle without a grouping calibration (the message says how to make one).
    """
    cal = bundle.info.get("people")
    if not cal:
        raise PeopleError(f"bundle {bundle.source or bundle.query_model!r} has no grouping calibration: run "
                          "`python -m cmce evaluate DATA --heldout --people --record --bundle FOLDER` on its "
                          "training data, or pass a GroupingConfig (CLI: --threshold)")
    return GroupingConfig(threshold=float(cal["threshold"]), method=str(cal["method"]), min_faces=min_faces,
                          doubt_above=float(bundle.calibration.rejection_threshold) if unsure else None,
                          **calibrated_extras(cal))


def calibrated_extras(cal: Mapping) -> dict:
    """The grouping settings a bundle's ``info["people"]`` adds to its method and threshold: the query
    model's weight in the similarity, the attach pass and the detach pass (absent in older calibrations: none)."""
    out: dict = {"query_weight": float(cal.get("query_weight", 0.0))}
    if cal.get("attach_above") is not None:
        out["attach_above"] = float(cal["attach_above"])
        out["attach_margin"] = float(cal.get("attach_margin", GroupingConfig.attach_margin))
    if cal.get("detach_below") is not None:
        out["detach_below"] = float(cal["detach_below"])
    return out


def _entry_pairs(pairs: Iterable[Sequence[str]] | None, where: Mapping[str, int], what: str) -> list[tuple[int, int]]:
    out = []
    for pair in pairs or ():
        a, b = pair
        for e in (a, b):
            if e not in where:
                raise PeopleError(f"{what}: unknown entry id {e!r} (ids look like '<content hash>:<face number>')")
        out.append((where[a], where[b]))
    return out


def _own_index(stored, bundle: Bundle, n: int):
    """The gallery's own saved ensemble index (its derived data for this bundle), when current and complete."""
    if stored is None:
        return None
    from cmce.gallery.persistence import bundle_fingerprint
    from cmce.search.index import VectorIndex
    from cmce.storage.derived import read_derived

    derived = read_derived(stored, bundle_fingerprint(bundle))
    if derived is None or not derived.index_path.is_file():
        return None
    index = VectorIndex.load(derived.index_path)
    return index if len(index) == index.num_active == n else None


def group_gallery(gallery: str | os.PathLike | GalleryRecords, bundle: Bundle, *, config: GroupingConfig | None = None,
                  must_link: Iterable[Sequence[str]] | None = None, cannot_link: Iterable[Sequence[str]] | None = None,
                  known_labels: Mapping[str, str] | None = None, corrections: Corrections | None = None) -> GalleryPeople:
    """Group a saved gallery's faces (a folder, or its records) into people.

    Args:
        gallery: a gallery folder (``cmce index``, ``Gallery.save``) or its ``GalleryRecords``.
        bundle: the serving bundle (its ensemble vectors and quality scores are grouped).
        config: the grouping (None: :func:`bundle_grouping_config`).
        must_link, cannot_link: pairs of entry ids.
        known_labels: entry id -> name of the faces already named.
        corrections: the corrections of ``gallery`` given as records (a folder's own are always
            read and honoured; these are added to them). The explicit pairs and names above
            are added on top.

    Raises:
        PeopleError: unknown entry ids, contradicting constraints, or no calibration.
        GalleryError: a folder that is not a gallery, or one the bundle cannot serve.
    """
    stored = None if isinstance(gallery, GalleryRecords) else read_gallery(Path(gallery))
    records = gallery if stored is None else stored.records
    source = "the gallery" if stored is None else str(gallery)
    check_servable(bundle, records.backbones, len(records.entry_id), source)
    cfg = config or bundle_grouping_config(bundle)
    emb, present = bundle_inputs(bundle, records.embeddings, records.present)
    gv = bundle.gallery_vectors(emb, records.probability, present)
    ok = np.asarray(gv.available["ensemble"], bool)
    rows = np.flatnonzero(ok)
    index = _own_index(stored, bundle, len(rows)) if ok.all() else None
    if not len(rows):
        raise PeopleError(f"{source}: no face the bundle can fuse; nothing to group")
    ids = [str(e) for e in records.entry_id[rows]]
    where = {e: i for i, e in enumerate(ids)}
    stored_cor = (stored.corrections if stored is not None else None) or Corrections.empty()
    if corrections is not None:
        stored_cor = stored_cor.merged(corrections.must_link.tolist(), corrections.cannot_link.tolist(), corrections.names)
    honoured = _grouped_only(stored_cor, where)
    must_link = honoured.must_link.tolist() + [tuple(p) for p in must_link or ()]
    cannot_link = honoured.cannot_link.tolist() + [tuple(p) for p in cannot_link or ()]
    known_labels = {**honoured.names, **dict(known_labels or {})}
    names = {}
    for e, name in known_labels.items():
        if e not in where:
            raise PeopleError(f"known_labels: unknown entry id {e!r}")
        names[where[e]] = name
    query_rows = np.asarray(gv.views["query"], np.float32)[rows]  # zero rows: no query-model embedding
    grouping = group_faces(gv.ensemble[rows], query_vectors=query_rows, uncertainty=np.nan_to_num(np.asarray(gv.quality, np.float64)[rows]),
                           photo_ids=records.content_hash[rows], must_link=_entry_pairs(must_link, where, "must_link"),
                           cannot_link=_entry_pairs(cannot_link, where, "cannot_link"), known_labels=names, config=cfg,
                           index=index)
    skipped = tuple(str(e) for e in records.entry_id[~ok])
    if skipped:
        logger.info("%d entries not grouped: the bundle cannot fuse them", len(skipped))
    return GalleryPeople(grouping, tuple(ids), tuple(str(s) for s in records.source[rows]), skipped,
                         vectors=np.asarray(gv.ensemble[rows], np.float32),
                         photo_ids=tuple(str(h) for h in records.content_hash[rows]), corrections=stored_cor)


def _grouped_only(corrections: Corrections, where: Mapping[str, int]) -> Corrections:
    """The corrections among grouped entries (pairs and names of entries the bundle cannot fuse dropped)."""
    gone = corrections.entry_ids() - set(where)
    return corrections.without_entries(gone) if gone else corrections
