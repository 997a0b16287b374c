"""Answers as the app gives them: outcome counting, margins, curves, the answer rule, doubt marks."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.answers import (
    RIGHT,
    UNKNOWN,
    WRONG,
    AnswerPolicy,
    abstain_lowest,
    accuracy_coverage,
    accuracy_coverage_area,
    answer_counts,
    answer_outcomes,
    capped_rejection,
    choose_answer_rule,
    decide_answer,
    doubt_marks,
    fit_answer_policy,
    policy_features,
    top_matches,
)
from cmce.errors import CmceError


def _naive_outcomes(sim, q_lab, g_lab, thr, removed, blocking, abstain):
    out = []
    for i in range(len(sim)):
        cands = [j for j in range(sim.shape[1]) if not removed[j]]
        if not cands or abstain[i]:
            out.append(UNKNOWN)
            continue
        best = max(cands, key=lambda j: (sim[i, j], -j))
        if sim[i, best] < thr or blocking[best]:
            out.append(UNKNOWN)
        else:
            out.append(RIGHT if g_lab[best] == q_lab[i] else WRONG)
    return np.array(out)


def test_answer_outcomes_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        q, g = rng.integers(1, 12), rng.integers(1, 15)
        sim = rng.uniform(-1, 1, (q, g))
        g_lab = rng.integers(0, 4, g).astype(str)
        q_lab = rng.integers(0, 5, q).astype(str)
        removed, blocking, abstain = rng.random(g) < 0.3, rng.random(g) < 0.2, rng.random(q) < 0.2
        got = answer_outcomes(sim, q_lab, g_lab, 0.1, removed=removed, blocking=blocking, abstain=abstain)
        assert np.array_equal(got, _naive_outcomes(sim, q_lab, g_lab, 0.1, removed, blocking, abstain))


def test_removing_a_mate_hands_the_query_to_someone_else_but_blocking_does_not() -> None:
    sim = np.array([[0.9, 0.6]])
    removed = answer_outcomes(sim, ["a"], ["a", "b"], 0.5, removed=np.array([True, False]))
    blocked = answer_outcomes(sim, ["a"], ["a", "b"], 0.5, blocking=np.array([True, False]))
    assert removed.tolist() == [WRONG] and blocked.tolist() == [UNKNOWN]


def test_margin_is_to_the_best_other_person() -> None:
    sim = np.array([[0.9, 0.85, 0.5, 0.1], [0.2, 0.3, 0.1, 0.0]])
    t = top_matches(sim, ["a", "a", "b", None])
    assert t.position.tolist() == [0, 1]
    assert np.allclose(t.margin, [0.4, 0.2])
    # unlabelled entries are a person each; nothing searchable gives position -1
    t = top_matches(np.array([[0.7, 0.6]]), [None, None])
    assert np.allclose(t.margin, [0.1])
    t = top_matches(np.array([[0.7, 0.6]]), ["a", "b"], searchable=np.array([False, False]))
    assert t.position.tolist() == [-1]


def test_accuracy_coverage_curve_and_area() -> None:
    conf = np.array([0.9, 0.1, 0.5, 0.7])
    correct = np.array([True, False, True, False])
    cov, acc = accuracy_coverage(conf, correct)
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert np.allclose(acc, [1.0, 0.5, 2 / 3, 0.5])
    assert accuracy_coverage_area(conf, correct) == pytest.approx(np.mean([1.0, 0.5, 2 / 3, 0.5]))
    # a perfect ranking beats a reversed one
    assert accuracy_coverage_area(correct.astype(float), correct) > accuracy_coverage_area(-correct.astype(float), correct)


def test_abstain_lowest_counts_and_counts_helper() -> None:
    conf = np.arange(10.0)
    assert abstain_lowest(conf, 0.2).tolist() == [True, True] + [False] * 8
    assert not abstain_lowest(conf, 0.0).any() and abstain_lowest(conf, 1.0).all()
    with pytest.raises(CmceError, match=r"\[0, 1\]"):
        abstain_lowest(conf, 1.5)
    c = answer_counts(np.array([RIGHT, RIGHT, WRONG, UNKNOWN]))
    assert (c["right"], c["wrong"], c["unknown"], c["coverage"]) == (2, 1, 1, 0.75)


def _synthetic(n: int = 4000, seed: int = 0):
    """Queries whose wrong answers depend on similarity and on the top entry's quality."""
    rng = np.random.default_rng(seed)
    sim = rng.uniform(0.2, 0.9, n)
    margin = rng.uniform(0, 0.3, n)
    quality = rng.uniform(0, 1, n)
    logit = -8 * (sim - 0.45) - 6 * margin + 3 * (quality - 0.5)
    wrong = rng.random(n) < 1 / (1 + np.exp(-logit))
    feats = policy_features(sim, margin, np.ones(n), quality, rng.uniform(0, 0.5, n))
    return feats, wrong


