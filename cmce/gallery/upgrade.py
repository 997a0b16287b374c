"""Model upgrades without re-indexing: ``python -m cmce upgrade``.

A gallery keeps every backbone's raw embedding (``cmce.storage``). When the query model
changes, the new bundle's transformers map those embeddings into the new query space
and the members each entry has are fused again: no photo is read, no backbone runs.
That is the compatibility the paper promises (Shoshan, Linial et al., WACV 2024,
section 3: "no backfilling").

``backfill_gallery`` is the optional second step: it embeds the members an entry
lacks, from the photo where it can still be read, chunk by chunk. Every chunk is
committed atomically, so the gallery stays searchable throughout (entries with and
without the member) and an interrupted backfill resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cmce.errors import CmceError, GalleryError, ImageError, LimitError
from cmce.gallery.persistence import bundle_inputs, bundle_keys, check_servable, derive
from cmce.io.files import link_or_copy
from cmce.io.images import DEFAULT_LIMITS, ImageLimits, content_hash, load_image
from cmce.method.bundle_model import Bundle
from cmce.method.engine import FaceEngine
from cmce.method.precision import PRECISIONS, at_precision
from cmce.storage.derived import write_derived
from cmce.storage.manifest import CORRECTIONS, MANIFEST, read_manifest
from cmce.storage.read import read_gallery
from cmce.storage.records import StoredGallery, backbone_record
from cmce.storage.write import append_embeddings, write_gallery

logger = logging.getLogger(__name__)

__all__ = [
    "BackfillReport", "UpgradeReport", "backfill_gallery", "check_index_bundle", "reproject_records",
    "shared_members", "upgrade_gallery",
]

#: Called with (entries done, entries still waiting).
BackfillProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class UpgradeReport:
    """What ``upgrade_gallery`` did.

    Attributes:
        folder: the gallery written (the source, or ``--out``).
        entries: entries re-projected.
        from_query: the query model that served the gallery before (None: unknown).
        to_query: the new bundle's query model.
        members: the new bundle's ensemble members.
        lacking: member -> entries lacking it (members missing nowhere are left out).
        entries_lacking: entries that lack at least one member.
        projection_seconds: transformers + fusion + scores.
        seconds: the whole upgrade: reading the shards, projection, index, writing.
        photos_read: always 0.
    """

    folder: Path
    entries: int
    from_query: str | None
    to_query: str
    members: tuple[str, ...]
    lacking: dict[str, int]
    entries_lacking: int
    projection_seconds: float
    seconds: float
    photos_read: int = 0

    def summary(self) -> str:
        origin = f"from {self.from_query} " if self.from_query else ""
        return (f"re-projected {self.entries} entries {origin}to {self.to_query} in {self.seconds:.1f} s; "
                f"{self.photos_read} photos read; {self.entries_lacking} entries lack a member")


@dataclass(frozen=True)
class BackfillReport:
    """What ``backfill_gallery`` did.

    Attributes:
        embedded: backbone name -> entries whose embedding was added.
        photos_read: photos read.
        unreachable: ``(source, reason)`` of photos that could not be read (their
            entries keep lacking the member).
        waiting: entries still lacking a member this engine can embed.
        seconds: wall time.
    """

    embedded: dict[str, int]
    photos_read: int
    unreachable: tuple[tuple[str, str], ...] = ()
    waiting: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        added = ", ".join(f"{m} for {n}" for m, n in self.embedded.items()) or "nothing"
        out = f"backfilled {added} from {self.photos_read} photos in {self.seconds:.1f} s"
        if self.unreachable:
            out += f"; {len(self.unreachable)} photos unreachable"
        return out + f"; {self.waiting} entries still waiting"


@dataclass
class _Projection:
    vectors: object
    seconds: float
    lacking: dict[str, int] = field(default_factory=dict)


def reproject_records(stored: StoredGallery, bundle: Bundle):
    """The bundle's ``GalleryVectors`` of a stored gallery, from raw embeddings alone.

    Raises:
        GalleryError: the bundle cannot serve the gallery (see ``check_servable``).
    """
    records = stored.records
    check_servable(bundle, records.backbones, len(records), str(stored.folder))
    start = time.perf_counter()
    emb, present = bundle_inputs(bundle, records.embeddings, records.present)
    vec = bundle.gallery_vectors(emb, records.probability, present)
    seconds = time.perf_counter() - start
    lacking = {m: int((~vec.member_present[:, j]).sum()) for j, m in enumerate(vec.members)
               if (~vec.member_present[:, j]).any()}
    return _Projection(vec, seconds, lacking)


def _check_out(source: Path, out: Path) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or dst.is_relative_to(src):
        raise GalleryError(f"--out {out} is inside the source gallery {source}; choose a folder outside it")
    if src.is_relative_to(dst):
        raise GalleryError(f"--out {out} contains the source gallery {source}; choose another folder")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise GalleryError(f"--out {out} exists and is not empty; choose a new folder")


@contextmanager
def _new_gallery(dest: Path) -> Iterator[Path]:
    """A folder to build a gallery in (not yet created), moved to ``dest`` when the block succeeds.

    ``dest`` must be absent or empty (``_check_out``); a failed block leaves nothing behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp"))
    try:
        yield tmp / "gallery"
        if dest.exists():
            dest.rmdir()
        os.replace(tmp / "gallery", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_shards(src: Path, manifest: dict, folder: Path) -> None:
    """``folder``: ``src``'s shards, skipped tables and corrections (hard-linked) and its manifest, without
    derived data. Erasing from one of the two galleries later (``forget``) leaves the other's copy."""
    folder.mkdir()
    for shard in manifest["shards"] + manifest.get("skipped", []) + manifest.get(CORRECTIONS, []):
        link_or_copy(src / shard["file"], folder / shard["file"])
    (folder / MANIFEST).write_text(json.dumps(dict(manifest, derived=None), indent=1) + "\n")



def upgrade_gallery(
    folder: str | os.PathLike, bundle: Bundle, *, out: str | os.PathLike | None = None, precision: str = "float32",
    ray: str | None = None,
) -> UpgradeReport:
    """Re-project a saved gallery into a new bundle's query space, without reading a photo.

    The raw embeddings stay as they are; the new bundle's derived data (fused
    vectors, uncertainty, quality, index) is written beside them and becomes the
    current one atomically. A version 1 gallery is rewritten as version 2. The user's
    corrections (names, must- and cannot-links, ``cmce.storage.corrections``) carry over:
    in place they are not touched; with ``out`` their table is linked like the shards.

    Args:
        folder: the gallery.
        bundle: the new bundle (no backbone of it is loaded).
        out: write the upgraded gallery there instead (a new folder outside ``folder``;
            the source is left untouched).
        precision: ``"float32"``, or ``"int8"`` to run the transformers with int8
            linear layers (up to twice as fast on CPUs with VNNI, a few 1e-3 of cosine
            away; recorded in the derived data). A ``Gallery`` opened later re-projects
            in float32 either way.
        ray: for an archive gallery (``COMPACT_FROM`` entries or more, or one that
            serves an archive index), project its shards as Ray tasks on this cluster
            (see ``cmce.gallery.archive.build_archive_index``). Archive galleries are
            re-projected shard by shard, never loaded whole.

    Raises:
        GalleryError: missing or corrupt gallery, a bundle that cannot serve it, or a
            bad ``out``; the message says which.
    """
    start = time.perf_counter()
    src = Path(folder)
    if out is not None:
        _check_out(src, Path(out))
    if precision not in PRECISIONS:
        raise CmceError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    manifest = read_manifest(src)
    if manifest is not None and _serves_archive(manifest):
        return _upgrade_archive(src, manifest, bundle, out, precision, ray, start)
    stored = read_gallery(src, metadata=False)  # ids, probabilities, embeddings: all re-projection needs
    previous = (stored.derived or {}).get("bundle") or {}
    serving = at_precision(bundle, precision)
    proj = reproject_records(stored, serving)
    derived, index = derive(bundle, proj.vectors, seconds=proj.seconds)
    derived = replace(derived, bundle={**derived.bundle, "precision": precision})
    if out is not None:
        dest = Path(out)
        with _new_gallery(dest) as new:
            if stored.converted_from:
                write_gallery(new, stored.records)
            else:
                _link_shards(src, stored.manifest, new)
            write_derived(new, derived, index)
    else:
        dest = src
        if stored.converted_from:
            write_gallery(src, stored.records)
        write_derived(src, derived, index)
    members = proj.vectors.members
    report = UpgradeReport(
        folder=dest, entries=len(stored.records), from_query=previous.get("query"), to_query=bundle.query_model,
        members=members, lacking=proj.lacking,
        entries_lacking=int((~proj.vectors.member_present.all(axis=1)).sum()) if len(stored.records) else 0,
        projection_seconds=proj.seconds, seconds=time.perf_counter() - start,
    )
    logger.info("%s", report.summary())
    return report


def _serves_archive(manifest: dict) -> bool:
    """Whether a gallery is upgraded as an archive: big, or already served by an archive index."""
    from cmce.gallery.archive_build import ARCHIVE_KIND
    from cmce.search.compact import COMPACT_FROM

    return int(manifest.get("entries", 0)) >= COMPACT_FROM or (manifest.get("derived") or {}).get("kind") == ARCHIVE_KIND


def _upgrade_archive(src: Path, manifest: dict, bundle: Bundle, out: str | os.PathLike | None, precision: str,
                     ray: str | None, start: float) -> UpgradeReport:
    """``upgrade_gallery`` of an archive gallery: shards linked (for ``out``), archive index rebuilt."""
    from cmce.gallery.archive_build import build_archive_index

    if precision != "float32":
        raise CmceError("archive galleries are re-projected in float32 (precision int8 serves in-memory galleries)")
    previous = (manifest.get("derived") or {}).get("bundle") or {}
    dest = src
    if out is not None:
        dest = Path(out)
        with _new_gallery(dest) as new:
            _link_shards(src, manifest, new)
            build_archive_index(new, bundle, ray=ray)
    else:
        build_archive_index(src, bundle, ray=ray)
    derived = dest / ((read_manifest(dest) or {}).get("derived") or {})["path"]
    meta = json.loads((derived / "meta.json").read_text())
    present = np.load(derived / "member_present.npy", mmap_mode="r")
    lacking = {}
    for j, m in enumerate(meta["members"]):
        missing = int(present.shape[0] - np.count_nonzero(present[:, j]))
        if missing:
            lacking[m] = missing
    report = UpgradeReport(
        folder=dest, entries=int(meta["entries"]), from_query=previous.get("query"), to_query=bundle.query_model,
        members=tuple(meta["members"]), lacking=lacking,
        entries_lacking=int(np.count_nonzero(~np.all(present, axis=1))) if present.size else 0,
        projection_seconds=float(meta["projection_seconds"]), seconds=time.perf_counter() - start,
    )
    logger.info("%s", report.summary())
    return report


def backfill_gallery(
    folder: str | os.PathLike,
    engine: FaceEngine,
    *,
    chunk_size: int = 64,
    image_limits: ImageLimits = DEFAULT_LIMITS,
    progress: BackfillProgress | None = None,
) -> BackfillReport:
    """Embed the members entries lack, from photos that can still be read; resumable.

    For each entry lacking a backbone of ``engine``'s bundle that runs here, the photo
    is read again from its recorded path (its content hash must match), aligned with
    the stored detection and embedded by the missing backbones only. Each chunk is
    committed as its own shard, so an interrupted backfill keeps what it did and the
    next run does the rest. The bundle's derived data is rebuilt at the end.

    Args:
        folder: the gallery (upgraded or not).
        engine: the new bundle's models.
        chunk_size: entries per committed chunk.
        image_limits: how photos are decoded (the limits used when indexing).
        progress: called after each chunk with (entries done, entries still waiting).

    Raises:
        GalleryError: missing or corrupt gallery, or a bundle that cannot serve it.
    """
    start = time.perf_counter()
    folder = Path(folder)
    stored = read_gallery(folder)
    if stored.converted_from:
        write_gallery(folder, stored.records)
        stored = read_gallery(folder)
    records = stored.records
    check_servable(engine.bundle, records.backbones, len(records), str(folder))
    runnable = [m for m in engine.bundle.models if m in engine.backbones]
    keys = {m: k for m, k in bundle_keys(engine.bundle).items() if m in runnable}
    need = {m: ~records.present[k] if k in records.present else np.ones(len(records), bool) for m, k in keys.items()}
    waiting = np.flatnonzero(np.any(np.stack(list(need.values()), axis=1), axis=1)) if need else np.zeros(0, int)
    order = waiting[np.argsort(records.uri[waiting].astype(str), kind="stable")]  # one read per photo
    embedded = {m: 0 for m in runnable}
    unreachable: dict[str, str] = {}
    photos = 0
    done = 0
    for lo in range(0, len(order), chunk_size):
        chunk = order[lo : lo + chunk_size]
        images: dict[str, np.ndarray | None] = {}
        batch: list[int] = []
        for i in chunk:
            uri = records.uri[i]
            if uri not in images:
                images[uri], why = _read_photo(uri, records.content_hash[i], records.source[i], image_limits)
                photos += images[uri] is not None
                if why is not None:
                    unreachable[records.source[i]] = why
            if images[uri] is not None:
                batch.append(int(i))
        for m in runnable:
            rows = [i for i in batch if need[m][i]]
            if not rows:
                continue
            pairs = [(images[records.uri[i]], [records.face(i)]) for i in rows]
            vecs = engine.embed_gallery_batch(pairs, models=[m])[m]
            append_embeddings(folder, backbone_record(m), [records.entry_id[i] for i in rows], vecs)
            need[m][rows] = False
            embedded[m] += len(rows)
        done += len(chunk)
        if progress:
            progress(done, len(order) - done)
    stored = read_gallery(folder, metadata=False)  # with the backfilled shards: ids and embeddings suffice
    proj = reproject_records(stored, engine.bundle)
    derived, index = derive(engine.bundle, proj.vectors, seconds=proj.seconds)
    write_derived(folder, derived, index)
    still = int(np.any(np.stack(list(need.values()), axis=1), axis=1).sum()) if need else 0
    report = BackfillReport({m: n for m, n in embedded.items() if n}, photos, tuple(unreachable.items()), still,
                            time.perf_counter() - start)
    logger.info("%s", report.summary())
    return report


def _read_photo(uri: str | None, digest: str, name: str, limits: ImageLimits) -> tuple[np.ndarray | None, str | None]:
    """The photo at ``uri`` decoded as when it was indexed, or None and why not."""
    if not uri:
        return None, "no path recorded (uploaded, not kept)"
    try:
        data = Path(uri).read_bytes()
    except FileNotFoundError:
        return None, f"{uri} no longer exists"
    except OSError as e:
        return None, f"{uri} cannot be read ({e.strerror or e})"
    if content_hash(data) != digest:
        return None, f"{uri} changed since it was indexed"
    try:
        return load_image(data, limits=limits, name=name), None
    except (ImageError, LimitError) as e:
        return None, str(e)


def shared_members(bundle: Bundle, old: Bundle) -> list[str]:
    """The ensemble members of ``bundle`` that a gallery built by ``old`` holds.

    A gallery built by ``old`` holds the raw embeddings of ``old.models``; ``bundle``
    can serve it when this list is not empty. ``"query"`` stands for ``bundle``'s
    query model's own embedding.
    """
    stored = set(old.models)
    members = [m for m in bundle.gallery_models if m in stored]
    if bundle.query_member and bundle.query_model in stored:
        members.append("query")
    return members


def check_index_bundle(folder: str | os.PathLike, bundle: Bundle) -> None:
    """Refuse to add photos to a gallery that another bundle serves, saying what to run.

    Raises:
        CmceError: the gallery's current derived data belongs to another bundle.
    """
    from cmce.gallery.persistence import bundle_fingerprint

    manifest = read_manifest(folder)  # the manifest says which bundle serves it: no shard is read
    info = manifest.get("derived") if manifest else None
    if info and info.get("fingerprint") != bundle_fingerprint(bundle):
        b = info.get("bundle", {})
        raise CmceError(
            f"{folder} is served by another bundle (query {b.get('query')}, gallery {b.get('gallery')}, from "
            f"{b.get('source')}). Move it to this bundle first, without re-reading a photo: "
            f"python -m cmce upgrade {folder} --bundle {bundle.source or 'NEW_BUNDLE'}; then index into it"
        )
