"""The embedding cache of ``embed_files`` and faces at the image's edge (issue 22)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import EDGE_VERSION, pick_subject
from cmce.io.images import content_hash, load_image
from cmce.models.backbones import create_backbone
from cmce.models.embed import EmbeddingCache, detector_signature, embed_files

PEOPLE = ["Aaron_Peirsol", "Abel_Pacheco"]
MODELS = ["sface", "dlib-resnet34"]


def test_default_detector_signature_is_unchanged() -> None:
    """The key of every face and vector cached before edge landmarks existed."""
    assert detector_signature(FaceDetector()) == "mtcnn:min20:t0.6,0.7,0.7:side640:p0.9:subject-v1"
    assert detector_signature(FaceDetector(edge_landmarks=False)).endswith(":noedge")


@pytest.fixture(scope="module")
def photos_and_crops(lfw_dir, tmp_path_factory) -> list[Path]:
    """Two LFW photos and, written losslessly, their crops to the detector's box.

    Box crops are found by MTCNN's first pass on their own (``embed_files`` detects
    each image size apart), with the face touching every edge: the case the edge
    landmarks refine."""
    folder = tmp_path_factory.mktemp("crops")
    detector = FaceDetector()
    files = []
    for person in PEOPLE:
        path = lfw_dir / person / f"{person}_0001.jpg"
        image = load_image(path)
        faces = detector.detect(image)
        x1, y1, x2, y2 = faces[pick_subject(faces)].box
        crop = image[int(y1):int(y2), int(x1):int(x2)]
        out = folder / f"{person}_box.png"
        cv2.imwrite(str(out), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        files += [path, out]
    return files


def _views(cache_path: Path) -> dict[str, set[str]]:
    with sqlite3.connect(cache_path) as conn:
        rows = conn.execute("SELECT model, key FROM vectors").fetchall()
    out: dict[str, set[str]] = {}
    for model, key in rows:
        out.setdefault(model, set()).add(key)
    return out


def test_only_faces_at_the_edge_get_new_cache_keys(photos_and_crops, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    res = embed_files(photos_and_crops, MODELS, cache=cache, flip=True)
    assert res.found.all()
    sface, dlib = create_backbone("sface"), create_backbone("dlib-resnet34")
    full = {f"{content_hash(Path(p).read_bytes())}:{detector_signature(FaceDetector())}" for p in photos_and_crops[0::2]}
    crops = {f"{content_hash(Path(p).read_bytes())}:{detector_signature(FaceDetector())}" for p in photos_and_crops[1::2]}
    views = _views(cache.path)
    assert views[sface.cache_id] == full and views[f"{sface.cache_id}|flip"] == full
    assert views[f"{sface.cache_id}:{EDGE_VERSION}"] == crops and views[f"{sface.cache_id}:{EDGE_VERSION}|flip"] == crops
    assert views[dlib.cache_id] == full | crops  # dlib's chips do not change at the edge

    again = embed_files(photos_and_crops, MODELS, cache=cache, flip=True)  # all from the cache
    for view, vectors in res.embeddings.items():
        np.testing.assert_array_equal(again.embeddings[view], vectors)
    cache.close()


def test_faces_cached_before_edge_landmarks_are_refined_when_read(photos_and_crops, tmp_path) -> None:
    """A face record written by the old detector (MTCNN's squashed landmarks) gives today's embedding."""
    fresh = embed_files(photos_and_crops, ["sface"])
    cache = EmbeddingCache(tmp_path / "old.sqlite")
    sig = detector_signature(FaceDetector())
    old = FaceDetector(edge_landmarks=False)
    rows = []  # each image detected on its own, as embed_files detects each image size apart
    for path in photos_and_crops:
        faces = old.detect_batch([load_image(path)], [str(path)])[0]
        rows.append((f"{content_hash(Path(path).read_bytes())}:{sig}", faces[pick_subject(faces)], None))
    cache.put_faces(rows)
    assert [f.landmarks for _, f, _ in rows[1::2]] != [f.landmarks for f in fresh.faces[1::2]]
    res = embed_files(photos_and_crops, ["sface"], cache=cache)
    assert res.faces == fresh.faces
    np.testing.assert_array_equal(res.embeddings["sface"], fresh.embeddings["sface"])
    cache.close()
