"""Archive derived data (cmce.gallery.archive): built by streaming over the shards, searched
without loading them, and answering like the in-memory Gallery on a real LFW gallery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import lfw_people

from cmce.errors import CmceError, GalleryError, NoFaceError
from cmce.gallery.archive import ArchiveGallery, open_gallery
from cmce.gallery.archive_build import build_archive_index
from cmce.gallery.memory import Gallery
from cmce.gallery.results import Match, QueryResult, ViewResult
from cmce.gallery.searchable import SearchableGallery
from cmce.method.bundle import load_bundle
from cmce.method.engine import FaceEngine
from cmce.search.compact_config import CompactConfig
from cmce.storage.write import append_entries

SMALL = CompactConfig(factory="IVF{nlist},PQ32x4fs", nlist=4, nprobe=4, rerank=64, train_per_list=16)


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle(None))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, lfw_dir, engine) -> tuple[Path, Gallery]:
    """A real gallery in two entry shards (the second appended), and the same gallery in memory."""
    people = lfw_people(lfw_dir, 12, min_images=3)
    photos = [p for person in people for p in sorted(person.glob("*.jpg"))[:3]]
    items = [(p.name, p, p.parent.name) for p in photos]
    folder = tmp_path_factory.mktemp("archive") / "gallery"
    gallery = Gallery(engine)
    gallery.add_images(items[:20])
    gallery.save(folder)
    since = len(gallery.entries)
    gallery.add_images(items[20:])
    gallery.save_appended(folder, since)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len([s for s in manifest["shards"] if s["kind"] == "entries"]) == 2
    return folder, gallery


@pytest.fixture()
def copy(saved, tmp_path) -> Path:
    dest = tmp_path / "gallery"
    shutil.copytree(saved[0], dest)
    return dest


def _queries(gallery: Gallery) -> np.ndarray:
    # each gallery entry's own query-model embedding, slightly perturbed, as a query
    rng = np.random.default_rng(0)
    q = gallery.vectors.views["query"] + 0.05 * rng.standard_normal(gallery.vectors.views["query"].shape)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["exact", "compact"])
def test_archive_answers_like_the_gallery(copy, saved, engine, kind):
    _, gallery = saved
    report = build_archive_index(copy, engine.bundle, index=kind, config=SMALL)
    assert report.entries == len(gallery) and report.index == kind and report.unusable == 0
    archive = ArchiveGallery.open(copy, engine.bundle)
    assert len(archive) == len(gallery)
    np.testing.assert_array_equal(archive.rejected(), gallery.rejected())
    np.testing.assert_array_equal(archive.rejected(rate=0.2), gallery.rejected(rate=0.2))
    np.testing.assert_allclose(archive.quality, gallery.vectors.quality, atol=1e-6)
    queries = _queries(gallery)
    for rejected in (None, gallery.rejected(rate=0.3)):
        results = archive.search_vectors(queries, k=5, rejected=rejected)
        for q, res in zip(queries, results):
            want = gallery.search_vector(q, k=5, rejected=rejected)["ensemble"]
            assert [m.position for m in res.matches] == [m.position for m in want.matches]
            np.testing.assert_allclose([m.score for m in res.matches], [m.score for m in want.matches], atol=2e-3)
            assert [m.label for m in res.matches] == [m.label for m in want.matches]
            assert [m.source for m in res.matches] == [m.source for m in want.matches]
            assert res.unknown == want.unknown and res.threshold == pytest.approx(want.threshold)
            assert (res.answer.kind, res.answer.label) == (want.answer.kind, want.answer.label)
            assert [m.doubtful for m in res.matches] == [m.doubtful for m in want.matches]
            if rejected is not None:
                assert not any(rejected[m.position] for m in res.matches)
    np.testing.assert_array_equal(archive.doubt().doubtful, gallery.doubt().doubtful)
    entry_ids = [e.entry_id for e in gallery.entries]
    hit = archive.search_vectors(queries[:1], k=1)[0].matches[0]
    assert hit.entry_id == entry_ids[hit.position]


def test_archive_blocks_on_a_rejected_best_match(copy, saved, engine):
    """By default nothing is rejected; a rejected best match answers "Unknown" (doubtful),
    naming the rejected photo's person, and never hands the query to the next person."""
    _, gallery = saved
    build_archive_index(copy, engine.bundle, index="exact")
    archive = ArchiveGallery.open(copy, engine.bundle)
    queries = _queries(gallery)[:6]
    plain = archive.search_vectors(queries, k=5, answer_rule="none")
    assert all(r.answer.kind == "match" and r.matches[0].label == r.answer.label for r in plain)
    # the default searches every active entry: the same as rejecting nothing
    assert [[m.position for m in r.matches] for r in archive.search_vectors(queries, k=5, answer_rule="none")] == \
        [[m.position for m in r.matches] for r in archive.search_vectors(queries, k=5, answer_rule="none",
                                                                          rejected=np.zeros(len(archive), bool))]
    rejected = np.zeros(len(archive), bool)
    rejected[plain[0].matches[0].position] = True
    res = archive.search_vectors(queries[:1], k=5, rejected=rejected, answer_rule="none")[0]
    want = gallery.search_vector(queries[0], k=5, rejected=rejected, answer_rule="none")["ensemble"]
    assert res.unknown and res.answer.kind == "doubtful" and res.answer.label == plain[0].answer.label
    assert "rejected photo of" in res.answer.reason
    assert plain[0].matches[0].position not in [m.position for m in res.matches]
    assert [m.position for m in res.matches] == [m.position for m in want.matches]
    assert (want.answer.kind, want.answer.label) == (res.answer.kind, res.answer.label)
    with pytest.raises(CmceError, match="query_probability"):
        archive.search_vectors(queries, query_probability=np.ones(2))


