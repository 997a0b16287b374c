"""Searchable galleries: every face of every image, fused by a bundle, with rejection.

``FaceEngine`` holds the loaded models (detector, backbones, bundle) and is shared by
every gallery and user. ``Gallery`` holds one user's entries: the raw backbone
embeddings (so entries can be re-fused, added and removed without re-embedding the
rest), the fused vectors of every view, uncertainty, and a vector index per view.

Views are the columns of the side-by-side comparison: ``"ensemble"`` (CMCE), each
gallery model through its transformer, and ``"query"`` (the query model alone on both
sides). A query always costs one query-model forward pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from cmce.errors import CmceError, GalleryError, ImageError, LimitError
from cmce.faces.geometry import MIN_FACE_PIXELS, Face, pick_subject, too_small_face, too_small_image
from cmce.io.images import DEFAULT_LIMITS, ImageLimits, content_hash, load_image
from cmce.io.limits import env_positive_int
from cmce.method.answers import (
    Answer,
    DoubtMarks,
    decide_answer,
    doubt_marks,
    gallery_doubt,
    unknown_norm,
    unknown_note,
)
from cmce.method.bundle import Bundle, GalleryVectors
from cmce.method.engine import FaceEngine
from cmce.models.backbones import PRETRAINED
from cmce.search.index import VectorIndex
from cmce.storage.derived import write_derived
from cmce.storage.read import read_gallery
from cmce.storage.records import BackboneRecord, DerivedData, GalleryRecords, backbone_key, backbone_record
from cmce.storage.write import append_entries, write_gallery

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddedPhotos",
    "FaceEngine",
    "Gallery",
    "GalleryEntry",
    "GalleryLimits",
    "IndexReport",
    "LoadReport",
    "Match",
    "Photo",
    "QueryResult",
    "ViewResult",
    "bundle_fingerprint",
    "bundle_keys",
    "check_photo_size",
    "decode_photo",
    "embed_photos",
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
    """

    label: str | None
    source: str
    face: Face
    content_hash: str
    thumbnail: bytes = field(repr=False)
    entry_id: str = ""
    uri: str | None = None


