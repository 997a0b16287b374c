"""List and read the photos of an indexing job: a local folder or any pyarrow filesystem URI.

``SOURCE`` is a folder (``photos/``), or a URI that ``pyarrow.fs.FileSystem.from_uri``
opens (``file:///data/photos``, ``s3://bucket/prefix``, ``gs://bucket/prefix``). Labels
follow ``cmce.io.datasets.list_labelled_images``: the first folder level below the root is the
identity; a photo directly in the root has none (or, with ``filename_labels``, the
``Name_0001``-style name's). Files are images by extension; hidden files and folders
are skipped. Listing is sorted, so every runner sees the same files in the same order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cmce.errors import DatasetError, ImageError
from cmce.io.datasets import label_from_filename, list_labelled_images
from cmce.io.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = ["SourceFile", "SourceListing", "is_uri", "list_source", "read_file"]


@dataclass(frozen=True)
class SourceFile:
    """One photo of a job.

    Attributes:
        uri: where it is read: an absolute local path, or the full URI.
        source: the path below the root (shown to users; the entries' ``source``).
        label: identity label, or None.
        size: bytes, from the listing (-1: unknown).
    """

    uri: str
    source: str
    label: str | None
    size: int = -1


@dataclass(frozen=True)
class SourceListing:
    """The photos of ``root``, sorted by (label, source)."""

    root: str
    files: tuple[SourceFile, ...]

    def __len__(self) -> int:
        return len(self.files)


def is_uri(source: str) -> bool:
    """Whether ``source`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(source)


def _filesystem(uri: str):
    try:
        import pyarrow.fs as pafs
    except ImportError as e:  # pragma: no cover - pyarrow is in requirements.txt
        raise DatasetError("reading a URI needs pyarrow: pip install pyarrow") from e
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError... for bad schemes and unreachable stores
        raise DatasetError(f"{uri}: cannot be opened ({e}); use a folder, file:///path, s3://bucket/prefix or "
                           f"gs://bucket/prefix") from e


def list_source(source: str | os.PathLike, *, filename_labels: bool = False) -> SourceListing:
    """List the photos of a folder or URI (see the module docstring for the rules).

    Args:
        source: a local folder or a pyarrow filesystem URI.
        filename_labels: label photos directly in the root by their ``Name_0001``-style name.

    Raises:
        DatasetError: the source cannot be opened or listed, or holds no image.
    """
    if not is_uri(str(source)):
        ds = list_labelled_images(source)
        flat = all(p.parent == ds.root for p in ds.paths)
        files = tuple(SourceFile(str(p), str(p.relative_to(ds.root)), None if flat and not filename_labels else lab,
                                 _size(p)) for p, lab in zip(ds.paths, ds.labels))
        return SourceListing(str(ds.root), files)
    import pyarrow.fs as pafs

    uri = str(source)
    fs, root = _filesystem(uri)
    root = root.rstrip("/")
    try:
        info = fs.get_file_info(root)
        if info.type != pafs.FileType.Directory:
            raise DatasetError(f"{uri}: not a folder or prefix (it is {info.type.name.lower()})")
        listed = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{uri}: cannot be listed ({e})") from e
    local = isinstance(fs, pafs.LocalFileSystem)
    pairs = []
    for f in listed:
        if f.type != pafs.FileType.File:
            continue
        rel = PurePosixPath(f.path).relative_to(PurePosixPath(root))
        if any(part.startswith(".") for part in rel.parts) or rel.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        pairs.append((rel, f))
    if not pairs:
        raise DatasetError(f"{uri}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    flat = all(len(rel.parts) == 1 for rel, _ in pairs)
    files = []
    for rel, f in pairs:
        if len(rel.parts) > 1:
            label = rel.parts[0]
        else:
            label = None if flat and not filename_labels else (label_from_filename(rel.name) or rel.stem)
        where = f.path if local else f"{uri.split('://', 1)[0]}://{f.path}"
        files.append(SourceFile(where, str(rel), label, int(f.size) if f.size is not None else -1))
    files.sort(key=lambda s: (s.label or "", PurePosixPath(s.source).name))
    return SourceListing(uri, tuple(files))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def read_file(uri: str, max_bytes: int) -> bytes:
    """A file's bytes (at most ``max_bytes + 1``: the caller refuses the oversized).

    Raises:
        ImageError: the file cannot be read (the message says why).
    """
    if not is_uri(uri):
        try:
            with open(uri, "rb") as fh:
                return fh.read(max_bytes + 1)
        except OSError as e:
            raise ImageError(f"cannot read file ({e.strerror or e})") from e
    try:
        fs, path = _filesystem(uri)
        with fs.open_input_stream(path) as fh:
            return fh.read(max_bytes + 1)
    except DatasetError as e:
        raise ImageError(str(e)) from e
    except Exception as e:
        raise ImageError(f"cannot read {uri} ({e})") from e