def test_both_galleries_answer_through_one_interface(copy, saved, engine, lfw_dir):
    """An in-memory gallery and its archive are both a ``SearchableGallery``: a photo query
    (one shared detect + embed path) and a vector query give the same result type and the
    same ensemble answer; the archive's old result names still work, with a warning."""
    _, gallery = saved
    build_archive_index(copy, engine.bundle, index="exact")
    archive = ArchiveGallery.open(copy, engine.bundle, engine=engine)
    assert isinstance(gallery, SearchableGallery) and isinstance(archive, SearchableGallery)
    assert isinstance(open_gallery(copy, engine), ArchiveGallery)
    assert archive.view_names == ("ensemble",) and "ensemble" in gallery.view_names
    person = next(e.label for e in gallery.entries if e.label)
    photo = max((lfw_dir / person).glob("*.jpg"))
    got, want = archive.search_image(photo, k=3), gallery.search_image(photo, k=3)
    assert isinstance(got, QueryResult) and set(got.views) == {"ensemble"} and got.faces == want.faces
    a, b = got.views["ensemble"], want.views["ensemble"]
    assert type(a) is type(b) is ViewResult and all(type(m) is Match for m in a.matches + b.matches)
    assert [(m.position, m.entry_id, m.label, m.uri) for m in a.matches] == \
        [(m.position, m.entry_id, m.label, m.uri) for m in b.matches]
    assert (a.answer.kind, a.answer.label) == (b.answer.kind, b.answer.label)
    queries = _queries(gallery)[:4]

    def seen(res: ViewResult) -> tuple:
        return [(m.position, m.score, m.doubtful) for m in res.matches], res.answer.kind, res.answer.reason

    for g in (gallery, archive):
        for many, one in zip(g.search_vectors(queries, k=3), queries):
            assert seen(many) == seen(g.search_vector(one, k=3)["ensemble"])
    with pytest.raises(CmceError, match="view must be one of"):
        archive.search_vectors(queries, view="query")
    with pytest.raises(NoFaceError):
        archive.search_image(np.full((200, 200, 3), 127, np.uint8), name="grey.png")
    with pytest.raises(CmceError, match="engine"):
        ArchiveGallery.open(copy, engine.bundle).search_image(photo)
    import cmce.gallery.archive as archive_module

    with pytest.warns(DeprecationWarning, match="ArchiveMatch"):
        assert archive_module.ArchiveMatch is Match
    with pytest.warns(DeprecationWarning, match="ArchiveResult"):
        assert archive_module.ArchiveResult is ViewResult


def test_archive_index_is_derived_data(copy, engine, saved, lfw_dir):
    """Stale after new shards, refused for another bundle, and a rebuild replaces it."""
    _, gallery = saved
    with pytest.raises(GalleryError, match="no archive index for this bundle"):
        ArchiveGallery.open(copy, engine.bundle)
    build_archive_index(copy, engine.bundle, index="exact")
    other = load_bundle(Path(__file__).resolve().parents[2] / "assets" / "bundles" / "facenet-dlib")
    with pytest.raises(GalleryError, match="no archive index for this bundle"):
        ArchiveGallery.open(copy, other)
    grown = Gallery.load(copy, engine)
    since = len(grown.entries)
    extra = sorted(lfw_people(lfw_dir, 14, min_images=3)[-1].glob("*.jpg"))[:1]
    grown.add_images([(p.name, p, None) for p in extra])
    append_entries(copy, grown.records().take(grown.positions >= since))  # raw shard only
    with pytest.raises(GalleryError, match="shards were added"):
        ArchiveGallery.open(copy, engine.bundle)
    report = build_archive_index(copy, engine.bundle, index="exact")
    assert report.entries == len(grown)
    assert len(list((copy / "derived").iterdir())) == 1


