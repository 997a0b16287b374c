"""Turn one upload (loose images, archives, a folder) into labelled gallery items.

A user builds a gallery by uploading many files at once: images, zip/tar archives, or
a whole folder. :func:`collect_uploads` extracts the archives (safely, through
:func:`cmce.io.archives.extract_images`) and gives every image an identity label with
:func:`labels_for_paths`:

* a folder names the person: ``alice/1.jpg`` -> ``alice``; a folder shared by every
  file of the upload (the folder that was picked or zipped) is dropped when the files
  sit in sub-folders of it, so ``friends/alice/1.jpg`` -> ``alice``;
* otherwise a ``Name_0001.jpg``-style file name does: ``Bob_Smith_0003.jpg`` -> ``Bob_Smith``
  (camera names such as ``IMG_0001.jpg`` name nobody);
* otherwise the image has no label (it can be searched for, but matches cannot be
  marked right or wrong).

The result feeds :meth:`cmce.gallery.Gallery.add_images` directly.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cmce.errors import ArchiveError, CmceError
from cmce.io.archives import DEFAULT_ARCHIVE_LIMITS, ArchiveLimits, extract_images
from cmce.io.datasets import label_from_filename
from cmce.io.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = ["ARCHIVE_SUFFIXES", "CAMERA_PREFIXES", "LabelPreview", "UploadBatch", "collect_uploads", "labels_for_paths",
           "preview_labels", "query_label", "relative_names"]

ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
"""Lower-case file suffixes read as archives of images."""

CAMERA_PREFIXES: frozenset[str] = frozenset(
    {"img", "dsc", "dscn", "dscf", "dcim", "pxl", "photo", "image", "picture", "screenshot", "scan", "mvimg",
     "pic", "snapshot", "capture", "frame", "webcam", "uploaded_file", "file", "untitled", "face", "query"}
)
"""File-name stems that a camera or app writes (``IMG_0001.jpg``): they are nobody's name."""


@dataclass(frozen=True)
class UploadBatch:
    """The images of one upload, ready for ``Gallery.add_images``.

    Attributes:
        items: ``(display name, path, label or None)`` per image, in upload order.
        skipped: ``(name, reason)`` for every file or archive member not used.
        notes: archive caps that stopped an extraction early, in plain words.
    """

    items: tuple[tuple[str, Path, str | None], ...]
    skipped: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def labelled(self) -> int:
        """Number of items with an identity label."""
        return sum(label is not None for _, _, label in self.items)


def _file_label(name: str) -> str | None:
    label = label_from_filename(name)
    if label is None or label.strip().lower() in CAMERA_PREFIXES:
        return None
    return label


def query_label(name: str | os.PathLike | None) -> str | None:
    """Identity of a query photo from its file name (``Name_0003.jpg`` -> ``Name``), or None.

    >>> query_label("Grace_Hopper_04.jpg")
    'Grace_Hopper'
    >>> query_label("IMG_2041.jpg") is None
    True
    """
    if not name:
        return None
    return _file_label(PurePosixPath(str(name).replace("\\", "/")).name)


def labels_for_paths(relative_paths: Sequence[str]) -> list[str | None]:
    """Identity label for each file of one upload, from its folders or its file name.

    Args:
        relative_paths: ``/``-separated paths of the files inside the upload (the picked
            folder or the archive), e.g. ``"friends/alice/1.jpg"``.

    Returns:
        One label (or None) per path: the first folder below any folder shared by all
        files; for files directly in one shared folder, that folder, unless their file
        names name at least two different people (``photos/Alice_0001.jpg`` ->
        ``Alice``); for loose files, the ``Name_0001``-style file name.

    >>> labels_for_paths(["team/alice/1.jpg", "team/bob/2.jpg", "team/Carol_0001.jpg"])
    ['alice', 'bob', 'Carol']
    >>> labels_for_paths(["alice/IMG_01.jpg", "alice/IMG_02.jpg"])
    ['alice', 'alice']
    >>> labels_for_paths(["photos/Ann_0001.jpg", "photos/Ben_0001.jpg", "holiday.jpg"])
    ['photos', 'photos', None]
    >>> labels_for_paths(["photos/Ann_0001.jpg", "photos/Ben_0001.jpg"])
    ['Ann', 'Ben']
    """
    parts = [PurePosixPath(p.replace("\\", "/")).parts for p in relative_paths]
    parts = [tuple(x for x in p if x not in ("", ".", "/")) for p in parts]
    # Drop the folders every file shares, as long as some file still sits in a folder.
    shared = 0
    while parts and all(len(p) > shared + 1 for p in parts) and len({p[shared] for p in parts}) == 1:
        if not any(len(p) > shared + 2 for p in parts):
            break  # every file is directly in this one folder: it may be the person's
        shared += 1
    parts = [p[shared:] for p in parts]
    file_labels = [_file_label(p[-1]) if p else None for p in parts]
    flat_in_one_folder = parts and all(len(p) == 2 for p in parts) and len({p[0] for p in parts}) == 1
    if flat_in_one_folder and len({lab for lab in file_labels if lab}) >= 2:
        return file_labels
    return [p[0] if len(p) > 1 else lab for p, lab in zip(parts, file_labels)]


def _kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "archive"
    if Path(lower).suffix in IMAGE_EXTENSIONS:
        return "image"
    return "other"


