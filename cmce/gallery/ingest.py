"""Ingest: photos -> gallery entries and raw backbone embeddings.

A photo is read and decoded by the safe loader (``decode_photo``), every face of a batch
of photos is detected once and embedded by every backbone that runs (``embed_photos``):
the one indexing step of ``Gallery.add_images`` and of the ``cmce.pipeline`` runners.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from cmce.compat import renamed
from cmce.errors import ImageError, LimitError
from cmce.faces.geometry import MIN_FACE_PIXELS, Face, pick_subject, too_small_face, too_small_image
from cmce.faces.image_quality import FaceImageQuality, face_image_quality
from cmce.io.images import DEFAULT_LIMITS, ImageLimits, content_hash, load_image
from cmce.io.limits import env_positive_int
from cmce.method.engine import FaceEngine

__all__ = [
    "DEFAULT_GALLERY_LIMITS",
    "EmbeddedPhotos",
    "GalleryEntry",
    "GalleryLimits",
    "IngestReport",
    "Photo",
    "ProgressFn",
    "check_photo_size",
    "decode_photo",
    "embed_photos",
    "plural",
    "read_photos",
]

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class GalleryLimits:
    """Caps for one gallery, suited to a free CPU Space by default.

    Attributes:
        max_files: images per indexing request.
        max_faces_per_image: faces kept per image (largest first); more are reported.
        max_entries: gallery entries in total.
        image: bytes and pixel caps per image.
        detect_max_side: images are detected on a copy downscaled to this side.
    """

    max_files: int = 300
    max_faces_per_image: int = 20
    max_entries: int = 3000
    image: ImageLimits = DEFAULT_LIMITS
    detect_max_side: int = 800

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GalleryLimits:
        """Defaults overridden by ``CMCE_MAX_FILES``, ``CMCE_MAX_ENTRIES``,
        ``CMCE_MAX_FACES_PER_IMAGE``, ``CMCE_MAX_PIXELS`` and ``CMCE_MAX_IMAGE_MB``.

        Raises:
            LimitError: a value that is not a positive integer.
        """
        base = cls()
        value = partial(env_positive_int, os.environ if environ is None else environ)  # (name, default) -> int

        image = ImageLimits(
            max_pixels=value("CMCE_MAX_PIXELS", base.image.max_pixels),
            max_bytes=value("CMCE_MAX_IMAGE_MB", base.image.max_bytes // 2**20) * 2**20,
        )
        return cls(
            max_files=value("CMCE_MAX_FILES", base.max_files),
            max_faces_per_image=value("CMCE_MAX_FACES_PER_IMAGE", base.max_faces_per_image),
            max_entries=value("CMCE_MAX_ENTRIES", base.max_entries),
            image=image,
            detect_max_side=base.detect_max_side,
        )


DEFAULT_GALLERY_LIMITS = GalleryLimits()
"""The caps a gallery gets when none are given."""


@dataclass(frozen=True)
class GalleryEntry:
    """One face in a gallery.

    Attributes:
        label: identity label (folder or ``Name_0001``-style file name), if known.
        source: file name shown to the user.
        face: where the face is in that file.
        content_hash: sha256 of the file's bytes.
        thumbnail: JPEG bytes of a loose crop around the face (for display).
        entry_id: ``<content hash>:<face number in the photo>``, unique in a gallery.
        uri: where the photo can be read again (for backfill), or None.
        image_quality: the face's size, sharpness and exposure in its photo, measured
            at ingest (``cmce.faces.image_quality``); NaN for entries stored before.
    """

    label: str | None
    source: str
    face: Face
    content_hash: str
    thumbnail: bytes = field(repr=False)
    entry_id: str = ""
    uri: str | None = None
    image_quality: FaceImageQuality = field(default_factory=FaceImageQuality)


def plural(count: int, word: str) -> str:
    """``"1 face"``, ``"2 faces"``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class IngestReport:
    """What one indexing request did."""

    added: int
    files: int
    skipped: tuple[tuple[str, str], ...] = ()
    duplicates: tuple[str, ...] = ()
    limits_reached: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        parts = [f"{plural(self.added, 'face')} indexed from {plural(self.files, 'file')}"]
        if self.skipped:
            parts.append(f"{plural(len(self.skipped), 'file')} skipped")
        if self.duplicates:
            parts.append(f"{plural(len(self.duplicates), 'duplicate')} ignored")
        parts += list(self.limits_reached) + list(self.notes)
        return "; ".join(parts)


