"""Does the engine find every face a person can see? First pass vs first pass + second chance.

Builds every evaluation set on the fly (nothing is written) from a fixed random sample
of ``../shared/data/lfw-train`` photos and from images without faces:

- full photos: found rate, and whether the first-pass faces are unchanged;
- tight crops: each subject face cut to its MTCNN box, or 10% inside it, resized so
  its width is 112-200 px; and 112x112 ArcFace-aligned crops. Found rate, and the
  cosine between the crop's embedding and the full photo's, per backbone;
- lighting, on the box crops: gamma, one-sided shading and 8-bit banding at several
  strengths;
- small faces: the photo downscaled until the face box is W px wide and placed on a
  400x400 grey canvas;
- yaw: estimated from the 5 landmarks of every face found (cv2.solvePnP against a
  generic 3D five-point face): the range of head turn the engine finds;
- no-face images: scikit-image and matplotlib samples without people (whole and a
  centre square) plus generated textures and a smiley drawing, face-crop shaped so
  that the whole-image pass is eligible on them;
- speed: per-image time of the first pass and of the second chance.

"first pass" is ``FaceDetector(max_side=800)`` as before this change; "engine" is the
detector ``FaceEngine`` builds (landmark check + second chance). Rates come with 95%
percentile-bootstrap CIs over images.

Usage:
    CMCE_TORCH_THREADS=1 PYTHONPATH=. python benchmarks/bench_detection.py --photos 300 --lighting-photos 150 --json docs/bench-detection.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from cmce.faces.detector import FaceDetector, create_detector
from cmce.faces.geometry import align_faces, pick_subject
from cmce.io.images import load_image
from cmce.metrics.intervals import bootstrap_mean_ci, format_with_interval
from cmce.models.backbones import TEMPLATES, create_backbone
from cmce.models.backbones.base import configure_torch_threads

MODELS = ("sface", "dlib-resnet34", "facenet-casia")


def rate(found: list[bool]) -> dict:
    v = np.asarray(found, np.float64)
    if not len(v):
        return {"n": 0}
    m, lo, hi = bootstrap_mean_ci(v, resamples=2000, seed=0)
    return {"n": int(len(v)), "rate": round(100 * m, 2), "ci95": [round(100 * lo, 2), round(100 * hi, 2)]}


def fmt(r: dict) -> str:
    return (f"{format_with_interval(r['rate'], r['ci95'], scale=1, digits=1, unit='%')} (n={r['n']})" if r.get("n")
            else "n=0")


def resize_width(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (width, max(1, round(h * width / w))),
                      interpolation=cv2.INTER_AREA if width < w else cv2.INTER_CUBIC)


def tight_crops(img: np.ndarray, face, rng) -> dict[str, np.ndarray]:
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    dx, dy = int(0.1 * (x2 - x1)), int(0.1 * (y2 - y1))
    w = int(rng.integers(112, 201))
    return {
        "box": resize_width(np.ascontiguousarray(img[y1:y2, x1:x2]), w),
        "box 10% inside": resize_width(np.ascontiguousarray(img[y1 + dy:y2 - dy, x1 + dx:x2 - dx]), w),
        "ArcFace-aligned 112": align_faces(img, [face], TEMPLATES["arcface-112"])[0],
    }


def gamma(img, g):
    return np.clip(255.0 * (img / 255.0) ** g, 0, 255).astype(np.uint8)


def shade(img, s):
    """Side light: the right half of the image darkened by ``s`` (a soft step across the middle)."""
    x = np.linspace(0.0, 1.0, img.shape[1])
    ramp = (1.0 - s / (1.0 + np.exp(-(x - 0.5) / 0.05)))[None, :, None]
    return np.clip(img * ramp, 0, 255).astype(np.uint8)


def band(img, levels):
    """8-bit banding: each channel quantised to ``levels`` values."""
    step = 256 / levels
    return (np.floor(img / step) * step + step / 2).clip(0, 255).astype(np.uint8)


LIGHTING = {
    "gamma": (gamma, (0.3, 0.5, 2.0, 3.0)),
    "side shading": (shade, (0.7, 0.9, 0.97)),
    "banding (levels)": (band, (16, 8, 4)),
}


def no_face_images(rng) -> dict[str, np.ndarray]:
    """Samples without people (whole + centre square) and generated face-crop-shaped textures."""
    import skimage.data as sd

    out = {}
    with_people = {"astronaut", "camera", "lfw_subset"}
    for name in ("brick", "chelsea", "checkerboard", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
                 "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
                 "retina", "rocket", "text", "shepp_logan_phantom", "binary_blobs"):
        if name in with_people:
            continue
        try:
            img = getattr(sd, name)()
        except Exception as e:  # samples that need a download are skipped offline
            logging.info("skimage %s unavailable: %s", name, e)
            continue
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = img.astype(np.float64)
            img = (255 * (img - img.min()) / max(float(np.ptp(img)), 1e-9)).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = np.ascontiguousarray(img[..., :3])
        out[f"skimage:{name}"] = img
        h, w = img.shape[:2]
        s = min(h, w)
        out[f"skimage:{name}:square"] = np.ascontiguousarray(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
    try:
        import matplotlib.cbook as cbook

        for fn in ("logo2.png", "Minduka_Present_Blue_Pack.png"):
            from PIL import Image

            img = np.asarray(Image.open(cbook.get_sample_data(fn, asfileobj=False)).convert("RGB"))
            out[f"matplotlib:{fn}"] = img
    except Exception as e:
        logging.info("matplotlib samples unavailable: %s", e)
    side = 160
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(6):
        out[f"noise:uniform{i}"] = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        blur = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3)).astype(np.uint8), (0, 0), 2 + 3 * i)
        out[f"noise:blurred{i}"] = cv2.normalize(blur, None, 0, 255, cv2.NORM_MINMAX)
        f = 2 + 3 * i
        out[f"stripes:{i}"] = np.repeat((127 + 120 * np.sin(2 * np.pi * f * (xx + 0.3 * yy)))[..., None], 3, 2).astype(np.uint8)
        out[f"checker:{i}"] = np.repeat((255 * ((np.floor(xx * f) + np.floor(yy * f)) % 2))[..., None], 3, 2).astype(np.uint8)
        c = rng.integers(0, 256, 3)
        out[f"gradient:{i}"] = (c[None, None] * (0.3 + 0.7 * (xx if i % 2 else yy))[..., None]).astype(np.uint8)
    out["blank:grey"] = np.full((side, side, 3), 127, np.uint8)
    out["blank:black"] = np.zeros((side, side, 3), np.uint8)
    out["blank:white"] = np.full((side, side, 3), 255, np.uint8)
    for i, (bg, fg) in enumerate((((255, 255, 255), (0, 0, 0)), ((255, 220, 0), (0, 0, 0)), ((200, 170, 140), (60, 40, 30)))):
        smiley = np.full((side, side, 3), bg, np.uint8)
        cv2.circle(smiley, (80, 80), 70, fg, 3)
        cv2.circle(smiley, (55, 60), 8, fg, -1)
        cv2.circle(smiley, (105, 60), 8, fg, -1)
        cv2.ellipse(smiley, (80, 95), (35, 25), 0, 10, 170, fg, 3)
        out[f"smiley:{i}"] = smiley
    return out


YAW_MODEL = np.array([  # generic 3D face (mm, x right, y up, z towards the camera): eyes, nose tip, mouth
    [-32.0, 35.0, -25.0], [32.0, 35.0, -25.0], [0.0, 0.0, 0.0], [-25.0, -30.0, -20.0], [25.0, -30.0, -20.0]])


def estimated_yaw(face) -> float:
    """Head yaw in degrees from the 5 landmarks (solvePnP, generic 3D face, focal = image width)."""
    w, h = face.image_size
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float64)
    pts = face.landmarks_array().astype(np.float64)
    model = YAW_MODEL * np.array([1, -1, -1])  # to image axes (y down, z away)
    ok, rvec, _ = cv2.solvePnP(model, pts, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return float("nan")
    rot, _ = cv2.Rodrigues(rvec)
    return float(np.degrees(np.arcsin(np.clip(-rot[2, 0], -1, 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/lfw-train")
    ap.add_argument("--photos", type=int, default=400)
    ap.add_argument("--lighting-photos", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-embed", action="store_true", help="skip the embedding cosines")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_torch_threads()
    rng = np.random.default_rng(args.seed)
    first = FaceDetector(max_side=800)
    engine = create_detector("index")
    paths = sorted(Path(args.data_dir).glob("*/*.jpg"))
    random.Random(args.seed).shuffle(paths)
    paths = paths[: args.photos]
    result: dict = {"photos": len(paths), "seed": args.seed}

    # ---- full photos: found rate, first-pass faces unchanged, speed of the first pass
    images = [load_image(p) for p in paths]
    t_first, t_engine, found_first, found_engine, same = [], [], [], [], []
    subjects = []
    for img, p in zip(images, paths):
        t = time.perf_counter(); a = first.detect(img, str(p)); t_first.append(time.perf_counter() - t)
        t = time.perf_counter(); b = engine.detect(img, str(p)); t_engine.append(time.perf_counter() - t)
        found_first.append(bool(a)); found_engine.append(bool(b))
        if a:
            same.append([f.to_dict() for f in a] == [f.to_dict() for f in b])
        subjects.append(a[pick_subject(a)] if a else None)
    result["full_photos"] = {
        "first_pass": rate(found_first), "engine": rate(found_engine),
        "first_pass_faces_identical": f"{sum(same)}/{len(same)}",
        "ms_per_photo_first_pass": round(1000 * statistics.median(t_first), 2),
        "ms_per_photo_engine": round(1000 * statistics.median(t_engine), 2),
    }
    print("full photos:", {k: (fmt(v) if isinstance(v, dict) else v) for k, v in result["full_photos"].items()})

    # ---- yaw range of the faces found (landmark estimate)
    yaws = np.array([estimated_yaw(f) for f in subjects if f is not None])
    yaws = yaws[np.isfinite(yaws)]
    result["yaw_found_deg"] = {"n": int(len(yaws)), "abs_p50": round(float(np.median(np.abs(yaws))), 1),
                               "abs_p95": round(float(np.percentile(np.abs(yaws), 95)), 1),
                               "abs_p99": round(float(np.percentile(np.abs(yaws), 99)), 1),
                               "abs_max": round(float(np.abs(yaws).max()), 1)}
    print("estimated |yaw| of faces found:", result["yaw_found_deg"])

    # ---- tight crops
    backbones = {} if args.no_embed else {m: create_backbone(m) for m in MODELS}
    full_emb = {m: {} for m in backbones}
    crops: dict[str, list] = {}
    for i, (img, f) in enumerate(zip(images, subjects)):
        if f is None:
            continue
        for m, bb in backbones.items():
            full_emb[m][i] = bb.embed_faces(img, [f])[0]
        for kind, c in tight_crops(img, f, rng).items():
            crops.setdefault(kind, []).append((i, c))
    result["tight_crops"] = {}
    t_second = []
    for kind, items in crops.items():
        ff, fe, passes, cos = [], [], {}, {m: [] for m in backbones}
        for i, c in items:
            ff.append(bool(first.detect(c)))
            t = time.perf_counter(); faces = engine.detect(c); dt = time.perf_counter() - t
            if not ff[-1]:
                t_second.append(dt)
            fe.append(bool(faces))
            if faces:
                f = faces[pick_subject(faces)]
                key = f"{f.detector}/{f.detection_pass}"
                passes[key] = passes.get(key, 0) + 1
                for m, bb in backbones.items():
                    cos[m].append(float(bb.embed_faces(c, [f])[0] @ full_emb[m][i]))
        result["tight_crops"][kind] = {
            "first_pass": rate(ff), "engine": rate(fe), "found_by": passes,
            "cosine_to_full_photo": {m: {"mean": round(float(np.mean(v)), 4), "median": round(float(np.median(v)), 4),
                                         "p5": round(float(np.percentile(v, 5)), 4)} for m, v in cos.items() if v},
        }
        r = result["tight_crops"][kind]
        print(f"tight crops [{kind}]: first pass {fmt(r['first_pass'])}; engine {fmt(r['engine'])}; {passes}; "
              f"cosine {r['cosine_to_full_photo']}")

    # ---- lighting on box crops
    result["lighting"] = {}
    box = crops.get("box", [])[: args.lighting_photos]
    for name, (fn, strengths) in LIGHTING.items():
        for s in strengths:
            ff, fe = [], []
            for _, c in box:
                x = fn(c, s)
                ff.append(bool(first.detect(x)))
                t = time.perf_counter(); fe.append(bool(engine.detect(x))); dt = time.perf_counter() - t
                if not ff[-1]:
                    t_second.append(dt)
            result["lighting"][f"{name} {s:g}"] = {"first_pass": rate(ff), "engine": rate(fe)}
            print(f"lighting {name} {s:g}: first pass {fmt(rate(ff))}; engine {fmt(rate(fe))}")

    # ---- small faces: face box W px wide on a 400x400 grey canvas
    result["small_faces"] = {}
    for width in (12, 16, 20, 24, 32, 40):
        ff, fe = [], []
        for img, f in list(zip(images, subjects))[: args.lighting_photos]:
            if f is None:
                continue
            s = width / f.width
            small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                               interpolation=cv2.INTER_AREA)
            canvas = np.full((400, 400, 3), 127, np.uint8)
            canvas[150:150 + small.shape[0], 150:150 + small.shape[1]] = small
            ff.append(bool(first.detect(canvas)))
            fe.append(bool(engine.detect(canvas)))
        result["small_faces"][f"{width}px"] = {"first_pass": rate(ff), "engine": rate(fe)}
        print(f"face {width}px wide: first pass {fmt(rate(ff))}; engine {fmt(rate(fe))}")

    # ---- no-face images
    nf = no_face_images(rng)
    false = {}
    for name, img in nf.items():
        t = time.perf_counter(); faces = engine.detect(img); t_second.append(time.perf_counter() - t)
        if faces or first.detect(img):
            false[name] = [f.found_by for f in faces] + (["first-pass detector"] if first.detect(img) else [])
    result["no_face"] = {"images": len(nf), "false_faces": false}
    print(f"no-face images: {len(nf)}, with a face found: {len(false)} {false}")
    result["ms_second_chance_median"] = round(1000 * statistics.median(t_second), 1)
    print("second chance (images the first pass found nothing in): median ms per image",
          result["ms_second_chance_median"], f"(n={len(t_second)})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