def test_archive_index_refuses_bad_input(copy, engine, tmp_path):
    with pytest.raises(CmceError, match="index must be one of"):
        build_archive_index(copy, engine.bundle, index="hnsw")
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = copy / manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(GalleryError, match="corrupt"):
        build_archive_index(copy, engine.bundle)
    assert not (copy / "derived").exists() or not any(p.name.startswith(".") for p in (copy / "derived").iterdir())
    with pytest.raises(GalleryError):
        build_archive_index(tmp_path / "nowhere", engine.bundle)


def test_cli_build_index_and_search(copy, saved, tmp_path):
    """`build-index` then `search` with real photos: a gallery member is found under its label."""
    from cmce.cli import main

    _, gallery = saved
    labelled = [e for e in gallery.entries if e.label]
    person = labelled[0].label
    photo = next(p for p in Path(gallery.entries[0].uri).parent.parent.glob(f"{person}/*.jpg"))
    out = tmp_path / "answers.json"
    # the in-memory gallery first, then its archive index: the same answer, with its kind and reason
    assert main(["search", str(copy), str(photo), "--k", "3", "--json", str(out)]) == 0
    in_memory = json.loads(out.read_text())[0]
    assert main(["build-index", str(copy), "--index", "compact", "--nlist", "4", "--nprobe", "4"]) == 0
    assert main(["search", str(copy), str(photo), "--k", "3", "--json", str(out)]) == 0
    answers = json.loads(out.read_text())
    assert answers[0]["matches"][0]["label"] == person and answers[0]["matches"][0]["score"] > 0.9
    for a in (in_memory, answers[0]):
        assert a["answer_kind"] == "match" and a["answer"] == person and a["reason"].startswith(person), a
        assert not a["unknown"] and all(isinstance(m["doubtful"], bool) for m in a["matches"])
    assert main(["search", str(copy), str(tmp_path / "missing.jpg")]) == 2


def test_upgrade_of_an_archive_gallery_streams_the_shards(copy, engine, tmp_path):
    """`upgrade` of a gallery served by an archive index re-projects it shard by shard, in
    place or into --out (shards linked), with the same vectors the in-memory path computes."""
    from cmce.gallery.upgrade import reproject_records, upgrade_gallery
    from cmce.storage.read import read_gallery

    build_archive_index(copy, engine.bundle, index="exact")
    other = load_bundle(Path(__file__).resolve().parents[2] / "assets" / "bundles" / "facenet-query")
    with pytest.raises(CmceError, match="float32"):
        upgrade_gallery(copy, other, precision="int8")
    report = upgrade_gallery(copy, other, out=tmp_path / "upgraded")
    assert report.to_query == other.query_model and report.from_query == engine.bundle.query_model
    want = reproject_records(read_gallery(copy, metadata=False), other).vectors
    archive = ArchiveGallery.open(tmp_path / "upgraded", other)
    vectors = np.load(tmp_path / "upgraded" / archive.meta["path"] / "vectors.npy")
    np.testing.assert_allclose(vectors.astype(np.float32), want.ensemble, atol=1e-3)
    np.testing.assert_allclose(archive.quality, want.quality, atol=1e-6)
    assert report.entries == len(archive) and report.lacking == {}
    with pytest.raises(GalleryError, match="no archive index for this bundle"):
        ArchiveGallery.open(copy, other)  # the source is untouched
    upgrade_gallery(copy, other)
    assert ArchiveGallery.open(copy, other).meta["fingerprint"] == archive.meta["fingerprint"]


def test_compact_probing_some_lists_keeps_recall(copy, saved, engine):
    """nprobe < nlist: the compact index searches only part of the gallery, so it may differ
    from exact search; its top-1 must still agree with the exact answer on most queries.
    (``SMALL`` probes every list, where "compact equals exact" holds by construction.)"""
    _, gallery = saved
    partial = CompactConfig(factory="IVF{nlist},PQ32x4fs", nlist=8, nprobe=2, rerank=64, train_per_list=4)
    build_archive_index(copy, engine.bundle, index="compact", config=partial)
    archive = ArchiveGallery.open(copy, engine.bundle)
    queries = _queries(gallery)
    got = [r.matches[0].position for r in archive.search_vectors(queries, k=1)]
    want = [gallery.search_vector(q, k=1)["ensemble"].matches[0].position for q in queries]
    recall = np.mean(np.array(got) == np.array(want))
    assert recall >= 0.9, f"top-1 recall against exact search {recall:.2f} with nprobe=2 of nlist=8"
