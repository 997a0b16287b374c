"""Held-out answers on the path the app uses: Gallery.add_images, then a search per query.

The first photo of each held-out identity (by file name) goes into the gallery with its
label, identities with one photo as distractors; every other photo is a query. Every face
of every gallery photo is indexed (background faces too), as the app indexes. With
``--gallery-degrade mix:0.6`` (kinds that need no face box: blur, lowres, jpeg, dark) that
share of gallery photos is degraded first (seeded, ``cmce.experiments.degrade``). Each query's CMCE
ensemble answer is counted right (its person named), wrong (another) or unknown, under the
bundle's default (nothing rejected, the normalised "Unknown" threshold, the answer rule),
``strict`` (the same without the threshold's coverage guard), with no answer rule, with neither (the raw similarity threshold, as bundles answered
before), and with the calibrated rejection blocking. Each query photo is detected and
embedded once, as ``Gallery.search_image`` does, then searched under each variant
(``Gallery.search_vector``).

    python scripts/app_path_answers.py ../shared/data/lfw-train --bundle assets/bundles/sface-query \\
        [--gallery-degrade mix:0.6] [--json docs/answers/app-path-sface-query-mix0.6.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmce.errors import CmceError  # noqa: E402
from cmce.experiments.degrade import DegradeSpec, degrade_image, plan_degradation  # noqa: E402
from cmce.experiments.splits import heldout_subset  # noqa: E402
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.gallery.searchable import detect_query
from cmce.io.datasets import list_labelled_images  # noqa: E402
from cmce.io.images import load_image  # noqa: E402
from cmce.method.bundle import load_bundle  # noqa: E402
from cmce.method.engine import FaceEngine  # noqa: E402
from cmce.models.transform import first_image_protocol  # noqa: E402


def outcome(view, label: str) -> str:
    if view.answer.kind != "match":
        return "unknown"
    return "right" if view.answer.label == label else "wrong"


def heldout_gallery_items(data_dir: str, bundle, gallery_degrade: str | None, seed: int = 0):
    """The held-out gallery photos as ``(name, bytes, label)`` (degraded where asked), the
    held-out dataset, its labels and the query positions."""
    ds = heldout_subset(list_labelled_images(data_dir), bundle)
    labels = np.asarray(ds.labels)
    gi, qi = first_image_protocol(labels)
    items = [(Path(ds.paths[i]).name, Path(ds.paths[i]).read_bytes(), labels[i]) for i in gi]
    if gallery_degrade:
        spec = DegradeSpec.parse(gallery_degrade)
        if any(k in ("occlusion", "crop", "tiny") for k in spec.kinds):
            raise CmceError("this script degrades without face boxes: use blur, lowres, jpeg, dark or noise")
        picked, kinds = plan_degradation(len(items), spec, seed)
        for j, kind in zip(picked, kinds):
            name, data, lab = items[j]
            rng = np.random.default_rng([seed, int(j)])
            img = degrade_image(load_image(data, name=name), str(kind), rng)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            items[j] = (name, buf.getvalue(), lab)
    return items, ds, labels, qi


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--bundle", required=True)
    p.add_argument("--gallery-degrade", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the counts here (the source of the README's answers table)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = load_bundle(a.bundle)
    items, ds, labels, qi = heldout_gallery_items(a.data_dir, bundle, a.gallery_degrade, a.seed)
    engine = FaceEngine(bundle)
    gallery = Gallery(engine, GalleryLimits(max_files=len(items) + 1, max_entries=10 * len(items)))
    report = gallery.add_images(items)
    rejected = gallery.rejected()
    variants = {  # search_vector's arguments per variant; the query is detected and embedded once
        "default": {},
        "strict": {"unknown_by": "strict"},
        "no rule": {"answer_rule": "none"},
        "raw threshold, no rule": {"answer_rule": "none", "unknown_by": "similarity"},
        "rejected block": {"answer_rule": "none", "rejected": rejected},
    }
    counts = {name: Counter() for name in variants}
    for i in qi:
        photo = detect_query(engine, ds.paths[i], name=Path(ds.paths[i]).name)
        if not photo.faces:
            for c in counts.values():
                c["no face in query"] += 1
            continue
        face = photo.faces[0]
        q = engine.embed_query_face(photo.image, face)  # what search_photo does, once for every variant
        for name, kw in variants.items():
            view = gallery.search_vector(q, k=1, query_probability=face.probability, **kw)["ensemble"]
            counts[name][outcome(view, labels[i])] += 1
    print(f"{Path(a.bundle).name}, gallery {a.gallery_degrade or 'clean'}: {report.summary()}; "
          f"{int(gallery.doubt().doubtful.sum())} doubtful, {int(rejected.sum())} rejected if asked; {len(qi)} queries"
          + (f"\n  {note}" if (note := gallery.unknown_note()) else ""))
    for name, c in counts.items():
        print(f"  {name:15s} right {c['right']:4d}  wrong {c['wrong']:4d}  unknown {c['unknown']:4d}"
              + (f"  no face {c['no face in query']}" if c["no face in query"] else ""))
    if a.json:
        Path(a.json).write_text(json.dumps({
            "bundle": Path(a.bundle).name, "gallery_degrade": a.gallery_degrade, "seed": a.seed, "queries": len(qi),
            "indexed": report.summary(), "doubtful": int(gallery.doubt().doubtful.sum()),
            "rejected_if_asked": int(rejected.sum()), "guard_note": note or None,
            "counts": {name: {k: int(c[k]) for k in ("right", "wrong", "unknown", "no face in query")}
                       for name, c in counts.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
