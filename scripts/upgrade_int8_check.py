"""Does int8 re-projection (``upgrade --precision int8``) change retrieval? Held-out identities.

    PYTHONPATH=. python scripts/upgrade_int8_check.py ../shared/data/lfw-train

Re-projects the held-out gallery (first-image protocol, as ``evaluate --heldout``) of
an old ``facenet-dlib`` gallery into ``sface-query``'s space with float32 and with int8
transformers, and prints Recall@1 (95% bootstrap interval), TAR@FAR=1e-3, the queries
whose top-1 answer differs, and the cosine distance between the two re-projections.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from cmce.experiments.splits import heldout_subset
from cmce.io.datasets import list_labelled_images
from cmce.method.bundle import load_bundle
from cmce.metrics.intervals import bootstrap_mean_ci
from cmce.metrics.verification import tar_at_far, verification_scores
from cmce.models.embed import EmbeddingCache, embed_files
from cmce.models.transform import first_image_protocol, quantize_transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--bundle", default="assets/bundles/sface-query")
    parser.add_argument("--old", default="assets/bundles/facenet-dlib")
    args = parser.parse_args()
    new, old = load_bundle(args.bundle), load_bundle(args.old)
    ds = heldout_subset(list_labelled_images(args.data_dir), new)
    emb = embed_files(list(ds.paths), list(dict.fromkeys(new.models + old.models)), cache=EmbeddingCache())
    labels = np.asarray(ds.labels)
    idx = np.flatnonzero(emb.found)
    gi_l, qi_l = first_image_protocol(labels[idx])
    gi, qi = idx[gi_l], idx[qi_l]
    stored = {m: emb.embeddings[m][gi] for m in new.models if m in old.models}
    prob = emb.detection_probability[gi]
    q = emb.embeddings[new.query_model][qi]
    int8 = dataclasses.replace(new, transformers={m: quantize_transformer(t) for m, t in new.transformers.items()})
    tops, vecs = {}, {}
    for name, bundle in (("float32", new), ("int8", int8)):
        vecs[name] = bundle.gallery_vectors(stored, prob).ensemble
        sim = q @ vecs[name].T
        tops[name] = sim.argmax(axis=1)
        hits = (labels[gi][tops[name]] == labels[qi]).astype(float)
        r1, lo, hi = bootstrap_mean_ci(hits)
        scores, same = verification_scores(sim, labels[qi], labels[gi])
        print(f"{name}: R@1 {100 * r1:.2f} ({100 * lo:.2f}-{100 * hi:.2f}), "
              f"TAR@FAR=1e-3 {100 * tar_at_far(scores, same, 1e-3):.2f}")
    dist = 1 - (vecs["float32"] * vecs["int8"]).sum(axis=1)
    print(f"queries whose top-1 differs: {int((tops['float32'] != tops['int8']).sum())} of {len(qi)}; "
          f"cosine distance float32 vs int8 fused vectors: median {np.median(dist):.1e}, max {dist.max():.1e}")


if __name__ == "__main__":
    main()
