"""The upgrade experiment on a mixed-quality gallery: does re-projection still pay off?

    PYTHONPATH=. python scripts/upgrade_mixed_quality.py ../shared/data/lfw-train [--gallery-degrade mix:0.6] \
        [--json docs/eval-upgrade-mixed.json]

Provenance of the mixed-quality upgrade table in docs/upgrades.md. The measurement is
``cmce evaluate``'s: this runs ``python -m cmce evaluate DATA --bundle assets/bundles/sface-query
--heldout --gallery-degrade mix:0.6 --upgrade-from assets/bundles/facenet-dlib --upgrade-from
backbone:facenet-casia``: the held-out protocol (first photo of each identity in the gallery,
the others are queries), the gallery degraded by ``cmce.experiments.degrade`` (seeded; ``mix:0.6``
degrades 60% of the gallery photos, each by blur, low resolution, heavy JPEG or a dark gamma),
queries clean, and one upgrade table per old side. A degraded photo in which no face is found
keeps its clean version (counted). ``--json PATH`` writes evaluate's JSON (its ``upgrades``:
one table per old side); nothing else is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmce.cli import main  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--bundle", default="assets/bundles/sface-query")
    parser.add_argument("--old", default="assets/bundles/facenet-dlib")
    parser.add_argument("--gallery-degrade", default="mix:0.6", help="SPEC, as in cmce evaluate")
    parser.add_argument("--degrade-seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write evaluate's JSON here")
    args = parser.parse_args()
    sys.exit(main(["evaluate", args.data_dir, "--bundle", args.bundle, "--heldout", "--quiet",
                   "--gallery-degrade", args.gallery_degrade, "--degrade-seed", str(args.degrade_seed),
                   "--upgrade-from", args.old, "--upgrade-from", "backbone:facenet-casia",
                   *(["--json", args.json] if args.json else [])]))
