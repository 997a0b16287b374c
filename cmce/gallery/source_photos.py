"""Downscaled copies of a gallery's source photos, so that a match can be shown in its photo.

Uploaded photos are deleted once indexed; a :class:`SourcePhotos` keeps, by content hash,
a JPEG of each indexed photo with its longest side at most ``max_side`` pixels, in a
folder of its own, within ``max_bytes`` (a photo that does not fit is not kept, and
counted). Photos that ship with the app (the example galleries) are referred to, never
copied or charged. A gallery entry's face box is in its photo's pixels
(``GalleryEntry.face.box``); :meth:`SourcePhotos.open` gives the kept image with the scale
that maps such a box onto it.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cmce.errors import CmceError
from cmce.gallery.ingest import Photo
from cmce.io.images import downscale_for_detection

__all__ = ["KeptPhoto", "SourcePhotos", "MAX_SIDE"]

logger = logging.getLogger(__name__)

MAX_SIDE = 1024  # longest side of a kept copy, in pixels


@dataclass(frozen=True)
class KeptPhoto:
    """One photo kept: where, and how to map the entry boxes onto it.

    Attributes:
        path: the JPEG copy (or the shipped file).
        scale: kept pixels per photo pixel (1.0 for a shipped file, read as it is).
        nbytes: bytes it holds on disk (0 for a shipped file: nothing was written).
        shipped: a file that ships with the app (never deleted).
    """

    path: Path
    scale: float
    nbytes: int
    shipped: bool = False


class SourcePhotos:
    """A session's kept source photos, by content hash, at most ``max_bytes`` on disk.

    Args:
        folder: where the copies go (created on the first one; removed by ``clear``).
        max_bytes: bytes the copies may hold together; a photo past it is not kept
            (``refused`` counts it) and its matches say so.
        max_side: longest side of a copy in pixels.
        quality: JPEG quality of the copies.

    >>> import tempfile
    >>> from cmce.gallery.ingest import Photo
    >>> store = SourcePhotos(Path(tempfile.mkdtemp()) / "photos", max_bytes=10**6, max_side=100)
    >>> store.keep(Photo("a.jpg", np.zeros((400, 300, 3), np.uint8), None, "ab12"))
    True
    >>> kept = store.get("ab12"); kept.scale, Image.open(kept.path).size
    (0.25, (75, 100))
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int, max_side: int = MAX_SIDE, quality: int = 85) -> None:
        if max_bytes < 0 or max_side < 16:
            raise CmceError(f"SourcePhotos needs max_bytes >= 0 and max_side >= 16, got {max_bytes}, {max_side}")
        self.folder, self.max_bytes, self.max_side, self.quality = Path(folder), int(max_bytes), int(max_side), quality
        self._kept: dict[str, KeptPhoto] = {}
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    @property
    def bytes_held(self) -> int:
        """Bytes the copies hold on disk now."""
        with self._lock:
            return sum(k.nbytes for k in self._kept.values())

    @property
    def refused(self) -> int:
        """Photos not kept because ``max_bytes`` was reached (since the last ``clear``)."""
        with self._lock:
            return len(self._refused)

    def was_refused(self, content_hash: str) -> bool:
        with self._lock:
            return content_hash in self._refused

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def keep(self, photo: Photo) -> bool:
        """Keep a downscaled JPEG copy of ``photo`` (already kept: nothing to do).

        Returns:
            Whether the photo is kept (False: it would pass ``max_bytes``).
        """
        with self._lock:
            if photo.content_hash in self._kept:
                return True
        small, _ = downscale_for_detection(np.asarray(photo.image, np.uint8), self.max_side)  # area-averaged
        img = Image.fromarray(small).convert("RGB")
        scale = img.width / photo.image.shape[1]
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        data = buf.getvalue()
        with self._lock:
            if sum(k.nbytes for k in self._kept.values()) + len(data) > self.max_bytes:
                self._refused.add(photo.content_hash)
                return False
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{photo.content_hash[:32]}.jpg"
            path.write_bytes(data)
            self._kept[photo.content_hash] = KeptPhoto(path, float(scale), len(data))
            return True

    def add_shipped(self, content_hash: str, path: str | os.PathLike) -> None:
        """Refer to a photo that ships with the app (an example gallery's): nothing written or charged."""
        with self._lock:
            self._kept[content_hash] = KeptPhoto(Path(path), 1.0, 0, shipped=True)

    def get(self, content_hash: str) -> KeptPhoto | None:
        """The kept photo of ``content_hash`` (None: not kept)."""
        with self._lock:
            return self._kept.get(content_hash)

    def keep_only(self, content_hashes: set[str]) -> int:
        """Delete the copies of photos no longer in the gallery. Returns how many were deleted."""
        with self._lock:
            gone = [h for h in self._kept if h not in content_hashes]
            dropped = [self._kept.pop(h) for h in gone]
        for k in dropped:
            if not k.shipped:
                k.path.unlink(missing_ok=True)
        return len(dropped)

    def clear(self) -> None:
        """Forget every photo and delete the copies (the gallery was cleared or replaced)."""
        with self._lock:
            self._kept.clear()
            self._refused.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def open(self, content_hash: str) -> tuple[np.ndarray, float] | None:
        """The kept photo as (H, W, 3) uint8 RGB and its scale (None: not kept, or its file is gone).

        A shipped photo is downscaled here to ``max_side`` like a kept copy (the scale says so).
        """
        kept = self.get(content_hash)
        if kept is None:
            return None
        try:
            with Image.open(kept.path) as im:
                img = im.convert("RGB")
        except OSError as e:
            logger.warning("kept photo %s unreadable: %s", kept.path.name, e)
            return None
        small, _ = downscale_for_detection(np.asarray(img), self.max_side)
        return small, kept.scale * small.shape[1] / img.width
