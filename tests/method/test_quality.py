"""The learned quality score: its regression, its features, and how bundles carry it."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.method.bundle_model import Calibration
from cmce.method.ensemble import QUALITY_SCORES, QualityModel
from cmce.method.quality import (
    FEATURE_GROUPS,
    QualityPredictor,
    fit_logistic,
    fit_quality_predictor,
    predictor_features,
)
from cmce.metrics.retrieval import entry_misses, top1_hits


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_fit_logistic_recovers_a_known_model_and_is_optimal() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 3))
    beta, b0 = np.array([1.5, -2.0, 0.0]), -0.5
    y = (rng.random(20000) < 1 / (1 + np.exp(-(x @ beta + b0)))).astype(float)
    coef, icpt = fit_logistic(x, y, np.ones(len(y)), l2=0.0)
    np.testing.assert_allclose(coef, beta, atol=0.08)
    assert abs(icpt - b0) < 0.08
    # with a penalty: the penalised gradient vanishes at the solution
    coef, icpt = fit_logistic(x, y, np.ones(len(y)), l2=50.0)
    p = 1 / (1 + np.exp(-(x @ coef + icpt)))
    np.testing.assert_allclose(x.T @ (p - y) + 50.0 * coef, 0.0, atol=1e-6)
    assert abs(np.sum(p - y)) < 1e-6


def test_soft_labels_equal_expanded_binary_rows() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 2))
    queries = rng.integers(1, 4, 300).astype(float)
    misses = np.array([rng.integers(0, q + 1) for q in queries]).astype(float)
    soft = fit_logistic(x, misses / queries, queries, l2=1.0)
    rows = np.concatenate([x, x])
    hard = fit_logistic(rows, np.r_[np.ones(300), np.zeros(300)], np.r_[misses, queries - misses], l2=1.0)
    np.testing.assert_allclose(soft[0], hard[0], atol=1e-8)
    assert abs(soft[1] - hard[1]) < 1e-8


def test_fit_logistic_refuses_bad_inputs() -> None:
    with pytest.raises(CmceError, match="targets in"):
        fit_logistic(np.zeros((3, 1)), np.array([0.0, 2.0, 1.0]), np.ones(3))
    with pytest.raises(CmceError, match="x \\(N, F\\)"):
        fit_logistic(np.zeros(3), np.zeros(3), np.ones(3))


def _entries(rng: np.random.Generator, g: int = 400, m: int = 3, d: int = 16):
    """Members that agree on good entries; on bad ones each member drifts to its own noise."""
    base = _unit(rng.standard_normal((g, d)))
    bad = rng.random(g) < 0.3
    vecs = []
    for _ in range(m):
        noise = _unit(rng.standard_normal((g, d)))
        mix = np.where(bad[:, None], 0.9, 0.15)
        vecs.append(_unit((1 - mix) * base + mix * noise))
    prob = np.where(bad, 0.99, 0.99999).astype(np.float32)
    total = np.sum(vecs, axis=0)
    unc = (1 - ((total * total).sum(1) - m) / (m * (m - 1))).astype(np.float32)
    queries = np.full(g, 2.0)
    misses = np.where(bad, rng.binomial(2, 0.6, g), rng.binomial(2, 0.02, g)).astype(float)
    return vecs, prob, unc, misses, queries, bad


def test_predictor_learns_which_entries_fail_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    vecs, prob, unc, misses, queries, bad = _entries(rng)
    qp = fit_quality_predictor(("a", "b", "query"), vecs, None, prob, unc, misses, queries)
    assert qp.groups == FEATURE_GROUPS and len(qp.coef) == 1 + 1 + 3 + 3
    # new entries from the same process: the predicted chance of a miss ranks the bad ones first
    vecs2, prob2, unc2, _, _, bad2 = _entries(np.random.default_rng(3))
    p = qp.predict(vecs2, None, prob2, unc2)
    assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    order = np.argsort(-p)
    assert bad2[order[: int(bad2.sum())]].mean() > 0.9
    assert p[bad2].mean() > 0.4 > 0.1 > p[~bad2].mean()
    again = QualityPredictor.from_dict(qp.to_dict())
    assert again == qp
    np.testing.assert_array_equal(again.predict(vecs2, None, prob2, unc2), p)


def test_missing_members_and_nan_disagreement_are_neutral() -> None:
    rng = np.random.default_rng(4)
    vecs, prob, unc, misses, queries, _ = _entries(rng)
    qp = fit_quality_predictor(("a", "b", "query"), vecs, None, prob, unc, misses, queries)
    present = [np.ones(len(prob), bool), np.ones(len(prob), bool), np.zeros(len(prob), bool)]
    present[2][:10] = True
    other = [vecs[0], vecs[1], _unit(rng.standard_normal(vecs[2].shape))]
    a = qp.predict(vecs, present, prob, unc)
    b = qp.predict(other, present, prob, unc)
    # entries lacking the third member do not depend on what its (meaningless) rows hold
    np.testing.assert_array_equal(a[10:], b[10:])
    assert not np.array_equal(a[:10], b[:10])
    nan_u = unc.copy()
    nan_u[:5] = np.nan
    assert np.isfinite(qp.predict(vecs, None, prob, nan_u)).all()


def test_predictor_and_feature_errors_say_what_is_valid() -> None:
    rng = np.random.default_rng(5)
    vecs, prob, unc, misses, queries, _ = _entries(rng)
    with pytest.raises(CmceError, match="valid: disagreement, doubt, pairs, typicality"):
        predictor_features(vecs, None, prob, unc, [], groups=("sharpness",))
    qp = fit_quality_predictor(("a", "b", "query"), vecs, None, prob, unc, misses, queries)
    with pytest.raises(CmceError, match="learned for members"):
        qp.predict(vecs[:2], None, prob, unc)
    with pytest.raises(CmceError, match="too few"):
        fit_quality_predictor(("a", "b", "query"), vecs, None, prob, unc, np.zeros_like(misses), queries)
    with pytest.raises(CmceError, match="malformed quality predictor"):
        QualityPredictor.from_dict({"members": ["a"]})


def test_quality_model_learned_kind_and_calibration() -> None:
    rng = np.random.default_rng(6)
    vecs, prob, unc, misses, queries, bad = _entries(rng)
    qp = fit_quality_predictor(("a", "b", "query"), vecs, None, prob, unc, misses, queries)
    with pytest.raises(CmceError, match="needs a predictor"):
        QualityModel("learned")
    qm = QualityModel.fit("combined", unc, prob, predictor=qp)
    assert qm.kinds == QUALITY_SCORES
    learned = qm.with_kind("learned")
    with pytest.raises(CmceError, match="members' vectors"):
        learned.score(unc, prob)
    np.testing.assert_array_equal(learned.score(unc, prob, vecs), qp.predict(vecs, None, prob, unc))
    assert QualityModel.from_dict(learned.to_dict()) == learned
    # a bundle without a predictor (older bundles) offers the other scores, and says so
    old = Calibration(quality=QualityModel.fit("combined", unc, prob))
    assert "learned" not in old.quality.kinds and "predictor" not in old.quality.to_dict()
    with pytest.raises(CmceError, match="choose one of disagreement, detection, combined"):
        old.quality_model("learned")
    assert Calibration(quality=learned).quality_model("combined").kind == "combined"


def test_entry_misses_matches_a_loop() -> None:
    rng = np.random.default_rng(7)
    g_lab = np.array([0, 1, 2, 3, 1])
    q_lab = rng.integers(0, 5, 60)
    sim = rng.standard_normal((60, 5))
    misses, queries = entry_misses(sim, q_lab, g_lab)
    for j, lab in enumerate(g_lab):
        mine = np.flatnonzero(q_lab == lab)
        assert queries[j] == len(mine)
        assert misses[j] == sum(g_lab[np.argmax(sim[i])] != lab for i in mine)
    hits = top1_hits(sim, q_lab, g_lab)
    assert misses[0] == np.sum(hits[q_lab == 0] == 0)
