"""Tests for cmce.io.archives: every archive is generated in tmp_path, nothing is downloaded."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import unicodedata
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmce.errors import ArchiveError, CmceError
from cmce.io.archives import ArchiveLimits, ExtractReport, extract_images
from cmce.io.images import load_image

_MIB = 1024 * 1024


def _png(colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(path: Path, members: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def _tar(path: Path, members: Iterable[tuple[tarfile.TarInfo, bytes | None]], mode: str) -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def _reasons(report: ExtractReport) -> dict[str, str]:
    return dict(report.skipped)


# ---------------------------------------------------------------- good archives


def test_zip_keeps_folders_and_skips_non_images(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "people.zip",
        [("alice/1.jpg", _png()), ("alice/2.PNG", _png()), ("bob/1.png", _png((0, 0, 255))),
         ("bob/", b""), ("readme.txt", b"hello")],
    )
    dest = tmp_path / "out"
    report = extract_images(archive, dest)
    assert _files_under(dest) == ["alice/1.jpg", "alice/2.PNG", "bob/1.png"]
    assert all(path.is_absolute() and path.is_file() for path in report.extracted)
    assert [p.relative_to(dest.resolve()).as_posix() for p in report.extracted] == [
        "alice/1.jpg", "alice/2.PNG", "bob/1.png"
    ]
    assert list(_reasons(report)) == ["readme.txt"]  # folders are not reported
    assert "not an image file (.txt" in _reasons(report)["readme.txt"]
    assert report.limit_reached is None
    assert load_image(dest / "bob" / "1.png")[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("suffix, mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w"),
                                          (".tar.xz", "w:xz")])
def test_tar_archives(tmp_path: Path, suffix: str, mode: str) -> None:
    archive = _tar(
        tmp_path / f"people{suffix}",
        [_tar_file("carol/a.png", _png()), _tar_file("notes.md", b"# notes")],
        mode,
    )
    report = extract_images(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == ["carol/a.png"]
    assert _reasons(report) == {"notes.md": _reasons(report)["notes.md"]}
    assert report.limit_reached is None


def test_format_is_recognised_from_content(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "upload.bin", [("dave/x.png", _png())])
    assert len(extract_images(archive, tmp_path / "out").extracted) == 1


def test_report_is_frozen_and_validated(tmp_path: Path) -> None:
    report = extract_images(_zip(tmp_path / "a.zip", [("x.png", _png())]), tmp_path / "out")
    with pytest.raises(AttributeError):
        report.limit_reached = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="absolute"):
        ExtractReport(extracted=(Path("relative.png"),), skipped=())


# ---------------------------------------------------------------- unsafe members


@pytest.mark.parametrize(
    "name", ["../evil.png", "a/../../evil.png", "..\\evil.png", ".\x01./evil.png"]
)
def test_zip_traversal_is_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "evil.zip", [(name, _png()), ("good/ok.png", _png())])
    dest = tmp_path / "deep" / "out"
    report = extract_images(archive, dest)
    assert _files_under(tmp_path / "deep") == ["out/good/ok.png"]
    assert not (tmp_path / "evil.png").exists()
    (reason,) = [reason for _, reason in report.skipped]
    assert "outside the archive" in reason


@pytest.mark.parametrize("name", ["/tmp/abs.png", "C:/Windows/abs.png", "\\\\server\\abs.png"])
def test_absolute_paths_are_refused(tmp_path: Path, name: str) -> None:
    info = zipfile.ZipInfo("placeholder.png")
    info.filename = name  # ZipInfo() itself strips a leading slash
    archive = _zip(tmp_path / "abs.zip", [(info, _png())])
    report = extract_images(archive, tmp_path / "out")
    assert report.extracted == ()
    assert "absolute path" in report.skipped[0][1]


def test_tar_absolute_path_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "abs.tar", [_tar_file("/etc/abs.png", _png())], "w")
    report = extract_images(archive, tmp_path / "out")
    assert report.extracted == () and "absolute path" in report.skipped[0][1]


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("alice/link.png")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path / "links.zip", [(link, b"/etc/passwd"), ("alice/real.png", _png())])
    dest = tmp_path / "out"
    report = extract_images(archive, dest)
    assert _files_under(dest) == ["alice/real.png"]
    assert not (dest / "alice" / "link.png").is_symlink()
    assert "symbolic link" in _reasons(report)["alice/link.png"]


def test_tar_links_and_devices_are_refused(tmp_path: Path) -> None:
    symlink = tarfile.TarInfo("a/sym.png")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hardlink = tarfile.TarInfo("a/hard.png")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "a/real.png"
    device = tarfile.TarInfo("a/dev.png")
    device.type = tarfile.CHRTYPE
    fifo = tarfile.TarInfo("a/fifo.png")
    fifo.type = tarfile.FIFOTYPE
    archive = _tar(
        tmp_path / "links.tar.gz",
        [_tar_file("a/real.png", _png()), (symlink, None), (hardlink, None), (device, None),
         (fifo, None)],
        "w:gz",
    )
    dest = tmp_path / "out"
    report = extract_images(archive, dest)
    assert _files_under(dest) == ["a/real.png"]
    reasons = _reasons(report)
    assert "symbolic link" in reasons["a/sym.png"]
    assert "hard link" in reasons["a/hard.png"]
    assert "special file" in reasons["a/dev.png"] and "special file" in reasons["a/fifo.png"]


def test_nested_archives_are_skipped(tmp_path: Path) -> None:
    inner_zip = _zip(tmp_path / "inner.zip", [("x.png", _png())]).read_bytes()
    inner_tgz = _tar(tmp_path / "inner.tgz", [_tar_file("y.png", _png())], "w:gz").read_bytes()
    archive = _zip(
        tmp_path / "outer.zip",
        [("alice/inner.zip", inner_zip), ("bob/photos.tar.gz", inner_tgz), ("c/ok.png", _png())],
    )
    report = extract_images(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == ["c/ok.png"]
    reasons = _reasons(report)
    assert "nested archive" in reasons["alice/inner.zip"]
    assert "nested archive" in reasons["bob/photos.tar.gz"]


def test_macos_metadata_is_skipped(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "mac.zip",
        [("alice/1.png", _png()), ("__MACOSX/alice/._1.png", b"\x00\x05\x16\x07"),
         ("alice/._1.png", b"\x00\x05\x16\x07")],
    )
    report = extract_images(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == ["alice/1.png"]
    assert all("macOS metadata" in reason for _, reason in report.skipped)
    assert len(report.skipped) == 2


def _patch_zip_headers(data: bytes, *, flags_set: int = 0, flags_clear: int = 0,
                       uncompressed_size: int | None = None) -> bytes:
    """Edit the flags / declared size in the local and central headers of a 1-member zip."""
    patched = bytearray(data)
    for signature, flags_at, size_at in ((b"PK\x03\x04", 6, 22), (b"PK\x01\x02", 8, 24)):
        offset = patched.find(signature)
        assert offset >= 0 and patched.find(signature, offset + 1) < 0
        (flags,) = struct.unpack_from("<H", patched, offset + flags_at)
        struct.pack_into("<H", patched, offset + flags_at, (flags | flags_set) & ~flags_clear)
        if uncompressed_size is not None:
            struct.pack_into("<I", patched, offset + size_at, uncompressed_size)
    return bytes(patched)


def test_encrypted_member_is_skipped(tmp_path: Path) -> None:
    data = _zip(tmp_path / "plain.zip", [("secret.png", _png())]).read_bytes()
    archive = tmp_path / "locked.zip"
    archive.write_bytes(_patch_zip_headers(data, flags_set=0x1))
    report = extract_images(archive, tmp_path / "out")
    assert report.extracted == () and "encrypted" in report.skipped[0][1]


# ---------------------------------------------------------------- bombs and limits


def _zip_of_zeros(path: Path, name: str, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w") as member:
            chunk = bytes(_MIB)
            for _ in range(size // _MIB):
                member.write(chunk)
    return path


def test_zip_bomb_member_refused_by_ratio(tmp_path: Path) -> None:
    archive = _zip_of_zeros(tmp_path / "bomb.zip", "bomb/zeros.bmp", 20 * _MIB)
    assert archive.stat().st_size < 100_000  # 20 MiB of zeros in ~20 KB
    dest = tmp_path / "out"
    report = extract_images(archive, dest)
    assert report.extracted == () and _files_under(dest) == []
    assert "compression ratio" in _reasons(report)["bomb/zeros.bmp"]


def test_header_that_lies_about_the_size_writes_nothing(tmp_path: Path) -> None:
    """The headers claim 1000 bytes for 4 MiB of zeros: never more than 1000 are written."""
    data = _zip_of_zeros(tmp_path / "real.zip", "zeros.bmp", 4 * _MIB).read_bytes()
    archive = tmp_path / "liar.zip"
    archive.write_bytes(_patch_zip_headers(data, uncompressed_size=1000))
    report = extract_images(archive, tmp_path / "out")
    assert report.extracted == () and _files_under(tmp_path / "out") == []
    assert "corrupt" in _reasons(report)["zeros.bmp"]


def test_member_over_size_limit(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    archive = _zip(tmp_path / "big.zip", [("big.bmp", noise), ("small.png", _png())])
    report = extract_images(archive, tmp_path / "out", limits=ArchiveLimits(max_member_bytes=4000))
    assert _files_under(tmp_path / "out") == ["small.png"]
    assert "per-file limit" in _reasons(report)["big.bmp"]


def test_tar_gz_expanding_too_much_is_stopped(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "bomb.tar.gz",
        [_tar_file("filler.bin", bytes(8 * _MIB)), _tar_file("late.png", _png())],
        "w:gz",
    )
    assert archive.stat().st_size < 100_000
    report = extract_images(archive, tmp_path / "out")
    assert report.extracted == ()
    assert report.limit_reached is not None and "max_ratio" in report.limit_reached


def test_more_files_than_max_files(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", [(f"p/{i}.png", _png()) for i in range(5)])
    report = extract_images(archive, tmp_path / "out", limits=ArchiveLimits(max_files=3))
    assert len(report.extracted) == 3 and len(_files_under(tmp_path / "out")) == 3
    assert report.limit_reached is not None
    assert "max_files (3)" in report.limit_reached and "p/3.png" in report.limit_reached

    exact = extract_images(archive, tmp_path / "out2", limits=ArchiveLimits(max_files=5))
    assert len(exact.extracted) == 5 and exact.limit_reached is None


def test_max_total_bytes(tmp_path: Path) -> None:
    image = _png()
    archive = _zip(tmp_path / "many.zip", [(f"p/{i}.png", image) for i in range(4)])
    limits = ArchiveLimits(max_total_bytes=len(image) * 2 + 10)
    report = extract_images(archive, tmp_path / "out", limits=limits)
    assert len(report.extracted) == 2 and len(_files_under(tmp_path / "out")) == 2
    assert report.limit_reached is not None and "max_total_bytes" in report.limit_reached


def test_max_entries(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "junk.zip", [(f"{i}.txt", b"") for i in range(10)])
    report = extract_images(archive, tmp_path / "out", limits=ArchiveLimits(max_entries=4))
    assert len(report.skipped) == 4
    assert report.limit_reached is not None and "max_entries" in report.limit_reached


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_files"):
        ArchiveLimits(max_files=0)
    with pytest.raises(ValueError, match="max_ratio"):
        ArchiveLimits(max_ratio=0.5)


# ---------------------------------------------------------------- broken archives


def test_corrupt_zip(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(ArchiveError, match=r"^broken\.zip: not a readable zip"):
        extract_images(archive, tmp_path / "out")


def test_truncated_zip(tmp_path: Path) -> None:
    data = _zip(tmp_path / "full.zip", [(f"{i}.png", _png()) for i in range(3)]).read_bytes()
    archive = tmp_path / "cut.zip"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=r"^cut\.zip"):
        extract_images(archive, tmp_path / "out")


def test_truncated_tar_gz_removes_what_it_extracted(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    data = _tar(
        tmp_path / "full.tar.gz",
        [_tar_file("a/first.png", _png()), _tar_file("a/second.bmp", noise)],
        "w:gz",
    ).read_bytes()
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=r"^cut\.tar\.gz: archive is truncated or corrupt"):
        extract_images(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == []


@pytest.mark.parametrize(
    "file_name, content, message",
    [("empty.zip", b"", "archive file is empty"), ("notes.tar", b"just text", "not a readable tar"),
     ("photo.jpg", _png(), "not a zip or tar archive")],
)
def test_not_an_archive(tmp_path: Path, file_name: str, content: bytes, message: str) -> None:
    archive = tmp_path / file_name
    archive.write_bytes(content)
    with pytest.raises(ArchiveError, match=rf"^{file_name.replace('.', '[.]')}: {message}"):
        extract_images(archive, tmp_path / "out")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"^gone\.zip: cannot read archive"):
        extract_images(tmp_path / "gone.zip", tmp_path / "out")


def test_destination_that_is_a_file(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("x.png", _png())])
    (tmp_path / "taken").write_text("")
    with pytest.raises(CmceError, match="destination folder"):
        extract_images(archive, tmp_path / "taken")


# ---------------------------------------------------------------- odd names


def test_odd_names_are_cleaned_not_rejected(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "José Müller")
    long_name = "é" * 150 + ".jpg"  # 304 bytes in UTF-8
    archive = _zip(
        tmp_path / "odd.zip",
        [(f"{decomposed}/фото 1.png", _png()), ("ctrl/bad\x01\x1bname.png", _png()),
         ("bidi/evil\u202e.png", _png()), (f"long/{'a' * 250}.png", _png()),
         (f"long/{long_name}", _png()), ("spaces/ a  b .png", _png()), ("./dot/./x.png", _png())],
    )
    dest = tmp_path / "out"
    report = extract_images(archive, dest)
    assert report.skipped == ()
    files = _files_under(dest)
    assert "José Müller/фото 1.png" in files  # NFC, as typed on Linux and Windows
    assert "ctrl/badname.png" in files
    assert "bidi/evil.png" in files
    assert "long/" + "a" * 196 + ".png" in files
    assert "long/" + "é" * 98 + ".jpg" in files  # 196 + 4 bytes, no split character
    assert "spaces/ a  b .png" in files
    assert "dot/x.png" in files
    assert all(len(part.encode()) <= 200 for f in files for part in f.split("/"))


def test_utf8_names_without_the_utf8_flag(tmp_path: Path) -> None:
    data = _zip(tmp_path / "flagged.zip", [("Zoë/1.png", _png())]).read_bytes()
    archive = tmp_path / "legacy.zip"
    archive.write_bytes(_patch_zip_headers(data, flags_clear=0x800))
    with zipfile.ZipFile(archive) as check:
        assert check.namelist() != ["Zoë/1.png"]  # zipfile decodes it as cp437
    extract_images(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == ["Zoë/1.png"]


def test_duplicates_and_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "1.png").write_bytes(b"keep me")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        archive = _zip(tmp_path / "dup.zip", [("a/1.png", _png()), ("a/1.png", _png((0, 255, 0)))])
    report = extract_images(archive, dest)
    assert (dest / "a" / "1.png").read_bytes() == b"keep me"
    assert [p.name for p in report.extracted] == ["1-1.png", "1-2.png"]
    assert load_image(dest / "a" / "1-2.png")[0, 0].tolist() == [0, 255, 0]


def test_file_and_folder_name_clash(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "clash.zip", [("x.png", _png()), ("x.png/inner.png", _png())])
    report = extract_images(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == ["x.png"]
    assert "folder cannot be created" in _reasons(report)["x.png/inner.png"]
