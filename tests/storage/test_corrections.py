"""The user's corrections as data: must-links, cannot-links and names beside the raw embeddings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_store import make_records

from cmce.errors import (
    ContradictionError,
    CorrectionError,
    GalleryError,
    UnknownEntryError,
)
from cmce.storage.corrections import (
    Corrections,
    add_corrections,
    check_corrections,
    read_corrections,
    remove_corrections,
    write_corrections,
)
from cmce.storage.manifest import CORRECTIONS, MANIFEST
from cmce.storage.read import read_gallery
from cmce.storage.staging import remove_orphans
from cmce.storage.write import append_entries, write_gallery

IDS = [f"h{i}:0" for i in range(7)]  # make_records' entry ids


@pytest.fixture()
def gallery(tmp_path: Path) -> Path:
    return write_gallery(tmp_path / "g", make_records())


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corrections_round_trip_and_names_become_labels(gallery: Path) -> None:
    assert read_corrections(gallery) == Corrections.empty()
    out = add_corrections(gallery, must_link=[("h1:0", "h0:0")], cannot_link=[("h2:0", "h3:0")],
                          names={"h0:0": "Ada", "h1:0": "Ada"})
    assert out.must_link.tolist() == [["h0:0", "h1:0"]]  # pairs ordered
    assert out.must_link.shape == (1, 2) and out.cannot_link.shape == (1, 2)
    assert read_corrections(gallery) == out
    stored = read_gallery(gallery)
    assert stored.corrections == out
    labels = dict(zip(stored.records.entry_id.tolist(), stored.records.label.tolist()))
    assert labels["h0:0"] == labels["h1:0"] == "Ada"  # the overlay beats the shard label
    assert labels["h2:0"] == "person2"  # unnamed: the shard label
    # renaming replaces; a second add keeps the earlier pairs
    out = add_corrections(gallery, names={"h0:0": "Ada L."}, must_link=[("h1:0", "h5:0")])
    assert out.names["h0:0"] == "Ada L." and len(out.must_link) == 2
    manifest = json.loads((gallery / MANIFEST).read_text())
    assert [c["file"] for c in manifest[CORRECTIONS]] == ["people/corrections-000001.parquet"]
    assert sorted(p.name for p in (gallery / "people").iterdir()) == ["corrections-000001.parquet"]  # old one gone


def test_corrections_are_immutable(gallery: Path) -> None:
    c = add_corrections(gallery, must_link=[("h0:0", "h1:0")], names={"h0:0": "Ada"})
    with pytest.raises(ValueError):
        c.must_link[0, 0] = "h6:0"
    with pytest.raises(TypeError):
        c.names["h0:0"] = "Eve"


@pytest.mark.parametrize("change, error, words", [
    (dict(must_link=[("h0:0", "nope:0")]), UnknownEntryError, ["'nope:0'", "7 entries", "'h0:0'"]),
    (dict(names={"ghost:1": "Ann"}), UnknownEntryError, ["'ghost:1'", "7 entries"]),
    (dict(must_link=[("h2:0", "h3:0")]), ContradictionError, ["both must-linked and cannot-linked"]),
    # a chain of must-links h2 = h4 = h3 reaches the stored cannot-link h2 / h3
    (dict(must_link=[("h2:0", "h4:0"), ("h4:0", "h3:0")]), ContradictionError,
     ["cannot-linked", "'h2:0' = 'h4:0' = 'h3:0'"]),
    (dict(cannot_link=[("h5:0", "h5:0")]), CorrectionError, ["with itself"]),
    (dict(names={"h0:0": "  "}), CorrectionError, ["1 to 200 characters"]),
    (dict(must_link=[("h0:0",)]), CorrectionError, ["not a pair"]),
])
def test_bad_corrections_are_refused_by_name_and_nothing_changes(gallery: Path, change, error, words) -> None:
    add_corrections(gallery, cannot_link=[("h2:0", "h3:0")])
    before = _files(gallery)
    with pytest.raises(error) as e:
        add_corrections(gallery, **change)
    for w in words:
        assert w in str(e.value)
    assert _files(gallery) == before


def test_a_must_link_chain_found_by_union_find_matches_a_naive_closure() -> None:
    """Random corrections: ``check_corrections`` refuses exactly those where the transitive closure of the
    must-links (computed naively, by repeated relaxation) holds a cannot-linked pair."""
    rng = random.Random(0)
    ids = [f"e{i}" for i in range(9)]
    refused = accepted = 0
    for _ in range(300):
        must = [tuple(rng.sample(ids, 2)) for _ in range(rng.randint(0, 6))]
        cannot = [tuple(rng.sample(ids, 2)) for _ in range(rng.randint(0, 3))]
        same = {i: {i} for i in ids}
        changed = True
        while changed:
            changed = False
            for a, b in must:
                union = same[a] | same[b]
                for x in union:
                    if same[x] != union:
                        same[x], changed = set(union), True
        contradiction = any(b in same[a] for a, b in cannot)
        c = Corrections(must, cannot, {})
        if contradiction:
            with pytest.raises(ContradictionError):
                check_corrections(c, ids)
            refused += 1
        else:
            check_corrections(c, ids)
            accepted += 1
    assert refused > 30 and accepted > 30  # both sides exercised


def test_removing_corrections_undoes_a_merge_so_a_split_can_follow(gallery: Path) -> None:
    add_corrections(gallery, must_link=[("h0:0", "h1:0")], names={"h0:0": "Ada", "h1:0": "Ada"})
    with pytest.raises(ContradictionError):
        add_corrections(gallery, cannot_link=[("h1:0", "h0:0")])
    out = remove_corrections(gallery, must_link=[("h1:0", "h0:0")], names=["h1:0"])
    assert len(out.must_link) == 0 and dict(out.names) == {"h0:0": "Ada"}
    out = add_corrections(gallery, cannot_link=[("h1:0", "h0:0")])
    assert out.cannot_link.tolist() == [["h0:0", "h1:0"]]
    assert len(remove_corrections(gallery, cannot_link=[("h0:0", "h1:0")], names=["h0:0"])) == 0
    assert CORRECTIONS not in json.loads((gallery / MANIFEST).read_text())  # nothing left: no table listed
    assert not list((gallery / "people").iterdir())


def test_a_write_interrupted_before_its_manifest_leaves_the_old_corrections(gallery: Path, monkeypatch) -> None:
    import cmce.storage.corrections as corrections

    add_corrections(gallery, names={"h0:0": "Ada"})
    before = _files(gallery)

    def crash(folder, manifest):
        raise KeyboardInterrupt("killed before the manifest write")

    monkeypatch.setattr(corrections, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        add_corrections(gallery, names={"h0:0": "Eve"})
    monkeypatch.undo()
    assert dict(read_corrections(gallery).names) == {"h0:0": "Ada"}
    assert set(_files(gallery)) - set(before) == {"people/corrections-000001.parquet"}  # written, never listed
    assert remove_orphans(gallery) == ["people/corrections-000001.parquet"]
    assert _files(gallery) == before


def test_write_gallery_carries_corrections_and_checks_them(tmp_path: Path) -> None:
    records = make_records()
    c = Corrections([("h0:0", "h1:0")], [("h0:0", "h2:0")], {"h1:0": "Ada"})
    folder = write_gallery(tmp_path / "g", records, corrections=c)
    assert read_corrections(folder) == c
    with pytest.raises(UnknownEntryError):
        write_gallery(tmp_path / "h", records.take(np.arange(1, 7)), corrections=c)  # h0:0 left out
    assert not (tmp_path / "h").exists()


def test_appending_entries_keeps_the_corrections_and_new_ids_can_be_linked(gallery: Path) -> None:
    add_corrections(gallery, names={"h0:0": "Ada"})
    more = make_records(9)
    append_entries(gallery, more.take(np.arange(7, 9)))
    out = add_corrections(gallery, must_link=[("h0:0", "h8:0")])
    assert dict(out.names) == {"h0:0": "Ada"} and len(out.must_link) == 1


def test_appending_entries_with_corrections_lists_both_in_one_manifest_write(gallery: Path) -> None:
    """The shard and the corrections table appear together; refused corrections write neither."""
    add_corrections(gallery, names={"h0:0": "Ada"})
    more = make_records(10)
    before = _files(gallery)
    with pytest.raises(UnknownEntryError):
        append_entries(gallery, more.take(np.arange(7, 9)), corrections=Corrections([("h0:0", "h9:0")], [], {}))
    assert _files(gallery) == before
    c = Corrections([("h0:0", "h8:0")], [("h1:0", "h7:0")], {"h8:0": "Ada"})
    assert append_entries(gallery, more.take(np.arange(7, 9)), corrections=c) == 2
    assert read_corrections(gallery) == c
    manifest = json.loads((gallery / MANIFEST).read_text())
    listed = {info["file"] for info in manifest[CORRECTIONS]}
    assert {str(p.relative_to(gallery)) for p in gallery.rglob("corrections-*.parquet")} == listed  # the old one deleted
    assert read_gallery(gallery).records.label.tolist()[-2:] == [more.label[7], "Ada"]
    # nothing new to append: the corrections alone are stored
    assert append_entries(gallery, more.take(np.arange(7, 9)), corrections=Corrections.empty()) == 0
    assert len(read_corrections(gallery)) == 0 and CORRECTIONS not in json.loads((gallery / MANIFEST).read_text())


def test_a_version_1_or_missing_gallery_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="not a saved gallery"):
        add_corrections(tmp_path, names={"a": "b"})
    with pytest.raises(GalleryError, match="not a saved gallery"):
        write_corrections(tmp_path, Corrections.empty())
