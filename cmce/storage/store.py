"""The on-disk gallery format: raw per-backbone embeddings as the source of truth.

A gallery folder (format version 2)::

    GALLERY/
      manifest.json                      format, version, backbones by weights checksum,
                                         the shards in order, the derived data in use
      shards/entries-000000.parquet      one row per face: id, content hash, source, uri,
                                         label, detection record, thumbnail, and the raw
                                         embedding of every backbone this shard holds
                                         (column ``emb:<key>``: fixed_size_binary of D
                                         little-endian float32, null where missing)
      shards/embeddings-000001.parquet   rows added later for entries already stored
                                         (``entry_id`` + one backbone's embedding: backfill)
      derived/<bundle fingerprint>/      fused vectors, uncertainty, quality and the search
                                         index for one bundle: rebuildable from the shards
      skipped/skipped-000000.parquet     files an indexing job read but made no entry of
                                         (uri, source, content hash or null, reason)
      staging/<batch key>.*.parquet      a running job's finished batches, not yet committed:
                                         never read as part of the gallery

Raw embeddings are keyed by backbone *and* weights checksum (``sface@0d2a97b4c1f3``):
two versions of one model never mix. An entry may lack a backbone (a library indexed
long ago by one model); its column is null there. Fused vectors and indexes are
derived data: they are rebuilt whenever the serving bundle changes, and a derived
folder is used only if its bundle fingerprint and shard list match the manifest.

Writes are atomic: a shard or derived folder is written under a temporary name and
renamed, and only then listed in ``manifest.json`` (with its size), which is itself
replaced atomically; every Parquet data page carries a CRC32 checked on reading. A reader therefore never sees a half-written shard, and an interrupted
write leaves the previous gallery intact.

Indexing jobs (``cmce.pipeline``) write each finished batch under ``staging/`` (temporary
name, then renamed: a retried batch rewrites the same name with the same rows) and
the driver commits staged batches in groups (``commit_staged``): rows whose entry id
is already stored are dropped, the rest become new shards, and one manifest write
lists them. Files read without a face, or unreadable, go to ``skipped/`` tables listed
under the manifest's optional ``"skipped"`` key, so a re-run skips their content too.
That key was added without a version bump: a cmce that predates it reads such a
gallery exactly as before (it reads only ``backbones``, ``shards`` and ``derived``),
and ``write_gallery`` (``Gallery.save``) writes a manifest without it, after which a
re-run reads those files again. Version 1 galleries (``gallery.json`` +
``embeddings.npz``) are read and converted in memory; saving writes version 2.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cmce.cache import atomic_write_bytes
from cmce.errors import GalleryError

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BackboneRecord",
    "DerivedData",
    "GalleryRecords",
    "StoredGallery",
    "CommitReport",
    "StoredKeys",
    "append_embeddings",
    "append_entries",
    "commit_staged",
    "read_skipped",
    "remove_orphans",
    "skipped_table",
    "staged_files",
    "stored_keys",
    "write_staged",
    "backbone_key",
    "backbone_record",
    "is_gallery",
    "read_derived",
    "read_gallery",
    "read_manifest",
    "write_derived",
    "write_gallery",
]

FORMAT = "cmce-gallery"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SHARD_ROWS = 100_000
_V1_FILES = ("gallery.json", "embeddings.npz")


def _require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is in requirements.txt
        raise GalleryError("reading and writing galleries needs pyarrow: pip install pyarrow") from e
    return pa, pq


def backbone_key(name: str, sha256: str | None) -> str:
    """The key of one backbone's raw embeddings: name and weights checksum.

    >>> backbone_key("sface", "0d2a97b4c1f3aa")
    'sface@0d2a97b4c1f3'
    >>> backbone_key("facenet-vggface2", None)
    'facenet-vggface2@unpinned'
    """
    return f"{name}@{sha256[:12] if sha256 else 'unpinned'}"


@dataclass(frozen=True)
class BackboneRecord:
    """A backbone whose raw embeddings a gallery holds.

    Attributes:
        name: registry name.
        sha256: checksum of the weights that made the embeddings (None: unpinned).
        dim: embedding size D.
    """

    name: str
    sha256: str | None
    dim: int

    @property
    def key(self) -> str:
        return backbone_key(self.name, self.sha256)

    def to_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "dim": self.dim}


def backbone_record(name: str) -> BackboneRecord:
    """The record of an installed backbone, from the weights table."""
    from cmce.models.backbones import get_spec

    spec = get_spec(name)
    return BackboneRecord(name, spec.sha256, spec.embedding_size)


@dataclass
class GalleryRecords:
    """Every entry of a gallery as columns (no Python object per entry).

    Attributes:
        entry_id: (N,) str, ``<content hash>:<face number>``; unique.
        content_hash: (N,) str, sha256 of the photo's bytes.
        source: (N,) str, the file name shown to users.
        uri: (N,) str or None, where the photo can be read again (backfill); None
            for uploads that were not kept.
        label: (N,) str or None, identity label.
        box: (N, 4) float32, ``x1, y1, x2, y2`` in the photo's pixels.
        landmarks: (N, 5, 2) float32.
        probability: (N,) float32, the detector's probability.
        image_size: (N, 2) int32, ``width, height``.
        thumbnail: (N,) bytes or None, a small JPEG for display.
        backbones: key -> BackboneRecord, every backbone with embeddings here.
        embeddings: key -> (N, D) float32; rows of entries lacking it are zero.
        present: key -> (N,) bool, which entries hold that backbone's embedding.
        detector: (N,) str, the detector that found the face (``cmce.faces.Face``);
            None fills in ``"mtcnn"``, as do shards written before the column existed.
        detection_pass: (N,) str, the pass that found it (``"first"``, ``"padded"``,
            ``"normalised"``, ``"whole-image"``); None and older shards: ``"first"``.
    """

    entry_id: np.ndarray
    content_hash: np.ndarray
    source: np.ndarray
    uri: np.ndarray
    label: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    probability: np.ndarray
    image_size: np.ndarray
    thumbnail: np.ndarray
    backbones: dict[str, BackboneRecord] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    detector: np.ndarray | None = None
    detection_pass: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.entry_id)
        if self.detector is None:  # before detection passes existed every face was MTCNN's first pass
            self.detector = np.full(n, "mtcnn", dtype=object)
        if self.detection_pass is None:
            self.detection_pass = np.full(n, "first", dtype=object)
        for name in ("content_hash", "source", "uri", "label", "box", "landmarks", "probability",
                     "image_size", "thumbnail", "detector", "detection_pass"):
            if len(getattr(self, name)) != n:
                raise GalleryError(f"gallery records: {name} has {len(getattr(self, name))} rows, entry_id {n}")
        for key, rec in self.backbones.items():
            emb, pres = self.embeddings.get(key), self.present.get(key)
            if emb is None or pres is None or emb.shape != (n, rec.dim) or pres.shape != (n,):
                raise GalleryError(
                    f"gallery records: embeddings of {key} must be ({n}, {rec.dim}) with a ({n},) presence mask"
                )

    def __len__(self) -> int:
        return len(self.entry_id)

    @classmethod
    def empty(cls) -> GalleryRecords:
        obj = np.array([], dtype=object)
        return cls(obj, obj.copy(), obj.copy(), obj.copy(), obj.copy(), np.zeros((0, 4), np.float32),
                   np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.int32), obj.copy())
    def take(self, rows: np.ndarray) -> GalleryRecords:
        """The records of ``rows`` (indices or a bool mask), in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        return GalleryRecords(
            self.entry_id[rows], self.content_hash[rows], self.source[rows], self.uri[rows], self.label[rows],
            self.box[rows], self.landmarks[rows], self.probability[rows], self.image_size[rows], self.thumbnail[rows],
            dict(self.backbones), {k: v[rows] for k, v in self.embeddings.items()},
            {k: v[rows] for k, v in self.present.items()}, self.detector[rows], self.detection_pass[rows],
        )

    def face(self, i: int):
        """Entry ``i``'s detection as a ``cmce.faces.Face``."""
        from cmce.faces.geometry import Face

        return Face(tuple(float(v) for v in self.box[i]), float(self.probability[i]),
                    tuple((float(x), float(y)) for x, y in self.landmarks[i]),
                    (int(self.image_size[i][0]), int(self.image_size[i][1])), self.source[i],
                    detector=str(self.detector[i] or "mtcnn"), detection_pass=str(self.detection_pass[i] or "first"))


