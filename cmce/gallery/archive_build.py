"""Archive-scale derived data, built: galleries too big for the in-memory ``Gallery``.

``cmce.gallery.Gallery`` keeps every entry in RAM (about 7.2 KB per face): fine for the
demo and for a few million faces, not for a photo archive of tens of millions. For those,
the bundle's derived data is built by streaming over the gallery's Parquet shards, one
shard at a time (in-process, or one Ray task per shard), and searched without loading
the raw embeddings at all::

    GALLERY/derived/<fingerprint[:16]>/
      meta.json            kind "archive", bundle, members, entries, index kind, timings
      vectors.npy          (N, Dq) float16 fused ensemble vectors, row = position
      quality.npy          (N,) float32 the bundle's quality score (higher = less trustworthy)
      uncertainty.npy      (N,) float32 disagreement of the members (NaN: fewer than two)
      member_present.npy   (N, M) bool which members each entry was fused from
      active.npy           (N,) bool False where no member could be fused
      entries.arrow        entry_id, source, label, uri per position (Arrow IPC, memory-mapped)
      compact/             the ``CompactIndex`` (galleries from ``COMPACT_FROM`` entries)

Positions follow the manifest's entry shards in order, as ``read_gallery`` numbers them.
Like every derived folder it is rebuildable from the shards and is used only while its
bundle fingerprint and shard list match the manifest.

``cmce.gallery.archive.ArchiveGallery`` searches what is built here.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import CmceError, GalleryError
from cmce.gallery.persistence import bundle_description, bundle_fingerprint, bundle_inputs, check_servable
from cmce.method.bundle_model import Bundle
from cmce.search.compact import COMPACT_FROM, CompactIndex
from cmce.search.compact_config import CompactConfig
from cmce.search.vector_file import VectorFileWriter
from cmce.storage.manifest import MANIFEST, locked, require_manifest, shards_signature, swap_in, write_manifest
from cmce.storage.records import BackboneRecord
from cmce.storage.shards import join_embedding_pieces, read_shard, require_pyarrow

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVE_KIND",
    "ENTRY_COLUMNS",
    "INDEX_CHOICES",
    "META_FILE",
    "ArchiveBuildReport",
    "build_archive_index",
]

ARCHIVE_KIND = "archive"
"""``kind`` of an archive derived folder in ``manifest.json`` and its ``meta.json``."""

INDEX_CHOICES = ("auto", "exact", "compact")
"""``index`` values of :func:`build_archive_index`: ``auto`` is compact from ``COMPACT_FROM`` entries."""

META_FILE = "meta.json"
ENTRY_COLUMNS = ("entry_id", "source", "label", "uri")


@dataclass(frozen=True)
class ArchiveBuildReport:
    """What :func:`build_archive_index` did.

    Attributes:
        folder: the derived folder written.
        entries: positions (every entry of the gallery).
        unusable: entries with none of the bundle's members (kept out of every search).
        rejected: entries above the bundle's calibrated threshold (searches mark them
            doubtful; they are rejected only where a search is given a rejection mask).
        index: ``"exact"`` or ``"compact"``.
        projection_seconds: reading shards, transformers, fusion, scores (wall time).
        index_seconds: building the compact index (0 for exact: built on open).
        seconds: the whole build.
        workers: ``"in-process"`` or ``"ray"``.
    """

    folder: Path
    entries: int
    unusable: int
    rejected: int
    index: str
    projection_seconds: float
    index_seconds: float
    seconds: float
    workers: str

    def summary(self) -> str:
        return (f"{self.entries} entries projected in {self.projection_seconds:.1f} s ({self.workers}), "
                f"{self.index} index in {self.index_seconds:.1f} s; {self.rejected} over the calibrated threshold "
                f"(doubtful), "
                f"{self.unusable} without any member")


@dataclass(frozen=True)
class _ShardProjection:
    vectors: np.ndarray  # (n, Dq) float16, unit rows (placeholders where inactive)
    active: np.ndarray
    quality: np.ndarray
    uncertainty: np.ndarray
    member_present: np.ndarray
    members: tuple[str, ...]
    entries: object  # pyarrow.Table of ENTRY_COLUMNS


def _backbones(folder: Path, manifest: dict) -> dict[str, BackboneRecord]:
    try:
        return {k: BackboneRecord(v["name"], v.get("sha256"), int(v["dim"])) for k, v in manifest["backbones"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise GalleryError(f"{folder}: corrupt gallery ({MANIFEST} backbones: {e!r})") from e


def _project_shard(folder: str, info: dict, patches: Sequence[dict], backbones: dict[str, BackboneRecord],
                   bundle: Bundle) -> _ShardProjection:
    """Project one entries shard with the bundle (runs in-process or as a Ray task)."""
    folder = Path(folder)
    table, emb = read_shard(folder, info, backbones, metadata=False)
    ids = table.column("entry_id").to_pylist()
    embeddings, present = {}, {}
    for key, pieces in emb.items():
        embeddings[key], present[key] = join_embedding_pieces(pieces, backbones[key].dim)
    if patches:  # backfilled embeddings of these entries, from embeddings shards
        position = {e: i for i, e in enumerate(ids)}
        for patch in patches:
            ptable, pemb = read_shard(folder, patch, backbones, metadata=False)
            rows = np.array([position.get(e, -1) for e in ptable.column("entry_id").to_pylist()], np.int64)
            for key, pieces in pemb.items():
                values, valid = join_embedding_pieces(pieces, backbones[key].dim)
                take = valid & (rows >= 0)
                if not take.any():
                    continue
                if key not in embeddings:
                    embeddings[key] = np.zeros((len(ids), backbones[key].dim), np.float32)
                    present[key] = np.zeros(len(ids), bool)
                embeddings[key][rows[take]] = values[take]
                present[key][rows[take]] = True
    inputs, inputs_present = bundle_inputs(bundle, embeddings, present)
    prob = table.column("probability").to_numpy().astype(np.float32)
    vec = bundle.gallery_vectors(inputs, prob, inputs_present)
    active = vec.available["ensemble"].copy()
    fused = vec.ensemble.astype(np.float32, copy=True)
    fused[~active] = 0.0
    fused[~active, 0] = 1.0  # a unit placeholder; inactive positions are never returned
    _, pq = require_pyarrow()
    entries = pq.read_table(folder / info["file"], columns=list(ENTRY_COLUMNS), memory_map=True)
    return _ShardProjection(fused.astype(np.float16), active, vec.quality.astype(np.float32),
                            vec.uncertainty.astype(np.float32), np.asarray(vec.member_present, bool),
                            tuple(vec.members), entries)


def _projections(folder: Path, manifest: dict, bundle: Bundle, use_ray: bool,
                 in_flight: int) -> Iterator[_ShardProjection]:
    """Projections of the entry shards, in manifest order."""
    backbones = _backbones(folder, manifest)
    shards = [s for s in manifest["shards"] if s.get("kind") != "embeddings"]
    patches = [s for s in manifest["shards"] if s.get("kind") == "embeddings"]
    if not use_ray:
        for info in shards:
            yield _project_shard(str(folder), info, patches, backbones, bundle)
        return
    try:
        import ray
    except ImportError as e:  # pragma: no cover - guarded by the caller
        raise CmceError("use_ray needs Ray: pip install -r requirements-scale.txt") from e
    if not ray.is_initialized():
        raise CmceError("connect to a Ray cluster first (cmce.pipeline.connect_ray)")
    task = ray.remote(_project_shard).options(max_retries=3, retry_exceptions=False)
    bundle_ref = ray.put(bundle)
    futures = []
    for info in shards:  # a bounded window of shards in flight, results taken in order
        futures.append(task.remote(str(folder.resolve()), info, patches, backbones, bundle_ref))
        if len(futures) >= in_flight:
            yield ray.get(futures.pop(0))
    for f in futures:
        yield ray.get(f)


def build_archive_index(
    folder: str | os.PathLike,
    bundle: Bundle,
    *,
    index: str = "auto",
    config: CompactConfig = CompactConfig(),
    ray: str | None = None,
    in_flight: int = 4,
) -> ArchiveBuildReport:
    """Build a bundle's archive derived data by streaming over a gallery's shards.

    Only one shard's raw embeddings are in memory at a time (``in_flight`` with Ray);
    fused vectors go straight to a float16 file on disk, which the compact index is
    then trained on and filled from (no photo is read, no backbone runs). The derived
    folder is built under a temporary name and becomes the gallery's current derived
    data atomically; an interrupted build leaves the previous one in place.

    Args:
        folder: a version 2 gallery (see ``cmce.storage``).
        bundle: the serving bundle.
        index: ``"auto"`` (compact from ``COMPACT_FROM`` entries), ``"exact"`` or ``"compact"``.
        config: the compact index's settings.
        ray: project the shards as Ray tasks (one per shard) and build the compact index
            in a Ray task: ``"local"``, ``"auto"`` or a head's address (see
            ``cmce.pipeline.connect_ray``; a cluster this process already joined is
            reused). The gallery folder must be on a file system every node mounts at
            the same path. None: in this process.
        in_flight: shards projected at once with Ray.

    Raises:
        GalleryError: not a gallery, corrupt shards, a bundle that cannot serve it, or
            an empty gallery.
        CmceError: a bad ``index`` value; Ray missing or its cluster unreachable.
    """
    if index not in INDEX_CHOICES:
        raise CmceError(f"index must be one of {INDEX_CHOICES}, got {index!r}")
    if ray is None:
        return _build(folder, bundle, index, config, False, in_flight)
    from cmce.runtime import connect_ray

    started = connect_ray(ray)
    try:
        return _build(folder, bundle, index, config, True, in_flight)
    finally:
        if started:
            import ray as _ray

            _ray.shutdown()


def _build(folder: str | os.PathLike, bundle: Bundle, index: str, config: CompactConfig, use_ray: bool,
           in_flight: int) -> ArchiveBuildReport:
    start = time.perf_counter()
    folder = Path(folder)
    manifest = require_manifest(folder)
    n = sum(int(s["rows"]) for s in manifest["shards"] if s.get("kind") != "embeddings")
    if n == 0:
        raise GalleryError(f"{folder}: the gallery holds no entries; index photos into it first")
    check_servable(bundle, _backbones(folder, manifest), n, str(folder))
    kind = ("compact" if n >= COMPACT_FROM else "exact") if index == "auto" else index
    fingerprint = bundle_fingerprint(bundle)
    name = fingerprint[:16]
    root = folder / "derived"
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp"))
    pa, _ = require_pyarrow()
    try:
        written = _write_projections(tmp, folder, manifest, bundle, n, pa, use_ray, in_flight)
        projected = time.perf_counter()
        index_seconds = 0.0
        if kind == "compact":
            built = _build_compact(tmp, config, use_ray)
            index_seconds = time.perf_counter() - projected
            logger.info("compact index %s built in %.1f s", built, index_seconds)
        meta = {"kind": ARCHIVE_KIND, "index": kind, "fingerprint": fingerprint,
                "bundle": bundle_description(bundle), "members": list(written.members), "entries": n,
                "dim": int(written.dim), "shards": shards_signature(manifest), "projection_seconds": projected - start,
                "index_seconds": index_seconds, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)
        _swap_in_derived(folder, tmp, name, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = ArchiveBuildReport(root / name, n, written.unusable, written.rejected, kind, projected - start,
                                index_seconds, time.perf_counter() - start, "ray" if use_ray else "in-process")
    logger.info("%s", report.summary())
    return report


@dataclass(frozen=True)
class _Written:
    """What ``_write_projections`` wrote: the fused vectors' size, the members, and the counts."""

    dim: int
    members: tuple[str, ...]
    unusable: int
    rejected: int


