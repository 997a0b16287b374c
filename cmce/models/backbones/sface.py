"""SFace (OpenCV Zoo) through OpenCV DNN: the lightweight query model."""

from __future__ import annotations

import logging
import threading

import numpy as np

from cmce.errors import BackboneError
from cmce.models.backbones.base import Backbone, verified_package_file

logger = logging.getLogger(__name__)


def load_stripped_onnx(path) -> bytes:
    """The ONNX model with leftover weight names removed from the graph inputs.

    The OpenCV Zoo int8 SFace file lists 29 weight names among its graph inputs that
    are neither initialisers nor used; OpenCV 5 and onnxruntime refuse such a graph.
    Keeping only inputs that nodes consume and that are not initialisers fixes it
    without changing a single weight.
    """
    import onnx

    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.input if i.name not in inits and i.name in used]
    dropped = len(model.graph.input) - len(keep)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    logger.debug("%s: stripped %d stray graph inputs", path, dropped)
    return model.SerializeToString()


class SFace(Backbone):
    """SFace 128-d, input 112x112 RGB in 0..255 (OpenCV's FaceRecognizerSF convention)."""

    def __init__(self, spec, device=None, batch_size=32):
        super().__init__(spec, "cpu", batch_size)
        import cv2

        path = verified_package_file(spec)
        try:
            buf = np.frombuffer(load_stripped_onnx(path), dtype=np.uint8)
            self._net = cv2.dnn.readNetFromONNX(buf)
        except Exception as e:  # cv2.error, onnx DecodeError
            raise BackboneError(f"sface: OpenCV could not load {path}: {e}") from e
        self._lock = threading.Lock()  # a cv2.dnn.Net is not safe to share across threads

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        blob = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        with self._lock:
            self._net.setInput(blob)
            return self._net.forward().reshape(len(crops), -1).copy()
