"""Extract the images of an uploaded zip or tar archive, safely.

:func:`extract_images` writes only image files (by suffix, see
:data:`cmce.io.images.IMAGE_EXTENSIONS`) under a destination folder, keeping their
folders (folder names become identity labels later). Every other member is
skipped and reported with a reason in plain words:

* absolute paths, ``..`` traversal, links, devices and other special files;
* nested archives (never opened), encrypted members, macOS metadata
  (``__MACOSX/``, ``._name``), files that are not images;
* members larger than :attr:`ArchiveLimits.max_member_bytes` or that expand
  more than :attr:`ArchiveLimits.max_ratio` times (zip bombs).

Sizes written in archive headers are not trusted: bytes are counted while they
are written, and a member is abandoned as soon as it goes over a cap. When
:attr:`ArchiveLimits.max_files` or :attr:`ArchiveLimits.max_total_bytes` is
reached extraction stops and :attr:`ExtractReport.limit_reached` says so.

Member names are cleaned, not rejected: control characters and bidirectional
overrides are removed, Unicode is normalised to NFC (macOS writes NFD), names
stored without the UTF-8 flag are decoded as UTF-8 when they are valid UTF-8,
and each path component is capped at 200 bytes, keeping the suffix.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import os
import re
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cmce.errors import ArchiveError, CmceError
from cmce.io.images import IMAGE_EXTENSIONS, format_bytes

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_COPY_CHUNK_BYTES = 256 * 1024
# Below this many bytes a high compression ratio is harmless (flat synthetic images).
_RATIO_CHECK_MIN_BYTES = 1 * _MIB
_MAX_COMPONENT_BYTES = 200
_NESTED_ARCHIVE_SUFFIXES = (
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".zst", ".lz",
    ".lzma", ".7z", ".rar",
)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_COMPRESSED_TAR_MAGICS = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_TAR_MAGIC_OFFSET = 257
# C0/C1 control characters and the bidirectional marks/overrides that can disguise a name.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_ZIP_UTF8_FLAG = 0x800
_ZIP_ENCRYPTED_FLAG = 0x1
_MEMBER_READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
    NotImplementedError, RuntimeError,
)
_TAR_READ_ERRORS = (tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while extracting an archive.

    Attributes:
        max_files: most image files extracted; at the next image extraction stops.
        max_total_bytes: most bytes written in all (uncompressed), default 500 MiB.
        max_ratio: largest uncompressed/compressed size ratio of one zip member
            (real photos are close to 1); for a compressed tar, of the whole
            stream read so far. Only checked above 1 MiB uncompressed.
        max_member_bytes: largest single member, uncompressed, default 25 MiB.
        max_entries: most entries of any kind (images, skipped files, folders)
            looked at, so an archive of a million empty entries is stopped quickly.
    """

    max_files: int = 2000
    max_total_bytes: int = 500 * _MIB
    max_ratio: float = 200.0
    max_member_bytes: int = 25 * _MIB
    max_entries: int = 20_000

    def __post_init__(self) -> None:
        for field_name in ("max_files", "max_total_bytes", "max_member_bytes", "max_entries"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ArchiveLimits.{field_name} must be a positive integer, got {value!r}"
                )
        ratio = self.max_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1:
            raise ValueError(f"ArchiveLimits.max_ratio must be a number >= 1, got {ratio!r}")


DEFAULT_ARCHIVE_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ExtractReport:
    """What :func:`extract_images` did.

    Attributes:
        extracted: absolute paths of the image files written, in archive order.
        skipped: ``(member name, reason)`` for every member not extracted (folders
            are not listed), in archive order.
        limit_reached: ``None`` when the whole archive was examined; otherwise which
            cap stopped extraction and where, in plain words.
    """

    extracted: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...]
    limit_reached: str | None = None

    def __post_init__(self) -> None:
        relative = [path for path in self.extracted if not path.is_absolute()]
        if relative:
            raise ValueError(f"ExtractReport.extracted must hold absolute paths, got {relative[0]}")