def _write_projections(tmp: Path, folder: Path, manifest: dict, bundle: Bundle, n: int, pa, use_ray: bool,
                       in_flight: int) -> _Written:
    """Stream every shard's projection into ``tmp``: the vector file, the per-entry arrays and entries.arrow.

    Raises:
        GalleryError: the shards hold another number of entries than the manifest says.
    """
    dim = None
    writer = None
    quality = np.lib.format.open_memmap(tmp / "quality.npy", "w+", np.float32, (n,))
    uncertainty = np.lib.format.open_memmap(tmp / "uncertainty.npy", "w+", np.float32, (n,))
    active = np.lib.format.open_memmap(tmp / "active.npy", "w+", np.bool_, (n,))
    present = None
    members: tuple[str, ...] = ()
    done = 0
    with pa.OSFile(str(tmp / "entries.arrow"), "wb") as sink:
        entries_writer = None
        for proj in _projections(folder, manifest, bundle, use_ray, max(1, in_flight)):
            rows = slice(done, done + len(proj.active))
            if writer is None:
                dim, members = proj.vectors.shape[1], proj.members
                writer = VectorFileWriter(tmp / "vectors.npy", n, dim)
                present = np.lib.format.open_memmap(tmp / "member_present.npy", "w+", np.bool_, (n, len(members)))
                entries_writer = pa.ipc.new_file(sink, proj.entries.schema)
            writer.write(proj.vectors)
            quality[rows], uncertainty[rows], active[rows] = proj.quality, proj.uncertainty, proj.active
            present[rows] = proj.member_present
            entries_writer.write_table(proj.entries)
            done = rows.stop
            logger.info("archive index: %d / %d entries projected", done, n)
        if entries_writer is not None:
            entries_writer.close()
    if done != n:
        raise GalleryError(f"{folder}: the shards hold {done} entries, {MANIFEST} says {n}")
    writer.close()
    for arr in (quality, uncertainty, active, present):
        arr.flush()
    unusable = int(n - np.count_nonzero(active))
    rejected = int(bundle.rejected(np.asarray(quality)[np.asarray(active)]).sum())
    return _Written(dim, members, unusable, rejected)


