"""Persistence of in-memory galleries: records to and from storage, derived data, bundle keys.

A gallery on disk keeps every backbone's raw embeddings (keyed by name and weights
checksum, ``bundle_keys``) as the source of truth; a bundle's fused vectors, scores and
index are derived from them (``derive``) and stored beside them under the bundle's
fingerprint (``bundle_fingerprint``). Opening a gallery re-projects the raw embeddings
into the serving bundle's space (``check_servable`` refuses a bundle that cannot).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.gallery.ingest import GalleryEntry
from cmce.method.bundle_model import Bundle, GalleryVectors
from cmce.models.backbones import PRETRAINED
from cmce.search.index import VectorIndex
from cmce.storage.records import BackboneRecord, DerivedData, GalleryRecords, backbone_key

__all__ = [
    "LoadReport",
    "bundle_description",
    "bundle_fingerprint",
    "bundle_inputs",
    "bundle_keys",
    "check_servable",
    "derive",
    "gallery_records",
    "load_report",
    "placeholder_rows",
    "record_entries",
]

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


def placeholder_rows(vectors: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Rows a view cannot match get a unit placeholder (then removed from its index)."""
    if not missing.any():
        return vectors
    out = vectors.copy()
    out[missing] = 0.0
    out[missing, 0] = 1.0
    return out


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
    index.add(placeholder_rows(vectors.ensemble[rows], missing))
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


def gallery_records(entries: Sequence[GalleryEntry], positions: np.ndarray, backbones: Mapping[str, BackboneRecord],
                    embeddings: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]) -> GalleryRecords:
    """The entries at ``positions`` as storage columns, with every backbone's raw embeddings.

    Args:
        entries: every entry of a gallery, by position.
        positions: (n,) the positions to keep, in order.
        backbones: backbone key -> its record.
        embeddings: backbone key -> (len(entries), D) raw embeddings.
        present: backbone key -> (len(entries),) bool, which rows hold one.
    """
    es = [entries[i] for i in positions]
    n = len(es)

    def objects(values: list) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = values
        return out

    return GalleryRecords(
        entry_id=objects([e.entry_id or f"{e.content_hash}:{i}" for i, e in zip(positions, es)]),
        content_hash=objects([e.content_hash for e in es]),
        source=objects([e.source for e in es]),
        uri=objects([e.uri for e in es]),
        label=objects([e.label for e in es]),
        box=np.array([e.face.box for e in es], np.float32).reshape(n, 4),
        landmarks=np.array([e.face.landmarks for e in es], np.float32).reshape(n, 5, 2),
        probability=np.array([e.face.probability for e in es], np.float32),
        image_size=np.array([e.face.image_size for e in es], np.int32).reshape(n, 2),
        thumbnail=objects([e.thumbnail for e in es]),
        backbones=dict(backbones),
        embeddings={k: v[positions] for k, v in embeddings.items()},
        present={k: v[positions] for k, v in present.items()},
        detector=objects([e.face.detector for e in es]),
        detection_pass=objects([e.face.detection_pass for e in es]),
        face_px=np.array([e.image_quality.face_px for e in es], np.float32),
        sharpness=np.array([e.image_quality.sharpness for e in es], np.float32),
        exposure=np.array([e.image_quality.exposure for e in es], np.float32),
    )


def record_entries(records: GalleryRecords) -> list[GalleryEntry]:
    """The entries of stored records, in order (what ``gallery_records`` wrote)."""
    return [
        GalleryEntry(records.label[i], records.source[i], records.face(i), records.content_hash[i],
                     records.thumbnail[i] or b"", records.entry_id[i], records.uri[i], records.image_quality(i))
        for i in range(len(records))
    ]


def load_report(records: GalleryRecords, bundle: Bundle, member_present: np.ndarray, seconds: float,
                converted_from: int | None = None) -> LoadReport:
    """How ``records`` opened with ``bundle``: ``member_present`` (entries x the bundle's members, the
    query member last when the bundle has one) says which member embeddings each entry holds."""
    members = list(bundle.gallery_models) + (["query"] if bundle.query_member else [])
    used = set(bundle_keys(bundle).values())
    return LoadReport(
        entries=len(records), missing={m: int((~member_present[:, j]).sum()) for j, m in enumerate(members)
                                       if (~member_present[:, j]).any()},
        unusable=int((~member_present.any(axis=1)).sum()) if len(member_present) else 0,
        unused_backbones=tuple(sorted(k for k in records.backbones if k not in used)),
        seconds=seconds, converted_from=converted_from,
    )
