"""The models a gallery needs, loaded once: detector, query model, gallery models, bundle.

``FaceEngine`` is shared by every gallery and user of a process. It runs the face
detector and the backbones; the bundle's transformers run where the backbones do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from cmce.errors import BackboneUnavailableError
from cmce.faces.detector import FaceDetector, create_detector
from cmce.faces.geometry import Face
from cmce.method.bundle_model import Bundle
from cmce.models.backbones.base import FaceViews

logger = logging.getLogger(__name__)

__all__ = ["FaceEngine"]


class FaceEngine:
    """The models, loaded once: detector, query model, gallery models, bundle.

    The query model must run here (every query needs it). A gallery model that cannot
    run here (e.g. weights that are only downloadable online) is skipped: the engine
    still serves galleries that hold its embeddings, and new photos are indexed
    without it (``unavailable`` says why).

    Args:
        bundle: the loaded bundle.
        detector: MTCNN settings (default: ``cmce.faces.second_chance.create_detector("index")``:
            ``FaceDetector(max_side=800)`` with the landmark check and the second chance on).
        device: torch device for torch backbones.

    Raises:
        BackboneUnavailableError: the query model cannot run here.
    """

    def __init__(self, bundle: Bundle, detector: FaceDetector | None = None, device: str | None = None):
        from cmce.models.backbones import create_backbone
        from cmce.models.backbones.base import (
            configure_opencv_threads,
            configure_torch_threads,
            default_device,
        )

        configure_torch_threads()  # CMCE_TORCH_THREADS, default 1 (see TORCH_THREADS)
        configure_opencv_threads()  # CMCE_OPENCV_THREADS, default OpenCV's own (every core)
        self.device = device or default_device()
        self.bundle = bundle.to(self.device)  # the transformers run where the backbones do
        self.detector = detector or create_detector("index", device=self.device)
        self._backbones = {bundle.query_model: create_backbone(bundle.query_model, self.device)}
        self.unavailable: dict[str, str] = {}
        for m in bundle.models[1:]:
            try:
                self._backbones[m] = create_backbone(m, self.device)
            except BackboneUnavailableError as e:
                self.unavailable[m] = str(e)
                logger.warning("%s; galleries holding its embeddings are still served", e)

    @property
    def backbones(self) -> dict[str, object]:
        """Backbone name -> loaded model, for every bundle model that runs here."""
        return dict(self._backbones)

    @property
    def query_backbone(self):
        return self._backbones[self.bundle.query_model]

    def detect(self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None) -> list[list[Face]]:
        """Faces per image (see ``FaceDetector.detect_batch``)."""
        return self.detector.detect_batch(list(images), list(sources) if sources else None)

    def embed_gallery_faces(self, image: np.ndarray, faces: Sequence[Face]) -> dict[str, np.ndarray]:
        """Every available bundle backbone's embeddings of ``faces``: name -> (n, D)."""
        return self.embed_gallery_batch([(image, faces)])

    def embed_gallery_batch(
        self, batch: Sequence[tuple[np.ndarray, Sequence[Face]]], models: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Backbone embeddings of the faces of several images.

        Each backbone aligns the faces of every image, then embeds all of them in
        batches of its own size (batching across images, not image by image). A face
        whose template reaches past its image is embedded as the mean of two fills
        (``Backbone.align_views``), exactly as a query is.

        Args:
            batch: ``(image, faces of that image)`` pairs.
            models: which backbones (default every bundle model that runs here).

        Returns:
            name -> (total faces, D), rows in the order of ``batch`` and of the faces
            within each image.
        """
        out = {}
        for m in self._backbones if models is None else models:
            bb = self._backbones[m]
            views = [bb.align_views(image, faces) for image, faces in batch if len(faces)]
            out[m] = bb.embed_views(FaceViews.concat(views)) if views else np.zeros((0, bb.embedding_size), np.float32)
        return out

    def embed_query_face(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The query model's (Dq,) embedding of one face: the only network a query runs."""
        return self.query_backbone.embed_faces(image, [face])[0]
