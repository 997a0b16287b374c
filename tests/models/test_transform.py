"""Transformation networks on real faces of unseen identities: the least-squares map and the trained transformer."""

from __future__ import annotations


import numpy as np

from cmce.experiments.splits import SplitConfig, dataset_splits
from cmce.metrics.retrieval import recall_at_k
from cmce.models.transform import (
    TrainConfig,
    first_image_protocol,
    fit_linear_map,
    train_transformer,
    transform_embeddings,
)



def test_linear_map_and_trained_transformer_on_unseen_identities(lfw_pairs_labelled) -> None:
    res, labels = lfw_pairs_labelled
    ok = res.found
    splits = dataset_splits(list(labels), SplitConfig(0.15, 0.25, 0))
    tr, va, te = (splits[k] & ok for k in ("train", "val", "test"))
    assert not set(labels[tr]) & set(labels[te]) and not set(labels[tr]) & set(labels[va])
    q = res.embeddings["sface"]
    g = res.embeddings["facenet-casia"]
    gi, qi = first_image_protocol(labels[te])

    def r1(gallery_vectors):
        return recall_at_k(q[te][qi] @ gallery_vectors.T, labels[te][qi], labels[te][gi], ks=(1,))[1]

    W = fit_linear_map(g[tr], q[tr])
    lin = g[te][gi] @ W
    lin /= np.linalg.norm(lin, axis=1, keepdims=True)
    random_map = np.random.default_rng(0).standard_normal(W.shape).astype(np.float32)
    rnd = g[te][gi] @ random_map
    rnd /= np.linalg.norm(rnd, axis=1, keepdims=True)
    assert r1(lin) > 0.6 > r1(rnd) + 0.3  # the map carries identity across model spaces
    result = train_transformer(g[tr], q[tr], labels[tr], g[va], q[va], labels[va],
                               config=TrainConfig(epochs=6, patience=6))
    t = transform_embeddings(result.module, g[te][gi])
    assert r1(t) > 0.6
    # pulled onto the query model's embedding of the same image
    cos = (transform_embeddings(result.module, g[te]) * q[te]).sum(1)
    assert np.median(cos) > 0.5
