"""Indexing jobs' writes: staged batches, their commit into the gallery, and skipped files.

A job (``cmce.pipeline``) stages its batches in a folder of its own, ``staging/<job>/``,
whose ``.lock`` the job's driver holds while it runs (``StagingJob``). Each finished batch
is written there (temporary name, then renamed: a retried batch rewrites the same name with
the same rows) and the driver commits staged batches in groups (``commit_staged``): rows
whose entry id is already stored are dropped, the rest become new shards, and one manifest
write lists them. Several jobs may write into one gallery at once: a job touches only its
own folder, and takes over the folders of jobs that stopped (their lock is free:
``staged_files``), so what an interrupted run staged is committed by the next. Files
read without a face, or unreadable, go to ``skipped/`` tables listed under the manifest's
optional ``"skipped"`` key, so a re-run skips their content too.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.storage.manifest import (
    CORRECTIONS,
    CORRECTIONS_DIR,
    _next_number,
    _next_shard_number,
    locked,
    require_manifest,
    write_manifest,
)
from cmce.storage.records import GalleryRecords
from cmce.storage.shards import (
    _entry_table,
    _read_columns,
    _write_parquet,
    require_pyarrow,
)

__all__ = [
    "SKIPPED",
    "STAGING",
    "CommitReport",
    "StagingJob",
    "StoredKeys",
    "commit_staged",
    "read_skipped",
    "remove_finished_jobs",
    "remove_orphans",
    "remove_unlisted",
    "skipped_table",
    "staged_files",
    "stored_keys",
    "write_staged",
]

STAGING = "staging"
SKIPPED = "skipped"
_BACKBONES_META = b"cmce.backbones"


def skipped_table(uri: Sequence[str | None], source: Sequence[str], content_hash: Sequence[str | None],
                  reason: Sequence[str]):
    """The rows of a skipped-files table (``pyarrow.Table``): files read but not indexed.

    Args:
        uri: (n,) where each file was read (None: not recorded).
        source: (n,) display names.
        content_hash: (n,) sha256 of the bytes, None where the file could not be read.
        reason: (n,) why no entry was made (``"no face found"``, a decoding error...).
    """
    pa, _ = require_pyarrow()
    return pa.table({"uri": pa.array(list(uri), pa.string()), "source": pa.array(list(source), pa.string()),
                     "content_hash": pa.array(list(content_hash), pa.string()),
                     "reason": pa.array(list(reason), pa.string())})


class StagingJob:
    """A running job's own staging folder, ``staging/<job>/``, held by its driver.

    The driver holds an exclusive lock on the folder's ``.lock`` from ``start`` to
    ``close``/``release`` (or its process's end), so other jobs on the gallery leave the
    folder alone while it runs, and take over what it staged once it stopped.

    Attributes:
        folder: the gallery.
        name: the folder relative to the gallery (``staging/<job>``); the mappers write there.
    """

    def __init__(self, folder: Path, name: str, lock) -> None:
        self.folder, self.name, self._lock = folder, name, lock

    @classmethod
    def start(cls, folder: str | os.PathLike) -> StagingJob:
        """Create a new job folder under the gallery's ``staging/`` and hold it."""
        folder = Path(folder)
        name = f"{STAGING}/{uuid.uuid4().hex[:16]}"
        with locked(folder):  # never while another job removes staging/ or a stopped job's folder
            (folder / name).mkdir(parents=True)
            lock = open(folder / name / ".lock", "a+")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new folder: nobody else holds it
        return cls(folder, name, lock)

    def release(self) -> None:
        """Stop holding the folder; what it staged stays for the next job to commit."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        """Remove the job's folder (everything it staged was committed) and ``staging/`` if empty."""
        with locked(self.folder):
            shutil.rmtree(self.folder / self.name, ignore_errors=True)
            self.release()
            try:
                (self.folder / STAGING).rmdir()
            except OSError:  # another job's folder is there
                pass


def write_staged(folder: str | os.PathLike, key: str, entries: GalleryRecords, skipped, *, job: str) -> list[str]:
    """Write one finished batch into the job's staging folder, atomically; nothing lists it yet.

    Each file is written under a temporary name and renamed, so a staged file is
    whole or absent; writing the same ``key`` again (a retried batch) replaces it with
    the same rows. ``commit_staged`` makes it part of the gallery.

    Args:
        folder: the gallery.
        key: the batch's deterministic name (letters, digits, ``-`` and ``_``).
        entries: the batch's entries with every backbone's raw embedding.
        skipped: ``skipped_table`` rows of the batch's files without an entry.
        job: the job's folder relative to ``folder`` (``StagingJob.name``).

    Returns:
        The staged files written (relative to ``folder``), entries first.
    """
    if not key or not all(c.isalnum() or c in "-_" for c in key):
        raise GalleryError(f"staged batch key {key!r}: use letters, digits, '-' and '_'")
    folder = Path(folder)
    if not (folder / job).is_dir():
        raise GalleryError(f"{folder}: the job folder {job} is not there; workers must reach the gallery's folder")
    names = []
    if len(entries):
        keys = [k for k in entries.backbones if entries.present[k].any()]
        table = _entry_table(entries, slice(0, len(entries)), keys)
        meta = json.dumps({k: entries.backbones[k].to_dict() for k in keys}).encode()
        names.append(f"{job}/{key}.entries.parquet")
        _write_parquet(table.replace_schema_metadata({_BACKBONES_META: meta}), folder / names[-1])
    if skipped is not None and skipped.num_rows:
        names.append(f"{job}/{key}.skipped.parquet")
        _write_parquet(skipped, folder / names[-1])
    return names


def _stopped_jobs(folder: Path) -> list[Path]:
    """The job folders under ``staging/`` whose driver stopped (their lock is free), sorted.

    A folder is checked by taking its lock without waiting; a running job holds it.
    """
    root = folder / STAGING
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            with open(path / ".lock", "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running job
        except FileNotFoundError:
            continue  # removed meanwhile by its job's close
        out.append(path)
    return out


def _complete_files(path: Path, prefix: str) -> list[str]:
    """The complete staged files in ``path`` (temporary files of unfinished writes removed)."""
    out = []
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") and p.name != ".lock":
            p.unlink(missing_ok=True)  # a write interrupted before its rename
        elif p.name.endswith((".entries.parquet", ".skipped.parquet")):
            out.append(f"{prefix}/{p.name}")
    return out


def staged_files(folder: str | os.PathLike) -> list[str]:
    """The complete staged files that stopped jobs left (an interrupted run's), sorted.

    Files of running jobs are not listed; temporary files of a stopped job's writes
    that never finished are removed. Files staged directly in ``staging/`` (the layout
    before job folders) count as a stopped job's.
    """
    folder = Path(folder)
    root = folder / STAGING
    if not root.is_dir():
        return []
    out = [f"{STAGING}/{p.name}" for p in sorted(root.iterdir())
           if p.is_file() and p.name.endswith((".entries.parquet", ".skipped.parquet"))]
    for path in _stopped_jobs(folder):
        try:
            out += _complete_files(path, f"{STAGING}/{path.name}")
        except FileNotFoundError:  # another job took it over and removed it meanwhile
            continue
    return out


def remove_finished_jobs(folder: str | os.PathLike) -> int:
    """Remove the folders of stopped jobs that hold no staged file any more; returns how many."""
    folder = Path(folder)
    removed = 0
    with locked(folder):
        for path in _stopped_jobs(folder):
            if not any(p.name.endswith(".parquet") for p in path.iterdir()):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


@dataclass
class StoredKeys:
    """What a gallery already holds, for skipping work: entry ids and content hashes.

    Kept by a job's driver across commits and brought up to date from the shards
    and skipped tables the manifest lists that it has not read yet.

    Attributes:
        ids: entry ids of every entry shard.
        hashes: content hashes of every entry and of every skipped file that had one
            (a photo without a face is not read again on a re-run).
        files: the manifest files already read into ``ids`` and ``hashes``.
    """

    ids: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)

    def update(self, folder: Path, manifest: dict) -> None:
        """Read the entry ids and content hashes of the files ``manifest`` lists that are not read yet."""
        for info in manifest.get("shards", []):
            if info.get("kind") != "embeddings" and info["file"] not in self.files:
                table = _read_columns(folder, info, ["entry_id"])
                ids = table.column("entry_id").to_pylist()
                self.ids.update(ids)
                self.hashes.update(i.rsplit(":", 1)[0] for i in ids)
                self.files.add(info["file"])
        for info in manifest.get(SKIPPED, []):
            if info["file"] not in self.files:
                table = _read_columns(folder, info, ["content_hash"])
                self.hashes.update(h for h in table.column("content_hash").to_pylist() if h)
                self.files.add(info["file"])


def stored_keys(folder: str | os.PathLike) -> StoredKeys:
    """The entry ids and content hashes a version 2 gallery holds (see ``StoredKeys``)."""
    keys = StoredKeys()
    keys.update(Path(folder), require_manifest(Path(folder)))
    return keys


@dataclass(frozen=True)
class CommitReport:
    """What one ``commit_staged`` call made part of the gallery.

    Attributes:
        entries: entries added.
        duplicates: staged entries dropped because their id was already stored.
        skipped: ``(source, reason)`` of the skipped files recorded.
        over_limit: staged photos dropped because the gallery was full.
        shards: the new entry shards.
    """

    entries: int = 0
    duplicates: int = 0
    skipped: tuple[tuple[str, str], ...] = ()
    over_limit: int = 0
    shards: tuple[str, ...] = ()


def commit_staged(folder: str | os.PathLike, names: Sequence[str], *, known: StoredKeys | None = None,
                  max_entries: int | None = None) -> CommitReport:
    """Make staged batches part of the gallery: one manifest write for all of them.

    Under the gallery's lock: staged entry rows whose id the gallery already holds
    (or that an earlier name of this call holds) are dropped; a staged file without
    such rows is renamed into ``shards/`` as it is, one with some is rewritten
    without them. Skipped rows whose content hash is known are dropped, the rest go
    to a new ``skipped/`` table. The manifest then lists the new files (replaced
    atomically), and the staged files are removed. Committing the same staged file
    twice (a job interrupted after its commit, then resumed) adds nothing.

    Args:
        folder: a version 2 gallery.
        names: staged files (``write_staged``, ``staged_files``), relative to ``folder``;
            names that no longer exist are ignored.
        known: the driver's ``StoredKeys``, brought up to date here and kept so
            (default: read from the gallery).
        max_entries: entries the gallery may hold; the photos of a staged file that
            do not fit are dropped (they are not recorded, so a later run with a higher
            cap indexes them).

    Raises:
        GalleryError: a staged or stored file that cannot be read, or an embedding
            size that differs from the stored one.
    """
    require_pyarrow()
    folder = Path(folder)
    known = StoredKeys() if known is None else known
    added = dups = over = 0
    shards: list[str] = []
    with locked(folder):
        manifest = require_manifest(folder)
        known.update(folder, manifest)
        stored = int(manifest.get("entries", len(known.ids)))
        done: list[Path] = []
        skipped_tables = []
        for name in names:
            path = folder / name
            if not path.is_file():
                continue
            table = _read_staged(folder, name)
            done.append(path)
            if name.endswith(".skipped.parquet"):
                skipped_tables.append(_unknown_skipped_rows(table, known))
                continue
            ids = table.column("entry_id").to_pylist()
            keep = _new_entry_rows(ids, known)
            dups += int((~keep).sum())
            if max_entries is not None and stored + int(keep.sum()) > max_entries:
                keep, dropped = _fit_whole_photos(ids, keep, max_entries - stored)
                over += dropped
            if not keep.any():
                continue
            shards.append(_commit_entries(folder, manifest, known, path, table, ids, keep))
            n = int(keep.sum())
            stored += n
            added += n
        skipped = _commit_skipped(folder, manifest, known, skipped_tables)
        if added or skipped:
            manifest["entries"] = stored
            write_manifest(folder, manifest)
        for path in done:
            path.unlink(missing_ok=True)
    return CommitReport(added, dups, tuple(skipped), over, tuple(shards))


def _read_staged(folder: Path, name: str):
    """A staged file as a ``pyarrow.Table`` (page CRCs checked); a damaged one is a GalleryError."""
    _, pq = require_pyarrow()
    try:
        return pq.read_table(folder / name, page_checksum_verification=True)
    except Exception as e:
        raise GalleryError(f"{folder}: staged file {name} cannot be read ({e})") from e


def _unknown_skipped_rows(table, known: StoredKeys):
    """The staged skipped rows whose content hash is not known yet; their hashes become known."""
    pa, _ = require_pyarrow()
    hashes = table.column("content_hash").to_pylist()
    keep = [h is None or h not in known.hashes for h in hashes]
    if not all(keep):
        table = table.filter(pa.array(keep))
    known.hashes.update(h for h in table.column("content_hash").to_pylist() if h)
    return table


def _new_entry_rows(ids: list[str], known: StoredKeys) -> np.ndarray:
    """(n,) bool: the staged rows whose entry id is neither stored nor seen earlier in ``ids``."""
    keep = np.array([i not in known.ids for i in ids], bool)
    seen_now: set[str] = set()
    for j, i in enumerate(ids):  # the same photo twice in one batch: its first copy
        if keep[j] and i in seen_now:
            keep[j] = False
        seen_now.add(i)
    return keep


def _commit_entries(folder: Path, manifest: dict, known: StoredKeys, path: Path, table, ids: list[str],
                    keep: np.ndarray) -> str:
    """Make the ``keep`` rows of the staged entries file ``path`` a new shard; returns its name.

    The file becomes the shard as it is when every row is kept (a rename on the same file
    system), else the kept rows are written anew. ``manifest`` (not yet written) and
    ``known`` list the shard after.

    Raises:
        GalleryError: a backbone the gallery holds with another embedding size.
    """
    pa, _ = require_pyarrow()
    meta = json.loads((table.schema.metadata or {}).get(_BACKBONES_META, b"{}"))
    for key, rec in meta.items():
        known_rec = manifest["backbones"].get(key)
        if known_rec and int(known_rec["dim"]) != int(rec["dim"]):
            raise GalleryError(f"{folder}: holds {key} as {known_rec['dim']}-d, not {rec['dim']}-d")
    shard = f"shards/entries-{_next_shard_number(manifest):06d}.parquet"
    (folder / "shards").mkdir(exist_ok=True)
    if keep.all():
        os.replace(path, folder / shard)  # same file system: the staged file becomes the shard
    else:
        _write_parquet(table.filter(pa.array(keep)), folder / shard)
    for key, rec in meta.items():
        manifest["backbones"][key] = rec
    n = int(keep.sum())
    manifest["shards"].append({"file": shard, "kind": "entries", "rows": n, "backbones": list(meta),
                               "bytes": (folder / shard).stat().st_size})
    known.files.add(shard)
    new_ids = [i for i, k in zip(ids, keep) if k]
    known.ids.update(new_ids)
    known.hashes.update(i.rsplit(":", 1)[0] for i in new_ids)
    return shard


def _commit_skipped(folder: Path, manifest: dict, known: StoredKeys, tables: list) -> list[tuple[str, str]]:
    """Write the skipped rows of ``tables`` as one new ``skipped/`` table listed in ``manifest``.

    Returns:
        ``(source, reason)`` of each row written; empty (and nothing written) without rows.
    """
    pa, _ = require_pyarrow()
    rows = pa.concat_tables(tables) if tables else None
    if rows is None or not rows.num_rows:
        return []
    name = f"{SKIPPED}/skipped-{_next_number(manifest, SKIPPED):06d}.parquet"
    (folder / SKIPPED).mkdir(exist_ok=True)
    _write_parquet(rows, folder / name)
    manifest.setdefault(SKIPPED, []).append({"file": name, "rows": rows.num_rows,
                                             "bytes": (folder / name).stat().st_size})
    known.files.add(name)
    return list(zip(rows.column("source").to_pylist(), rows.column("reason").to_pylist()))


def _fit_whole_photos(ids: list[str], keep: np.ndarray, room: int) -> tuple[np.ndarray, int]:
    """``keep`` cut so that at most ``room`` rows stay, never half a photo's faces."""
    out = keep.copy()
    taken, dropped_photos = 0, set()
    photos: dict[str, list[int]] = {}
    for j, i in enumerate(ids):
        if keep[j]:
            photos.setdefault(i.rsplit(":", 1)[0], []).append(j)
    for digest, rows in photos.items():
        if taken + len(rows) <= room:
            taken += len(rows)
        else:
            out[rows] = False
            dropped_photos.add(digest)
    return out, len(dropped_photos)


def remove_orphans(folder: str | os.PathLike) -> list[str]:
    """Remove what interrupted writes left unlisted; returns the names removed.

    Under the gallery's lock: shard, skipped and corrections files the manifest does not
    list (a commit interrupted between its rename and its manifest write, or an erasure
    interrupted after its manifest write, ``cmce.storage.forget``), and derived folders
    other than the one it lists (``derived/.*tmp*`` folders of builds still running are
    left to them).
    """
    folder = Path(folder)
    with locked(folder):
        return remove_unlisted(folder, require_manifest(folder))


def remove_unlisted(folder: Path, manifest: dict) -> list[str]:
    """``remove_orphans`` for a caller that holds the gallery's lock and has read ``manifest``."""
    removed = []
    listed = {s["file"] for key in ("shards", SKIPPED, CORRECTIONS) for s in manifest.get(key, [])}
    for sub in ("shards", SKIPPED, CORRECTIONS_DIR):
        root = folder / sub
        if root.is_dir():
            for path in root.iterdir():
                if f"{sub}/{path.name}" not in listed:
                    path.unlink(missing_ok=True)
                    removed.append(f"{sub}/{path.name}")
    root = folder / "derived"
    current = (manifest.get("derived") or {}).get("path")
    if root.is_dir():
        for path in root.iterdir():
            if f"derived/{path.name}" != current and not (path.name.startswith(".") and ".tmp" in path.name):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(f"derived/{path.name}")
    return removed


def read_skipped(folder: str | os.PathLike):
    """Every skipped-files row of a gallery as one ``pyarrow.Table`` (uri, source, content_hash, reason)."""
    pa, _ = require_pyarrow()
    folder = Path(folder)
    manifest = require_manifest(folder)
    tables = [_read_columns(folder, info, ["uri", "source", "content_hash", "reason"])
              for info in manifest.get(SKIPPED, [])]
    return pa.concat_tables(tables) if tables else skipped_table([], [], [], [])
