"""Can a learned correction of sface's embedding of a tight crop bring it to the full photo's? (issue 22)

    CMCE_TORCH_THREADS=1 PYTHONPATH=. python scripts/crop_correction_study.py ../shared/data/lfw-train \
        --train 1500 --json docs/crop-correction.json

The crops and the embedding are the engine's (``benchmarks/bench_crops.py``: the box, 10%
inside it, the face alone; detector with edge landmarks and second chance, the two-fill
embedding). Corrections are fitted on ``--train`` photos of the bundles' training split
(seed 0, every photo's three crops and one at a random margin between 15% inside and 10%
outside the box) and scored on bench_crops' 80 identities (none of them in the fit): the
median and mean cosine of each crop kind with its full photo, and how many of the 80 crops
have their own full photo as nearest of the 80. Corrections tried, all on the L2-normalised
output: a constant shift (the mean full-minus-crop difference, times a), a ridge-regressed
linear residual map (lambda), and a rank-r residual map.

Provenance of the negative result in docs/face-finding.md; nothing of it ships.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_crops import crop_boxes, cut, identities  # noqa: E402

from cmce.experiments.splits import SplitConfig, dataset_splits  # noqa: E402
from cmce.faces.detector import FaceDetector  # noqa: E402
from cmce.faces.geometry import pick_subject  # noqa: E402
from cmce.faces.second_chance import SecondChance  # noqa: E402
from cmce.io.images import load_image  # noqa: E402
from cmce.models.backbones import create_backbone  # noqa: E402
from cmce.models.backbones.base import configure_torch_threads  # noqa: E402

KINDS = ("box", "in10", "face")
log = logging.getLogger("crop_correction_study")


def collect(paths: list[Path], rng: np.random.Generator | None) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(full-photo embedding, crop kind -> crop embedding) per photo whose face is found; with ``rng``
    one more crop (``rand``) at a random margin."""
    bb = create_backbone("sface")
    det = FaceDetector(max_side=800, landmark_check=True, second_chance=SecondChance())
    out = []
    for j, path in enumerate(paths):
        image = load_image(path)
        faces = det.detect(image)
        if not faces:
            continue
        face = faces[pick_subject(faces)]
        boxes = crop_boxes(face)
        if rng is not None:
            x1, y1, x2, y2 = face.box
            m = rng.uniform(-0.1, 0.15)
            boxes["rand"] = (x1 + m * (x2 - x1), y1 + m * (y2 - y1), x2 - m * (x2 - x1), y2 - m * (y2 - y1))
        crops = {}
        for kind, box in boxes.items():
            crop = cut(image, box)
            found = det.detect(crop)
            if found:
                crops[kind] = bb.embed_faces(crop, [found[pick_subject(found)]])[0]
        out.append((bb.embed_faces(image, [face])[0], crops))
        if j % 250 == 0:
            log.info("%d of %d photos", j, len(paths))
    return out


def score(rows: list, correct) -> dict[str, dict[str, float]]:
    """Per crop kind: median and mean cosine with the full photo, and own-photo-nearest count."""
    res = {}
    for kind in KINDS:
        pairs = [(c[kind], f) for f, c in rows if kind in c]
        x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        o = correct(x)
        o /= np.linalg.norm(o, axis=1, keepdims=True)
        cos = (o * y).sum(1)
        res[kind] = {"median": round(float(np.median(cos)), 4), "mean": round(float(cos.mean()), 4),
                     "own_nearest": int(((o @ y.T).argmax(1) == np.arange(len(o))).sum()), "n": len(o)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--train", type=int, default=1500, help="training-split photos to fit on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    configure_torch_threads()
    files = sorted(f for p in sorted(args.data_dir.iterdir()) if p.is_dir() for f in sorted(p.glob("*.jpg")))
    labels = [f.parent.name for f in files]
    bench = identities(args.data_dir, 80)
    names = {p.parent.name for p in bench}
    rng = np.random.default_rng(1)
    train_idx = [i for i in np.flatnonzero(dataset_splits(labels, SplitConfig())["train"]) if labels[i] not in names]
    fit = collect([files[i] for i in rng.choice(train_idx, args.train, replace=False)], rng)
    test = collect(bench, None)
    x = np.array([c[k] for f, c in fit for k in c])
    y = np.array([f for f, c in fit for _ in c])
    shift = (y - x).mean(0)
    results = {"none": score(test, lambda v: v.copy())}
    for a in (0.5, 1.0, 1.5, 2.0):
        results[f"shift a={a}"] = score(test, lambda v, a=a: v + a * shift)
    for lam in (1, 10, 100, 1000):
        m = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ (y - x))
        results[f"ridge lambda={lam}"] = score(test, lambda v, m=m: v + v @ m)
    resid = y - x
    vt = np.linalg.svd(resid - resid.mean(0), full_matrices=False)[2]
    for r in (1, 4, 16):
        p = vt[:r]
        m = np.linalg.lstsq(x, resid @ p.T, rcond=None)[0]
        results[f"rank {r}"] = score(test, lambda v, m=m, p=p: v + (v @ m) @ p)
    for name, res in results.items():
        print(f"{name:<18}" + " | ".join(f"{k} {r['median']:.3f} ({r['mean']:.3f}) own {r['own_nearest']}/{r['n']}"
                                        for k, r in res.items()))
    if args.json:
        args.json.write_text(json.dumps({"fit_photos": len(fit), "fit_pairs": len(x), "test_identities": len(test),
                                         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
