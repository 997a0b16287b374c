"""Erasure: ``forget_entries`` rewrites every file holding the faces; their bytes are gone from the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import found_on_disk
from test_store import make_records

from cmce.errors import GalleryError, UnknownEntryError
from cmce.search.index import VectorIndex
from cmce.storage.corrections import add_corrections, read_corrections
from cmce.storage.derived import write_derived
from cmce.storage.forget import entries_named, forget_entries, person_names
from cmce.storage.manifest import MANIFEST, locked, require_manifest, write_manifest
from cmce.storage.read import read_gallery
from cmce.storage.records import DerivedData, GalleryRecords
from cmce.storage.shards import _write_parquet
from cmce.storage.staging import (
    StagingJob,
    read_skipped,
    remove_orphans,
    skipped_table,
    write_staged,
)
from cmce.storage.write import append_embeddings, write_gallery

ERASED = ("h1:0", "h5:0")  # in different shards (4 rows per shard)


def build_gallery(folder: Path) -> GalleryRecords:
    """A gallery holding every kind of file ``forget`` must rewrite, returned as the records it holds.

    Two entry shards (thumbnails of random bytes, as incompressible as JPEG), a backfill
    shard holding an erased entry's embedding, a skipped table with an erased photo's hash,
    corrections naming and linking erased and kept entries, derived data (an index of the
    entries' vectors) and a stopped indexing job whose staged batch holds an erased entry.
    """
    records = make_records(7, missing_b=(2, 5))
    rng = np.random.default_rng(7)
    records.thumbnail = np.array([rng.bytes(600) for _ in range(7)] + [None], dtype=object)[:7]
    write_gallery(folder, records, shard_rows=4)
    beta = records.backbones["beta@unpinned"]
    patch = make_records(7, seed=3, missing_b=()).embeddings["beta@unpinned"][[5, 2]]
    append_embeddings(folder, beta, ["h5:0", "h2:0"], patch)  # backfill: h5 gets its beta embedding
    records.embeddings["beta@unpinned"][[5, 2]] = patch
    records.present["beta@unpinned"][[5, 2]] = True
    with locked(folder):
        manifest = require_manifest(folder)
        (folder / "skipped").mkdir()
        _write_parquet(skipped_table(["/p/x.jpg", "/p/y.jpg"], ["x.jpg", "y.jpg"], ["h5", "zz"],
                                     ["no face found", "no face found"]), folder / "skipped/skipped-000000.parquet")
        manifest["skipped"] = [{"file": "skipped/skipped-000000.parquet", "rows": 2,
                                "bytes": (folder / "skipped/skipped-000000.parquet").stat().st_size}]
        write_manifest(folder, manifest)
    add_corrections(folder, must_link=[("h0:0", "h1:0"), ("h0:0", "h3:0")], cannot_link=[("h5:0", "h6:0")],
                    names={"h0:0": "Ada", "h1:0": "Ada", "h3:0": "Ada", "h5:0": "Bob"})
    vectors = records.embeddings["alpha@aaaaaaaaaaaa"]
    index = VectorIndex(8)
    index.add(vectors)
    write_derived(folder, DerivedData("f" * 64, {"query": "alpha"}, ("alpha",), np.ones((7, 1), bool),
                                      np.full(7, np.nan, np.float32), np.arange(7, dtype=np.float32),
                                      Path("index.npz")), index)
    job = StagingJob.start(folder)
    write_staged(folder, "b1", records.take([1]), None, job=job.name)
    job.release()  # a job that stopped before committing
    return records


def erased_bytes(records: GalleryRecords, ids=ERASED) -> dict[str, bytes]:
    """What must be gone from disk: each erased entry's thumbnail and raw embeddings (float32 bytes)."""
    out = {}
    for i, entry in enumerate(records.entry_id.tolist()):
        if entry in ids:
            out[f"{entry} thumbnail"] = records.thumbnail[i][100:400]
            for key, emb in records.embeddings.items():
                if records.present[key][i]:
                    out[f"{entry} {key}"] = np.asarray(emb[i], "<f4").tobytes()
    return out


def listed_files(folder: Path) -> set[str]:
    """The files a gallery is made of: the manifest, the lock, what it lists, and its derived folder."""
    manifest = json.loads((folder / MANIFEST).read_text())
    out = {MANIFEST, ".lock"} | {s["file"] for k in ("shards", "skipped", "corrections") for s in manifest.get(k, [])}
    if manifest.get("derived"):
        out |= {str(p.relative_to(folder)) for p in (folder / manifest["derived"]["path"]).rglob("*") if p.is_file()}
    return out


def test_forget_rewrites_every_file_and_the_bytes_are_gone_from_disk(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    records = build_gallery(folder)
    needles = erased_bytes(records)
    assert len(needles) == 2 + 2 + 2  # a thumbnail each; alpha for both, beta for h1 and (backfilled) h5
    before = found_on_disk(folder, needles)
    assert set(before) == set(needles)  # the search does find them while they are stored
    assert any(f.startswith("staging/") for f in before["h1:0 thumbnail"])
    vectors = {f"{e} vector": np.asarray(records.embeddings["alpha@aaaaaaaaaaaa"][i], "<f4").tobytes()
               for i, e in enumerate(records.entry_id.tolist()) if e in ERASED}
    assert any(f.startswith("derived/") for f in found_on_disk(folder, vectors)["h1:0 vector"])

    report = forget_entries(folder, ERASED)

    assert found_on_disk(folder, needles) == {}
    stored = read_gallery(folder)
    kept = [e for e in records.entry_id.tolist() if e not in ERASED]
    assert stored.records.entry_id.tolist() == kept
    for key in records.backbones:  # every other entry keeps its embeddings, backfilled ones included
        rows = [records.entry_id.tolist().index(e) for e in kept]
        np.testing.assert_array_equal(stored.records.embeddings[key], records.embeddings[key][rows])
        np.testing.assert_array_equal(stored.records.present[key], records.present[key][rows])
    assert [r for r in read_skipped(folder).column("content_hash").to_pylist()] == ["zz"]
    c = read_corrections(folder)
    assert c.must_link.tolist() == [["h0:0", "h3:0"]] and len(c.cannot_link) == 0
    assert dict(c.names) == {"h0:0": "Ada", "h3:0": "Ada"}
    assert stored.derived is None and report.derived_dropped is not None
    assert report.staged_files == 1 and report.skipped_rows == 1 and report.corrections == 4
    assert {old for old, _ in report.shards_rewritten} == {"shards/entries-000000.parquet",
                                                           "shards/entries-000001.parquet",
                                                           "shards/embeddings-000002.parquet"}
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == listed_files(folder)  # nothing else: old shards, derived data, staging all gone
    assert remove_orphans(folder) == []


def test_a_person_is_found_by_correction_name_or_shard_label(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    build_gallery(folder)
    assert entries_named(folder, "Ada") == ("h0:0", "h1:0", "h3:0")  # correction names
    assert entries_named(folder, "person2") == ("h2:0",)  # shard labels (h5:0's became "Bob")
    assert person_names(folder)["Bob"] == 1
    with pytest.raises(UnknownEntryError) as e:
        entries_named(folder, "Zoe")
    assert "the names are 'Ada', 'Bob', 'person0', 'person2'" in str(e.value)  # person1: h1 renamed, h4 unlabelled


def test_unknown_ids_are_refused_by_name_and_nothing_changes(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    build_gallery(folder)
    before = {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    with pytest.raises(UnknownEntryError) as e:
        forget_entries(folder, ["h1:0", "nobody:3"])
    assert "'nobody:3'" in str(e.value) and "holds 7 entries" in str(e.value) and "'h0:0'" in str(e.value)
    with pytest.raises(GalleryError, match="at least one entry"):
        forget_entries(folder, [])
    assert {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before


def test_forget_waits_for_no_running_indexing_job(tmp_path: Path) -> None:
    folder = write_gallery(tmp_path / "g", make_records())
    job = StagingJob.start(folder)
    try:
        with pytest.raises(GalleryError, match="indexing job is running"):
            forget_entries(folder, ["h1:0"])
    finally:
        job.close()
    assert forget_entries(folder, ["h1:0"]).entries == ("h1:0",)


def test_forgetting_every_entry_of_a_shard_unlists_it(tmp_path: Path) -> None:
    folder = write_gallery(tmp_path / "g", make_records(), shard_rows=4)
    report = forget_entries(folder, ["h4:0", "h5:0", "h6:0"])
    assert report.shards_rewritten == (("shards/entries-000001.parquet", None),)
    assert read_gallery(folder).records.entry_id.tolist() == ["h0:0", "h1:0", "h2:0", "h3:0"]
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["entries-000000.parquet"]
    assert json.loads((folder / MANIFEST).read_text())["entries"] == 4


def test_forgetting_every_entry_leaves_an_empty_gallery_that_reads(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    records = build_gallery(folder)
    forget_entries(folder, records.entry_id.tolist())
    stored = read_gallery(folder)
    assert len(stored.records) == 0 and stored.manifest["shards"] == [] and stored.manifest["entries"] == 0
    assert len(read_corrections(folder)) == 0 and "skipped" in stored.manifest  # the unrelated skipped row stays
    assert found_on_disk(folder, erased_bytes(records, records.entry_id.tolist())) == {}


def test_a_version_1_gallery_is_refused_with_what_to_run(tmp_path: Path) -> None:
    from cmce.gallery.forget import forget

    (tmp_path / "gallery.json").write_text("{}")
    (tmp_path / "embeddings.npz").write_bytes(b"")
    for call in (lambda: forget_entries(tmp_path, ["a:0"]), lambda: add_corrections(tmp_path, names={"a:0": "A"}),
                 lambda: forget(tmp_path, people=["A"])):
        with pytest.raises(GalleryError, match="version 1 gallery; rewrite it as version 2 first: python -m cmce upgrade"):
            call()
