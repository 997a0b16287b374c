"""BCubed and pairwise F against naive references written from the definitions."""

from __future__ import annotations

import doctest
from itertools import combinations

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.metrics import clustering
from cmce.metrics.clustering import bcubed, bcubed_items, pairwise_prf


def _naive_bcubed(c, t):
    n = len(c)
    p = [sum(c[j] == c[i] and t[j] == t[i] for j in range(n)) / sum(c[j] == c[i] for j in range(n)) for i in range(n)]
    r = [sum(c[j] == c[i] and t[j] == t[i] for j in range(n)) / sum(t[j] == t[i] for j in range(n)) for i in range(n)]
    pm, rm = np.mean(p), np.mean(r)
    return pm, rm, 2 * pm * rm / (pm + rm)


def _naive_pairwise(c, t):
    pairs = list(combinations(range(len(c)), 2))
    claimed = [(i, j) for i, j in pairs if c[i] == c[j]]
    true = [(i, j) for i, j in pairs if t[i] == t[j]]
    both = [pr for pr in claimed if t[pr[0]] == t[pr[1]]]
    p = len(both) / len(claimed) if claimed else 1.0
    r = len(both) / len(true) if true else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.mark.parametrize("seed", range(25))
def test_metrics_match_the_naive_definitions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    t = rng.integers(0, int(rng.integers(1, 8)), n)
    c = rng.integers(0, int(rng.integers(1, 10)), n).astype(str)  # any hashable labels
    np.testing.assert_allclose(bcubed(c, t), _naive_bcubed(list(c), list(t)))
    np.testing.assert_allclose(pairwise_prf(c, t), _naive_pairwise(list(c), list(t)))


def test_perfect_and_degenerate_clusterings():
    t = np.array([0, 0, 1, 2, 2, 2])
    assert bcubed(t + 10, t) == (1.0, 1.0, 1.0)
    assert pairwise_prf(t + 10, t) == (1.0, 1.0, 1.0)
    p, r, _ = bcubed(np.zeros(6), t)  # everything in one cluster: full recall, low precision
    assert r == 1.0 and p == pytest.approx((2 * 2 / 6 + 1 / 6 + 3 * 3 / 6) / 6)
    p, r, _ = bcubed(np.arange(6), t)  # all singletons: full precision
    assert p == 1.0 and r == pytest.approx((0.5 + 0.5 + 1 + 3 * (1 / 3)) / 6)


def test_bad_inputs_are_refused_with_a_message():
    with pytest.raises(CmceError, match="same length"):
        bcubed([0, 1], [0])
    with pytest.raises(CmceError, match="empty"):
        pairwise_prf([], [])
    assert bcubed_items([], [])[0].shape == (0,)


def test_docstring_examples():
    assert doctest.testmod(clustering).failed == 0
