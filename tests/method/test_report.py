"""Tests for cmce.method.report: leave-one-out risk-coverage against a naive reference."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.method.report import leave_one_out_risk_coverage
from cmce.metrics.rejection import gallery_rejection_mask


def _unit(rng, n, d=16):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_recall(q, g, labels, kept):
    """Loop over queries: top-1 among the other kept entries."""
    hits = counted = 0
    for i in range(len(labels)):
        if not kept[i] or labels[i] is None:
            continue
        others = [j for j in range(len(labels)) if j != i and kept[j]]
        if not any(labels[j] == labels[i] for j in others):
            continue
        counted += 1
        scores = [float(q[i] @ g[j]) for j in others]
        hits += labels[others[int(np.argmax(scores))]] == labels[i]
    return (hits / counted if counted else np.nan), counted


def test_matches_naive_reference():
    rng = np.random.default_rng(1)
    n = 60
    centres = _unit(rng, 12)
    ids = rng.integers(0, 12, n)
    g = centres[ids] + 0.6 * _unit(rng, n)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = centres[ids] + 0.6 * _unit(rng, n)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    labels = [None if i % 9 == 0 else f"p{ids[i]}" for i in range(n)]  # some unlabelled distractors
    quality = rng.random(n)
    rates = [0.0, 0.1, 0.25, 0.5]
    rc = leave_one_out_risk_coverage(q, g, labels, quality, rates=rates, random_draws=3)
    for j, r in enumerate(rates):
        want, count = _naive_recall(q, g, labels, gallery_rejection_mask(quality, r))
        assert rc.queries[j] == count
        assert rc.recall_uncertainty[j] == pytest.approx(want)
    assert rc.is_query.sum() == rc.queries[0]
    assert np.all((rc.recall_random >= 0) & (rc.recall_random <= 1))


def test_rejecting_doubtful_entries_helps_when_doubt_marks_errors():
    rng = np.random.default_rng(2)
    n = 80
    ids = np.repeat(np.arange(20), 4)
    centres = _unit(rng, 20)
    clean = centres[ids]
    bad = rng.random(n) < 0.25
    g = np.where(bad[:, None], _unit(rng, n), clean + 0.2 * _unit(rng, n))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    quality = np.where(bad, 1.0, 0.0) + 0.01 * rng.random(n)
    rc = leave_one_out_risk_coverage(g, g, [str(i) for i in ids], quality, rates=[0.0, 0.25], random_draws=10)
    assert rc.recall_uncertainty[1] > rc.recall_uncertainty[0]
    assert rc.recall_uncertainty[1] > rc.recall_random[1]


def test_no_pairs_gives_no_queries():
    rng = np.random.default_rng(3)
    x = _unit(rng, 4)
    rc = leave_one_out_risk_coverage(x, x, ["a", "b", None, "c"], np.zeros(4), rates=[0.0, 0.5])
    assert not rc.usable and rc.queries.tolist() == [0, 0]
    assert np.isnan(rc.recall_uncertainty).all()


def test_rejects_bad_input():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(CmceError):
        leave_one_out_risk_coverage(x, x[:2], ["a", "a", "b"], np.zeros(3))
    with pytest.raises(CmceError):
        leave_one_out_risk_coverage(x, x, ["a", "a", "b"], np.zeros(3), rates=[1.0])
