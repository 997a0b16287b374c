"""What a gallery holds, in memory: its backbones, its entries as columns, and what is derived.

``GalleryRecords`` is the one representation every reader returns and every writer takes
(``cmce.storage.read``, ``cmce.storage.write``, ``cmce.storage.staging``); ``StoredGallery``
pairs it with the manifest it was read with, ``DerivedData`` is what one bundle builds
from it (``cmce.storage.derived``), and ``Corrections`` the user's must-links, cannot-links
and names (``cmce.storage.corrections``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from cmce.errors import CorrectionError, GalleryError

__all__ = [
    "IMAGE_QUALITY_COLUMNS",
    "BackboneRecord",
    "Corrections",
    "DerivedData",
    "GalleryRecords",
    "StoredGallery",
    "backbone_key",
    "backbone_record",
]

IMAGE_QUALITY_COLUMNS = ("face_px", "sharpness", "exposure")
"""The float32 columns of each face's image quality (``cmce.faces.image_quality``); NaN: not measured."""


def backbone_key(name: str, sha256: str | None) -> str:
    """The key of one backbone's raw embeddings: name and weights checksum.

    >>> backbone_key("sface", "0d2a97b4c1f3aa")
    'sface@0d2a97b4c1f3'
    >>> backbone_key("facenet-vggface2", None)
    'facenet-vggface2@unpinned'
    """
    return f"{name}@{sha256[:12] if sha256 else 'unpinned'}"


@dataclass(frozen=True)
class BackboneRecord:
    """A backbone whose raw embeddings a gallery holds.

    Attributes:
        name: registry name.
        sha256: checksum of the weights that made the embeddings (None: unpinned).
        dim: embedding size D.
    """

    name: str
    sha256: str | None
    dim: int

    @property
    def key(self) -> str:
        """``backbone_key(name, sha256)``: the column and manifest key of these embeddings."""
        return backbone_key(self.name, self.sha256)

    def to_dict(self) -> dict:
        """The record as the manifest lists it under ``backbones``."""
        return {"name": self.name, "sha256": self.sha256, "dim": self.dim}


def backbone_record(name: str) -> BackboneRecord:
    """The record of an installed backbone, from the weights table."""
    from cmce.models.backbones import get_spec

    spec = get_spec(name)
    return BackboneRecord(name, spec.sha256, spec.embedding_size)


