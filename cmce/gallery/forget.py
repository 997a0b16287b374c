"""Erasing people and faces from a saved gallery: ``python -m cmce forget``.

``forget`` resolves people by name (a correction name, else the label the shards hold),
erases their entries with ``cmce.storage.forget.forget_entries`` (every shard, skipped
table, staged batch and correction holding them is rewritten; derived data dropped) and,
given the bundle that served the gallery, rebuilds its derived data from the remaining
raw embeddings: an archive index of the same kind (``build_archive_index``) or the in-memory kind
(``write_derived``). Without a bundle the derived data stays dropped: ``Gallery.load``
re-projects the shards anyway, and an archive gallery needs ``cmce build-index`` again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cmce.errors import GalleryError
from cmce.gallery.archive_build import (
    ARCHIVE_KIND,
    INDEX_CHOICES,
    META_FILE,
    build_archive_index,
)
from cmce.gallery.persistence import bundle_fingerprint, derive
from cmce.gallery.upgrade import reproject_records
from cmce.method.bundle_model import Bundle
from cmce.storage.corrections import require_version_2
from cmce.storage.derived import write_derived
from cmce.storage.forget import ForgetReport, entries_named, forget_entries
from cmce.storage.manifest import require_manifest
from cmce.storage.read import read_gallery

logger = logging.getLogger(__name__)

__all__ = ["ForgetResult", "forget"]


@dataclass(frozen=True)
class ForgetResult:
    """What ``forget`` did.

    Attributes:
        erased: the storage layer's report (entries, files rewritten and deleted).
        people: name -> the entry ids erased under that name.
        rebuilt: ``"archive"`` or ``"in-memory"`` when derived data was rebuilt, None when not.
        hint: what to run to rebuild derived data ("" when nothing is needed).
    """

    erased: ForgetReport
    people: dict[str, tuple[str, ...]]
    rebuilt: str | None
    hint: str

    def summary(self) -> str:
        who = "".join(f"; {name}: {len(ids)} faces" for name, ids in self.people.items())
        derived = f"; {self.rebuilt} derived data rebuilt" if self.rebuilt else (f"; {self.hint}" if self.hint else "")
        return (f"forgot {len(self.erased.entries)} faces{who}: {len(self.erased.shards_rewritten)} shards rewritten, "
                f"{len(self.erased.deleted)} old files deleted{derived}")


def forget(folder: str | os.PathLike, *, entry_ids: Iterable[str] = (), people: Iterable[str] = (),
           bundle: Bundle | None = None) -> ForgetResult:
    """Erase entries and whole people from a saved gallery, then rebuild its derived data.

    Args:
        folder: a version 2 gallery.
        entry_ids: entries to erase.
        people: names whose every entry is erased (a correction name, else the shard label).
        bundle: the bundle that served the gallery: its derived data is rebuilt. None (or
            another bundle than the one whose derived data was dropped): not rebuilt.

    Raises:
        UnknownEntryError: an unknown name or entry id (the message lists valid ones); nothing changes.
        GalleryError: nothing named, or the storage layer's refusals (``forget_entries``).
    """
    folder = Path(folder)
    entry_ids, people = list(entry_ids), list(people)
    if not entry_ids and not people:
        raise GalleryError(f"{folder}: name a person (--person NAME) or an entry (--entry ID) to forget")
    require_version_2(folder)
    by_name = {name: entries_named(folder, name) for name in people}
    ids = set(entry_ids).union(*by_name.values())
    index_kind = _archive_index_kind(folder)
    report = forget_entries(folder, ids)
    dropped = report.derived_dropped or {}
    rebuilt, hint = None, ""
    left = int(require_manifest(folder).get("entries", 0))
    if dropped and left and bundle is not None and dropped.get("fingerprint") == bundle_fingerprint(bundle):
        if dropped.get("kind") == ARCHIVE_KIND:
            build_archive_index(folder, bundle, index=index_kind)
            rebuilt = "archive"
        else:
            stored = read_gallery(folder, metadata=False)
            projection = reproject_records(stored, bundle)
            derived, index = derive(bundle, projection.vectors, seconds=projection.seconds)
            write_derived(folder, derived, index)
            rebuilt = "in-memory"
    elif dropped.get("kind") == ARCHIVE_KIND and left:
        hint = f"rebuild its archive index: python -m cmce build-index {folder} --bundle <its bundle>"
    result = ForgetResult(report, by_name, rebuilt, hint)
    logger.info("%s: %s", folder, result.summary())
    return result


def _archive_index_kind(folder: Path) -> str:
    """The index kind (``exact``, ``compact``) of a gallery's archive derived data, ``auto`` if it has none."""
    info = require_manifest(folder).get("derived") or {}
    if info.get("kind") != ARCHIVE_KIND:
        return "auto"
    try:
        kind = json.loads((folder / info["path"] / META_FILE).read_text()).get("index", "auto")
    except (OSError, ValueError, KeyError):
        return "auto"
    return kind if kind in INDEX_CHOICES else "auto"
