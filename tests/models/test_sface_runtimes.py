"""The stripped SFace graph runs in OpenCV 5 and in onnxruntime with the same embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.models.backbones import PRETRAINED, create_backbone
from cmce.models.backbones.base import verified_package_file
from cmce.models.backbones.sface import load_stripped_onnx

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is optional (requirements-dev.txt)")


def test_as_shipped_the_file_lists_stray_inputs() -> None:
    import onnx

    model = onnx.load(str(verified_package_file(PRETRAINED["sface"])))
    inits = {t.name for t in model.graph.initializer}
    stray = [i.name for i in model.graph.input if i.name != "data" and i.name not in inits]
    assert len(stray) == 29


def test_opencv_and_onnxruntime_agree_on_real_faces(lfw_dir) -> None:
    from cmce.faces.detector import FaceDetector
    from cmce.faces.geometry import pick_subject
    from cmce.io.images import load_image

    files = sorted(lfw_dir.glob("A*/*_0001.jpg"))[:6]
    det = FaceDetector()
    model = create_backbone("sface")
    crops = []
    for f in files:
        img = load_image(f)
        faces = det.detect(img)
        crops.append(model.align(img, [faces[pick_subject(faces)]]))
    crops = np.concatenate(crops)
    ours = model.embed(crops)
    sess = ort.InferenceSession(load_stripped_onnx(verified_package_file(PRETRAINED["sface"])),
                                providers=["CPUExecutionProvider"])
    x = crops.transpose(0, 3, 1, 2).astype(np.float32)
    raw = np.concatenate([sess.run(None, {"data": x[i : i + 1]})[0] for i in range(len(x))])
    theirs = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
