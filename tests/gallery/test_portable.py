"""A gallery downloaded as one zip and uploaded again (cmce.gallery.portable)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from cmce.errors import ArchiveError, GalleryError, LimitError
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.gallery.portable import export_gallery, import_gallery
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.method.scoreboard import gallery_scoreboard

PEOPLE = ["Aaron_Peirsol", "Adam_Sandler", "Abel_Pacheco"]

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle())


@pytest.fixture(scope="module")
def gallery(engine, lfw_dir) -> Gallery:
    g = Gallery(engine)
    g.add_images([(f"{p}_000{i}.jpg", lfw_dir / p / f"{p}_000{i}.jpg", p) for p in PEOPLE for i in (1, 2)])
    return g


def _never(*args, **kwargs):
    raise AssertionError("a photo was read or a backbone ran while restoring")


def test_round_trip_gives_the_same_results_without_reading_a_photo(gallery, engine, lfw_dir, tmp_path, monkeypatch):
    zipped = export_gallery(gallery, tmp_path / "my-gallery.zip")
    names = zipfile.ZipFile(zipped).namelist()
    assert "manifest.json" in names and all(n.endswith((".json", ".parquet")) for n in names)  # no photo, no index
    for method in ("detect", "embed_gallery_faces", "embed_gallery_batch", "embed_query_face"):
        monkeypatch.setattr(engine, method, _never)
    restored = import_gallery(zipped, engine, tmp_path)
    monkeypatch.undo()
    back = restored.gallery
    assert len(back) == len(gallery) and restored.skipped == ()
    assert [e.label for e in back.entries] == [e.label for e in gallery.entries]
    assert [e.thumbnail for e in back.entries] == [e.thumbnail for e in gallery.entries]
    np.testing.assert_array_equal(back.vectors.ensemble, gallery.vectors.ensemble)
    assert gallery_scoreboard(back) == gallery_scoreboard(gallery)
    query = lfw_dir / PEOPLE[1] / f"{PEOPLE[1]}_0003.jpg"
    before, after = gallery.search_image(query, name=query.name), back.search_image(query, name=query.name)
    for view in before.views:
        assert [(m.label, round(m.score, 6)) for m in after.views[view].matches] == \
               [(m.label, round(m.score, 6)) for m in before.views[view].matches]
    assert not list(tmp_path.glob("gallery-import-*"))  # the extracted copy is removed


def test_restore_checks_the_archive_like_any_upload(gallery, engine, tmp_path):
    zipped = export_gallery(gallery, tmp_path / "g.zip")
    with pytest.raises(LimitError, match="at most 2 per gallery"):
        import_gallery(zipped, engine, tmp_path, limits=GalleryLimits(max_entries=2))
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(zipped) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../../escape.json", "{}")
        dst.writestr("photo.jpg", b"not a photo")
    restored = import_gallery(hostile, engine, tmp_path)
    assert len(restored.gallery) == len(gallery)
    reasons = dict(restored.skipped)
    assert "photo.jpg" in reasons and "not a file of this upload" in reasons["photo.jpg"]
    assert any(".." in name for name in reasons)
    assert not (tmp_path.parent / "escape.json").exists()
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as z:
        z.writestr("Ann_0001.json", "{}")
    with pytest.raises(GalleryError, match="not a saved gallery"):
        import_gallery(photos, engine, tmp_path)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArchiveError):
        import_gallery(tmp_path / "junk.zip", engine, tmp_path)
    with pytest.raises(GalleryError, match="empty"):
        export_gallery(Gallery(engine), tmp_path / "empty.zip")


def test_the_session_s_corrections_travel_with_its_download(engine, lfw_dir, tmp_path) -> None:
    """Names and links given in the People tab are listed by the manifest: their table goes into the zip too."""
    g = Gallery(engine)
    g.add_images([(p.name, p, None) for name in PEOPLE[:2] for p in sorted((lfw_dir / name).glob("*.jpg"))[:2]])
    ids = g.entry_ids()
    g.add_corrections(names={ids[0]: "Ada"}, must_link=[(ids[0], ids[1])], cannot_link=[(ids[0], ids[2])])
    back = import_gallery(export_gallery(g, tmp_path / "g.zip"), engine, tmp_path).gallery
    assert back.corrections == g.corrections and back.entries[0].label == "Ada"
