"""Tests for cmce.io.uploads: labels from folders and file names, archives extracted and labelled."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from cmce.io.uploads import collect_uploads, labels_for_paths, query_label


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("paths", "labels"),
    [
        # sub-folders of a picked (or zipped) folder name the people
        (["friends/alice/1.jpg", "friends/alice/2.jpg", "friends/bob/1.jpg"], ["alice", "alice", "bob"]),
        # without a shared wrapper folder
        (["alice/1.jpg", "bob/x/2.jpg"], ["alice", "bob"]),
        # the picked folder itself is the person (camera file names name nobody)
        (["alice/IMG_0001.jpg", "alice/IMG_0002.jpg"], ["alice", "alice"]),
        # a flat folder of Name_0001-style files: the file names win
        (["photos/Ann_0001.jpg", "photos/Ben_0002.jpg"], ["Ann", "Ben"]),
        # loose files: Name_0001 style or nothing
        (["George_W_Bush_0003.jpg", "holiday.jpg", "IMG_2041.jpg"], ["George_W_Bush", None, None]),
        # a wrapper folder deeper down; Windows separators
        (["a\\b\\carol\\1.png", "a\\b\\dave\\1.png"], ["carol", "dave"]),
        ([], []),
    ],
)
def test_labels_for_paths(paths, labels):
    assert labels_for_paths(paths) == labels


def test_query_label():
    assert query_label("/tmp/gradio/abc/Grace_Hopper_04.jpg") == "Grace_Hopper"
    assert query_label("image.png") is None
    assert query_label("DSC_0042.JPG") is None
    assert query_label(None) is None


def test_collect_uploads_labels_archives_and_loose_files(tmp_path):
    jpeg = _jpeg()
    archive = tmp_path / "team.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("team/alice/a.jpg", jpeg)
        z.writestr("team/alice/b.jpg", jpeg)
        z.writestr("team/bob/c.jpg", jpeg)
        z.writestr("team/notes.txt", b"hello")
    loose = tmp_path / "Carol_Ng_0001.jpg"
    loose.write_bytes(jpeg)
    other = tmp_path / "report.pdf"
    other.write_bytes(b"%PDF")

    batch = collect_uploads(
        [("Carol_Ng_0001.jpg", loose), ("team.zip", archive), ("report.pdf", other)], tmp_path / "work"
    )
    names = {name: label for name, _, label in batch.items}
    assert names == {"Carol_Ng_0001.jpg": "Carol_Ng", "team/alice/a.jpg": "alice", "team/alice/b.jpg": "alice",
                     "team/bob/c.jpg": "bob"}
    assert all(Path(path).is_file() for _, path, _ in batch.items)
    assert batch.labelled == 4
    skipped = dict(batch.skipped)
    assert "report.pdf" in skipped and "not an image" in skipped["report.pdf"]
    assert any(name.startswith("team.zip:") and "notes.txt" in name for name in skipped)


def test_collect_uploads_reports_a_broken_archive(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    batch = collect_uploads([("broken.zip", bad)], tmp_path / "work")
    assert batch.items == ()
    assert batch.skipped and batch.skipped[0][0] == "broken.zip"


def test_preview_gives_the_labels_indexing_will_give_from_names_only(tmp_path):
    """preview_labels: loose files and each archive's members labelled as collect_uploads labels them,
    without extracting anything; an unreadable archive is noted, not fatal."""
    import tarfile
    import zipfile

    from cmce.io.uploads import preview_labels

    zipped = tmp_path / "team.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("team/alice/1.jpg", b"x")
        z.writestr("team/bob/2.jpg", b"x")
        z.writestr("team/readme.txt", b"x")
    tarred = tmp_path / "more.tar.gz"
    src = tmp_path / "Carol_0001.jpg"
    src.write_bytes(b"x")
    with tarfile.open(tarred, "w:gz") as t:
        t.add(src, arcname="Carol_0001.jpg")
    (tmp_path / "broken.zip").write_bytes(b"not an archive")
    files = [("friends/dan/IMG_1.jpg", "a"), ("friends/dan/IMG_2.jpg", "b"), ("team.zip", str(zipped)),
             ("more.tar.gz", str(tarred)), ("broken.zip", str(tmp_path / "broken.zip"))]
    p = preview_labels(files, first=4)
    assert p.rows == (("friends/dan/IMG_1.jpg", "dan"), ("friends/dan/IMG_2.jpg", "dan"),
                      ("team.zip: team/alice/1.jpg", "alice"), ("team.zip: team/bob/2.jpg", "bob"))
    assert (p.images, p.labelled, p.people) == (5, 5, 4)  # Carol from her file name, inside the tar
    assert len(p.notes) == 1 and p.notes[0].startswith("broken.zip: not a readable zip or tar")
    assert not list(tmp_path.glob("team/*"))  # nothing extracted
