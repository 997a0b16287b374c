"""`cmce people GALLERY --name/--merge/--split/--not/--compare-with`, and people and names across `cmce upgrade`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from people_records import synthetic_records

from cmce.cli import main
from cmce.errors import PeopleError
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.people.compare import PartitionChange, compare_partitions, partition_of
from cmce.storage.corrections import read_corrections
from cmce.storage.write import write_gallery

FACENET = default_bundle_path().parent / "facenet-query"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(str(default_bundle_path()))


def _people(folder: Path, capsys, *extra: str, bundle: str | None = None) -> tuple[int, str, str]:
    args = ["people", str(folder), "--threshold", "0.5", *extra] + (["--bundle", bundle] if bundle else [])
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_each_correction_prints_what_changed_and_the_new_summary(tmp_path: Path, bundle, capsys) -> None:
    records = synthetic_records(bundle, people=4, per=3)
    ids = records.entry_id.tolist()
    folder = tmp_path / "g"
    write_gallery(folder, records)
    code, out, _ = _people(folder, capsys, "--json", str(tmp_path / "p.json"))
    doc = json.loads((tmp_path / "p.json").read_text())
    assert code == 0 and out.strip().splitlines()[-1] == doc["summary"]
    keys = [line.split()[0] for line in out.splitlines()[:-1]]
    assert len(keys) == len(doc["people"])  # one line per person: its key, typed back below
    person_of_6 = next(p for p in doc["people"] if ids[6] in p["entry_ids"])
    typed = keys[doc["people"].index(person_of_6)]

    code, out, _ = _people(folder, capsys, "--name", typed, "Ada")
    assert code == 0 and out.startswith(f"named person {typed} (3 faces) 'Ada'")
    assert "'Ada'" in out and out.strip().splitlines()[-1].endswith("unsure")
    assert {e for e, n in read_corrections(folder).names.items() if n == "Ada"} == set(ids[6:9])

    code, out, _ = _people(folder, capsys, "--merge", "Ada", ids[9])
    assert code == 0 and out.startswith("merged person Ada (3 faces)") and "'Ada'                       6 faces" in out

    code, out, _ = _people(folder, capsys, "--split", "Ada")
    assert code == 0 and out.startswith("split person Ada (6 faces) into 3 and 3 faces")

    code, out, _ = _people(folder, capsys, "--not", ids[7], "Ada")
    assert code == 0 and out.startswith(f"entry {ids[7]} is not person Ada: 2 cannot-links")

    before = read_corrections(folder)
    for bad, message in ((["--merge", "Ada", "Ada"], "same person"), (["--name", "Nobody", "X"], "no person 'Nobody'"),
                         (["--not", "nope", "Ada"], "no entry 'nope'")):
        code, _, err = _people(folder, capsys, *bad)
        assert code == 2 and message in err
    assert read_corrections(folder) == before


def test_compare_partitions_counts_faces_that_changed_person() -> None:
    old = {"a": 0, "b": 0, "c": 1, "d": 1, "e": None, "gone": 0}
    new = {"a": 5, "b": 5, "c": 5, "d": 7, "e": 7, "f": 7}
    change = compare_partitions(old, new)
    assert change == PartitionChange(faces=5, changed=2, to_unsure=0, from_unsure=1, only_old=1, only_new=1)
    assert change.summary().startswith("2 of 5 faces changed person (0 now unsure, 1 no longer unsure)")
    assert compare_partitions(old, old).changed == 0
    with pytest.raises(PeopleError, match="cmce people --json"):
        partition_of({"people": [{"entry_ids": ["a"]}]})


def test_names_carry_over_an_upgrade_and_the_regrouping_reports_what_changed(tmp_path, bundle, capsys) -> None:
    folder = tmp_path / "g"
    records = synthetic_records(bundle, people=4, per=3)
    write_gallery(folder, records)
    ids = records.entry_id.tolist()
    assert _people(folder, capsys, "--name", ids[6], "Bo", "--json", str(tmp_path / "old.json"))[0] == 0
    assert main(["upgrade", str(folder), "--bundle", str(FACENET), "--quiet"]) == 0
    capsys.readouterr()
    code, out, _ = _people(folder, capsys, "--compare-with", str(tmp_path / "old.json"), "--json",
                           str(tmp_path / "new.json"), bundle=str(FACENET))
    new = json.loads((tmp_path / "new.json").read_text())
    bo = next(p for p in new["people"] if p["name"] == "Bo")
    assert code == 0 and sorted(bo["entry_ids"]) == ids[6:9]
    line = out.strip().splitlines()[-2]
    expected = compare_partitions(partition_of(json.loads((tmp_path / "old.json").read_text())), partition_of(new))
    assert line == expected.summary() and "of 12 faces changed person" in line
    code, _, err = _people(folder, capsys, "--compare-with", str(tmp_path / "missing.json"), bundle=str(FACENET))
    assert code == 2 and "--compare-with needs a JSON file" in err
