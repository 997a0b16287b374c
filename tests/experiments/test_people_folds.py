"""Out-of-fold served vectors (cmce.experiments.people_folds): each face served by its identity's fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmce.errors import DatasetError
from cmce.experiments.people_folds import FoldBundles, fold_bundles
from cmce.method.bundle_model import Bundle, Calibration
from cmce.method.ensemble import QualityModel
from cmce.models.transform import TransformerConfig, create_transformer

DIMS = {"sface": 128, "dlib-resnet34": 128, "facenet-casia": 512}


def _bundle(seed: int, info: dict | None = None) -> Bundle:
    torch.manual_seed(seed)
    nets = {m: create_transformer(TransformerConfig(d, 128, hidden=32, blocks=1)).eval()
            for m, d in DIMS.items() if m != "sface"}
    return Bundle("sface", ("dlib-resnet34", "facenet-casia"), nets, query_member=True,
                  calibration=Calibration(0.1, 0.25, QualityModel("disagreement"), 1e-3, {"ensemble": 0.3, "query": 0.4}),
                  info=info or {})


def _faces(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = {}
    for m, d in DIMS.items():
        x = rng.standard_normal((n, d)).astype(np.float32)
        emb[m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return emb, rng.uniform(0.9, 1.0, n)


def test_each_face_is_served_by_the_fold_of_its_identity() -> None:
    folds = FoldBundles((_bundle(1), _bundle(2), _bundle(3)), {"ada": 0, "bo": 1, "cy": 2, "di": 1})
    labels = np.array(["bo", "ada", "cy", "di", "ada", "bo", "cy"])
    emb, prob = _faces(len(labels))
    got = folds.spaces(emb, prob, labels)
    assert got["ensemble"].shape == (len(labels), 128)
    np.testing.assert_allclose(np.linalg.norm(got["ensemble"], axis=1), 1.0, atol=1e-5)
    for i, who in enumerate(labels):
        own = folds.bundles[folds.fold_of[str(who)]].gallery_vectors({m: v[[i]] for m, v in emb.items()}, prob[[i]])
        want = own.ensemble[0] / np.linalg.norm(own.ensemble[0])
        np.testing.assert_allclose(got["ensemble"][i], want, atol=1e-5)
        assert got["quality"][i] == pytest.approx(float(own.quality[0]), abs=1e-6)
        other = folds.bundles[(folds.fold_of[str(who)] + 1) % 3].gallery_vectors(
            {m: v[[i]] for m, v in emb.items()}, prob[[i]]).ensemble[0]
        assert float(got["ensemble"][i] @ (other / np.linalg.norm(other))) < 0.999  # another fold serves it otherwise


def test_a_face_outside_the_folds_and_a_bundle_without_folds_are_refused() -> None:
    folds = FoldBundles((_bundle(1), _bundle(2)), {"ada": 0, "bo": 1})
    emb, prob = _faces(3)
    with pytest.raises(DatasetError, match="1 faces are of identities outside the bundle's folds"):
        folds.spaces(emb, prob, np.array(["ada", "zed", "bo"]))
    with pytest.raises(DatasetError, match="not trained with cross-validation folds"):
        fold_bundles("unused", _bundle(0, {"training": {"cross_validation": {"folds": 1}}}), cache=None)
