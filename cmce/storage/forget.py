"""Erasure: faces removed from a gallery folder by rewriting every file that holds them.

``forget_entries`` removes entries (faces) for good: their rows in the entry shards (raw
embeddings of every backbone, thumbnail, detection, source), their rows in backfill
shards, the skipped-file rows that hold their photo's content hash, staged batches of
stopped jobs that hold them, and every correction that mentions them. Derived data
(fused vectors, scores, indexes) is dropped: it is rebuilt from the shards
(``cmce.gallery.forget`` rebuilds it for a bundle).

Nothing is overwritten in place: each affected file is written anew without those rows,
under a new name (temporary name, fsync, rename), the manifest listing the new files is
replaced atomically, and only then the old files and derived folders are deleted. An
interruption (even ``kill -9``) therefore leaves the old gallery or the new one; what
it left unlisted is removed by the next ``remove_orphans`` (run by every ``forget`` and
every indexing job when they start). Parquet files are written whole from the kept rows,
so no row group, page, dictionary or statistic of a new file holds an erased value.

What erasure cannot reach: copies outside the folder (a gallery written with
``upgrade --out`` hard-links the shards, so erase there too), and the disk blocks of
deleted files, which the file system frees but does not overwrite.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError, UnknownEntryError
from cmce.storage.corrections import corrections_of, own_labels, require_version_2, write_corrections_file
from cmce.storage.manifest import (
    _next_number,
    _next_shard_number,
    locked,
    require_manifest,
    write_manifest,
)
from cmce.storage.shards import (
    _listed_file,
    _read_columns,
    _write_parquet,
    require_pyarrow,
)
from cmce.storage.faults import pause
from cmce.storage.staging import SKIPPED, STAGING, _stopped_jobs, remove_unlisted

logger = logging.getLogger(__name__)

__all__ = ["ForgetReport", "entries_named", "forget_entries", "person_names"]




@dataclass(frozen=True)
class ForgetReport:
    """What ``forget_entries`` erased.

    Attributes:
        folder: the gallery.
        entries: the entry ids erased.
        shards_rewritten: shard files written anew without the erased rows (old name -> new
            name; an emptied shard maps to None).
        skipped_rows: skipped-file rows dropped (they held an erased photo's content hash).
        staged_files: staged files of stopped jobs deleted (they held an erased entry).
        corrections: correction rows dropped (pairs and names mentioning an erased entry).
        derived_dropped: the derived data dropped (its manifest entry), None if there was none.
        deleted: files and folders deleted after the manifest was replaced.
        seconds: wall time.
    """

    folder: Path
    entries: tuple[str, ...]
    shards_rewritten: tuple[tuple[str, str | None], ...]
    skipped_rows: int
    staged_files: int
    corrections: int
    derived_dropped: dict | None
    deleted: tuple[str, ...]
    seconds: float

    def summary(self) -> str:
        derived = "; derived data dropped (rebuild it: cmce upgrade or build-index)" if self.derived_dropped else ""
        return (f"erased {len(self.entries)} entries: {len(self.shards_rewritten)} shards rewritten, "
                f"{self.skipped_rows} skipped rows, {self.staged_files} staged files and {self.corrections} "
                f"corrections dropped, {len(self.deleted)} old files deleted in {self.seconds:.2f} s{derived}")


def _entry_labels(folder: Path, manifest: dict) -> dict[str, str | None]:
    """Every entry id -> its shard label (entry shards only; their ``entry_id`` and ``label`` columns)."""
    out: dict[str, str | None] = {}
    for info in manifest["shards"]:
        if info.get("kind") != "embeddings":
            table = _read_columns(folder, info, ["entry_id", "label"])
            out.update(zip(table.column("entry_id").to_pylist(), table.column("label").to_pylist()))
    return out


def _people(folder: Path, manifest: dict) -> dict[str, list[str]]:
    """Name -> entry ids, by each entry's label as read: its correction name, else its shard label."""
    corrections = corrections_of(folder, manifest)
    names = corrections.names
    labels = _entry_labels(folder, manifest)  # an old gallery's names in its shard labels are not own labels
    people: dict[str, list[str]] = {}
    for entry, label in zip(labels, own_labels(labels.values(), corrections, manifest)):
        name = names.get(entry, label)
        if name:
            people.setdefault(name, []).append(entry)
    return people


def person_names(folder: str | os.PathLike) -> dict[str, int]:
    """Name -> number of entries, for every name a gallery's entries carry (correction names over shard labels)."""
    folder = Path(folder)
    return {k: len(v) for k, v in sorted(_people(folder, require_manifest(folder)).items())}


def entries_named(folder: str | os.PathLike, name: str) -> tuple[str, ...]:
    """The entry ids whose label is ``name`` (a correction name, else the shard label), sorted.

    Raises:
        UnknownEntryError: no entry carries ``name`` (the message lists the names that exist).
    """
    folder = Path(folder)
    people = _people(folder, require_manifest(folder))
    if name not in people:
        known = sorted(people)
        shown = ", ".join(map(repr, known[:20])) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise UnknownEntryError(f"{folder}: no entry is named {name!r}; "
                                f"{f'the names are {shown}' if known else 'no entry has a name'}")
    return tuple(sorted(people[name]))


def forget_entries(folder: str | os.PathLike, entry_ids: Iterable[str]) -> ForgetReport:
    """Erase entries from a gallery folder by rewriting every file that holds them (see the module docstring).

    Under the gallery's lock: leftovers of earlier interrupted writes are removed, the ids
    are checked, the new files are written, the manifest is replaced, and the old files
    and derived folders are deleted.

    Args:
        folder: a version 2 gallery.
        entry_ids: the entries to erase (at least one).

    Returns:
        What was erased.

    Raises:
        UnknownEntryError: an id the gallery does not hold (nothing changes).
        GalleryError: no id given, an indexing job running on the gallery, or a damaged gallery.
    """
    start = time.perf_counter()
    folder = Path(folder)
    ids = set(entry_ids)
    if not ids:
        raise GalleryError(f"{folder}: name at least one entry to forget")
    require_version_2(folder)  # a missing folder or a version 1 gallery: refused before taking the lock
    with locked(folder):
        manifest = require_manifest(folder)
        remove_unlisted(folder, manifest)
        _refuse_running_jobs(folder)
        stored = _entry_labels(folder, manifest)
        unknown = sorted(ids - set(stored))
        if unknown:
            examples = ", ".join(map(repr, sorted(stored)[:5]))
            raise UnknownEntryError(f"{folder}: no entry {', '.join(map(repr, unknown[:5]))}"
                                    f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}; "
                                    f"it holds {len(stored)} entries" + (f", e.g. {examples}" if examples else ""))
        hashes = {i.rsplit(":", 1)[0] for i in ids}
        pause("start")
        staged = _drop_staged(folder, ids, hashes)  # never part of the gallery: deleting them is always safe
        new = dict(manifest)
        rewritten, old_files = _rewrite_shards(folder, new, ids)
        skipped_rows, old_skipped = _rewrite_skipped(folder, new, hashes)
        corrections = corrections_of(folder, manifest)
        kept = corrections.without_entries(ids)
        old_corrections = write_corrections_file(folder, new, kept) if kept != corrections else []
        new["derived"] = None
        new["entries"] = sum(int(s["rows"]) for s in new["shards"] if s.get("kind") != "embeddings")
        pause("written")
        write_manifest(folder, new)
        pause("swapped")
        for name in old_files + old_skipped + old_corrections:
            (folder / name).unlink(missing_ok=True)
        deleted = old_files + old_skipped + old_corrections + remove_unlisted(folder, new)
    report = ForgetReport(folder, tuple(sorted(ids)), tuple(rewritten), skipped_rows, staged,
                          len(corrections) - len(kept), manifest.get("derived"), tuple(deleted),
                          time.perf_counter() - start)
    logger.info("%s: %s", folder, report.summary())
    return report


