"""LFW 1:1 verification accuracy of each backbone on the fixed 600-pair test subset.

The same pairs as tests/test_backbones.py (300 same, 300 different from
pairsDevTrain.txt, seed 0); prints accuracy at the best threshold and MTCNN's
detection rate. Uses the embedding cache (``CMCE_CACHE_DIR``).

    python scripts/lfw_verification.py ../shared/data/lfw-train [--json docs/lfw-verification.json]

``--json PATH`` writes what it prints (pairs, images, the detection rate, each backbone's
accuracy and threshold), the source of docs/method.md's table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cmce.io.datasets import read_lfw_pairs, sample_pairs  # noqa: E402
from cmce.metrics.verification import best_verification_accuracy  # noqa: E402
from cmce.models.embed import EmbeddingCache, embed_files  # noqa: E402

MODELS = ["sface", "dlib-resnet34", "facenet-casia"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    root = Path(args.data_dir)
    pairs = sample_pairs(read_lfw_pairs(root / "pairsDevTrain.txt", root), 300, seed=0)
    files = sorted({str(p) for a, b, _ in pairs for p in (a, b)})
    res = embed_files(files, MODELS, cache=EmbeddingCache())
    pos = {p: i for i, p in enumerate(res.paths)}
    same = np.array([s for *_, s in pairs])
    print(f"{len(pairs)} pairs, {len(files)} images, MTCNN found a face in {100 * res.found.mean():.2f}%")
    out = {"pairs": len(pairs), "images": len(files), "face_found": float(res.found.mean()), "pairs_file":
           "pairsDevTrain.txt", "seed": 0, "backbones": {}}
    for m in MODELS:
        e = res.embeddings[m]
        s = np.array([e[pos[str(a)]] @ e[pos[str(b)]] for a, b, _ in pairs])
        acc, thr = best_verification_accuracy(s, same)
        print(f"{m:<15} accuracy {acc:.4f} at cosine threshold {thr:.3f}")
        out["backbones"][m] = {"accuracy": float(acc), "threshold": float(thr)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