@dataclass(frozen=True)
class DerivedData:
    """What one bundle derives from a gallery's raw embeddings (rebuildable).

    Attributes:
        fingerprint: the bundle's fingerprint (see ``cmce.gallery.bundle_fingerprint``).
        bundle: ``{"query": ..., "gallery": [...], "source": ...}`` for messages.
        members: member names of the ensemble (gallery models, then ``"query"``).
        member_present: (N, M) bool, which members each entry was fused from.
        uncertainty: (N,) float32 (NaN: fewer than two members to compare).
        quality: (N,) float32, the bundle's quality score.
        index_path: the ensemble's saved ``VectorIndex`` (``index.npz``).
        seconds: how long building it took.
    """

    fingerprint: str
    bundle: Mapping[str, Any]
    members: tuple[str, ...]
    member_present: np.ndarray
    uncertainty: np.ndarray
    quality: np.ndarray
    index_path: Path
    seconds: float = 0.0


@dataclass(frozen=True)
class StoredGallery:
    """A gallery read from disk: its manifest and its records.

    Attributes:
        folder: where it was read from.
        manifest: the manifest (version 2; a converted one for version 1).
        records: every entry.
        converted_from: 1 when the folder was in the version 1 format, else None.
    """

    folder: Path
    manifest: dict
    records: GalleryRecords
    converted_from: int | None = None

    @property
    def derived(self) -> dict | None:
        return self.manifest.get("derived")


