"""group_gallery over a saved gallery folder, and the `people` command's summary and JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from people_records import synthetic_records

from cmce.cli import main
from cmce.errors import PeopleError
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.people import GroupingConfig
from cmce.people.library import bundle_grouping_config, group_gallery
from cmce.storage.write import write_gallery

_records = synthetic_records


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(str(default_bundle_path()))


def test_a_gallery_folder_is_grouped_with_entry_ids_and_sources(tmp_path: Path, bundle) -> None:
    records = _records(bundle)
    write_gallery(tmp_path / "g", records)
    people = group_gallery(tmp_path / "g", bundle, config=GroupingConfig(threshold=0.5))
    doc = people.to_dict()
    assert doc["summary"] == people.summary()
    ids = [e for p in doc["people"] for e in p["entry_ids"]] + [u["entry_id"] for u in doc["unsure"]]
    assert sorted(ids) == sorted(records.entry_id.tolist())
    where = {e: p["id"] for p in doc["people"] for e in p["entry_ids"]}
    assert where[records.entry_id[0]] != where[records.entry_id[1]]  # one photo, two people
    p0 = next(p for p in doc["people"] if records.entry_id[5] in p["entry_ids"])
    assert p0["source_files"] == [f"photo{records.entry_id.tolist().index(e)}.jpg" for e in p0["entry_ids"]]


def test_names_and_constraints_are_keyed_by_entry_id(tmp_path: Path, bundle) -> None:
    records = _records(bundle)
    ids = records.entry_id.tolist()
    people = group_gallery(records, bundle, config=GroupingConfig(threshold=0.5), known_labels={ids[3]: "Ada"},
                           must_link=[(ids[3], ids[9])], cannot_link=[(ids[6], ids[7])])
    lab = people.grouping.labels
    assert lab[3] == lab[9] and lab[6] != lab[7]
    assert people.grouping.people[lab[3]].name == "Ada"
    with pytest.raises(PeopleError, match="unknown entry id"):
        group_gallery(records, bundle, config=GroupingConfig(threshold=0.5), must_link=[(ids[0], "nope:0")])


def test_a_bundle_without_grouping_calibration_says_how_to_make_one(bundle) -> None:
    bare = dataclasses.replace(bundle, info={k: v for k, v in bundle.info.items() if k != "people"})
    with pytest.raises(PeopleError, match="--people --record"):
        bundle_grouping_config(bare)


def test_the_people_command_prints_the_summary_and_writes_json(tmp_path: Path, bundle, capsys) -> None:
    write_gallery(tmp_path / "g", _records(bundle))
    assert main(["people", str(tmp_path / "g"), "--threshold", "0.5", "--json", str(tmp_path / "p.json"),
                 "--min-faces", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    doc = json.loads((tmp_path / "p.json").read_text())
    assert line == doc["summary"] and line.endswith("unsure")
    assert all(len(p["entry_ids"]) >= 2 for p in doc["people"])
    few = [u for u in doc["unsure"] if u["reason"] == "few faces"]  # face 1 shares a photo with face 0: alone
    assert few and set(few[0]) == {"entry_id", "source_file", "reason"} and few[0]["source_file"] == "photo1.jpg"
    assert main(["people", str(tmp_path / "nothing")]) == 2


def test_evaluate_people_needs_the_heldout_split(capsys) -> None:
    assert main(["evaluate", "nowhere", "--people"]) == 2
    assert "add --heldout" in capsys.readouterr().err
