"""cmce.faces.image_quality: a face's size, sharpness and exposure, on real LFW photos."""

from __future__ import annotations

import doctest
import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from cmce.errors import ImageError
from cmce.faces import image_quality
from cmce.faces.geometry import Face
from cmce.faces.image_quality import EYES_PER_BOX, FaceImageQuality, face_image_quality
from cmce.io.images import load_image

PHOTOS = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg",
          "Adam_Sandler/Adam_Sandler_0001.jpg"]

# LFW photos are 250 x 250 with the face in the middle: a fixed box and landmarks of about
# MTCNN's (no detector needed to measure the pixels)
LFW_FACE = Face((78.0, 70.0, 172.0, 190.0), 0.99,
                ((104.0, 114.0), (146.0, 114.0), (125.0, 138.0), (108.0, 160.0), (142.0, 160.0)), (250, 250))


@pytest.fixture(scope="module")
def photos(lfw_dir) -> list[np.ndarray]:
    return [load_image(lfw_dir / p) for p in PHOTOS]


def scaled(face: Face, s: float, image: np.ndarray) -> Face:
    h, w = image.shape[:2]
    return replace(face, box=tuple(v * s for v in face.box), landmarks=tuple((x * s, y * s) for x, y in face.landmarks),
                   image_size=(w, h))


def test_doctests() -> None:
    assert doctest.testmod(image_quality).failed == 0


def test_values_are_finite_in_range_and_the_same_for_the_same_input(photos) -> None:
    for img in photos:
        q = face_image_quality(img, LFW_FACE)
        assert all(math.isfinite(v) for v in (q.face_px, q.sharpness, q.exposure))
        assert q.face_px == pytest.approx(42.0) and 0 < q.sharpness < 1 and 0 < q.exposure < 1
        before = img.copy()
        assert face_image_quality(img, LFW_FACE) == q and np.array_equal(img, before)  # the photo is left as it was
        assert q.known and q.describe().startswith("eyes 42 px apart · sharpness ")


def test_a_blurred_copy_is_less_sharp(photos) -> None:
    for img in photos:
        sharp = face_image_quality(img, LFW_FACE).sharpness
        blurred = [face_image_quality(cv2.GaussianBlur(img, (0, 0), s), LFW_FACE).sharpness for s in (1.0, 2.0, 4.0)]
        assert sharp > blurred[0] > blurred[1] > blurred[2], (sharp, blurred)
        assert blurred[1] < 0.5 * sharp


def test_a_darkened_copy_is_less_exposed_and_a_brightened_one_more(photos) -> None:
    for img in photos:
        q = face_image_quality(img, LFW_FACE)
        dark = face_image_quality((img * 0.4).astype(np.uint8), LFW_FACE)
        bright = face_image_quality(np.clip(img.astype(np.int16) + 60, 0, 255).astype(np.uint8), LFW_FACE)
        assert dark.exposure < 0.5 * q.exposure + 0.01 and bright.exposure > q.exposure
        assert dark.face_px == q.face_px


def test_a_downscaled_photo_has_a_smaller_face(photos) -> None:
    for img in photos:
        small = cv2.resize(img, (125, 125), interpolation=cv2.INTER_AREA)
        q, q_small = face_image_quality(img, LFW_FACE), face_image_quality(small, scaled(LFW_FACE, 0.5, small))
        assert q_small.face_px == pytest.approx(q.face_px / 2)
        # measured on the same 64 px square: exposure stays, the face at 47 px is upscaled
        assert q_small.exposure == pytest.approx(q.exposure, abs=0.02)
        assert q_small.sharpness < q.sharpness


def test_degenerate_landmarks_fall_back_on_the_box_and_an_outside_box_measures_nothing(photos) -> None:
    face = replace(LFW_FACE, landmarks=((125.0, 125.0),) * 5)
    assert face_image_quality(photos[0], face).face_px == pytest.approx(EYES_PER_BOX * 94.0)
    outside = replace(LFW_FACE, box=(300.0, 300.0, 400.0, 400.0))
    q = face_image_quality(photos[0], outside)
    assert q.face_px == pytest.approx(42.0) and math.isnan(q.sharpness) and math.isnan(q.exposure)
    edge = replace(LFW_FACE, box=(-20.0, -10.0, 60.0, 90.0))  # clipped to the photo
    assert math.isfinite(face_image_quality(photos[0], edge).sharpness)


def test_not_measured_is_nan_and_said_as_nothing() -> None:
    q = FaceImageQuality()
    assert not q.known and q.describe() == ""


def test_a_grey_or_float_image_is_refused(photos) -> None:
    with pytest.raises(ImageError, match="uint8 RGB"):
        face_image_quality(photos[0][..., 0], LFW_FACE)
    with pytest.raises(ImageError, match="uint8 RGB"):
        face_image_quality(photos[0].astype(np.float32), LFW_FACE)
