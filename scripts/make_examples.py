"""Write the demo's example images (assets/examples/) from public-domain / CC0 photos.

Sources (see assets/examples/CREDITS.md for the licences):

* ``astronaut.png`` (Eileen Collins, NASA, public domain), ``camera.png`` (CC0, Lav
  Varshney) and ``coffee.png`` (CC0, Rachel Michetti) from scikit-image's data folder;
* ``grace_hopper.jpg`` (U.S. Navy photograph, public domain) from matplotlib's sample data.

Only two named people are available this way, so the gallery and the queries are
different crops, mirror images, colourings and degradations of the same two photos.

Usage::

    pip download --no-deps scikit-image==0.26.0 -d /tmp/wheels
    unzip -q /tmp/wheels/scikit_image-*.whl 'skimage/data/*' -d /tmp/wheels/sk
    python scripts/make_examples.py --skimage-data /tmp/wheels/sk/skimage/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

OUT = Path(__file__).resolve().parent.parent / "assets" / "examples"


def _save(img: Image.Image, path: Path, side: int) -> None:
    img = img.convert("RGB")
    img.thumbnail((side, side), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=86, optimize=True)
    print(f"{path.relative_to(OUT.parent.parent)}  {img.size}  {path.stat().st_size // 1024} KiB")


def _around(img: Image.Image, box: tuple[int, int, int, int], grow: float) -> Image.Image:
    """Crop a square ``grow`` times the face box, centred on it (clipped to the image)."""
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * grow / 2
    return img.crop((int(max(cx - half, 0)), int(max(cy - half, 0)),
                     int(min(cx + half, img.width)), int(min(cy + half, img.height))))


def _degrade(img: Image.Image, small: int) -> Image.Image:
    """A poor copy: shrunk to ``small`` pixels, blown up again, blurred and darkened."""
    w, h = img.size
    img = img.resize((small, max(int(small * h / w), 1)), Image.BILINEAR).resize((w, h), Image.BICUBIC)
    return ImageEnhance.Brightness(img.filter(ImageFilter.GaussianBlur(2))).enhance(0.7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skimage-data", type=Path, help="scikit-image's skimage/data folder")
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

    g, q = OUT / "gallery", OUT / "queries"
    _save(collins, g / "Eileen_Collins_01.jpg", 384)
    _save(ImageOps.mirror(_around(collins, c_face, 2.6)).rotate(6, Image.BICUBIC, fillcolor=(0, 0, 0)),
          g / "Eileen_Collins_02.jpg", 320)
    _save(_degrade(_around(collins, c_face, 2.2), 28), g / "Eileen_Collins_03.jpg", 256)
    _save(hopper, g / "Grace_Hopper_01.jpg", 384)
    _save(ImageEnhance.Color(ImageOps.mirror(_around(hopper, h_face, 1.9)).rotate(-5, Image.BICUBIC)).enhance(0.6),
          g / "Grace_Hopper_02.jpg", 320)
    _save(_degrade(_around(hopper, h_face, 1.8), 26), g / "Grace_Hopper_03.jpg", 256)
    _save(coffee, g / "coffee_no_face.jpg", 320)

    _save(ImageEnhance.Contrast(_around(collins, c_face, 1.9).rotate(-4, Image.BICUBIC)).enhance(1.25),
          q / "Eileen_Collins_04.jpg", 300)
    _save(ImageOps.grayscale(_around(hopper, h_face, 2.2)).rotate(4, Image.BICUBIC), q / "Grace_Hopper_04.jpg", 300)
    _save(camera, q / "camera_man.jpg", 384)
    pair = Image.new("RGB", (640, 400), (236, 236, 236))
    pair.paste(_around(hopper, h_face, 1.7).resize((340, 340)), (20, 30))
    pair.paste(ImageOps.mirror(_around(collins, c_face, 1.9)).resize((220, 220)), (400, 120))
    _save(pair, q / "two_people.jpg", 640)


if __name__ == "__main__":
    main()
