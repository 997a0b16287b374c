"""The face record, subject choice and alignment to a template: geometry, no detector.

Alignment warps the 5 landmarks onto a backbone's own template with a similarity
transform (Umeyama, 1991), the way ArcFace-style models expect their input.

Where the template reaches past the image (tight crops: ID photos, badges, exported
thumbnails), ``align_faces`` fills with black as it always has; ``fill="extended"``
fills with the image's border pixels blurred and fading to grey. The backbones embed
such a face as the mean of both crops (``Backbone.align_views``) when the face is the
photo (``face_fills_image``: its box covers a quarter of the image or more); no single
fill beat black, but the two fills err in different directions
(``benchmarks/bench_crops.py``). A face cut by the frame of a larger photo keeps the black
fill alone. Detection lives one floor up (``cmce.faces.detector``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cmce.errors import CmceError

logger = logging.getLogger(__name__)

__all__ = [
    "EDGE_VERSION",
    "FILLS",
    "MIN_FACE_PIXELS",
    "AlignmentTemplate",
    "Face",
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
photos (``benchmarks/bench_add_images.py``)."""

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
            (no detector box: the frame itself, see ``cmce.faces.second_chance``).
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


