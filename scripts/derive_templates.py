"""Derive the 5-point MTCNN landmark templates of the dlib and FaceNet backbones.

Each backbone was trained on its own crops: dlib on ``get_face_chip(150, padding=0.25)``
chips from its 5-point shape predictor, FaceNet on MTCNN boxes with a 44-pixel margin
resized to 160. To reproduce those crops with one similarity transform from MTCNN's
landmarks, we cut the backbone's native crop from many real photos, run MTCNN again on
the crop and average where the landmarks land. The printed points are the ones in
``cmce/models/backbones/_pretrained.py``.

    python scripts/derive_templates.py ../shared/data/lfw-train --n 400
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cmce.faces.detector import FaceDetector
from cmce.faces.geometry import pick_subject


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    import importlib.util

    import dlib

    pkg = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0])
    sp = dlib.shape_predictor(str(pkg / "models" / "shape_predictor_5_face_landmarks.dat"))
    files = sorted(args.data.glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), args.n, replace=False))]
    det = FaceDetector(min_probability=0.95)
    dl, fn = [], []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        faces = det.detect(img)
        k = pick_subject(faces)
        if k is None:
            continue
        face = faces[k]
        x1, y1, x2, y2 = face.box
        shape = sp(img, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        h, w = img.shape[:2]
        m = 44 / 2
        bx = [int(max(x1 - m, 0)), int(max(y1 - m, 0)), int(min(x2 + m, w)), int(min(y2 + m, h))]
        crop = cv2.resize(img[bx[1] : bx[3], bx[0] : bx[2]], (160, 160), interpolation=cv2.INTER_LINEAR)
        for arr, out, size in ((chip, dl, 150), (crop, fn, 160)):
            fs = det.detect(np.ascontiguousarray(arr))
            j = pick_subject(fs)
            if j is not None:
                out.append(fs[j].landmarks_array())
    for name, pts in (("dlib-chip-150", dl), ("facenet-margin44-160", fn)):
        a = np.stack(pts)
        med = np.median(a, 0)
        print(name, len(a), "points:", [(round(float(x), 2), round(float(y), 2)) for x, y in med])


if __name__ == "__main__":
    main()
