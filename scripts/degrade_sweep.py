"""Held-out Recall@1 of a bundle's rows on galleries degraded by each kind alone, and by the mix.

    PYTHONPATH=. python scripts/degrade_sweep.py ../shared/data/lfw-train --bundle assets/bundles/sface-query \
        [--specs clean mix:0.6 blur:0.6 lowres:0.6 jpeg:0.6 dark:0.6 noise:0.6 occlusion:0.6] [--json docs/x.json] \
        [--detection index]

Provenance of docs/degrade-sweep-*.json and the per-kind table of docs/mixed-quality.md. The
measurement is ``cmce evaluate --heldout --gallery-degrade SPEC1 --gallery-degrade SPEC2 ...``'s
(same steps, same seed; ``crop`` and ``tiny`` want ``--detection index``); this keeps the
summary: the query model alone, each gallery model through its transformer, the served
ensemble, the gallery models' own ensemble, and the error cut at 10% rejected by every quality
score. 95% intervals are a bootstrap over query identities.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmce.experiments.evaluate_run import (  # noqa: E402
    degrade_photos,
    embed_evaluation_photos,
    evaluate_gallery,
    parse_gallery_kinds,
)
from cmce.faces.detector import DETECTORS  # noqa: E402
from cmce.method.bundle import load_bundle  # noqa: E402
from cmce.metrics.intervals import format_with_interval  # noqa: E402
from cmce.metrics.results import json_safe  # noqa: E402
from cmce.models.embed import EmbeddingCache  # noqa: E402


def _cell(row) -> str:
    """Recall@1 and its interval of a row (``EvaluationRow`` or ``GalleryEnsembleRejection``)."""
    return format_with_interval(row.recall_at_1, row.recall_at_1_ci95, interval_digits=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--bundle", default="assets/bundles/sface-query")
    parser.add_argument("--specs", nargs="+",
                        default=["clean", "mix:0.6", "blur:0.6", "lowres:0.6", "jpeg:0.6", "dark:0.6", "noise:0.6",
                                 "occlusion:0.6"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ci-resamples", type=int, default=500)
    parser.add_argument("--json", default=None)
    parser.add_argument("--detection", default="plain", choices=DETECTORS,
                        help="detector of the photos and the degraded copies, as in cmce evaluate")
    args = parser.parse_args()
    specs = dict(zip(args.specs, parse_gallery_kinds(args.specs)))  # a bad spec fails first
    logging.basicConfig(level=logging.WARNING)
    bundle = load_bundle(args.bundle)
    photos = embed_evaluation_photos(args.data_dir, bundle, heldout=True, detection=args.detection,
                                     cache=EmbeddingCache())
    q = bundle.query_model
    out = {"bundle": str(args.bundle), "seed": args.seed, "detection": args.detection, "results": {}}
    print(f"bundle {args.bundle}: query {q}, members {', '.join(bundle.member_names)}, fusion {bundle.fusion.kind}, "
          f"quality {bundle.calibration.quality.kind}")
    print(f"| gallery | {q} alone | " + " | ".join(f"{m} -> {q}" for m in bundle.gallery_models)
          + " | served ensemble | gallery models' own | 10% rejected: error cut by disagreement · detection · combined"
            " · learned |")
    print("|---|" + "---:|" * (len(bundle.gallery_models) + 4))
    for spec, parsed in specs.items():
        emb, rep = (photos.clean, None) if parsed is None else degrade_photos(photos, parsed, seed=args.seed)
        ev = evaluate_gallery(photos, bundle, emb, degrade_report=rep, ci_resamples=args.ci_resamples)
        by_q = ev.rejection_by_quality
        i10 = [r.rate for r in ev.rejection].index(0.1)
        cuts = " · ".join(f"{100 * by_q[k][i10].error_cut:.1f}%" if k in by_q else "—"
                          for k in ("disagreement", "detection", "combined", "learned"))
        print(f"| {spec} | {_cell(ev.row('query model symmetric'))} | "
              + " | ".join(_cell(ev.row(f"{m} -> {q} (transformer)")) for m in bundle.gallery_models)
              + f" | {_cell(ev.row('CMCE ensemble'))} | {_cell(ev.rejection_gallery_ensemble)} | {cuts} |", flush=True)
        d = ev.to_dict()
        out["results"][spec] = {"gallery_degrade": rep, **{k: d[k] for k in (
            "rows", "rejection", "rejection_by_quality", "rejection_gallery_ensemble", "counts")}}
    if args.json:
        Path(args.json).write_text(json.dumps(json_safe(out), indent=1,
                                              default=lambda x: x.item() if isinstance(x, np.generic) else str(x)) + "\n")


if __name__ == "__main__":
    from cmce.errors import CmceError

    try:
        main()
    except CmceError as e:  # a bad spec, path or bundle: say what is wrong, no traceback
        sys.exit(f"error: {e}")
