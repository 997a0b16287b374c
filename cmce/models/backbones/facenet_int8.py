"""facenet-casia in int8 through onnxruntime: the fast CPU path for indexing.

The float32 PyTorch network is exported to ONNX once, then quantised statically
(QDQ, int8 weights per output channel, uint8 activations, min/max ranges) with the
face photos shipped in ``assets/examples`` (and their mirror images) as calibration
data, and cached next to the converted weights. On this machine's AVX-512 VNNI cores
it is about 5x faster than the float32 network at 1 thread; its embeddings keep a
cosine of about 0.999 to the float32 ones (``benchmarks/bench_indexing_throughput.py``
and the README's accuracy check). The backbone's ``cache_id`` changes with it, so the
embedding cache never mixes the two.

Turned on by ``CMCE_FACENET_RUNTIME=int8`` (``torch``, the float32 network, is the
default); needs ``onnxruntime``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from cmce.assets import PROJECT_ROOT
from cmce.errors import BackboneError

logger = logging.getLogger(__name__)

__all__ = ["INT8_VERSION", "RUNTIMES", "build_int8_model", "calibration_crops", "facenet_runtime", "int8_session"]

RUNTIMES = ("torch", "int8")
INT8_VERSION = "ort-int8-v1"
"""Part of the cache key of int8 embeddings; bump it when the quantisation recipe changes."""

_EXAMPLES = PROJECT_ROOT / "assets" / "examples"


def facenet_runtime() -> str:
    """``CMCE_FACENET_RUNTIME``: ``"torch"`` (default, float32) or ``"int8"`` (onnxruntime).

    Raises:
        BackboneError: any other value, or ``int8`` without onnxruntime installed.
    """
    value = os.environ.get("CMCE_FACENET_RUNTIME", "").strip().lower() or "torch"
    if value not in RUNTIMES:
        raise BackboneError(f"CMCE_FACENET_RUNTIME must be one of {', '.join(RUNTIMES)}; got {value!r}")
    if value == "int8":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise BackboneError("CMCE_FACENET_RUNTIME=int8 needs onnxruntime: pip install onnxruntime")
    return value


def calibration_crops(template, folder: str | os.PathLike = _EXAMPLES) -> np.ndarray:
    """Aligned subject-face crops of the photos under ``folder`` and their mirror images.

    Args:
        template: the backbone's ``AlignmentTemplate``.
        folder: searched recursively for ``.jpg`` files (default the shipped examples).

    Returns:
        (2K, S, S, 3) uint8 RGB, K photos with a face, sorted by path.

    Raises:
        BackboneError: no face found in any photo there.
    """
    from cmce.faces.detector import FaceDetector
    from cmce.faces.geometry import align_faces, pick_subject
    from cmce.io.images import load_image

    detector = FaceDetector()
    crops = []
    for path in sorted(Path(folder).rglob("*.jpg")):
        image = load_image(path)
        faces = detector.detect(image)
        k = pick_subject(faces)
        if k is not None:
            crops.append(align_faces(image, [faces[k]], template))
    if not crops:
        raise BackboneError(f"no face photos for int8 calibration under {folder}")
    crops = np.concatenate(crops)
    return np.concatenate([crops, crops[:, :, ::-1]])


def build_int8_model(net, crops: np.ndarray) -> bytes:
    """Export a float32 FaceNet to ONNX and quantise it statically with ``crops`` as calibration.

    Args:
        net: ``InceptionResnetV1`` in eval mode on the CPU.
        crops: (N, 160, 160, 3) uint8 RGB aligned calibration faces.

    Returns:
        The serialised int8 (QDQ) ONNX model; input ``x`` (B, 3, 160, 160) normalised
        as ``(pixel - 127.5) / 128``, output ``y`` (B, 512) unnormalised embeddings.
    """
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = (crops.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{"x": x[i : i + 8]} for i in range(0, len(x), 8)])

        def get_next(self):
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        f32, pre, q8 = (str(Path(tmp) / n) for n in ("f32.onnx", "pre.onnx", "int8.onnx"))
        torch.onnx.export(net, torch.from_numpy(x[:1]), f32, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)
        quant_pre_process(f32, pre)
        quantize_static(pre, q8, _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return Path(q8).read_bytes()


def int8_session(model: bytes, threads: int):
    """An onnxruntime CPU session of ``model`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
