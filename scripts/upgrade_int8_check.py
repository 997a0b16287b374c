"""Does int8 re-projection (``upgrade --precision int8``) change retrieval? Held-out identities.

    PYTHONPATH=. python scripts/upgrade_int8_check.py ../shared/data/lfw-train

Provenance of the int8 figures in docs/upgrades.md. The measurement is ``cmce evaluate``'s:
this runs ``python -m cmce evaluate DATA --bundle assets/bundles/sface-query --heldout
--upgrade-from assets/bundles/facenet-dlib --precision int8``, which re-projects the held-out
gallery (first-image protocol) of an old ``facenet-dlib`` gallery into ``sface-query``'s space
with int8 transformers and prints, under the upgrade table, the queries whose top-1 answer
differs from float32's and the cosine distance between the two re-projections.
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
    args = parser.parse_args()
    sys.exit(main(["evaluate", args.data_dir, "--bundle", args.bundle, "--heldout", "--upgrade-from", args.old,
                   "--precision", "int8", "--quiet"]))
