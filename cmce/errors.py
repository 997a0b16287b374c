"""One error hierarchy for the whole library.

Every error says what was wrong and, where there is a choice, what is valid.
The app turns these into ``gr.Error`` messages; the CLI prints them and exits 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


class CmceError(Exception):
    """Base class of every error raised on purpose by ``cmce``."""


class ImageError(CmceError):
    """A file could not be read as an image (not an image, corrupt, too large...)."""


class LimitError(CmceError):
    """A configured cap (files, bytes, pixels, faces, entries) was reached."""


class ArchiveError(CmceError):
    """An uploaded archive is unsafe or unreadable (path traversal, bomb, nested...)."""


class BackboneError(CmceError):
    """Unknown backbone name, or a backbone whose weights are missing or corrupt."""


class BackboneUnavailableError(BackboneError):
    """A registered backbone cannot run here (package missing, download needed offline)."""


class ChecksumError(CmceError):
    """A file's sha256 does not match the one recorded for it."""


class BundleError(CmceError):
    """A bundle folder or Hub repo is missing, corrupt, or does not fit this version."""


class HubError(BundleError):
    """The Hugging Face Hub could not be reached or refused the request."""


class GalleryError(CmceError):
    """A gallery is empty, corrupt, or was built with another bundle."""


class DatasetError(CmceError):
    """A folder-per-identity dataset is missing, empty or malformed."""


class NoFaceError(CmceError):
    """A query photo holds no face to search with (a normal outcome, to be reported)."""


class CorrectionError(GalleryError):
    """A correction (must-link, cannot-link, name) or an erasure that cannot be applied to a gallery."""


class UnknownEntryError(CorrectionError):
    """An entry id or a person's name that the gallery does not hold (the message lists valid ones)."""


class ContradictionError(CorrectionError):
    """Corrections that contradict each other: a pair both must- and cannot-linked, or must-links
    that join two cannot-linked entries."""


class PeopleError(CmceError):
    """Faces cannot be grouped as asked: bad vectors or settings, or constraints that contradict each other."""


def one_named(items: Iterable[T], wanted: str, *, key: Callable[[T], str], what: str,
              error: type[CmceError] = CmceError, where: str = "") -> T:
    """The item of ``items`` whose ``key`` is ``wanted``; else ``error`` listing the keys there are.

    Example:
        >>> one_named(["a", "bb"], "bb", key=str, what="word")
        'bb'
        >>> one_named(["a", "bb"], "c", key=str, what="word", where=" in the list")
        Traceback (most recent call last):
        ...
        cmce.errors.CmceError: no word 'c' in the list; the words are ['a', 'bb']
    """
    items = list(items)
    for item in items:
        if key(item) == wanted:
            return item
    raise error(f"no {what} {wanted!r}{where}; the {what}s are {[key(i) for i in items]}")
