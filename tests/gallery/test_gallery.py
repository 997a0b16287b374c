"""Galleries on real faces with the default bundle: index, search, reject, remove, save/load, CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmce.errors import CmceError
from cmce.gallery.ingest import GalleryLimits
from cmce.gallery.memory import Gallery
from cmce.gallery.persistence import bundle_keys
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.serve import display
from cmce.storage.read import read_gallery

PEOPLE = ["Aaron_Peirsol", "Adam_Sandler", "Abel_Pacheco", "Ahmed_Chalabi"]

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "config.json").is_file(), reason="default bundle not built")


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle())


@pytest.fixture(scope="module")
def gallery(engine, lfw_dir) -> Gallery:
    g = Gallery(engine)
    items = [(f"{p}_000{i}.jpg", lfw_dir / p / f"{p}_000{i}.jpg", p) for p in PEOPLE for i in (1, 2)]
    items += [("dup.jpg", items[0][1], None), ("notes.jpg", b"not an image at all", None)]
    report = g.add_images(items)
    assert report.added >= 8 and report.files == 10
    assert report.duplicates == ("dup.jpg",)
    assert [n for n, _ in report.skipped] == ["notes.jpg"]
    return g


def test_search_finds_the_person_in_every_view(gallery: Gallery, lfw_dir) -> None:
    for person in PEOPLE:
        res = gallery.search_image(lfw_dir / person / f"{person}_0003.jpg", name=f"{person}_0003.jpg")
        assert set(res.views) == set(gallery.bundle.view_names)
        best = res.views["ensemble"].matches[0]
        assert best.label == person and not res.views["ensemble"].unknown
        assert set(best.member_scores) >= set(gallery.bundle.gallery_models)
        assert res.views["query"].matches[0].label == person


def test_rejected_entries_never_match(gallery: Gallery, lfw_dir) -> None:
    q = lfw_dir / "Adam_Sandler" / "Adam_Sandler_0003.jpg"
    first = gallery.search_image(q).views["ensemble"].matches[0]
    mask = np.zeros(len(gallery.entries), bool)
    mask[first.position] = True
    again = gallery.search_image(q, rejected=mask)
    for view in again.views.values():
        assert first.position not in [m.position for m in view.matches]
    by_rate = gallery.rejected(rate=0.25)
    assert by_rate.sum() == round(0.25 * len(gallery))
    worst = np.argsort(-gallery.vectors.quality)[: by_rate.sum()]
    assert set(np.flatnonzero(by_rate)) == set(worst)
    # the overview says which quality score rejected them
    summary = display.overview_summary(gallery, by_rate)
    assert f"{by_rate.sum()} rejected" in summary and gallery.bundle.calibration.quality.description in summary


def test_a_rejected_best_match_blocks_and_never_hands_its_query_on(gallery: Gallery, lfw_dir) -> None:
    q = lfw_dir / "Adam_Sandler" / "Adam_Sandler_0003.jpg"
    plain = gallery.search_image(q, answer_rule="none").views["ensemble"]
    assert plain.answer.kind == "match" and plain.answer.label == "Adam_Sandler"
    mask = np.zeros(len(gallery.entries), bool)
    mask[[e.position for e in plain.matches if e.label == "Adam_Sandler"]] = True
    res = gallery.search_image(q, rejected=mask, answer_rule="none").views["ensemble"]
    # the person's photos are rejected: "Unknown", naming the doubtful photo, not another person
    assert res.unknown and res.answer.kind == "doubtful" and res.answer.label == "Adam_Sandler"
    assert "rejected photo of Adam_Sandler" in res.answer.reason
    assert all(m.label != "Adam_Sandler" for m in res.matches)


def test_search_marks_doubtful_entries_without_removing_them(gallery: Gallery, lfw_dir) -> None:
    marks = gallery.doubt()
    assert marks.doubtful.shape == (len(gallery.entries),)
    thr = gallery.bundle.calibration.threshold_for()
    assert np.array_equal(marks.doubtful[gallery.positions], gallery.vectors.quality[gallery.positions] > thr)
    res = gallery.search_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg").views["ensemble"]
    for m in res.matches:
        assert m.doubtful == bool(marks.doubtful[m.position])
    # by default nothing is removed: every entry can be found
    assert len(gallery.search_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg", k=50)
               .views["ensemble"].matches) == len(gallery)


def test_unknown_person_is_answered_unknown(gallery: Gallery, lfw_dir) -> None:
    stranger = lfw_dir / "Abdoulaye_Wade" / "Abdoulaye_Wade_0001.jpg"
    res = gallery.search_image(stranger)
    view = res.views["ensemble"]
    assert view.unknown and view.matches[0].score < view.threshold


def test_no_face_query_is_a_clear_error(gallery: Gallery) -> None:
    with pytest.raises(CmceError, match="no face"):
        gallery.search_image(np.full((200, 200, 3), 127, np.uint8), name="grey.png")


def test_save_load_remove_and_serve_with_another_bundle(gallery: Gallery, engine, tmp_path: Path, lfw_dir) -> None:
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g", engine)
    assert len(loaded) == len(gallery)
    np.testing.assert_allclose(loaded.vectors.ensemble, gallery.vectors.ensemble, atol=1e-6)
    pos = next(i for i, e in enumerate(loaded.entries) if e.label == "Aaron_Peirsol")
    loaded.remove([pos])
    assert len(loaded) == len(gallery) - 1
    res = loaded.search_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg")
    assert pos not in [m.position for m in res.views["ensemble"].matches]
    # another bundle over the same backbones serves the saved gallery: re-projected, no photo read
    other = FaceEngine(load_bundle(default_bundle_path().parent / "facenet-query"))
    moved = Gallery.load(tmp_path / "g", other)
    assert len(moved) == len(gallery) and moved.load_report.photos_read == 0 and not moved.load_report.missing
    res = moved.search_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg")
    assert res.views["ensemble"].matches[0].label == "Aaron_Peirsol"
    assert set(res.views) == set(other.bundle.view_names)


def test_ingest_measures_image_quality_and_stores_it_without_changing_embeddings(gallery: Gallery, engine,
                                                                                  tmp_path: Path) -> None:
    """Issue 22: size, sharpness and exposure measured at ingest, saved in the shards, loaded back."""
    from cmce.faces.image_quality import face_image_quality
    from cmce.io.images import load_image

    records = gallery.records()
    entries = [gallery.entries[p] for p in gallery.positions]
    for j, e in enumerate(entries[:4]):
        image = load_image(e.uri)
        q = e.image_quality
        assert np.isfinite([q.face_px, q.sharpness, q.exposure]).all() and q.face_px > 16
        assert q == face_image_quality(image, e.face)
        again = engine.embed_gallery_batch([(image, [e.face])])  # what indexing stored, to float rounding
        for m, v in again.items():
            np.testing.assert_allclose(records.embeddings[bundle_keys(engine.bundle)[m]][j], v[0], atol=1e-5)
    gallery.save(tmp_path / "g")
    stored = read_gallery(tmp_path / "g").records
    for name in ("face_px", "sharpness", "exposure"):
        np.testing.assert_array_equal(getattr(stored, name), [getattr(e.image_quality, name) for e in entries])
    loaded = Gallery.load(tmp_path / "g", engine)
    assert [e.image_quality for e in loaded.entries] == [e.image_quality for e in entries]
    caption = display.overview_tiles(loaded, np.zeros(len(loaded), bool))[0][1]
    assert " px apart · sharpness 0." in caption and " · exposure 0." in caption


def test_limits_are_reported(engine, lfw_dir) -> None:
    g = Gallery(engine, GalleryLimits(max_files=2, max_entries=1))
    items = [(f"{p}.jpg", lfw_dir / p / f"{p}_0001.jpg", p) for p in PEOPLE[:3]]
    report = g.add_images(items)
    assert report.added == 1 and len(g) == 1
    joined = " ".join(report.limits_reached)
    assert "max files" in joined and "gallery is full" in joined


def test_index_command(tmp_path: Path, lfw_dir, capsys) -> None:
    from cmce.cli import main

    src = tmp_path / "photos"
    for p in PEOPLE[:2]:
        (src / p).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(lfw_dir / p / f"{p}_000{i}.jpg", src / p / f"{i}.jpg")
    (src / PEOPLE[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert main(["index", str(src), "--out", str(tmp_path / "gal"), "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("4 faces indexed from 5 files; 1 file skipped")
    stored = read_gallery(tmp_path / "gal")
    assert sorted(set(stored.records.label)) == sorted(PEOPLE[:2])
    assert all(Path(u).is_file() for u in stored.records.uri)  # paths kept for a later backfill
    assert stored.manifest["derived"]["bundle"]["query"] == load_bundle().query_model


def test_limits_from_environment() -> None:
    from cmce.errors import LimitError

    lim = GalleryLimits.from_env({"CMCE_MAX_FILES": "12", "CMCE_MAX_IMAGE_MB": "3", "CMCE_MAX_PIXELS": "1000000"})
    assert lim.max_files == 12 and lim.image.max_bytes == 3 * 2**20 and lim.image.max_pixels == 1_000_000
    assert lim.max_entries == GalleryLimits().max_entries
    with pytest.raises(LimitError, match="CMCE_MAX_ENTRIES"):
        GalleryLimits.from_env({"CMCE_MAX_ENTRIES": "lots"})


def test_interrupted_saves_leave_the_previous_state(gallery: Gallery, tmp_path: Path, monkeypatch) -> None:
    import cmce.method.bundle as bundle_module
    from cmce.method.bundle import save_bundle

    gallery.save(tmp_path / "g")
    before = (tmp_path / "g" / "manifest.json").read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("cmce.storage.write._write_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        gallery.save(tmp_path / "g")
    monkeypatch.undo()
    assert (tmp_path / "g" / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no half-written folder left

    save_bundle(gallery.bundle, tmp_path / "b")
    cfg = (tmp_path / "b" / "config.json").read_bytes()
    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(gallery.bundle, tmp_path / "b")
    assert (tmp_path / "b" / "config.json").read_bytes() == cfg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "g"]
    assert bundle_module.load_bundle(tmp_path / "b").gallery_models == gallery.bundle.gallery_models


def test_interrupted_indexing_keeps_a_consistent_gallery(engine, lfw_dir, monkeypatch) -> None:
    g = Gallery(engine)
    items = [(f"{p}.jpg", lfw_dir / p / f"{p}_0001.jpg", p) for p in PEOPLE]
    real = engine.embed_gallery_batch
    calls = []

    def flaky(batch, models=None):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(batch, models)

    monkeypatch.setattr(engine, "embed_gallery_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        g.add_images(items, batch_size=1)
    monkeypatch.undo()
    # images 1-3 are in; image 4 was interrupted while embedding and is dropped whole
    assert len(g) == len(g.entries) == len(g.vectors.ensemble) == 3
    res = g.search_image(lfw_dir / PEOPLE[0] / f"{PEOPLE[0]}_0002.jpg")
    assert res.views["ensemble"].matches[0].label == PEOPLE[0]


def test_batched_embedding_equals_one_image_at_a_time(engine, lfw_dir) -> None:
    """Batching across images changes no number."""
    from cmce.io.images import load_image

    images = [load_image(lfw_dir / p / f"{p}_0001.jpg") for p in PEOPLE[:3]]
    faces = [engine.detect([img])[0][:1] for img in images]
    batched = engine.embed_gallery_batch(list(zip(images, faces)))
    for m, bb in engine.backbones.items():
        one_by_one = np.concatenate([bb.embed_faces(img, f) for img, f in zip(images, faces)])
        assert batched[m].shape == (3, bb.embedding_size)
        np.testing.assert_allclose(batched[m], one_by_one, atol=1e-5)
    empty = engine.embed_gallery_batch([(images[0], [])])
    assert all(v.shape == (0, engine.backbones[m].embedding_size) for m, v in empty.items())


def test_tight_crop_is_indexed_and_queried_the_same_way(engine, lfw_dir) -> None:
    """Issue 22: a crop inside the face box gets the edge treatment on both paths, with the same vector."""
    from cmce.io.images import load_image

    image = load_image(lfw_dir / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg")
    x1, y1, x2, y2 = (int(v) for v in engine.detect([image])[0][0].box)
    dx, dy = (x2 - x1) // 10, (y2 - y1) // 10
    crop = np.ascontiguousarray(image[y1 + dy:y2 - dy, x1 + dx:x2 - dx])
    faces = engine.detect([crop])[0]
    assert len(faces) == 1 and faces[0].at_image_edge
    indexed = engine.embed_gallery_batch([(image, []), (crop, faces)])
    query = engine.embed_query_face(crop, faces[0])
    np.testing.assert_allclose(indexed[engine.bundle.query_model][0], query, atol=1e-5)
    for m, bb in engine.backbones.items():
        black_only = bb.embed(bb.align(crop, faces))[0]
        assert bb.aligns_by_landmarks == (not np.allclose(indexed[m][0], black_only, atol=1e-4)), m


def test_crowd_photo_keeps_the_largest_faces_and_says_so(engine, lfw_dir) -> None:
    """Six people in one picture, a cap of three faces per image."""
    from cmce.io.images import load_image

    tiles = [load_image(lfw_dir / p / f"{p}_0001.jpg") for p in PEOPLE + ["Abdullah", "Adam_Scott"]][:6]
    crowd = np.concatenate([np.concatenate(tiles[:3], axis=1), np.concatenate(tiles[3:], axis=1)], axis=0)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crowd).save(buf, format="JPEG")
    g = Gallery(engine, GalleryLimits(max_faces_per_image=3))
    report = g.add_images([("crowd.jpg", buf.getvalue(), None)])
    assert report.added == 3 and len(g) == 3
    assert any("crowd.jpg" in m and "kept the 3 largest" in m for m in report.limits_reached), report


def test_engine_puts_transformers_and_models_on_its_device(engine) -> None:
    """The transformers run where the backbones do (CUDA when present, else CPU)."""
    from cmce.models.backbones import create_backbone

    for module in engine.bundle.transformers.values():
        assert next(module.parameters()).device.type == torch.device(engine.device).type
    assert all(create_backbone(m) is bb for m, bb in engine.backbones.items())  # one instance each


def test_unknown_by_the_normalised_score_in_a_gallery_of_many_people(engine, lfw_dir, monkeypatch) -> None:
    """Past the cohort's size, "Unknown" is decided by how far the best match stands out from
    the next people (unknown.CohortNorm), exactly as the matrix version computes it."""
    from dataclasses import replace

    from cmce.answer_metrics import cohort_normalised
    from cmce.io.images import load_image
    from cmce.method.unknown import CohortNorm

    people = sorted(p.name for p in lfw_dir.iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:70]
    g = Gallery(engine)
    g.add_images([(f"{p}_0001.jpg", lfw_dir / p / f"{p}_0001.jpg", p) for p in people[:60]])
    queries = [lfw_dir / p / f"{p}_0002.jpg" for p in people[:5] + people[60:70]]  # 10 strangers
    qv = []
    for path in queries:
        img = load_image(path)
        face = max(engine.detect([img])[0], key=lambda f: f.area)
        qv.append(engine.embed_query_face(img, face))
    labels = [e.label for e in g.entries]
    z = cohort_normalised(np.stack(qv) @ g.vectors.ensemble.T, labels, 20)
    assert np.isfinite(z).all()
    zs = np.sort(z)
    thr = float(zs[len(zs) // 2 - 1] + zs[len(zs) // 2]) / 2  # half the queries on each side, none on the line
    assert zs[len(zs) // 2] - zs[len(zs) // 2 - 1] > 1e-4  # float32 and float64 sides of the line agree
    cal = engine.bundle.calibration
    monkeypatch.setattr(engine.bundle, "calibration",
                        replace(cal, cohort_norm=CohortNorm(20, {"ensemble": thr}, 0.05)))
    for q, zq in zip(qv, z):
        ans = g.search_vector(q)["ensemble"].answer
        if zq < thr:
            assert ans.kind == "unknown" and "does not stand out from the next 20 people" in ans.reason
        else:
            assert ans.kind != "unknown"
        # asked for, the raw similarity threshold decides, as in bundles before the normalised one
        raw = g.search_vector(q, unknown_by="similarity")["ensemble"].answer
        best = float((g.vectors.ensemble @ q).max())
        assert raw.normalised is None and (raw.kind == "unknown") == (best < cal.similarity_thresholds["ensemble"])
    # a gallery smaller than the cohort keeps the raw threshold
    monkeypatch.setattr(engine.bundle, "calibration",
                        replace(cal, cohort_norm=CohortNorm(100, {"ensemble": 1e9}, 0.05)))
    assert g.search_vector(qv[0])["ensemble"].answer.kind == "match"
