"""Writing a gallery: a whole new one atomically, or new shards appended to a stored one.

``write_gallery`` builds the folder under a temporary name and swaps it in; the append
functions write one new shard, rename it into place and only then list it in the
manifest, under the gallery's lock. Indexing jobs append through ``cmce.storage.staging``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cmce.errors import GalleryError
from cmce.storage.corrections import Corrections, check_corrections, corrections_of, write_corrections_file
from cmce.storage.faults import pause
from cmce.storage.manifest import (
    _new_manifest,
    _next_shard_number,
    locked,
    require_manifest,
    swap_in,
    write_manifest,
)
from cmce.storage.records import BackboneRecord, GalleryRecords
from cmce.storage.shards import (
    SHARD_ROWS,
    _embedding_column,
    _entry_table,
    _write_parquet,
    require_pyarrow,
)
from cmce.storage.staging import StoredKeys

__all__ = ["append_embeddings", "append_entries", "create_empty_gallery", "write_gallery"]


def write_gallery(folder: str | os.PathLike, records: GalleryRecords, *, shard_rows: int = SHARD_ROWS,
                  extra: Mapping[str, Any] | None = None, corrections: Corrections | None = None) -> Path:
    """Write ``records`` as a new version 2 gallery at ``folder``, atomically.

    The whole folder is built under a temporary name beside ``folder`` and renamed
    into place; an existing gallery there is replaced only once the new one is
    complete (its derived data is not carried over: derived data is rebuilt).

    Args:
        folder: the gallery folder.
        records: the entries; backbones without any present row are dropped.
        shard_rows: rows per Parquet shard.
        extra: more manifest fields (e.g. ``{"note": ...}``).
        corrections: must-links, cannot-links and names to store with the entries
            (``cmce.storage.corrections``); every id must be among ``records``.

    Returns:
        The folder.

    Raises:
        UnknownEntryError, ContradictionError, CorrectionError: ``corrections`` that do
            not fit ``records`` (see ``check_corrections``); nothing is written.
    """
    dest = Path(folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    keep = [k for k in records.backbones if records.present[k].any()]
    if corrections is not None:
        check_corrections(corrections, set(records.entry_id.tolist()), str(dest))
    records = replace(records, backbones={k: records.backbones[k] for k in keep},
                      embeddings={k: records.embeddings[k] for k in keep},
                      present={k: records.present[k] for k in keep})
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp"))
    try:
        (tmp / "shards").mkdir()
        manifest = _new_manifest(records)
        manifest.update(extra or {})
        for i, start in enumerate(range(0, max(len(records), 1), shard_rows)):
            if len(records) == 0:
                break
            rows = slice(start, min(start + shard_rows, len(records)))
            name = f"shards/entries-{i:06d}.parquet"
            _write_parquet(_entry_table(records, rows, keep), tmp / name)
            manifest["shards"].append({"file": name, "kind": "entries", "rows": rows.stop - rows.start,
                                       "backbones": keep, "bytes": (tmp / name).stat().st_size})
        if corrections is not None:
            write_corrections_file(tmp, manifest, corrections)
        write_manifest(tmp, manifest)
        tmp.chmod(0o755)
        swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def create_empty_gallery(folder: str | os.PathLike) -> Path:
    """Make ``folder`` an empty version 2 gallery in place, under its lock; returns it.

    Unlike ``write_gallery`` nothing is swapped in, so jobs that start on a new folder at
    the same time share one gallery: the first creates it, the others find it.

    Raises:
        GalleryError: ``folder`` is a file, or a folder with other files in it
            (only a job's ``staging/`` may be there already).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GalleryError(f"{folder} is a file; choose a new folder or an existing gallery")
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder):
        if (folder / "manifest.json").is_file():
            return folder  # another job created it first
        if any(p.name not in ("staging", ".lock") for p in folder.iterdir()):
            raise GalleryError(f"{folder} exists and is not a gallery; choose a new folder or an existing gallery")
        (folder / "shards").mkdir()
        write_manifest(folder, _new_manifest(GalleryRecords.empty()))
    return folder


