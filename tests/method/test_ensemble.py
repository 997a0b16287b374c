"""Fusion, uncertainty and the quality scores against their definitions."""

from __future__ import annotations


import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.method.ensemble import (
    QualityModel,
    detection_doubt,
    fuse_members,
)
from cmce.metrics.uncertainty import mean_pairwise_cosine_distance


def test_fuse_and_uncertainty_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((6, 3, 16)).astype(np.float32)
    m /= np.linalg.norm(m, axis=2, keepdims=True)
    members = list(m.transpose(1, 0, 2))  # three (6, 16) arrays, one per member
    fused = fuse_members(members)
    ref = m.mean(1) / np.linalg.norm(m.mean(1), axis=1, keepdims=True)
    np.testing.assert_allclose(fused, ref, atol=1e-6)
    naive = [np.mean([1 - m[g, i] @ m[g, j] for i in range(3) for j in range(i + 1, 3)]) for g in range(6)]
    for normalise in (True, False):
        u = mean_pairwise_cosine_distance(members, normalise=normalise)
        assert u.dtype == np.float32
        np.testing.assert_allclose(u, naive, atol=1e-5)
    same = [m[:, 0]] * 3
    np.testing.assert_allclose(mean_pairwise_cosine_distance(same), 0.0, atol=1e-6)
    # an entry with fewer than two members has no disagreement: 0, whether masked or not
    present = [np.ones(6, bool), np.arange(6) < 3, np.arange(6) < 2]
    u = mean_pairwise_cosine_distance(members, present)
    assert u[3:].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(u[:2], naive[:2], atol=1e-5)
    assert mean_pairwise_cosine_distance(members[:1]).tolist() == [0.0] * 6
    np.testing.assert_allclose(fuse_members(members, present)[3:], m[3:, 0], atol=1e-6)
    with pytest.raises(CmceError, match="list or tuple"):
        fuse_members(m)  # a (G, N, D) stack is refused, never misread


def test_quality_scores() -> None:
    u = np.array([0.1, 0.5, 0.2, 0.3], np.float32)
    p = np.array([0.9999, 0.9999, 0.90, 0.999], np.float32)
    assert np.argmax(QualityModel("disagreement").score(u, p)) == 1
    assert np.argmax(QualityModel("detection").score(u, p)) == 2
    combined = QualityModel.fit("combined", u, p)
    s = combined.score(u, p)
    assert s.shape == (4,) and np.argmin(s) == 0  # low disagreement and a sure detection
    assert detection_doubt(np.array([1.0]))[0] == 0.0
    assert QualityModel.from_dict(combined.to_dict()) == combined