def test_answer_policy_learns_the_direction_and_round_trips() -> None:
    feats, wrong = _synthetic()
    p = fit_answer_policy("combined", feats, wrong)
    conf = p.confidence(feats)
    # higher similarity and margin -> more confident; worse entry quality -> less
    coef = dict(zip(p.features, p.coef))
    assert coef["similarity"] < 0 and coef["margin"] < 0 and coef["entry_quality"] > 0
    assert accuracy_coverage_area(conf, ~wrong) > accuracy_coverage_area(feats["similarity"], ~wrong)
    q = AnswerPolicy.from_dict(p.with_threshold(0.5).to_dict())
    assert np.allclose(q.confidence(feats), conf) and q.threshold == 0.5
    assert np.array_equal(q.abstains(feats), conf < 0.5)
    # the similarity rule ranks exactly as the similarity does
    s = fit_answer_policy("similarity", feats, wrong).confidence(feats)
    assert np.array_equal(np.argsort(s, kind="stable"), np.argsort(feats["similarity"], kind="stable"))
    with pytest.raises(CmceError, match="one of"):
        fit_answer_policy("magic", feats, wrong)
    with pytest.raises(CmceError, match="right and wrong"):
        fit_answer_policy("query", feats, np.zeros(len(wrong), bool))


def test_choose_answer_rule_takes_the_gallery_only_when_it_helps() -> None:
    feats, wrong = _synthetic(6000)
    n = len(wrong)
    folds = np.arange(n) % 5
    ids = (np.arange(n) // 3).astype(str)
    conds = np.where(np.arange(n) % 2 == 0, "clean", "mixed")
    chosen, report = choose_answer_rule(feats, wrong, folds, conds, ids, resamples=200)
    assert chosen == "combined"
    assert {d["to"] for d in report["decisions"]} == {"query", "combined"}
    # entry quality that carries nothing: the simpler rule stays
    rng = np.random.default_rng(1)
    noise = dict(feats, entry_quality=rng.uniform(0, 1, n), entry_disagreement=rng.uniform(0, 1, n))
    wrong2 = rng.random(n) < 1 / (1 + np.exp(8 * (feats["similarity"] - 0.45) + 6 * feats["margin"]))
    chosen, _ = choose_answer_rule(noise, wrong2, folds, conds, ids, resamples=200)
    assert chosen in ("similarity", "query")


def test_decide_answer_says_why() -> None:
    feats, wrong = _synthetic()
    policy = fit_answer_policy("combined", feats, wrong).with_threshold(0.5)
    keys = ["a", "b"]
    assert decide_answer([], [], [], threshold=0.3).kind == "unknown"
    low = decide_answer([0.2, 0.1], ["a", "b"], keys, threshold=0.3)
    assert low.kind == "unknown" and "threshold" in low.reason
    blocked = decide_answer([0.8, 0.2], ["a", "b"], keys, threshold=0.3, blocked=True)
    assert blocked.kind == "doubtful" and blocked.label == "a" and "rejected photo of a" in blocked.reason
    sure = decide_answer([0.85, 0.2], ["a", "b"], keys, threshold=0.3, policy=policy, entry_quality=0.0)
    assert sure.kind == "match" and sure.label == "a" and sure.confidence > 0.5
    unsure = decide_answer([0.36, 0.35], ["a", "b"], keys, threshold=0.3, policy=policy, entry_quality=1.0)
    assert unsure.kind == "unsure" and unsure.confidence < 0.5
    doubtful = decide_answer([0.36, 0.35], ["a", "b"], keys, threshold=0.3, policy=policy, entry_quality=1.0,
                             doubtful=True)
    assert doubtful.kind == "doubtful" and "doubtful photo of a" in doubtful.reason


def test_doubt_marks_and_the_cap_on_unfamiliar_galleries() -> None:
    familiar = doubt_marks(np.r_[np.full(4, 0.5), np.full(36, 0.01)], 0.07, 0.10)
    assert familiar.over_threshold == 4 and not familiar.unfamiliar
    assert np.array_equal(capped_rejection(np.r_[np.full(4, 0.5), np.full(36, 0.01)], familiar, 0.10),
                          familiar.doubtful)
    q = np.r_[np.linspace(0.9, 0.2, 34), np.full(4, 0.01)]
    crops = doubt_marks(q, 0.07, 0.10)
    assert crops.unfamiliar and crops.over_threshold == 34
    assert "34 of 38 faces" in crops.note and "still searched" in crops.note
    capped = capped_rejection(q, crops, 0.10)
    assert capped.sum() == 4 and capped[:4].all()  # the calibrated share, worst first
    assert doubt_marks(np.zeros(0), 0.07, 0.1).note == ""
