"""A gallery folder's manifest, and the rules every write to the folder follows.

``manifest.json`` names the format and its version, the backbones by weights checksum, the
shards in order (with their sizes), the derived data in use and the skipped-file tables. It
is replaced atomically, only after the files it lists are complete, and by one writer at a
time (``locked``); a whole folder is replaced by ``swap_in``. The folder layout is described
in ``cmce.storage``.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cmce.cache import atomic_write_bytes
from cmce.errors import GalleryError
from cmce.storage.records import GalleryRecords

__all__ = [
    "CORRECTIONS",
    "CORRECTIONS_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "is_gallery",
    "locked",
    "read_manifest",
    "require_manifest",
    "shards_signature",
    "swap_in",
    "write_manifest",
]

FORMAT = "cmce-gallery"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
CORRECTIONS = "corrections"
"""The optional manifest key listing the corrections table (``cmce.storage.corrections``)."""
CORRECTIONS_DIR = "people"
"""The folder of the corrections table inside a gallery."""
_V1_FILES = ("gallery.json", "embeddings.npz")


def _now() -> str:
    """The time now (UTC, to the second) as the manifest records it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_gallery(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved gallery (any version)."""
    f = Path(folder)
    return (f / MANIFEST).is_file() or all((f / n).is_file() for n in _V1_FILES)


def require_manifest(folder: Path) -> dict:
    """The manifest of a gallery in the current format (version ``FORMAT_VERSION``), checked.

    Unlike ``read_manifest``, a folder without ``manifest.json`` (a version 1 gallery
    included) is an error: every writer and the archive reader need a current manifest.

    Raises:
        GalleryError: no manifest, a corrupt one, another format or version, or one
            without its ``backbones`` mapping and ``shards`` list.
    """
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
    return require_manifest(folder)


def write_manifest(folder: Path, manifest: dict) -> None:
    """Replace ``folder``'s manifest with ``manifest`` (its ``updated`` time set now), atomically.

    Call it only after every file the manifest lists is complete, and under ``locked``.
    """
    manifest = dict(manifest, updated=_now())
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One writer at a time per gallery folder (an advisory lock file).

    Every read-modify-write of the manifest runs inside ``with locked(folder):``.
    """
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def shards_signature(manifest: dict) -> list[str]:
    """The shard files in order: a derived folder is valid only for this list."""
    return [s["file"] for s in manifest.get("shards", [])]


def _new_manifest(records: GalleryRecords) -> dict:
    """The manifest of a gallery of ``records`` with no shard listed yet."""
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


def swap_in(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; a previous ``dest`` is removed only after the swap.

    How a folder written complete under a temporary name (a gallery, a derived folder)
    replaces the previous one: ``tmp`` must be on the same file system as ``dest``.
    """
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def _next_shard_number(manifest: dict) -> int:
    """The number of the next shard file: one more than the highest listed (0 for none)."""
    return 1 + max([int(Path(s["file"]).stem.rsplit("-", 1)[1]) for s in manifest["shards"]] + [-1])


def _next_number(manifest: dict, key: str) -> int:
    """The number of the next file of the manifest's ``key`` list (e.g. ``"skipped"``)."""
    return 1 + max([int(Path(s["file"]).stem.rsplit("-", 1)[1]) for s in manifest.get(key, [])] + [-1])
