"""Commit staged batches into a gallery, idempotently; then build its derived data.

The mapper stages each finished batch under the job's own ``GALLERY/staging/<job>/``
(temporary name, then renamed); ``GalleryWriter`` on the driver holds that folder and commits staged batches in groups with
``cmce.storage.staging.commit_staged``, under the gallery's lock and with one manifest write per
group. Why no face is ever written twice and no half shard is ever read:

- a staged file is whole or absent (rename), and nothing reads ``staging/``;
- a retried batch (a killed worker) rewrites the same staged name with the same rows;
- a commit drops rows whose entry id is stored (``<content hash>:<face>``), so staged
  files committed twice, or two copies of a photo, add nothing;
- jobs writing into one gallery at once each stage in their own folder and commit under
  the lock, so neither removes nor commits what the other is still writing;
- a re-run starts by committing what an interrupted run staged (a job folder nobody holds), removes files a commit
  renamed but never listed, and skips content hashes already stored, including files
  recorded as skipped (no face, not an image).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.method.bundle_model import Bundle
from cmce.pipeline.mapper import KnownHashes
from cmce.storage.derived import write_derived
from cmce.storage.manifest import is_gallery, read_manifest
from cmce.storage.read import read_gallery
from cmce.storage.staging import (
    CommitReport,
    StagingJob,
    StoredKeys,
    commit_staged,
    remove_finished_jobs,
    remove_orphans,
    staged_files,
)
from cmce.storage.write import create_empty_gallery, write_gallery

logger = logging.getLogger(__name__)

__all__ = ["DerivedSummary", "GalleryWriter", "build_derived", "open_gallery"]


def open_gallery(folder: str | os.PathLike) -> Path:
    """Make ``folder`` a version 2 gallery ready for a job: created empty, or converted
    from version 1; files an interrupted commit renamed but never listed are removed.

    Jobs that start on one new folder at once share the gallery one of them creates.
    """
    folder = Path(folder)
    if not is_gallery(folder):
        create_empty_gallery(folder)
    elif read_manifest(folder) is None:  # version 1: rewrite as version 2 first
        write_gallery(folder, read_gallery(folder).records)
    removed = remove_orphans(folder)
    if removed:
        logger.info("%s: removed %d files an interrupted commit left unlisted", folder, len(removed))
    return folder


@dataclass
class GalleryWriter:
    """Commits a job's staged batches into ``folder`` in groups; keeps the job's totals.

    Args:
        folder: the gallery (``open_gallery`` first).
        commit_every: staged batches per commit (one manifest write each).
        max_entries: entries the gallery may hold (None: no cap).
    """

    folder: Path
    commit_every: int = 8
    max_entries: int | None = None
    keys: StoredKeys = field(default_factory=StoredKeys)
    added: int = 0
    duplicates: int = 0
    over_limit: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _pending: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.job = StagingJob.start(self.folder)
        try:
            self.resumed = self._commit(staged_files(self.folder))  # what interrupted runs staged
            remove_finished_jobs(self.folder)
        except BaseException:
            self.job.release()
            raise
        if self.resumed.entries or self.resumed.skipped:
            logger.info("%s: committed %d entries an interrupted run had staged", self.folder, self.resumed.entries)

    def __enter__(self) -> GalleryWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        """On an error, stop holding the job's folder: the next run commits what it staged."""
        if kind is not None:
            self.job.release()

    @property
    def stage(self) -> str:
        """The job's staging folder relative to the gallery: the mappers write there."""
        return self.job.name

    def known_hashes(self) -> KnownHashes:
        """The content hashes stored so far (entries and skipped files), for the mappers."""
        return KnownHashes(self.keys.hashes)

    def add(self, row: Mapping[str, object]) -> None:
        """Take one mapper output row; commit when ``commit_every`` batches are waiting.

        Raises:
            GalleryError: a staged file the mapper wrote is not visible here (workers on
                other machines must write to a file system the driver mounts too).
        """
        names = [n for n in str(row["staged"]).split(",") if n]
        for name in names:
            if not (self.folder / name).is_file():
                raise GalleryError(
                    f"{self.folder}: the batch staged as {name} is not there. Workers write their batches into "
                    f"GALLERY/staging: on a cluster of several machines, --out must be a folder every machine "
                    f"mounts (NFS, EFS, Filestore)")
        self._pending += names
        if len(self._pending) >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        """Commit every staged batch taken so far."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._commit(pending)

    def close(self) -> None:
        """Commit what is left, then remove the job's staging folder (and ``staging/`` if empty)."""
        self.flush()
        self.job.close()

    def _commit(self, names: Sequence[str]) -> CommitReport:
        report = commit_staged(self.folder, names, known=self.keys, max_entries=self.max_entries)
        self.added += report.entries
        self.duplicates += report.duplicates
        self.over_limit += report.over_limit
        self.skipped += list(report.skipped)
        return report


@dataclass(frozen=True)
class DerivedSummary:
    """The derived data built after a job: how many entries, how many rejected."""

    entries: int
    rejected: int
    built: bool


def build_derived(folder: str | os.PathLike, bundle: Bundle, *, ray: str | None = None) -> DerivedSummary:
    """Re-project the gallery's raw embeddings with ``bundle`` and store its derived data.

    From ``cmce.search.compact.COMPACT_FROM`` entries, or when the gallery already serves an
    archive index, the derived data is the archive kind (``cmce.gallery.archive``:
    streamed shard by shard, compact index from that size); below, the in-memory
    gallery's (fused vectors and the exact index, as ``Gallery.save`` writes it).

    Args:
        folder: the gallery.
        bundle: the serving bundle.
        ray: build an archive index with Ray tasks on this cluster (see ``connect_ray``).
    """
    from cmce.gallery.archive_build import ARCHIVE_KIND, build_archive_index
    from cmce.gallery.persistence import derive
    from cmce.gallery.upgrade import reproject_records
    from cmce.search.compact import COMPACT_FROM

    folder = Path(folder)
    manifest = read_manifest(folder) or {}
    entries = int(manifest.get("entries", 0))
    if entries and (entries >= COMPACT_FROM or (manifest.get("derived") or {}).get("kind") == ARCHIVE_KIND):
        report = build_archive_index(folder, bundle, ray=ray)
        return DerivedSummary(report.entries, report.rejected, True)
    stored = read_gallery(folder, metadata=False)  # ids, probabilities, embeddings: all re-projection needs
    if not len(stored.records):
        return DerivedSummary(0, 0, False)
    proj = reproject_records(stored, bundle)
    derived, index = derive(bundle, proj.vectors, seconds=proj.seconds)
    write_derived(folder, derived, index)
    rejected = int(np.asarray(bundle.rejected(derived.quality)).sum())
    return DerivedSummary(len(stored.records), rejected, True)
