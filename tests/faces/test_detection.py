"""Second-chance detection and landmark sanity on real faces made into crops on the fly.

Crops of LFW photos (tight, dark, small), a smiley drawing, a blank image and textures:
each through the engine's detector or ``Gallery.add_images``, with the expected outcome
and the reason it records.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cmce.errors import CmceError
from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import Face, pick_subject
from cmce.faces.second_chance import SecondChance, clahe_luminance, implausible_landmarks
from cmce.gallery.memory import Gallery
from cmce.io.images import load_image
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.serve import display
from cmce.storage.read import read_gallery

PHOTOS = [("Aaron_Peirsol", 1), ("Adam_Sandler", 2), ("Abel_Pacheco", 1), ("Ahmed_Chalabi", 1),
          ("Alejandro_Toledo", 3), ("Ai_Sugiyama", 1)]


@pytest.fixture(scope="module")
def first_pass() -> FaceDetector:
    return FaceDetector(max_side=800)


@pytest.fixture(scope="module")
def engine_detector() -> FaceDetector:
    return FaceDetector(max_side=800, landmark_check=True, second_chance=SecondChance())


@pytest.fixture(scope="module")
def photos(lfw_dir: Path, first_pass: FaceDetector) -> list[tuple[np.ndarray, Face]]:
    out = []
    for person, i in PHOTOS:
        img = load_image(lfw_dir / person / f"{person}_{i:04d}.jpg")
        faces = first_pass.detect(img)
        out.append((img, faces[pick_subject(faces)]))
    return out


def inside_crop(img: np.ndarray, face: Face, inset: float = 0.1, width: int = 140) -> np.ndarray:
    """The face cut ``inset`` inside its box (brow to chin), resized to ``width`` pixels."""
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    dx, dy = int(inset * (x2 - x1)), int(inset * (y2 - y1))
    crop = np.ascontiguousarray(img[y1 + dy:y2 - dy, x1 + dx:x2 - dx])
    return cv2.resize(crop, (width, round(crop.shape[0] * width / crop.shape[1])), interpolation=cv2.INTER_AREA)


def smiley(side: int = 160) -> np.ndarray:
    img = np.full((side, side, 3), (255, 220, 0), np.uint8)
    cv2.circle(img, (80, 80), 70, (0, 0, 0), 3)
    cv2.circle(img, (55, 60), 8, (0, 0, 0), -1)
    cv2.circle(img, (105, 60), 8, (0, 0, 0), -1)
    cv2.ellipse(img, (80, 95), (35, 25), 0, 10, 170, (0, 0, 0), 3)
    return img


def no_face_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160] / 160
    out = {
        "blank": np.full((160, 160, 3), 127, np.uint8),
        "smiley": smiley(),
        "noise": rng.integers(0, 256, (160, 160, 3), dtype=np.uint8),
        "blurred noise": cv2.normalize(cv2.GaussianBlur(rng.integers(0, 256, (160, 160, 3)).astype(np.uint8), (0, 0), 14),
                                       None, 0, 255, cv2.NORM_MINMAX),
        "checker": np.repeat((255 * ((np.floor(xx * 5) + np.floor(yy * 5)) % 2))[..., None], 3, 2).astype(np.uint8),
    }
    try:
        import skimage.data as sd

        for name in ("coffee", "chelsea", "colorwheel"):  # each a false face of one detector alone
            img = np.asarray(getattr(sd, name)())
            img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
            s = min(img.shape[:2])
            out[name] = np.ascontiguousarray(img)
            out[f"{name} square"] = np.ascontiguousarray(img[:s, :s])
    except ImportError:  # scikit-image is in requirements-dev.txt; the generated images still run
        pass
    return out


def test_tight_crops_missed_by_the_first_pass_are_found_by_the_second_chance(photos, first_pass, engine_detector):
    missed = 0
    for img, face in photos:
        crop = inside_crop(img, face)
        faces = engine_detector.detect(crop)
        assert len(faces) == 1, "a face filling the frame is one face"
        f = faces[0]
        assert implausible_landmarks(f.landmarks_array()) is None
        if first_pass.detect(crop):
            assert f.detection_pass == "first" and f.detector == "mtcnn"
        else:
            missed += 1
            assert f.detection_pass in ("padded", "normalised", "whole-image")
            assert f.width > 0.5 * crop.shape[1]  # the face, not a patch of it
    assert missed >= 2, "the crops must include ones MTCNN's first pass misses, or this tests nothing"


def test_first_pass_faces_are_unchanged_by_the_second_chance(photos, first_pass, engine_detector):
    for img, _ in photos:
        assert [f.to_dict() for f in first_pass.detect(img)] == [f.to_dict() for f in engine_detector.detect(img)]


def test_dark_crop_is_found_and_clahe_brightens_it(photos, engine_detector):
    img, face = photos[0]
    dark = (inside_crop(img, face, inset=0.0).astype(np.float64) * 0.08).astype(np.uint8)
    assert clahe_luminance(dark).mean() > 2 * dark.mean()
    faces = engine_detector.detect(dark)
    assert len(faces) == 1 and faces[0].probability > 0.5


def test_whole_image_face_needs_onet_evidence_and_gets_dlib_landmarks(photos, engine_detector):
    img, face = photos[1]
    crop = inside_crop(img, face, inset=0.05)
    probability, points = engine_detector.whole_frame(crop)
    assert probability >= SecondChance().whole_image_min_score
    assert points.shape == (5, 2) and implausible_landmarks(points) is None
    # dlib's eyes and nose on the frame where MTCNN put them in the full photo
    x1, y1, x2, _ = face.box
    dx, dy = int(0.05 * (round(x2) - round(x1))), int(0.05 * (round(face.box[3]) - round(y1)))
    origin = np.array([round(x1) + dx, round(y1) + dy])
    scale = crop.shape[1] / (round(x2) - dx - origin[0])
    reference = (face.landmarks_array() - origin) * scale
    assert np.abs(points[:2] - reference[:2]).max() < 0.1 * crop.shape[1]
    assert np.abs(points[2] - reference[2]).max() < 0.15 * crop.shape[1]  # dlib: base of the nose, MTCNN: its tip
    assert engine_detector.whole_frame(smiley())[0] < 0.5


def test_impossible_landmarks_are_refused() -> None:
    good = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    assert implausible_landmarks(good) is None
    upside_down = good.copy()
    upside_down[:, 1] = 140 - upside_down[:, 1]
    assert "below the eyes" in implausible_landmarks(upside_down)
    mirrored_mouth = good.copy()
    mirrored_mouth[[3, 4]] = mirrored_mouth[[4, 3]]
    assert "mirrored" in implausible_landmarks(mirrored_mouth)
    nose_out = good.copy()
    nose_out[2] = [140.0, 70.0]
    assert "nose" in implausible_landmarks(nose_out)
    same_eye = good.copy()
    same_eye[1] = same_eye[0]
    assert "coincide" in implausible_landmarks(same_eye)
    # rotated by 60 degrees is still a face
    c, s = np.cos(np.radians(60)), np.sin(np.radians(60))
    assert implausible_landmarks(good @ np.array([[c, s], [-s, c]])) is None


def test_no_face_images_give_no_face(engine_detector) -> None:
    found = {name: [f.found_by for f in engine_detector.detect(img)] for name, img in no_face_images().items()}
    assert {k: v for k, v in found.items() if v} == {}
    assert len(found) >= 5


@pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")
def test_gallery_indexes_crops_records_the_pass_and_keeps_it_on_disk(photos, first_pass, tmp_path) -> None:
    g = Gallery(FaceEngine(load_bundle()))

    def png(img: np.ndarray) -> bytes:  # lossless: the gallery sees the pixels checked here
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    img, face = photos[2]
    crop = inside_crop(img, face)
    assert not first_pass.detect(crop), "the crop must be one the first pass misses"
    tiny = cv2.resize(img, (60, 60), interpolation=cv2.INTER_AREA)  # a face ~26 px wide
    # alone: in a batch, images of other sizes are detected on one canvas, whose black
    # margin can make MTCNN's first pass find the crop (see test_batch_of_different_sizes...)
    assert g.add_images([("crop.jpg", png(crop), "Abel_Pacheco")]).added == 1
    report = g.add_images([
        ("full.jpg", png(img), "Abel_Pacheco"),
        ("tiny.jpg", png(tiny), "Abel_Pacheco"),
        ("smiley.png", png(smiley()), None),
        ("blank.jpg", png(np.full((200, 200, 3), 127, np.uint8)), None),
    ])
    assert report.added == 2
    assert sorted(report.skipped) == [("blank.jpg", "no face found"), ("smiley.png", "no face found")]
    by_source = {e.source: e for e in g.entries}
    assert by_source["full.jpg"].face.detection_pass == "first"
    assert by_source["crop.jpg"].face.detection_pass != "first"
    caption = display.entry_caption("Abel_Pacheco", 0.1, False, face=by_source["crop.jpg"].face)
    assert "found: " in caption and by_source["crop.jpg"].face.detector in caption
    assert "found" not in display.entry_caption("Abel_Pacheco", 0.1, False, face=by_source["full.jpg"].face)
    # the crop matches the full photo of the same person
    res = g.search_image(png(photos[2][0]), name="q.jpg")
    assert res.views["ensemble"].matches[0].label == "Abel_Pacheco"

    g.save(tmp_path / "g")
    stored = read_gallery(tmp_path / "g").records
    passes = dict(zip(stored.source, stored.detection_pass))
    detectors = dict(zip(stored.source, stored.detector))
    assert passes["crop.jpg"] == by_source["crop.jpg"].face.detection_pass
    assert detectors["crop.jpg"] == by_source["crop.jpg"].face.detector
    assert passes["full.jpg"] == "first"
    assert stored.face(list(stored.source).index("crop.jpg")).detection_pass == passes["crop.jpg"]

    # a shard written before the columns existed still reads, as MTCNN's first pass
    shard = next((tmp_path / "g" / "shards").glob("entries-*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns(["detector", "detection_pass"]), shard, write_page_checksum=True)
    import json

    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    for s in manifest["shards"]:
        if s["file"].endswith(shard.name):
            s["bytes"] = shard.stat().st_size
    (tmp_path / "g" / "manifest.json").write_text(json.dumps(manifest))
    old = read_gallery(tmp_path / "g").records
    assert set(old.detector) == {"mtcnn"} and set(old.detection_pass) == {"first"}


def test_whole_image_pass_takes_a_face_shaped_frame_only_with_evidence(photos, engine_detector) -> None:
    """The last pass alone (the detectors before it passed as finding nothing)."""
    from cmce.faces.second_chance import second_chance

    settings = SecondChance()

    def last_pass(img: np.ndarray) -> list[Face]:
        return second_chance(img, lambda _: [], None, engine_detector.whole_frame, settings, "x.jpg")

    img, face = photos[1]
    crop = inside_crop(img, face, inset=0.05)
    faces = last_pass(crop)
    assert len(faces) == 1
    f = faces[0]
    assert (f.detector, f.detection_pass) == ("whole-image", "whole-image")
    assert f.box == (0.0, 0.0, float(crop.shape[1]), float(crop.shape[0])) and f.probability >= 0.99
    assert implausible_landmarks(f.landmarks_array()) is None
    assert last_pass(smiley()) == []  # face-shaped, but O-Net sees no face
    wide = cv2.resize(crop, (crop.shape[1] * 2, crop.shape[0] // 2))  # not shaped like a face crop
    assert last_pass(wide) == []


# ---------------------------------------------------------------- inputs too small to hold a face


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def shrunk(img: np.ndarray, face: Face, face_width: float) -> np.ndarray:
    """The whole photo downscaled so that ``face`` is about ``face_width`` px wide."""
    s = face_width / face.width
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (15, 15), (19, 19), (12, 600), (30, 3000)])
def test_images_too_small_for_a_face_give_none_not_a_crash(shape, first_pass, engine_detector, photos) -> None:
    """Under 16 px: not detected at all; 16-19 px, or a strip that downscaling leaves under MTCNN's
    20 px minimum: MTCNN's pyramid is empty (facenet-pytorch failed in torch.cat there)."""
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert first_pass.detect(img) == [] and engine_detector.detect(img) == []
    # alongside a real photo (on one canvas when it is searched at all): the photo's face is found
    full, face = photos[0]
    got = engine_detector.detect_batch([img, full])
    assert got[0] == [] and got[1]
    assert np.abs(np.subtract(got[1][pick_subject(got[1])].box, face.box)).max() < 0.08 * 250


