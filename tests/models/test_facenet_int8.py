"""facenet-casia's int8 CPU runtime: close to float32 on real faces, its own cache key; OpenCV threads."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.cache import cache_dir
from cmce.errors import BackboneError
from cmce.models.backbones import create_backbone
from cmce.models.backbones.facenet_int8 import INT8_VERSION, facenet_runtime

pytest.importorskip("onnxruntime", reason="the int8 runtime needs onnxruntime")


@pytest.fixture(scope="module")
def lfw_crops(lfw_dir) -> np.ndarray:
    from cmce.faces.detector import FaceDetector
    from cmce.faces.geometry import pick_subject
    from cmce.io.images import load_image

    det = FaceDetector()
    model = create_backbone("facenet-casia", "cpu")
    crops = []
    for f in sorted(lfw_dir.glob("[A-C]*/*_0001.jpg"))[:12]:
        img = load_image(f)
        faces = det.detect(img)
        crops.append(model.align(img, [faces[pick_subject(faces)]]))
    return np.concatenate(crops)


def test_int8_embeddings_stay_close_to_float32_on_real_faces(lfw_crops, monkeypatch) -> None:
    monkeypatch.setenv("CMCE_FACENET_RUNTIME", "torch")
    fp32 = create_backbone("facenet-casia", "cpu", cached=False)
    monkeypatch.setenv("CMCE_FACENET_RUNTIME", "int8")
    int8 = create_backbone("facenet-casia", "cpu", cached=False)
    assert (fp32.runtime, int8.runtime) == ("torch", "int8")
    a, b = fp32.embed(lfw_crops), int8.embed(lfw_crops)
    assert b.shape == a.shape == (len(lfw_crops), 512) and b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.min() > 0.99 and np.median(cos) > 0.998, cos
    # every face is still nearest to itself across the two runtimes, far from the others
    assert (np.argmax(b @ a.T, axis=1) == np.arange(len(a))).all()
    # batch 1 and batched give the same vectors
    one = np.concatenate([int8.embed(lfw_crops[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(int8.embed(lfw_crops[:3]), one, atol=2e-4)
    # the embedding cache never mixes the two
    assert int8.cache_id == f"{fp32.cache_id}:{INT8_VERSION}"
    # quantised once, then read from the cache folder
    assert list((cache_dir() / "weights").glob(f"facenet-casia-*-{INT8_VERSION}.onnx"))


def test_runtime_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("CMCE_FACENET_RUNTIME", raising=False)
    assert facenet_runtime() == "torch"
    monkeypatch.setenv("CMCE_FACENET_RUNTIME", " INT8 ")
    assert facenet_runtime() == "int8"
    monkeypatch.setenv("CMCE_FACENET_RUNTIME", "fp16")
    with pytest.raises(BackboneError, match="must be one of torch, int8; got 'fp16'"):
        facenet_runtime()
    with pytest.raises(BackboneError, match="must be one of"):
        create_backbone("facenet-casia", "cpu", cached=False)


def test_opencv_threads_come_from_the_environment(monkeypatch) -> None:
    import cv2

    from cmce.models.backbones.base import configure_opencv_threads

    before = cv2.getNumThreads()
    try:
        monkeypatch.delenv("CMCE_OPENCV_THREADS", raising=False)
        assert configure_opencv_threads() == before == cv2.getNumThreads()  # unset: OpenCV's own
        monkeypatch.setenv("CMCE_OPENCV_THREADS", "1")
        assert configure_opencv_threads() == 1 == cv2.getNumThreads()
        monkeypatch.setenv("CMCE_OPENCV_THREADS", "2")
        assert configure_opencv_threads() == 2 == cv2.getNumThreads()
        monkeypatch.setenv("CMCE_OPENCV_THREADS", "many")
        with pytest.raises(BackboneError, match="CMCE_OPENCV_THREADS must be a positive integer"):
            configure_opencv_threads()
        with pytest.raises(BackboneError, match="positive integer"):
            configure_opencv_threads(0)
    finally:
        cv2.setNumThreads(before)
