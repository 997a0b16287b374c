"""Derived data: what one bundle builds from a gallery's raw embeddings, stored beside them.

``derived/<fingerprint[:16]>/`` holds the fused ensemble's search index (``index.npz``),
each entry's member presence, uncertainty and quality (``scores.npz``) and ``meta.json``.
It is rebuildable from the shards, and used only while its bundle fingerprint and the
shard list it was built from match the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cmce.storage.manifest import (
    _now,
    locked,
    require_manifest,
    shards_signature,
    swap_in,
    write_manifest,
)
from cmce.storage.records import DerivedData, StoredGallery

logger = logging.getLogger(__name__)

__all__ = ["read_derived", "write_derived"]


def write_derived(folder: str | os.PathLike, derived: DerivedData, index) -> Path:
    """Store one bundle's derived data and make it the gallery's current one.

    Written to ``derived/<fingerprint[:16]>`` under a temporary name, renamed, then
    the manifest is replaced; derived folders of other bundles are removed after.

    Args:
        folder: a version 2 gallery.
        derived: what to store (``index_path`` is ignored: the index goes inside).
        index: the ensemble's ``VectorIndex``.

    Returns:
        The derived folder.
    """
    folder = Path(folder)
    with locked(folder):
        manifest = require_manifest(folder)
        name = derived.fingerprint[:16]
        root = folder / "derived"
        root.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp"))
        try:
            np.savez(tmp / "scores.npz", member_present=derived.member_present,
                     uncertainty=derived.uncertainty, quality=derived.quality)
            index.save(tmp / "index.npz")
            (tmp / "meta.json").write_text(json.dumps({
                "fingerprint": derived.fingerprint, "bundle": dict(derived.bundle),
                "members": list(derived.members), "entries": int(len(derived.quality)),
                "shards": shards_signature(manifest), "seconds": derived.seconds, "built": _now(),
            }, indent=1))
            tmp.chmod(0o755)
            swap_in(tmp, root / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest["derived"] = {"path": f"derived/{name}", "fingerprint": derived.fingerprint,
                               "bundle": dict(derived.bundle), "shards": shards_signature(manifest)}
        write_manifest(folder, manifest)
        for other in root.iterdir():
            if other.name != name:
                shutil.rmtree(other, ignore_errors=True)
    return root / name


def read_derived(stored: StoredGallery, fingerprint: str) -> DerivedData | None:
    """The stored derived data for a bundle, or None when absent or stale.

    Stale means: built for another bundle, or before shards were added.
    """
    info = stored.derived
    if not info or info.get("kind") == "archive" or info.get("fingerprint") != fingerprint or info.get("shards") != shards_signature(stored.manifest):
        return None
    path = stored.folder / info["path"]
    try:
        meta = json.loads((path / "meta.json").read_text())
        with np.load(path / "scores.npz", allow_pickle=False) as z:
            present, unc, qual = z["member_present"], z["uncertainty"], z["quality"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        logger.warning("%s: derived data unreadable (%s); rebuilding it", stored.folder, e)
        return None
    if meta.get("fingerprint") != fingerprint or len(qual) != len(stored.records):
        return None
    return DerivedData(fingerprint, meta.get("bundle", {}), tuple(meta.get("members", ())), present.astype(bool),
                       unc.astype(np.float32), qual.astype(np.float32), path / "index.npz",
                       float(meta.get("seconds", 0.0)))