@dataclass(frozen=True)
class _Member:
    """One archive entry, described the same way for zip and tar."""

    name: str
    kind: str  # "file", "folder", "symbolic link", "hard link", "special"
    size: int
    compressed_size: int | None  # None when the member is not compressed on its own
    encrypted: bool
    sparse: bool
    open: Callable[[], BinaryIO]


class _Stop(Exception):
    """Raised inside extraction when a cap stops it; carries the report message."""


def extract_images(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    limits: ArchiveLimits = DEFAULT_ARCHIVE_LIMITS,
    suffixes: frozenset[str] = IMAGE_EXTENSIONS,
) -> ExtractReport:
    """Extract the image files of a zip or tar archive into a folder.

    The format is recognised from the file's first bytes (then its suffix):
    ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` and ``.tar.xz``.
    Folders inside the archive are kept, so ``alice/1.jpg`` becomes
    ``dest/alice/1.jpg``. A name already taken gets ``-1``, ``-2``... before its suffix.

    Args:
        archive: path of the archive.
        dest: folder to write into; created if missing.
        limits: caps on files, bytes and compression ratio.
        suffixes: the lower-case file suffixes extracted (default: images); a saved
            gallery, for one, is ``.json`` and ``.parquet`` files, with every other check the same.

    Returns:
        The extracted paths, the skipped members with reasons, and the limit that
        stopped extraction, if any.

    Raises:
        ArchiveError: the archive is missing, empty, not a zip/tar, or corrupt
            (the files extracted by this call are then removed again).
        CmceError: ``dest`` is not a folder or a file cannot be written there.
    """
    archive_path = Path(archive)
    archive_name = archive_path.name or str(archive_path)
    kind = _archive_kind(archive_path, archive_name)
    dest_path = Path(dest).resolve()
    try:
        dest_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CmceError(f"cannot create destination folder {dest_path} ({e.strerror or e})") from e
    run = _Extraction(archive_name, dest_path, limits, frozenset(suffixes))
    try:
        if kind == "zip":
            _extract_zip(archive_path, run)
        else:
            _extract_tar(archive_path, run)
    except _Stop as stop:
        run.limit_reached = str(stop)
    except ArchiveError:
        for path in run.extracted:
            path.unlink(missing_ok=True)
        raise
    report = ExtractReport(tuple(run.extracted), tuple(run.skipped), run.limit_reached)
    logger.info(
        "%s: extracted %d images, skipped %d members%s",
        archive_name, len(report.extracted), len(report.skipped),
        f"; stopped: {report.limit_reached}" if report.limit_reached else "",
    )
    return report


def _archive_kind(path: Path, name: str) -> str:
    """Return ``"zip"`` or ``"tar"`` from the magic bytes, else from the suffix."""
    try:
        with path.open("rb") as file:
            head = file.read(_TAR_MAGIC_OFFSET + 8)
    except OSError as e:
        raise ArchiveError(f"{name}: cannot read archive ({e.strerror or e})") from e
    if not head:
        raise ArchiveError(f"{name}: archive file is empty")
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    if head.startswith(_COMPRESSED_TAR_MAGICS) or head[_TAR_MAGIC_OFFSET:].startswith(b"ustar"):
        return "tar"
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    raise ArchiveError(
        f"{name}: not a zip or tar archive (valid: .zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz)"
    )


def _extract_zip(path: Path, run: _Extraction) -> None:
    try:
        zip_file = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise ArchiveError(f"{run.archive_name}: not a readable zip archive ({e})") from e
    with zip_file:
        for info in zip_file.infolist():
            run.consider(_zip_member(zip_file, info), corrupt_is_fatal=False)