def test_faces_under_16_px_are_found_but_too_small(photos, first_pass) -> None:
    """The detector does find faces 8-15 px wide in a small photo: the callers must name the skip."""
    from cmce.faces.geometry import MIN_FACE_PIXELS, too_small_face, too_small_image

    img, face = photos[0]
    small = shrunk(img, face, 10)
    faces = first_pass.detect(small)
    assert faces and faces[0].width < MIN_FACE_PIXELS
    assert too_small_face(faces[0]).startswith("face smaller than 16 px")
    assert too_small_face(face) is None and too_small_image(small.shape) is None
    assert too_small_image((2, 2, 3)) == "image smaller than 16 px on its shorter side (2x2 px)"


def test_embed_files_names_images_and_faces_under_16_px(photos, engine_detector, tmp_path) -> None:
    from cmce.models.embed import EmbeddingCache, embed_files

    img, face = photos[0]
    files = {
        "1x1.png": np.full((1, 1, 3), 200, np.uint8),
        "2x2.png": np.random.default_rng(0).integers(0, 256, (2, 2, 3), dtype=np.uint8),
        "face10.png": shrunk(img, face, 10),
        "face30.png": shrunk(img, face, 30),
    }
    paths = []
    for name, pixels in files.items():
        (tmp_path / name).write_bytes(png(pixels))
        paths.append(tmp_path / name)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    for _ in range(2):  # detected, then read from the cache: the same answers
        out = embed_files(paths, ["sface"], detector=engine_detector, cache=cache)
        why = dict(zip([p.name for p in paths], out.errors))
        assert why["1x1.png"].endswith("image smaller than 16 px on its shorter side (1x1 px)")
        assert why["2x2.png"].endswith("image smaller than 16 px on its shorter side (2x2 px)")
        assert "face smaller than 16 px" in why["face10.png"]
        assert why["face30.png"] is None
        assert out.found.tolist() == [False, False, False, True]
        assert not out.embeddings["sface"][:3].any() and np.isclose(np.linalg.norm(out.embeddings["sface"][3]), 1.0)


@pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")
def test_gallery_skips_images_and_faces_under_16_px_by_name(photos) -> None:
    g = Gallery(FaceEngine(load_bundle()))
    img, face = photos[0]
    report = g.add_images([
        ("1x1.png", png(np.full((1, 1, 3), 200, np.uint8)), None),
        ("2x2.png", png(np.random.default_rng(0).integers(0, 256, (2, 2, 3), dtype=np.uint8)), None),
        ("strip.png", png(np.full((10, 400, 3), 90, np.uint8)), None),
        ("face10.png", png(shrunk(img, face, 10)), "Aaron_Peirsol"),
        ("face30.png", png(shrunk(img, face, 30)), "Aaron_Peirsol"),
    ])
    assert report.added == 1 and [e.source for e in g.entries] == ["face30.png"]
    why = dict(report.skipped)
    assert why["1x1.png"] == "image smaller than 16 px on its shorter side (1x1 px)"
    assert why["2x2.png"] == "image smaller than 16 px on its shorter side (2x2 px)"
    assert why["strip.png"] == "image smaller than 16 px on its shorter side (400x10 px)"
    assert why["face10.png"].startswith("face smaller than 16 px (")
    with pytest.raises(CmceError, match="no face found in the query photo .image smaller than 16 px"):
        g.search_image(png(np.full((2, 2, 3), 90, np.uint8)), name="q.png")


def test_embed_files_gives_a_crop_the_face_it_has_alone_whatever_it_is_read_with(photos, first_pass,
                                                                                  tmp_path) -> None:
    """The detector pads images of different sizes onto one canvas, where MTCNN finds a tight crop
    (with its landmarks off the face) that it misses alone; embed_files detects one size at a time,
    so the face it caches for a file does not depend on the files read with it."""
    from cmce.models.embed import embed_files

    img, face = photos[2]
    crop = inside_crop(img, face)
    (tmp_path / "crop.png").write_bytes(png(crop))
    (tmp_path / "photo.png").write_bytes(png(img))
    assert not first_pass.detect(crop) and first_pass.detect_batch([crop, img])[0], \
        "the crop must be one the canvas changes, or this tests nothing"
    alone = embed_files([tmp_path / "crop.png"], [], detector=first_pass)
    mixed = embed_files([tmp_path / "crop.png", tmp_path / "photo.png"], [], detector=first_pass)
    assert alone.faces[0] is None and mixed.faces[0] is None and mixed.faces[1] is not None
    assert "no face found" in mixed.errors[0]
