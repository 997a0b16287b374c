"""The grouping's similarity with the query model's cosine weighed in, and the attach pass: a face left
alone joins its person when sure enough, never against a constraint; both calibrated from labelled faces."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmce.errors import PeopleError
from cmce.metrics.clustering import bcubed
from cmce.people import GroupingConfig, grouping, group_faces
from cmce.people.calibration import calibrate_attach
from cmce.people.constraints import Constraints, violations
from cmce.people.grouping import attach_alone, grouping_vectors
from cmce.people.library import bundle_grouping_config, calibrated_extras


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _people_with_blurred(n_people: int = 12, per: int = 3, dim: int = 32, seed: int = 0):
    """Tight people, and one far noisier face per person (a degraded photo): under the edge threshold
    to each of its person's faces, nearer their mean than to anyone else's."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(n_people, dim)))
    truth = np.repeat(np.arange(n_people), per + 1)
    noise = np.where(np.arange(len(truth)) % (per + 1) == per, 1.6, 0.25)[:, None]
    x = centres[truth] + noise * rng.normal(size=(len(truth), dim)) / np.sqrt(dim)
    return _unit(x), truth


def test_the_grouping_similarity_is_the_weighted_mean_of_the_two_cosines():
    rng = np.random.default_rng(1)
    e, q = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(5, 8)))
    for w in (0.0, 0.3, 1.0):
        j = grouping_vectors(e, q, w)
        assert np.allclose(j @ j.T, (1 - w) * (e @ e.T) + w * (q @ q.T), atol=1e-5)
    q[2] = 0  # no query-model embedding: the ensemble row stands in for it
    j = grouping_vectors(e, q, 0.5)
    assert np.isclose(float(j[2] @ j[2]), 1.0, atol=1e-5) and np.isclose(float(j[2] @ j[0]),
                                                                         0.5 * (e[2] @ e[0]) + 0.5 * (e[2] @ q[0]), atol=1e-5)


def test_a_query_weight_without_query_vectors_or_of_another_shape_is_refused():
    e = _unit(np.eye(3))
    with pytest.raises(PeopleError, match="query_vectors"):
        group_faces(e, config=GroupingConfig(query_weight=0.5))
    with pytest.raises(PeopleError, match="shape"):
        grouping_vectors(e, e[:2], 0.5)
    for bad in (dict(query_weight=1.5), dict(attach_above=2.0), dict(attach_margin=-0.1)):
        with pytest.raises(PeopleError):
            GroupingConfig(**bad)


def test_the_attach_pass_gives_degraded_faces_back_to_their_people():
    x, truth = _people_with_blurred()
    plain = group_faces(x, config=GroupingConfig(threshold=0.6))
    attached = group_faces(x, config=GroupingConfig(threshold=0.6, attach_above=0.3, attach_margin=0.1))
    p0, r0, _ = bcubed(plain.labels, truth)
    p1, r1, _ = bcubed(attached.labels, truth)
    assert r1 > r0 and p1 == pytest.approx(1.0) and len(attached.people) < len(plain.people)


def test_the_attach_pass_never_goes_against_a_constraint_or_a_close_second():
    v = _unit(np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 0, 1], [0.75, 0.66, 0]], np.float32))
    labels = np.array([0, 0, 1, 2])
    assert attach_alone(v, labels, Constraints(4), above=0.7, margin=0.1).tolist() == [0, 0, 1, 0]
    assert attach_alone(v, labels, Constraints(4, cannot_link=[(3, 1)]), above=0.7, margin=0.1).tolist() == [0, 0, 1, 2]
    assert attach_alone(v, labels, Constraints(4, photo_ids=["a", "b", "c", "a"]), above=0.7, margin=0.1)[3] == 2
    assert attach_alone(v, labels, Constraints(4), above=0.9, margin=0.1)[3] == 2  # not similar enough
    close = _unit(np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0.01, 1, 0], [0.7, 0.7, 0]], np.float32))
    assert attach_alone(close, np.array([0, 0, 1, 1, 2]), Constraints(5), above=0.5, margin=0.1)[4] == 2
    named = Constraints(4, names={3: "Bo", 0: "Ada"})  # a named face is the user's: never moved
    assert attach_alone(v, np.array([0, 0, 1, 2]), named, above=0.7, margin=0.1)[3] == 2


_op = st.tuples(st.sampled_from(["must", "cannot"]), st.integers(0, 47), st.integers(0, 47))


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, max_size=20), share=st.sampled_from([0.0, 0.1]))
def test_with_the_attach_pass_no_constraint_is_violated(ops, share):
    x, _ = _people_with_blurred()
    photo_ids = np.arange(len(x)) // 2
    must, cannot = [], []
    for kind, a, b in ops:
        trial = (must + [(a, b)], cannot) if kind == "must" else (must, cannot + [(a, b)])
        try:
            Constraints(len(x), must_link=trial[0], cannot_link=trial[1], photo_ids=photo_ids)
        except PeopleError:
            continue
        must, cannot = trial
    g = group_faces(x, query_vectors=x[::-1].copy(), photo_ids=photo_ids, must_link=must, cannot_link=cannot,
                    uncertainty=np.linspace(0, 1, len(x)),
                    config=GroupingConfig(threshold=0.6, attach_above=0.2, attach_margin=0.0, unsure_share=share,
                                          query_weight=0.3))
    cons = Constraints(len(x), must_link=must, cannot_link=cannot, photo_ids=photo_ids)
    assert violations(g.labels, cons, must) == 0


def test_calibrate_attach_keeps_a_pass_only_where_it_helps():
    x, truth = _people_with_blurred()
    found = calibrate_attach([(x, truth)], GroupingConfig(threshold=0.6), above=(0.3, 0.5), margins=(0.1,))
    assert found["attach_above"] is not None and found["mean_f"] > found["grid"][0]["mean_f"]
    assert found["grid"][0]["attach_above"] is None and len(found["grid"]) == 3
    tight = _unit(np.repeat(np.eye(6, 16), 3, axis=0) + 0.01)  # every person already whole: no pass needed
    none = calibrate_attach([(tight, np.repeat(np.arange(6), 3))], GroupingConfig(threshold=0.9))
    assert none["attach_above"] is None


def test_a_bundle_calibration_without_the_new_settings_still_loads():
    assert calibrated_extras({"method": "chinese_whispers", "threshold": 0.58}) == {"query_weight": 0.0}
    new = {"threshold": 0.52, "method": "chinese_whispers", "query_weight": 0.5, "attach_above": 0.4,
           "attach_margin": 0.1}
    assert calibrated_extras(new) == {"query_weight": 0.5, "attach_above": 0.4, "attach_margin": 0.1}

    class _B:
        info = {"people": {"method": "chinese_whispers", "threshold": 0.58}}
        source = "old"

        class calibration:  # noqa: N801 - the attribute a bundle has
            rejection_threshold = 0.3

    cfg = bundle_grouping_config(_B())  # type: ignore[arg-type]
    assert cfg.threshold == 0.58 and cfg.query_weight == 0.0 and cfg.attach_above is None


def test_docstring_examples():
    assert doctest.testmod(grouping).failed == 0