def plural(count: int, word: str) -> str:
    """``"1 face"``, ``"2 faces"``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class IndexReport:
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


@dataclass(frozen=True)
class LoadReport:
    """How a saved gallery was opened with a bundle.

    Attributes:
        entries: entries read.
        missing: member name -> entries lacking that member's embedding (only members
            with at least one missing entry are listed).
        unusable: entries holding none of the bundle's members (kept on disk, never
            matched by this bundle).
        unused_backbones: backbone keys stored in the gallery that this bundle does not
            use (kept; another bundle may).
        seconds: time to re-project the raw embeddings into this bundle's space.
        photos_read: photos read while opening (always 0: raw embeddings suffice).
        converted_from: 1 when the folder was in the version 1 format.
    """

    entries: int
    missing: Mapping[str, int]
    unusable: int
    unused_backbones: tuple[str, ...]
    seconds: float
    photos_read: int = 0
    converted_from: int | None = None

    @property
    def lacking(self) -> int:
        """How many of the missing-member counts are non-zero (members lacking somewhere)."""
        return sum(1 for v in self.missing.values() if v)

    def summary(self) -> str:
        parts = [f"{self.entries} entries re-projected in {self.seconds:.2f} s; {self.photos_read} photos read"]
        if self.missing:
            parts.append("lacking: " + ", ".join(f"{m} on {n}" for m, n in self.missing.items()))
        if self.unusable:
            parts.append(f"{self.unusable} entries hold none of this bundle's members")
        if self.converted_from:
            parts.append(f"converted from format version {self.converted_from}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Match:
    """One gallery entry returned for a query in one view.

    Attributes:
        members: the ensemble members this entry was fused from (``"query"``: the
            query model's own embedding).
        lacks: the members it lacks (indexed before the bundle that serves it).
        member_scores: for the ensemble view, each member's similarity.
        doubtful: the entry's quality score is above the bundle's calibrated threshold
            (it is searched, and marked).
    """

    position: int
    label: str | None
    source: str
    score: float
    uncertainty: float
    quality: float
    member_scores: Mapping[str, float]
    members: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    doubtful: bool = False


@dataclass(frozen=True)
class ViewResult:
    """The ranked matches of one view (column).

    Attributes:
        view: ``"ensemble"``, a gallery model name, or ``"query"``.
        matches: best first; rejected entries never appear.
        threshold: similarity below which the answer is "unknown".
        unknown: the view names nobody (``answer.kind`` is not ``match``).
        answer: what the view answers and why (``answers.Answer``): a named person, or
            "Unknown" because nothing reaches the threshold, the answer rule is unsure,
            or the best match is a rejected or doubtful photo (whose queries are never
            handed to the next person).
    """

    view: str
    matches: tuple[Match, ...]
    threshold: float
    unknown: bool
    answer: Answer | None = None


@dataclass(frozen=True)
class QueryResult:
    """Everything a query returns."""

    faces: tuple[Face, ...]
    chosen: int
    views: Mapping[str, ViewResult]
    far: float


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
    (``cmce.faces.pick_subject``). This is the one indexing step of ``Gallery.add_images``
    and of the ``cmce.pipeline`` runners. Faces under ``cmce.faces.MIN_FACE_PIXELS`` wide
    are left out (noted in ``limits_reached``); a photo left without a face, or whose
    shorter side is under it, is skipped with that reason.

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
    entries = tuple(
        GalleryEntry(p.label if i == subject else None, p.name, f, p.content_hash, _thumbnail(p.image, f),
                     f"{p.content_hash}:{i}", p.uri)
        for p, faces, subject in kept
        for i, f in enumerate(faces)
    )
    return EmbeddedPhotos(entries, emb, tuple(skipped), tuple(limits))


def bundle_keys(bundle: Bundle) -> dict[str, str]:
    """Backbone name -> the key (name and weights checksum) of its raw embeddings."""
    return {m: backbone_key(m, PRETRAINED[m].sha256) for m in bundle.models}


def bundle_inputs(
    bundle: Bundle, embeddings: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw embeddings keyed by backbone key -> the name-keyed inputs of ``Bundle.gallery_vectors``.

    Only embeddings made with the weights the bundle was built on are used.
    """
    keys = bundle_keys(bundle)
    return ({m: embeddings[k] for m, k in keys.items() if k in embeddings},
            {m: present[k] for m, k in keys.items() if k in present})


def check_servable(bundle: Bundle, backbones: Mapping[str, BackboneRecord], entries: int, source: str) -> None:
    """Refuse a gallery the bundle cannot serve, saying what is on each side.

    Raises:
        GalleryError: a stored embedding size that does not fit the bundle, or none of
            the bundle's ensemble members among the stored backbones.
    """
    keys = bundle_keys(bundle)
    for m, k in keys.items():
        rec = backbones.get(k)
        if rec is not None and rec.dim != PRETRAINED[m].embedding_size:
            raise GalleryError(
                f"{source}: holds {rec.dim}-d {m} embeddings, but this bundle's {m} is "
                f"{PRETRAINED[m].embedding_size}-d; it cannot serve this gallery"
            )
    members = [keys[m] for m in bundle.gallery_models] + ([keys[bundle.query_model]] if bundle.query_member else [])
    if entries and not any(k in backbones for k in members):
        stored = ", ".join(sorted(backbones)) or "none"
        raise GalleryError(
            f"{source}: holds embeddings of {stored}; this bundle (query {bundle.query_model}) fuses "
            f"{', '.join(dict.fromkeys(members))}, none of which is stored. Open it with a bundle of those "
            f"backbones, or index the photos again with this one"
        )


def _placeholder_rows(vectors: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Rows a view cannot match get a unit placeholder (then removed from its index)."""
    if not missing.any():
        return vectors
    out = vectors.copy()
    out[missing] = 0.0
    out[missing, 0] = 1.0
    return out


class Gallery:
    """One user's searchable gallery.

    The raw embeddings of every backbone are kept (keyed by name and weights
    checksum), so the gallery can be re-fused for another bundle, grown and pruned
    without re-reading a photo; fused vectors and indexes are derived from them.

    Args:
        engine: the shared models.
        limits: caps for this gallery.
    """

    def __init__(self, engine: FaceEngine, limits: GalleryLimits = GalleryLimits()):
        self.engine = engine
        self.limits = limits
        self.entries: list[GalleryEntry] = []
        self._backbones: dict[str, BackboneRecord] = {}
        self._emb: dict[str, np.ndarray] = {}
        self._present: dict[str, np.ndarray] = {}
        for m in engine.bundle.models:
            self._ensure_backbone(backbone_record(m))
        self._vectors: GalleryVectors | None = None
        self._indexes: dict[str, VectorIndex] = {}
        self._removed = np.zeros(0, bool)
        self._lock = threading.RLock()
        self.load_report: LoadReport | None = None

    def _ensure_backbone(self, record: BackboneRecord) -> None:
        if record.key not in self._backbones:
            self._backbones[record.key] = record
            self._emb[record.key] = np.zeros((len(self.entries), record.dim), np.float32)
            self._present[record.key] = np.zeros(len(self.entries), bool)

    # ------------------------------------------------------------------ state

    @property
    def bundle(self) -> Bundle:
        return self.engine.bundle

    def __len__(self) -> int:
        """Number of live entries."""
        return int((~self._removed).sum())

    @property
    def positions(self) -> np.ndarray:
        """Positions of live entries."""
        return np.flatnonzero(~self._removed)

    @property
    def vectors(self) -> GalleryVectors:
        if self._vectors is None:
            raise GalleryError("the gallery is empty: index some images first")
        return self._vectors

    @property
    def hashes(self) -> set[str]:
        return {e.content_hash for e, r in zip(self.entries, self._removed) if not r}

    def quality_scores(self, kind: str | None = None) -> np.ndarray:
        """(N,) quality score of every position by ``kind`` (default the bundle's; higher = worse)."""
        with self._lock:
            if kind is None or kind == self.bundle.calibration.quality.kind:
                return self.vectors.quality
            prob = np.array([e.face.probability for e in self.entries], np.float32)
            return self.bundle.calibration.quality_model(kind).score(self.vectors.uncertainty, prob,
                                                                     *self.vectors.member_arrays())

    def doubt(self, quality: str | None = None) -> DoubtMarks:
        """Doubtful entries (over the score's calibrated threshold), over all positions.

        ``DoubtMarks.unfamiliar`` says the gallery has far more of them than the
        calibration predicts; ``note`` says so in one sentence.
        """
        with self._lock:
            live = self.positions
            cal = self.bundle.calibration
            marks = doubt_marks(self.quality_scores(quality)[live] if len(live) else np.zeros(0),
                                cal.threshold_for(quality), cal.rejection_rate)
            full = np.zeros(len(self.entries), bool)
            full[live] = marks.doubtful
            return DoubtMarks(full, marks.over_threshold, marks.expected, marks.unfamiliar, marks.note)

    def unknown_note(self, unknown_by: str | None = None) -> str:
        """One sentence where the gallery's photos lower the ensemble's normalised "Unknown"
        threshold (``CohortNorm.guard``), "" elsewhere (``answers.unknown_note``; ``unknown_by``
        as ``search_vector``'s)."""
        with self._lock:
            live = self.positions
            doubt = gallery_doubt(self.vectors.quality[live]) if len(live) else float("nan")
            return unknown_note(unknown_norm(self.bundle.calibration.cohort_norm, unknown_by), "ensemble", len(live),
                                doubt)

    def rejected(self, *, rate: float | None = None, threshold: float | None = None,
                 quality: str | None = None) -> np.ndarray:
        """(N,) bool over all positions: rejected live entries (see ``Bundle.rejected``).

        ``rate`` is taken over the live entries of this gallery. ``quality`` ranks by
        another score than the bundle's (``disagreement``, ``detection``, ``combined``,
        ``learned``). Without ``rate`` or ``threshold`` it rejects above the score's
        calibrated threshold (``Calibration.threshold_for``), capped at the calibrated
        share when the gallery looks unlike the calibration galleries (``doubt``), or
        at the calibrated rate if the score has no threshold. Searching never hands a
        rejected entry's queries to another person: it blocks (``search_vector``).
        """
        with self._lock:
            out = np.zeros(len(self.entries), bool)
            live = self.positions
            if len(live) == 0:
                return out
            out[live] = self.bundle.rejected_capped(self.quality_scores(quality)[live], rate=rate,
                                                    threshold=threshold, kind=quality)
            return out

    # ------------------------------------------------------------------ indexing

    def add_images(
        self,
        items: Iterable[tuple[str, bytes | str | os.PathLike, str | None]],
        *,
        progress: ProgressFn | None = None,
        batch_size: int = 16,
        record_paths: bool = True,
    ) -> IndexReport:
        """Detect, embed and index every face of the given images.

        Args:
            items: ``(display name, file bytes or path, label or None)`` per image.
            progress: called with (fraction done, message).
            batch_size: images per detection batch.
            record_paths: store each file's absolute path (so a later backfill can
                read it again); off for uploads that are deleted afterwards.

        Returns:
            IndexReport; unreadable files, files without a face, duplicates and
            reached caps are listed there, everything else is indexed.
        """
        items = list(items)
        skipped: list[tuple[str, str]] = []
        duplicates: list[str] = []
        limits_hit: list[str] = []
        if len(items) > self.limits.max_files:
            limits_hit.append(
                f"only the first {self.limits.max_files} of {len(items)} files were read (max files per upload)"
            )
            for name, _, _ in items[self.limits.max_files :]:
                skipped.append((name, "over the files-per-upload limit"))
            items = items[: self.limits.max_files]
        added = 0

        with self._lock:
            seen = self.hashes
            try:
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    decoded = []
                    for name, src, label in chunk:
                        try:
                            data = Path(src).read_bytes() if not isinstance(src, (bytes, bytearray)) else bytes(src)
                            check_photo_size(len(data), name, self.limits.image)
                            digest = content_hash(data)
                            if digest in seen:
                                duplicates.append(name)
                                continue
                            img = decode_photo(data, name, self.limits.image)
                        except (ImageError, LimitError) as e:
                            skipped.append((name, str(e).removeprefix(f"{name}: ")))
                            continue
                        except OSError as e:
                            skipped.append((name, f"cannot read file ({e.strerror or e})"))
                            continue
                        seen.add(digest)
                        uri = str(Path(src).resolve()) if record_paths and not isinstance(src, (bytes, bytearray)) else None
                        decoded.append(Photo(name, img, label, digest, uri))
                    if decoded:
                        faces = embed_photos(self.engine, decoded, max_faces_per_image=self.limits.max_faces_per_image,
                                             max_entries=self.limits.max_entries, stored=len(self))
                        skipped += [(photo.name, why) for photo, why in faces.skipped]
                        limits_hit += [m for m in faces.limits_reached
                                       if not ("gallery is full" in m and any("gallery is full" in h for h in limits_hit))]
                        if faces.entries:
                            self._append(list(faces.entries), faces.embeddings)
                            added += len(faces.entries)
                    if progress:
                        done = min(len(items), start + batch_size)
                        progress(done / max(len(items), 1), f"indexed {done}/{len(items)} files")
            finally:
                # also when interrupted: what was appended becomes searchable, never
                # half-fused; a chunk interrupted while embedding is dropped whole
                if added:
                    self._refuse()
        notes = tuple(f"new entries lack {m}: {why}" for m, why in self.engine.unavailable.items()) if added else ()
        return IndexReport(added, len(items), tuple(skipped), tuple(duplicates), tuple(limits_hit), notes)

    def _append(self, entries: list[GalleryEntry], emb: Mapping[str, np.ndarray]) -> None:
        # build everything first, then swap in: entries and embeddings never disagree
        keys = bundle_keys(self.bundle)
        by_key = {keys[m]: np.asarray(v, np.float32) for m, v in emb.items()}
        n = len(entries)
        new_emb, new_present = {}, {}
        for k, v in self._emb.items():
            rows = by_key.get(k)
            new_emb[k] = np.concatenate([v, rows if rows is not None else np.zeros((n, v.shape[1]), np.float32)])
            new_present[k] = np.concatenate([self._present[k], np.full(n, rows is not None)])
        new_removed = np.concatenate([self._removed, np.zeros(n, bool)])
        self._emb, self._present, self._removed = new_emb, new_present, new_removed
        self.entries.extend(entries)

    def _refuse(self) -> None:
        """Recompute fused vectors and indexes from the stored raw embeddings."""
        if not self.entries:
            self._vectors, self._indexes = None, {}
            return
        prob = np.array([e.face.probability for e in self.entries], np.float32)
        emb, present = bundle_inputs(self.bundle, self._emb, self._present)
        vec = self.bundle.gallery_vectors(emb, prob, present)
        self._vectors = vec
        self._indexes = {}
        for view, arr in [("ensemble", vec.ensemble)] + list(vec.views.items()):
            missing = ~vec.available[view]
            index = VectorIndex(arr.shape[1])
            index.add(_placeholder_rows(arr, missing))
            if self._removed.any() or missing.any():
                index.remove(np.flatnonzero(self._removed | missing))
            self._indexes[view] = index

    def remove(self, positions: Sequence[int]) -> None:
        """Remove entries without re-embedding the rest."""
        with self._lock:
            pos = np.asarray(list(positions), dtype=np.int64)
            if len(pos) and (pos.min() < 0 or pos.max() >= len(self.entries)):
                raise GalleryError(f"positions must be in [0, {len(self.entries)}); got {pos.tolist()}")
            self._removed[pos] = True
            for index in self._indexes.values():
                index.remove(pos)

    # ------------------------------------------------------------------ search

    def search_vector(
        self,
        query: np.ndarray,
        *,
        k: int = 5,
        rejected: np.ndarray | None = None,
        query_probability: float = 1.0,
        answer_rule: str | None = None,
        unknown_by: str | None = None,
    ) -> dict[str, ViewResult]:
        """Search every view with one query-model vector.

        Every live entry is searched. A rejected entry never appears among the matches,
        and when it is a view's best match the view answers "Unknown: the best match is
        a rejected photo of X" instead of naming the next person. The bundle's answer
        rule (``Calibration.answer_policy``) then says "Unknown" where the named person
        is too likely wrong; doubtful entries (``doubt``) are marked.

        Args:
            query: (Dq,) unit vector from the query model.
            k: matches per view.
            rejected: (N,) bool, entries that never match (default none: doubtful
                entries are marked, not removed).
            query_probability: the query face's detector probability (an input of the
                answer rule).
            answer_rule: one of ``answers.ANSWER_RULES``, ``"none"`` (name whoever reaches
                the threshold), or None (the bundle's rule).
            unknown_by: ``answers.UNKNOWN_BY``: ``"normalised"`` (default: the bundle's
                cohort-normalised threshold in galleries of enough people) or
                ``"similarity"`` (the raw similarity threshold only).

        Returns:
            view name -> ViewResult.
        """
        with self._lock:
            vec = self.vectors
            rejected = np.zeros(len(self.entries), bool) if rejected is None else np.asarray(rejected, bool)
            keep = ~rejected
            doubtful = self.doubt().doubtful
            q = np.asarray(query, np.float32)[None, :]
            cal = self.bundle.calibration
            out = {}
            norm = unknown_norm(cal.cohort_norm, unknown_by)
            size = int((~self._removed).sum())  # every live entry is searched
            doubt = gallery_doubt(vec.quality[~self._removed]) if norm is not None else None
            fetch = max(k, 20, norm.hits_for(size) if norm is not None else 0)
            for view in self.bundle.view_names:
                index = self._indexes[view]
                hits = index.search(q, k=fetch)
                hit_pos = [int(p) for p in hits.positions[0] if p >= 0]
                hit_scores = [float(s) for s, p in zip(hits.scores[0], hits.positions[0]) if p >= 0]
                res = hits if not rejected[hit_pos].any() else index.search(q, k=k, mask=keep)
                matches = []
                for score, pos in zip(res.scores[0][:k], res.positions[0][:k]):
                    if pos < 0:
                        continue
                    e = self.entries[pos]
                    has = vec.entry_members(int(pos))
                    ms = {m: float(vec.views[m][pos] @ q[0]) for m in has} if view == "ensemble" else {}
                    lacks = tuple(m for m in vec.members if m not in has)
                    matches.append(Match(int(pos), e.label, e.source, float(score), float(vec.uncertainty[pos]),
                                         float(vec.quality[pos]), ms, has, lacks, bool(doubtful[pos])))
                thr = float(cal.similarity_thresholds.get(view, -1.0))
                policy = None if answer_rule == "none" else cal.answer_policy(view, answer_rule)
                top = hit_pos[0] if hit_pos else None
                answer = decide_answer(
                    hit_scores, [self.entries[p].label for p in hit_pos],
                    [self.entries[p].label or f"\0{p}" for p in hit_pos], threshold=thr, policy=policy,
                    query_probability=query_probability,
                    entry_quality=float(vec.quality[top]) if top is not None else float("nan"),
                    entry_disagreement=float(vec.uncertainty[top]) if top is not None else float("nan"),
                    blocked=bool(top is not None and rejected[top]), doubtful=bool(top is not None and doubtful[top]),
                    norm=norm, view=view, gallery_size=size, gallery_doubt=doubt)
                out[view] = ViewResult(view, tuple(matches), thr, answer.unknown, answer)
            return out

    def search_image(
        self,
        image: np.ndarray | bytes | str | os.PathLike,
        *,
        face_index: int | None = None,
        k: int = 5,
        rejected: np.ndarray | None = None,
        name: str = "query",
        answer_rule: str | None = None,
        unknown_by: str | None = None,
    ) -> QueryResult:
        """Detect faces in a query photo and search with one of them.

        Args:
            image: the photo (anything ``load_image`` reads).
            face_index: which face (in the returned ``faces`` order, largest first);
                default the largest.
            k: matches per view.
            rejected, answer_rule, unknown_by: see ``search_vector``.

        Raises:
            ImageError: unreadable photo. GalleryError: empty gallery.
            CmceError: no face in the photo, or ``face_index`` out of range.
        """
        img = image if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 and image.shape[2] == 3 else load_image(image, name=name)
        faces = sorted(self.engine.detect([img], [name])[0], key=lambda f: -f.area)
        if not faces:
            why = too_small_image(img.shape)
            raise CmceError(f"{name}: no face found in the query photo" + (f" ({why})" if why else ""))
        i = 0 if face_index is None else face_index
        if not 0 <= i < len(faces):
            raise CmceError(f"{name}: face {i} asked for, but the photo has {len(faces)} (0..{len(faces) - 1})")
        q = self.engine.embed_query_face(img, faces[i])
        views = self.search_vector(q, k=k, rejected=rejected, query_probability=faces[i].probability,
                                   answer_rule=answer_rule, unknown_by=unknown_by)
        return QueryResult(tuple(faces), i, views, self.bundle.calibration.open_set_far)

    # ------------------------------------------------------------------ persistence

    def records(self) -> GalleryRecords:
        """The live entries as columns, with every backbone's raw embeddings."""
        with self._lock:
            live = self.positions
            es = [self.entries[i] for i in live]
            n = len(es)

            def objects(values: list) -> np.ndarray:
                out = np.empty(n, dtype=object)
                out[:] = values
                return out

            return GalleryRecords(
                entry_id=objects([e.entry_id or f"{e.content_hash}:{i}" for i, e in zip(live, es)]),
                content_hash=objects([e.content_hash for e in es]),
                source=objects([e.source for e in es]),
                uri=objects([e.uri for e in es]),
                label=objects([e.label for e in es]),
                box=np.array([e.face.box for e in es], np.float32).reshape(n, 4),
                landmarks=np.array([e.face.landmarks for e in es], np.float32).reshape(n, 5, 2),
                probability=np.array([e.face.probability for e in es], np.float32),
                image_size=np.array([e.face.image_size for e in es], np.int32).reshape(n, 2),
                thumbnail=objects([e.thumbnail for e in es]),
                backbones=dict(self._backbones),
                embeddings={k: v[live] for k, v in self._emb.items()},
                present={k: v[live] for k, v in self._present.items()},
                detector=objects([e.face.detector for e in es]),
                detection_pass=objects([e.face.detection_pass for e in es]),
            )

    def derived_data(self) -> tuple[DerivedData, VectorIndex]:
        """This bundle's derived data for the live entries (what ``save`` stores beside the shards)."""
        with self._lock:
            return derive(self.bundle, self.vectors, self.positions)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the gallery to ``folder`` (format version 2) atomically.

        The raw embeddings of every backbone go to Parquet shards (the source of
        truth); this bundle's fused vectors, scores and index are stored beside them
        as derived data. Removed entries are dropped. The previous state is kept if
        writing fails.
        """
        with self._lock:
            dest = write_gallery(folder, self.records())
            if len(self):
                derived, index = self.derived_data()
                write_derived(dest, derived, index)
        return dest

    def save_appended(self, folder: str | os.PathLike, since: int) -> Path:
        """Append the entries added since position ``since`` to the gallery saved at ``folder``.

        Only a new shard is written (``cmce.storage.write.append_entries``; the other
        shards stay as they are), then this bundle's derived data is rebuilt for the whole
        gallery.
        ``folder`` must hold what this gallery held before ``since``.
        """
        with self._lock:
            records = self.records()
            live = self.positions
            append_entries(folder, records.take(live >= since))
            if len(self):
                derived, index = self.derived_data()
                write_derived(folder, derived, index)
        return Path(folder)

    @classmethod
    def from_records(
        cls, records: GalleryRecords, engine: FaceEngine, limits: GalleryLimits = GalleryLimits(), *,
        source: str = "gallery", converted_from: int | None = None,
    ) -> Gallery:
        """A gallery over stored records, re-projected into ``engine``'s bundle.

        No photo is read and no backbone runs: the bundle's transformers map the raw
        embeddings into its query space and the members each entry has are fused.

        Raises:
            GalleryError: the records hold none of the bundle's members, or an
                embedding whose size does not fit the bundle; the message names the
                backbones on each side.
        """
        start = time.perf_counter()
        bundle = engine.bundle
        keys = bundle_keys(bundle)
        check_servable(bundle, records.backbones, len(records), source)
        member_keys = {m: keys[m] for m in bundle.gallery_models}
        if bundle.query_member:
            member_keys["query"] = keys[bundle.query_model]
        g = cls(engine, limits)
        for k, rec in records.backbones.items():
            g._backbones[k] = rec
            g._emb[k] = np.asarray(records.embeddings[k], np.float32)
            g._present[k] = np.asarray(records.present[k], bool)
        n = len(records)
        for k, rec in list(g._backbones.items()):
            if len(g._emb[k]) != n:  # a bundle backbone the records do not hold
                g._emb[k] = np.zeros((n, rec.dim), np.float32)
                g._present[k] = np.zeros(n, bool)
        g.entries = [
            GalleryEntry(
                records.label[i], records.source[i], records.face(i), records.content_hash[i], records.thumbnail[i] or b"", records.entry_id[i], records.uri[i],
            )
            for i in range(n)
        ]
        g._removed = np.zeros(n, bool)
        g._refuse()
        present = g._vectors.member_present if g._vectors is not None else np.zeros((0, len(member_keys)), bool)
        missing = {m: int((~present[:, j]).sum()) for j, m in enumerate(member_keys) if (~present[:, j]).any()}
        used = set(keys.values())
        g.load_report = LoadReport(
            entries=n, missing=missing, unusable=int((~present.any(axis=1)).sum()) if n else 0,
            unused_backbones=tuple(sorted(k for k in records.backbones if k not in used)),
            seconds=time.perf_counter() - start, converted_from=converted_from,
        )
        return g

    @classmethod
    def load(cls, folder: str | os.PathLike, engine: FaceEngine, limits: GalleryLimits = GalleryLimits()) -> Gallery:
        """Open a saved gallery with any bundle that fuses at least one backbone it holds.

        The raw embeddings are re-projected into the bundle's space (no photo is
        read); ``load_report`` says which members each entry lacks. Version 1
        galleries are converted on reading.

        Raises:
            GalleryError: missing or corrupt folder, or no member of the bundle stored.
        """
        stored = read_gallery(folder)
        return cls.from_records(stored.records, engine, limits, source=str(folder),
                                converted_from=stored.converted_from)

    def reproject(self, engine: FaceEngine) -> Gallery:
        """This gallery served by another engine's bundle: re-projected, no photo read.

        Returns:
            A new Gallery with the same entries; its ``load_report`` says how long it
            took and which members entries lack.
        """
        with self._lock:
            records = self.records()
        return Gallery.from_records(records, engine, self.limits, source="this gallery")


def derive(bundle: Bundle, vectors: GalleryVectors, rows: np.ndarray | None = None,
           seconds: float = 0.0) -> tuple[DerivedData, VectorIndex]:
    """The derived data a gallery folder stores for ``bundle``: scores and the ensemble's index.

    Args:
        bundle: the serving bundle.
        vectors: its ``gallery_vectors`` of the gallery.
        rows: the entries to keep, in order (default all).
        seconds: how long computing ``vectors`` took (recorded).
    """
    rows = np.arange(len(vectors.quality)) if rows is None else np.asarray(rows)
    missing = ~vectors.available["ensemble"][rows]
    index = VectorIndex(vectors.ensemble.shape[1])
    index.add(_placeholder_rows(vectors.ensemble[rows], missing))
    if missing.any():
        index.remove(np.flatnonzero(missing))
    derived = DerivedData(
        bundle_fingerprint(bundle), bundle_description(bundle), vectors.members, vectors.member_present[rows],
        vectors.uncertainty[rows], vectors.quality[rows], Path("index.npz"), seconds,
    )
    return derived, index


def bundle_description(bundle: Bundle) -> dict:
    """What a derived folder records about the bundle that built it."""
    return {"query": bundle.query_model, "gallery": list(bundle.gallery_models),
            "query_member": bundle.query_member, "source": bundle.source}


def bundle_fingerprint(bundle: Bundle) -> str:
    """sha256 over what shapes a gallery's derived data: the config (less the free-form
    ``info``: training summary and evaluations; and less the answer rule and the
    normalised "Unknown" threshold, which decide answers at search time and shape
    nothing stored) and the transformer weights."""
    config = {k: v for k, v in bundle.config_dict().items() if k != "info"}
    config["calibration"] = {k: v for k, v in config["calibration"].items()
                             if k not in ("answer_rule", "answer_policies", "cohort_norm")}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for m in bundle.gallery_models:
        for k, v in sorted(bundle.transformers[m].state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()
