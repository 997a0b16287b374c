"""A session's gallery after corrections: the labels it shows, and what ``save``/``save_appended`` store.

The live gallery must show what the same gallery saved and loaded again shows: a name the
user gave over an entry's own label, and the entry's own label again once a split or "not this
person" drops the name. ``save_appended`` stores the corrections as ``save`` does.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cmce.gallery.memory import Gallery
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.storage.corrections import read_corrections, remove_corrections
from cmce.storage.forget import entries_named, person_names
from cmce.storage.read import read_gallery
from cmce.storage.write import write_gallery

PEOPLE = ["Aaron_Peirsol", "Adam_Sandler", "Abel_Pacheco"]

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle())


def _photos(lfw_dir, person: str, n: int = 2) -> list:
    return sorted((lfw_dir / person).glob("*.jpg"))[:n]


def _labels(g: Gallery) -> list:
    return [g.entries[int(p)].label for p in g.positions]


def test_a_dropped_name_shows_the_entry_s_own_label_live_and_after_a_reload(engine, lfw_dir, tmp_path) -> None:
    g = Gallery(engine)
    # the first person's photos are labelled by their folder, the second's are not labelled
    g.add_images([(p.name, p, PEOPLE[0]) for p in _photos(lfw_dir, PEOPLE[0])]
                 + [(p.name, p, None) for p in _photos(lfw_dir, PEOPLE[1])])
    ids = g.entry_ids()
    assert _labels(g) == [PEOPLE[0], PEOPLE[0], None, None]

    g.add_corrections(names={ids[0]: "Ada", ids[1]: "Ada", ids[2]: "Bob", ids[3]: "Bob"},
                      must_link=[(ids[2], ids[3])])
    assert _labels(g) == ["Ada", "Ada", "Bob", "Bob"]
    g.save(tmp_path / "named")
    assert _labels(Gallery.load(tmp_path / "named", engine)) == ["Ada", "Ada", "Bob", "Bob"]

    # a split of Bob and "not this person" on one of Ada's faces drop names, as the People tab does
    split = g.corrections.without(must_link=[(ids[2], ids[3])], names=[ids[3]]).merged(cannot_link=[(ids[2], ids[3])])
    g.replace_corrections(split)
    g.replace_corrections(g.corrections.without(names=[ids[1]]).merged(cannot_link=[(ids[0], ids[1])]))
    live = _labels(g)
    assert live == ["Ada", PEOPLE[0], "Bob", None]
    g.save(tmp_path / "corrected")
    reloaded = Gallery.load(tmp_path / "corrected", engine)
    assert _labels(reloaded) == live
    assert reloaded.corrections == g.corrections
    # the names live in the corrections only: a re-projected gallery shows them the same way
    assert _labels(g.reproject(engine)) == live


def test_save_appended_stores_the_corrections(engine, lfw_dir, tmp_path) -> None:
    folder = tmp_path / "gallery"
    g = Gallery(engine)
    g.add_images([(p.name, p, None) for p in _photos(lfw_dir, PEOPLE[0])])
    g.save(folder)
    first = g.entry_ids()
    g.add_corrections(names={first[0]: "Ada"})  # a correction after the save, before the append
    since = len(g.entries)
    g.add_images([(p.name, p, None) for p in _photos(lfw_dir, PEOPLE[2])])
    ids = g.entry_ids()
    g.add_corrections(must_link=[(ids[2], ids[3])], cannot_link=[(first[0], ids[2])])
    g.save_appended(folder, since)

    assert read_corrections(folder) == g.corrections
    back = Gallery.load(folder, engine)
    assert back.corrections == g.corrections and back.entry_ids() == ids
    assert _labels(back) == ["Ada", None, None, None]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len([s for s in manifest["shards"] if s["kind"] == "entries"]) == 2  # appended, not rewritten

    # dropping every correction, then appending nothing new, empties the stored table too
    g.replace_corrections(g.corrections.without(must_link=[(ids[2], ids[3])], cannot_link=[(first[0], ids[2])],
                                                names=[first[0]]))
    g.save_appended(folder, len(g.entries))
    assert len(read_corrections(folder)) == 0
    assert _labels(Gallery.load(folder, engine)) == [None] * 4


def _shard_labels(folder) -> list:
    """The labels the entry shards hold, as written (no reader's reading of them)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return [label for info in manifest["shards"] if info["kind"] == "entries"
            for label in pq.read_table(folder / info["file"], columns=["label"]).column("label").to_pylist()]


