"""The leave-one-out scoreboard (cmce.method.scoreboard) against a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.method.scoreboard import leave_one_out_scoreboard


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _naive(q, views, labels, thresholds, available, can):
    """Every query, every view, one entry at a time."""
    out, right = {}, {}
    queries = [i for i, lab in enumerate(labels) if lab is not None and can[i]
               and sum(x == lab for x in labels) >= 2]
    for v, g in views.items():
        hits = unknowns = 0
        right[v] = []
        for i in queries:
            best, top = -np.inf, None
            for j in range(len(labels)):
                if j != i and available[v][j] and float(q[i] @ g[j]) > best:
                    best, top = float(q[i] @ g[j]), j
            hit = top is not None and labels[top] == labels[i]
            unknown = top is None or best < thresholds.get(v, -1.0)
            hits += hit
            unknowns += unknown
            right[v].append(hit and not unknown)
        out[v] = (hits / len(queries), unknowns / len(queries))
    ens = np.array(right["ensemble"])
    return len(queries), {v: (*out[v], int((np.array(r) & ~ens).sum()), int((ens & ~np.array(r)).sum()))
                          for v, r in right.items()}


def test_matches_a_naive_loop_with_distractors_gaps_and_thresholds():
    rng = np.random.default_rng(3)
    n, d = 60, 8
    centres = rng.normal(size=(12, d))
    person = rng.integers(0, 12, n)
    labels = [f"p{p}" if i % 7 else None for i, p in enumerate(person)]  # every 7th unlabelled
    q = _unit(centres[person] + 0.8 * rng.normal(size=(n, d)))
    views = {"ensemble": _unit(centres[person] + 0.5 * rng.normal(size=(n, d))),
             "m1": _unit(centres[person] + 1.2 * rng.normal(size=(n, d))),
             "query": q}
    available = {"ensemble": np.ones(n, bool), "m1": rng.random(n) > 0.2, "query": np.ones(n, bool)}
    can = rng.random(n) > 0.1
    thresholds = {"ensemble": 0.5, "m1": 0.6}
    sb = leave_one_out_scoreboard(q, views, labels, thresholds, available=available, can_query=can)
    queries, ref = _naive(q, views, labels, thresholds, available, can)
    assert sb.queries == queries > 20
    for c in sb.columns:
        assert (c.recall_at_1, c.unknown_rate) == pytest.approx(ref[c.view][:2])
        assert (c.right_where_ensemble_missed, c.missed_where_ensemble_right) == ref[c.view][2:]
    assert [c.view for c in sb.columns] == ["ensemble", "m1", "query"]
    assert sb.column("m1").recall_at_1 < sb.column("ensemble").recall_at_1  # noisier gallery vectors


def test_no_query_and_bad_inputs():
    q = _unit(np.eye(3))
    sb = leave_one_out_scoreboard(q, {"ensemble": q}, ["a", "b", None], {})
    assert not sb.usable and sb.queries == 0
    with pytest.raises(CmceError, match="must hold 'ensemble'"):
        leave_one_out_scoreboard(q, {"m": q}, ["a", "a", "b"], {})
    with pytest.raises(CmceError, match="view 'm'"):
        leave_one_out_scoreboard(q, {"ensemble": q, "m": q[:2]}, ["a", "a", "b"], {})
    with pytest.raises(CmceError, match="the columns are \\['ensemble'\\]"):
        sb.column("m")


def test_a_gallery_without_any_label_has_an_empty_scoreboard() -> None:
    """An unlabelled upload (the People tab's case): no query, no error."""
    v = np.eye(3, dtype=np.float32)
    board = leave_one_out_scoreboard(v, {"ensemble": v}, [None, None, None], {})
    assert board.queries == 0 and [c.view for c in board.columns] == ["ensemble"]
