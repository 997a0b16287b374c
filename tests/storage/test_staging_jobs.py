"""Several indexing jobs on one gallery at once: each stages in its own folder, none removes or
commits what another is still writing, and what a stopped job staged is committed by the next."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_store import make_records

from cmce.errors import GalleryError
from cmce.pipeline.writer import GalleryWriter, open_gallery
from cmce.storage.read import read_gallery
from cmce.storage.staging import StagingJob, staged_files, write_staged

pytest.importorskip("pyarrow")


def _stage(writer: GalleryWriter, key: str, records) -> list[str]:
    return write_staged(writer.folder, key, records, None, job=writer.stage)


def test_a_running_job_keeps_its_staged_and_half_written_files(tmp_path: Path) -> None:
    folder = open_gallery(tmp_path / "g")
    first = GalleryWriter(folder)
    staged = _stage(first, "b1", make_records(4, seed=1, missing_b=(1,)))
    half = folder / first.stage / ".b2.entries.parquet.123.tmp"  # a write still going on
    half.write_bytes(b"partial")
    second = GalleryWriter(folder)  # starts while the first runs
    assert second.resumed.entries == 0 and second.stage != first.stage
    assert (folder / staged[0]).is_file() and half.is_file()
    assert staged_files(folder) == []  # a running job's files are not up for taking
    second.close()
    assert (folder / first.stage).is_dir()  # the second job's close left the first job's folder
    first.add({"staged": ",".join(staged)})
    half.unlink()
    first.close()
    assert len(read_gallery(folder).records) == 4 and not (folder / "staging").exists()


def test_a_stopped_jobs_batches_are_committed_by_the_next(tmp_path: Path) -> None:
    folder = open_gallery(tmp_path / "g")
    with pytest.raises(KeyboardInterrupt), GalleryWriter(folder) as stopped:
        _stage(stopped, "b1", make_records(5, seed=2, missing_b=(1,)))
        (folder / stopped.stage / ".b2.entries.parquet.9.tmp").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert staged_files(folder) == [f"{stopped.stage}/b1.entries.parquet"]
    assert not (folder / stopped.stage / ".b2.entries.parquet.9.tmp").exists()  # its unfinished write removed
    nxt = GalleryWriter(folder)
    assert nxt.resumed.entries == 5 and not (folder / stopped.stage).exists()
    nxt.close()
    assert len(read_gallery(folder).records) == 5


def test_jobs_starting_on_one_new_folder_share_one_gallery(tmp_path: Path) -> None:
    folder, errors, writers = tmp_path / "new", [], []

    def start(seed: int) -> None:
        try:
            w = GalleryWriter(open_gallery(folder))
            w.add({"staged": ",".join(_stage(w, f"b{seed}", make_records(3, seed=seed, missing_b=(1,))))})
            writers.append(w)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for w in writers:
        w.close()
    assert len(read_gallery(folder).records) == 3  # make_records gives the same ids: each photo once


def test_a_folder_with_other_files_is_not_made_a_gallery(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(GalleryError, match="not a gallery"):
        open_gallery(tmp_path / "x")
    (tmp_path / "f").write_text("a file")
    with pytest.raises(GalleryError, match="is a file"):
        open_gallery(tmp_path / "f")


def test_staging_into_a_missing_job_folder_says_so(tmp_path: Path) -> None:
    folder = open_gallery(tmp_path / "g")
    job = StagingJob.start(folder)
    job.close()
    with pytest.raises(GalleryError, match="job folder"):
        write_staged(folder, "k", make_records(2, missing_b=(1,)), None, job=job.name)
