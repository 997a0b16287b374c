"""Parquet shards: record columns as Arrow tables, written atomically, read back with their checks.

An entry shard holds one row per face (id, content hash, source, uri, label, detection
record, thumbnail, image quality: ``face_px``, ``sharpness``, ``exposure``) and the raw
embedding of every backbone it holds, in a column ``emb:<key>`` of fixed_size_binary(4 D)
values (D little-endian float32, null where missing). Files are written under a
temporary name and renamed, and every data page carries a CRC32 checked on reading; a
listed file is also checked against the size the manifest gives.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.storage.manifest import MANIFEST
from cmce.storage.records import IMAGE_QUALITY_COLUMNS, BackboneRecord, GalleryRecords

__all__ = ["SHARD_ROWS", "join_embedding_pieces", "read_shard", "require_pyarrow"]

SHARD_ROWS = 100_000


def require_pyarrow():
    """``(pyarrow, pyarrow.parquet)``, imported on first use.

    Raises:
        GalleryError: pyarrow is not installed (the message says how to install it).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is in requirements.txt
        raise GalleryError("reading and writing galleries needs pyarrow: pip install pyarrow") from e
    return pa, pq


def _entry_table(records: GalleryRecords, rows: slice, keys: Sequence[str]):
    """The entry-shard table of ``records[rows]`` with the embedding columns of ``keys``."""
    pa, _ = require_pyarrow()

    def fixed(values: np.ndarray, width: int, dtype, mask: np.ndarray | None = None):
        flat = pa.array(np.ascontiguousarray(values, dtype=dtype).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, width, mask=None if mask is None else pa.array(mask))

    columns = {
        "entry_id": pa.array(records.entry_id[rows].tolist(), pa.string()),
        "content_hash": pa.array(records.content_hash[rows].tolist(), pa.string()),
        "source": pa.array(records.source[rows].tolist(), pa.string()),
        "uri": pa.array(records.uri[rows].tolist(), pa.string()),
        "label": pa.array(records.label[rows].tolist(), pa.string()),
        "box": fixed(records.box[rows], 4, np.float32),
        "landmarks": fixed(records.landmarks[rows], 10, np.float32),
        "probability": pa.array(np.asarray(records.probability[rows], np.float32)),
        "image_size": fixed(records.image_size[rows], 2, np.int32),
        "thumbnail": pa.array(records.thumbnail[rows].tolist(), pa.binary()),
        "detector": pa.array(records.detector[rows].tolist(), pa.string()),
        "detection_pass": pa.array(records.detection_pass[rows].tolist(), pa.string()),
        **{name: pa.array(np.asarray(getattr(records, name)[rows], np.float32)) for name in IMAGE_QUALITY_COLUMNS},
    }
    for key in keys:
        rec = records.backbones[key]
        columns[f"emb:{key}"] = _embedding_column(records.embeddings[key][rows], rec.dim, records.present[key][rows])
    return pa.table(columns)


def _embedding_column(vectors: np.ndarray, dim: int, present: np.ndarray | None = None):
    """(n, D) float32 as one fixed-size binary value per row (little-endian float32 x D).

    One value per row decodes about 7x faster than a Parquet list of D floats, whose
    repetition levels are read value by value. Rows not ``present`` are null.
    """
    pa, _ = require_pyarrow()
    data = np.ascontiguousarray(vectors, dtype="<f4").reshape(len(vectors), dim)
    validity = None
    if present is not None and not np.all(present):
        validity = pa.array(np.asarray(present, bool)).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * dim), len(data), [validity, pa.py_buffer(data.tobytes())])


