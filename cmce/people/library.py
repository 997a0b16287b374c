"""``group_gallery``: the people of a saved gallery, named by its entries and source files.

It reads the gallery's raw embeddings (the source of truth) and fuses them with the serving
bundle into the served ensemble vectors and quality scores (the derived data of that bundle);
the neighbours are found with the gallery's own saved ensemble index when it is current
(otherwise one is built over the fused vectors). Then it groups them (:func:`cmce.people.grouping.group_faces`) with the bundle's grouping
calibration (``info["people"]``, written by ``cmce evaluate DATA --heldout --people --record``
from the bundle's training identities) unless a config is given. Faces of one photo (one
content hash) are different people; constraints and names are keyed by entry id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import PeopleError
from cmce.gallery.persistence import bundle_inputs, check_servable
from cmce.method.bundle_model import Bundle
from cmce.people.grouping import GroupingConfig, PeopleGrouping, group_faces
from cmce.storage.read import read_gallery
from cmce.storage.records import GalleryRecords

logger = logging.getLogger(__name__)

__all__ = ["GalleryPeople", "bundle_grouping_config", "group_gallery"]


@dataclass(frozen=True)
class GalleryPeople:
    """A gallery's grouping, with the entry id and source file of each grouped position.

    Entries the bundle cannot fuse (none of its members stored) are not grouped: ``skipped``.
    """

    grouping: PeopleGrouping
    entry_ids: tuple[str, ...]
    sources: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.entry_ids) == len(self.sources) == self.grouping.size:
            raise PeopleError("one entry id and one source file per grouped face")

    def summary(self) -> str:
        """``"N people, M faces grouped, K unsure"``."""
        return self.grouping.summary()

    def to_dict(self) -> dict:
        """JSON-ready: the summary, people (id, name, entry ids, source files, cohesion), unsure faces."""
        g = self.grouping
        return {
            "summary": g.summary(),
            "threshold": g.config.threshold, "method": g.config.method,
            "people": [{"id": p.id, "name": p.name, "entry_ids": [self.entry_ids[i] for i in p.members],
                        "source_files": [self.sources[i] for i in p.members], "cohesion": round(p.cohesion, 4)}
                       for p in g.people],
            "unsure": [{"entry_id": self.entry_ids[u.position], "source_file": self.sources[u.position],
                        "reason": u.reason} for u in g.unsure],
            "skipped": list(self.skipped),
        }


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
                          doubt_above=float(bundle.calibration.rejection_threshold) if unsure else None)


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
                  known_labels: Mapping[str, str] | None = None) -> GalleryPeople:
    """Group a saved gallery's faces (a folder, or its records) into people.

    Args:
        gallery: a gallery folder (``cmce index``, ``Gallery.save``) or its ``GalleryRecords``.
        bundle: the serving bundle (its ensemble vectors and quality scores are grouped).
        config: the grouping (None: :func:`bundle_grouping_config`).
        must_link, cannot_link: pairs of entry ids.
        known_labels: entry id -> name of the faces already named.

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
    names = {}
    for e, name in (known_labels or {}).items():
        if e not in where:
            raise PeopleError(f"known_labels: unknown entry id {e!r}")
        names[where[e]] = name
    grouping = group_faces(gv.ensemble[rows], uncertainty=np.nan_to_num(np.asarray(gv.quality, np.float64)[rows]),
                           photo_ids=records.content_hash[rows], must_link=_entry_pairs(must_link, where, "must_link"),
                           cannot_link=_entry_pairs(cannot_link, where, "cannot_link"), known_labels=names, config=cfg,
                           index=index)
    skipped = tuple(str(e) for e in records.entry_id[~ok])
    if skipped:
        logger.info("%d entries not grouped: the bundle cannot fuse them", len(skipped))
    return GalleryPeople(grouping, tuple(ids), tuple(str(s) for s in records.source[rows]), skipped)
