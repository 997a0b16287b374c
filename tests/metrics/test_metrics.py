"""Tests for cmce.metrics: vectorised metrics vs naive loop references."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.metrics import intervals as intervals_module
from cmce.metrics import rejection as rejection_module
from cmce.metrics import retrieval as retrieval_module
from cmce.metrics import uncertainty as uncertainty_module
from cmce.metrics import verification as verification_module
from cmce.metrics.intervals import relative_error_reduction
from cmce.metrics.rejection import (
    gallery_rejection_mask,
    rejection_curve,
    threshold_for_rate,
)
from cmce.metrics.retrieval import mean_average_precision, recall_at_k
from cmce.metrics.uncertainty import mean_pairwise_cosine_distance
from cmce.metrics.verification import (
    best_verification_accuracy,
    tar_at_far,
    threshold_at_far,
    verification_scores,
)

# (Q, G) sizes, including degenerate ones
SIZES = [(1, 1), (1, 6), (4, 3), (7, 11), (20, 30), (33, 17)]
SEEDS = [0, 1, 2]


# --------------------------------------------------------------------------- #
# random data with many ties
# --------------------------------------------------------------------------- #


def _random_retrieval(seed: int, q: int, g: int):
    rng = np.random.default_rng(seed * 1000 + q * 31 + g)
    sim = rng.integers(0, 5, size=(q, g)) / 4.0  # few distinct values -> many ties
    n_labels = max(2, g // 2)
    ql = rng.integers(0, n_labels + 2, size=q)  # some labels never in the gallery
    gl = rng.integers(0, n_labels, size=g)
    mask = rng.random(g) < 0.7
    return sim, ql, gl, mask


def _random_pairs(seed: int, n: int):
    rng = np.random.default_rng(seed * 7 + n)
    scores = np.round(rng.normal(size=n), 1)  # rounded -> ties
    same = rng.random(n) < 0.4
    return scores, same


# --------------------------------------------------------------------------- #
# naive references
# --------------------------------------------------------------------------- #


def _kept(g: int, mask):
    return list(range(g)) if mask is None else [i for i in range(g) if mask[i]]


def _ranked(sim_row, cols):
    return sorted(cols, key=lambda c: (-sim_row[c], c))


def naive_recall(sim, ql, gl, ks, mask=None):
    cols = _kept(sim.shape[1], mask)
    hits = {k: 0 for k in ks}
    counted = 0
    for q in range(sim.shape[0]):
        if not any(gl[c] == ql[q] for c in cols):
            continue
        counted += 1
        ranked = _ranked(sim[q], cols)
        for k in ks:
            if any(gl[c] == ql[q] for c in ranked[:k]):
                hits[k] += 1
    return {k: (hits[k] / counted if counted else math.nan) for k in ks}


def naive_map(sim, ql, gl, mask=None):
    cols = _kept(sim.shape[1], mask)
    aps = []
    for q in range(sim.shape[0]):
        ranked = _ranked(sim[q], cols)
        rel = [gl[c] == ql[q] for c in ranked]
        if not any(rel):
            continue
        found, total = 0, 0.0
        for i, r in enumerate(rel, start=1):
            if r:
                found += 1
                total += found / i
        aps.append(total / sum(rel))
    return sum(aps) / len(aps) if aps else math.nan


def naive_verification(sim, ql, gl, mask=None):
    cols = _kept(sim.shape[1], mask)
    scores, same = [], []
    for q in range(sim.shape[0]):
        for c in cols:
            scores.append(sim[q, c])
            same.append(ql[q] == gl[c])
    return np.array(scores, dtype=float), np.array(same, dtype=bool)


def naive_threshold(scores, same, far):
    imp = [s for s, y in zip(scores, same) if not y]
    candidates = {-math.inf}
    for s in scores:
        candidates.add(float(s))
        candidates.add(float(np.nextafter(s, np.inf)))
    for t in sorted(candidates):
        if sum(1 for s in imp if s >= t) / len(imp) <= far:
            return t
    raise AssertionError("unreachable")


def naive_tar(scores, same, far):
    t = naive_threshold(scores, same, far)
    gen = [s for s, y in zip(scores, same) if y]
    return sum(1 for s in gen if s >= t) / len(gen) if gen else math.nan


def naive_best_acc(scores, same):
    best_acc, best_t = -1.0, None
    for t in sorted(set(float(s) for s in scores)) + [math.inf]:
        acc = sum((s >= t) == y for s, y in zip(scores, same)) / len(scores)
        if acc > best_acc:
            best_acc, best_t = acc, t
    return best_acc, best_t


def naive_reject_count(rate, n):
    # round half up, written differently from the library on purpose
    x = rate * n
    lo = math.floor(x)
    return lo + 1 if x - lo >= 0.5 else lo


def naive_rejection_order(u):
    return sorted(range(len(u)), key=lambda i: (-u[i], i))


def naive_rejection_curve(hits, scores, rates):
    order = naive_rejection_order(scores)
    out = []
    for r in rates:
        n_rej = naive_reject_count(r, len(hits))
        kept = order[n_rej:]
        out.append(sum(hits[i] for i in kept) / len(kept) if kept else math.nan)
    return np.array(out)


def naive_mask(u, rate):
    rejected = set(naive_rejection_order(u)[: naive_reject_count(rate, len(u))])
    return np.array([i not in rejected for i in range(len(u))])


def naive_threshold_for_rate(u, rate):
    d = sorted(u, reverse=True)
    n = naive_reject_count(rate, len(u))
    return -math.inf if n == len(u) else d[n]


def naive_mean_pairwise(e):
    out = []
    for group in e:
        vs = [v / np.linalg.norm(v) for v in group]
        dists = [
            1.0 - float(np.dot(vs[i], vs[j]))
            for i in range(len(vs))
            for j in range(i + 1, len(vs))
        ]
        out.append(sum(dists) / len(dists) if dists else 0.0)
    return np.array(out)


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# --------------------------------------------------------------------------- #
# docstrings
# --------------------------------------------------------------------------- #


def test_docstring_examples():
    attempted = 0
    for module in (retrieval_module, verification_module, rejection_module, intervals_module, uncertainty_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 10


# --------------------------------------------------------------------------- #
# retrieval
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q,g", SIZES)
@pytest.mark.parametrize("use_mask", [False, True])
def test_recall_matches_naive(seed, q, g, use_mask):
    sim, ql, gl, mask = _random_retrieval(seed, q, g)
    mask = mask if use_mask else None
    ks = (1, 2, 5, 100)
    got = recall_at_k(sim, ql, gl, ks=ks, gallery_mask=mask)
    want = naive_recall(sim, ql, gl, ks, mask)
    assert list(got) == list(ks)
    for k in ks:
        assert _same_float(got[k], want[k]), (k, got, want)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q,g", SIZES)
@pytest.mark.parametrize("use_mask", [False, True])
def test_map_matches_naive(seed, q, g, use_mask):
    sim, ql, gl, mask = _random_retrieval(seed, q, g)
    mask = mask if use_mask else None
    assert _same_float(mean_average_precision(sim, ql, gl, mask), naive_map(sim, ql, gl, mask))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q,g", SIZES)
def test_mask_equals_removing_columns(seed, q, g):
    sim, ql, gl, mask = _random_retrieval(seed, q, g)
    masked = recall_at_k(sim, ql, gl, ks=(1, 3), gallery_mask=mask)
    removed = recall_at_k(sim[:, mask], ql, gl[mask], ks=(1, 3))
    for k in (1, 3):
        assert _same_float(masked[k], removed[k])
    assert _same_float(
        mean_average_precision(sim, ql, gl, mask),
        mean_average_precision(sim[:, mask], ql, gl[mask]),
    )


def test_recall_ties_break_by_lower_index():
    sim = np.array([[0.5, 0.5, 0.5]])
    assert recall_at_k(sim, [1], [0, 1, 0], ks=(1, 2)) == {1: 0.0, 2: 1.0}
    assert recall_at_k(sim, [0], [0, 1, 0], ks=(1,)) == {1: 1.0}


def test_recall_string_labels_and_large_k():
    sim = np.array([[0.9, 0.1], [0.2, 0.8]])  # each query ranks the other name first
    got = recall_at_k(sim, np.array(["bob", "ann"]), np.array(["ann", "bob"]), ks=(1, 50))
    assert got == {1: 0.0, 50: 1.0}


def test_recall_and_map_perfect_and_worst():
    sim = np.eye(4)
    labels = np.arange(4)
    assert recall_at_k(sim, labels, labels, ks=(1,)) == {1: 1.0}
    assert mean_average_precision(sim, labels, labels) == 1.0
    assert recall_at_k(-sim, labels, labels, ks=(1, 3, 4)) == {1: 0.0, 3: 0.0, 4: 1.0}
    assert mean_average_precision(-sim, labels, labels) == pytest.approx(0.25)


def test_retrieval_nan_when_nothing_counts():
    sim = np.ones((2, 3))
    ql, gl = np.array([0, 1]), np.array([0, 1, 1])
    all_out = np.zeros(3, dtype=bool)
    got = recall_at_k(sim, ql, gl, ks=(1, 5), gallery_mask=all_out)
    assert list(got) == [1, 5] and all(math.isnan(v) for v in got.values())
    assert math.isnan(mean_average_precision(sim, ql, gl, all_out))
    # no query at all, no gallery at all, no shared label
    assert math.isnan(recall_at_k(np.zeros((0, 3)), [], gl, ks=(1,))[1])
    assert math.isnan(recall_at_k(np.zeros((2, 0)), ql, [], ks=(1,))[1])
    assert math.isnan(mean_average_precision(np.zeros((0, 3)), [], gl))
    assert math.isnan(mean_average_precision(sim, [7, 8], gl))


@pytest.mark.parametrize(
    "sim,ql,gl",
    [
        (np.zeros(3), [0], [0, 1, 2]),  # 1-D similarity
        (np.zeros((1, 2, 3)), [0], [0, 1]),  # 3-D
        (np.zeros((2, 3)), [0], [0, 1, 2]),  # wrong Q
        (np.zeros((2, 3)), [0, 1], [0, 1]),  # wrong G
        (np.zeros((2, 3)), [[0], [1]], [0, 1, 2]),  # 2-D labels
        (np.array([[0.0, np.nan]]), [0], [0, 1]),  # NaN
        (np.array([[0.0, np.inf]]), [0], [0, 1]),  # inf
        (np.array([["a", "b"]]), [0], [0, 1]),  # not numeric
        (np.array([[True, False]]), [0], [0, 1]),  # bool
    ],
)
def test_retrieval_invalid_inputs_raise(sim, ql, gl):
    for fn in (
        lambda: recall_at_k(sim, ql, gl),
        lambda: mean_average_precision(sim, ql, gl),
        lambda: verification_scores(sim, ql, gl),
    ):
        with pytest.raises(CmceError):
            fn()


@pytest.mark.parametrize(
    "mask", [np.ones(2, dtype=bool), np.ones(3, dtype=int), np.ones((3, 1), dtype=bool), [1, 0, 1]]
)
def test_invalid_gallery_mask_raises(mask):
    sim = np.zeros((1, 3))
    with pytest.raises(CmceError, match="gallery_mask"):
        recall_at_k(sim, [0], [0, 1, 2], gallery_mask=mask)
    with pytest.raises(CmceError, match="gallery_mask"):
        mean_average_precision(sim, [0], [0, 1, 2], gallery_mask=mask)


@pytest.mark.parametrize("ks", [(0,), (1, -2), (1.5,), (True,), (), 5, "15", [None]])
def test_invalid_ks_raise(ks):
    with pytest.raises(CmceError, match="k"):
        recall_at_k(np.zeros((1, 2)), [0], [0, 1], ks=ks)


def test_ks_accepts_numpy_ints():
    got = recall_at_k(np.zeros((1, 2)), [0], [0, 1], ks=np.array([1, 2]))
    assert got == {1: 1.0, 2: 1.0} and all(type(k) is int for k in got)


# --------------------------------------------------------------------------- #
# verification
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q,g", SIZES + [(0, 4), (3, 0)])
@pytest.mark.parametrize("use_mask", [False, True])
def test_verification_scores_match_naive(seed, q, g, use_mask):
    sim, ql, gl, mask = _random_retrieval(seed, q, g)
    mask = mask if use_mask else None
    s, same = verification_scores(sim, ql, gl, mask)
    ws, wsame = naive_verification(sim, ql, gl, mask)
    assert s.dtype == np.float64 and same.dtype == np.bool_
    np.testing.assert_array_equal(s, ws)
    np.testing.assert_array_equal(same, wsame)


FARS = [0.0, 1e-3, 0.05, 0.1, 0.25, 0.29, 0.5, 0.7, 0.999, 1.0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 5, 17, 60, 100])
def test_threshold_and_tar_match_naive(seed, n):
    scores, same = _random_pairs(seed, n)
    same[0], same[1] = True, False  # at least one of each
    for far in FARS:
        t = threshold_at_far(scores, same, far)
        assert t == naive_threshold(scores, same, far), far
        assert _same_float(tar_at_far(scores, same, far), naive_tar(scores, same, far))
        # the defining property holds
        imp = scores[~same]
        assert np.mean(imp >= t) <= far


def test_threshold_at_far_exact_fraction_boundary():
    # 100 impostors, far=0.29 must allow exactly 29 false accepts (0.29 * 100 < 29 in floats)
    imp = np.arange(100, dtype=float)
    scores = np.concatenate([imp, [50.0]])
    same = np.concatenate([np.zeros(100, dtype=bool), [True]])
    t = threshold_at_far(scores, same, 0.29)
    assert np.sum(imp >= t) == 29
    assert t == np.nextafter(70.0, np.inf)


def test_threshold_at_far_ties_reject_whole_tie():
    # impostors all tied: any threshold accepting one accepts all four
    scores = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.9])
    same = np.array([False, False, False, False, True, True])
    t = threshold_at_far(scores, same, far=0.5)
    assert t == np.nextafter(0.5, np.inf)
    assert tar_at_far(scores, same, far=0.5) == 0.5  # the tied genuine 0.5 is rejected
    assert threshold_at_far(scores, same, far=1.0) == -math.inf
    assert tar_at_far(scores, same, far=1.0) == 1.0


def test_tar_at_far_nan_without_genuine_and_raise_without_impostor():
    assert math.isnan(tar_at_far(np.array([0.1, 0.2]), np.array([False, False]), 0.5))
    with pytest.raises(CmceError, match="impostor"):
        threshold_at_far(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(CmceError, match="impostor"):
        tar_at_far(np.zeros(0), np.zeros(0, dtype=bool))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 2, 5, 17, 60, 200])
def test_best_accuracy_matches_naive(seed, n):
    scores, same = _random_pairs(seed, n)
    acc, t = best_verification_accuracy(scores, same)
    want_acc, want_t = naive_best_acc(scores, same)
    assert acc == pytest.approx(want_acc, abs=1e-12)
    assert t == want_t
    assert np.mean((scores >= t) == same) == pytest.approx(acc, abs=1e-12)


def test_best_accuracy_edge_cases():
    assert best_verification_accuracy(np.array([0.3, 0.1]), np.array([True, True])) == (1.0, 0.1)
    assert best_verification_accuracy(np.array([0.3, 0.1]), np.array([False, False])) == (
        1.0,
        math.inf,
    )
    assert best_verification_accuracy(
        np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False])
    ) == (1.0, 0.8)
    with pytest.raises(CmceError, match="at least one pair"):
        best_verification_accuracy(np.zeros(0), np.zeros(0, dtype=bool))


@pytest.mark.parametrize(
    "scores,same",
    [
        (np.zeros((2, 2)), np.zeros((2, 2), dtype=bool)),
        (np.zeros(3), np.zeros(2, dtype=bool)),
        (np.zeros(2), np.zeros(2, dtype=int)),
        (np.array([0.1, np.nan]), np.array([True, False])),
        (np.array([0.1, np.inf]), np.array([True, False])),
        (np.array(["a", "b"]), np.array([True, False])),
    ],
)
def test_pair_functions_invalid_inputs_raise(scores, same):
    for fn in (
        lambda: threshold_at_far(scores, same, 0.1),
        lambda: tar_at_far(scores, same, 0.1),
        lambda: best_verification_accuracy(scores, same),
    ):
        with pytest.raises(CmceError):
            fn()


@pytest.mark.parametrize("far", [-0.1, 1.5, math.nan, "0.1", True, None])
def test_invalid_far_raises(far):
    with pytest.raises(CmceError, match="far"):
        threshold_at_far(np.array([0.1, 0.2]), np.array([True, False]), far)


# --------------------------------------------------------------------------- #
# rejection
# --------------------------------------------------------------------------- #

RATES = [0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 10, 37, 100])
def test_rejection_curve_matches_naive(seed, n):
    rng = np.random.default_rng(seed + 100 * n)
    hits = rng.random(n) < 0.6
    scores = rng.integers(0, 4, size=n).astype(float)  # ties
    got = rejection_curve(hits, scores, RATES)
    want = naive_rejection_curve(hits, scores, RATES)
    assert got.shape == (len(RATES),) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    # 0/1 ints give the same curve as bools
    np.testing.assert_allclose(
        rejection_curve(hits.astype(int), scores, RATES), got, equal_nan=True
    )


def test_rejection_curve_rounding_and_ties():
    hits = np.array([False, True, True, True, True])
    # 0.5 * 5 = 2.5 rounds half up to 3; 0.3 * 5 = 1.5 -> 2; 0.1 * 5 = 0.5 -> 1
    unc = np.array([9.0, 8.0, 7.0, 0.0, 0.0])
    np.testing.assert_allclose(rejection_curve(hits, unc, [0.1, 0.3, 0.5]), [1.0, 1.0, 1.0])
    # all tied: lower index rejected first, so the wrong item 0 goes first
    tied = np.zeros(5)
    np.testing.assert_allclose(rejection_curve(hits, tied, [0.0, 0.2]), [0.8, 1.0])
    # +inf uncertainty is rejected first
    unc_inf = np.array([1.0, np.inf, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(rejection_curve(hits, unc_inf, [0.2]), [0.75])
    assert rejection_curve(hits, unc, []).shape == (0,)


@pytest.mark.parametrize(
    "hits,scores,rates",
    [
        (np.array([True, False]), np.zeros(3), [0.1]),
        (np.array([[True]]), np.zeros((1, 1)), [0.1]),
        (np.array([0, 2]), np.zeros(2), [0.1]),
        (np.array(["a", "b"]), np.zeros(2), [0.1]),
        (np.array([True, False]), np.array([0.0, np.nan]), [0.1]),
        (np.array([True, False]), np.zeros(2), [1.1]),
        (np.array([True, False]), np.zeros(2), [-0.1]),
        (np.array([True, False]), np.zeros(2), 0.1),
        (np.array([True, False]), np.zeros(2), [math.nan]),
    ],
)
def test_rejection_curve_invalid_inputs_raise(hits, scores, rates):
    with pytest.raises(CmceError):
        rejection_curve(hits, scores, rates)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("g", [0, 1, 2, 5, 10, 37, 100])
def test_gallery_mask_and_threshold_match_naive(seed, g):
    rng = np.random.default_rng(seed + 1000 * g)
    u_tied = rng.integers(0, 4, size=g).astype(float)
    u_distinct = rng.permutation(g).astype(float)
    for rate in RATES:
        for u in (u_tied, u_distinct):
            keep = gallery_rejection_mask(u, rate)
            assert keep.dtype == np.bool_ and keep.shape == (g,)
            np.testing.assert_array_equal(keep, naive_mask(u, rate))
            assert (~keep).sum() == naive_reject_count(rate, g)
            if g:
                t = threshold_for_rate(u, rate)
                assert t == naive_threshold_for_rate(u, rate)
                # strict '>' never rejects more than the mask does
                assert (u > t).sum() <= (~keep).sum()
        if g:
            # without ties the two agree exactly
            t = threshold_for_rate(u_distinct, rate)
            np.testing.assert_array_equal(u_distinct > t, ~gallery_rejection_mask(u_distinct, rate))


def test_threshold_for_rate_ends():
    u = np.array([0.1, 0.9, 0.3, 0.5])
    assert threshold_for_rate(u, 0.0) == 0.9
    assert threshold_for_rate(u, 1.0) == -math.inf
    assert gallery_rejection_mask(u, 1.0).tolist() == [False] * 4
    assert gallery_rejection_mask(u, 0.0).tolist() == [True] * 4
    assert gallery_rejection_mask(np.zeros(0), 0.5).shape == (0,)
    with pytest.raises(CmceError, match="G >= 1"):
        threshold_for_rate(np.zeros(0), 0.5)


@pytest.mark.parametrize(
    "u,rate",
    [
        (np.zeros((2, 2)), 0.1),
        (np.array([0.0, np.nan]), 0.1),
        (np.array(["a"]), 0.1),
        (np.zeros(3), 1.01),
        (np.zeros(3), -0.5),
        (np.zeros(3), math.nan),
        (np.zeros(3), [0.1]),
    ],
)
def test_rejection_helpers_invalid_inputs_raise(u, rate):
    with pytest.raises(CmceError):
        gallery_rejection_mask(u, rate)
    with pytest.raises(CmceError):
        threshold_for_rate(u, rate)


# --------------------------------------------------------------------------- #
# misc
# --------------------------------------------------------------------------- #


def test_relative_error_reduction():
    assert relative_error_reduction(0.90, 0.92) == pytest.approx(0.2)
    assert relative_error_reduction(0.5, 1.0) == pytest.approx(1.0)
    assert relative_error_reduction(0.8, 0.6) == pytest.approx(-1.0)
    assert relative_error_reduction(0.7, 0.7) == 0.0
    assert math.isnan(relative_error_reduction(1.0, 1.0))
    assert math.isnan(relative_error_reduction(math.nan, 0.5))
    assert relative_error_reduction(np.float32(0.5), np.float64(0.75)) == pytest.approx(0.5)
    for bad in (-0.1, 1.1, "0.5", None, True, math.inf):
        with pytest.raises(CmceError, match="accuracy"):
            relative_error_reduction(bad, 0.5)
        with pytest.raises(CmceError, match="accuracy"):
            relative_error_reduction(0.5, bad)


def _members(e: np.ndarray) -> list[np.ndarray]:
    """(G, N, D) -> the N (G, D) member arrays ``mean_pairwise_cosine_distance`` takes."""
    return list(np.moveaxis(e, 1, 0))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("g,n,d", [(1, 1, 3), (3, 2, 4), (5, 7, 16), (2, 20, 8), (4, 3, 1), (0, 3, 2)])
def test_mean_pairwise_matches_naive(seed, g, n, d):
    rng = np.random.default_rng(seed + 17 * g + n + d)
    e = rng.normal(size=(g, n, d)) * rng.uniform(0.1, 10.0, size=(g, n, 1))  # not unit norm
    if g and n > 1:
        e[0, 1] = 3.0 * e[0, 0]  # a duplicate direction
    got = mean_pairwise_cosine_distance(_members(e))
    assert got.shape == (g,) and got.dtype == np.float64
    np.testing.assert_allclose(got, naive_mean_pairwise(e), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_pairwise_with_absent_members_matches_naive(seed):
    rng = np.random.default_rng(seed)
    g, n, d = 9, 4, 6
    e = rng.normal(size=(g, n, d))
    present = rng.random((g, n)) < 0.6
    present[0], present[1] = False, [True, False, False, False]  # no member; one member
    e[~present] = np.nan  # absent rows are never read
    got = mean_pairwise_cosine_distance(_members(e), list(present.T))
    want = [naive_mean_pairwise(e[i : i + 1, present[i]])[0] if present[i].any() else 0.0 for i in range(g)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[0] == 0.0 and got[1] == 0.0  # fewer than two members: no disagreement, never NaN


def test_mean_pairwise_unit_float32_keeps_the_gallery_numbers():
    """normalise=False on float32 unit vectors: exactly the arithmetic galleries were scored with."""
    rng = np.random.default_rng(5)
    vs = [rng.normal(size=(50, 32)).astype(np.float32) for _ in range(3)]
    vs = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vs]
    present = [np.ones(50, bool), rng.random(50) < 0.5, rng.random(50) < 0.5]
    total, count = np.zeros((50, 32), np.float32), np.zeros(50, np.float32)
    for v, w in zip(vs, present):
        total[w] += v[w]
        count += w
    sq = np.einsum("gd,gd->g", total, total)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.clip(1.0 - (sq - count) / (count * (count - 1)), 0.0, 2.0)
    want = np.where(count >= 2, want, 0.0).astype(np.float32)
    got = mean_pairwise_cosine_distance(vs, present, normalise=False)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_mean_pairwise_edge_cases():
    assert mean_pairwise_cosine_distance(_members(np.ones((3, 1, 5)))).tolist() == [0.0, 0.0, 0.0]
    same = np.tile(np.array([0.6, 0.8]), (2, 5, 1))
    np.testing.assert_allclose(mean_pairwise_cosine_distance(_members(same)), [0.0, 0.0], atol=1e-15)
    opposite = np.array([[[1.0, 0.0], [-1.0, 0.0]]])
    np.testing.assert_allclose(mean_pairwise_cosine_distance(_members(opposite)), [2.0])
    # huge and tiny scales neither overflow nor underflow
    e = np.array([[[1e300, 0.0], [0.0, 1e300]], [[1e-300, 0.0], [0.0, 1e-300]]])
    np.testing.assert_allclose(mean_pairwise_cosine_distance(_members(e)), [1.0, 1.0])
    ints = np.arange(3, dtype=int).reshape(1, 3, 1) + 1
    assert mean_pairwise_cosine_distance(_members(ints)).tolist() == [0.0]
    assert mean_pairwise_cosine_distance(_members(ints)).dtype == np.float64


@pytest.mark.parametrize(
    "members,present",
    [
        (np.zeros((2, 3, 4)), None),  # a bare (G, N, D) stack is refused
        ([], None),
        ([np.zeros(3)], None),
        ([np.ones((2, 3)), np.ones((2, 4))], None),
        ([np.zeros((2, 0)), np.zeros((2, 0))], None),
        ([np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])], None),
        ([np.array([[1.0, np.nan]]), np.array([[0.0, 1.0]])], None),
        ([np.array([[1.0, np.inf]]), np.array([[0.0, 1.0]])], None),
        ([np.array([["a", "b"]])], None),
        ([np.ones((2, 3))], [np.ones(2, bool), np.ones(2, bool)]),
        ([np.ones((2, 3))], [np.ones(3, bool)]),
        ([np.ones((2, 3))], [np.ones(2)]),
        ([np.ones((2, 3))], np.ones((2, 1), bool)),
    ],
)
def test_mean_pairwise_invalid_inputs_raise(members, present):
    with pytest.raises(CmceError, match="members|present"):
        mean_pairwise_cosine_distance(members, present)


def test_mean_pairwise_unnormalised_non_finite_rows_raise():
    with pytest.raises(CmceError, match="finite"):
        mean_pairwise_cosine_distance([np.array([[1.0, np.nan]], np.float32)] * 2, normalise=False)


def test_one_interval_format_everywhere() -> None:
    from cmce.metrics.intervals import format_interval, format_with_interval

    assert format_interval(0.97812, 0.98934) == "(97.81 to 98.93)"
    assert format_interval(-0.0011, 0.0234, digits=1, signed=True) == "(-0.1 to +2.3)"
    assert format_interval(0.901, 0.93, digits=1, unit="%") == "(90.1 to 93.0%)"
    assert format_interval(12.5, 14.0, scale=1, digits=0) == "(12 to 14)"
    assert format_interval(None, 0.5) == format_interval(0.1, float("nan")) == ""
    assert format_with_interval(0.984, [0.9781, 0.9893]) == "98.40 (97.81 to 98.93)"
    assert format_with_interval(0.2904, (-0.11, 0.63), digits=1, interval_digits=0, signed=True) == "+29.0 (-11 to +63)"
    assert format_with_interval(0.25, (float("nan"), 0.4), unit="%") == "25.00%"
    assert format_with_interval(None) == format_with_interval(float("nan"), (0.1, 0.2)) == "—"
