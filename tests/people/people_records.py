"""Synthetic gallery records for the people tests: well-separated people, real bundle members' sizes."""

from __future__ import annotations

import numpy as np

from cmce.gallery.persistence import bundle_keys
from cmce.models.backbones import get_spec
from cmce.storage.records import BackboneRecord, GalleryRecords


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def synthetic_records(bundle, people: int = 4, per: int = 3, seed: int = 0) -> GalleryRecords:
    """``people`` synthetic people of ``per`` faces each; faces 0 and 1 come from one photo."""
    rng = np.random.default_rng(seed)
    n = people * per
    truth = np.repeat(np.arange(people), per)
    backbones, emb, present = {}, {}, {}
    for m, key in bundle_keys(bundle).items():
        spec = get_spec(m)
        centres = rng.normal(size=(people, spec.embedding_size))
        x = centres[truth] + 0.15 * rng.normal(size=(n, spec.embedding_size))
        emb[key] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        backbones[key] = BackboneRecord(m, spec.sha256, spec.embedding_size)
        present[key] = np.ones(n, bool)
    hashes = [f"{i:064x}" for i in range(n)]
    if n > 1:
        hashes[1] = hashes[0]
    return GalleryRecords(
        entry_id=_objects([f"{h}:{i}" for i, h in enumerate(hashes)]), content_hash=_objects(hashes),
        source=_objects([f"photo{i}.jpg" for i in range(n)]), uri=_objects([None] * n), label=_objects([None] * n),
        box=np.tile(np.array([0, 0, 50, 50], np.float32), (n, 1)), landmarks=np.zeros((n, 5, 2), np.float32),
        probability=np.full(n, 0.999, np.float32), image_size=np.full((n, 2), 100, np.int32),
        thumbnail=_objects([None] * n), backbones=backbones, embeddings=emb, present=present,
        face_px=np.full(n, 40, np.float32), sharpness=np.full(n, 0.5, np.float32), exposure=np.full(n, 0.5, np.float32))
