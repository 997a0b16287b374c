"""Regenerate tests/golden/similarity.json: per-backbone similarity matrices of fixed faces.

Only numbers are stored (no image). Run after a deliberate change of alignment or
weights, and say why in the commit:

    python scripts/make_golden.py ../shared/data/lfw-train
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmce.models.embed import embed_files  # noqa: E402

GOLDEN_FILES = [
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
    "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "Abel_Pacheco/Abel_Pacheco_0002.jpg",
    "Adam_Sandler/Adam_Sandler_0001.jpg",
    "Adam_Sandler/Adam_Sandler_0002.jpg",
]
MODELS = ["sface", "dlib-resnet34", "facenet-casia"]


def main() -> None:
    root = Path(sys.argv[1])
    res = embed_files([root / f for f in GOLDEN_FILES], MODELS)
    if not res.found.all():
        raise SystemExit(f"no face in: {[e for e in res.errors if e]}")
    out = {"files": GOLDEN_FILES, "similarity": {}}
    for m in MODELS:
        e = res.embeddings[m]
        out["similarity"][m] = [[round(float(x), 5) for x in row] for row in e @ e.T]
    path = Path(__file__).resolve().parent.parent / "tests" / "golden" / "similarity.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
