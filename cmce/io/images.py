"""Read any user image into one RGB ``uint8`` array, safely.

Everything a user uploads goes through :func:`load_image`: a path, raw bytes, a
binary stream, a Pillow image or a numpy array all come out as a C-contiguous
``(H, W, 3)`` ``uint8`` RGB array, or as an :class:`~cmce.errors.ImageError`
whose message names the file and says what was wrong.

What is handled:

* every format Pillow reads (JPEG, PNG, PGM/PPM, WebP, BMP, TIFF, GIF, ...),
  except EPS, which Pillow decodes by running Ghostscript; of an animated file
  only the first frame is used;
* the EXIF orientation tag (a phone photo taken upright comes out upright);
* every colour mode: greyscale, 1-bit, palette, CMYK, 16-bit greyscale (scaled
  by its bit depth, not clipped), 32-bit float, and transparency, which is
  composited onto white;
* decompression bombs: the pixel count in the header is checked against
  :attr:`ImageLimits.max_pixels` before any pixel is decoded (a JPEG over it is
  decoded at 1/2, 1/4 or 1/8 scale when that fits, as big phone photos need), and Pillow's own
  cap (``Image.MAX_IMAGE_PIXELS``) is applied the same way, as an
  :class:`~cmce.errors.ImageError`, never as a warning.  Nothing global is changed
  (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES`` and the ``warnings``
  filters keep their values), so reading images from many threads at once is safe: the header
  is identified by Pillow's format plugins directly, without ``Image.open``'s bomb warning,
  and the size check runs before ``load()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps

from cmce.errors import ImageError, LimitError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".pnm", ".webp", ".bmp", ".tif",
     ".tiff", ".gif"}
)
"""Lower-case file suffixes (with the dot) taken as images when listing folders and archives."""

_MIB = 1024 * 1024
_HASH_CHUNK_BYTES = 1 * _MIB
# Pillow formats never opened: EPS is decoded by running Ghostscript on the file.
_REFUSED_FORMATS = frozenset({"EPS"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_INT_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_TIFF_BITS_PER_SAMPLE = 258
_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class ImageLimits:
    """Caps applied to every image before it is decoded.

    Attributes:
        max_pixels: most pixels (width * height, from the file header) an image may
            have; a larger one is refused before decoding. The default, 40 million,
            is above any phone camera (a 200 MP sensor saves 12.5 MP by default).
            Pillow's own cap (``Image.MAX_IMAGE_PIXELS``, about 89 million) still
            applies on top of this one, so raising ``max_pixels`` above it has no effect.
        max_bytes: largest file, in bytes, that is read at all (default 25 MiB).
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 25 * _MIB

    def __post_init__(self) -> None:
        for field_name in ("max_pixels", "max_bytes"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ImageLimits.{field_name} must be a positive integer, got {value!r}"
                )


DEFAULT_LIMITS = ImageLimits()

ImageSource = (
    str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
)


def load_image(
    source: ImageSource,
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    name: str | None = None,
) -> np.ndarray:
    """Read an image from a file, bytes, a stream, a Pillow image or an array.

    Files are read whole into memory (at most ``limits.max_bytes``), the header
    size is checked against ``limits.max_pixels``, then the first frame is
    decoded, turned upright according to its EXIF orientation and converted to
    RGB. Transparent pixels become white. 16-bit greyscale is scaled by its bit
    depth (65535 -> 255, 32768 -> 128), float greyscale from [0, 1] (or
    [0, 255]; any other range is stretched from its minimum to its maximum).

    A Pillow image is used at its current frame. A numpy array must be ``uint8``
    of shape (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; it is always
    copied, so the result never shares memory with the input.

    Args:
        source: a path (``str`` or path-like), the encoded file as bytes, a binary
            stream open for reading, a Pillow image, or a numpy array.
        limits: caps on file size and pixel count.
        name: what to call the image in error messages; by default the file name
            of a path or stream, otherwise ``"image"`` or ``"array"``.

    Returns:
        (H, W, 3) uint8 RGB array, C-contiguous and writable.

    Raises:
        ImageError: the source is missing, empty, not an image, truncated or
            corrupt, in a colour mode that cannot be converted, or has more than
            ``limits.max_pixels`` pixels.
        LimitError: the file is larger than ``limits.max_bytes``.
    """
    display_name = name if name is not None else _default_name(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, display_name, limits)
    if isinstance(source, Image.Image):
        with _pillow_bomb_guard(display_name, limits):
            _check_pixels(source.size, display_name, limits)
            _decode(source, display_name)
        return _pil_to_rgb(_exif_upright(source, display_name), display_name)
    data = _read_encoded(source, display_name, limits)
    with _pillow_bomb_guard(display_name, limits), _open_lazily(data, display_name) as pil_image:
        _fit_jpeg_in_budget(pil_image, _effective(limits))
        _check_pixels(pil_image.size, display_name, limits)
        _decode(pil_image, display_name)
        return _pil_to_rgb(_exif_upright(pil_image, display_name), display_name)


