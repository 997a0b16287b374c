"""Names and erasure on a real LFW gallery: a named person is found by name, then forgotten.

After ``python -m cmce forget GALLERY --person NAME``, a byte search of every file under the
gallery folder finds none of the person's raw embeddings or thumbnails, and neither the
in-memory ``Gallery`` nor the ``ArchiveGallery`` returns their faces.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import found_on_disk, lfw_people

from cmce.cli import main
from cmce.errors import ContradictionError, UnknownEntryError
from cmce.gallery.archive import ArchiveGallery
from cmce.gallery.archive_build import ARCHIVE_KIND, build_archive_index
from cmce.gallery.memory import Gallery
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.storage.corrections import add_corrections, read_corrections
from cmce.storage.read import read_gallery

NAME = "Target Person"


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle(None))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, lfw_dir, engine) -> tuple[Path, list[Path]]:
    """A real gallery of six people, two photos each; their third photos are the queries."""
    people = lfw_people(lfw_dir, 6, min_images=3)
    items = [(p.name, p, person.name) for person in people for p in sorted(person.glob("*.jpg"))[:2]]
    folder = tmp_path_factory.mktemp("people") / "gallery"
    gallery = Gallery(engine)
    gallery.add_images(items)
    gallery.save(folder)
    return folder, [sorted(person.glob("*.jpg"))[2] for person in people]


def test_a_named_person_is_found_by_name_then_forgotten_from_disk_and_search(saved, engine, tmp_path, capsys):
    src, queries = saved
    folder, archive = tmp_path / "gallery", tmp_path / "archive"
    shutil.copytree(src, folder)
    stored = read_gallery(folder)
    target = queries[0].parent.name
    ids = [e for e, label in zip(stored.records.entry_id.tolist(), stored.records.label.tolist()) if label == target]
    assert len(ids) == 2
    add_corrections(folder, names={e: NAME for e in ids}, must_link=[tuple(ids)])
    shutil.copytree(folder, archive)
    build_archive_index(archive, engine.bundle, index="exact")

    # named: both galleries answer with the name
    assert Gallery.load(folder, engine).search_image(queries[0]).views["ensemble"].matches[0].label == NAME
    archived = ArchiveGallery.open(archive, engine.bundle, engine=engine)
    assert archived.search_image(queries[0]).views["ensemble"].matches[0].label == NAME

    needles = {}
    for i, e in enumerate(stored.records.entry_id.tolist()):
        if e in ids:
            # the end of the JPEG: entropy-coded pixels (its first ~600 bytes are the tables every thumbnail shares)
            needles[f"{e} thumbnail"] = bytes(stored.records.thumbnail[i][-400:])
            for key, emb in stored.records.embeddings.items():
                if stored.records.present[key][i]:
                    needles[f"{e} {key}"] = np.asarray(emb[i], "<f4").tobytes()
    assert len(needles) >= 4
    assert set(found_on_disk(folder, needles)) == set(needles)  # stored, and the search finds them
    assert set(found_on_disk(archive, needles)) == set(needles)
    others = [bytes(t[-400:]) for e, t in zip(stored.records.entry_id.tolist(), stored.records.thumbnail) if e not in ids]
    assert not any(needles[f"{e} thumbnail"] in t for e in ids for t in others)  # unique to the erased faces

    # unknown names: refused by name, nothing changed
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert main(["forget", str(folder), "--person", "Nobody"]) == 2
    assert f"no entry is named 'Nobody'; the names are '{queries[1].parent.name}'" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before

    bundle = str(default_bundle_path())
    for where in (folder, archive):
        assert main(["forget", str(where), "--person", NAME, "--bundle", bundle, "--json", str(tmp_path / "f.json")]) == 0
        assert found_on_disk(where, needles) == {}
        assert sorted(json.loads((tmp_path / "f.json").read_text())["entries"]) == sorted(ids)

    g = Gallery.load(folder, engine)
    assert len(g) == len(stored.records) - 2 and len(read_corrections(folder)) == 0
    archived = ArchiveGallery.open(archive, engine.bundle, engine=engine)
    derived = read_gallery(archive).manifest["derived"]
    assert derived["kind"] == ARCHIVE_KIND  # rebuilt for the bundle, of the same index kind
    assert json.loads((archive / derived["path"] / "meta.json").read_text())["index"] == "exact"
    for query in queries:
        for result in (g.search_image(query, k=10), archived.search_image(query, k=10)):
            matches = result.views["ensemble"].matches
            assert not {m.entry_id for m in matches} & set(ids) and NAME not in {m.label for m in matches}
    # the other people are still found
    for query in queries[1:]:
        assert g.search_image(query).views["ensemble"].matches[0].label == query.parent.name
        assert archived.search_image(query).views["ensemble"].matches[0].label == query.parent.name


def test_an_in_memory_gallery_keeps_its_corrections_through_save_and_load(saved, engine, tmp_path):
    src, queries = saved
    g = Gallery.load(src, engine)
    ids = g.entry_ids()
    with pytest.raises(UnknownEntryError, match="no entry 'nobody:0'"):
        g.add_corrections(names={"nobody:0": "X"})
    g.add_corrections(must_link=[(ids[0], ids[1])], cannot_link=[(ids[0], ids[2])], names={ids[2]: "Someone"})
    with pytest.raises(ContradictionError):
        g.add_corrections(must_link=[(ids[1], ids[2])])
    assert g.entries[2].label == "Someone"
    g.remove([1])  # the must-link mentioning it is not saved
    g.save(tmp_path / "g")
    back = Gallery.load(tmp_path / "g", engine)
    assert back.corrections.must_link.shape == (0, 2)
    assert back.corrections.cannot_link.tolist() == [sorted([ids[0], ids[2]])]
    assert back.entries[1].label == "Someone"  # position 2 before the removal
