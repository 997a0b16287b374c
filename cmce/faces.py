"""Face detection (MTCNN), the face record, subject choice and alignment to a template.

Detection uses facenet-pytorch's MTCNN with the weights bundled in that package (no
download). Images of different sizes are detected in one batch by downscaling each to
at most ``max_side`` pixels and padding them onto one canvas; boxes and landmarks are
mapped back to the original pixels, so crops are always cut from the full-resolution
image.

Alignment warps the 5 landmarks onto a backbone's own template with a similarity
transform (Umeyama, 1991), the way ArcFace-style models expect their input.

Faces at the image's edge (tight crops: ID photos, badges, exported thumbnails) need two
things full photos do not (issue 22):

- Landmarks. facenet-pytorch's cascade (kept as it is in ``cmce._mtcnn``) cuts each
  candidate box that leaves the image down to its inside part and resizes that to the
  24/48-pixel input of the next stage, so the network sees the face squashed and its
  landmarks land off the face (0.25 eye distances off on MTCNN-box crops, 0.65 on crops
  of the face alone; the original MTCNN pads the missing part instead). A first-pass
  face whose box reaches the image border therefore gets its landmarks again from
  O-Net shown its box padded with grey (``FaceDetector.edge_landmarks``); faces inside
  the image keep MTCNN's landmarks to the bit.
- Something where the template reaches past the image. ``align_faces`` fills with black
  as it always has; ``fill="extended"`` fills with the image's border pixels blurred
  and fading to grey. The backbones embed such a face as the mean of both crops
  (``Backbone.align_views``) when the face is the photo (``face_fills_image``: its box
  covers a quarter of the image or more); no single fill beat black, but the two fills
  err in different directions (``scripts/bench_crops.py``). A face cut by the frame of a
  larger photo keeps the black fill alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .errors import CmceError

if TYPE_CHECKING:
    from .detection import SecondChance

logger = logging.getLogger(__name__)

__all__ = [
    "EDGE_VERSION",
    "FILLS",
    "MIN_FACE_PIXELS",
    "AlignmentTemplate",
    "Face",
    "FaceDetector",
    "align_faces",
    "pick_subject",
    "similarity_transform",
    "too_small_face",
    "face_fills_image",
    "too_small_image",
    "warp_leaves_image",
]

MIN_FACE_PIXELS = 16
"""Smallest face width (and shorter image side) in pixels that is indexed or embedded.

A backbone's 112-160 px input cut from a face under 16 px wide is an upscaled blur: its
embedding says little about the person. Images whose shorter side is under it are not
even given to the detector."""

FILLS_IMAGE_SHARE = 0.25
"""A face whose box covers at least this share of its image *is* the photo (an ID photo, a
badge, a tight crop): only such faces get the second, extended-fill view where their
template leaves the image. A face cut by the frame of a larger photo (a bystander) keeps
the black fill alone: its second view cost about a tenth of the indexing time on ordinary
photos (``scripts/bench_add_images.py``)."""

EDGE_VERSION = "edge-v1"
"""Version of the treatment of faces at the image's edge (refined landmarks, extended fill).