def append_entries(folder: str | os.PathLike, records: GalleryRecords, *,
                   corrections: Corrections | None = None) -> int:
    """Add new entries to a gallery as one new shard, without rewriting the others.

    Idempotent: entries whose id the gallery already holds are skipped, so a re-run
    of an interrupted indexing job (or a retried worker) writes no face twice. The
    shard is written and renamed before the manifest lists it.

    Args:
        folder: a version 2 gallery (created empty by ``write_gallery`` first).
        records: the new entries with their raw embeddings.
        corrections: when given, they become the gallery's corrections in the same manifest
            write that lists the new shard (an interrupted call leaves the old entries with
            the old corrections, or the new with the new); every id must be stored or new.

    Returns:
        The number of entries written.

    Raises:
        GalleryError: a backbone key whose embedding size differs from the stored one.
        UnknownEntryError, ContradictionError, CorrectionError: ``corrections`` that do not
            fit the entries (see ``check_corrections``); nothing is written.
    """
    folder = Path(folder)
    with locked(folder):
        manifest = require_manifest(folder)
        for key, rec in records.backbones.items():
            known = manifest["backbones"].get(key)
            if known and int(known["dim"]) != rec.dim:
                raise GalleryError(f"{folder}: holds {key} as {known['dim']}-d, not {rec.dim}-d")
        stored = _stored_ids(folder, manifest)
        new = np.array([e not in stored for e in records.entry_id], bool)
        if len(set(records.entry_id[new].tolist())) != int(new.sum()):
            raise GalleryError("append_entries: an entry id appears twice among the new entries")
        if corrections is not None:
            check_corrections(corrections, stored | set(records.entry_id[new].tolist()), str(folder))
        pause("append-start")
        if not new.any():
            if corrections is not None and corrections != corrections_of(folder, manifest):
                _replace_corrections(folder, manifest, corrections)
            return 0
        records = records.take(new)
        keys = [k for k in records.backbones if records.present[k].any()]
        name = f"shards/entries-{_next_shard_number(manifest):06d}.parquet"
        (folder / "shards").mkdir(exist_ok=True)
        _write_parquet(_entry_table(records, slice(0, len(records)), keys), folder / name)
        for k in keys:
            manifest["backbones"][k] = records.backbones[k].to_dict()
        manifest["shards"].append({"file": name, "kind": "entries", "rows": len(records), "backbones": keys,
                                   "bytes": (folder / name).stat().st_size})
        manifest["entries"] = int(manifest.get("entries", 0)) + len(records)
        pause("append-written")
        if corrections is not None:
            _replace_corrections(folder, manifest, corrections)
        else:
            write_manifest(folder, manifest)
    return len(records)


def _replace_corrections(folder: Path, manifest: dict, corrections: Corrections) -> None:
    """Under the gallery's lock: the corrections file written, the manifest (with any other change) written
    once, then the previous corrections files deleted."""
    old = write_corrections_file(folder, manifest, corrections)
    pause("corrections-written")
    write_manifest(folder, manifest)
    pause("corrections-listed")
    for name in old:
        (folder / name).unlink(missing_ok=True)


def append_embeddings(folder: str | os.PathLike, record: BackboneRecord, entry_ids: Sequence[str],
                      vectors: np.ndarray) -> str:
    """Add one backbone's embeddings for entries the gallery already holds (backfill).

    The rows go to a new shard, written and renamed before the manifest lists it, so
    a reader sees all of them or none, and an interrupted call changes nothing.

    Args:
        folder: a version 2 gallery.
        record: the backbone (its key must not clash with other weights of that name).
        entry_ids: (n,) ids of existing entries.
        vectors: (n, D) float32 unit vectors.

    Returns:
        The new shard's file name.
    """
    folder = Path(folder)
    vectors = np.asarray(vectors, np.float32)
    if vectors.shape != (len(entry_ids), record.dim):
        raise GalleryError(f"append_embeddings: vectors {vectors.shape}, expected ({len(entry_ids)}, {record.dim})")
    pa, _ = require_pyarrow()
    with locked(folder):
        manifest = require_manifest(folder)
        known = manifest["backbones"].get(record.key)
        if known and int(known["dim"]) != record.dim:
            raise GalleryError(f"{folder}: holds {record.key} as {known['dim']}-d, not {record.dim}-d")
        name = f"shards/embeddings-{_next_shard_number(manifest):06d}.parquet"
        table = pa.table({"entry_id": pa.array(list(entry_ids), pa.string()),
                          f"emb:{record.key}": _embedding_column(vectors, record.dim)})
        (folder / "shards").mkdir(exist_ok=True)
        _write_parquet(table, folder / name)
        manifest["backbones"][record.key] = record.to_dict()
        manifest["shards"].append({"file": name, "kind": "embeddings", "rows": len(entry_ids),
                                   "backbones": [record.key], "bytes": (folder / name).stat().st_size})
        write_manifest(folder, manifest)
    return name


def _stored_ids(folder: Path, manifest: dict) -> set[str]:
    """The entry ids of a gallery's entry shards (only that column is read)."""
    keys = StoredKeys()
    keys.update(folder, manifest)
    return keys.ids