def _embedding_chunks(column, dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """An embedding column as (n_i, D) float32 pieces with (n_i,) validity, one per chunk.

    Chunks without nulls are read-only views of the column's buffers (no copy; callers
    concatenate once); null rows become zeros.
    """
    pa, _ = require_pyarrow()
    out = []
    for arr in (column.chunks if hasattr(column, "chunks") else [column]):
        n = len(arr)
        if arr.type != pa.binary(4 * dim):
            raise GalleryError(f"embedding column of type {arr.type}, expected fixed_size_binary[{4 * dim}]")
        if n == 0:
            continue
        raw = np.frombuffer(arr.buffers()[1], dtype="<f4", count=(arr.offset + n) * dim)[arr.offset * dim :]
        raw = raw.reshape(n, dim)
        if arr.null_count == 0:
            out.append((raw, np.ones(n, bool)))
            continue
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
        values = raw.astype(np.float32, copy=True)
        values[~valid] = 0
        out.append((values, valid))
    return out


def join_embedding_pieces(pieces: list[tuple[np.ndarray, np.ndarray]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (values, validity) pieces into one writable copy.

    Args:
        pieces: ``(n_i, D)`` float32 values with ``(n_i,)`` bool validity, as ``read_shard``
            gives them per embedding column.
        dim: D, for the shape of an empty result.

    Returns:
        ``(sum n_i, D)`` float32 values (zeros where not valid) and ``(sum n_i,)`` validity.
    """
    if not pieces:
        return np.zeros((0, dim), np.float32), np.zeros(0, bool)
    return np.concatenate([v for v, _ in pieces]), np.concatenate([p for _, p in pieces])


def _write_parquet(table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (a temporary name, fsync, rename), with page CRCs."""
    _, pq = require_pyarrow()
    # embeddings barely compress; the text and thumbnail columns do
    compression = {c: ("none" if c.startswith("emb:") else "zstd") for c in table.column_names}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: a zombie retry cannot clash
    try:
        pq.write_table(table, tmp, compression=compression, row_group_size=SHARD_ROWS, write_page_checksum=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _listed_file(folder: Path, info: dict, name: str) -> Path:
    """The path of a file the manifest lists, present and of the listed size; else a GalleryError naming it."""
    path = folder / info["file"]
    if not path.is_file():
        raise GalleryError(f"{folder}: {name} is listed in {MANIFEST} but missing")
    size = info.get("bytes")
    if size is not None and path.stat().st_size != size:
        raise GalleryError(f"{folder}: {name} is corrupt ({path.stat().st_size} bytes, {MANIFEST} says {size})")
    return path


def read_shard(folder: Path, info: dict, backbones: dict[str, BackboneRecord], metadata: bool = True):
    """One shard the manifest lists, checked, with its embeddings decoded.

    Args:
        folder: the gallery.
        info: the shard's manifest entry (``file``, ``kind``, ``rows``, ``backbones``, ``bytes``).
        backbones: the manifest's backbones by key (for each embedding size D).
        metadata: False reads only what re-projection needs: ``entry_id``, ``probability``
            (entry shards) and the embedding columns.

    Returns:
        The ``pyarrow.Table`` and, per backbone key the shard holds, its embedding column as
        ``(values, validity)`` pieces (see ``join_embedding_pieces``).

    Raises:
        GalleryError: the file is missing, of another size than listed, damaged (a page
            CRC or the schema), of another row count, or lacks a listed embedding column.
    """
    _, pq = require_pyarrow()
    path = _listed_file(folder, info, f"shard {info['file']}")
    try:  # every data page carries a CRC32, verified while decoding
        columns = None
        if not metadata:  # what re-projection needs: ids, detector probabilities, embeddings
            columns = ["entry_id"] + ([] if info.get("kind") == "embeddings" else ["probability"])
            columns += [f"emb:{k}" for k in info.get("backbones", [])]
        table = pq.read_table(path, columns=columns, page_checksum_verification=True, memory_map=True)
        table.column_names  # a damaged schema fails here (field names that do not decode)
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise GalleryError(f"{folder}: shard {info['file']} is corrupt or cannot be read ({e})") from e
    if table.num_rows != info.get("rows"):
        raise GalleryError(f"{folder}: shard {info['file']} has {table.num_rows} rows, {MANIFEST} says {info.get('rows')}")
    emb = {}
    for key in info.get("backbones", []):
        col = f"emb:{key}"
        if col not in table.column_names or key not in backbones:
            raise GalleryError(f"{folder}: shard {info['file']} lacks the {key} embeddings its manifest lists")
        emb[key] = _embedding_chunks(table.column(col), backbones[key].dim)
    return table, emb


def _read_columns(folder: Path, info: dict, columns: list[str]):
    """Some columns of a file the manifest lists; a damaged file is a GalleryError naming it."""
    _, pq = require_pyarrow()
    path = _listed_file(folder, info, info["file"])
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise GalleryError(f"{folder}: {info['file']} is corrupt or cannot be read ({e})") from e
