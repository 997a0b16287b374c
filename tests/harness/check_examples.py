"""Every column's answer for every example gallery and query, per shipped bundle.

Indexes each example gallery with each bundle (real models), lists the entries the
bundle's calibrated rejection catches (with their quality score), then searches every
example query and prints each column's answer: ✓ right, ✗ wrong, ? unknown.

Usage::

    python tests/harness/check_examples.py [--bundle assets/bundles/facenet-query ...] [--examples DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from cmce.errors import CmceError
    from cmce.gallery.memory import Gallery
    from cmce.io.images import load_image
    from cmce.io.uploads import collect_uploads, query_label
    from cmce.method.bundle import load_bundle
    from cmce.method.engine import FaceEngine
    from cmce.serve.display import result_dict

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", nargs="*", type=Path,
                    default=sorted(p for p in (ROOT / "assets" / "bundles").glob("*") if (p / "config.json").is_file()))
    ap.add_argument("--examples", type=Path, default=ROOT / "assets" / "examples")
    ap.add_argument("--galleries", nargs="*", default=["gallery", "archive"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    queries = sorted((args.examples / "queries").glob("*.jpg"))
    for bundle_dir in args.bundle:
        engine = FaceEngine(load_bundle(str(bundle_dir)))
        for name in args.galleries:
            folder = args.examples / name
            files = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix == ".jpg")
            upload = collect_uploads([(p.name, p) for p in files], Path("/tmp/cmce-check-examples"))
            gallery = Gallery(engine)
            report = gallery.add_images(upload.items)
            rejected = gallery.rejected()
            quality = gallery.vectors.quality
            print(f"\n== {bundle_dir.name} / {name}: {report.summary()}; threshold "
                  f"{engine.bundle.calibration.rejection_threshold:.4g} ({engine.bundle.calibration.quality.kind})")
            for pos in gallery.positions:
                e = gallery.entries[pos]
                print(f"   {'REJECTED' if rejected[pos] else 'kept    '} {e.source:28s} quality {quality[pos]:.4g}"
                      f" u={gallery.vectors.uncertainty[pos]:.3f}")
            for q in queries:
                label = query_label(q.name)
                try:
                    result = gallery.search_image(load_image(q), k=3, rejected=rejected, name=q.name)
                except CmceError as e:
                    print(f"   {q.name:24s} {e}")
                    continue
                views = result_dict(result, engine.bundle.query_model, label)["views"]
                cells = []
                for view, v in views.items():
                    mark = "?" if v["unknown"] else ("✓" if v["correct"] else "✗" if v["correct"] is False else "·")
                    top = v["matches"][0] if v["matches"] else None
                    sim = "-" if top is None else f"{top['similarity']:.2f}"
                    cells.append(f"{view}:{mark}{sim}/{v['threshold']:.2f}")
                print(f"   {q.name:24s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