def downscale_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink an image so that its longer side is at most ``max_side`` pixels.

    Uses area interpolation (the right filter for shrinking). Images already
    small enough are returned as they are, not copied.

    Args:
        image: (H, W, C) or (H, W) array, any dtype OpenCV resizes (uint8 RGB usually).
        max_side: largest allowed length of the longer side, in pixels (>= 1).

    Returns:
        ``(resized, scale)``: the resized array with the same number of dimensions
        and channels, and ``scale`` = resized size / original size (1.0 when not
        resized). Multiply coordinates found on ``resized`` by ``1 / scale`` to
        map them back onto ``image``.

    Raises:
        ValueError: ``max_side`` is below 1 or ``image`` is not 2-D or 3-D.
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side!r}")
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) image, got shape {image.shape}")
    height, width = image.shape[:2]
    longer_side = max(height, width)
    if longer_side <= max_side:
        return image, 1.0
    scale = max_side / longer_side
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
    if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel axis
        resized = resized[:, :, np.newaxis]
    return np.ascontiguousarray(resized), scale


def content_hash(source: bytes | str | os.PathLike) -> str:
    """Return the sha256 of a file's bytes, to find duplicate uploads.

    Paths are read in 1 MiB chunks, so a file of any size hashes in constant memory.

    Args:
        source: the file's bytes, or its path.

    Returns:
        The sha256 digest as 64 lower-case hex characters.

    Raises:
        ImageError: the path cannot be read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    path = Path(source)
    try:
        with path.open("rb") as file:
            while chunk := file.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as e:
        raise ImageError(f"{path.name or path}: cannot read file ({e.strerror or e})") from e
    return digest.hexdigest()


def _default_name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.name or str(path)
    if isinstance(source, np.ndarray):
        return "array"
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return Path(filename).name if isinstance(filename, str) and filename else "image"
    stream_name = getattr(source, "name", None)
    if isinstance(stream_name, str) and stream_name:
        return Path(stream_name).name or stream_name
    return "image"


def _read_encoded(source: object, name: str, limits: ImageLimits) -> bytes:
    """Read the encoded file into memory, enforcing ``limits.max_bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), name, limits)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            file_stat = path.stat()
            if not stat.S_ISREG(file_stat.st_mode):
                raise ImageError(f"{name}: not a regular file")
            _check_bytes(file_stat.st_size, name, limits)
            with path.open("rb") as file:
                data = file.read(limits.max_bytes + 1)
        except OSError as e:
            raise ImageError(f"{name}: cannot read file ({e.strerror or e})") from e
        _check_bytes(len(data), name, limits)  # the file may have grown since stat
    elif callable(getattr(source, "read", None)):
        try:
            data = source.read(limits.max_bytes + 1)  # type: ignore[union-attr]
        except OSError as e:
            raise ImageError(f"{name}: cannot read stream ({e})") from e
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(
                f"{name}: expected a binary stream (open the file with 'rb'), "
                f"got one that returns {type(data).__name__}"
            )
        data = bytes(data)
        _check_bytes(len(data), name, limits)
    else:
        raise ImageError(
            f"{name}: cannot read an image from {type(source).__name__}; expected a path, "
            "bytes, a binary stream, a PIL.Image.Image or a numpy array"
        )
    if not data:
        raise ImageError(f"{name}: file is empty")
    return data


def _check_bytes(size: int, name: str, limits: ImageLimits) -> None:
    """Refuse ``size`` bytes over the cap (streams are read one byte past it, to tell)."""
    if size > limits.max_bytes:
        raise LimitError(
            f"{name}: file is larger than the limit of {format_bytes(limits.max_bytes)} "
            "(ImageLimits.max_bytes)"
        )


