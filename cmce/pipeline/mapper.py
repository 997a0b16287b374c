"""The one step every runner runs: a batch of files -> staged gallery rows.

``IngestMapper`` is a callable class in Ray Data's batch-inference shape: ``__init__``
loads the models once (``FaceEngine``), ``__call__`` maps one batch. A batch is a
mapping of equal-length columns: ``uri``, ``source``, ``label``, ``size`` and, when a
read step ran before, ``bytes``. Mapping it:

1. ``prepare`` (no model): read each file, hash it, skip content already in the
   gallery, decode it with the safe loader (``cmce.io.images.load_image`` and its limits);
2. ``embed``: detect faces over the whole batch, embed every face with every backbone
   (``cmce.gallery.embed_photos``, the step ``Gallery.add_images`` runs), thumbnails and
   entry ids ``<content hash>:<face>``;
3. stage the batch's rows (``cmce.storage.staging.write_staged``) under a key made from its URIs,
   so a retried batch rewrites the same files, and return one small row of counts.

The driver commits staged batches (``cmce.pipeline.writer``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmce.compat import renamed
from cmce.errors import ImageError, LimitError
from cmce.gallery.ingest import Photo, check_photo_size, decode_photo, embed_photos
from cmce.gallery.memory import Gallery
from cmce.io.images import DEFAULT_LIMITS, ImageLimits, content_hash
from cmce.pipeline.reader import read_file
from cmce.storage.records import GalleryRecords
from cmce.storage.staging import skipped_table, write_staged

logger = logging.getLogger(__name__)

__all__ = ["IngestMapper", "KnownHashes", "MapperConfig", "PreparedBatch", "batch_key", "prepare_batch"]

#: The columns of a batch of files.
BATCH_COLUMNS = ("uri", "source", "label", "size")


@dataclass(frozen=True)
class MapperConfig:
    """How the mapper loads its models and reads photos.

    Attributes:
        bundle: bundle folder or Hub id (None: the default bundle).
        revision: Hub revision of ``bundle``.
        device: torch device of the models (None: CUDA when there is one, else CPU).
        max_faces_per_image: faces kept per photo (the largest).
        image_limits: bytes and pixel caps per photo.
    """

    bundle: str | None = None
    revision: str | None = None
    device: str | None = None
    max_faces_per_image: int = 20
    image_limits: ImageLimits = DEFAULT_LIMITS


class KnownHashes:
    """Content hashes a gallery holds, compact enough to ship to every worker.

    The first 64 bits of each sha256, sorted (8 bytes per photo: 80 MB for 1e7
    photos). Two different photos share a prefix with probability about n^2 / 2^65
    (3e-4 for 1e8 photos); the later one would be taken as already indexed.

    Args:
        hashes: hex sha256 digests.
    """

    def __init__(self, hashes=()):
        values = np.fromiter((int(h[:16], 16) for h in hashes), dtype=np.uint64)
        self.values = np.unique(values)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, digest: str) -> bool:
        v = np.uint64(int(digest[:16], 16))
        i = int(np.searchsorted(self.values, v))
        return i < len(self.values) and self.values[i] == v


def batch_key(uris: Sequence[str]) -> str:
    """A batch's staging name: the same files give the same name (a retry overwrites)."""
    return hashlib.sha256("\n".join(uris).encode()).hexdigest()[:32]


@dataclass
class PreparedBatch:
    """A batch read and decoded, before any model runs.

    Attributes:
        key: ``batch_key`` of its URIs.
        files: files in the batch.
        photos: the decoded photos to embed.
        skipped: ``(uri, source, content hash or None, reason)`` of files that cannot
            be indexed (unreadable, not an image, over a limit).
        known: files whose content the gallery already holds (or an earlier file of
            this batch had).
    """

    key: str
    files: int
    photos: list[Photo] = field(default_factory=list)
    skipped: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    known: int = 0


