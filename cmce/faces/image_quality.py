"""How good a face's pixels are: its size, sharpness and exposure, measured on the photo.

Three numbers per face, computed from the original photo and its ``Face`` record (no
model runs; about a millisecond per face):

- ``face_px``: the distance between the two eye landmarks in the photo's pixels (the
  inter-ocular distance). Where the eye landmarks coincide or are not finite, the box's
  shorter side times ``EYES_PER_BOX`` (0.45, the median ratio of the two on MTCNN's LFW
  faces) stands in, so the number keeps one scale. A face seen in profile has its eyes
  closer in the image, and a smaller ``face_px``.
- ``sharpness``: the face region (its box, clipped to the photo) turned grey (Rec. 601
  luma, 0-255), resampled to ``QUALITY_SIZE`` x ``QUALITY_SIZE`` pixels (area
  interpolation), filtered with the 3x3 Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``;
  ``v`` = the variance of the result, and ``sharpness = v / (v + SHARPNESS_HALF)`` in
  [0, 1). ``SHARPNESS_HALF`` (300) is about the median ``v`` of LFW faces, so a typical
  LFW face scores about 0.5, one blurred with a Gaussian of sigma 2 px about 0.1. The
  fixed size makes faces larger than it comparable whatever the photo's resolution; a
  face smaller than it is upscaled, and its missing detail scores as blur. Contrast
  raises it too (a flat, low-contrast face scores low).
- ``exposure``: the mean of that grey ``QUALITY_SIZE`` square divided by 255, in [0, 1]
  (0: black, 1: white; LFW faces: about 0.37 to 0.64 for 90 % of them). It measures
  light and skin together, so it is shown as a number, not judged.

Faces whose clipped box holds fewer than 2 x 2 pixels get NaN sharpness and exposure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from cmce.errors import ImageError
from cmce.faces.geometry import Face

__all__ = [
    "EYES_PER_BOX",
    "QUALITY_SIZE",
    "SHARPNESS_HALF",
    "FaceImageQuality",
    "face_image_quality",
]

QUALITY_SIZE = 64
"""Side in pixels of the grey square that sharpness and exposure are measured on."""

SHARPNESS_HALF = 300.0
"""The Laplacian variance that scores a sharpness of 0.5 (about the median of LFW faces)."""

EYES_PER_BOX = 0.45
"""Eye distance per box shorter side (median of MTCNN's LFW faces): ``face_px``'s fallback."""


@dataclass(frozen=True)
class FaceImageQuality:
    """Size, sharpness and exposure of one face in its photo (see the module docstring).

    NaN means not measured (entries stored before these numbers existed).

    Attributes:
        face_px: distance between the eyes in the photo's pixels.
        sharpness: ``v / (v + SHARPNESS_HALF)`` in [0, 1), ``v`` the Laplacian variance of
            the grey face resampled to ``QUALITY_SIZE`` pixels.
        exposure: mean grey level of the face in [0, 1].
    """

    face_px: float = math.nan
    sharpness: float = math.nan
    exposure: float = math.nan

    @property
    def known(self) -> bool:
        """Whether any of the three numbers was measured.

        >>> FaceImageQuality().known, FaceImageQuality(38.0, 0.4, 0.6).known
        (False, True)
        """
        return not all(math.isnan(v) for v in (self.face_px, self.sharpness, self.exposure))

    def describe(self) -> str:
        """The measured numbers for people ('' when none was measured).

        >>> FaceImageQuality(38.2, 0.4212, 0.6071).describe()
        'eyes 38 px apart · sharpness 0.42 · exposure 0.61'
        >>> FaceImageQuality(38.2).describe()
        'eyes 38 px apart'
        """
        parts = []
        if not math.isnan(self.face_px):
            parts.append(f"eyes {self.face_px:.0f} px apart")
        if not math.isnan(self.sharpness):
            parts.append(f"sharpness {self.sharpness:.2f}")
        if not math.isnan(self.exposure):
            parts.append(f"exposure {self.exposure:.2f}")
        return " · ".join(parts)


def eye_distance(face: Face) -> float:
    """``face_px``: the eyes' distance in pixels, or ``EYES_PER_BOX`` x the box's shorter side.

    >>> f = Face((10.0, 20.0, 110.0, 140.0), 0.99, ((40.0, 60.0), (80.0, 63.0), (60, 80), (45, 100), (75, 100)),
    ...          (200, 200))
    >>> round(eye_distance(f), 3)
    40.112
    >>> eye_distance(Face(f.box, 0.99, ((50.0, 60.0),) * 5, (200, 200)))  # degenerate landmarks: 0.45 x 100
    45.0
    """
    lm = face.landmarks_array()
    if lm.shape[0] >= 2 and np.isfinite(lm[:2]).all():
        d = float(np.hypot(*(lm[1].astype(np.float64) - lm[0])))
        if d >= 1.0:
            return d
    return EYES_PER_BOX * max(min(face.width, face.height), 0.0)


def _grey_square(image: np.ndarray, face: Face) -> np.ndarray | None:
    """The face's box clipped to ``image``, grey, as (QUALITY_SIZE, QUALITY_SIZE) float32 in
    0-255; None when the clipped box holds fewer than 2 x 2 pixels."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = face.box
    if not all(math.isfinite(v) for v in face.box):
        return None
    # whole pixels the box covers: floor of the start, ceiling of the end
    c1, r1 = max(math.floor(x1), 0), max(math.floor(y1), 0)
    c2, r2 = min(math.ceil(x2), w), min(math.ceil(y2), h)
    if c2 - c1 < 2 or r2 - r1 < 2:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(image[r1:r2, c1:c2]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (QUALITY_SIZE, QUALITY_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def face_image_quality(image: np.ndarray, face: Face) -> FaceImageQuality:
    """Measure ``face``'s size, sharpness and exposure in ``image`` (see the module docstring).

    Args:
        image: (H, W, 3) uint8 RGB, the photo ``face`` was found in (original pixels).
        face: the face (box and landmarks in ``image``'s pixels).

    Returns:
        The three numbers, rounded to float32 (what the gallery's shards store);
        sharpness and exposure are NaN for a box under 2 x 2 pixels inside the image.

    Raises:
        ImageError: ``image`` is not (H, W, 3) uint8.

    >>> img = np.zeros((100, 100, 3), np.uint8); img[:, ::2] = 255  # stripes: sharp, half white
    >>> face = Face((20.0, 20.0, 80.0, 80.0), 0.99, ((35.0, 40.0), (65.0, 40.0), (50, 55), (38, 68), (62, 68)),
    ...             (100, 100))
    >>> q = face_image_quality(img, face)
    >>> q.face_px, q.sharpness > 0.9, round(q.exposure, 1)
    (30.0, True, 0.5)
    >>> face_image_quality(np.full((100, 100, 3), 255, np.uint8), face)
    FaceImageQuality(face_px=30.0, sharpness=0.0, exposure=1.0)
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"face_image_quality needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    face_px = eye_distance(face)
    grey = _grey_square(image, face)
    if grey is None:
        return FaceImageQuality(_float32(face_px))
    variance = float(cv2.Laplacian(grey, cv2.CV_32F, ksize=1).astype(np.float64).var())
    sharpness = variance / (variance + SHARPNESS_HALF)
    exposure = float(grey.astype(np.float64).mean() / 255.0)
    return FaceImageQuality(_float32(face_px), _float32(sharpness), _float32(exposure))


def _float32(value: float) -> float:
    """``value`` rounded to float32, as the shards store it: a saved and reloaded entry compares equal."""
    return float(np.float32(value))
