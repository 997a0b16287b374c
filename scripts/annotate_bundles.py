"""Write each shipped bundle's purpose and the shipped bundles it can upgrade galleries from.

    PYTHONPATH=. python scripts/annotate_bundles.py

Re-saves every bundle in assets/bundles/ (weights unchanged) so that its config and
model card say what it is for and which other shipped bundles' galleries it serves.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cmce.gallery.upgrade import shared_members
from cmce.method.bundle import load_bundle, save_bundle

PURPOSES = {
    "sface-query": "the demo and real use: the most accurate ensemble here, and the cheapest queries (sface).",
    "facenet-query": "the paper's regime: gallery models stronger than a weak query model (facenet-casia), "
                     "to see how much the ensemble lifts it.",
    "facenet-dlib": "the old side of the upgrade story: a FaceNet-era gallery (facenet-casia queries, dlib-resnet34 "
                    "+ facenet's own embedding) that sface-query re-projects without reading a photo.",
}


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    root = Path(__file__).resolve().parent.parent / "assets" / "bundles"
    bundles = {p.name: load_bundle(p) for p in sorted(root.iterdir()) if (p / "config.json").is_file()}
    for name, bundle in bundles.items():
        bundle.info["purpose"] = PURPOSES.get(name, bundle.info.get("purpose", ""))
        bundle.info["upgrade_from"] = [
            {"bundle": other, "query": ob.query_model, "shared": shared,
             "complete": set(shared) == set(bundle.member_names)}
            for other, ob in bundles.items()
            if other != name and (shared := shared_members(bundle, ob))
        ]
        save_bundle(bundle, root / name)


if __name__ == "__main__":
    main()
