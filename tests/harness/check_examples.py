"""Every column's answer for every example gallery and query, per shipped bundle.

Indexes each example gallery with each bundle (real models), lists the entries the
bundle's calibrated rejection catches (with their quality score), then searches every
example query and prints each column's answer: ✓ right, ✗ wrong, ? unknown (· no label
to judge by: the stranger).

With ``--json PATH`` it also writes what it printed: per bundle and gallery, the rejection
threshold, every entry (rejected or kept, with its quality score and uncertainty) and, per
query, each column's mark (``right``, ``wrong``, ``unknown``, or null without a label), top
similarity (null: no match) and threshold. ``docs/results.md``'s examples table is rendered
from that file (``python scripts/render_docs.py``).

Usage::

    python tests/harness/check_examples.py [--bundle assets/bundles/facenet-query ...] [--examples DIR]
        [--json docs/examples-check.json]
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--json", type=Path, help="also write every column's answer to this JSON file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    queries = sorted((args.examples / "queries").glob("*.jpg"))
    out: dict = {"bundles": {}}
    for bundle_dir in args.bundle:
        engine = FaceEngine(load_bundle(str(bundle_dir)))
        galleries: dict = {}
        out["bundles"][bundle_dir.name] = {"query_model": engine.bundle.query_model, "galleries": galleries}
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
            threshold = engine.bundle.calibration.rejection_threshold
            entries, answers = [], {}
            galleries[name] = {"summary": report.summary(),
                               "rejection_threshold": None if threshold is None else round(float(threshold), 4),
                               "quality": engine.bundle.calibration.quality.kind, "entries": entries,
                               "rejected": [gallery.entries[p].source for p in gallery.positions if rejected[p]],
                               "queries": answers}
            for pos in gallery.positions:
                e = gallery.entries[pos]
                entries.append({"source": e.source, "rejected": bool(rejected[pos]),
                                "quality": round(float(quality[pos]), 4),
                                "uncertainty": round(float(gallery.vectors.uncertainty[pos]), 4)})
                print(f"   {'REJECTED' if rejected[pos] else 'kept    '} {e.source:28s} quality {quality[pos]:.4g}"
                      f" u={gallery.vectors.uncertainty[pos]:.3f}")
            for q in queries:
                label = query_label(q.name)
                try:
                    result = gallery.search_image(load_image(q), k=3, rejected=rejected, name=q.name)
                except CmceError as e:
                    print(f"   {q.name:24s} {e}")
                    answers[q.name] = {"error": str(e)}
                    continue
                views = result_dict(result, engine.bundle.query_model, label)["views"]
                cells, columns = [], {}
                for view, v in views.items():
                    mark = "?" if v["unknown"] else ("✓" if v["correct"] else "✗" if v["correct"] is False else "·")
                    top = v["matches"][0] if v["matches"] else None
                    sim = "-" if top is None else f"{top['similarity']:.2f}"
                    cells.append(f"{view}:{mark}{sim}/{v['threshold']:.2f}")
                    columns[view] = {"mark": _MARKS[mark], "similarity": None if top is None else top["similarity"],
                                     "threshold": round(float(v["threshold"]), 4)}
                answers[q.name] = {"columns": columns}
                print(f"   {q.name:24s} " + "  ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        print(f"\nwrote {args.json}")


#: The printed marks -> the JSON's (null: the query has no label to judge the answer by).
_MARKS = {"✓": "right", "✗": "wrong", "?": "unknown", "·": None}


if __name__ == "__main__":
    main()
