"""The faces of a query photo shown while the gallery is empty, at a bounded cost.

A query on an empty gallery still shows the photo with its faces numbered (issue 25), but it
is also what every new session of a flood asks for (issue 24): one client sending the same
photo under a thousand new sessions must not cost a thousand face detections. :class:`FacesPreview`
remembers the faces found per (detector, file bytes): a photo seen before is decoded (within
the image limits, to draw its boxes) but not detected again. The memory is a small LRU of face
boxes (``size`` entries of a few floats each), never of pixels. The key hashes the file as sent,
not its decoded pixels: 50-60 times cheaper (0.66 against 38 ms for a 12-megapixel JPEG, whose
detection takes 96 ms: ``benchmarks/bench_serve_overheads.py``); the same pixels sent in another
encoding are detected once more.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from cmce.gallery.searchable import QueryPhoto, detect_query
from cmce.io.images import load_image
from cmce.io.limits import ImageLimits
from cmce.method.engine import FaceEngine

__all__ = ["FacesPreview"]


class FacesPreview:
    """Query photos read and detected, the detections of the last ``size`` distinct photos remembered."""

    def __init__(self, limits: ImageLimits, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.limits, self.size = limits, size
        self._faces: OrderedDict[tuple[int, str], tuple] = OrderedDict()  # (detector, sha256) -> faces
        self._lock = threading.Lock()
        self.detections = 0  # photos detected (not remembered), for tests and logs

    def photo(self, engine: FaceEngine, path: str, name: str) -> QueryPhoto:
        """``path`` read (size, then header, then pixels: ``load_image``) and its faces, largest first.

        Raises:
            ImageError, LimitError: as ``load_image`` (unreadable, too large); nothing is remembered.
        """
        image = load_image(path, name=name, limits=self.limits)  # its size checked before it is read
        key = (id(engine.detector), hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest())
        with self._lock:
            faces = self._faces.get(key)
            if faces is not None:
                self._faces.move_to_end(key)
        if faces is None:
            faces = detect_query(engine, image, name).faces
            with self._lock:
                self.detections += 1
                self._faces[key] = faces
                while len(self._faces) > self.size:
                    self._faces.popitem(last=False)
        return QueryPhoto(name, image, tuple(replace(f, source=name) for f in faces))
