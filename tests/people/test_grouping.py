"""group_faces: clusters of synthetic people, constraints always honoured, names kept, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmce.errors import PeopleError
from cmce.metrics.clustering import bcubed
from cmce.people import GroupingConfig, group_faces
from cmce.people.constraints import Constraints, violations
from cmce.people.graph import chinese_whispers, knn_graph


def _people(n_people: int, per: int, dim: int = 32, noise: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    truth = np.repeat(np.arange(n_people), per)
    x = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True) + noise * rng.normal(size=(len(truth), dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


@pytest.mark.parametrize("method", ["chinese_whispers", "components", "louvain", "hdbscan"])
def test_separated_people_are_found(method):
    x, truth = _people(20, 5, noise=0.2)
    g = group_faces(x, config=GroupingConfig(threshold=0.7, method=method))
    assert bcubed(g.labels, truth)[2] > 0.95
    assert g.summary() == f"{len(g.people)} people, 100 faces grouped, 0 unsure"


def test_a_low_threshold_chains_people_into_one():
    x, truth = _people(20, 5)
    g = group_faces(x, config=GroupingConfig(threshold=-0.5, method="components"))
    assert len(g.people) == 1 and bcubed(g.labels, truth)[0] < 0.1


def test_chinese_whispers_keeps_two_cliques_joined_by_one_edge_apart():
    x, _ = _people(2, 6, noise=0.1)
    graph = knn_graph(x, k=20, threshold=0.9)
    bridge = graph.copy().tolil()
    bridge[0, 6] = bridge[6, 0] = 0.95
    lab = chinese_whispers(bridge.tocsr())
    assert len(set(lab[:6])) == 1 and len(set(lab[6:])) == 1 and lab[0] != lab[6]


def test_faces_of_one_photo_are_different_people():
    x, _ = _people(1, 4, noise=0.05)
    g = group_faces(x, photo_ids=["a", "a", "b", "c"], config=GroupingConfig(threshold=0.5))
    assert g.labels[0] != g.labels[1]


def test_the_unsure_share_holds_out_the_most_uncertain_faces():
    x, truth = _people(10, 10)
    unc = np.zeros(100)
    unc[[3, 17, 55]] = 1.0
    g = group_faces(x, uncertainty=unc, config=GroupingConfig(threshold=0.5, unsure_share=0.03))
    assert sorted(u.position for u in g.unsure) == [3, 17, 55]
    assert {u.reason for u in g.unsure} == {"uncertain"}
    g = group_faces(x, uncertainty=unc, config=GroupingConfig(threshold=0.5, doubt_above=0.5))
    assert len(g.unsure) == 3 and g.grouped == 97


def test_min_faces_sends_small_people_to_unsure():
    x, truth = _people(5, 3)
    x = np.vstack([x, _people(1, 1, seed=9)[0]])
    g = group_faces(x, config=GroupingConfig(threshold=0.5, min_faces=2))
    assert [u.reason for u in g.unsure] == ["few faces"] and g.unsure[0].position == 15


def test_names_are_kept_and_new_faces_join_named_people():
    x, truth = _people(6, 6)
    names = {0: "Ada", 1: "Ada", 6: "Bo"}
    g = group_faces(x, known_labels=names, config=GroupingConfig(threshold=0.5))
    by_name = {p.name: p for p in g.people if p.name}
    assert set(by_name) == {"Ada", "Bo"}
    assert set(by_name["Ada"].members) == set(range(6)) and set(by_name["Bo"].members) == set(range(6, 12))


def test_a_name_on_two_different_looking_groups_still_holds_them_in_one_person():
    x, truth = _people(4, 5)
    g = group_faces(x, known_labels={0: "Cy", 5: "Cy"}, must_link=[(10, 15)], config=GroupingConfig(threshold=0.5))
    lab = g.labels
    assert lab[0] == lab[5] and lab[10] == lab[15]


@pytest.mark.parametrize("kwargs, match", [
    (dict(must_link=[(0, 1)], cannot_link=[(1, 0)]), "different people"),
    (dict(must_link=[(0, 1)], photo_ids=[0, 0, 1, 2, 3, 4]), "different people"),
    (dict(must_link=[(0, 9)]), "positions in 0..5"),
    (dict(known_labels={0: "A", 1: "B"}, must_link=[(0, 1)]), "one face has one name"),
    (dict(uncertainty=np.zeros(3)), "uncertainty must be"),
    (dict(photo_ids=[1, 2]), "one id per face"),
])
def test_bad_input_gets_a_named_message(kwargs, match):
    x, _ = _people(2, 3)
    with pytest.raises(PeopleError, match=match):
        group_faces(x, config=GroupingConfig(threshold=0.5), **kwargs)


def test_bad_vectors_and_settings_are_refused():
    with pytest.raises(PeopleError, match="L2-normalised"):
        group_faces(np.ones((3, 4), np.float32))
    with pytest.raises(PeopleError, match="method must be one of"):
        GroupingConfig(method="kmeans")
    with pytest.raises(PeopleError, match="unsure_share"):
        GroupingConfig(unsure_share=1.5)


_op = st.tuples(st.sampled_from(["must", "cannot", "name"]), st.integers(0, 29), st.integers(0, 29),
                st.sampled_from(["A", "B", "C"]))


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_op, max_size=25), share=st.sampled_from([0.0, 0.1]), method=st.sampled_from(["chinese_whispers", "components", "hdbscan"]))
def test_after_any_sequence_of_constraints_none_is_violated(ops, share, method):
    x, _ = _people(6, 5, noise=0.8)
    photo_ids = np.arange(30) // 2  # pairs of faces share a photo
    must, cannot, names = [], [], {}
    for kind, a, b, name in ops:  # an operation that contradicts the ones before is refused and dropped
        trial = (must + [(a, b)], cannot, names) if kind == "must" else \
            (must, cannot + [(a, b)], names) if kind == "cannot" else (must, cannot, {**names, a: name})
        try:
            Constraints(30, must_link=trial[0], cannot_link=trial[1], photo_ids=photo_ids, names=trial[2])
        except PeopleError:
            continue
        must, cannot, names = trial
    g = group_faces(x, photo_ids=photo_ids, must_link=must, cannot_link=cannot, known_labels=names,
                    config=GroupingConfig(threshold=0.3, method=method, unsure_share=share))
    cons = Constraints(30, must_link=must, cannot_link=cannot, photo_ids=photo_ids, names=names)
    assert violations(g.labels, cons, must) == 0
    named = {p: nm for p, nm in names.items()}
    for p, nm in named.items():  # named faces are never unsure and their person carries the name
        assert g.people[g.labels[p]].name == nm