def _refuse_running_jobs(folder: Path) -> None:
    """Raise when an indexing job holds a staging folder of the gallery: it may commit an erased photo again."""
    root = folder / STAGING
    if not root.is_dir():
        return
    jobs = [p for p in root.iterdir() if p.is_dir()]
    running = set(jobs) - set(_stopped_jobs(folder))
    if running:
        raise GalleryError(f"{folder}: an indexing job is running on this gallery ({STAGING}/"
                           f"{sorted(running)[0].name}); forget entries once it has finished")


def _drop_staged(folder: Path, ids: Collection[str], hashes: Collection[str]) -> int:
    """Delete the staged files of stopped jobs that hold an erased entry id or photo; returns how many.

    A staged batch is not part of the gallery: the next indexing run reads its photos again.
    Stopped jobs' folders left without a staged file are removed, and ``staging/`` if empty.
    """
    _, pq = require_pyarrow()
    root = folder / STAGING
    if not root.is_dir():
        return 0
    paths = [p for p in root.iterdir() if p.is_file()]
    for job in _stopped_jobs(folder):
        paths += [p for p in job.iterdir() if p.is_file()]
    dropped = 0
    for path in paths:
        if path.name.endswith(".entries.parquet"):
            column, wanted = "entry_id", ids
        elif path.name.endswith(".skipped.parquet"):
            column, wanted = "content_hash", hashes
        elif path.name.startswith(".") and path.name != ".lock":
            path.unlink(missing_ok=True)  # a staged write that never finished
            continue
        else:
            continue
        try:
            values = pq.read_table(path, columns=[column]).column(column).to_pylist()
        except Exception:  # a damaged staged file is never committed as it is: drop it too
            values = list(wanted)[:1]
        if any(v in wanted for v in values):
            path.unlink(missing_ok=True)
            dropped += 1
    for job in _stopped_jobs(folder):  # nothing staged left: the job folder goes (as remove_finished_jobs)
        if not any(p.name.endswith(".parquet") for p in job.iterdir()):
            shutil.rmtree(job, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:  # another job's folder is there
        pass
    return dropped


def _rewrite_shards(folder: Path, manifest: dict, ids: Collection[str]) -> tuple[list, list[str]]:
    """List, in ``manifest`` (changed here, not written), each shard holding an erased entry written anew
    without it under the next shard number (an emptied shard is unlisted).

    Returns:
        ``(old name, new name or None)`` pairs, and the old files to delete after the manifest is written.
    """
    pa, pq = require_pyarrow()
    number = _next_shard_number(manifest)
    shards, rewritten, old = [], [], []
    for info in manifest["shards"]:
        column = _read_columns(folder, info, ["entry_id"]).column("entry_id").to_pylist()
        drop = np.array([e in ids for e in column], bool)
        if not drop.any():
            shards.append(info)
            continue
        path = _listed_file(folder, info, f"shard {info['file']}")
        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except Exception as e:  # pyarrow raises its own error types for damaged files
            raise GalleryError(f"{folder}: shard {info['file']} is corrupt or cannot be read ({e})") from e
        kept = table.filter(pa.array(~drop))
        old.append(info["file"])
        if kept.num_rows == 0:
            rewritten.append((info["file"], None))
            continue
        kind = "embeddings" if info.get("kind") == "embeddings" else "entries"
        name = f"shards/{kind}-{number:06d}.parquet"
        number += 1
        _write_parquet(kept.replace_schema_metadata(table.schema.metadata), folder / name)
        shards.append(dict(info, file=name, rows=kept.num_rows, bytes=(folder / name).stat().st_size))
        rewritten.append((info["file"], name))
    manifest["shards"] = shards
    return rewritten, old


def _rewrite_skipped(folder: Path, manifest: dict, hashes: Collection[str]) -> tuple[int, list[str]]:
    """List, in ``manifest``, the skipped tables holding an erased photo's content hash written anew without
    those rows. Returns the rows dropped and the old files to delete after the manifest is written."""
    pa, _ = require_pyarrow()
    number = _next_number(manifest, SKIPPED)
    tables, dropped, old = [], 0, []
    for info in manifest.get(SKIPPED, []):
        table = _read_columns(folder, info, ["uri", "source", "content_hash", "reason"])
        drop = np.array([h in hashes for h in table.column("content_hash").to_pylist()], bool)
        if not drop.any():
            tables.append(info)
            continue
        old.append(info["file"])
        dropped += int(drop.sum())
        kept = table.filter(pa.array(~drop))
        if kept.num_rows:
            name = f"{SKIPPED}/skipped-{number:06d}.parquet"
            number += 1
            _write_parquet(kept, folder / name)
            tables.append({"file": name, "rows": kept.num_rows, "bytes": (folder / name).stat().st_size})
    if old:
        if tables:
            manifest[SKIPPED] = tables
        else:
            manifest.pop(SKIPPED, None)
    return dropped, old

