"""Paired comparison of quality scores: how much more error one rejection score cuts than another.

On a bundle's held-out identities (optionally with a degraded gallery), for each
rejection rate, the difference in relative error cut between the bundle's score and
every other score, with a 95% bootstrap interval over query identities in which both
scores are resampled together (paired), so the interval is that of the difference
itself, not two overlapping intervals.

Usage::

    python scripts/compare_quality_scores.py ../shared/data/lfw-train --bundle assets/bundles/facenet-query \\
        --gallery-degrade mix:0.6 [--json out.json]
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

RATES = (0.05, 0.1, 0.2, 0.3)


def main() -> None:
    from cmce.experiments.degrade import DegradeSpec, degrade_gallery
    from cmce.experiments.evaluate import gallery_positions, quality_scores_by_kind
    from cmce.experiments.splits import heldout_subset
    from cmce.io.datasets import list_labelled_images
    from cmce.method.bundle import load_bundle
    from cmce.metrics.intervals import cluster_bootstrap, relative_error_reduction
    from cmce.metrics.rejection import gallery_rejection_mask
    from cmce.metrics.retrieval import top1_hits
    from cmce.models.embed import EmbeddingCache, embed_files
    from cmce.models.transform import first_image_protocol

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--bundle", default="assets/bundles/sface-query")
    parser.add_argument("--gallery-degrade", default=None, help="SPEC, as in cmce evaluate (default: clean gallery)")
    parser.add_argument("--degrade-seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    spec = DegradeSpec.parse(args.gallery_degrade) if args.gallery_degrade else None  # fails before any work
    bundle = load_bundle(args.bundle)
    ds = heldout_subset(list_labelled_images(args.data_dir), bundle)
    cache = EmbeddingCache()
    emb = embed_files(list(ds.paths), list(bundle.models), cache=cache)
    if spec is not None:
        emb, _, _ = degrade_gallery(emb, gallery_positions(emb, ds.labels), spec,
                                    seed=args.degrade_seed, models=list(bundle.models), cache=cache)
    labels = np.asarray(ds.labels)
    idx = np.flatnonzero(emb.found)
    gi_l, qi_l = first_image_protocol(labels[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    prob = emb.detection_probability
    gv = bundle.gallery_vectors({m: v[gi] for m, v in emb.embeddings.items()}, prob[gi])
    sim = emb.embeddings[bundle.query_model][qi] @ gv.ensemble.T
    q_lab, g_lab = labels[qi], labels[gi]
    base = top1_hits(sim, q_lab, g_lab)
    scores = quality_scores_by_kind(bundle, gv, prob[gi])
    mine = bundle.calibration.quality.kind
    # (no random column: one random draw is too noisy to pair with; evaluate reports the mean of many)
    others = [k for k in scores if k not in ("bundle", mine)]

    def diff(b: float, a: float, o: float) -> float:
        return relative_error_reduction(b, a) - relative_error_reduction(b, o)

    print(f"{args.bundle} ({args.gallery_degrade or 'clean'} gallery): R@1 {100 * np.nanmean(base):.2f}, "
          f"{int(np.nansum(1 - base))} errors in {int(np.sum(~np.isnan(base)))} queries; shipped score {mine}")
    print(f"| rejected | {mine} error cut | " + " | ".join(f"{mine} minus {k}" for k in others) + " |")
    print("|---:|---:|" + "---:|" * len(others))
    out = {"bundle": args.bundle, "gallery_degrade": args.gallery_degrade, "score": mine, "rates": []}
    for rate in RATES:
        hits = {k: top1_hits(sim, q_lab, g_lab, gallery_rejection_mask(s, rate)) for k, s in scores.items()}
        cut = cluster_bootstrap([base, hits[mine]], q_lab, relative_error_reduction, resamples=args.resamples)
        row = {"rate": rate, "error_cut": cut, "minus": {}}
        cells = []
        for k in others:
            d = cluster_bootstrap([base, hits[mine], hits[k]], q_lab, diff, resamples=args.resamples)
            row["minus"][k] = d
            cells.append(f"{100 * d[0]:+.1f} ({100 * d[1]:+.0f} to {100 * d[2]:+.0f})")
        out["rates"].append(row)
        print(f"| {100 * rate:.0f}% | {100 * cut[0]:.1f}% ({100 * cut[1]:.0f} to {100 * cut[2]:.0f}) | "
              + " | ".join(cells) + " |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    from cmce.errors import CmceError

    try:
        main()
    except CmceError as e:  # a bad path, spec or bundle: say what is wrong, no traceback
        sys.exit(f"error: {e}")
