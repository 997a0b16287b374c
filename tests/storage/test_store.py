"""The on-disk gallery format: Parquet shards of raw embeddings, a manifest, derived data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmce.errors import GalleryError
from cmce.storage.derived import read_derived, write_derived
from cmce.storage.manifest import FORMAT_VERSION
from cmce.storage.read import read_gallery
from cmce.storage.records import (
    IMAGE_QUALITY_COLUMNS,
    BackboneRecord,
    DerivedData,
    GalleryRecords,
)
from cmce.storage.write import append_embeddings, write_gallery


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def make_records(n: int = 7, seed: int = 0, missing_b: tuple[int, ...] = (2, 5)) -> GalleryRecords:
    """``n`` entries with backbone a (all) and b (all but ``missing_b``)."""
    rng = np.random.default_rng(seed)
    a, b = BackboneRecord("alpha", "a" * 64, 8), BackboneRecord("beta", None, 4)
    present_b = np.ones(n, bool)
    present_b[list(missing_b)] = False
    emb_b = _unit(rng, n, 4)
    emb_b[~present_b] = 0
    return GalleryRecords(
        entry_id=_objects([f"h{i}:0" for i in range(n)]),
        content_hash=_objects([f"h{i}" for i in range(n)]),
        source=_objects([f"photo {i}.jpg" for i in range(n)]),
        uri=_objects([f"/photos/{i}.jpg" if i % 2 else None for i in range(n)]),
        label=_objects([f"person{i % 3}" if i != 4 else None for i in range(n)]),
        box=rng.random((n, 4)).astype(np.float32),
        landmarks=rng.random((n, 5, 2)).astype(np.float32),
        probability=rng.random(n).astype(np.float32),
        image_size=rng.integers(50, 500, (n, 2)).astype(np.int32),
        thumbnail=_objects([bytes([i]) * (i + 1) if i != 3 else None for i in range(n)]),
        backbones={a.key: a, b.key: b},
        embeddings={a.key: _unit(rng, n, 8), b.key: emb_b},
        present={a.key: np.ones(n, bool), b.key: present_b},
        face_px=np.where(np.arange(n) == 1, np.nan, rng.uniform(16, 200, n)).astype(np.float32),  # 1: not measured
        sharpness=np.where(np.arange(n) == 1, np.nan, rng.random(n)).astype(np.float32),
        exposure=np.where(np.arange(n) == 1, np.nan, rng.random(n)).astype(np.float32),
    )


def assert_same(x: GalleryRecords, y: GalleryRecords) -> None:
    for name in ("entry_id", "content_hash", "source", "uri", "label", "thumbnail"):
        assert getattr(x, name).tolist() == getattr(y, name).tolist(), name
    for name in ("box", "landmarks", "probability", "image_size", *IMAGE_QUALITY_COLUMNS):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name))  # NaN equals NaN here
    assert x.backbones == y.backbones
    for k in x.backbones:
        np.testing.assert_array_equal(x.embeddings[k], y.embeddings[k])
        np.testing.assert_array_equal(x.present[k], y.present[k])


def test_round_trip_keeps_every_column_and_missing_members(tmp_path: Path) -> None:
    records = make_records()
    write_gallery(tmp_path / "g", records, shard_rows=3)  # three shards: 3 + 3 + 1
    stored = read_gallery(tmp_path / "g")
    assert_same(records, stored.records)
    m = stored.manifest
    assert m["format_version"] == FORMAT_VERSION and m["entries"] == 7
    assert [s["rows"] for s in m["shards"]] == [3, 3, 1]
    assert set(m["backbones"]) == {"alpha@aaaaaaaaaaaa", "beta@unpinned"}  # keyed by weights checksum
    assert stored.derived is None


def test_backfill_shards_fill_in_missing_members(tmp_path: Path) -> None:
    records = make_records()
    write_gallery(tmp_path / "g", records)
    b = records.backbones["beta@unpinned"]
    new = _unit(np.random.default_rng(1), 2, 4)
    append_embeddings(tmp_path / "g", b, ["h5:0", "h2:0"], new)
    # a third backbone, for two entries only
    c = BackboneRecord("gamma", "c" * 64, 3)
    append_embeddings(tmp_path / "g", c, ["h0:0", "h6:0"], _unit(np.random.default_rng(2), 2, 3))
    got = read_gallery(tmp_path / "g").records
    assert got.present[b.key].all()
    np.testing.assert_array_equal(got.embeddings[b.key][[5, 2]], new)
    np.testing.assert_array_equal(got.embeddings[b.key][[0, 1, 3, 4, 6]], records.embeddings[b.key][[0, 1, 3, 4, 6]])
    assert got.present[c.key].tolist() == [True, False, False, False, False, False, True]
    assert not got.embeddings[c.key][1:6].any()
    with pytest.raises(GalleryError, match="names entries the gallery does not hold"):
        append_embeddings(tmp_path / "g", c, ["nobody:0"], _unit(np.random.default_rng(3), 1, 3))
        read_gallery(tmp_path / "g")


def test_a_half_written_shard_is_never_read(tmp_path: Path, monkeypatch) -> None:
    records = make_records()
    write_gallery(tmp_path / "g", records)
    before = (tmp_path / "g" / "manifest.json").read_bytes()
    import pyarrow.parquet as pq

    def dies_mid_write(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        append_embeddings(tmp_path / "g", records.backbones["beta@unpinned"], ["h2:0"], np.eye(1, 4, dtype=np.float32))
    monkeypatch.undo()
    assert (tmp_path / "g" / "manifest.json").read_bytes() == before
    assert not list((tmp_path / "g" / "shards").glob(".*"))  # the temporary file is gone too
    assert_same(records, read_gallery(tmp_path / "g").records)


def test_derived_data_is_used_only_while_it_matches(tmp_path: Path) -> None:
    from cmce.search.index import VectorIndex

    records = make_records()
    write_gallery(tmp_path / "g", records)
    vecs = records.embeddings["alpha@aaaaaaaaaaaa"]
    index = VectorIndex(8)
    index.add(vecs)
    derived = DerivedData("f" * 64, {"query": "alpha"}, ("alpha",), np.ones((7, 1), bool),
                          np.full(7, np.nan, np.float32), np.arange(7, dtype=np.float32), Path("index.npz"))
    write_derived(tmp_path / "g", derived, index)
    stored = read_gallery(tmp_path / "g")
    got = read_derived(stored, "f" * 64)
    assert got is not None and got.members == ("alpha",)
    np.testing.assert_array_equal(got.quality, np.arange(7))
    assert VectorIndex.load(got.index_path).search(vecs[:1], k=1).positions[0, 0] == 0
    assert read_derived(stored, "e" * 64) is None  # another bundle
    append_embeddings(tmp_path / "g", records.backbones["beta@unpinned"], ["h2:0"], np.eye(1, 4, dtype=np.float32))
    assert read_derived(read_gallery(tmp_path / "g"), "f" * 64) is None  # shards changed since


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda g: (g / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda g: (g / "manifest.json").write_text(json.dumps({"format": "other"})), "not a cmce gallery manifest"),
        (lambda g: _set_version(g, 99), "format version 99; this cmce reads versions 1 and 2 .upgrade cmce"),
        (lambda g: next((g / "shards").glob("*.parquet")).unlink(), "listed in manifest.json but missing"),
        (lambda g: _flip_a_byte(next((g / "shards").glob("*.parquet"))), "is corrupt or cannot be read"),
        (lambda g: _truncate(next((g / "shards").glob("*.parquet"))), r"is corrupt \(\d+ bytes"),
    ],
)
def test_damaged_galleries_are_refused_with_the_reason(tmp_path: Path, damage, message) -> None:
    write_gallery(tmp_path / "g", make_records())
    damage(tmp_path / "g")
    with pytest.raises(GalleryError, match=message):
        read_gallery(tmp_path / "g")


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="no such gallery folder"):
        read_gallery(tmp_path / "nothing here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="not a saved gallery"):
        read_gallery(tmp_path / "empty")


def _set_version(folder: Path, version: int) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m["format_version"] = version
    (folder / "manifest.json").write_text(json.dumps(m))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def test_slim_read_has_what_reprojection_needs(tmp_path: Path) -> None:
    records = make_records()
    write_gallery(tmp_path / "g", records, shard_rows=4)
    append_embeddings(tmp_path / "g", records.backbones["beta@unpinned"], ["h2:0"], np.eye(1, 4, dtype=np.float32))
    full = read_gallery(tmp_path / "g").records
    slim = read_gallery(tmp_path / "g", metadata=False).records
    assert slim.entry_id.tolist() == full.entry_id.tolist()
    np.testing.assert_array_equal(slim.probability, full.probability)
    for k in full.backbones:
        np.testing.assert_array_equal(slim.embeddings[k], full.embeddings[k])
        np.testing.assert_array_equal(slim.present[k], full.present[k])
    assert set(slim.source.tolist()) == {None} and not slim.box.any()  # not read
    assert all(np.isnan(getattr(slim, c)).all() for c in IMAGE_QUALITY_COLUMNS)


def test_appending_entries_is_idempotent_and_keeps_the_other_shards(tmp_path: Path) -> None:
    from cmce.storage.write import append_entries

    records = make_records(7)
    write_gallery(tmp_path / "g", records.take(np.arange(4)))
    first = sorted((tmp_path / "g" / "shards").iterdir())
    before = {p.name: p.read_bytes() for p in first}
    assert append_entries(tmp_path / "g", records.take(np.arange(2, 7))) == 3  # 2 and 3 are there already
    assert append_entries(tmp_path / "g", records.take(np.arange(2, 7))) == 0  # a re-run writes nothing
    assert {p.name: p.read_bytes() for p in first} == before  # earlier shards untouched
    stored = read_gallery(tmp_path / "g")
    assert_same(records, stored.records)
    assert stored.manifest["entries"] == 7 and len(stored.manifest["shards"]) == 2
    bad = make_records(1, missing_b=())
    bad.entry_id[0] = "new:0"
    rec = bad.backbones.pop("alpha@aaaaaaaaaaaa")
    wide = BackboneRecord(rec.name, rec.sha256, 16)
    bad.backbones[wide.key] = wide
    bad.embeddings[wide.key] = np.zeros((1, 16), np.float32)
    bad.present[wide.key] = bad.present.pop("alpha@aaaaaaaaaaaa")
    bad.embeddings.pop("alpha@aaaaaaaaaaaa")
    with pytest.raises(GalleryError, match="holds alpha@aaaaaaaaaaaa as 8-d, not 16-d"):
        append_entries(tmp_path / "g", bad)


def test_shards_may_hold_different_backbones(tmp_path: Path) -> None:
    from cmce.storage.write import append_entries

    old = make_records(4, missing_b=(2,))
    write_gallery(tmp_path / "g", old)
    new = make_records(3, seed=1, missing_b=())
    new.entry_id = np.array([f"n{i}:0" for i in range(3)], dtype=object)
    c = BackboneRecord("gamma", "c" * 64, 3)
    new.backbones[c.key], new.embeddings[c.key] = c, _unit(np.random.default_rng(5), 3, 3)
    new.present[c.key] = np.ones(3, bool)
    del new.backbones["beta@unpinned"], new.embeddings["beta@unpinned"], new.present["beta@unpinned"]
    assert append_entries(tmp_path / "g", new) == 3
    got = read_gallery(tmp_path / "g").records
    assert got.present[c.key].tolist() == [False] * 4 + [True] * 3
    assert got.present["beta@unpinned"].tolist() == old.present["beta@unpinned"].tolist() + [False] * 3
    np.testing.assert_array_equal(got.embeddings[c.key][4:], new.embeddings[c.key])
    assert got.source.tolist() == old.source.tolist() + new.source.tolist()


def test_image_quality_columns_round_trip_and_are_carried_by_take(tmp_path: Path) -> None:
    records = make_records()
    stored = read_gallery(write_gallery(tmp_path / "g", records, shard_rows=3)).records
    assert stored.face_px.dtype == stored.sharpness.dtype == stored.exposure.dtype == np.float32
    assert np.isnan(stored.face_px[1]) and np.isfinite(np.delete(stored.face_px, 1)).all()
    q = stored.image_quality(0)
    assert (q.face_px, q.sharpness, q.exposure) == (records.face_px[0], records.sharpness[0], records.exposure[0])
    assert not stored.image_quality(1).known
    rows = np.array([4, 1, 0])
    assert_same(records.take(rows), stored.take(rows))
    assert all(len(getattr(GalleryRecords.empty(), c)) == 0 for c in IMAGE_QUALITY_COLUMNS)


def test_records_without_image_quality_are_not_measured() -> None:
    records = make_records()
    bare = GalleryRecords(*(getattr(records, f) for f in ("entry_id", "content_hash", "source", "uri", "label", "box",
                                                          "landmarks", "probability", "image_size", "thumbnail")))
    assert all(np.isnan(getattr(bare, c)).all() and getattr(bare, c).shape == (7,) for c in IMAGE_QUALITY_COLUMNS)
    with pytest.raises(GalleryError, match="sharpness has 3 rows, entry_id 7"):
        GalleryRecords(*(getattr(bare, f) for f in ("entry_id", "content_hash", "source", "uri", "label", "box",
                                                     "landmarks", "probability", "image_size", "thumbnail")),
                       sharpness=np.zeros(3, np.float32))


def test_shards_written_before_the_image_quality_columns_read_as_not_measured(tmp_path: Path) -> None:
    """A gallery saved before the columns existed (one shard of two lacks them) reads, with NaN there."""
    import pyarrow.parquet as pq

    records = make_records()
    write_gallery(tmp_path / "g", records, shard_rows=4)  # two shards: 4 + 3 rows
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    info = manifest["shards"][0]
    shard = tmp_path / "g" / info["file"]
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns(list(IMAGE_QUALITY_COLUMNS) + ["detector", "detection_pass"]), shard,
                   write_page_checksum=True)
    info["bytes"] = shard.stat().st_size
    (tmp_path / "g" / "manifest.json").write_text(json.dumps(manifest))
    old = read_gallery(tmp_path / "g").records
    for c in IMAGE_QUALITY_COLUMNS:
        assert np.isnan(getattr(old, c)[:4]).all()
        np.testing.assert_array_equal(getattr(old, c)[4:], getattr(records, c)[4:])
    assert old.detection_pass.tolist() == ["first"] * 7
    assert_same(records.take(np.arange(4, 7)), old.take(np.arange(4, 7)))
