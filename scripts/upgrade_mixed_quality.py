"""The upgrade experiment on a mixed-quality gallery: does re-projection still pay off?

    PYTHONPATH=. python scripts/upgrade_mixed_quality.py ../shared/data/lfw-train [--gallery-degrade mix:0.6]

Same held-out protocol as ``evaluate --heldout --upgrade-from`` (first photo of each
identity in the gallery, the others are queries), with the gallery degraded by
``cmce.experiments.degrade`` exactly as ``evaluate --gallery-degrade SPEC`` does (seeded; the default
``mix:0.6`` degrades 60% of the gallery photos, each by blur, low resolution, heavy JPEG
or a dark gamma). Queries stay clean. A degraded photo in which no face is found keeps
its clean version (counted). Nothing is written to the repo.
"""

from __future__ import annotations

import argparse
import sys

from cmce.experiments.degrade import DegradeSpec, degrade_gallery
from cmce.experiments.evaluate import evaluate_upgrade, gallery_positions
from cmce.experiments.splits import heldout_subset
from cmce.io.datasets import list_labelled_images
from cmce.method.bundle import load_bundle
from cmce.method.card import render_upgrade_table
from cmce.models.embed import EmbeddingCache, embed_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--bundle", default="assets/bundles/sface-query")
    parser.add_argument("--old", default="assets/bundles/facenet-dlib")
    parser.add_argument("--gallery-degrade", default="mix:0.6", help="SPEC, as in cmce evaluate")
    parser.add_argument("--degrade-seed", type=int, default=0)
    args = parser.parse_args()
    spec = DegradeSpec.parse(args.gallery_degrade)
    new, old = load_bundle(args.bundle), load_bundle(args.old)
    models = list(dict.fromkeys(new.models + old.models))
    ds = heldout_subset(list_labelled_images(args.data_dir), new)
    cache = EmbeddingCache()
    clean = embed_files(list(ds.paths), models, cache=cache)
    mixed, report, _ = degrade_gallery(clean, gallery_positions(clean, ds.labels), spec, seed=args.degrade_seed,
                                       models=models, cache=cache)
    print(f"{report['gallery_photos']} gallery photos, {report['degraded']} degraded ({report['spec']}, seed "
          f"{report['seed']}: {', '.join(f'{k} {v}' for k, v in report['by_kind'].items())}); "
          f"{sum(report['kept_clean_no_face'].values())} kept clean (no face found)")
    for name, old_side in ((args.old, old), ("backbone:facenet-casia", "facenet-casia")):
        up = evaluate_upgrade(mixed, ds.labels, new, old_side)
        print(f"\nfrom {name}:\n" + render_upgrade_table(up), end="")
        for c in up["comparisons"]:
            lo, hi = c["ci95"]
            print(f"  {c['from']} -> {c['to']}: R@1 {100 * c['recall_at_1_gain']:+.2f} ({100 * lo:+.2f} to {100 * hi:+.2f})")


if __name__ == "__main__":
    from cmce.errors import CmceError

    try:
        main()
    except CmceError as e:  # a bad path, spec or bundle: say what is wrong, no traceback
        sys.exit(f"error: {e}")
