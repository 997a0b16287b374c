"""The indexing pipeline in-process: listing, the same entries as ``Gallery.add_images``,
resume after an interrupted run, idempotent commits, and bad input. Real models, real LFW faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmce.cli import main
from cmce.errors import DatasetError, GalleryError
from cmce.gallery.memory import Gallery
from cmce.method.bundle import load_bundle
from cmce.method.engine import FaceEngine
from cmce.pipeline import IngestJob, list_source, prepare_batch, run_in_process
from cmce.storage.read import read_gallery
from cmce.storage.staging import StagingJob, commit_staged, read_skipped, staged_files, write_staged

PEOPLE = ["Aaron_Peirsol", "Abdoulaye_Wade", "Abdullah", "Abel_Pacheco", "Adam_Sandler", "Ahmed_Chalabi"]


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle())


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw_dir) -> Path:
    """18 LFW photos (3 of each of 6 people), a no-face photo, a broken file, a hidden file and a text file."""
    root = tmp_path_factory.mktemp("photos")
    for p in PEOPLE:
        (root / p).mkdir()
        for i in (1, 2, 3):
            shutil.copy(lfw_dir / p / f"{p}_000{i}.jpg", root / p / f"{p}_000{i}.jpg")
    Image.new("RGB", (160, 120), (128, 128, 128)).save(root / PEOPLE[0] / "grey.jpg")  # no face
    (root / PEOPLE[1] / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / PEOPLE[1] / ".hidden.jpg").write_bytes((root / PEOPLE[1] / f"{PEOPLE[1]}_0001.jpg").read_bytes())
    (root / PEOPLE[2] / "notes.txt").write_text("not an image")
    return root


def sorted_records(folder: Path):
    rec = read_gallery(folder).records
    return rec.take(np.argsort(rec.entry_id.astype(str)))


def assert_same_entries(a, b) -> None:
    assert a.entry_id.tolist() == b.entry_id.tolist()
    assert a.label.tolist() == b.label.tolist() and a.source.tolist() == b.source.tolist()
    np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    for name in ("face_px", "sharpness", "exposure"):  # measured at ingest on both paths
        assert np.isfinite(getattr(a, name)).all(), name
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert set(a.backbones) == set(b.backbones)
    for k in a.backbones:
        assert a.present[k].all() and b.present[k].all()
        np.testing.assert_allclose(a.embeddings[k], b.embeddings[k], atol=1e-5)


@pytest.fixture(scope="module")
def indexed(photos, engine, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("full") / "gallery"
    report = run_in_process(IngestJob(str(photos), str(folder), batch_size=4, commit_every=2), engine=engine)
    assert report.files == 20 and report.added >= 18
    assert len({e.rsplit(":", 1)[0] for e in read_gallery(folder).records.entry_id}) == 18  # every photo with a face
    assert sorted(why for _, why in report.skipped) == ["no face found", "not a readable image (cannot identify image file)"]
    return folder


def test_listing_rules_and_file_uri(photos) -> None:
    local = list_source(photos)
    uri = list_source(photos.as_uri())
    assert len(local) == 20  # hidden file and text file left out
    assert [(f.uri, f.source, f.label) for f in local.files] == [(f.uri, f.source, f.label) for f in uri.files]
    assert {f.label for f in local.files} == set(PEOPLE)
    assert all(Path(f.uri).is_absolute() and f.size > 0 for f in local.files)


def test_same_entries_as_add_images(indexed, photos, engine) -> None:
    listing = list_source(photos)
    g = Gallery(engine)
    g.add_images([(f.source, f.uri, f.label) for f in listing.files])
    ref = g.records()
    ref = ref.take(np.argsort(ref.entry_id.astype(str)))
    got = sorted_records(indexed)
    assert_same_entries(got, ref)
    assert got.uri.tolist() == ref.uri.tolist() and all(Path(u).is_file() for u in got.uri)


def test_skipped_files_are_recorded_and_not_read_again(indexed, photos, engine) -> None:
    skipped = read_skipped(indexed).to_pylist()
    by_source = {r["source"]: r for r in skipped}
    assert set(by_source) == {f"{PEOPLE[0]}/grey.jpg", f"{PEOPLE[1]}/broken.jpg"}
    assert all(len(r["content_hash"]) == 64 for r in skipped)
    before = len(read_gallery(indexed).records)
    again = run_in_process(IngestJob(str(photos), str(indexed), batch_size=8), engine=engine)
    assert (again.added, again.known, again.skipped) == (0, 20, ())
    assert len(read_gallery(indexed).records) == before and read_skipped(indexed).num_rows == 2


def test_resume_after_an_interrupted_run(indexed, photos, engine, tmp_path) -> None:
    folder = tmp_path / "gallery"
    job = IngestJob(str(photos), str(folder), batch_size=4, commit_every=2)
    calls = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # batches 1-2 committed, batch 3 staged only
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_process(job, engine=engine, progress=interrupt)
    assert len(staged_files(folder)) >= 1
    assert len(read_gallery(folder).records) == len({e.rsplit(":", 1)[0] for e in read_gallery(folder).records.entry_id}) > 0
    resumed = run_in_process(job, engine=engine)
    assert resumed.resumed > 0 and resumed.known == 12 and staged_files(folder) == []
    assert_same_entries(sorted_records(folder), sorted_records(indexed))
    assert read_skipped(folder).num_rows == 2


def test_a_staged_batch_committed_twice_adds_nothing(indexed, tmp_path) -> None:
    rec = read_gallery(indexed).records
    folder = tmp_path / "g"
    shutil.copytree(indexed, folder)
    job = StagingJob.start(folder)
    write_staged(folder, "again", rec.take(np.arange(5)), None, job=job.name)  # a retried batch of stored faces
    job.release()  # the job stopped: its batch is up for taking
    report = commit_staged(folder, staged_files(folder))
    assert (report.entries, report.duplicates) == (0, 5) and staged_files(folder) == []
    assert len(read_gallery(folder).records) == len(rec)


def test_unreadable_file_is_skipped_without_a_hash(tmp_path) -> None:
    batch = {"uri": [str(tmp_path / "gone.jpg")], "source": ["gone.jpg"], "label": [None], "size": [-1]}
    prepared = prepare_batch(batch)
    assert prepared.photos == [] and prepared.skipped[0][2] is None
    assert "cannot read file" in prepared.skipped[0][3]


def test_bad_sources(tmp_path, capsys) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images found"):
        list_source(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no images found"):
        list_source((tmp_path / "empty").as_uri())
    with pytest.raises(DatasetError, match="not a folder"):
        list_source((tmp_path / "missing").as_uri())
    with pytest.raises(DatasetError, match="cannot be opened"):
        list_source("nosuchscheme://bucket/photos")
    assert main(["index", "nosuchscheme://bucket/photos", "--out", str(tmp_path / "g"), "--quiet"]) == 2
    assert "error: nosuchscheme://bucket/photos: cannot be opened" in capsys.readouterr().err


def test_corrupt_shard_is_named(indexed, photos, tmp_path, capsys) -> None:
    folder = tmp_path / "g"
    shutil.copytree(indexed, folder)
    shard = folder / read_gallery(folder).manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(GalleryError, match=shard.name):
        read_gallery(folder)
    assert main(["index", str(photos), "--out", str(folder), "--quiet"]) == 2
    assert shard.name in capsys.readouterr().err


def test_ray_address_that_does_not_answer_fails_fast(photos, tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["index", str(photos), "--out", str(tmp_path / "g"), "--ray", f"127.0.0.1:{port}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} does not answer" in err and "waited at most 3 s" in err  # the port check, not ray.init's retries
    assert not (tmp_path / "g").exists()  # nothing written
