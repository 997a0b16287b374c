"""Corrections to a grouping: name, merge, split, not-this-person stored as rows and honoured by every regrouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from people_records import synthetic_records

from cmce.errors import CmceError, PeopleError
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.people import GroupingConfig
from cmce.people.corrections import (
    apply_to_folder,
    checked,
    merge_people,
    name_person,
    not_person,
    split_person,
    two_means,
)
from cmce.people.library import GalleryPeople, group_gallery
from cmce.storage.corrections import read_corrections
from cmce.storage.records import Corrections
from cmce.storage.write import write_gallery

CFG = GroupingConfig(threshold=0.5)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(str(default_bundle_path()))


@pytest.fixture(scope="module")
def records(bundle):
    return synthetic_records(bundle, people=4, per=3)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _person_of(people: GalleryPeople, entry: str) -> int:
    return int(people.grouping.labels[people.entry_ids.index(entry)])


def _assert_honoured(people: GalleryPeople, cor: Corrections) -> None:
    """No stored constraint is violated and every name is exactly one person holding all its faces."""
    lab = {e: int(x) for e, x in zip(people.entry_ids, people.grouping.labels)}
    for a, b in cor.must_link.tolist():
        assert lab[a] >= 0 and lab[a] == lab[b], ("must-link broken", a, b)
    for a, b in cor.cannot_link.tolist():
        assert lab[a] < 0 or lab[a] != lab[b], ("cannot-link broken", a, b)
    for name in set(cor.names.values()):
        faces = [e for e, n in cor.names.items() if n == name]
        persons = {lab[e] for e in faces}
        assert len(persons) == 1 and min(persons) >= 0, ("name not one person", name, persons)
        assert people.grouping.people[persons.pop()].name == name


def test_a_folder_s_stored_corrections_are_honoured_by_every_grouping(tmp_path: Path, bundle, records) -> None:
    folder = tmp_path / "g"
    write_gallery(folder, records)
    ids = records.entry_id.tolist()
    before = group_gallery(folder, bundle, config=CFG)
    assert _person_of(before, ids[3]) != _person_of(before, ids[9])
    apply_to_folder(folder, before, merge_people(before, ids[3], ids[9]))
    people = group_gallery(folder, bundle, config=CFG)
    assert _person_of(people, ids[3]) == _person_of(people, ids[9])
    apply_to_folder(folder, people, name_person(people, ids[3], "Ada"))
    people = group_gallery(folder, bundle, config=CFG)
    ada = people.person("Ada")
    assert people.key(ada) == "Ada" and people.person(ids[9]) == ada and len(ada.members) == 6
    assert people.to_dict()["people"][ada.id]["key"] == "Ada"
    # an unnamed person's key is its smallest entry id; a unique prefix of it finds it again
    other = next(p for p in people.grouping.people if p.name is None)
    assert people.person(people.short_key(other)) == other
    assert people.key(other) == min(people.entry_ids[i] for i in other.members)


def test_split_divides_a_person_by_its_vectors_and_later_groupings_keep_the_halves_apart(tmp_path, bundle, records):
    folder = tmp_path / "g"
    write_gallery(folder, records)
    ids = records.entry_id.tolist()
    people = group_gallery(folder, bundle, config=CFG)
    apply_to_folder(folder, people, merge_people(people, ids[3], ids[9]))  # persons 1 and 3, wrongly merged
    people = group_gallery(folder, bundle, config=CFG)
    change = split_person(people, ids[3])
    apply_to_folder(folder, people, change)
    after = group_gallery(folder, bundle, config=CFG)
    # 2-means finds the two true people again, and the stored merge no longer joins them
    assert {_person_of(after, e) for e in ids[3:6]} != {_person_of(after, e) for e in ids[9:12]}
    assert len({_person_of(after, e) for e in ids[3:6]}) == 1 == len({_person_of(after, e) for e in ids[9:12]})
    _assert_honoured(after, read_corrections(folder))


def test_not_this_person_takes_a_face_out_and_keeps_the_rest_together(tmp_path, bundle, records) -> None:
    folder = tmp_path / "g"
    write_gallery(folder, records)
    ids = records.entry_id.tolist()
    people = group_gallery(folder, bundle, config=CFG)
    apply_to_folder(folder, people, merge_people(people, ids[6], ids[9]))  # ids[6]: the must-links' centre
    people = group_gallery(folder, bundle, config=CFG)
    apply_to_folder(folder, people, not_person(people, ids[6], ids[9]))
    after = group_gallery(folder, bundle, config=CFG)
    assert _person_of(after, ids[6]) != _person_of(after, ids[9])
    assert len({_person_of(after, e) for e in ids[7:12]}) == 1  # the rest stays merged
    _assert_honoured(after, read_corrections(folder))


def test_bad_input_gets_a_named_message_and_changes_nothing(tmp_path: Path, bundle, records) -> None:
    folder = tmp_path / "g"
    write_gallery(folder, records)
    ids = records.entry_id.tolist()
    people = group_gallery(folder, bundle, config=CFG)
    apply_to_folder(folder, people, name_person(people, ids[3], "Ada"))
    people = group_gallery(folder, bundle, config=CFG)
    disk = _snapshot(folder)
    one_face = next(p for p in people.grouping.people if len(p.members) == 1)  # face 1: its photo is face 0's
    cases = [
        (lambda: name_person(people, "Nobody", "Bo"), "no person 'Nobody'"),
        (lambda: merge_people(people, "Ada", ids[4]), "same person"),
        (lambda: merge_people(people, "Ada", "zzzz:0"), "no person 'zzzz:0'"),
        (lambda: split_person(people, people.entry_ids[one_face.members[0]]), "has one face"),
        (lambda: not_person(people, "nope", "Ada"), "no entry 'nope'"),
        (lambda: not_person(people, people.entry_ids[one_face.members[0]], people.entry_ids[one_face.members[0]]),
         "only face"),
    ]
    for make, message in cases:
        with pytest.raises(PeopleError, match=message):
            apply_to_folder(folder, people, make())
    # faces of one photo (0 and 1) joined by a merge: refused by the photo constraint
    with pytest.raises(PeopleError, match="one photo"):
        apply_to_folder(folder, people, merge_people(people, ids[0], ids[1]))
    with pytest.raises(CmceError, match="1 to 200 characters"):
        apply_to_folder(folder, people, name_person(people, ids[6], "  "))
    assert _snapshot(folder) == disk


def test_a_gallery_of_one_face_can_be_named_but_not_merged_split_or_separated(tmp_path, bundle) -> None:
    one = synthetic_records(bundle, people=1, per=1)
    folder = tmp_path / "g"
    write_gallery(folder, one)
    people = group_gallery(folder, bundle, config=CFG)
    e = people.entry_ids[0]
    for make in (lambda: merge_people(people, e, e), lambda: split_person(people, e), lambda: not_person(people, e, e)):
        with pytest.raises(PeopleError, match="the gallery has one face"):
            make()
    apply_to_folder(folder, people, name_person(people, e, "Solo"))
    assert group_gallery(folder, bundle, config=CFG).grouping.people[0].name == "Solo"


def test_two_means_keeps_item_zero_in_group_zero() -> None:
    v = np.array([[0.0, 1.0], [1.0, 0.0], [0.99, 0.14], [0.1, 0.995]])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert two_means(v).tolist() == [0, 1, 1, 0]
    with pytest.raises(PeopleError, match="two items"):
        two_means(v[:1])


OPS = st.lists(st.tuples(st.sampled_from(["name", "merge", "split", "not"]), st.integers(0, 11), st.integers(0, 11),
                         st.sampled_from(["Ada", "Bo", "Cy"])), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_after_any_sequence_of_operations_no_constraint_is_violated_and_names_hold(bundle, records, ops) -> None:
    cor = Corrections.empty()
    people = group_gallery(records, bundle, config=CFG, corrections=cor)
    ids = list(people.entry_ids)
    for kind, i, j, name in ops:
        a, b = ids[i % len(ids)], ids[j % len(ids)]
        try:
            if kind == "name":
                change = name_person(people, a, name)
            elif kind == "merge":
                change = merge_people(people, a, b)
            elif kind == "split":
                change = split_person(people, a)
            else:
                change = not_person(people, a, b)
            cor = checked(people, change.applied_to(cor))
        except CmceError:
            continue  # refused: cor is unchanged
        people = group_gallery(records, bundle, config=CFG, corrections=cor)
        _assert_honoured(people, cor)
