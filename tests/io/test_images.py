"""Tests for cmce.io.images: every file is generated in tmp_path, nothing is downloaded."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import LFW_DIR, write_bilevel_png
from PIL import Image, ImageFile

from cmce.errors import CmceError, ImageError, LimitError
from cmce.io.images import (
    DEFAULT_LIMITS,
    IMAGE_EXTENSIONS,
    ImageLimits,
    content_hash,
    downscale_for_detection,
    load_image,
)


def _noise_rgb(height: int = 64, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(pil_image: Image.Image, path: Path, **params: object) -> Path:
    pil_image.save(path, **params)
    return path


# ---------------------------------------------------------------- unreadable files


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageError, match=r"^photo\.jpg: not a readable image \(cannot identify"):
        load_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"^photo\.jpg: file is empty$"):
        load_image(path)
    with pytest.raises(ImageError, match="file is empty"):
        load_image(b"", name="upload.png")


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file_raises(tmp_path: Path, fmt: str, suffix: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise_rgb(128, 128)).save(buffer, fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=rf"^cut\{suffix}: image data is truncated or corrupt"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^nope\.png: cannot read file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)


def test_eps_is_never_opened(tmp_path: Path) -> None:
    """EPS is decoded by running Ghostscript, so it is not accepted at all."""
    path = tmp_path / "x.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(path)


def test_text_stream_and_unknown_type_are_refused() -> None:
    with pytest.raises(ImageError, match="binary stream"):
        load_image(io.StringIO("abc"))
    with pytest.raises(ImageError, match="cannot read an image from int"):
        load_image(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- size limits


def test_png_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    pillow_limit = Image.MAX_IMAGE_PIXELS
    path = write_bilevel_png(tmp_path / "bomb.png", 30_000)
    assert path.stat().st_size < 200_000  # 900 megapixels in ~110 KB

    def no_decode(self, *args, **kwargs):
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning may escape either
        with pytest.raises(ImageError) as caught:
            load_image(path)
    message = str(caught.value)
    assert message.startswith("bomb.png: ")
    assert "900,000,000 pixels" in message
    assert "40,000,000" in message
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # no global setting was changed


def test_pixel_limit_checked_from_header_before_decoding(tmp_path: Path) -> None:
    """The data is truncated: only a check made before decoding reports pixels."""
    path = write_bilevel_png(tmp_path / "big.png", 8_000, rows_written=2)
    expected = r"8000x8000 = 64,000,000 pixels, over the limit of 40,000,000"
    with pytest.raises(ImageError, match=expected):
        load_image(path)


def test_pillow_bomb_warning_becomes_image_error(tmp_path: Path) -> None:
    """100 MP is above Pillow's warning threshold (about 89 MP) and our limit."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    path = write_bilevel_png(tmp_path / "warn.png", 10_000, rows_written=1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match="100,000,000 pixels"):
            load_image(path)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_reading_changes_no_process_wide_state_and_is_safe_from_many_threads(tmp_path: Path, monkeypatch) -> None:
    """Bombs of 79-179 MP (around Pillow's warning and error thresholds) and good photos read by 8
    threads at once: every bomb is refused by name, every photo decoded, and the ``warnings``
    filters are never replaced (``warnings.catch_warnings`` swaps them process-wide, issue 24)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    bombs = [write_bilevel_png(tmp_path / f"bomb{side}.png", side, rows_written=1)
             for side in (8_900, 9_500, 13_400)]  # 79, 90 and 179.6 megapixels
    photo = _save(Image.fromarray(_noise_rgb()), tmp_path / "photo.png")
    swaps = []
    original = warnings.filters

    class Watched(list):  # a filters list that records any replacement of itself
        pass

    watched = Watched(original)
    monkeypatch.setattr(warnings, "filters", watched)
    lock = threading.Lock()
    for change in ("simplefilter", "filterwarnings", "resetwarnings"):  # any filter change is recorded
        monkeypatch.setattr(warnings, change, lambda *a, change=change, **k: swaps.append(change))

    def read(path: Path) -> str:
        if warnings.filters is not watched:
            with lock:
                swaps.append(path.name)
        try:
            return f"decoded {load_image(path).shape}"
        except ImageError as e:
            return str(e)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(read, [*bombs, photo] * 8))
    assert not swaps and warnings.filters is watched
    for outcome, path in zip(outcomes, [*bombs, photo] * 8):
        if path == photo:
            assert outcome == "decoded (64, 48, 3)"
        else:
            assert outcome.startswith(f"{path.name}: image has ") and "refused before decoding" in outcome, outcome


def test_custom_pixel_limit(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "small.png")
    with pytest.raises(ImageError, match=r"small\.png: .*10,000 pixels, over the limit of 5,000"):
        load_image(path, limits=ImageLimits(max_pixels=5_000))
    with pytest.raises(ImageError, match="over the limit of 5,000"):
        load_image(np.zeros((100, 100, 3), np.uint8), limits=ImageLimits(max_pixels=5_000))


def test_byte_limit_raises_limit_error(tmp_path: Path) -> None:
    path = _save(Image.fromarray(_noise_rgb()), tmp_path / "noisy.png")
    limits = ImageLimits(max_bytes=1_000)
    assert path.stat().st_size > 1_000
    expected = r"^noisy\.png: file is larger than the limit of 1000 bytes"
    with pytest.raises(LimitError, match=expected):
        load_image(path, limits=limits)
    with pytest.raises(LimitError):
        load_image(path.read_bytes(), limits=limits)
    with path.open("rb") as stream, pytest.raises(LimitError, match=r"^noisy\.png"):
        load_image(stream, limits=limits)
    assert issubclass(LimitError, CmceError)


def test_limits_are_validated() -> None:
    assert DEFAULT_LIMITS == ImageLimits(max_pixels=40_000_000, max_bytes=25 * 1024 * 1024)
    with pytest.raises(ValueError, match="max_pixels"):
        ImageLimits(max_pixels=0)
    with pytest.raises(ValueError, match="max_bytes"):
        ImageLimits(max_bytes=-1)


# ---------------------------------------------------------------- formats and modes


def _assert_rgb(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.uint8
    assert image.shape == (*shape, 3)
    assert image.flags.c_contiguous
    assert image.flags.writeable


@pytest.mark.parametrize(
    "suffix, params",
    [(".png", {}), (".webp", {"lossless": True}), (".tiff", {}), (".bmp", {}), (".ppm", {})],
)
def test_lossless_rgb_formats_round_trip(tmp_path: Path, suffix: str, params: dict) -> None:
    pixels = _noise_rgb()
    path = _save(Image.fromarray(pixels), tmp_path / f"noise{suffix}", **params)
    image = load_image(path)
    _assert_rgb(image, (64, 48))
    np.testing.assert_array_equal(image, pixels)


def test_jpeg(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (30, 20), (200, 100, 50)), tmp_path / "flat.jpeg", quality=95)
    image = load_image(path)
    _assert_rgb(image, (20, 30))
    assert np.abs(image.astype(int) - [200, 100, 50]).max() <= 3


@pytest.mark.parametrize("suffix", [".png", ".pgm"])
def test_greyscale(tmp_path: Path, suffix: str) -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = load_image(_save(Image.fromarray(grey), tmp_path / f"grey{suffix}"))
    _assert_rgb(image, (16, 16))
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], grey)


def test_one_bit(tmp_path: Path) -> None:
    bits = Image.new("1", (8, 4), 0)
    bits.putpixel((0, 0), 1)
    image = load_image(_save(bits, tmp_path / "bits.png"))
    assert image[0, 0].tolist() == [255, 255, 255]
    assert image[1, 1].tolist() == [0, 0, 0]


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode == "I;16"
    image = load_image(path)
    assert image[0, :, 0].tolist() == [0, 128, 255, 1]
    assert (image == image[:, :, :1]).all()


def test_16_bit_pgm_tiff_and_pil_modes(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    pgm = b"P5 3 1 65535\n" + values.astype(">u2").tobytes()
    assert load_image(pgm, name="deep.pgm")[0, :, 0].tolist() == [0, 128, 255]
    big_endian = Image.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    assert load_image(big_endian)[0, :, 0].tolist() == [0, 128, 255]
    tiff = _save(big_endian, tmp_path / "deep.tif")
    assert load_image(tiff)[0, :, 0].tolist() == [0, 128, 255]
    mode_i = Image.fromarray(values.astype(np.int32))
    assert mode_i.mode == "I"
    assert load_image(mode_i)[0, :, 0].tolist() == [0, 128, 255]


def test_float_greyscale() -> None:
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32))
    assert floats.mode == "F"
    assert load_image(floats)[0, :, 0].tolist() == [0, 128, 255, 0]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "print.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    image = load_image(path)
    _assert_rgb(image, (16, 16))
    assert np.abs(image.astype(int) - [255, 0, 0]).max() <= 8


def test_rgba_png_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[0, 1] = (0, 0, 255, 255)  # opaque blue
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    image = load_image(_save(Image.fromarray(rgba), tmp_path / "alpha.png"))
    assert image[0, 0].tolist() == [255, 255, 255]
    assert image[0, 1].tolist() == [0, 0, 255]
    assert all(abs(value - 127) <= 1 for value in image[1, 0].tolist())


def test_la_png_composited_on_white(tmp_path: Path) -> None:
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    image = load_image(_save(la, tmp_path / "la.png"))
    assert image[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_palette_gif_with_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    palette_image.putpixel((1, 0), 1)
    path = _save(palette_image, tmp_path / "sticker.gif", transparency=0)
    image = load_image(path)
    assert image[0, 0].tolist() == [255, 255, 255]  # transparent green -> white
    assert image[0, 1].tolist() == [255, 0, 0]


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2
    image = load_image(path)
    _assert_rgb(image, (8, 8))
    assert (image == [255, 0, 0]).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(Image.fromarray(stored), tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_image(path)
    _assert_rgb(image, (40, 20))
    assert image[:15, :, 0].mean() > 200 and image[:15, :, 2].mean() < 50  # red on top
    assert image[-15:, :, 2].mean() > 200 and image[-15:, :, 0].mean() < 50


# ---------------------------------------------------------------- other sources


def test_bytes_stream_and_pil_sources(tmp_path: Path) -> None:
    pixels = _noise_rgb()
    path = _save(Image.fromarray(pixels), tmp_path / "noise.png")
    np.testing.assert_array_equal(load_image(path.read_bytes()), pixels)
    np.testing.assert_array_equal(load_image(str(path)), pixels)
    with path.open("rb") as stream:
        np.testing.assert_array_equal(load_image(stream), pixels)
    with Image.open(path) as lazy:
        np.testing.assert_array_equal(load_image(lazy), pixels)
    assert load_image(Image.fromarray(pixels).convert("P")).shape == (64, 48, 3)


def test_lazy_pil_image_of_truncated_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise_rgb(128, 128)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:2_000])
    expected = r"^cut\.jpg: image data is truncated"
    with Image.open(path) as lazy, pytest.raises(ImageError, match=expected):
        load_image(lazy)


def test_numpy_inputs() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = load_image(grey)
    _assert_rgb(image, (3, 4))
    np.testing.assert_array_equal(image[:, :, 2], grey)
    np.testing.assert_array_equal(load_image(grey[:, :, None]), image)

    rgb = _noise_rgb()
    copied = load_image(rgb)
    np.testing.assert_array_equal(copied, rgb)
    assert not np.shares_memory(copied, rgb)

    strided = rgb[:, ::2]
    assert not strided.flags.c_contiguous
    image = load_image(strided)
    assert image.flags.c_contiguous
    np.testing.assert_array_equal(image, strided)

    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 1] = (10, 20, 30, 255)
    assert load_image(rgba)[0].tolist() == [[255, 255, 255], [10, 20, 30]]


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "dtype float32; expected uint8"),
        (np.zeros((4, 4, 2), dtype=np.uint8), r"shape \(4, 4, 2\)"),
        (np.zeros((4,), dtype=np.uint8), r"shape \(4,\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    ],
)
def test_bad_numpy_inputs(array: np.ndarray, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(array, name="upload")


@pytest.mark.parametrize(
    "file_name",
    ["фото ü 写真.png", "  spaced   name .png", "a" * 250 + ".png", "émoji 😀.PNG"],
)
def test_odd_file_names(tmp_path: Path, file_name: str) -> None:
    pixels = _noise_rgb(8, 8)
    path = tmp_path / file_name
    Image.fromarray(pixels).save(path, format="PNG")
    np.testing.assert_array_equal(load_image(path), pixels)
    path.write_bytes(b"not an image")
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{file_name}: not a readable image")


def test_name_overrides_message_name(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^upload 3: not a readable image"):
        load_image(b"garbage", name="upload 3")


@pytest.mark.skipif(not LFW_DIR.is_dir(), reason="LFW sample folder not available")
def test_real_photo() -> None:
    photo = next(LFW_DIR.glob("*/*.jpg"), None)
    if photo is None:
        pytest.skip("no JPEG in the LFW sample folder")
    image = load_image(photo)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 32 and image.shape[1] >= 32


# ---------------------------------------------------------------- helpers


def test_downscale_for_detection() -> None:
    image = np.zeros((1000, 500, 3), dtype=np.uint8)
    small, scale = downscale_for_detection(image, 200)
    assert small.shape == (200, 100, 3) and small.dtype == np.uint8
    assert scale == pytest.approx(0.2)

    same, scale = downscale_for_detection(image, 1000)
    assert same is image and scale == 1.0

    grey, scale = downscale_for_detection(np.zeros((300, 600), np.uint8), 100)
    assert grey.shape == (50, 100) and scale == pytest.approx(1 / 6)
    single, _ = downscale_for_detection(np.zeros((300, 600, 1), np.uint8), 100)
    assert single.shape == (50, 100, 1)

    with pytest.raises(ValueError, match="max_side"):
        downscale_for_detection(image, 0)


def test_downscale_averages_area() -> None:
    checker = np.zeros((4, 4, 3), dtype=np.uint8)
    checker[::2, ::2] = 255
    checker[1::2, 1::2] = 255
    small, scale = downscale_for_detection(checker, 2)
    assert scale == 0.5
    assert np.abs(small.astype(int) - 128).max() <= 1


def test_content_hash(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # spans several read chunks
    path = tmp_path / "blob.jpg"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert content_hash(data) == expected
    assert content_hash(path) == expected
    assert content_hash(str(path)) == expected
    with pytest.raises(ImageError, match=r"missing\.jpg: cannot read file"):
        content_hash(tmp_path / "missing.jpg")


def test_image_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".pgm", ".webp", ".tif", ".gif"} <= IMAGE_EXTENSIONS
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in IMAGE_EXTENSIONS)


def test_big_jpeg_is_decoded_at_reduced_scale_within_the_budget(tmp_path: Path) -> None:
    """A photo over the pixel budget is downscaled while decoding, not refused (JPEG only)."""
    big = Image.fromarray(np.tile(_noise_rgb(60, 80), (40, 40, 1)))  # 2400 x 3200 = 7.68 MP
    path = _save(big, tmp_path / "big.jpg", quality=80)
    out = load_image(path, limits=ImageLimits(max_pixels=2_000_000))
    assert out.shape[0] * out.shape[1] <= 2_000_000
    assert out.shape[:2] == (1200, 1600)  # 1/2 scale
    png = _save(big, tmp_path / "big.png")
    with pytest.raises(ImageError, match="pixels"):
        load_image(png, limits=ImageLimits(max_pixels=2_000_000))
