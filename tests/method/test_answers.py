"""Answers as the app gives them: outcome counting, margins, curves, the answer rule, doubt marks."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.answer_metrics import (
    RIGHT,
    UNKNOWN,
    WRONG,
    abstain_lowest,
    accuracy_coverage,
    accuracy_coverage_area,
    answer_counts,
    answer_outcomes,
    top_matches,
)
from cmce.errors import CmceError
from cmce.method.answer_rules import AnswerPolicy, choose_answer_rule, fit_answer_policy, policy_features
from cmce.method.answers import capped_rejection, decide_answer, doubt_marks


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


def test_cohort_score_of_a_hit_list_equals_the_matrix_version() -> None:
    from cmce.answer_metrics import cohort_normalised, cohort_score

    rng = np.random.default_rng(3)
    sim = rng.uniform(-0.2, 0.9, (30, 80))
    g_lab = [f"p{j % 60}" for j in range(80)]  # some people have two entries
    z = cohort_normalised(sim, g_lab, 20)
    for i in range(len(sim)):
        order = np.argsort(-sim[i], kind="stable")
        assert cohort_score(sim[i][order], [g_lab[j] for j in order], 20) == pytest.approx(z[i])
    # the best person's other entries are not its cohort: a twin of the best match changes nothing
    twin = np.concatenate([sim, sim[:, :1] - 1e-3], axis=1)
    np.testing.assert_allclose(cohort_normalised(twin, [*g_lab, g_lab[0]], 20)[sim.argmax(1) == 0],
                               z[sim.argmax(1) == 0])
    # too few other people: no normalised score (the raw threshold applies)
    assert np.isnan(cohort_normalised(sim[:, :15], g_lab[:15], 20)).all()
    assert np.isnan(cohort_score([0.9, 0.3], ["a", "b"], 5)) and np.isnan(cohort_score([], [], 5))


def test_stranger_best_takes_the_query_person_out() -> None:
    from cmce.answer_metrics import stranger_best

    sim = np.array([[0.9, 0.4, 0.2], [0.1, 0.8, 0.7]])
    np.testing.assert_allclose(stranger_best(sim, ["a", "b"], ["a", "b", "c"]), [0.4, 0.7])
    sim = np.array([[0.9, 0.5, 0.3, 0.1], [0.2, 0.8, 0.6, 0.4]])
    z = stranger_best(sim, ["a", "b"], list("abcd"), cohort=2)
    # query a without its person: best 0.5 (b), cohort c, d = 0.3, 0.1; query b: best 0.6, cohort 0.2, 0.4
    np.testing.assert_allclose(z, [(0.5 - 0.2) / 0.1, (0.6 - 0.3) / 0.1])
    assert np.isnan(stranger_best(sim, ["a", "b"], list("abcd"), cohort=3)).all()


def test_unknown_mask_uses_the_normalised_score_where_there_is_one() -> None:
    from cmce.answer_metrics import answer_outcomes, unknown_mask

    raw = np.array([0.2, 0.2, 0.9, 0.9])
    z = np.array([5.0, np.nan, 1.0, np.nan])
    assert unknown_mask(raw, z, 0.5, 3.0).tolist() == [False, True, True, False]
    assert unknown_mask(raw, z, 0.5, None).tolist() == [True, True, False, False]
    # answer_outcomes applies it over the searchable gallery: a clear winner with a low raw score is named
    rng = np.random.default_rng(0)
    sim = rng.uniform(0.0, 0.1, (2, 40))
    sim[0, 0], sim[1, 1] = 0.3, 0.11
    g_lab = [f"p{j}" for j in range(40)]
    assert answer_outcomes(sim, ["p0", "p1"], g_lab, 0.5).tolist() == [UNKNOWN, UNKNOWN]
    assert answer_outcomes(sim, ["p0", "p1"], g_lab, 0.5, cohort=20, norm_threshold=4.0).tolist() == [RIGHT, UNKNOWN]


def test_decide_answer_with_the_normalised_threshold_and_its_round_trip() -> None:
    from cmce.method.bundle_model import Calibration
    from cmce.method.unknown import CohortNorm

    norm = CohortNorm(3, {"ensemble": 2.5}, 0.05)
    keys = ["a", "b", "c", "d", "e"]
    stands_out = decide_answer([0.45, 0.2, 0.18, 0.16, 0.1], keys, keys, threshold=0.5, norm=norm)
    assert stands_out.kind == "match" and stands_out.label == "a"
    crowded = decide_answer([0.95, 0.94, 0.93, 0.92, 0.1], keys, keys, threshold=0.5, norm=norm)
    assert crowded.kind == "unknown" and "does not stand out from the next 3 people" in crowded.reason
    # too few hits for the cohort, or a view without a normalised threshold: the raw threshold
    assert decide_answer([0.45, 0.2], keys[:2], keys[:2], threshold=0.5, norm=norm).kind == "unknown"
    assert decide_answer([0.95, 0.93, 0.92, 0.9], keys[:4], keys[:4], threshold=0.5, norm=norm, view="query").kind == "match"
    cal = Calibration(similarity_thresholds={"ensemble": 0.5}, cohort_norm=norm)
    assert Calibration.from_dict(cal.to_dict()).cohort_norm == norm
    assert Calibration.from_dict(Calibration().to_dict()).cohort_norm is None
    with pytest.raises(CmceError, match="cohort"):
        CohortNorm(1, {})


def test_the_coverage_guard_keeps_each_calibration_gallery_within_its_share() -> None:
    from cmce.experiments.answer_calibration import fit_coverage_guard

    rng = np.random.default_rng(0)
    # three galleries: clean (doubt 0.05), mixed (0.2) and lowres (0.4), where a person's own
    # photo stands out less; one noisy clean fold (doubt 0.06) stands out even less than mixed
    spec = [("clean/0", 0.05, 8.0), ("clean/1", 0.06, 4.0), ("mixed/0", 0.2, 5.5), ("lowres/0", 0.4, 3.0)]
    z = np.concatenate([rng.normal(mu, 1.5, 500) for _, _, mu in spec])
    doubt = np.repeat([d for _, d, _ in spec], 500)
    groups = np.repeat([g for g, _, _ in spec], 500)
    shares = [0.08, 0.08, 0.18, 0.18]  # np.unique order: clean/0, clean/1, lowres/0, mixed/0
    d, caps, points = fit_coverage_guard(doubt, z, groups, shares)
    assert np.round(d, 6).tolist() == [0.05, 0.06, 0.2, 0.4]
    assert list(caps) == sorted(caps, reverse=True)  # a poorer-looking gallery never gets a higher cap
    for g, share in zip(np.unique(groups), shares):
        sel = groups == g
        cap = np.interp(doubt[sel][0], d, caps)
        assert (z[sel] < cap).mean() <= share + 1e-9  # within its share
    # the running minimum: mixed inherits the noisy clean fold's lower cap
    by = {p["group"]: p["cap"] for p in points}
    assert caps[2] == pytest.approx(min(by["clean/1"], by["mixed/0"]))
    # too few queries place no point
    assert fit_coverage_guard(doubt[:10], z[:10], groups[:10], [0.08])[0].size == 0


def test_the_guard_places_each_kind_by_its_worst_fold_with_room_for_a_shifted_doubt() -> None:
    from cmce.experiments.answer_calibration import fit_coverage_guard, guard_doubt_margin

    rng = np.random.default_rng(1)
    # two kinds, two folds each; lowres's second fold shows more doubt and needs the lower cap
    spec = [("clean/0", "clean", 0.010, 8.0), ("clean/1", "clean", 0.012, 7.5),
            ("lowres/0", "lowres", 0.120, 5.5), ("lowres/1", "lowres", 0.140, 3.5)]
    z = np.concatenate([rng.normal(mu, 1.0, 400) for *_, mu in spec])
    doubt = np.repeat([d for _, _, d, _ in spec], 400)
    groups = np.repeat([g for g, *_ in spec], 400)
    kinds = np.repeat([k for _, k, *_ in spec], 400)
    shares = [0.08, 0.08, 0.18, 0.18]
    margin = guard_doubt_margin(doubt, groups, kinds)
    assert margin == pytest.approx(0.14 / 0.12 - 1)  # clean's doubts sit under the floor
    d, caps, points = fit_coverage_guard(doubt, z, groups, shares, kinds, margin)
    assert [p["group"] for p in points] == ["clean", "lowres"] and len(points[1]["folds"]) == 2
    worst = min(p["cap"] for p in points[1]["folds"])
    assert d[1] == pytest.approx(0.12 / (1 + margin)) and caps[1] == pytest.approx(worst)
    # a gallery whose doubt reads lower than any lowres fold (other networks) still gets the worst
    # fold's cap, and that fold's queries stay within their share
    assert np.interp(0.105, d, caps) == pytest.approx(worst)
    sel = groups == "lowres/1"
    assert (z[sel] < np.interp(0.105, d, caps)).mean() <= 0.18 + 1e-9
    # pooled points (no kinds) would have given that gallery a higher cap
    d0, caps0, _ = fit_coverage_guard(doubt, z, kinds, [0.08, 0.18])
    assert np.interp(0.105, d0, caps0) > worst + 0.5


def test_the_guard_lowers_the_threshold_on_a_poor_gallery_and_says_so() -> None:
    from cmce.method.bundle_model import Calibration
    from cmce.method.unknown import CohortNorm, gallery_doubt, unknown_note

    norm = CohortNorm(3, {"ensemble": 6.0}, 0.05, guard_doubt=(0.1, 0.4), guard={"ensemble": (6.0, 2.0)},
                      guard_share={"clean": 0.08, "any": 0.18})
    assert norm.threshold("ensemble", 800, 0.05) == 6.0 and norm.threshold("ensemble", 800, 0.4) == 2.0
    assert norm.threshold("ensemble", 800, float("nan")) == 6.0 and norm.threshold("query", 800, 0.4) is None
    assert not norm.relaxed("ensemble", 800, 0.1) and norm.relaxed("ensemble", 800, 0.3)
    keys = ["a", "b", "c", "d", "e"]
    scores = [0.6, 0.3, 0.25, 0.2, 0.1]  # 8.6 spreads above the next three people
    weak = [0.4, 0.3, 0.25, 0.2, 0.1]  # 3.7 spreads
    assert decide_answer(weak, keys, keys, threshold=0.9, norm=norm, gallery_doubt=0.05).kind == "unknown"
    named = decide_answer(weak, keys, keys, threshold=0.9, norm=norm, gallery_doubt=0.4)
    assert named.kind == "match" and named.norm_threshold == 2.0
    low = decide_answer([0.31, 0.3, 0.25, 0.2, 0.1], keys, keys, threshold=0.9, norm=norm, gallery_doubt=0.4)
    assert low.kind == "unknown" and "lowered for this gallery's poor photos" in low.reason
    assert decide_answer(scores, keys, keys, threshold=0.9, norm=norm, gallery_doubt=0.05).kind == "match"
    assert "strangers are named more often" in unknown_note(norm, "ensemble", 800, 0.4)
    assert unknown_note(norm, "ensemble", 800, 0.05) == "" and unknown_note(norm, "ensemble", 3, 0.4) == ""
    assert unknown_note(None, "ensemble", 800, 0.4) == ""
    assert gallery_doubt(np.array([0.1, 0.3, np.nan])) == pytest.approx(0.2) and np.isnan(gallery_doubt(np.array([])))
    cal = Calibration(cohort_norm=norm)
    assert Calibration.from_dict(cal.to_dict()).cohort_norm == norm
    with pytest.raises(CmceError, match="guard_doubt must ascend"):
        CohortNorm(3, {"ensemble": 6.0}, guard_doubt=(0.4, 0.1), guard={"ensemble": (6.0, 2.0)})


def test_unknown_norm_follows_the_callers_choice() -> None:
    from cmce.method.unknown import CohortNorm, unknown_norm

    norm = CohortNorm(50, {"ensemble": 5.0})
    assert unknown_norm(norm, None) is norm and unknown_norm(norm, "normalised") is norm
    assert unknown_norm(norm, "similarity") is None and unknown_norm(None, "normalised") is None
    with pytest.raises(CmceError, match="unknown_by must be one of normalised, strict, similarity"):
        unknown_norm(norm, "z")
    # strict: the normalised threshold without its coverage guard
    guarded = CohortNorm(50, {"ensemble": 5.0}, guard_doubt=(0.1, 0.5), guard={"ensemble": (5.0, 2.0)})
    assert unknown_norm(guarded, None).threshold("ensemble", 800, 0.5) == 2.0
    assert unknown_norm(guarded, "strict").threshold("ensemble", 800, 0.5) == 5.0
    assert unknown_norm(None, "strict") is None


def test_the_normalised_threshold_follows_the_gallery_size() -> None:
    from cmce.method.bundle_model import Calibration
    from cmce.method.unknown import CohortNorm

    norm = CohortNorm(3, {"ensemble": 3.0}, 0.05, (10, 1000), {"ensemble": (2.0, 3.0)})
    assert norm.threshold("ensemble", 100) == pytest.approx(2.5) and norm.threshold("query", 100) is None
    keys = ["a", "b", "c", "d", "e"]
    scores = [0.6, 0.3, 0.25, 0.2, 0.1]  # 8.0 spreads above the next three people's 0.25 +- 0.041
    z = (0.6 - 0.25) / np.std([0.3, 0.25, 0.2])
    between = CohortNorm(3, {"ensemble": z + 1}, 0.05, (10, 1000), {"ensemble": (z - 1, z + 1)})
    assert decide_answer(scores, keys, keys, threshold=0.9, norm=between, gallery_size=10).kind == "match"
    assert decide_answer(scores, keys, keys, threshold=0.9, norm=between, gallery_size=1000).kind == "unknown"
    assert decide_answer(scores, keys, keys, threshold=0.9, norm=between).kind == "unknown"  # the calibration size
    cal = Calibration(cohort_norm=norm)
    assert Calibration.from_dict(cal.to_dict()).cohort_norm == norm
    with pytest.raises(CmceError, match="sizes must ascend"):
        CohortNorm(3, {"ensemble": 3.0}, 0.05, (1000, 10), {"ensemble": (2.0, 3.0)})
    with pytest.raises(CmceError, match="one threshold per size"):
        CohortNorm(3, {"ensemble": 3.0}, 0.05, (10, 1000), {"ensemble": (2.0,)})


def test_thresholds_by_size_name_the_same_share_of_strangers_at_every_size() -> None:
    from cmce.experiments.answer_calibration import _thresholds_by_size

    rng = np.random.default_rng(1)
    n = 4000
    cond = np.array(["clean"] * n)
    feats = {"gallery_size": np.full(n, 700.0),
             "stranger_z@60": rng.normal(2.0, 1.0, n), "stranger_z@240": rng.normal(2.5, 1.0, n),
             "stranger_z@480": np.full(n, np.nan)}  # too few strangers at 480: left out

    def pooled(view):
        return feats, np.zeros(n, bool), np.zeros(n), cond, np.arange(n)

    sizes, by_size, aims = _thresholds_by_size(pooled, {"ensemble": 4.0}, 0.05)
    assert sizes == (60, 240, 700) and by_size["ensemble"][-1] == 4.0
    assert aims == {"60": 0.05, "240": 0.05, "700": 0.05}
    assert by_size["ensemble"][0] == pytest.approx(np.quantile(feats["stranger_z@60"], 0.95))
    assert by_size["ensemble"][1] == pytest.approx(np.quantile(feats["stranger_z@240"], 0.95))


def test_the_card_says_when_the_served_rule_overrides_the_cross_validated_choice() -> None:
    from cmce.method.card import _answer_lines

    cal = {"answer_rule": "query", "answer_policies": {"ensemble": {"query": {"threshold": 0.2}}}}
    train = {"answers": {"queries": {"clean": 1, "mixed": 2},
                         "decisions": [{"from": "query", "to": "combined", "accuracy_gain": 0.006, "ci95": [0.002, 0.011]}]}}
    plain = _answer_lines(cal, train)[0]
    assert "chosen by cross-validation" in plain and "served instead" not in plain
    train["answer_rule_from"] = {"override": {"chosen_by_cross_validation": "combined", "served": "query",
                                              "because": "it did not beat `query` on held-out identities"}}
    line = _answer_lines(cal, train)[0]
    assert "chose `combined`" in line and "served instead: `query`, because it did not beat" in line


def test_the_rule_only_adds_what_the_guard_leaves_of_the_cap() -> None:
    import doctest

    from cmce.experiments import answer_calibration
    from cmce.experiments.answer_calibration import capped_threshold

    rng = np.random.default_rng(3)
    conf = rng.uniform(0, 1, 1000)
    below = np.zeros(1000, bool)
    below[:50] = True  # the threshold said "Unknown" to 5% of this calibration gallery
    cond = np.array(["lowres"] * 1000)
    caps = {"clean": 0.10, "any": 0.20}
    free = capped_threshold(conf, below, cond, 0.9, caps)
    held = capped_threshold(conf, below, cond, 0.9, caps, reserved={"clean": 0.08, "any": 0.18})
    assert ((conf < free) & ~below).sum() == 150  # fills the cap up to 20%
    assert ((conf < held) & ~below).sum() <= 20  # only the 2 points above the guard's 18%
    assert doctest.testmod(answer_calibration).failed == 0