def collect_uploads(
    files: Sequence[tuple[str, str | os.PathLike]],
    workdir: str | os.PathLike,
    *,
    archive_limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
) -> UploadBatch:
    """Extract archives and label every image of one upload.

    Loose images (single files or a folder) are labelled together with
    :func:`labels_for_paths`; each archive is labelled on its own, from the folders
    inside it.

    Args:
        files: ``(relative name, path)`` per uploaded file; the relative name is the
            path inside a picked folder (``"friends/alice/1.jpg"``) or just the file name.
        workdir: a folder of this upload; archives are extracted below it.
        archive_limits: caps for each archive.

    Returns:
        UploadBatch; unreadable archives and files that are neither images nor
        archives are in ``skipped``.
    """
    loose: list[tuple[str, Path]] = []
    items: list[tuple[str, Path, str | None]] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    workdir = Path(workdir)
    for n, (name, path) in enumerate(files):
        kind = _kind(name)
        if kind == "image":
            loose.append((name, Path(path)))
        elif kind == "archive":
            dest = workdir / f"archive-{n}"
            try:
                report = extract_images(path, dest, limits=archive_limits)
            except (ArchiveError, CmceError) as e:
                skipped.append((name, str(e).removeprefix(f"{Path(path).name}: ")))
                continue
            short = PurePosixPath(name).name
            skipped += [(f"{short}: {member}", reason) for member, reason in report.skipped]
            if report.limit_reached:
                notes.append(f"{short}: {report.limit_reached}")
            rel = [p.relative_to(dest.resolve()).as_posix() for p in report.extracted]
            if not rel:
                skipped.append((name, "no images inside"))
            items += [(r, p, lab) for r, p, lab in zip(rel, report.extracted, labels_for_paths(rel))]
        else:
            valid = ", ".join(sorted(IMAGE_EXTENSIONS) + [".zip", ".tar(.gz/.bz2/.xz)"])
            skipped.append((name, f"not an image or archive (valid: {valid})"))
    labels = labels_for_paths([name for name, _ in loose])
    items = [(name, path, lab) for (name, path), lab in zip(loose, labels)] + items
    labelled = sum(label is not None for _, _, label in items)
    logger.info("upload: %d images (%d labelled), %d skipped", len(items), labelled, len(skipped))
    return UploadBatch(tuple(items), tuple(skipped), tuple(notes))


@dataclass(frozen=True)
class LabelPreview:
    """The labels an upload will get, before anything is read but file names.

    Attributes:
        rows: ``(file, label or None)`` for the first files, in upload order (archives: their members).
        images: images counted in all (archive members included, up to the listing cap).
        labelled: how many of them get a label.
        people: distinct labels.
        notes: archives that could not be listed (they are checked when indexed).
    """

    rows: tuple[tuple[str, str | None], ...]
    images: int
    labelled: int
    people: int
    notes: tuple[str, ...] = ()


def _archive_names(path: str | os.PathLike, cap: int) -> list[str]:
    """The image member names of a zip or tar archive (names only: nothing is extracted), at most ``cap`` looked at.

    Raises:
        ArchiveError: not a readable zip or tar.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [i.filename for i in z.infolist()[:cap] if not i.is_dir()]
        else:
            with tarfile.open(path, "r:*") as t:
                names = []
                for n, member in enumerate(t):
                    if n >= cap:
                        break
                    if member.isfile():
                        names.append(member.name)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise ArchiveError(f"not a readable zip or tar ({e})") from e
    return [n for n in names if _kind(n) == "image"]


def preview_labels(files: Sequence[tuple[str, str | os.PathLike]], *, first: int = 8,
                   max_listed: int = 20_000) -> LabelPreview:
    """The labels ``collect_uploads`` will give the same upload, from file names only.

    Loose images (single files or a folder, named by their relative path) are labelled
    together, each archive on its own from its member names (listed, not extracted; at most
    ``max_listed`` entries looked at per archive), exactly as when indexing.

    Args:
        files: ``(relative name, path)`` per uploaded file, as ``collect_uploads`` takes them.
        first: how many ``(file, label)`` rows to keep.
        max_listed: entries of one archive looked at.

    Example:
        >>> p = preview_labels([("team/alice/1.jpg", "x"), ("team/bob/2.jpg", "y"), ("notes.txt", "z")])
        >>> p.rows, p.images, p.people
        ((('team/alice/1.jpg', 'alice'), ('team/bob/2.jpg', 'bob')), 2, 2)
    """
    loose = [name for name, _ in files if _kind(name) == "image"]
    rows = list(zip(loose, labels_for_paths(loose)))
    notes = []
    for name, path in files:
        if _kind(name) != "archive":
            continue
        try:
            members = _archive_names(path, max_listed)
        except ArchiveError as e:
            notes.append(f"{PurePosixPath(name).name}: {e}; it is checked when indexed")
            continue
        short = PurePosixPath(name).name
        rows += [(f"{short}: {m}", lab) for m, lab in zip(members, labels_for_paths(members))]
    labels = [lab for _, lab in rows if lab is not None]
    return LabelPreview(tuple(rows[:first]), len(rows), len(labels), len(set(labels)), tuple(notes))


def relative_names(folder: list[str], folder_paths: str | None) -> list[str]:
    """Pair the uploaded folder files with the relative paths the browser reported.

    Uploads keep the browser's order; if some files were dropped on the way, pair by file name.
    """
    rels = [r.strip() for r in (folder_paths or "").splitlines() if r.strip()]
    same = sum(Path(r).name == Path(p).name for r, p in zip(rels, folder))
    if len(rels) == len(folder) and 2 * same >= len(folder):  # names the server cleaned may differ
        return rels
    queue: dict[str, list[str]] = {}
    for rel in rels:
        queue.setdefault(Path(rel).name, []).append(rel)
    return [queue[Path(p).name].pop(0) if queue.get(Path(p).name) else Path(p).name for p in folder]