def prepare_batch(batch: Mapping[str, Sequence], limits: ImageLimits = DEFAULT_LIMITS,
                  known: KnownHashes | None = None) -> PreparedBatch:
    """Read, hash and decode a batch of files (no model runs; safe in a reader thread).

    Args:
        batch: columns ``uri``, ``source``, ``label``, ``size`` (-1: unknown), and
            optionally ``bytes`` (already read; None where reading failed).
        limits: caps per photo.
        known: content hashes to skip.
    """
    uris = [str(u) for u in batch["uri"]]
    out = PreparedBatch(batch_key(uris), len(uris))
    data_column = batch.get("bytes") if hasattr(batch, "get") else None
    seen: set[str] = set()
    for j, uri in enumerate(uris):
        source, label = str(batch["source"][j]), batch["label"][j]
        label = None if label is None or (isinstance(label, float) and np.isnan(label)) else str(label)
        digest = None
        try:
            check_photo_size(int(batch["size"][j]), source, limits)
            data = data_column[j] if data_column is not None else read_file(uri, limits.max_bytes)
            if data is None:
                data = read_file(uri, limits.max_bytes)  # the read step failed: say why
            data = bytes(data)
            check_photo_size(len(data), source, limits)
            digest = content_hash(data)
            if digest in seen or (known is not None and digest in known):
                out.known += 1
                continue
            seen.add(digest)
            image = decode_photo(data, source, limits)
        except (ImageError, LimitError) as e:
            out.skipped.append((uri, source, digest, str(e).removeprefix(f"{source}: ")))
            continue
        out.photos.append(Photo(source, image, label, digest, uri))
    return out


class IngestMapper:
    """Detect and embed batches of photos into staged gallery rows; models load once.

    Args:
        gallery: the gallery folder whose ``staging/`` receives the batches (every
            worker must reach it: on a cluster, a shared file system).
        job: the job's staging folder relative to ``gallery`` (``GalleryWriter.stage``).
        config: models and limits.
        known: content hashes the gallery holds (skipped without decoding).
        engine: an already loaded ``FaceEngine`` (in-process use); default: load one
            from ``config``.
    """

    def __init__(self, gallery: str | os.PathLike, config: MapperConfig = MapperConfig(),
                 known: KnownHashes | None = None, engine=None, *, job: str):
        if engine is None:
            from cmce.method.bundle import load_bundle
            from cmce.method.engine import FaceEngine

            engine = FaceEngine(load_bundle(config.bundle, revision=config.revision), device=config.device)
        self.engine = engine
        self.gallery = Path(gallery)
        self.job = job
        self.config = config
        self.known = known

    def prepare(self, batch: Mapping[str, Sequence]) -> PreparedBatch:
        """Read, hash and decode (see ``prepare_batch``)."""
        return prepare_batch(batch, self.config.image_limits, self.known)

    def embed(self, prepared: PreparedBatch) -> tuple[GalleryRecords, object]:
        """The batch's entries (every backbone's raw embedding) and its skipped-files table."""
        skipped = list(prepared.skipped)
        holder = Gallery(self.engine)  # the records layout of Gallery.save, for these entries alone
        if prepared.photos:
            result = embed_photos(self.engine, prepared.photos, max_faces_per_image=self.config.max_faces_per_image)
            skipped += [(p.uri, p.name, p.content_hash, why) for p, why in result.skipped]
            for message in result.limits_reached:
                logger.info("%s", message)
            if result.entries:
                holder._append(list(result.entries), result.embeddings)
        rows = skipped_table(*zip(*skipped)) if skipped else skipped_table([], [], [], [])
        return holder.records(), rows

    def process(self, prepared: PreparedBatch) -> dict[str, np.ndarray]:
        """Embed a prepared batch, stage it, and return its one row of counts."""
        records, skipped = self.embed(prepared)
        staged = write_staged(self.gallery, prepared.key, records, skipped, job=self.job)
        return {
            "batch": np.array([prepared.key]),
            "files": np.array([prepared.files]),
            "faces": np.array([len(records)]),
            "skipped": np.array([skipped.num_rows]),
            "known": np.array([prepared.known]),
            "staged": np.array([",".join(staged)]),
        }

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
        return self.process(self.prepare(batch))

__getattr__ = renamed(__name__, {'IndexMapper': 'IngestMapper'}, globals(), "'index' names vector indexes; photos are ingested")
