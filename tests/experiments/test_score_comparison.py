"""The paired comparison of quality scores (``evaluate --compare-scores``) on synthetic galleries."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.experiments.score_comparison import (
    ScoreComparison,
    compare_quality_scores,
    error_cut_difference,
    render_score_comparison,
)


def _gallery(people: int = 60, seed: int = 0):
    """One gallery entry per person, three queries each; a fifth of the entries are spoiled.

    A query's similarity to its own entry is high unless the entry is spoiled, where a
    random other entry wins. ``oracle`` ranks the spoiled entries first, ``noise`` at random.
    """
    rng = np.random.default_rng(seed)
    g_lab = np.arange(people)
    q_lab = np.repeat(g_lab, 3)
    spoiled = rng.random(people) < 0.2
    sim = rng.uniform(0.0, 0.5, size=(len(q_lab), people))
    sim[np.arange(len(q_lab)), q_lab] = np.where(spoiled[q_lab], 0.3, 0.9)
    for i, lab in enumerate(q_lab):
        if spoiled[lab]:
            sim[i, (lab + 1 + rng.integers(people - 1)) % people] = 0.8
    return sim, q_lab, g_lab, {"oracle": spoiled + 0.01 * rng.random(people), "noise": rng.random(people)}


def test_the_score_that_finds_the_errors_wins_by_more_than_its_interval() -> None:
    sim, q_lab, g_lab, scores = _gallery()
    c = compare_quality_scores(sim, q_lab, g_lab, scores, "oracle", rates=(0.1, 0.2), resamples=300)
    assert c.score == "oracle" and c.others == ("noise",) and c.queries == len(q_lab) and c.errors > 0
    for step in c.steps:
        d, lo, hi = step.minus["noise"]
        assert lo <= d <= hi and lo > 0  # the interval excludes no difference
        assert step.error_cut[0] > 0.3
    # the other way round the same interval falls below zero: the comparison can fail
    worse = compare_quality_scores(sim, q_lab, g_lab, scores, "noise", rates=(0.2,), resamples=300)
    d, lo, hi = worse.steps[0].minus["oracle"]
    assert hi < 0 and d == pytest.approx(-c.steps[1].minus["noise"][0])


def test_a_difference_between_equal_scores_is_zero_within_its_interval() -> None:
    base = np.r_[np.ones(30), np.zeros(10)]
    hits = np.r_[np.ones(35), np.zeros(5)]
    d, lo, hi = error_cut_difference(base, hits, hits, np.arange(40) // 2, resamples=200)
    assert (d, lo, hi) == (0.0, 0.0, 0.0)
    d, lo, hi = error_cut_difference(base, hits, base, np.arange(40) // 2, resamples=200)
    assert d == pytest.approx(0.5) and lo <= d <= hi


def test_round_trip_and_table() -> None:
    sim, q_lab, g_lab, scores = _gallery(seed=1)
    c = compare_quality_scores(sim, q_lab, g_lab, scores, "oracle", rates=(0.05, 0.1), resamples=50)
    assert ScoreComparison.from_dict(c.to_dict()) == c
    table = render_score_comparison(c)
    assert "| rejected | oracle error cut | oracle minus noise |" in table and table.count("\n| ") == 3
    nan = float("nan")
    bare = ScoreComparison.from_dict({"score": "a", "recall_at_1": 1.0, "errors": 0, "queries": 4, "rates": [
        {"rate": 0.1, "error_cut": [nan, nan, nan], "minus": {"b": [nan, nan, nan]}}]})
    assert "nan" not in render_score_comparison(bare) and "| 10% | — | — |" in render_score_comparison(bare)


def test_what_cannot_be_compared_is_refused() -> None:
    sim, q_lab, g_lab, scores = _gallery()
    with pytest.raises(CmceError, match="no score 'learned'.*oracle, noise"):
        compare_quality_scores(sim, q_lab, g_lab, scores, "learned")
    with pytest.raises(CmceError, match="nothing to compare"):
        compare_quality_scores(sim, q_lab, g_lab, {"oracle": scores["oracle"]}, "oracle")


def test_docstring_examples() -> None:
    import doctest

    import cmce.experiments.score_comparison as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 6
