"""A gallery to take home: one zip file, and the way back.

``export_gallery`` writes an in-memory ``Gallery`` as one zip of its saved form (the
versioned format of ``cmce.storage``: ``manifest.json`` and Parquet shards holding every
backbone's raw embeddings, the face boxes, labels and small JPEG thumbnails). No
original photo goes in, and no derived data (fused vectors, indexes): they are rebuilt
for whichever bundle opens it.

``import_gallery`` is the way back. The upload goes through the same safe extraction as
any uploaded archive (``cmce.io.archives.extract_images``: no links, no path traversal,
caps on files, bytes and compression ratio), keeping only ``.json`` and ``.parquet``
members; the folder must then be a saved gallery (format version checked, every shard's
checksum verified by ``cmce.storage``), hold no more entries than the gallery limits
allow, and share at least one backbone with the bundle. The gallery is re-projected from
the stored embeddings: no photo is read and no backbone runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cmce.errors import GalleryError, LimitError
from cmce.gallery.ingest import DEFAULT_GALLERY_LIMITS, GalleryLimits
from cmce.storage.manifest import CORRECTIONS_DIR
from cmce.gallery.memory import Gallery
from cmce.io.archives import ArchiveLimits, extract_images
from cmce.method.engine import FaceEngine

__all__ = ["GALLERY_ARCHIVE_SUFFIXES", "ImportedGallery", "export_gallery", "import_gallery"]

logger = logging.getLogger(__name__)

#: The member suffixes a gallery archive holds (the manifest and the shards).
GALLERY_ARCHIVE_SUFFIXES = frozenset({".json", ".parquet"})
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ImportedGallery:
    """A gallery read back from an archive.

    Attributes:
        gallery: the gallery, re-projected into the engine's bundle.
        skipped: archive members left out, with the reason (``(name, reason)``).
        seconds: time from the upload to the searchable gallery.
    """

    gallery: Gallery
    skipped: tuple[tuple[str, str], ...]
    seconds: float


def export_gallery(gallery: Gallery, dest: str | os.PathLike) -> Path:
    """Write ``gallery`` as one zip file at ``dest`` (see the module docstring).

    Raises:
        GalleryError: the gallery is empty.
    """
    if not len(gallery):
        raise GalleryError("the gallery is empty: index some faces before downloading it")
    dest = Path(dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".export-") as tmp:
        saved = gallery.save(Path(tmp) / "gallery")
        members = [saved / _MANIFEST] + sorted((saved / "shards").glob("*.parquet"))
        members += sorted((saved / CORRECTIONS_DIR).glob("*.parquet"))  # names and links the manifest lists
        partial = dest.with_name(dest.name + ".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as z:  # Parquet is compressed already
            for path in members:
                z.write(path, path.relative_to(saved).as_posix())
        partial.replace(dest)
    logger.info("exported %d faces to %s (%d bytes)", len(gallery), dest.name, dest.stat().st_size)
    return dest


def _gallery_folder(root: Path) -> Path:
    """The folder of the extracted archive that holds the manifest (the root, or its one sub-folder)."""
    if (root / _MANIFEST).is_file():
        return root
    subs = [p for p in root.iterdir() if p.is_dir()]
    if len(subs) == 1 and (subs[0] / _MANIFEST).is_file():
        return subs[0]
    raise GalleryError(f"not a saved gallery: no {_MANIFEST} at the top of the archive (download one from the "
                       "app, or zip a folder written by Gallery.save)")


def import_gallery(
    archive: str | os.PathLike,
    engine: FaceEngine,
    workdir: str | os.PathLike,
    *,
    limits: GalleryLimits = DEFAULT_GALLERY_LIMITS,
    archive_limits: ArchiveLimits | None = None,
) -> ImportedGallery:
    """Read a gallery archive written by ``export_gallery`` (or any zip/tar of a saved gallery).

    Args:
        archive: the uploaded file.
        engine: the engine whose bundle serves the gallery.
        workdir: where the archive is extracted (a temporary folder inside it, removed afterwards).
        limits: the gallery's caps; an archive with more entries than ``limits.max_entries`` is refused.
        archive_limits: extraction caps (default ``ArchiveLimits()`` with room for a manifest
            and one shard per 50,000 entries).

    Returns:
        ImportedGallery.

    Raises:
        ArchiveError: not a zip/tar, or corrupt.
        GalleryError: not a saved gallery, a corrupt shard, or no backbone in common with the bundle.
        LimitError: more entries than the gallery limits allow.
    """
    start = time.perf_counter()
    caps = archive_limits or ArchiveLimits(max_files=64, max_ratio=1000.0, max_member_bytes=400 * 2**20)
    tmp = Path(tempfile.mkdtemp(dir=workdir, prefix="gallery-import-"))
    try:
        report = extract_images(archive, tmp, limits=caps, suffixes=GALLERY_ARCHIVE_SUFFIXES)
        if report.limit_reached:
            raise LimitError(f"the gallery archive is too large to restore: {report.limit_reached}")
        folder = _gallery_folder(tmp)
        gallery = Gallery.load(folder, engine, limits)
        if len(gallery) > limits.max_entries:
            raise LimitError(f"the gallery archive holds {len(gallery)} faces; this server takes at most "
                             f"{limits.max_entries} per gallery (GalleryLimits.max_entries)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    logger.info("imported %d faces from %s in %.2f s", len(gallery), Path(archive).name, seconds)
    return ImportedGallery(gallery, tuple(report.skipped), seconds)
