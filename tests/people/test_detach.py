"""The detach pass: a face the clustering chained into a person while far from the rest of its faces
leaves it (before the attach pass), never a constrained face; calibrated from labelled faces."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from cmce.errors import PeopleError
from cmce.metrics.clustering import bcubed
from cmce.people import GroupingConfig, calibration, group_faces
from cmce.people.calibration import calibrate_detach
from cmce.people.constraints import Constraints, violations
from cmce.people.grouping import detach_outliers
from cmce.people.library import calibrated_extras


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _chained_people(n_people: int = 5, per: int = 8):
    """People of ``per`` faces spread around their own axis (each face towards an axis of its own: two
    faces of one person at cosine 0.74), and per person one face of someone else (a one-face person)
    at cosine 0.86 to one of its faces, so linked to the person at a threshold of 0.7, but at 0.75 to
    the mean of its faces, which are at 0.84 to the mean of the others."""
    dim = n_people * (per + 2)
    x, truth = [], []
    for p in range(n_people):
        base = p * (per + 2)
        for k in range(per):
            x.append(np.eye(dim)[base] + 0.6 * np.eye(dim)[base + 1 + k])
            truth.append(p)
        x.append(np.eye(dim)[base] + 0.6 * np.eye(dim)[base + 1] + 0.7 * np.eye(dim)[base + per + 1])
        truth.append(n_people + p)
    return _unit(np.array(x)), np.array(truth)


def test_the_detach_pass_takes_chained_faces_out():
    x, truth = _chained_people()
    plain = group_faces(x, config=GroupingConfig(threshold=0.7, method="components")).labels
    detached = group_faces(x, config=GroupingConfig(threshold=0.7, method="components", detach_below=0.8)).labels
    with_attach = group_faces(x, config=GroupingConfig(threshold=0.7, method="chinese_whispers", detach_below=0.8,
                                                       attach_above=0.8, attach_margin=0.05)).labels
    p0, r0, f0 = bcubed(plain, truth)
    assert r0 == pytest.approx(1.0) and p0 < 0.95  # each intruder chained into a person
    assert bcubed(detached, truth) == pytest.approx((1.0, 1.0, 1.0))
    assert bcubed(with_attach, truth) == pytest.approx((1.0, 1.0, 1.0))  # not attached back under 0.8
    assert bcubed(group_faces(x, config=GroupingConfig(threshold=0.7, method="components",
                                                       detach_below=0.7)).labels, truth)[2] == pytest.approx(f0)


def test_the_detach_pass_never_moves_a_constrained_face_nor_breaks_a_constraint():
    v = _unit(np.array([[1, 0, 0], [0.98, 0.2, 0], [0.98, -0.2, 0], [0.3, 0, 0.95]], np.float32))
    labels = np.array([0, 0, 0, 0])
    assert detach_outliers(v, labels, Constraints(4), below=0.5).tolist() == [0, 0, 0, 1]
    assert detach_outliers(v, labels, Constraints(4, names={3: "Ada"}), below=0.5).tolist() == [0, 0, 0, 0]
    assert detach_outliers(v, labels, Constraints(4, must_link=[(3, 0)]), below=0.5).tolist() == [0, 0, 0, 0]
    assert detach_outliers(v, labels, Constraints(4), below=0.2).tolist() == [0, 0, 0, 0]  # close enough
    x, truth = _chained_people()
    must, cannot = [(0, 8), (9, 17)], [(1, 2)]  # two intruders must-linked: they stay
    g = group_faces(x, must_link=must, cannot_link=cannot, photo_ids=np.arange(len(x)) // 2,
                    config=GroupingConfig(threshold=0.7, detach_below=0.8, attach_above=0.5, unsure_share=0.1))
    assert violations(g.labels, Constraints(len(x), must_link=must, cannot_link=cannot,
                                            photo_ids=np.arange(len(x)) // 2), must) == 0


def test_a_detach_value_out_of_range_is_refused():
    with pytest.raises(PeopleError, match="detach_below"):
        GroupingConfig(detach_below=1.5)


def test_calibrate_detach_keeps_a_pass_only_where_it_helps():
    x, truth = _chained_people()
    found = calibrate_detach([(x, truth)], GroupingConfig(threshold=0.7, method="components"), below=(0.5, 0.8))
    assert found["detach_below"] == 0.8 and found["mean_f"] > found["grid"][0]["mean_f"]
    assert found["grid"][0]["detach_below"] is None and len(found["grid"]) == 3
    tight = _unit(np.repeat(np.eye(6, 16), 3, axis=0) + 0.01)  # every person already pure: no pass needed
    none = calibrate_detach([(tight, np.repeat(np.arange(6), 3))], GroupingConfig(threshold=0.9))
    assert none["detach_below"] is None


def test_a_bundle_calibration_carries_its_detach_pass():
    cal = {"threshold": 0.52, "method": "chinese_whispers", "query_weight": 0.5, "attach_above": 0.4,
           "attach_margin": 0.1, "detach_below": 0.5}
    assert calibrated_extras(cal)["detach_below"] == 0.5
    assert "detach_below" not in calibrated_extras({**cal, "detach_below": None})


def test_docstring_examples():
    assert doctest.testmod(calibration).failed == 0