def _thumbnail(image: np.ndarray, face: Face, size: int = 128) -> bytes:
    from PIL import Image

    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * 0.75
    h, w = image.shape[:2]
    box = (int(max(cx - half, 0)), int(max(cy - half, 0)), int(min(cx + half, w)), int(min(cy + half, h)))
    crop = Image.fromarray(image).crop(box)
    crop.thumbnail((size, size))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def decode_photo(data: bytes, name: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A photo's bytes decoded by the safe loader, as indexing decodes every photo.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        LimitError: more bytes than ``limits.max_bytes``. ImageError: not a readable image.
    """
    check_photo_size(len(data), name, limits)
    return load_image(data, limits=limits, name=name)


def check_photo_size(size: int, name: str, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse a photo file of more than ``limits.max_bytes`` before it is read or hashed.

    Raises:
        LimitError: over the cap (the message names the photo and both sizes).
    """
    if size > limits.max_bytes:
        raise LimitError(f"{name}: {size / 2**20:.1f} MiB, over the {limits.max_bytes / 2**20:.0f} MiB "
                         f"per-image limit")


@dataclass(frozen=True)
class Photo:
    """A decoded photo on its way into a gallery.

    Attributes:
        name: display name (``source`` of its entries).
        image: (H, W, 3) uint8 RGB.
        label: identity label, given to the photo's subject face only.
        content_hash: sha256 of the file's bytes.
        uri: where it can be read again, or None.
    """

    name: str
    image: np.ndarray = field(repr=False)
    label: str | None
    content_hash: str
    uri: str | None = None


@dataclass(frozen=True)
class EmbeddedPhotos:
    """What ``embed_photos`` made of a batch of photos.

    Attributes:
        entries: one per face, photo by photo, largest face first within a photo.
        embeddings: backbone name -> (len(entries), D) float32, rows in ``entries`` order.
        skipped: ``(photo, reason)`` of photos without an entry (no face, face or image
            under ``MIN_FACE_PIXELS``, gallery full).
        limits_reached: messages about caps reached (faces per photo, entries).
    """

    entries: tuple[GalleryEntry, ...]
    embeddings: Mapping[str, np.ndarray]
    skipped: tuple[tuple[Photo, str], ...] = ()
    limits_reached: tuple[str, ...] = ()


def embed_photos(engine: FaceEngine, photos: Sequence[Photo], *, max_faces_per_image: int = 20,
                 max_entries: int | None = None, stored: int = 0) -> EmbeddedPhotos:
    """Detect every face of a batch of photos and embed them with every backbone that runs.

    Detection runs once over the whole batch, then each backbone embeds all the faces
    of all the photos in batches of its own size. Faces of a photo are kept largest
    first (at most ``max_faces_per_image``); entry ``i`` of a photo gets the id
    ``<content hash>:<i>`` and the photo's label only if it is the photo's subject
    (``cmce.faces.pick_subject``), a thumbnail, and its size, sharpness and exposure
    (``cmce.faces.image_quality``, measured on the photo; embeddings do not depend on
    them). This is the one indexing step of ``Gallery.add_images`` and of the
    ``cmce.pipeline`` runners. Faces under ``cmce.faces.MIN_FACE_PIXELS`` wide are left
    out (noted in ``limits_reached``); a photo left without a face, or whose shorter side
    is under it, is skipped with that reason.

    Args:
        engine: the models.
        photos: decoded photos.
        max_faces_per_image: faces kept per photo (the largest).
        max_entries: entries a gallery may hold (None: no cap); photos that do not fit
            are skipped, the faces of the last one that partly fits are cut.
        stored: entries the gallery already holds.
    """
    faces_per = engine.detect([p.image for p in photos], [p.name for p in photos])
    kept: list[tuple[Photo, list[Face], int | None]] = []
    skipped: list[tuple[Photo, str]] = []
    limits: list[str] = []
    left = None if max_entries is None else max_entries - stored
    for photo, faces in zip(photos, faces_per):
        name = photo.name
        if not faces:
            skipped.append((photo, too_small_image(photo.image.shape) or "no face found"))
            continue
        small = [f for f in faces if too_small_face(f) is not None]
        if len(small) == len(faces):
            skipped.append((photo, str(too_small_face(max(faces, key=lambda f: f.width)))))
            continue
        if small:
            limits.append(f"{name}: {plural(len(small), 'face')} under {MIN_FACE_PIXELS} px wide left out")
            faces = [f for f in faces if too_small_face(f) is None]
        faces = sorted(faces, key=lambda f: -f.area)
        if len(faces) > max_faces_per_image:
            limits.append(f"{name}: {len(faces)} faces, kept the {max_faces_per_image} largest")
            faces = faces[:max_faces_per_image]
        if left is not None:
            if left <= 0:
                skipped.append((photo, f"gallery is full ({max_entries} entries)"))
                if not any("gallery is full" in m for m in limits):
                    limits.append(skipped[-1][1])
                continue
            if len(faces) > left:
                limits.append(f"{name}: only {left} of {len(faces)} faces fit (max entries)")
                faces = faces[:left]
            left -= len(faces)
        kept.append((photo, faces, pick_subject(faces)))
    if not kept:
        return EmbeddedPhotos((), {}, tuple(skipped), tuple(limits))
    emb = engine.embed_gallery_batch([(p.image, faces) for p, faces, _ in kept])  # every face, batched per backbone
    entries = tuple(  # the photo's pixels are at hand once: thumbnail and image quality now
        GalleryEntry(p.label if i == subject else None, p.name, f, p.content_hash, _thumbnail(p.image, f),
                     f"{p.content_hash}:{i}", p.uri, face_image_quality(p.image, f))
        for p, faces, subject in kept
        for i, f in enumerate(faces)
    )
    return EmbeddedPhotos(entries, emb, tuple(skipped), tuple(limits))



def read_photos(
    items: Sequence[tuple[str, bytes | str | os.PathLike, str | None]], seen: set[str],
    limits: ImageLimits = DEFAULT_LIMITS, *, record_paths: bool = True,
) -> tuple[list[Photo], list[tuple[str, str]], list[str]]:
    """Read, hash and decode a batch of photo files, as ``Gallery.add_images`` does.

    Args:
        items: ``(display name, file bytes or path, label or None)`` per photo.
        seen: content hashes already held; a photo whose hash is in it is a duplicate.
            The hashes of the photos read are added to it.
        limits: bytes and pixel caps per photo.
        record_paths: give each photo read from a path its absolute path as ``uri``.

    Returns:
        ``(photos, skipped, duplicates)``: the decoded photos; ``(name, reason)`` of the
        files that are too large, unreadable or not an image; the names of duplicates.
    """
    photos: list[Photo] = []
    skipped: list[tuple[str, str]] = []
    duplicates: list[str] = []
    for name, src, label in items:
        try:
            data = Path(src).read_bytes() if not isinstance(src, (bytes, bytearray)) else bytes(src)
            check_photo_size(len(data), name, limits)
            digest = content_hash(data)
            if digest in seen:
                duplicates.append(name)
                continue
            img = decode_photo(data, name, limits)
        except (ImageError, LimitError) as e:
            skipped.append((name, str(e).removeprefix(f"{name}: ")))
            continue
        except OSError as e:
            skipped.append((name, f"cannot read file ({e.strerror or e})"))
            continue
        seen.add(digest)
        uri = str(Path(src).resolve()) if record_paths and not isinstance(src, (bytes, bytearray)) else None
        photos.append(Photo(name, img, label, digest, uri))
    return photos, skipped, duplicates

__getattr__ = renamed(__name__, {'IndexReport': 'IngestReport'}, globals(), "'index' names vector indexes; photos are ingested")
