"""Real pretrained backbones on real faces: interface, golden values, LFW verification."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import LOCAL_BACKBONES, ROOT, TIGHT_CROP_PEOPLE, tight_crops

from cmce.errors import BackboneError, BackboneUnavailableError
from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import EDGE_VERSION, pick_subject, warp_leaves_image
from cmce.faces.second_chance import SecondChance
from cmce.io.images import load_image
from cmce.metrics.verification import best_verification_accuracy
from cmce.models.backbones import (
    _REGISTRY,
    PRETRAINED,
    Backbone,
    create_backbone,
    list_backbones,
    register_backbone,
)
from cmce.models.backbones._pretrained import PretrainedSpec
from cmce.models.backbones.base import FaceViews
from cmce.models.embed import embed_files

LOCAL = LOCAL_BACKBONES
GOLDEN = json.loads((ROOT / "tests" / "golden" / "similarity.json").read_text())


def test_weights_table_is_complete() -> None:
    for name, spec in PRETRAINED.items():
        assert spec.role in {"query", "gallery"}
        assert spec.license and spec.training_data and spec.embedding_size > 0
        assert spec.input_size in {112, 150, 160}
        if spec.package:
            assert spec.sha256 and len(spec.sha256) == 64
    assert {b.name for b in list_backbones()} == set(PRETRAINED)


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(BackboneError, match="registered: .*sface"):
        create_backbone("resnet-9000")


def test_download_only_backbone_fails_fast_offline(no_network) -> None:
    with pytest.raises(BackboneUnavailableError, match="offline"):
        create_backbone("facenet-vggface2", cached=False)
    info = {b.name: b for b in list_backbones()}["facenet-vggface2"]
    assert not info.available and "download" in info.reason


def test_info_command_lists_every_backbone() -> None:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "CMCE_CACHE_DIR": "/tmp/cmce-test-info"}
    import os

    env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-m", "cmce", "info"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in PRETRAINED:
        assert name in out.stdout
    assert "why not:" in out.stdout and "Apache-2.0" in out.stdout and "CC0" in out.stdout


def test_registry_takes_a_new_backbone_with_one_row_and_one_adapter(monkeypatch) -> None:
    spec = PretrainedSpec(
        name="pixels-8", architecture="down-sampled pixels", role="query", embedding_size=8 * 8 * 3,
        template="arcface-112", normalisation="x/255", package="numpy", package_module="numpy",
        file="__init__.py", url=None, sha256=None, license="MIT", training_data="none", citation="test",
    )

    class Pixels(Backbone):
        def _forward(self, crops):
            import cv2

            return np.stack([cv2.resize(c, (8, 8), interpolation=cv2.INTER_AREA).ravel() / 255.0 for c in crops])

    monkeypatch.setitem(PRETRAINED, "pixels-8", spec)
    monkeypatch.setitem(_REGISTRY, "pixels-8", Pixels)
    model = create_backbone("pixels-8", cached=False)
    crops = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    out = model.embed(crops)
    assert out.shape == (3, 192) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(BackboneError, match="no row"):
        register_backbone("not-in-table")(Pixels)


@pytest.fixture(scope="module")
def golden_embeddings(lfw_dir):
    res = embed_files([lfw_dir / f for f in GOLDEN["files"]], LOCAL)
    assert res.found.all(), res.errors
    return res


@pytest.mark.parametrize("name", LOCAL)
def test_backbone_interface(name: str, golden_embeddings) -> None:
    model = create_backbone(name)
    s = model.input_size
    e = golden_embeddings.embeddings[name]
    assert e.shape == (6, PRETRAINED[name].embedding_size) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert model.embed(np.zeros((0, s, s, 3), np.uint8)).shape == (0, model.embedding_size)
    with pytest.raises(BackboneError, match=f"{s}, {s}, 3"):
        model.embed(np.zeros((2, s + 1, s, 3), np.uint8))
    with pytest.raises(BackboneError):
        model.embed(np.zeros((2, s, s, 3), np.float32))
    # batch 1 and batched give the same vectors
    crops = np.random.default_rng(3).integers(0, 255, (5, s, s, 3), dtype=np.uint8)
    one = np.concatenate([model.embed(crops[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(model.embed(crops), one, atol=2e-4)


@pytest.mark.parametrize("name", LOCAL)
def test_golden_similarity_matrix(name: str, golden_embeddings) -> None:
    e = golden_embeddings.embeddings[name]
    np.testing.assert_allclose(e @ e.T, np.array(GOLDEN["similarity"][name]), atol=2e-3)


def test_mtcnn_finds_faces_in_lfw(lfw_pairs_embedded) -> None:
    _, res = lfw_pairs_embedded
    assert len(res.paths) > 1000
    assert res.found.mean() >= 0.99, [e for e in res.errors if e][:5]


@pytest.mark.parametrize("name", LOCAL)
def test_lfw_verification_accuracy(name: str, lfw_pairs_embedded) -> None:
    pairs, res = lfw_pairs_embedded
    assert len(pairs) == 600
    pos = {p: i for i, p in enumerate(res.paths)}
    e = res.embeddings[name]
    ia = np.array([pos[str(a)] for a, _, _ in pairs])
    ib = np.array([pos[str(b)] for _, b, _ in pairs])
    ok = res.found[ia] & res.found[ib]
    scores = np.where(ok, (e[ia] * e[ib]).sum(1), -1.0)
    acc, _ = best_verification_accuracy(scores, np.array([s for *_, s in pairs]))
    print(f"{name}: LFW verification accuracy on 600 pairs = {acc:.4f}")
    assert acc >= 0.95


def test_torch_threads_come_from_the_environment(monkeypatch) -> None:
    import torch

    from cmce.errors import BackboneError
    from cmce.models.backbones.base import TORCH_THREADS, configure_torch_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("CMCE_TORCH_THREADS", raising=False)
        assert configure_torch_threads() == TORCH_THREADS == torch.get_num_threads()
        monkeypatch.setenv("CMCE_TORCH_THREADS", "2")
        assert configure_torch_threads() == 2 == torch.get_num_threads()
        monkeypatch.setenv("CMCE_TORCH_THREADS", "two")
        with pytest.raises(BackboneError, match="CMCE_TORCH_THREADS must be a positive integer"):
            configure_torch_threads()
        with pytest.raises(BackboneError, match="positive integer"):
            configure_torch_threads(0)
    finally:
        torch.set_num_threads(before)




@pytest.fixture(scope="module")
def subject_photos(lfw_dir) -> list[tuple[np.ndarray, list]]:
    """Every face of a few LFW photos and of the shipped example gallery (photos with faces)."""
    detector = FaceDetector()
    paths = [lfw_dir / p / f"{p}_0001.jpg" for p in TIGHT_CROP_PEOPLE + ["Astrid_Eyzaguirre"]]
    paths += sorted((ROOT / "assets" / "examples" / "gallery").glob("*_0*.jpg"))
    out = []
    for path in paths:
        image = load_image(path)
        out.append((image, detector.detect(image)))
    assert all(faces for _, faces in out)
    # and one tight crop (the photo is the face: its template leaves it and it gets a second view)
    image, faces = out[0]
    crop, _ = tight_crops(image, faces[pick_subject(faces)])["box"]
    out.append((crop, detector.detect(crop)))
    return out


@pytest.mark.parametrize("name", LOCAL)
def test_full_photos_embed_exactly_as_before(name: str, subject_photos) -> None:
    """Faces inside their photo: the same crops, embeddings and cache key as before issue 22, to the bit."""
    model = create_backbone(name)
    inside, views = [], []
    for image, faces in subject_photos:
        for face in faces:
            if model.at_edge(face):  # the half face cut by Astrid_Eyzaguirre_0001's border; the tight crop
                assert face.at_image_edge or warp_leaves_image(face, model.template)
                continue
            before = model.embed(model.align(image, [face]))
            assert np.array_equal(model.embed_faces(image, [face]), before)
            assert model.face_cache_id(face) == model.cache_id
            inside.append(before[0])
        views.append(model.align_views(image, faces))
    assert len(inside) >= 7
    # in one batch with a face at the edge (which gets a second view), the inner faces get the bits
    # the batch gave them before (a batch's composition, not its extra views, moves float rounding)
    views = FaceViews.concat(views)
    faces = [f for _, fs in subject_photos for f in fs]
    kept = np.array([not model.at_edge(f) for f in faces])
    assert kept.all() != model.aligns_by_landmarks and (len(views.extra) > 0) == model.aligns_by_landmarks
    np.testing.assert_array_equal(model.embed_views(views)[kept], model.embed(views.crops)[kept])
    # only the face that is its photo gets the extended view; the face cut by a photo's frame keeps black
    assert len(views.extra) == (1 if model.aligns_by_landmarks else 0)


@pytest.fixture(scope="module")
def tight_crop_faces(lfw_dir) -> list[tuple]:
    """Per LFW photo: image, subject face, and its box / 10%-inside / face-only crops with the
    engine detector's face before issue 22 (MTCNN's landmarks) and now (edge landmarks)."""
    settings = dict(max_side=800, landmark_check=True, second_chance=SecondChance())
    now, before = FaceDetector(**settings), FaceDetector(**settings, edge_landmarks=False)
    out = []
    for person in TIGHT_CROP_PEOPLE:
        image = load_image(lfw_dir / person / f"{person}_0001.jpg")
        faces = now.detect(image)
        face = faces[pick_subject(faces)]
        crops = []
        for crop, _ in tight_crops(image, face).values():
            a, b = before.detect(crop), now.detect(crop)
            crops.append((crop, a[pick_subject(a)], b[pick_subject(b)]))
        out.append((image, face, crops))
    return out


@pytest.mark.parametrize("name", ["sface", "facenet-casia"])
def test_tight_crops_embed_close_to_the_full_photo(name: str, tight_crop_faces) -> None:
    """Issue 22: crops of a face (MTCNN box, 10% inside it, the face alone) against the full photo."""
    model = create_backbone(name)
    before, after = [], []
    for image, face, crops in tight_crop_faces:
        full = model.embed_faces(image, [face])[0]
        for crop, old_face, new_face in crops:
            assert model.face_cache_id(new_face) == f"{model.cache_id}:{EDGE_VERSION}"
            before.append(float(model.embed(model.align(crop, [old_face]))[0] @ full))
            after.append(float(model.embed_faces(crop, [new_face])[0] @ full))
    before, after = np.array(before), np.array(after)
    assert after.min() >= 0.7 and after[0::3].min() >= 0.85, np.round(after, 3)  # every crop; box crops
    assert after.mean() >= 0.8 and after.mean() - before.mean() >= 0.1, (before.mean(), after.mean())


def test_dlib_chips_ignore_the_edge_treatment(tight_crop_faces) -> None:
    """dlib cuts its chip from the box with its own landmarks: crops embed and cache as before."""
    model = create_backbone("dlib-resnet34")
    for _, _, crops in tight_crop_faces:
        for crop, old_face, new_face in crops:
            assert old_face.box == new_face.box and model.face_cache_id(new_face) == model.cache_id
            assert np.array_equal(model.embed_faces(crop, [new_face]), model.embed(model.align(crop, [old_face])))
