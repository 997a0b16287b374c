"""Version 1 galleries (``gallery.json`` + ``embeddings.npz``), converted in memory to version 2.

Reading a version 1 folder gives the same ``StoredGallery`` a version 2 one does (with
``converted_from=1``); saving it writes version 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cmce.errors import GalleryError
from cmce.storage.manifest import _new_manifest
from cmce.storage.records import BackboneRecord, GalleryRecords, StoredGallery

logger = logging.getLogger(__name__)

__all__ = ["read_v1_gallery"]


def read_v1_gallery(folder: Path) -> StoredGallery:
    """A version 1 gallery (``gallery.json`` + ``embeddings.npz``) converted in memory.

    Version 1 keyed embeddings by backbone name only; the weights were the ones the
    weights table pinned (bundles refused any other), so today's table gives the key.

    Returns:
        The gallery with ``converted_from=1`` and a version 2 manifest listing no shard.

    Raises:
        GalleryError: unreadable files, or embeddings of a backbone unknown here or of
            another size than its weights table entry.
    """
    from cmce.errors import BackboneError
    from cmce.models.backbones import get_spec

    try:
        meta = json.loads((folder / "gallery.json").read_text())
        with np.load(folder / "embeddings.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        entries = meta["entries"]
        removed = arrays["removed"].astype(bool)
        thumbs, offs = arrays["thumbnails"].tobytes(), arrays["thumbnail_offsets"]
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        raise GalleryError(f"{folder}: corrupt version 1 gallery ({e!r})") from e
    n = len(entries)
    seen: dict[str, int] = {}
    ids = []
    for d in entries:  # faces of one photo were stored in order: number them per photo
        ids.append(f"{d['content_hash']}:{seen.get(d['content_hash'], 0)}")
        seen[d["content_hash"]] = seen.get(d["content_hash"], 0) + 1
    records = GalleryRecords(
        entry_id=np.array(ids, dtype=object),
        content_hash=np.array([d["content_hash"] for d in entries], dtype=object),
        source=np.array([d["source"] for d in entries], dtype=object),
        uri=np.array([None] * n, dtype=object),
        label=np.array([d["label"] for d in entries], dtype=object),
        box=np.array([d["face"]["box"] for d in entries], np.float32).reshape(n, 4),
        landmarks=np.array([d["face"]["landmarks"] for d in entries], np.float32).reshape(n, 5, 2),
        probability=np.array([d["face"]["probability"] for d in entries], np.float32),
        image_size=np.array([d["face"]["image_size"] for d in entries], np.int32).reshape(n, 2),
        thumbnail=np.array([thumbs[offs[i] : offs[i + 1]] for i in range(n)] + [None], dtype=object)[:n],
    )
    for name in [k.removeprefix("emb::") for k in arrays if k.startswith("emb::")]:
        try:
            spec = get_spec(name)
        except BackboneError as e:
            raise GalleryError(f"{folder}: version 1 gallery holds embeddings of {name!r}, unknown here ({e})") from e
        values = arrays[f"emb::{name}"].astype(np.float32)
        if values.shape != (n, spec.embedding_size):
            raise GalleryError(f"{folder}: version 1 gallery: embeddings of {name} are {values.shape}, "
                               f"expected ({n}, {spec.embedding_size})")
        rec = BackboneRecord(name, spec.sha256, spec.embedding_size)
        records.backbones[rec.key] = rec
        records.embeddings[rec.key] = values
        records.present[rec.key] = np.ones(n, bool)
    records = records.take(~removed)
    manifest = _new_manifest(records)
    logger.info("%s: version 1 gallery read and converted in memory (%d entries)", folder, len(records))
    return StoredGallery(folder, manifest, records, converted_from=1)
