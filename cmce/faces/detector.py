"""Face detection: MTCNN, batched over images of any size, and its second chance.

Detection uses facenet-pytorch's MTCNN with the weights bundled in that package (no
download). Images of different sizes are detected in one batch by downscaling each to
at most ``max_side`` pixels and padding them onto one canvas; boxes and landmarks are
mapped back to the original pixels, so crops are always cut from the full-resolution
image.

Faces at the image's edge (tight crops: ID photos, badges, exported thumbnails) need
their landmarks again (issue 22). facenet-pytorch's cascade (kept as it is in
``cmce.faces._mtcnn``) cuts each candidate box that leaves the image down to its inside
part and resizes that to the 24/48-pixel input of the next stage, so the network sees
the face squashed and its landmarks land off the face (0.25 eye distances off on
MTCNN-box crops, 0.65 on crops of the face alone; the original MTCNN pads the missing
part instead). A first-pass face whose box reaches the image border therefore gets its
landmarks again from O-Net shown its box padded with grey
(``FaceDetector.edge_landmarks``); faces inside the image keep MTCNN's landmarks to the
bit. Alignment and the fills live one floor down (``cmce.faces.geometry``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from cmce.assets import SHAPE_PREDICTOR_5, package_file
from cmce.errors import CmceError
from cmce.faces.geometry import (
    Face,
    too_small_image,
)
from cmce.faces.second_chance import (
    SecondChance,
    YuNet,
    implausible_landmarks,
    second_chance,
    whole_frame_landmarks,
)

logger = logging.getLogger(__name__)

__all__ = ["DETECTORS", "FaceDetector", "create_detector"]


def _channels_last_input(module, args):
    """Forward pre-hook: hand 4-D tensor inputs over in channels_last memory format."""
    import torch

    return tuple(
        a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
        for a in args
    )


@dataclass
class FaceDetector:
    """MTCNN face detector with the weights bundled in facenet-pytorch.

    Args:
        device: torch device string; default CUDA when available, else CPU.
        min_face_size: smallest face side in pixels, in the downscaled image.
        thresholds: MTCNN's three stage thresholds.
        max_side: images are downscaled to at most this many pixels on their longer side
            for detection (speed and memory); landmarks are mapped back.
        min_probability: faces below this detection probability are dropped.
        landmark_check: drop faces whose 5 landmarks no face can have
            (``cmce.faces.second_chance.implausible_landmarks``).
        second_chance: settings of the second chance given to an image where no face
            was accepted (``cmce.faces.second_chance``: padded, contrast-normalised, YuNet,
            whole-image); None (the default) runs MTCNN's first pass only. The engine
            that indexes galleries turns both on; the first pass is the same either way.
        edge_landmarks: re-estimate the landmarks of first-pass faces at the image's
            edge with O-Net shown their box padded with grey (``refine_edge_landmarks``);
            boxes, probabilities and the faces inside the image stay MTCNN's.
    """

    device: str | None = None
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    max_side: int = 640
    min_probability: float = 0.9
    landmark_check: bool = False
    second_chance: SecondChance | None = None
    edge_landmarks: bool = True
    _mtcnn: object = field(default=None, init=False, repr=False)
    _yunet: object = field(default=None, init=False, repr=False)
    _shape_predictor: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _model(self):
        if self._mtcnn is None:
            import torch
            from facenet_pytorch import MTCNN

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._mtcnn = MTCNN(
                min_face_size=self.min_face_size,
                thresholds=list(self.thresholds),
                keep_all=True,
                select_largest=False,
                device=device,
            )
            if torch.device(device).type == "cpu":
                # channels_last: torch's CPU max-pooling is 5-10x faster on it for the
                # R-/O-Net candidate batches; same numbers (`cmce bench`: 36.8 -> 23.2 ms per LFW photo)
                for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
                    net.to(memory_format=torch.channels_last)
                    net.register_forward_pre_hook(_channels_last_input)
            logger.info("MTCNN loaded on %s", device)
        return self._mtcnn

    def detect(self, image: np.ndarray, source: str | None = None) -> list[Face]:
        """Detect every face in one image.

        Args:
            image: (H, W, 3) uint8 RGB.
            source: recorded in each face.

        Returns:
            Faces sorted by detection probability, highest first; empty if none.
        """
        return self.detect_batch([image], [source])[0]

    def detect_batch(
        self, images: Sequence[np.ndarray], sources: Sequence[str | None] | None = None
    ) -> list[list[Face]]:
        """Detect faces in images of any sizes in one MTCNN pass.

        Args:
            images: each (H, W, 3) uint8 RGB.
            sources: one per image, recorded in its faces.

        Returns:
            For each image, its faces (possibly empty). An image whose shorter side is
            under ``MIN_FACE_PIXELS`` gets none without being detected (see
            ``too_small_image``; callers that report skips name the reason).
        """
        if sources is None:
            sources = [None] * len(images)
        if len(sources) != len(images):
            raise CmceError(f"got {len(images)} images but {len(sources)} sources")
        results: list[list[Face]] = [[] for _ in images]
        small: dict[int, np.ndarray] = {}
        scales: dict[int, float] = {}
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise CmceError(
                    f"detect needs (H, W, 3) uint8 RGB images, got {img.shape} {img.dtype}"
                )
            if (why := too_small_image(img.shape)) is not None:
                logger.info("%s: %s; no face searched", sources[i] or "image", why)
                continue
            h, w = img.shape[:2]
            s = min(1.0, self.max_side / max(h, w))
            if s < 1.0:
                img = cv2.resize(
                    img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
                )
            small[i] = img
            scales[i] = s
        # Group by canvas size so that a batch of equal photos is not padded at all. Images
        # of different sizes share one canvas, whose black margin changes what MTCNN finds
        # (a tight face crop can be found, with its landmarks off the face, where alone it
        # is not): ``cmce.models.embed`` detects one size at a time for that reason.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in small.items():
            groups.setdefault(img.shape[:2], []).append(i)
        if len(groups) > 1:
            hmax = max(img.shape[0] for img in small.values())
            wmax = max(img.shape[1] for img in small.values())
            groups = {(hmax, wmax): list(small)}
        for (hc, wc), idx in groups.items():
            batch = np.zeros((len(idx), hc, wc, 3), dtype=np.uint8)
            for j, i in enumerate(idx):
                h, w = small[i].shape[:2]
                batch[j, :h, :w] = small[i]
            with self._lock:
                found = self._detect(batch)
            for j, i in enumerate(idx):
                boxes, points = found[0][j], found[1][j]
                results[i] = self._faces(
                    boxes[:, :4], boxes[:, 4], points, scales[i], images[i].shape, sources[i]
                ) if len(boxes) else []
        if self.landmark_check or self.second_chance is not None:
            for i, faces in enumerate(results):
                kept = [f for f in faces if implausible_landmarks(f.landmarks_array()) is None]
                if len(kept) < len(faces):
                    logger.info("%s: %d faces with impossible landmarks dropped",
                                sources[i] or "image", len(faces) - len(kept))
                results[i] = kept
        if self.edge_landmarks:
            for i, faces in enumerate(results):
                if any(f.at_image_edge for f in faces):
                    results[i] = self.refine_edge_landmarks(images[i], faces)
        if self.second_chance is not None:
            for i in small:
                if not results[i]:
                    with self._lock:
                        results[i] = self._second_chance(images[i], sources[i])
        return results

    def _detect_one(self, image: np.ndarray, source: str | None) -> list[Face]:
        """MTCNN's first-pass settings on one image; the caller holds the lock."""
        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        small = image if s >= 1.0 else cv2.resize(
            image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        boxes, points = (r[0] for r in self._detect(small[None]))
        return self._faces(boxes[:, :4], boxes[:, 4], points, s, image.shape, source) if len(boxes) else []

    def onet_probability(self, image: np.ndarray, box: Sequence[float] | None = None) -> float:
        """MTCNN's last stage (O-Net) on one region: its face probability.

        Args:
            image: (H, W, 3) uint8 RGB.
            box: ``(x1, y1, x2, y2)``; squared about its centre (as MTCNN does) and cut
                with a grey border where it leaves the image. None: the whole frame,
                resized to 48x48 as it is.
        """
        import torch

        if box is not None:
            x1, y1, x2, y2 = (float(v) for v in box)
            side = max(x2 - x1, y2 - y1, 2.0)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            m = np.array([[48 / side, 0, 24 - 48 / side * cx], [0, 48 / side, 24 - 48 / side * cy]])
            crop = cv2.warpAffine(image, m, (48, 48), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=(127, 127, 127))
        else:
            crop = cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA)
        mtcnn = self._model()
        x = (torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None].to(mtcnn.device) - 127.5) * 0.0078125
        with torch.no_grad():
            return float(mtcnn.onet(x)[2][0, 1])  # O-Net ends in a softmax: (1, 2) non-face/face

    def refine_edge_landmarks(self, image: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """``faces`` with the landmarks of first-pass faces at the image's edge re-estimated.

        The cascade resizes the inside part of a box that leaves the image to the
        networks' input, so O-Net sees the face squashed and places the landmarks off
        it. Here O-Net is shown the face's box made square (as the cascade does),
        padded with grey where it leaves the image and area-resized to 48 pixels; its
        landmarks replace MTCNN's unless they are implausible
        (``cmce.faces.second_chance.implausible_landmarks``). Box and probability stay, so the
        subject choice is unchanged. Only the box is read, so refining a refined face
        gives the same face (a cache may refine the faces it stored before).

        Args:
            image: (H, W, 3) uint8 RGB the faces were found in.
            faces: its faces; those not at the edge, or not from MTCNN's first pass,
                are returned as they are.

        Returns:
            The faces in the same order.
        """
        out = []
        for face in faces:
            if face.detector == "mtcnn" and face.detection_pass == "first" and face.at_image_edge:
                with self._lock:
                    points = self._onet_landmarks(image, face.box)
                why = implausible_landmarks(points)
                if why is None:
                    face = replace(face, landmarks=tuple((round(float(x), 2), round(float(y), 2)) for x, y in points))
                else:
                    logger.info("%s: edge landmarks kept as found (O-Net's: %s)", face.source or "image", why)
            out.append(face)
        return out

    def _onet_landmarks(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """O-Net's (5, 2) landmarks of the square about ``box``, grey where it leaves the image."""
        import torch

        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1, 2.0)
        left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
        pixels = max(48, int(round(side)))
        s = pixels / side  # the square at (about) its own resolution, then area-resized like the cascade's crops
        m = np.array([[s, 0.0, -s * left], [0.0, s, -s * top]])
        square = cv2.warpAffine(image, m, (pixels, pixels), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
        crop = cv2.resize(square, (48, 48), interpolation=cv2.INTER_AREA)
        mtcnn = self._model()
        x = (torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None].to(mtcnn.device) - 127.5) * 0.0078125
        with torch.no_grad():
            points = mtcnn.onet(x)[1][0].float().cpu().numpy()  # (10,): x of the 5 points, then y, in box units
        return np.stack([left + points[:5] * side, top + points[5:] * side], axis=1)

    def whole_frame(self, image: np.ndarray) -> tuple[float, np.ndarray | None]:
        """MTCNN's last stage (O-Net) on the whole frame, and dlib's landmarks there.

        Returns:
            O-Net's face probability of the (H, W, 3) uint8 RGB image resized to 48x48,
            and the (5, 2) landmarks from ``cmce.faces.second_chance.whole_frame_landmarks``
            (None when dlib is not installed).
        """
        probability = self.onet_probability(image)
        if self._shape_predictor is None:
            try:
                import dlib
            except ImportError:
                logger.warning("whole-image faces need dlib (pip install dlib-bin); skipped")
                return probability, None
            self._shape_predictor = dlib.shape_predictor(str(package_file(SHAPE_PREDICTOR_5)))
        return probability, whole_frame_landmarks(self._shape_predictor, image)

    def _second_chance(self, image: np.ndarray, source: str | None) -> list[Face]:
        if self._yunet is None:
            settings = self.second_chance
            self._yunet = YuNet(min(settings.yunet_min_score, settings.agree_min_score), self.max_side)
        return second_chance(image, lambda img: self._detect_one(img, source), self._yunet,
                             self.whole_frame, self.second_chance, source, self.onet_probability)

    def _detect(self, batch: np.ndarray):
        """MTCNN's cascade on a (B, H, W, 3) uint8 batch: per image (n, 5) boxes+probability, (n, 5, 2) points."""
        import torch

        from cmce.faces._mtcnn import detect_faces

        mtcnn = self._model()
        with torch.no_grad():
            return detect_faces(
                batch, mtcnn.min_face_size, mtcnn.pnet, mtcnn.rnet, mtcnn.onet,
                mtcnn.thresholds, mtcnn.factor, mtcnn.device,
            )

    def _faces(self, boxes, probs, points, scale, shape, source) -> list[Face]:
        if boxes is None:
            return []
        h, w = shape[:2]
        faces = []
        for box, prob, pts in zip(boxes, probs, points):
            if prob is None or prob < self.min_probability:
                continue
            box = np.asarray(box, dtype=np.float64) / scale
            box = np.clip(box, 0, [w, h, w, h])
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            pts = np.asarray(pts, dtype=np.float64) / scale
            faces.append(
                Face(
                    box=tuple(round(float(v), 2) for v in box),  # type: ignore[arg-type]
                    probability=float(prob),
                    landmarks=tuple((round(float(x), 2), round(float(y), 2)) for x, y in pts),
                    image_size=(int(w), int(h)),
                    source=source,
                )
            )
        faces.sort(key=lambda f: -f.probability)
        return faces


DETECTORS = ("plain", "index")


def create_detector(kind: str = "plain", device: str | None = None) -> FaceDetector:
    """The face detector settings named ``kind`` (one of ``DETECTORS``).

    ``"plain"``: ``FaceDetector()``, MTCNN's first pass on the photo downscaled to 640 px
    (training and ``evaluate`` embed with it unless told otherwise). ``"index"``: what
    ``FaceEngine`` (``cmce index``, the app) detects with: 800 px, the landmark check and
    the second chance. ``cmce.models.embed.detector_signature`` tells the two apart in the cache.

    Args:
        kind: ``"plain"`` or ``"index"``.
        device: torch device for MTCNN (default CUDA when available, else CPU).

    Raises:
        CmceError: an unknown ``kind``.
    """
    if kind == "plain":
        return FaceDetector(device=device)
    if kind == "index":
        return FaceDetector(max_side=800, device=device, landmark_check=True, second_chance=SecondChance())
    raise CmceError(f"unknown detection {kind!r}; valid: {', '.join(DETECTORS)}")
