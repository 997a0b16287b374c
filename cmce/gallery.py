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
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle import Bundle, GalleryVectors
from .errors import CmceError, GalleryError, ImageError, LimitError
from .faces import Face, FaceDetector, pick_subject
from .images import DEFAULT_LIMITS, ImageLimits, content_hash, load_image
from .index import VectorIndex

logger = logging.getLogger(__name__)

__all__ = [
    "FaceEngine",
    "Gallery",
    "GalleryEntry",
    "GalleryLimits",
    "IndexReport",
    "Match",
    "QueryResult",
    "ViewResult",
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
        env = os.environ if environ is None else environ
        base = cls()

        def value(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                number = int(raw)
            except ValueError:
                number = 0
            if number < 1:
                raise LimitError(f"{name}={raw!r}: must be a positive integer")
            return number

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
    """

    label: str | None
    source: str
    face: Face
    content_hash: str
    thumbnail: bytes = field(repr=False)


@dataclass(frozen=True)
class IndexReport:
    """What one indexing request did."""

    added: int
    files: int
    skipped: tuple[tuple[str, str], ...] = ()
    duplicates: tuple[str, ...] = ()
    limits_reached: tuple[str, ...] = ()

    def summary(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        parts = [f"{n(self.added, 'face')} indexed from {n(self.files, 'file')}"]
        if self.skipped:
            parts.append(f"{n(len(self.skipped), 'file')} skipped")
        if self.duplicates:
            parts.append(f"{n(len(self.duplicates), 'duplicate')} ignored")
        parts += list(self.limits_reached)
        return "; ".join(parts)


@dataclass(frozen=True)
class Match:
    """One gallery entry returned for a query in one view."""

    position: int
    label: str | None
    source: str
    score: float
    uncertainty: float
    quality: float
    member_scores: Mapping[str, float]


@dataclass(frozen=True)
class ViewResult:
    """The ranked matches of one view (column).

    Attributes:
        view: ``"ensemble"``, a gallery model name, or ``"query"``.
        matches: best first; rejected entries never appear.
        threshold: similarity below which the answer is "unknown".
        unknown: the best match scores below ``threshold`` (or there is none).
    """

    view: str
    matches: tuple[Match, ...]
    threshold: float
    unknown: bool


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


class FaceEngine:
    """The models, loaded once: detector, query model, gallery models, bundle.

    Args:
        bundle: the loaded bundle.
        detector: MTCNN settings (default: ``FaceDetector(max_side=800)``).
        device: torch device for torch backbones.
    """

    def __init__(self, bundle: Bundle, detector: FaceDetector | None = None, device: str | None = None):
        from .backbones import create_backbone
        from .backbones.base import configure_torch_threads

        configure_torch_threads()  # CMCE_TORCH_THREADS, default 1 (see TORCH_THREADS)

        from .backbones.base import default_device

        self.device = device or default_device()
        self.bundle = bundle.to(self.device)  # the transformers run where the backbones do
        self.detector = detector or FaceDetector(max_side=800, device=self.device)
        self.backbones = {m: create_backbone(m, self.device) for m in bundle.models}

    @property
    def query_backbone(self):
        return self.backbones[self.bundle.query_model]

    def detect(self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None) -> list[list[Face]]:
        """Faces per image (see ``FaceDetector.detect_batch``)."""
        return self.detector.detect_batch(list(images), list(sources) if sources else None)

    def embed_gallery_faces(self, image: np.ndarray, faces: Sequence[Face]) -> dict[str, np.ndarray]:
        """Every bundle backbone's embeddings of ``faces``: name -> (n, D)."""
        return self.embed_gallery_batch([(image, faces)])

    def embed_gallery_batch(self, batch: Sequence[tuple[np.ndarray, Sequence[Face]]]) -> dict[str, np.ndarray]:
        """Every bundle backbone's embeddings of the faces of several images.

        Each backbone aligns the faces of every image, then embeds all of them in
        batches of its own size (batching across images, not image by image).

        Args:
            batch: ``(image, faces of that image)`` pairs.

        Returns:
            name -> (total faces, D), rows in the order of ``batch`` and of the faces
            within each image.
        """
        out = {}
        for m, bb in self.backbones.items():
            crops = [bb.align(image, faces) for image, faces in batch if len(faces)]
            out[m] = bb.embed(np.concatenate(crops)) if crops else np.zeros((0, bb.embedding_size), np.float32)
        return out

    def embed_query_face(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The query model's (Dq,) embedding of one face: the only network a query runs."""
        return self.query_backbone.embed_faces(image, [face])[0]


class Gallery:
    """One user's searchable gallery.

    Args:
        engine: the shared models.
        limits: caps for this gallery.
    """

    def __init__(self, engine: FaceEngine, limits: GalleryLimits = GalleryLimits()):
        self.engine = engine
        self.limits = limits
        self.entries: list[GalleryEntry] = []
        self._emb: dict[str, np.ndarray] = {m: np.zeros((0, engine.backbones[m].embedding_size), np.float32)
                                            for m in engine.bundle.models}
        self._vectors: GalleryVectors | None = None
        self._indexes: dict[str, VectorIndex] = {}
        self._removed = np.zeros(0, bool)
        self._lock = threading.RLock()

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

    def rejected(self, *, rate: float | None = None, threshold: float | None = None) -> np.ndarray:
        """(N,) bool over all positions: rejected live entries (see ``Bundle.rejected``).

        ``rate`` is taken over the live entries of this gallery.
        """
        with self._lock:
            out = np.zeros(len(self.entries), bool)
            live = self.positions
            if len(live) == 0:
                return out
            out[live] = self.bundle.rejected(self.vectors.quality[live], rate=rate, threshold=threshold)
            return out

    # ------------------------------------------------------------------ indexing

    def add_images(
        self,
        items: Iterable[tuple[str, bytes | str | os.PathLike, str | None]],
        *,
        progress: ProgressFn | None = None,
        batch_size: int = 16,
    ) -> IndexReport:
        """Detect, embed and index every face of the given images.

        Args:
            items: ``(display name, file bytes or path, label or None)`` per image.
            progress: called with (fraction done, message).
            batch_size: images per detection batch.

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

        def append(records: list[tuple]) -> None:
            nonlocal added
            emb = self.engine.embed_gallery_batch([(r[1], r[4]) for r in records])
            entries = [
                GalleryEntry(label if i == subject else None, name, f, digest, _thumbnail(img, f))
                for name, img, label, digest, faces, subject in records
                for i, f in enumerate(faces)
            ]
            self._append(entries, emb)
            added += len(entries)

        with self._lock:
            seen = self.hashes
            try:
                for start in range(0, len(items), batch_size):
                    chunk = items[start : start + batch_size]
                    decoded = []
                    for name, src, label in chunk:
                        try:
                            data = Path(src).read_bytes() if not isinstance(src, (bytes, bytearray)) else bytes(src)
                            if len(data) > self.limits.image.max_bytes:
                                raise LimitError(
                                    f"{name}: {len(data) / 2**20:.1f} MiB, over the {self.limits.image.max_bytes / 2**20:.0f} MiB per-image limit"
                                )
                            digest = content_hash(data)
                            if digest in seen:
                                duplicates.append(name)
                                continue
                            img = load_image(data, limits=self.limits.image, name=name)
                        except (ImageError, LimitError) as e:
                            skipped.append((name, str(e).removeprefix(f"{name}: ")))
                            continue
                        except OSError as e:
                            skipped.append((name, f"cannot read file ({e.strerror or e})"))
                            continue
                        seen.add(digest)
                        decoded.append((name, img, label, digest))
                    records = []
                    if decoded:
                        faces_per = self.engine.detect([d[1] for d in decoded], [d[0] for d in decoded])
                        for (name, img, label, digest), faces in zip(decoded, faces_per):
                            if not faces:
                                skipped.append((name, "no face found"))
                                continue
                            faces = sorted(faces, key=lambda f: -f.area)
                            if len(faces) > self.limits.max_faces_per_image:
                                limits_hit.append(
                                    f"{name}: {len(faces)} faces, kept the {self.limits.max_faces_per_image} largest"
                                )
                                faces = faces[: self.limits.max_faces_per_image]
                            room = self.limits.max_entries - len(self) - sum(len(r[4]) for r in records)
                            if room <= 0:
                                skipped.append((name, f"gallery is full ({self.limits.max_entries} entries)"))
                                if not any("gallery is full" in m for m in limits_hit):
                                    limits_hit.append(f"gallery is full ({self.limits.max_entries} entries)")
                                continue
                            if len(faces) > room:
                                limits_hit.append(f"{name}: only {room} of {len(faces)} faces fit (max entries)")
                                faces = faces[:room]
                            records.append((name, img, label, digest, faces, pick_subject(faces)))
                    if records:
                        append(records)  # every face of the chunk, batched per backbone
                    if progress:
                        done = min(len(items), start + batch_size)
                        progress(done / max(len(items), 1), f"indexed {done}/{len(items)} files")
            finally:
                # also when interrupted: what was appended becomes searchable, never
                # half-fused; a chunk interrupted while embedding is dropped whole
                if added:
                    self._refuse()
        return IndexReport(added, len(items), tuple(skipped), tuple(duplicates), tuple(limits_hit))

    def _append(self, entries: list[GalleryEntry], emb: Mapping[str, np.ndarray]) -> None:
        # build everything first, then swap in: entries and embeddings never disagree
        new_emb = {m: np.concatenate([v, np.asarray(emb[m], np.float32)]) for m, v in self._emb.items()}
        new_removed = np.concatenate([self._removed, np.zeros(len(entries), bool)])
        self._emb, self._removed = new_emb, new_removed
        self.entries.extend(entries)

    def _refuse(self) -> None:
        """Recompute fused vectors and indexes from the stored raw embeddings."""
        if not self.entries:
            self._vectors, self._indexes = None, {}
            return
        prob = np.array([e.face.probability for e in self.entries], np.float32)
        vec = self.bundle.gallery_vectors(self._emb, prob)
        self._vectors = vec
        self._indexes = {}
        for view, arr in [("ensemble", vec.ensemble)] + list(vec.views.items()):
            index = VectorIndex(arr.shape[1])
            index.add(arr)
            if self._removed.any():
                index.remove(np.flatnonzero(self._removed))
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
    ) -> dict[str, ViewResult]:
        """Search every view with one query-model vector.

        Args:
            query: (Dq,) unit vector from the query model.
            k: matches per view.
            rejected: (N,) bool, entries kept out of matching; default the bundle's
                calibrated rejection.

        Returns:
            view name -> ViewResult.
        """
        with self._lock:
            vec = self.vectors
            if rejected is None:
                rejected = self.rejected()
            keep = ~np.asarray(rejected, bool)
            q = np.asarray(query, np.float32)[None, :]
            thresholds = self.bundle.calibration.similarity_thresholds
            members = list(self.bundle.gallery_models) + (["query"] if self.bundle.query_member else [])
            out = {}
            for view in self.bundle.view_names:
                res = self._indexes[view].search(q, k=k, mask=keep)
                matches = []
                for score, pos in zip(res.scores[0], res.positions[0]):
                    if pos < 0:
                        continue
                    e = self.entries[pos]
                    ms = {m: float(vec.views[m][pos] @ q[0]) for m in members} if view == "ensemble" else {}
                    matches.append(Match(int(pos), e.label, e.source, float(score), float(vec.uncertainty[pos]),
                                         float(vec.quality[pos]), ms))
                thr = float(thresholds.get(view, -1.0))
                unknown = not matches or matches[0].score < thr
                out[view] = ViewResult(view, tuple(matches), thr, unknown)
            return out

    def search_image(
        self,
        image: np.ndarray | bytes | str | os.PathLike,
        *,
        face_index: int | None = None,
        k: int = 5,
        rejected: np.ndarray | None = None,
        name: str = "query",
    ) -> QueryResult:
        """Detect faces in a query photo and search with one of them.

        Args:
            image: the photo (anything ``load_image`` reads).
            face_index: which face (in the returned ``faces`` order, largest first);
                default the largest.
            k: matches per view.
            rejected: see ``search_vector``.

        Raises:
            ImageError: unreadable photo. GalleryError: empty gallery.
            CmceError: no face in the photo, or ``face_index`` out of range.
        """
        img = image if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 and image.shape[2] == 3 else load_image(image, name=name)
        faces = sorted(self.engine.detect([img], [name])[0], key=lambda f: -f.area)
        if not faces:
            raise CmceError(f"{name}: no face found in the query photo")
        i = 0 if face_index is None else face_index
        if not 0 <= i < len(faces):
            raise CmceError(f"{name}: face {i} asked for, but the photo has {len(faces)} (0..{len(faces) - 1})")
        q = self.engine.embed_query_face(img, faces[i])
        views = self.search_vector(q, k=k, rejected=rejected)
        return QueryResult(tuple(faces), i, views, self.bundle.calibration.open_set_far)

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the gallery to ``folder`` atomically (previous state kept on failure)."""
        dest = Path(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp"))
            try:
                thumbs = [e.thumbnail for e in self.entries]
                offsets = np.cumsum([0] + [len(t) for t in thumbs]).astype(np.int64)
                np.savez(
                    tmp / "embeddings.npz",
                    removed=self._removed,
                    thumbnails=np.frombuffer(b"".join(thumbs), np.uint8),
                    thumbnail_offsets=offsets,
                    **{f"emb::{m}": v for m, v in self._emb.items()},
                )
                meta = {
                    "format_version": 1,
                    "bundle_fingerprint": bundle_fingerprint(self.bundle),
                    "bundle": {"query": self.bundle.query_model, "gallery": list(self.bundle.gallery_models),
                               "source": self.bundle.source},
                    "entries": [
                        {"label": e.label, "source": e.source, "face": e.face.to_dict(), "content_hash": e.content_hash}
                        for e in self.entries
                    ],
                }
                (tmp / "gallery.json").write_text(json.dumps(meta))
                old = dest.with_name(f".{dest.name}.old")
                if dest.exists():
                    shutil.rmtree(old, ignore_errors=True)
                    os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return dest

    @classmethod
    def load(cls, folder: str | os.PathLike, engine: FaceEngine, limits: GalleryLimits = GalleryLimits()) -> Gallery:
        """Read a gallery written by ``save``; refuses one built with another bundle."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "gallery.json").read_text())
            with np.load(folder / "embeddings.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError as e:
            raise GalleryError(f"{folder}: not a saved gallery ({Path(e.filename).name} missing)") from e
        except (ValueError, OSError, json.JSONDecodeError) as e:
            raise GalleryError(f"{folder}: corrupt gallery files ({e})") from e
        if meta.get("bundle_fingerprint") != bundle_fingerprint(engine.bundle):
            b = meta.get("bundle", {})
            raise GalleryError(
                f"{folder}: built with another bundle (query {b.get('query')}, gallery {b.get('gallery')}, "
                f"from {b.get('source')}); open it with that bundle or index the images again"
            )
        g = cls(engine, limits)
        thumbs, offs = arrays["thumbnails"].tobytes(), arrays["thumbnail_offsets"]
        g.entries = [
            GalleryEntry(d["label"], d["source"], Face.from_dict(d["face"]), d["content_hash"], thumbs[offs[i] : offs[i + 1]])
            for i, d in enumerate(meta["entries"])
        ]
        for m in g._emb:
            key = f"emb::{m}"
            if key not in arrays or len(arrays[key]) != len(g.entries):
                raise GalleryError(f"{folder}: embeddings of {m} missing or incomplete")
            g._emb[m] = arrays[key].astype(np.float32)
        g._removed = arrays["removed"].astype(bool)
        g._refuse()
        return g


def bundle_fingerprint(bundle: Bundle) -> str:
    """sha256 over the bundle's config and transformer weights: galleries record it."""
    h = hashlib.sha256(json.dumps(bundle.config_dict(), sort_keys=True, default=str).encode())
    for m in bundle.gallery_models:
        for k, v in sorted(bundle.transformers[m].state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()
