"""The upgrade experiment on a mixed-quality gallery: does re-projection still pay off?

    PYTHONPATH=. python scripts/upgrade_mixed_quality.py ../shared/data/lfw-train [--share 0.6]

Same held-out protocol as ``evaluate --heldout --upgrade-from`` (first photo of each
identity in the gallery, the others are queries), but ``--share`` of the gallery photos
are degraded first (seeded), each by one of: Gaussian blur (radius 2-4), downscaling to
28-48 px and back, JPEG quality 5-12, or a dark gamma (2.5-3.5). Queries stay clean.
A degraded photo in which no face is found keeps its clean version (counted). The
degraded copies go to a temporary folder; nothing is written to the repo.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from cmce.bundle import load_bundle
from cmce.card import render_upgrade_table
from cmce.data import list_labelled_images
from cmce.embed import EmbeddingCache, embed_files
from cmce.evaluate import evaluate_upgrade
from cmce.train import heldout_subset
from cmce.transform import first_image_protocol

KINDS = ("blur", "lowres", "jpeg", "dark")


def degrade(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 4)))
    if kind == "lowres":
        side = int(rng.integers(28, 49))
        return img.resize((side, side), Image.BILINEAR).resize(img.size, Image.BILINEAR)
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(5, 13)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    gamma = rng.uniform(2.5, 3.5)
    x = np.asarray(img, np.float32) / 255.0
    return Image.fromarray((255 * x**gamma).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--bundle", default="assets/bundles/sface-query")
    parser.add_argument("--old", default="assets/bundles/facenet-dlib")
    parser.add_argument("--share", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    new, old = load_bundle(args.bundle), load_bundle(args.old)
    models = list(dict.fromkeys(new.models + old.models))
    ds = heldout_subset(list_labelled_images(args.data_dir), new)
    cache = EmbeddingCache()
    clean = embed_files(list(ds.paths), models, cache=cache)
    labels = np.asarray(ds.labels)
    idx = np.flatnonzero(clean.found)
    gi = idx[first_image_protocol(labels[idx])[0]]
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(gi, size=round(args.share * len(gi)), replace=False)
    kinds = rng.choice(KINDS, size=len(picked))
    with tempfile.TemporaryDirectory(prefix="cmce-mixed-") as tmp:
        paths = []
        for i, kind in zip(picked, kinds):
            out = Path(tmp) / f"{i:05d}-{kind}.png"
            degrade(Image.open(ds.paths[i]).convert("RGB"), kind, rng).save(out)
            paths.append(out)
        bad = embed_files(paths, models, cache=cache)
    faces, emb = list(clean.faces), {m: v.copy() for m, v in clean.embeddings.items()}
    kept_clean = 0
    for j, i in enumerate(picked):
        if bad.faces[j] is None:
            kept_clean += 1
            continue
        faces[i] = bad.faces[j]
        for m in models:
            emb[m][i] = bad.embeddings[m][j]
    mixed = dataclasses.replace(clean, faces=tuple(faces), embeddings=emb)
    print(f"{len(gi)} gallery photos, {len(picked) - kept_clean} degraded "
          f"({', '.join(f'{k} {int((kinds == k).sum())}' for k in KINDS)}); {kept_clean} kept clean (no face found)")
    for name, old_side in ((args.old, old), ("backbone:facenet-casia", "facenet-casia")):
        up = evaluate_upgrade(mixed, ds.labels, new, old_side)
        print(f"\nfrom {name}:\n" + render_upgrade_table(up), end="")
        for c in up["comparisons"]:
            lo, hi = c["ci95"]
            print(f"  {c['from']} -> {c['to']}: R@1 {100 * c['recall_at_1_gain']:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})")


if __name__ == "__main__":
    main()
