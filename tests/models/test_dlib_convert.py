"""The PyTorch port of dlib's face ResNet reproduces ``compute_face_descriptor``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from cmce.errors import BackboneError
from cmce.models.backbones.dlib_convert import (
    CHIP_SIZE,
    DlibResNet34Torch,
    chips_to_tensor,
    load_dlib_resnet_torch,
    read_dlib_net,
)

dlib = pytest.importorskip("dlib")


def _model_path() -> Path | None:
    # Never import face_recognition_models: its __init__ needs pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    return path if path.is_file() else None


DAT = _model_path()
pytestmark = pytest.mark.skipif(DAT is None, reason="face_recognition_models is not installed")

MAX_ABS = 1e-4
MIN_COS = 0.99999


@pytest.fixture(scope="module")
def torch_model() -> DlibResNet34Torch:
    return load_dlib_resnet_torch(DAT)


@pytest.fixture(scope="module")
def dlib_model():
    return dlib.face_recognition_model_v1(str(DAT))


def _dlib_descriptors(dlib_model, chips: np.ndarray) -> np.ndarray:
    desc = dlib_model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
    return np.array([np.asarray(d) for d in desc], dtype=np.float32)


def _torch_descriptors(model: DlibResNet34Torch, chips: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(chips_to_tensor(chips)).numpy()


def _assert_close(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < MAX_ABS
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > MIN_COS


@pytest.fixture(scope="module")
def face_chips(lfw_dir: Path) -> np.ndarray:
    """dlib chips (the repo's own pipeline) of the first image of the first people with a face."""
    from cmce.faces.detector import FaceDetector
    from cmce.faces.geometry import pick_subject
    from cmce.io.images import load_image
    from cmce.models.backbones import create_backbone

    bb = create_backbone("dlib-resnet34")
    det = FaceDetector()
    chips = []
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if not images:
            continue
        img = load_image(images[0])
        faces = det.detect_batch([img])[0]
        idx = pick_subject(faces)
        if idx is None:
            continue
        chips.append(bb.align(img, [faces[idx]])[0])
        if len(chips) == 8:
            break
    if len(chips) < 8:
        pytest.skip("fewer than 8 LFW images with a detected face")
    return np.stack(chips)


def test_parses_whole_file() -> None:
    net = read_dlib_net(DAT)
    assert net.input_size == (CHIP_SIZE, CHIP_SIZE)
    np.testing.assert_allclose(net.input_means, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.loss == "loss_metric_2"
    assert net.dist_thresh == pytest.approx(0.6)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert kinds[:4] == ["con", "affine", "relu", "max_pool"] and kinds[-2:] == ["avg_pool", "fc"]


def test_matches_dlib_on_faces(face_chips: np.ndarray, torch_model, dlib_model) -> None:
    assert face_chips.shape == (8, CHIP_SIZE, CHIP_SIZE, 3) and face_chips.dtype == np.uint8
    ref = _dlib_descriptors(dlib_model, face_chips)
    out = _torch_descriptors(torch_model, face_chips)
    _assert_close(out, ref)
    # Raw, like dlib: not unit length.
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)
    # Batched and one-at-a-time give the same descriptors.
    single = np.concatenate([_torch_descriptors(torch_model, face_chips[i:i + 1]) for i in range(2)])
    np.testing.assert_allclose(single, out[:2], atol=1e-5)


def test_matches_dlib_on_random_chips(torch_model, dlib_model) -> None:
    rng = np.random.default_rng(0)
    chips = np.stack([rng.integers(0, 256, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8),
                      np.full((CHIP_SIZE, CHIP_SIZE, 3), 200, dtype=np.uint8)])
    _assert_close(_torch_descriptors(torch_model, chips), _dlib_descriptors(dlib_model, chips))


def test_safetensors_cache_round_trip(tmp_path: Path, torch_model) -> None:
    cache = tmp_path / "dlib.safetensors"
    first = load_dlib_resnet_torch(DAT, cache=cache)
    assert cache.is_file()
    again = load_dlib_resnet_torch(tmp_path / "missing.dat", cache=cache)  # served from the cache
    for key, value in torch_model.state_dict().items():
        assert torch.equal(first.state_dict()[key], value)
        assert torch.equal(again.state_dict()[key], value)


@pytest.mark.parametrize("data", [b"", b"\x01\x01\x01\x05hello", b"BZh91AY&SY"])
def test_rejects_other_files(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.dat"
    path.write_bytes(data)
    with pytest.raises(BackboneError):
        read_dlib_net(path)


def test_rejects_truncated_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "cut.dat"
    path.write_bytes(DAT.read_bytes()[:100_000])
    with pytest.raises(BackboneError, match="not dlib's face recognition ResNet"):
        read_dlib_net(path)
    with pytest.raises(BackboneError, match="not found"):
        read_dlib_net(tmp_path / "nope.dat")


def test_chips_to_tensor_checks_shape() -> None:
    with pytest.raises(BackboneError):
        chips_to_tensor(np.zeros((1, 112, 112, 3), np.uint8))