def _legacy_save(g: Gallery, folder) -> None:
    """``g`` saved as cmce saved a gallery before names lived in the corrections only: each named entry's
    name written as its shard label (``Gallery.save`` stored the labels it showed), the corrections listed
    without the ``"shard_labels": "own"`` mark."""
    records = g.records()
    names = g.corrections.names
    records.label[:] = [names.get(e, own) for e, own in zip(records.entry_id.tolist(), records.label.tolist())]
    write_gallery(folder, records, corrections=g.corrections)
    manifest = json.loads((folder / "manifest.json").read_text())
    for info in manifest["corrections"]:
        info.pop("shard_labels", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_an_old_gallery_with_names_in_its_shard_labels_is_migrated_on_load(engine, lfw_dir, tmp_path) -> None:
    """An old gallery's shard labels hold names: once a split or "not this person" drops a name, the
    face must not show it again (live, after a reload, to ``forget --person``), and a save stores clean labels."""
    g = Gallery(engine)
    g.add_images([(p.name, p, PEOPLE[0]) for p in _photos(lfw_dir, PEOPLE[0])]
                 + [(p.name, p, None) for p in _photos(lfw_dir, PEOPLE[1])])
    ids = g.entry_ids()
    g.add_corrections(names={ids[0]: "Ada", ids[1]: "Ada", ids[2]: "Bob", ids[3]: "Bob"})
    old = tmp_path / "old"
    _legacy_save(g, old)
    assert _shard_labels(old) == ["Ada", "Ada", "Bob", "Bob"]  # the old format indeed

    loaded = Gallery.load(old, engine)
    assert _labels(loaded) == ["Ada", "Ada", "Bob", "Bob"]
    # Bob split in two, one of Ada's faces not Ada: the dropped names are not shown again
    loaded.replace_corrections(loaded.corrections.without(names=[ids[3], ids[1]])
                               .merged(cannot_link=[(ids[2], ids[3]), (ids[0], ids[1])]))
    assert _labels(loaded) == ["Ada", None, "Bob", None]  # PEOPLE[0], the label the old save overwrote, is lost
    # the same corrections stored in the old folder itself (the CLI's way): no name comes back from a shard
    remove_corrections(old, names=[ids[3], ids[1]])
    assert entries_named(old, "Bob") == (ids[2],) and entries_named(old, "Ada") == (ids[0],)
    assert person_names(old) == {"Ada": 1, "Bob": 1}
    assert _labels(Gallery.load(old, engine)) == ["Ada", None, "Bob", None]
    # saved again: the shards hold the entries' own labels, the names only the corrections
    loaded.save(tmp_path / "new")
    assert _shard_labels(tmp_path / "new") == [None] * 4
    assert read_gallery(tmp_path / "new", names_as_labels=False).records.label.tolist() == [None] * 4
    assert _labels(Gallery.load(tmp_path / "new", engine)) == ["Ada", None, "Bob", None]
    assert all(info["shard_labels"] == "own" for info in json.loads((tmp_path / "new" / "manifest.json").read_text())
               ["corrections"])
    # a gallery written now keeps an own label equal to a name: shown again once the name is dropped
    g.add_corrections(names={ids[0]: PEOPLE[0], ids[1]: PEOPLE[0]})
    g.save(tmp_path / "same")
    remove_corrections(tmp_path / "same", names=[ids[1]])
    assert _labels(Gallery.load(tmp_path / "same", engine))[:2] == [PEOPLE[0], PEOPLE[0]]
    assert entries_named(tmp_path / "same", PEOPLE[0]) == tuple(sorted(ids[:2]))