def format_bytes(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes in messages."""
    if size < 1024:
        return f"{size} bytes"
    if size < _MIB:
        return f"{size / 1024:.1f} KiB"
    return f"{size / _MIB:.1f} MiB"


def _pixel_error(
    name: str, pixels: int | None, limits: ImageLimits, size: tuple[int, int] | None = None
) -> ImageError:
    if pixels is None:
        described = "too many pixels"
    elif size is not None:
        described = f"{size[0]}x{size[1]} = {pixels:,} pixels"
    else:
        described = f"{pixels:,} pixels"
    return ImageError(
        f"{name}: image has {described}, over the limit of {limits.max_pixels:,} pixels "
        "(ImageLimits.max_pixels); refused before decoding (possible decompression bomb)"
    )


def _fit_jpeg_in_budget(pil_image: Image.Image, limits: ImageLimits) -> None:
    """Let a JPEG over the pixel budget decode at 1/2, 1/4 or 1/8 scale instead.

    A 48-megapixel phone photo is not a bomb: JPEG decoders can skip detail while
    decoding (Pillow's ``draft``), so it comes out within ``max_pixels`` without
    ever holding the full-size pixels. Other formats over the budget are refused.
    """
    width, height = pil_image.size
    if pil_image.format != "JPEG" or width * height <= limits.max_pixels:
        return
    for k in (2, 4, 8):
        if (width // k) * (height // k) <= limits.max_pixels:
            pil_image.draft("RGB", (max(1, width // k), max(1, height // k)))
            logger.info("decoding a %dx%d JPEG at 1/%d scale (pixel budget %d)", width, height, k,
                        limits.max_pixels)
            return


def _effective(limits: ImageLimits) -> ImageLimits:
    """``limits`` with Pillow's own cap (``Image.MAX_IMAGE_PIXELS``, read, never changed) on top."""
    pillow_cap = Image.MAX_IMAGE_PIXELS
    if pillow_cap is None or pillow_cap >= limits.max_pixels:
        return limits
    return ImageLimits(max_pixels=int(pillow_cap), max_bytes=limits.max_bytes)


def _check_pixels(size: tuple[int, int], name: str, limits: ImageLimits) -> None:
    """Refuse a size over ``limits.max_pixels`` or Pillow's own cap, whichever is lower."""
    width, height = size
    pixels = width * height
    effective = _effective(limits)
    if pixels > effective.max_pixels:
        raise _pixel_error(name, pixels, effective, size)


@contextlib.contextmanager
def _pillow_bomb_guard(name: str, limits: ImageLimits) -> Iterator[None]:
    """Turn Pillow's decompression-bomb error into :class:`ImageError`.

    Only the exception is caught: no ``warnings`` filter is touched (``warnings.catch_warnings``
    changes process-wide state, unsafe with concurrent requests). The header was checked
    before decoding, so Pillow's bomb warning cannot fire on a frame within the budget.
    """
    try:
        yield
    except Image.DecompressionBombError as e:
        match = _PILLOW_BOMB_PIXELS.search(str(e))
        pixels = int(match.group(1)) if match else None
        raise _pixel_error(name, pixels, _effective(limits)) from e


def _open_lazily(data: bytes, name: str) -> Image.Image:
    """Identify an encoded image from its header, without decoding a pixel.

    The same steps as ``Image.open`` (each format's ``accept`` on the first 16 bytes, then its
    image class, which reads only the header), less its decompression-bomb check: that check
    warns through the process-wide ``warnings`` machinery, and the caller checks the size
    itself before ``load()`` (:func:`_check_pixels`).
    """
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        if fmt in _REFUSED_FORMATS or fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        try:
            accepted = not accept or accept(prefix)
            if not accepted or isinstance(accepted, str):  # a str: the format's reason to refuse it
                continue
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this format after all (what Image.open does too)
        except Image.DecompressionBombError:
            raise
        except Exception as e:  # Pillow plugins raise many types on malformed headers
            raise ImageError(f"{name}: not a readable image ({_short(e)})") from e
    raise ImageError(f"{name}: not a readable image (cannot identify image file)")


def _short(error: BaseException, limit: int = 100) -> str:
    """An exception's message for a user, at most ``limit`` characters."""
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode(pil_image: Image.Image, name: str) -> None:
    """Decode the pixels of the current frame; truncated data is an error."""
    try:
        pil_image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as e:  # OSError, SyntaxError, ValueError, EOFError, struct.error...
        raise ImageError(f"{name}: image data is truncated or corrupt") from e


def _exif_upright(pil_image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block is ignored with a warning."""
    try:
        upright = ImageOps.exif_transpose(pil_image)
    except Exception as e:  # malformed EXIF must not lose an otherwise good photo
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, e)
        return pil_image
    return upright if upright is not None else pil_image


def _pil_to_rgb(pil_image: Image.Image, name: str) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to (H, W, 3) uint8 RGB."""
    mode = pil_image.mode
    if mode == "RGB" and "transparency" not in pil_image.info:
        rgb = np.array(pil_image, dtype=np.uint8)
    elif mode in _INT_GREY_MODES:
        rgb = _grey_to_rgb(_integer_grey_to_uint8(pil_image))
    elif mode == "F":
        rgb = _grey_to_rgb(_float_grey_to_uint8(np.asarray(pil_image, dtype=np.float32)))
    elif mode in _ALPHA_MODES or "transparency" in pil_image.info:
        rgb = _composite_on_white(pil_image.convert("RGBA"))
    else:  # "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", ...
        try:
            rgb = np.array(pil_image.convert("RGB"), dtype=np.uint8)
        except (ValueError, OSError) as e:
            raise ImageError(f"{name}: colour mode {mode!r} cannot be converted to RGB") from e
    return np.ascontiguousarray(rgb)


def _composite_on_white(rgba: Image.Image) -> np.ndarray:
    background = Image.new("RGBA", rgba.size, _WHITE)
    return np.array(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2)


def _integer_grey_to_uint8(pil_image: Image.Image) -> np.ndarray:
    """Scale 16/32-bit integer greyscale to uint8 by its bit depth.

    The maximum value is ``2**bits - 1``, with ``bits`` from the TIFF
    BitsPerSample tag when there is one, else 16 (PNG, PGM/PPM: Pillow already
    stretches a PGM ``maxval`` to 65535). A 32-bit image whose values do not fit
    in 16 bits is stretched from its minimum to its maximum.
    """
    values = np.asarray(pil_image)
    bits = _tiff_bits_per_sample(pil_image)
    exceeds_16_bits = values.size > 0 and (values.min() < 0 or values.max() > 65535)
    if bits is None and pil_image.mode == "I" and exceeds_16_bits:
        low, high = int(values.min()), int(values.max())
        stretched = (values.astype(np.int64) - low) * 255 // max(high - low, 1)
        return stretched.astype(np.uint8)
    max_value = (1 << (bits if bits is not None else 16)) - 1
    # float32 is exact enough: no 16-bit value lands within 1e-3 of a rounding tie.
    scaled = np.rint(values.astype(np.float32) * np.float32(255 / max_value))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _tiff_bits_per_sample(pil_image: Image.Image) -> int | None:
    tags = getattr(pil_image, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(_TIFF_BITS_PER_SAMPLE)
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    if isinstance(bits, int) and 8 < bits <= 32:
        return bits
    return None


def _float_grey_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map float greyscale to uint8: [0, 1] and [0, 255] kept, other ranges stretched.

    Not-a-number and infinite values become 0.
    """
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    values = np.where(finite, values, np.float32(0.0))
    low, high = float(values[finite].min()), float(values[finite].max())
    if low >= 0.0 and high <= 1.0:
        values = values * np.float32(255.0)
    elif not (low >= 0.0 and high <= 255.0):
        if high == low:
            return np.zeros(values.shape, dtype=np.uint8)
        values = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, name: str, limits: ImageLimits) -> np.ndarray:
    """Validate a numpy image and return an owned (H, W, 3) uint8 RGB copy."""
    valid = "expected uint8 of shape (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA"
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: array has dtype {array.dtype}; {valid}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: array has shape {array.shape}; {valid}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{name}: array is empty (shape {array.shape})")
    _check_pixels((array.shape[1], array.shape[0]), name, limits)
    if array.ndim == 2:
        return _grey_to_rgb(array)
    channels = array.shape[2]
    if channels == 1:
        return _grey_to_rgb(array[:, :, 0])
    if channels == 4:
        return _composite_on_white(Image.fromarray(np.ascontiguousarray(array)))
    return np.array(array, dtype=np.uint8, order="C", copy=True)