# --------------------------------------------------------------------------- manifest


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_gallery(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved gallery (any version)."""
    f = Path(folder)
    return (f / MANIFEST).is_file() or all((f / n).is_file() for n in _V1_FILES)


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise GalleryError(f"{folder}: not a saved gallery ({MANIFEST} missing)") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GalleryError(f"{folder}: corrupt gallery ({MANIFEST} is not valid JSON: {e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GalleryError(f"{folder}: {MANIFEST} is not a cmce gallery manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise GalleryError(
            f"{folder}: gallery format version {version!r}; this cmce reads versions 1 and {FORMAT_VERSION}"
            + (" (upgrade cmce to read it)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )
    for key in ("backbones", "shards"):
        if not isinstance(manifest.get(key), (dict if key == "backbones" else list)):
            raise GalleryError(f"{folder}: corrupt gallery ({MANIFEST} lacks '{key}')")
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """A gallery's manifest alone (None for a version 1 gallery, which has none).

    Raises:
        GalleryError: not a gallery, or a corrupt or unknown-version manifest.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file() and all((folder / n).is_file() for n in _V1_FILES):
        return None
    return _read_manifest(folder)


def _write_manifest(folder: Path, manifest: dict) -> None:
    manifest = dict(manifest, updated=_now())
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time per gallery folder (an advisory lock file)."""
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def shards_signature(manifest: dict) -> list[str]:
    """The shard files in order: a derived folder is valid only for this list."""
    return [s["file"] for s in manifest.get("shards", [])]


# --------------------------------------------------------------------------- shards


def _entry_table(records: GalleryRecords, rows: slice, keys: Sequence[str]):
    pa, _ = _require_pyarrow()

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
    pa, _ = _require_pyarrow()
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
    pa, _ = _require_pyarrow()
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


def _join(pieces: list[tuple[np.ndarray, np.ndarray]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (values, validity) pieces into one writable copy."""
    if not pieces:
        return np.zeros((0, dim), np.float32), np.zeros(0, bool)
    return np.concatenate([v for v, _ in pieces]), np.concatenate([p for _, p in pieces])


def _write_parquet(table, path: Path) -> None:
    _, pq = _require_pyarrow()
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


def _fixed_to_numpy(column, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A FixedSizeList column as (N, width) values and (N,) validity (nulls -> zeros)."""
    pa, _ = _require_pyarrow()
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


def _read_shard(folder: Path, info: dict, backbones: dict[str, BackboneRecord], metadata: bool = True):
    _, pq = _require_pyarrow()
    path = folder / info["file"]
    if not path.is_file():
        raise GalleryError(f"{folder}: shard {info['file']} is listed in {MANIFEST} but missing")
    size = info.get("bytes")
    if size is not None and path.stat().st_size != size:
        raise GalleryError(f"{folder}: shard {info['file']} is corrupt ({path.stat().st_size} bytes, "
                           f"{MANIFEST} says {size})")
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


def _records_from_tables(tables: list, embs: list[dict], backbones: dict[str, BackboneRecord],
                         metadata: bool = True) -> GalleryRecords:
    pa, _ = _require_pyarrow()
    if not tables:
        out = GalleryRecords.empty()
        out.backbones = dict(backbones)
        out.embeddings = {k: np.zeros((0, b.dim), np.float32) for k, b in backbones.items()}
        out.present = {k: np.zeros(0, bool) for k in backbones}
        return out
    # shards may hold different backbones: the embeddings come from ``embs``, the rest is concatenated;
    # shards written before the detection columns existed get them filled (MTCNN, first pass)
    if metadata:
        tables = [_with_detection_columns(t) for t in tables]
    table = pa.concat_tables([t.select([c for c in t.column_names if not c.startswith("emb:")]) for t in tables])
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
        embeddings[key], present[key] = _join(pieces, rec.dim)
    return GalleryRecords(
        strings("entry_id"), strings("content_hash"), strings("source"), strings("uri"), strings("label"),
        box, lm.reshape(n, 5, 2), table.column("probability").to_numpy().astype(np.float32), size,
        strings("thumbnail"), dict(backbones), embeddings, present,
        strings("detector") if metadata else None, strings("detection_pass") if metadata else None,
    )


def _with_detection_columns(table):
    """``table`` with the ``detector`` and ``detection_pass`` columns, filled where it lacks them.

    Shards written before these columns existed hold MTCNN's first-pass faces only.
    """
    pa, _ = _require_pyarrow()
    for name, default in (("detector", "mtcnn"), ("detection_pass", "first")):
        if name not in table.column_names:
            table = table.append_column(name, pa.array([default] * table.num_rows, pa.string()))
    return table


# --------------------------------------------------------------------------- read


def read_gallery(folder: str | os.PathLike, *, metadata: bool = True) -> StoredGallery:
    """Read every entry and raw embedding of a saved gallery.

    Version 1 galleries are converted in memory (saving writes version 2).

    Args:
        folder: the gallery.
        metadata: False reads only what re-projection needs (entry ids, detector
            probabilities, embeddings); the other columns come back empty (None or
            zeros). Such records must not be written back.

    Raises:
        GalleryError: missing folder, not a gallery, unknown version, or a corrupt or
            missing shard; the message says which.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GalleryError(f"{folder}: no such gallery folder")
    if not (folder / MANIFEST).is_file() and all((folder / n).is_file() for n in _V1_FILES):
        return _read_v1(folder)
    manifest = _read_manifest(folder)
    try:
        backbones = {k: BackboneRecord(v["name"], v.get("sha256"), int(v["dim"]))
                     for k, v in manifest["backbones"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise GalleryError(f"{folder}: corrupt gallery ({MANIFEST} backbones: {e!r})") from e
    tables, embs, patches = [], [], []
    for info in manifest["shards"]:
        table, emb = _read_shard(folder, info, backbones, metadata)
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
                values, valid = _join(pieces, backbones[key].dim)
                records.embeddings[key][rows[valid]] = values[valid]
                records.present[key][rows[valid]] = True
    if len(set(records.entry_id.tolist())) != len(records):
        raise GalleryError(f"{folder}: corrupt gallery (an entry id appears twice)")
    return StoredGallery(folder, manifest, records)


def _read_v1(folder: Path) -> StoredGallery:
    """A version 1 gallery (``gallery.json`` + ``embeddings.npz``) converted in memory.

    Version 1 keyed embeddings by backbone name only; the weights were the ones the
    weights table pinned (bundles refused any other), so today's table gives the key.
    """
    from cmce.errors import BackboneError
    from cmce.models.backbones import get_spec

    try:
        meta = json.loads((folder / "gallery.json").read_text())
        with np.load(folder / "embeddings.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        entries = meta["entries"]
        removed = arrays["removed"].astype(bool)
        thumbs, offs = arrays["thumbnails"].tobytes(), arrays["thumbnail_offsets"]
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        raise GalleryError(f"{folder}: corrupt version 1 gallery ({e!r})") from e
    n = len(entries)
    seen: dict[str, int] = {}
    ids = []
    for d in entries:  # faces of one photo were stored in order: number them per photo
        ids.append(f"{d['content_hash']}:{seen.get(d['content_hash'], 0)}")
        seen[d["content_hash"]] = seen.get(d["content_hash"], 0) + 1
    records = GalleryRecords(
        entry_id=np.array(ids, dtype=object),
        content_hash=np.array([d["content_hash"] for d in entries], dtype=object),
        source=np.array([d["source"] for d in entries], dtype=object),
        uri=np.array([None] * n, dtype=object),
        label=np.array([d["label"] for d in entries], dtype=object),
        box=np.array([d["face"]["box"] for d in entries], np.float32).reshape(n, 4),
        landmarks=np.array([d["face"]["landmarks"] for d in entries], np.float32).reshape(n, 5, 2),
        probability=np.array([d["face"]["probability"] for d in entries], np.float32),
        image_size=np.array([d["face"]["image_size"] for d in entries], np.int32).reshape(n, 2),
        thumbnail=np.array([thumbs[offs[i] : offs[i + 1]] for i in range(n)] + [None], dtype=object)[:n],
    )
    for name in [k.removeprefix("emb::") for k in arrays if k.startswith("emb::")]:
        try:
            spec = get_spec(name)
        except BackboneError as e:
            raise GalleryError(f"{folder}: version 1 gallery holds embeddings of {name!r}, unknown here ({e})") from e
        values = arrays[f"emb::{name}"].astype(np.float32)
        if values.shape != (n, spec.embedding_size):
            raise GalleryError(f"{folder}: version 1 gallery: embeddings of {name} are {values.shape}, "
                               f"expected ({n}, {spec.embedding_size})")
        rec = BackboneRecord(name, spec.sha256, spec.embedding_size)
        records.backbones[rec.key] = rec
        records.embeddings[rec.key] = values
        records.present[rec.key] = np.ones(n, bool)
    records = records.take(~removed)
    manifest = _new_manifest(records)
    logger.info("%s: version 1 gallery read and converted in memory (%d entries)", folder, len(records))
    return StoredGallery(folder, manifest, records, converted_from=1)


# --------------------------------------------------------------------------- write


def _new_manifest(records: GalleryRecords) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _now(),
        "updated": _now(),
        "entries": len(records),
        "backbones": {k: b.to_dict() for k, b in records.backbones.items()},
        "shards": [],
        "derived": None,
    }


def write_gallery(folder: str | os.PathLike, records: GalleryRecords, *, shard_rows: int = SHARD_ROWS,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``records`` as a new version 2 gallery at ``folder``, atomically.

    The whole folder is built under a temporary name beside ``folder`` and renamed
    into place; an existing gallery there is replaced only once the new one is
    complete (its derived data is not carried over: derived data is rebuilt).

    Args:
        folder: the gallery folder.
        records: the entries; backbones without any present row are dropped.
        shard_rows: rows per Parquet shard.
        extra: more manifest fields (e.g. ``{"note": ...}``).

    Returns:
        The folder.
    """
    dest = Path(folder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    keep = [k for k in records.backbones if records.present[k].any()]
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
        _write_manifest(tmp, manifest)
        tmp.chmod(0o755)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; a previous ``dest`` is removed only after the swap."""
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def _next_shard_number(manifest: dict) -> int:
    return 1 + max([int(Path(s["file"]).stem.rsplit("-", 1)[1]) for s in manifest["shards"]] + [-1])


def _stored_ids(folder: Path, manifest: dict) -> set[str]:
    """The entry ids of a gallery's entry shards (only that column is read)."""
    keys = StoredKeys()
    keys.update(folder, manifest)
    return keys.ids


def _read_columns(folder: Path, info: dict, columns: list[str]):
    """Some columns of a file the manifest lists; a damaged file is a GalleryError naming it."""
    _, pq = _require_pyarrow()
    path = folder / info["file"]
    if not path.is_file():
        raise GalleryError(f"{folder}: {info['file']} is listed in {MANIFEST} but missing")
    size = info.get("bytes")
    if size is not None and path.stat().st_size != size:
        raise GalleryError(f"{folder}: {info['file']} is corrupt ({path.stat().st_size} bytes, {MANIFEST} says {size})")
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise GalleryError(f"{folder}: {info['file']} is corrupt or cannot be read ({e})") from e


def append_entries(folder: str | os.PathLike, records: GalleryRecords) -> int:
    """Add new entries to a gallery as one new shard, without rewriting the others.

    Idempotent: entries whose id the gallery already holds are skipped, so a re-run
    of an interrupted indexing job (or a retried worker) writes no face twice. The
    shard is written and renamed before the manifest lists it.

    Args:
        folder: a version 2 gallery (created empty by ``write_gallery`` first).
        records: the new entries with their raw embeddings.

    Returns:
        The number of entries written.

    Raises:
        GalleryError: a backbone key whose embedding size differs from the stored one.
    """
    folder = Path(folder)
    with _locked(folder):
        manifest = _read_manifest(folder)
        for key, rec in records.backbones.items():
            known = manifest["backbones"].get(key)
            if known and int(known["dim"]) != rec.dim:
                raise GalleryError(f"{folder}: holds {key} as {known['dim']}-d, not {rec.dim}-d")
        stored = _stored_ids(folder, manifest)
        new = np.array([e not in stored for e in records.entry_id], bool)
        if len(set(records.entry_id[new].tolist())) != int(new.sum()):
            raise GalleryError("append_entries: an entry id appears twice among the new entries")
        if not new.any():
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
        _write_manifest(folder, manifest)
    return len(records)


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
    pa, _ = _require_pyarrow()
    with _locked(folder):
        manifest = _read_manifest(folder)
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
        _write_manifest(folder, manifest)
    return name


# --------------------------------------------------------------------------- indexing jobs

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
    pa, _ = _require_pyarrow()
    return pa.table({"uri": pa.array(list(uri), pa.string()), "source": pa.array(list(source), pa.string()),
                     "content_hash": pa.array(list(content_hash), pa.string()),
                     "reason": pa.array(list(reason), pa.string())})


def write_staged(folder: str | os.PathLike, key: str, entries: GalleryRecords, skipped) -> list[str]:
    """Write one finished batch under ``staging/``, atomically; nothing lists it yet.

    Each file is written under a temporary name and renamed, so a staged file is
    whole or absent; writing the same ``key`` again (a retried batch) replaces it with
    the same rows. ``commit_staged`` makes it part of the gallery.

    Args:
        folder: the gallery.
        key: the batch's deterministic name (letters, digits, ``-`` and ``_``).
        entries: the batch's entries with every backbone's raw embedding.
        skipped: ``skipped_table`` rows of the batch's files without an entry.

    Returns:
        The staged files written (relative to ``folder``), entries first.
    """
    if not key or not all(c.isalnum() or c in "-_" for c in key):
        raise GalleryError(f"staged batch key {key!r}: use letters, digits, '-' and '_'")
    folder = Path(folder)
    (folder / STAGING).mkdir(exist_ok=True)
    names = []
    if len(entries):
        keys = [k for k in entries.backbones if entries.present[k].any()]
        table = _entry_table(entries, slice(0, len(entries)), keys)
        meta = json.dumps({k: entries.backbones[k].to_dict() for k in keys}).encode()
        names.append(f"{STAGING}/{key}.entries.parquet")
        _write_parquet(table.replace_schema_metadata({_BACKBONES_META: meta}), folder / names[-1])
    if skipped is not None and skipped.num_rows:
        names.append(f"{STAGING}/{key}.skipped.parquet")
        _write_parquet(skipped, folder / names[-1])
    return names


def staged_files(folder: str | os.PathLike) -> list[str]:
    """The complete staged files of ``folder`` (a previous job's, if it was interrupted), sorted.

    Temporary files of writes that never finished are removed.
    """
    root = Path(folder) / STAGING
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            path.unlink(missing_ok=True)  # a write interrupted before its rename
        elif path.name.endswith((".entries.parquet", ".skipped.parquet")):
            out.append(f"{STAGING}/{path.name}")
    return out


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
    keys.update(Path(folder), _read_manifest(Path(folder)))
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


def _next_number(manifest: dict, key: str) -> int:
    return 1 + max([int(Path(s["file"]).stem.rsplit("-", 1)[1]) for s in manifest.get(key, [])] + [-1])


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
    pa, pq = _require_pyarrow()
    folder = Path(folder)
    known = StoredKeys() if known is None else known
    added = dups = over = 0
    skipped: list[tuple[str, str]] = []
    shards: list[str] = []
    with _locked(folder):
        manifest = _read_manifest(folder)
        known.update(folder, manifest)
        stored = int(manifest.get("entries", len(known.ids)))
        done: list[Path] = []
        skipped_tables = []
        for name in names:
            path = folder / name
            if not path.is_file():
                continue
            try:
                table = pq.read_table(path, page_checksum_verification=True)
            except Exception as e:
                raise GalleryError(f"{folder}: staged file {name} cannot be read ({e})") from e
            done.append(path)
            if name.endswith(".skipped.parquet"):
                hashes = table.column("content_hash").to_pylist()
                keep = [h is None or h not in known.hashes for h in hashes]
                if not all(keep):
                    table = table.filter(pa.array(keep))
                known.hashes.update(h for h in table.column("content_hash").to_pylist() if h)
                skipped_tables.append(table)
                continue
            ids = table.column("entry_id").to_pylist()
            keep = np.array([i not in known.ids for i in ids], bool)
            seen_now: set[str] = set()
            for j, i in enumerate(ids):  # the same photo twice in one batch: its first copy
                if keep[j] and i in seen_now:
                    keep[j] = False
                seen_now.add(i)
            dups += int((~keep).sum())
            if max_entries is not None and stored + int(keep.sum()) > max_entries:
                keep, dropped = _fit_whole_photos(ids, keep, max_entries - stored)
                over += dropped
            if not keep.any():
                continue
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
            shards.append(shard)
            stored += n
            added += n
        rows = pa.concat_tables(skipped_tables) if skipped_tables else None
        if rows is not None and rows.num_rows:
            name = f"{SKIPPED}/skipped-{_next_number(manifest, SKIPPED):06d}.parquet"
            (folder / SKIPPED).mkdir(exist_ok=True)
            _write_parquet(rows, folder / name)
            manifest.setdefault(SKIPPED, []).append({"file": name, "rows": rows.num_rows,
                                                     "bytes": (folder / name).stat().st_size})
            known.files.add(name)
            skipped = list(zip(rows.column("source").to_pylist(), rows.column("reason").to_pylist()))
        if added or skipped:
            manifest["entries"] = stored
            _write_manifest(folder, manifest)
        for path in done:
            path.unlink(missing_ok=True)
    return CommitReport(added, dups, tuple(skipped), over, tuple(shards))


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
    """Remove shard and skipped files the manifest does not list (a commit interrupted
    between its rename and its manifest write); returns their names."""
    folder = Path(folder)
    removed = []
    with _locked(folder):
        manifest = _read_manifest(folder)
        listed = {s["file"] for s in manifest["shards"]} | {s["file"] for s in manifest.get(SKIPPED, [])}
        for sub in ("shards", SKIPPED):
            root = folder / sub
            if root.is_dir():
                for path in root.iterdir():
                    if f"{sub}/{path.name}" not in listed:
                        path.unlink(missing_ok=True)
                        removed.append(f"{sub}/{path.name}")
    return removed


def read_skipped(folder: str | os.PathLike):
    """Every skipped-files row of a gallery as one ``pyarrow.Table`` (uri, source, content_hash, reason)."""
    pa, _ = _require_pyarrow()
    folder = Path(folder)
    manifest = _read_manifest(folder)
    tables = [_read_columns(folder, info, ["uri", "source", "content_hash", "reason"])
              for info in manifest.get(SKIPPED, [])]
    return pa.concat_tables(tables) if tables else skipped_table([], [], [], [])


# --------------------------------------------------------------------------- derived


def write_derived(folder: str | os.PathLike, derived: DerivedData, index) -> Path:
    """Store one bundle's derived data and make it the gallery's current one.

    Written to ``derived/<fingerprint[:16]>`` under a temporary name, renamed, then
    the manifest is replaced; derived folders of other bundles are removed after.

    Args:
        folder: a version 2 gallery.
        derived: what to store (``index_path`` is ignored: the index goes inside).
        index: the ensemble's ``VectorIndex``.

    Returns:
        The derived folder.
    """
    folder = Path(folder)
    with _locked(folder):
        manifest = _read_manifest(folder)
        name = derived.fingerprint[:16]
        root = folder / "derived"
        root.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp"))
        try:
            np.savez(tmp / "scores.npz", member_present=derived.member_present,
                     uncertainty=derived.uncertainty, quality=derived.quality)
            index.save(tmp / "index.npz")
            (tmp / "meta.json").write_text(json.dumps({
                "fingerprint": derived.fingerprint, "bundle": dict(derived.bundle),
                "members": list(derived.members), "entries": int(len(derived.quality)),
                "shards": shards_signature(manifest), "seconds": derived.seconds, "built": _now(),
            }, indent=1))
            tmp.chmod(0o755)
            _swap_in(tmp, root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest["derived"] = {"path": f"derived/{name}", "fingerprint": derived.fingerprint,
                               "bundle": dict(derived.bundle), "shards": shards_signature(manifest)}
        _write_manifest(folder, manifest)
        for other in root.iterdir():
            if other.name != name:
                shutil.rmtree(other, ignore_errors=True)
    return root / name


def read_derived(stored: StoredGallery, fingerprint: str) -> DerivedData | None:
    """The stored derived data for a bundle, or None when absent or stale.

    Stale means: built for another bundle, or before shards were added.
    """
    info = stored.derived
    if not info or info.get("kind") == "archive" or info.get("fingerprint") != fingerprint or info.get("shards") != shards_signature(stored.manifest):
        return None
    path = stored.folder / info["path"]
    try:
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "scores.npz", allow_pickle=False) as z:
            present, unc, qual = z["member_present"], z["uncertainty"], z["quality"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        logger.warning("%s: derived data unreadable (%s); rebuilding it", stored.folder, e)
        return None
    if meta.get("fingerprint") != fingerprint or len(qual) != len(stored.records):
        return None
    return DerivedData(fingerprint, meta.get("bundle", {}), tuple(meta.get("members", ())), present.astype(bool),
                       unc.astype(np.float32), qual.astype(np.float32), path / "index.npz",
                       float(meta.get("seconds", 0.0)))