Embedding caches key such faces with it (``Backbone.face_cache_id``); faces inside the
image keep their old keys because nothing about them changed.
"""

FILLS = ("black", "extended")
"""What ``align_faces`` puts where the template reaches past the image."""


@dataclass(frozen=True)
class Face:
    """One detected face and where it came from.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the original (EXIF-upright) image.
        probability: MTCNN's detection probability in [0, 1].
        landmarks: five ``(x, y)`` points in original pixels: left eye, right eye, nose,
            left mouth corner, right mouth corner (left/right as seen in the image).
        image_size: ``(width, height)`` of the image the face was found in.
        source: where the image came from (file path or upload name), if known.
        detector: which detector found it: ``"mtcnn"``, ``"yunet"`` or ``"whole-image"``
            (no detector box: the frame itself, see ``cmce.detection``).
        detection_pass: ``"first"`` (the image as given), or a second-chance pass run
            because the first found nothing: ``"padded"``, ``"normalised"`` or
            ``"whole-image"``. A first-pass face at the image's edge
            (``at_image_edge``) has landmarks re-estimated by O-Net on its padded box
            (``FaceDetector.edge_landmarks``); its box and probability are MTCNN's.
    """

    box: tuple[float, float, float, float]
    probability: float
    landmarks: tuple[tuple[float, float], ...]
    image_size: tuple[int, int]
    source: str | None = None
    detector: str = "mtcnn"
    detection_pass: str = "first"

    @property
    def found_by(self) -> str:
        """How the face was found, for people: ``"mtcnn, first pass, p=0.999"``."""
        return f"{self.detector}, {self.detection_pass} pass, p={self.probability:.3f}"

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def at_image_edge(self) -> bool:
        """Whether the box reaches the border of the image (detectors clip boxes to it)."""
        w, h = self.image_size
        x1, y1, x2, y2 = self.box
        return x1 <= 0 or y1 <= 0 or x2 >= w or y2 >= h

    def landmarks_array(self) -> np.ndarray:
        """The landmarks as a float32 array of shape (5, 2)."""
        return np.asarray(self.landmarks, dtype=np.float32)

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "probability": self.probability,
            "landmarks": [list(p) for p in self.landmarks],
            "image_size": list(self.image_size),
            "source": self.source,
            "detector": self.detector,
            "detection_pass": self.detection_pass,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Face:
        return cls(
            box=tuple(float(v) for v in data["box"]),  # type: ignore[arg-type]
            probability=float(data["probability"]),
            landmarks=tuple((float(x), float(y)) for x, y in data["landmarks"]),
            image_size=tuple(int(v) for v in data["image_size"]),  # type: ignore[arg-type]
            source=data.get("source"),
            detector=data.get("detector") or "mtcnn",  # records written before the field: MTCNN's first pass
            detection_pass=data.get("detection_pass") or "first",
        )


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where a backbone wants the 5 landmarks in its square input.

    Attributes:
        name: identifier stored in the weights table and in bundles.
        size: side of the square crop in pixels.
        points: (5, 2) target landmark positions in crop pixels, MTCNN's order.
    """

    name: str
    size: int
    points: tuple[tuple[float, float], ...]

    def points_array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) from src to dst.

    Umeyama's closed form, "Least-squares estimation of transformation parameters
    between two point patterns", PAMI 1991.

    Args:
        src: (K, 2) source points.
        dst: (K, 2) destination points.

    Returns:
        (2, 3) affine matrix ``M`` with ``dst ~= M @ [x, y, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def face_fills_image(face: Face, share: float = FILLS_IMAGE_SHARE) -> bool:
    """Whether ``face``'s box covers at least ``share`` of its image (the photo is the face)."""
    w, h = face.image_size
    return w > 0 and h > 0 and face.area >= share * w * h


def warp_leaves_image(face: Face, template: AlignmentTemplate) -> bool:
    """Whether aligning ``face`` to ``template`` samples outside its image.

    True when a corner pixel centre of the ``S x S`` crop maps outside
    ``[0, W - 1] x [0, H - 1]`` of the image (``face.image_size``). Decided from the
    face record alone, so that a cache can tell which faces the fill touches.
    """
    m = similarity_transform(face.landmarks_array(), template.points_array())
    inverse = cv2.invertAffineTransform(m)
    last = template.size - 1.0
    corners = np.array([[0.0, 0.0, 1.0], [last, 0.0, 1.0], [0.0, last, 1.0], [last, last, 1.0]]) @ inverse.T
    w, h = face.image_size
    return bool((corners[:, 0] < 0).any() or (corners[:, 1] < 0).any()
                or (corners[:, 0] > w - 1).any() or (corners[:, 1] > h - 1).any())


def _extended_fill(image: np.ndarray, m: np.ndarray, size: int, inside: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 fill: the image's border pixels, blurred, fading to grey away from it.

    Edge-replicated pixels blurred with sigma 4 (at 112 pixels; scaled with the crop),
    turned into grey (127) over 12 pixels from the image's outline.
    """
    scale = size / 112.0
    replicated = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    blurred = cv2.GaussianBlur(replicated, (0, 0), 4.0 * scale)
    outside = (inside < 0.999).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
    fade = np.clip(distance / (12.0 * scale), 0.0, 1.0)[..., None]
    return (1.0 - fade) * blurred + fade * 127.0


def align_faces(
    image: np.ndarray, faces: Sequence[Face], template: AlignmentTemplate, fill: str = "black"
) -> np.ndarray:
    """Cut each face out of ``image`` aligned to ``template``.

    Args:
        image: (H, W, 3) uint8 RGB, the image the faces were detected in.
        faces: faces of that image.
        template: the backbone's landmark template.
        fill: what goes where the template reaches past the image: ``"black"`` (zeros,
            what every backbone has always been given) or ``"extended"`` (the border
            pixels blurred, fading to grey). Crops that stay inside the image are the
            same either way.

    Returns:
        (N, S, S, 3) uint8 RGB crops, ``S = template.size``.

    Raises:
        CmceError: an unknown ``fill``.
    """
    if fill not in FILLS:
        raise CmceError(f"unknown fill {fill!r}; valid: {', '.join(FILLS)}")
    size = template.size
    out = np.zeros((len(faces), size, size, 3), dtype=np.uint8)
    dst = template.points_array()
    for i, face in enumerate(faces):
        m = similarity_transform(face.landmarks_array(), dst)
        out[i] = cv2.warpAffine(
            image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        if fill == "extended":
            inside = cv2.warpAffine(np.ones(image.shape[:2], np.float32), m, (size, size),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            if inside.min() < 0.999:
                # black-bordered bilinear samples hold (inside share) x image: add the rest as fill
                filled = out[i] + (1.0 - inside)[..., None] * _extended_fill(image, m, size, inside)
                out[i] = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    return out


def pick_subject(faces: Sequence[Face]) -> int | None:
    """Index of the photo's subject: the face that is large and near the centre.

    Score = area x exp(-4 d^2), d = distance of the box centre from the image centre in
    units of the image half-diagonal. A background face twice as far out must be much
    larger to win. Returns None for an empty list.
    """
    if not faces:
        return None
    scores = []
    for f in faces:
        w, h = f.image_size
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        half_diag = max(np.hypot(w, h) / 2, 1.0)
        d = np.hypot(cx - w / 2, cy - h / 2) / half_diag
        scores.append(f.area * np.exp(-4.0 * d * d) * max(f.probability, 1e-3))
    return int(np.argmax(scores))


def too_small_image(shape: Sequence[int]) -> str | None:
    """Why an image of ``shape`` (H, W, ...) cannot hold a usable face, or None when it can."""
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < MIN_FACE_PIXELS:
        return f"image smaller than {MIN_FACE_PIXELS} px on its shorter side ({w}x{h} px)"
    return None


def too_small_face(face: Face) -> str | None:
    """Why ``face`` is too small to embed (box under ``MIN_FACE_PIXELS`` wide), or None."""
    if face.width < MIN_FACE_PIXELS:
        return f"face smaller than {MIN_FACE_PIXELS} px ({face.width:.0f} px wide)"
    return None


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
            (``cmce.detection.implausible_landmarks``).
        second_chance: settings of the second chance given to an image where no face
            was accepted (``cmce.detection``: padded, contrast-normalised, YuNet,
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
        # is not): ``cmce.embed`` detects one size at a time for that reason.
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
            from .detection import implausible_landmarks

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
        (``cmce.detection.implausible_landmarks``). Box and probability stay, so the
        subject choice is unchanged. Only the box is read, so refining a refined face
        gives the same face (a cache may refine the faces it stored before).

        Args:
            image: (H, W, 3) uint8 RGB the faces were found in.
            faces: its faces; those not at the edge, or not from MTCNN's first pass,
                are returned as they are.

        Returns:
            The faces in the same order.
        """
        from .detection import implausible_landmarks

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
            and the (5, 2) landmarks from ``cmce.detection.whole_frame_landmarks``
            (None when dlib is not installed).
        """
        from .detection import whole_frame_landmarks

        probability = self.onet_probability(image)
        if self._shape_predictor is None:
            try:
                import dlib
            except ImportError:
                logger.warning("whole-image faces need dlib (pip install dlib-bin); skipped")
                return probability, None
            from .backbones import get_spec
            from .backbones.base import verified_package_file

            self._shape_predictor = dlib.shape_predictor(str(verified_package_file(get_spec("dlib-resnet34"), extra=0)))
        return probability, whole_frame_landmarks(self._shape_predictor, image)

    def _second_chance(self, image: np.ndarray, source: str | None) -> list[Face]:
        from .detection import YuNet, second_chance

        if self._yunet is None:
            settings = self.second_chance
            self._yunet = YuNet(min(settings.yunet_min_score, settings.agree_min_score), self.max_side)
        return second_chance(image, lambda img: self._detect_one(img, source), self._yunet,
                             self.whole_frame, self.second_chance, source, self.onet_probability)

    def _detect(self, batch: np.ndarray):
        """MTCNN's cascade on a (B, H, W, 3) uint8 batch: per image (n, 5) boxes+probability, (n, 5, 2) points."""
        import torch

        from ._mtcnn import detect_faces

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