@dataclass
class GalleryRecords:
    """Every entry of a gallery as columns (no Python object per entry).

    Attributes:
        entry_id: (N,) str, ``<content hash>:<face number>``; unique.
        content_hash: (N,) str, sha256 of the photo's bytes.
        source: (N,) str, the file name shown to users.
        uri: (N,) str or None, where the photo can be read again (backfill); None
            for uploads that were not kept.
        label: (N,) str or None, identity label.
        box: (N, 4) float32, ``x1, y1, x2, y2`` in the photo's pixels.
        landmarks: (N, 5, 2) float32.
        probability: (N,) float32, the detector's probability.
        image_size: (N, 2) int32, ``width, height``.
        thumbnail: (N,) bytes or None, a small JPEG for display.
        backbones: key -> BackboneRecord, every backbone with embeddings here.
        embeddings: key -> (N, D) float32; rows of entries lacking it are zero.
        present: key -> (N,) bool, which entries hold that backbone's embedding.
        detector: (N,) str, the detector that found the face (``cmce.faces.Face``);
            None fills in ``"mtcnn"``, as do shards written before the column existed.
        detection_pass: (N,) str, the pass that found it (``"first"``, ``"padded"``,
            ``"normalised"``, ``"whole-image"``); None and older shards: ``"first"``.
        face_px: (N,) float32, distance between the eyes in the photo's pixels
            (``cmce.faces.image_quality``); NaN where not measured (None and shards
            written before the column existed).
        sharpness: (N,) float32 in [0, 1), the face's sharpness; NaN where not measured.
        exposure: (N,) float32 in [0, 1], the face's mean grey level; NaN where not measured.
    """

    entry_id: np.ndarray
    content_hash: np.ndarray
    source: np.ndarray
    uri: np.ndarray
    label: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    probability: np.ndarray
    image_size: np.ndarray
    thumbnail: np.ndarray
    backbones: dict[str, BackboneRecord] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    detector: np.ndarray | None = None
    detection_pass: np.ndarray | None = None
    face_px: np.ndarray | None = None
    sharpness: np.ndarray | None = None
    exposure: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.entry_id)
        if self.detector is None:  # before detection passes existed every face was MTCNN's first pass
            self.detector = np.full(n, "mtcnn", dtype=object)
        if self.detection_pass is None:
            self.detection_pass = np.full(n, "first", dtype=object)
        for name in IMAGE_QUALITY_COLUMNS:  # not measured: NaN
            value = getattr(self, name)
            setattr(self, name, np.full(n, np.nan, np.float32) if value is None else np.asarray(value, np.float32))
        for name in ("content_hash", "source", "uri", "label", "box", "landmarks", "probability",
                     "image_size", "thumbnail", "detector", "detection_pass", *IMAGE_QUALITY_COLUMNS):
            if len(getattr(self, name)) != n:
                raise GalleryError(f"gallery records: {name} has {len(getattr(self, name))} rows, entry_id {n}")
        for key, rec in self.backbones.items():
            emb, pres = self.embeddings.get(key), self.present.get(key)
            if emb is None or pres is None or emb.shape != (n, rec.dim) or pres.shape != (n,):
                raise GalleryError(
                    f"gallery records: embeddings of {key} must be ({n}, {rec.dim}) with a ({n},) presence mask"
                )

    def __len__(self) -> int:
        return len(self.entry_id)

    @classmethod
    def empty(cls) -> GalleryRecords:
        """No entries and no backbones."""
        obj = np.array([], dtype=object)
        return cls(obj, obj.copy(), obj.copy(), obj.copy(), obj.copy(), np.zeros((0, 4), np.float32),
                   np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.int32), obj.copy())

    def take(self, rows: np.ndarray) -> GalleryRecords:
        """The records of ``rows`` (indices or a bool mask), in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        return GalleryRecords(
            self.entry_id[rows], self.content_hash[rows], self.source[rows], self.uri[rows], self.label[rows],
            self.box[rows], self.landmarks[rows], self.probability[rows], self.image_size[rows], self.thumbnail[rows],
            dict(self.backbones), {k: v[rows] for k, v in self.embeddings.items()},
            {k: v[rows] for k, v in self.present.items()}, self.detector[rows], self.detection_pass[rows],
            self.face_px[rows], self.sharpness[rows], self.exposure[rows],
        )

    def face(self, i: int):
        """Entry ``i``'s detection as a ``cmce.faces.Face``."""
        from cmce.faces.geometry import Face

        return Face(tuple(float(v) for v in self.box[i]), float(self.probability[i]),
                    tuple((float(x), float(y)) for x, y in self.landmarks[i]),
                    (int(self.image_size[i][0]), int(self.image_size[i][1])), self.source[i],
                    detector=str(self.detector[i] or "mtcnn"), detection_pass=str(self.detection_pass[i] or "first"))

    def image_quality(self, i: int):
        """Entry ``i``'s size, sharpness and exposure as a ``cmce.faces.image_quality.FaceImageQuality``."""
        from cmce.faces.image_quality import FaceImageQuality

        return FaceImageQuality(float(self.face_px[i]), float(self.sharpness[i]), float(self.exposure[i]))


@dataclass(frozen=True)
class DerivedData:
    """What one bundle derives from a gallery's raw embeddings (rebuildable).

    Attributes:
        fingerprint: the bundle's fingerprint (see ``cmce.gallery.bundle_fingerprint``).
        bundle: ``{"query": ..., "gallery": [...], "source": ...}`` for messages.
        members: member names of the ensemble (gallery models, then ``"query"``).
        member_present: (N, M) bool, which members each entry was fused from.
        uncertainty: (N,) float32 (NaN: fewer than two members to compare).
        quality: (N,) float32, the bundle's quality score.
        index_path: the ensemble's saved ``VectorIndex`` (``index.npz``).
        seconds: how long building it took.
    """

    fingerprint: str
    bundle: Mapping[str, Any]
    members: tuple[str, ...]
    member_present: np.ndarray
    uncertainty: np.ndarray
    quality: np.ndarray
    index_path: Path
    seconds: float = 0.0