def _zip_member(zip_file: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    name = info.filename
    if not info.flag_bits & _ZIP_UTF8_FLAG:  # decoded as cp437; many tools wrote UTF-8 anyway
        with contextlib.suppress(UnicodeError):
            name = name.encode("cp437").decode("utf-8")
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if info.is_dir() or file_type == stat.S_IFDIR:
        kind = "folder"
    elif file_type == stat.S_IFLNK:
        kind = "symbolic link"
    elif file_type not in (0, stat.S_IFREG):
        kind = "special"
    else:
        kind = "file"
    return _Member(
        name=name,
        kind=kind,
        size=info.file_size,
        compressed_size=info.compress_size,
        encrypted=bool(info.flag_bits & _ZIP_ENCRYPTED_FLAG),
        sparse=False,
        open=lambda: zip_file.open(info),
    )


def _extract_tar(path: Path, run: _Extraction) -> None:
    try:
        archive_bytes = path.stat().st_size
        tar_file = tarfile.open(path, "r:*")
    except _TAR_READ_ERRORS as e:
        raise ArchiveError(f"{run.archive_name}: not a readable tar archive ({e})") from e
    with tar_file:
        try:
            while (info := tar_file.next()) is not None:
                run.consider(_tar_member(tar_file, info), corrupt_is_fatal=True)
                _check_tar_expansion(info, archive_bytes, run)
        except _TAR_READ_ERRORS as e:
            raise ArchiveError(f"{run.archive_name}: archive is truncated or corrupt ({e})") from e


def _tar_member(tar_file: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    if info.isdir():
        kind = "folder"
    elif info.issym():
        kind = "symbolic link"
    elif info.islnk():
        kind = "hard link"
    elif info.isreg():
        kind = "file"
    else:
        kind = "special"

    def open_member() -> BinaryIO:
        member_file = tar_file.extractfile(info)
        if member_file is None:  # not reachable for regular files
            raise tarfile.ReadError(f"cannot read member {info.name!r}")
        return member_file

    return _Member(
        name=info.name,
        kind=kind,
        size=info.size,
        compressed_size=None,
        encrypted=False,
        sparse=info.issparse(),
        open=open_member,
    )


def _check_tar_expansion(info: tarfile.TarInfo, archive_bytes: int, run: _Extraction) -> None:
    """Stop before reading past a member if the tar stream expands too much.

    Reading the next header of a compressed tar means decompressing everything
    before it, skipped members included, so the stream length declared so far is
    checked against ``max_ratio`` times the archive's size on disk.
    """
    stream_end = info.offset_data + info.size
    max_stream = run.limits.max_ratio * max(archive_bytes, 1)
    if stream_end > _RATIO_CHECK_MIN_BYTES and stream_end > max_stream:
        raise _Stop(
            f"the archive expands to more than {run.limits.max_ratio:g} times its size "
            f"(ArchiveLimits.max_ratio; possible decompression bomb) after {info.name!r}; "
            "the rest of the archive was not read"
        )


class _Extraction:
    """State of one :func:`extract_images` call: what was written and skipped."""

    def __init__(self, archive_name: str, dest: Path, limits: ArchiveLimits,
                 suffixes: frozenset[str] = IMAGE_EXTENSIONS) -> None:
        self.archive_name = archive_name
        self.dest = dest
        self.limits = limits
        self.suffixes = suffixes
        self.extracted: list[Path] = []
        self.skipped: list[tuple[str, str]] = []
        self.limit_reached: str | None = None
        self.total_bytes = 0
        self.entries = 0

    def skip(self, member_name: str, reason: str) -> None:
        display_name = _UNSAFE_CHARS.sub("?", _valid_unicode(member_name))
        logger.debug("%s: skipped %r: %s", self.archive_name, display_name, reason)
        self.skipped.append((display_name, reason))

    def consider(self, member: _Member, *, corrupt_is_fatal: bool) -> None:
        """Extract ``member`` if it is a safe image, else record why not.

        Raises:
            _Stop: a cap was reached; nothing after this member is extracted.
            ArchiveError: the member's data is corrupt and ``corrupt_is_fatal``.
        """
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise _Stop(
                f"more than {self.limits.max_entries} entries (ArchiveLimits.max_entries); "
                f"stopped at {member.name!r}, the rest of the archive was not extracted"
            )
        if member.kind == "folder":
            return
        reason = _refusal_reason(member, self.limits, self.suffixes)
        parts: list[str] | None = None
        if reason is None:
            parts, reason = _safe_relative_parts(member.name)
        if reason is not None or parts is None:
            self.skip(member.name, reason or "unusable file name")
            return
        if len(self.extracted) >= self.limits.max_files:
            raise _Stop(
                f"max_files ({self.limits.max_files}) reached (ArchiveLimits.max_files); "
                f"stopped at {member.name!r}, it and the rest of the archive were not extracted"
            )
        if self.total_bytes + member.size > self.limits.max_total_bytes:
            raise self._total_stop(member.name)
        target = self._target_path(member.name, parts)
        if target is not None:
            self._write(member, target, corrupt_is_fatal=corrupt_is_fatal)

    def _total_stop(self, member_name: str) -> _Stop:
        return _Stop(
            f"max_total_bytes ({format_bytes(self.limits.max_total_bytes)}) reached "
            f"(ArchiveLimits.max_total_bytes) after {len(self.extracted)} files; stopped at "
            f"{member_name!r}, it and the rest of the archive were not extracted"
        )

    def _target_path(self, member_name: str, parts: list[str]) -> Path | None:
        """Create the member's folder under ``dest`` and pick a free file name there."""
        folder = self.dest.joinpath(*parts[:-1])
        try:
            folder.mkdir(parents=True, exist_ok=True)
            inside = folder.resolve().is_relative_to(self.dest)
        except OSError as e:
            self.skip(member_name, f"its folder cannot be created ({e.strerror or e})")
            return None
        if not inside:  # only possible if dest already held a link
            self.skip(member_name, "its folder leads outside the destination")
            return None
        return _free_path(folder, parts[-1])

    def _write(self, member: _Member, target: Path, *, corrupt_is_fatal: bool) -> None:
        """Stream one member to ``target``; on any failure remove what was written."""
        try:
            output = target.open("xb")
        except OSError as e:
            raise CmceError(f"cannot write {target} ({e.strerror or e})") from e
        try:
            with output:
                written = self._copy(member, output, target)
        except _MemberProblem as problem:
            target.unlink(missing_ok=True)
            if problem.corrupt and corrupt_is_fatal:
                raise ArchiveError(
                    f"{self.archive_name}: archive is truncated or corrupt ({problem})"
                ) from problem
            self.skip(member.name, str(problem))
            return
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.total_bytes += written
        self.extracted.append(target)

    def _copy(self, member: _Member, output: BinaryIO, target: Path) -> int:
        """Copy the member's data, counting bytes against the caps.

        Returns:
            The number of bytes written.

        Raises:
            _MemberProblem: the data is corrupt or goes over a per-member cap.
            _Stop: ``max_total_bytes`` was reached.
            CmceError: ``target`` cannot be written.
        """
        written = 0
        for chunk in _read_chunks(member):
            written += len(chunk)
            problem = _size_problem(written, member.compressed_size, self.limits)
            if problem is not None:
                raise _MemberProblem(problem, corrupt=False)
            if self.total_bytes + written > self.limits.max_total_bytes:
                raise self._total_stop(member.name)
            try:
                output.write(chunk)
            except OSError as e:
                raise CmceError(f"cannot write {target} ({e.strerror or e})") from e
        return written


class _MemberProblem(Exception):
    """One member cannot be extracted; ``corrupt`` when its data is unreadable."""

    def __init__(self, reason: str, *, corrupt: bool) -> None:
        super().__init__(reason)
        self.corrupt = corrupt


def _read_chunks(member: _Member) -> Iterator[bytes]:
    """Yield the member's uncompressed data; read errors become :class:`_MemberProblem`."""
    try:
        with member.open() as source:
            while chunk := source.read(_COPY_CHUNK_BYTES):
                yield chunk
    except _MEMBER_READ_ERRORS as e:
        raise _MemberProblem(f"data is corrupt or unsupported ({e})", corrupt=True) from e


def _refusal_reason(member: _Member, limits: ArchiveLimits, suffixes: frozenset[str] = IMAGE_EXTENSIONS) -> str | None:
    """Why ``member`` is not extracted, judged from its header; ``None`` if it may be."""
    if member.kind == "symbolic link":
        return "symbolic link (links are never extracted)"
    if member.kind == "hard link":
        return "hard link (links are never extracted)"
    if member.kind == "special":
        return "device or other special file"
    if member.encrypted:
        return "encrypted (password-protected members are not supported)"
    if member.sparse:
        return "sparse file (not a plain image file)"
    components = [part for part in _SEPARATORS.split(member.name) if part]
    if any(part == "__MACOSX" for part in components) or (
        components and components[-1].startswith("._")
    ):
        return "macOS metadata, not a photo"
    lower = member.name.lower().rstrip("/\\")
    if lower.endswith(_NESTED_ARCHIVE_SUFFIXES):
        return "nested archive (archives inside archives are not opened)"
    suffix = Path(components[-1]).suffix.lower() if components else ""
    if suffix not in suffixes:
        shown = suffix or "no suffix"
        what = "an image file" if suffixes == IMAGE_EXTENSIONS else "a file of this upload"
        return f"not {what} ({shown}; valid: {', '.join(sorted(suffixes))})"
    if member.size > limits.max_member_bytes:
        return (
            f"larger than the per-file limit ({format_bytes(member.size)} > "
            f"{format_bytes(limits.max_member_bytes)}, ArchiveLimits.max_member_bytes)"
        )
    return _size_problem(member.size, member.compressed_size, limits)


def _size_problem(size: int, compressed_size: int | None, limits: ArchiveLimits) -> str | None:
    """Check an (actual or declared) uncompressed size against the per-member caps."""
    if size > limits.max_member_bytes:
        return (
            f"larger than the per-file limit ({format_bytes(limits.max_member_bytes)}, "
            "ArchiveLimits.max_member_bytes)"
        )
    if (
        compressed_size is not None
        and size > _RATIO_CHECK_MIN_BYTES
        and size > limits.max_ratio * compressed_size
    ):
        ratio = size / compressed_size if compressed_size else float("inf")
        return (
            f"suspicious compression ratio ({ratio:.0f}:1 > {limits.max_ratio:g}:1, "
            "ArchiveLimits.max_ratio; possible zip bomb)"
        )
    return None


def _safe_relative_parts(name: str) -> tuple[list[str] | None, str | None]:
    """Clean a member name into path components, or say why it cannot be used.

    Returns:
        ``(parts, None)`` with at least one component, or ``(None, reason)``.
    """
    name = unicodedata.normalize("NFC", _valid_unicode(name))
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return None, "absolute path (only paths relative to the archive are extracted)"
    parts: list[str] = []
    raw_parts = _SEPARATORS.split(name)
    for index, raw in enumerate(raw_parts):
        part = _UNSAFE_CHARS.sub("", raw)
        if part in ("", "."):
            continue
        if part == "..":
            return None, "path leads outside the archive folder (contains '..')"
        parts.append(_cap_component(part, keep_suffix=index == len(raw_parts) - 1))
    if not parts:
        return None, "empty file name"
    return parts, None


def _valid_unicode(name: str) -> str:
    """Replace undecodable bytes (tar's surrogate escapes) by U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _cap_component(part: str, *, keep_suffix: bool, max_bytes: int = _MAX_COMPONENT_BYTES) -> str:
    """Cut ``part`` to at most ``max_bytes`` UTF-8 bytes, keeping its suffix if asked."""
    if len(part.encode("utf-8")) <= max_bytes:
        return part
    suffix = Path(part).suffix if keep_suffix else ""
    stem = part[: len(part) - len(suffix)] if suffix else part
    budget = max_bytes - len(suffix.encode("utf-8"))
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore") + suffix


def _free_path(folder: Path, file_name: str) -> Path:
    """Return ``folder / file_name``, or with ``-1``, ``-2``... if that is taken."""
    candidate = folder / file_name
    if not os.path.lexists(candidate):
        return candidate
    suffix = Path(file_name).suffix
    stem = file_name[: len(file_name) - len(suffix)] if suffix else file_name
    counter = 1
    while True:
        tag = f"-{counter}"
        capped_stem = _cap_component(
            stem, keep_suffix=False, max_bytes=_MAX_COMPONENT_BYTES - len((tag + suffix).encode())
        )
        candidate = folder / f"{capped_stem}{tag}{suffix}"
        if not os.path.lexists(candidate):
            return candidate
        counter += 1