def _swap_in_derived(folder: Path, tmp: Path, name: str, meta: dict) -> None:
    """Under the gallery's lock: ``tmp`` becomes ``derived/<name>``, the manifest points to it, and the
    other derived folders go.

    Raises:
        GalleryError: shards were added since the build started.
    """
    root = folder / "derived"
    with locked(folder):
        current = require_manifest(folder)
        if shards_signature(current) != meta["shards"]:
            raise GalleryError(f"{folder}: shards were added while the archive index was built; build it again")
        swap_in(tmp, root / name)
        current["derived"] = {"path": f"derived/{name}", "kind": ARCHIVE_KIND, "fingerprint": meta["fingerprint"],
                              "bundle": meta["bundle"], "shards": meta["shards"]}
        write_manifest(folder, current)
        for other in root.iterdir():
            if other.name != name and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)


def _build_compact(folder: Path, config: CompactConfig, use_ray: bool) -> str:
    if not use_ray:
        CompactIndex.build(folder / "vectors.npy", config).save(folder / "compact")
        return "in-process"
    import ray

    @ray.remote(max_retries=1)
    def build(path: str) -> str:
        CompactIndex.build(Path(path) / "vectors.npy", config).save(Path(path) / "compact")
        return ray.util.get_node_ip_address()

    return f"on node {ray.get(build.remote(str(folder.resolve())))}"
