"""Tight face crops against their full photo: cosine of the embeddings, before and after issue 22.

For N lfw-train identities (evenly spaced in name order, the first photo of each) the
subject face of the full photo is found by the engine's detector, and three crops are
cut from the photo at its own resolution:

- ``box``: the MTCNN box;
- ``in10``: the box shrunk by 10% of its width and height on each side (brow to chin);
- ``face``: the face alone, from the full photo's landmarks: one eye distance left and
  right of the eyes' midpoint, 0.45 eye-to-mouth distances above the eyes, 0.8 below
  the mouth.

Each crop goes through the engine's detector again (second chance included) and is
embedded; the figure is the cosine with the full photo's embedding, median and mean
over the crops where a face was found, for three treatments:

- ``before``: landmarks as MTCNN's cascade gives them, black fill (``Backbone.align``);
- ``landmarks``: edge landmarks refined (``FaceDetector.edge_landmarks``), black fill;
- ``after``: refined landmarks and the mean of the black and extended fills
  (``Backbone.embed_faces``), i.e. what the engine does now.

The full photos are embedded both ways too; the script reports how many subject faces
differ (those whose template reaches past the photo, about 1% of LFW for facenet).

Usage:
    CMCE_TORCH_THREADS=1 PYTHONPATH=. python benchmarks/bench_crops.py 80 --json docs/bench-crops.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np

from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import Face, pick_subject
from cmce.faces.second_chance import SecondChance
from cmce.io.images import load_image
from cmce.models.backbones import create_backbone
from cmce.models.backbones.base import configure_torch_threads

MODELS = ("sface", "facenet-casia", "dlib-resnet34")
KINDS = ("box", "in10", "face")
TREATMENTS = ("before", "landmarks", "after")
DEFAULT_LFW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lfw-train"


def crop_boxes(face: Face) -> dict[str, tuple[float, float, float, float]]:
    """The three crops of a full photo's subject face, as ``(x1, y1, x2, y2)`` (see the module docstring)."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    lm = face.landmarks_array().astype(np.float64)
    eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
    eye_distance = float(np.hypot(*(lm[1] - lm[0])))
    eye_mouth = float(np.hypot(*(mouth - eyes)))
    return {
        "box": (x1, y1, x2, y2),
        "in10": (x1 + 0.1 * w, y1 + 0.1 * h, x2 - 0.1 * w, y2 - 0.1 * h),
        "face": (eyes[0] - eye_distance, eyes[1] - 0.45 * eye_mouth, eyes[0] + eye_distance, mouth[1] + 0.8 * eye_mouth),
    }


def cut(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    a, b, c, d = int(max(x1, 0)), int(max(y1, 0)), int(min(x2, w)), int(min(y2, h))
    return np.ascontiguousarray(image[b:d, a:c])


def identities(root: Path, n: int) -> list[Path]:
    people = sorted(p for p in root.iterdir() if p.is_dir())
    picks = np.unique(np.linspace(0, len(people) - 1, min(n, len(people))).round().astype(int))
    return [sorted(people[i].glob("*.jpg"))[0] for i in picks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=40, help="lfw-train identities (one photo each)")
    ap.add_argument("--lfw", type=Path, default=Path(os.environ.get("CMCE_LFW_DIR", DEFAULT_LFW)))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_torch_threads()
    models = args.models.split(",")
    backbones = {m: create_backbone(m) for m in models}
    old = FaceDetector(max_side=800, landmark_check=True, second_chance=SecondChance(), edge_landmarks=False)
    new = FaceDetector(max_side=800, landmark_check=True, second_chance=SecondChance())

    cos = {(m, k, t): [] for m in models for k in KINDS for t in TREATMENTS}
    found = {k: 0 for k in KINDS}
    passes: dict[str, dict[str, int]] = {k: {} for k in KINDS}
    full_changed = {m: 0 for m in models}
    paths = identities(args.lfw, args.n)
    photos = 0
    for path in paths:
        image = load_image(path)
        faces = new.detect(image)
        if not faces:
            continue
        photos += 1
        face = faces[pick_subject(faces)]
        full_old = {m: bb.embed(bb.align(image, [face]))[0] for m, bb in backbones.items()}
        full_new = {m: bb.embed_faces(image, [face])[0] for m, bb in backbones.items()}
        for m in models:
            full_changed[m] += not np.array_equal(full_old[m], full_new[m])
        for kind, box in crop_boxes(face).items():
            crop = cut(image, box)
            before, after = old.detect(crop), new.detect(crop)
            if not before or not after:
                continue
            found[kind] += 1
            f_old, f_new = before[pick_subject(before)], after[pick_subject(after)]
            key = f"{f_new.detector}/{f_new.detection_pass}" + ("/edge" if f_new.at_image_edge else "")
            passes[kind][key] = passes[kind].get(key, 0) + 1
            for m, bb in backbones.items():
                cos[(m, kind, "before")].append(float(bb.embed(bb.align(crop, [f_old]))[0] @ full_old[m]))
                cos[(m, kind, "landmarks")].append(float(bb.embed(bb.align(crop, [f_new]))[0] @ full_new[m]))
                cos[(m, kind, "after")].append(float(bb.embed_faces(crop, [f_new])[0] @ full_new[m]))

    print(f"{photos} photos of {len(paths)} identities from {args.lfw}; crops with a face found: {found}")
    print(f"found by (after): {passes}")
    print(f"full-photo subject embeddings changed by the fix: {full_changed} of {photos}")
    print(f"\ncosine crop vs full photo, median (mean); n per crop kind as found above\n{'model':<15}{'crop':<6}"
          + "".join(f"{t:>16}" for t in TREATMENTS))
    table = {}
    for m in models:
        for k in KINDS:
            row = {t: (float(np.median(v)), float(np.mean(v))) if (v := cos[(m, k, t)]) else (float("nan"),) * 2
                   for t in TREATMENTS}
            table[f"{m}/{k}"] = {t: {"median": round(a, 6), "mean": round(b, 6)} for t, (a, b) in row.items()}
            print(f"{m:<15}{k:<6}" + "".join(f"{a:>9.3f} ({b:.3f})" for a, b in row.values()))
    if args.json:
        args.json.write_text(json.dumps({"identities": len(paths), "photos": photos, "found": found, "passes": passes,
                                         "full_changed": full_changed, "cosine": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
