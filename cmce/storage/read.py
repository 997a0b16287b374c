"""Reading a saved gallery: every shard into one ``GalleryRecords``, backfill shards applied.

A version 2 gallery is read shard by shard (entry shards concatenated, then the
embeddings of backfill shards written into their entries' rows); a version 1 gallery is
converted in memory (``cmce.storage.convert_v1``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.storage.convert_v1 import read_v1_gallery
from cmce.storage.corrections import corrections_of, names_in_shard_labels, own_labels
from cmce.storage.manifest import _V1_FILES, MANIFEST, require_manifest
from cmce.storage.records import (
    IMAGE_QUALITY_COLUMNS,
    BackboneRecord,
    GalleryRecords,
    StoredGallery,
)
from cmce.storage.shards import join_embedding_pieces, read_shard, require_pyarrow

__all__ = ["read_gallery"]


def read_gallery(folder: str | os.PathLike, *, metadata: bool = True, names_as_labels: bool = True) -> StoredGallery:
    """Read every entry and raw embedding of a saved gallery.

    Version 1 galleries are converted in memory (saving writes version 2). The
    gallery's corrections come with it (``StoredGallery.corrections``), and the names
    among them are the ``label`` of their entries (``cmce.storage.corrections``: a name
    overrides the label the shard holds).

    Args:
        folder: the gallery.
        metadata: False reads only what re-projection needs (entry ids, detector
            probabilities, embeddings); the other columns come back empty (None or
            zeros). Such records must not be written back.
        names_as_labels: False keeps the entries' own labels, those the shards hold (for a reader
            that shows the names itself and must show an own label again once a name is dropped;
            an old gallery's names in its shard labels are not own labels: ``own_labels``).

    Raises:
        GalleryError: missing folder, not a gallery, unknown version, or a corrupt or
            missing shard; the message says which.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GalleryError(f"{folder}: no such gallery folder")
    if not (folder / MANIFEST).is_file() and all((folder / n).is_file() for n in _V1_FILES):
        return read_v1_gallery(folder)
    manifest = require_manifest(folder)
    try:
        backbones = {k: BackboneRecord(v["name"], v.get("sha256"), int(v["dim"]))
                     for k, v in manifest["backbones"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise GalleryError(f"{folder}: corrupt gallery ({MANIFEST} backbones: {e!r})") from e
    tables, embs, patches = [], [], []
    for info in manifest["shards"]:
        table, emb = read_shard(folder, info, backbones, metadata)
        if info.get("kind") == "embeddings":
            patches.append((table, emb))
        else:
            tables.append(table)
            embs.append(emb)
    records = _records_from_tables(tables, embs, backbones, metadata)
    if patches:
        position = {eid: i for i, eid in enumerate(records.entry_id)}
        for table, emb in patches:
            rows = np.array([position.get(e, -1) for e in table.column("entry_id").to_pylist()], np.int64)
            if (rows < 0).any():
                raise GalleryError(f"{folder}: an embeddings shard names entries the gallery does not hold")
            for key, pieces in emb.items():
                values, valid = join_embedding_pieces(pieces, backbones[key].dim)
                records.embeddings[key][rows[valid]] = values[valid]
                records.present[key][rows[valid]] = True
    if len(set(records.entry_id.tolist())) != len(records):
        raise GalleryError(f"{folder}: corrupt gallery (an entry id appears twice)")
    corrections = corrections_of(folder, manifest)
    if metadata and corrections.names and names_in_shard_labels(manifest):  # an old gallery's names read as no label
        records.label[:] = own_labels(records.label.tolist(), corrections, manifest)
    if metadata and names_as_labels and corrections.names:
        named = [i for i, e in enumerate(records.entry_id.tolist()) if e in corrections.names]
        records.label[named] = [corrections.names[records.entry_id[i]] for i in named]
    return StoredGallery(folder, manifest, records, corrections=corrections)


def _fixed_to_numpy(column, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A FixedSizeList column as (N, width) values and (N,) validity (nulls -> zeros)."""
    pa, _ = require_pyarrow()
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    n = len(arr)
    valid = np.ones(n, bool) if arr.null_count == 0 else ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
    if arr.offset:
        arr = pa.concat_arrays([arr])  # a sliced array: flatten with its offset applied
    values = arr.values.to_numpy(zero_copy_only=False)[: n * width]
    out = np.asarray(values, dtype=dtype).reshape(n, width)
    if not valid.all():
        out = out.copy()
        out[~valid] = 0
    return out, valid


def _records_from_tables(tables: list, embs: list[dict], backbones: dict[str, BackboneRecord],
                         metadata: bool = True) -> GalleryRecords:
    """Entry shards' tables and decoded embeddings (``read_shard``) as one ``GalleryRecords``."""
    pa, _ = require_pyarrow()
    if not tables:
        out = GalleryRecords.empty()
        out.backbones = dict(backbones)
        out.embeddings = {k: np.zeros((0, b.dim), np.float32) for k, b in backbones.items()}
        out.present = {k: np.zeros(0, bool) for k in backbones}
        return out
    # shards may hold different backbones: the embeddings come from ``embs``, the rest is concatenated
    # (in one column order); shards written before the detection and image-quality columns existed
    # get them filled (MTCNN, first pass; not measured)
    if metadata:
        tables = [_with_added_columns(t) for t in tables]
    names = [c for c in tables[0].column_names if not c.startswith("emb:")]
    table = pa.concat_tables([t.select(names) for t in tables])
    n = table.num_rows

    def strings(name: str) -> np.ndarray:
        if not metadata and name != "entry_id":
            return np.empty(n, dtype=object)
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=object)

    if metadata:
        box, _ = _fixed_to_numpy(table.column("box"), 4, np.float32)
        lm, _ = _fixed_to_numpy(table.column("landmarks"), 10, np.float32)
        size, _ = _fixed_to_numpy(table.column("image_size"), 2, np.int32)
    else:
        box, lm, size = np.zeros((n, 4), np.float32), np.zeros((n, 10), np.float32), np.zeros((n, 2), np.int32)
    embeddings, present = {}, {}
    for key, rec in backbones.items():  # one copy per backbone: shards lacking it contribute zeros
        pieces = []
        for t, e in zip(tables, embs):
            pieces += e[key] if key in e else [(np.zeros((t.num_rows, rec.dim), np.float32), np.zeros(t.num_rows, bool))]
        embeddings[key], present[key] = join_embedding_pieces(pieces, rec.dim)
    return GalleryRecords(
        strings("entry_id"), strings("content_hash"), strings("source"), strings("uri"), strings("label"),
        box, lm.reshape(n, 5, 2), table.column("probability").to_numpy().astype(np.float32), size,
        strings("thumbnail"), dict(backbones), embeddings, present,
        strings("detector") if metadata else None, strings("detection_pass") if metadata else None,
        *(_floats(table, name) if metadata else None for name in IMAGE_QUALITY_COLUMNS),
    )


def _floats(table, name: str) -> np.ndarray:
    """A float32 column as (N,) float32, nulls as NaN."""
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), np.float32)


def _with_added_columns(table):
    """``table`` with the columns added to entry shards since version 2, filled where it lacks them.

    Shards written before ``detector`` and ``detection_pass`` existed hold MTCNN's
    first-pass faces only; before the image-quality columns (``IMAGE_QUALITY_COLUMNS``),
    nothing was measured: NaN.
    """
    pa, _ = require_pyarrow()
    for name, default in (("detector", "mtcnn"), ("detection_pass", "first")):
        if name not in table.column_names:
            table = table.append_column(name, pa.array([default] * table.num_rows, pa.string()))
    for name in IMAGE_QUALITY_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.array(np.full(table.num_rows, np.nan, np.float32)))
    return table