@dataclass(frozen=True)
class StoredGallery:
    """A gallery read from disk: its manifest and its records.

    Attributes:
        folder: where it was read from.
        manifest: the manifest (version 2; a converted one for version 1).
        records: every entry.
        converted_from: 1 when the folder was in the version 1 format, else None.
        corrections: the gallery's must-links, cannot-links and names
            (``cmce.storage.corrections``); None for galleries read without them
            (version 1).
    """

    folder: Path
    manifest: dict
    records: GalleryRecords
    converted_from: int | None = None
    corrections: Corrections | None = None

    @property
    def derived(self) -> dict | None:
        """The manifest's ``derived`` entry (None: no derived data stored)."""
        return self.manifest.get("derived")


def _pairs(pairs: Iterable[Iterable[str]] | np.ndarray, what: str) -> np.ndarray:
    """``pairs`` as a read-only (k, 2) object array, each pair ordered and the rows sorted and unique.

    Raises:
        CorrectionError: an item that is not a pair of entry ids.
    """
    rows = set()
    for pair in (pairs.tolist() if isinstance(pairs, np.ndarray) else pairs):
        items = [pair] if isinstance(pair, str) else list(pair)
        if len(items) != 2 or not all(isinstance(x, str) for x in items):
            raise CorrectionError(f"{what}: {pair!r} is not a pair of entry ids (give (entry id, entry id))")
        a, b = items
        rows.add((a, b) if a <= b else (b, a))
    out = np.empty((len(rows), 2), dtype=object)
    for i, row in enumerate(sorted(rows)):
        out[i] = row
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Corrections:
    """A gallery's corrections (immutable; pairs ordered and deduplicated on construction).

    Attributes:
        must_link: (k, 2) entry ids that are the same person ("merge").
        cannot_link: (m, 2) entry ids that are not the same person ("split", "not this person").
        names: entry id -> the name the user gave it (shown as the entry's label).
    """

    must_link: np.ndarray
    cannot_link: np.ndarray
    names: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "must_link", _pairs(self.must_link, "must_link"))
        object.__setattr__(self, "cannot_link", _pairs(self.cannot_link, "cannot_link"))
        object.__setattr__(self, "names", MappingProxyType({str(k): str(v) for k, v in sorted(self.names.items())}))

    @classmethod
    def empty(cls) -> Corrections:
        """No corrections."""
        return cls((), (), {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Corrections):
            return NotImplemented
        return (self.must_link.tolist() == other.must_link.tolist()
                and self.cannot_link.tolist() == other.cannot_link.tolist() and dict(self.names) == dict(other.names))

    def __len__(self) -> int:
        """Rows of the table: pairs and names."""
        return len(self.must_link) + len(self.cannot_link) + len(self.names)

    def entry_ids(self) -> set[str]:
        """Every entry id a correction mentions."""
        return set(self.must_link.ravel().tolist()) | set(self.cannot_link.ravel().tolist()) | set(self.names)

    def merged(self, must_link: Iterable[tuple[str, str]] = (), cannot_link: Iterable[tuple[str, str]] = (),
               names: Mapping[str, str] | None = None) -> Corrections:
        """These corrections plus more (a name given again replaces the earlier one)."""
        return Corrections(self.must_link.tolist() + [list(p) for p in must_link],
                           self.cannot_link.tolist() + [list(p) for p in cannot_link],
                           {**self.names, **dict(names or {})})

    def without(self, must_link: Iterable[tuple[str, str]] = (), cannot_link: Iterable[tuple[str, str]] = (),
                names: Iterable[str] = ()) -> Corrections:
        """These corrections less the given pairs (in either order) and the names of the given entries."""
        drop_must = {tuple(sorted(map(str, p))) for p in must_link}
        drop_cannot = {tuple(sorted(map(str, p))) for p in cannot_link}
        drop_names = set(map(str, names))
        return Corrections([p for p in self.must_link.tolist() if tuple(p) not in drop_must],
                           [p for p in self.cannot_link.tolist() if tuple(p) not in drop_cannot],
                           {k: v for k, v in self.names.items() if k not in drop_names})

    def without_entries(self, entry_ids: Collection[str]) -> Corrections:
        """These corrections with every pair and name that mentions one of ``entry_ids`` dropped (erasure)."""
        gone = set(entry_ids)
        return Corrections([p for p in self.must_link.tolist() if p[0] not in gone and p[1] not in gone],
                           [p for p in self.cannot_link.tolist() if p[0] not in gone and p[1] not in gone],
                           {k: v for k, v in self.names.items() if k not in gone})
