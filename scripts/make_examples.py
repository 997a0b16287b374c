"""Write the demo's example images (assets/examples/) from public-domain / CC0 photos.

Sources (see assets/examples/CREDITS.md for the licences):

* ``astronaut.png`` (Eileen Collins, NASA, public domain), ``camera.png`` (CC0, Lav
  Varshney) and ``coffee.png`` (CC0, Rachel Michetti) from scikit-image's data folder;
* ``grace_hopper.jpg`` (U.S. Navy photograph, public domain) from matplotlib's sample data.

Only two named people are available this way, so the galleries and the queries are
different crops, mirror images, colourings and degradations of the same two photos.

Three folders:

* ``gallery/``: the clean gallery (two good copies of each person, and a photo without a face);
* ``archive/``: the "mixed-quality archive": the same two people, every copy degraded the
  way old archives are (blur, low resolution, heavy JPEG, dark), plus one copy destroyed
  by all four at once (the entry rejection is meant to catch);
* ``queries/``: query photos (the person is named by the file name).

Which query shows what, per bundle, is in ``assets/examples/examples.json``;
``tests/harness/check_examples.py`` prints every column's answer for every example.

Usage::

    pip download --no-deps scikit-image==0.26.0 -d /tmp/wheels
    unzip -q /tmp/wheels/scikit_image-*.whl 'skimage/data/*' -d /tmp/wheels/sk
    python scripts/make_examples.py --skimage-data /tmp/wheels/sk/skimage/data
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"


def _save(img: Image.Image, path: Path, side: int, quality: int = 86) -> None:
    img = img.convert("RGB")
    img.thumbnail((side, side), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=quality, optimize=True)
    print(f"{path.parent.name}/{path.name}  {img.size}  {path.stat().st_size // 1024} KiB")


def _around(img: Image.Image, box: tuple[int, int, int, int], grow: float) -> Image.Image:
    """Crop a square ``grow`` times the face box, centred on it (clipped to the image)."""
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * grow / 2
    return img.crop((int(max(cx - half, 0)), int(max(cy - half, 0)),
                     int(min(cx + half, img.width)), int(min(cy + half, img.height))))


# ---------------------------------------------------------------- the four degradations of an old archive


def blur(img: Image.Image, radius: float) -> Image.Image:
    """Out of focus: a Gaussian blur of ``radius`` pixels."""
    return img.filter(ImageFilter.GaussianBlur(radius))


def lowres(img: Image.Image, width: int) -> Image.Image:
    """Low resolution: shrunk to ``width`` pixels wide, then blown up to the old size again."""
    w, h = img.size
    return img.resize((width, max(round(width * h / w), 1)), Image.BILINEAR).resize((w, h), Image.BICUBIC)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Heavy compression: one round-trip through JPEG at ``quality`` (1-95)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def dark(img: Image.Image, brightness: float) -> Image.Image:
    """Under-exposed: brightness scaled by ``brightness`` (< 1), a little sensor noise lost in the shadows."""
    return ImageEnhance.Brightness(ImageEnhance.Contrast(img).enhance(0.7)).enhance(brightness)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skimage-data", type=Path, help="scikit-image's skimage/data folder")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default: assets/examples)")
    args = ap.parse_args()
    sk = args.skimage_data
    if sk is None:
        try:
            import skimage.data

            sk = Path(skimage.data.__file__).parent
        except ImportError:
            ap.error("scikit-image is not installed: pass --skimage-data (see the usage above)")
    import matplotlib.cbook

    collins = Image.open(sk / "astronaut.png").convert("RGB")  # 512x512, face ~(181, 62, 268, 172)
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    camera = Image.open(sk / "camera.png").convert("RGB")
    coffee = Image.open(sk / "coffee.png").convert("RGB")
    c_face, h_face = (181, 62, 268, 172), (174, 120, 356, 340)

    g, a, q = args.out / "gallery", args.out / "archive", args.out / "queries"
    for folder in (g, a, q):
        shutil.rmtree(folder, ignore_errors=True)

    # The clean gallery: two good copies of each person.
    _save(collins, g / "Eileen_Collins_01.jpg", 384)
    _save(ImageOps.mirror(_around(collins, c_face, 2.6)).rotate(6, Image.BICUBIC, fillcolor=(0, 0, 0)),
          g / "Eileen_Collins_02.jpg", 320)
    _save(hopper, g / "Grace_Hopper_01.jpg", 384)
    _save(ImageEnhance.Color(ImageOps.mirror(_around(hopper, h_face, 1.9)).rotate(-5, Image.BICUBIC)).enhance(0.6),
          g / "Grace_Hopper_02.jpg", 320)
    _save(coffee, g / "coffee_no_face.jpg", 320)

    # The mixed-quality archive: each person once per degradation, and one destroyed copy.
    params = {"Eileen_Collins": (4, 30, 12, 0.75), "Grace_Hopper": (6, 40, 4, 0.45)}  # blur, lowres, jpeg, dark
    for name, img, face in (("Eileen_Collins", collins, c_face), ("Grace_Hopper", hopper, h_face)):
        radius, width, quality, brightness = params[name]
        mirrored = ImageOps.mirror(_around(img, face, 2.4))
        _save(blur(_around(img, face, 2.0), radius), a / f"{name}_11.jpg", 256)
        _save(lowres(mirrored, width), a / f"{name}_12.jpg", 256)
        _save(jpeg(_around(img, face, 2.8).resize((160, 160)), quality), a / f"{name}_13.jpg", 160, quality=90)
        _save(dark(mirrored.rotate(8, Image.BICUBIC), brightness), a / f"{name}_14.jpg", 256)
    # Destroyed: a small copy saved at JPEG quality 5. Still found as a face, but the detector doubts it most.
    _save(jpeg(_around(collins, c_face, 2.8).resize((160, 160)), 5), a / "Eileen_Collins_15.jpg", 160, quality=90)

    # Queries: good and poor photos of the two people, two faces in one photo, and a stranger.
    _save(ImageEnhance.Contrast(_around(collins, c_face, 1.9).rotate(-4, Image.BICUBIC)).enhance(1.25),
          q / "Eileen_Collins_04.jpg", 300)
    _save(ImageOps.grayscale(_around(hopper, h_face, 2.2)).rotate(4, Image.BICUBIC), q / "Grace_Hopper_04.jpg", 300)
    _save(lowres(ImageOps.mirror(_around(collins, c_face, 2.0)).rotate(-7, Image.BICUBIC), 30),
          q / "Eileen_Collins_05.jpg", 240)
    _save(dark(blur(ImageOps.grayscale(_around(hopper, h_face, 2.0)).convert("RGB"), 2), 0.35),
          q / "Grace_Hopper_05.jpg", 240)
    _save(dark(blur(ImageOps.grayscale(_around(hopper, h_face, 2.0)).convert("RGB"), 6), 0.35),
          q / "Grace_Hopper_06.jpg", 240)
    _save(camera, q / "camera_man.jpg", 384)
    pair = Image.new("RGB", (640, 400), (236, 236, 236))
    pair.paste(_around(hopper, h_face, 1.7).resize((340, 340)), (20, 30))
    pair.paste(ImageOps.mirror(_around(collins, c_face, 1.9)).resize((220, 220)), (400, 120))
    _save(pair, q / "two_people.jpg", 640)


if __name__ == "__main__":
    main()
