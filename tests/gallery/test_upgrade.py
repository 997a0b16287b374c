"""Model upgrades without re-indexing, on real faces: an old FaceNet-era gallery moved to sface.

The old gallery is indexed by the shipped ``facenet-dlib`` bundle (query facenet-casia,
gallery dlib-resnet34 + facenet's own embedding): it holds no sface embedding. The
default bundle (query sface) serves it by re-projection alone.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cmce.cli import main
from cmce.errors import CmceError, GalleryError
from cmce.gallery.memory import Gallery
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.method.engine import FaceEngine
from cmce.storage.read import read_gallery

BUNDLES = default_bundle_path().parent
OLD = BUNDLES / "facenet-dlib"
NEW = BUNDLES / "sface-query"
PEOPLE = ["Aaron_Peirsol", "Adam_Sandler", "Abel_Pacheco", "Ahmed_Chalabi"]
MORE = ["Alejandro_Toledo", "Al_Gore"]

pytestmark = pytest.mark.skipif(
    not (OLD / "config.json").is_file() or not (NEW / "config.json").is_file(), reason="shipped bundles not built"
)


@pytest.fixture(scope="module")
def old_engine() -> FaceEngine:
    return FaceEngine(load_bundle(OLD))


@pytest.fixture(scope="module")
def new_engine() -> FaceEngine:
    return FaceEngine(load_bundle(NEW))


def copy_people(lfw_dir: Path, dest: Path, people: list[str], numbers=(1, 2)) -> Path:
    for p in people:
        (dest / p).mkdir(parents=True, exist_ok=True)
        for i in numbers:
            shutil.copy(lfw_dir / p / f"{p}_000{i}.jpg", dest / p / f"{p}_000{i}.jpg")
    return dest


@pytest.fixture(scope="module")
def old_gallery(tmp_path_factory, lfw_dir, old_engine) -> Path:
    """A gallery indexed by the old bundle through the CLI, from photos that still exist."""
    root = tmp_path_factory.mktemp("old")
    photos = copy_people(lfw_dir, root / "photos", PEOPLE)
    assert main(["index", str(photos), "--out", str(root / "gallery"), "--bundle", str(OLD), "--quiet"]) == 0
    return root


@pytest.fixture()
def gallery_copy(old_gallery, tmp_path) -> Path:
    shutil.copytree(old_gallery / "photos", tmp_path / "photos")
    shutil.copytree(old_gallery / "gallery", tmp_path / "gallery")
    # the copy's recorded paths point at the copied photos, so deleting them is real
    from cmce.gallery.upgrade import upgrade_gallery
    from cmce.storage.write import write_gallery

    stored = read_gallery(tmp_path / "gallery")
    stored.records.uri = np.array([u.replace(str(old_gallery), str(tmp_path)) for u in stored.records.uri], dtype=object)
    write_gallery(tmp_path / "gallery", stored.records)
    upgrade_gallery(tmp_path / "gallery", load_bundle(OLD))  # served by the old bundle again
    return tmp_path


def forbid_photo_reads(monkeypatch) -> None:
    """Any image decode or backbone creation fails the test loudly."""
    import PIL.Image

    import cmce.gallery.upgrade
    import cmce.io.images
    import cmce.models.backbones

    def refuse(*args, **kwargs):
        raise AssertionError("an upgrade must not read a photo or run a backbone")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    monkeypatch.setattr(cmce.io.images, "load_image", refuse)
    monkeypatch.setattr(cmce.gallery.upgrade, "load_image", refuse)
    monkeypatch.setattr(cmce.models.backbones, "create_backbone", refuse)


def test_upgrade_after_the_photos_are_deleted(gallery_copy, new_engine, lfw_dir, monkeypatch, capsys) -> None:
    shutil.rmtree(gallery_copy / "photos")
    forbid_photo_reads(monkeypatch)
    assert main(["upgrade", str(gallery_copy / "gallery"), "--bundle", str(NEW)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"re-projected 8 entries from facenet-casia to sface in \d+\.\d s; 0 photos read; "
                        r"8 entries lack a member", last), last
    monkeypatch.undo()
    manifest = json.loads((gallery_copy / "gallery" / "manifest.json").read_text())
    assert manifest["derived"]["bundle"]["query"] == "sface"
    g = Gallery.load(gallery_copy / "gallery", new_engine)
    assert g.load_report.missing == {"query": 8} and g.load_report.unusable == 0
    for p in PEOPLE:
        res = g.search_image(lfw_dir / p / f"{p}_0003.jpg")
        best = res.views["ensemble"].matches[0]
        assert best.label == p and set(best.members) == {"dlib-resnet34", "facenet-casia"}
        assert set(best.member_scores) == {"dlib-resnet34", "facenet-casia"}
        assert res.views["query"].matches == () and res.views["query"].unknown  # sface's own: not stored


def test_upgrade_to_another_folder_leaves_the_source(gallery_copy, monkeypatch, capsys) -> None:
    src = gallery_copy / "gallery"
    before = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file() and p.name != ".lock"}
    forbid_photo_reads(monkeypatch)
    assert main(["upgrade", str(src), "--bundle", str(NEW), "--out", str(gallery_copy / "moved")]) == 0
    after = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    assert read_gallery(gallery_copy / "moved").manifest["derived"]["bundle"]["query"] == "sface"
    # --out inside the source, or an existing non-empty folder: refused with the reason
    assert main(["upgrade", str(src), "--bundle", str(NEW), "--out", str(src / "inner")]) == 2
    assert "inside the source gallery" in capsys.readouterr().err
    assert main(["upgrade", str(src), "--bundle", str(NEW), "--out", str(gallery_copy / "moved")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_mixed_gallery_searches_correctly(gallery_copy, new_engine, lfw_dir) -> None:
    """Old entries without sface's embedding beside new entries with all three members."""
    g = Gallery.load(gallery_copy / "gallery", new_engine)
    photos = copy_people(lfw_dir, gallery_copy / "more", MORE)
    g.add_images([(p.name, p, p.parent.name) for p in sorted(photos.rglob("*.jpg"))])
    g.save(gallery_copy / "gallery")
    g = Gallery.load(gallery_copy / "gallery", new_engine)
    vec = g.vectors
    full = vec.member_present.all(axis=1)
    assert full.sum() == 2 * len(MORE) and (~full).sum() == 2 * len(PEOPLE)
    assert g.load_report.missing == {"query": 2 * len(PEOPLE)}
    # an entry lacking a member is fused from the members it has: the missing one weighs nothing
    old_rows = np.flatnonzero(~full)
    members = [vec.views[m] for m in vec.members]
    prob = np.array([e.face.probability for e in g.entries], np.float32)[old_rows]
    w = g.bundle.fusion.weights([x[old_rows] for x in members],
                                [vec.member_present[old_rows, i] for i in range(len(members))], prob)
    assert np.all(w[:, vec.members.index("query")] == 0) and np.allclose(w.sum(1), 1.0)
    expect = sum(w[:, i:i + 1] * members[i][old_rows] for i in range(len(members)))
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(vec.ensemble[old_rows], expect, atol=1e-5)
    for p in PEOPLE + MORE:
        res = g.search_image(lfw_dir / p / f"{p}_0003.jpg")
        assert res.views["ensemble"].matches[0].label == p, p
        labels_in_query_view = {m.label for m in res.views["query"].matches}
        assert labels_in_query_view <= set(MORE)  # only entries holding sface's own embedding


def test_backfill_is_resumable_and_completes(gallery_copy, new_engine, lfw_dir) -> None:
    from cmce.gallery.upgrade import backfill_gallery, upgrade_gallery

    folder = gallery_copy / "gallery"
    upgrade_gallery(folder, new_engine.bundle)
    (gallery_copy / "photos" / PEOPLE[3] / f"{PEOPLE[3]}_0002.jpg").unlink()  # one photo gone

    def stop_after_first_chunk(done: int, waiting: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backfill_gallery(folder, new_engine, chunk_size=3, progress=stop_after_first_chunk)
    mid = Gallery.load(folder, new_engine)  # searchable mid-way, with mixed entries
    assert mid.load_report.missing == {"query": 5}
    assert mid.search_image(lfw_dir / PEOPLE[0] / f"{PEOPLE[0]}_0003.jpg").views["ensemble"].matches[0].label == PEOPLE[0]
    seen = []
    report = backfill_gallery(folder, new_engine, chunk_size=3, progress=lambda d, w: seen.append((d, w)))
    assert report.embedded == {"sface": 4} and report.photos_read == 4 and report.waiting == 1
    assert [s for s, _ in report.unreachable] == [f"{PEOPLE[3]}/{PEOPLE[3]}_0002.jpg"]
    assert seen[-1] == (5, 0)
    done = Gallery.load(folder, new_engine)
    assert done.load_report.missing == {"query": 1}
    # backfilled embeddings equal indexing the photo with the new bundle from scratch
    fresh = Gallery(new_engine)
    fresh.add_images([(f"{PEOPLE[0]}_0001.jpg", gallery_copy / "photos" / PEOPLE[0] / f"{PEOPLE[0]}_0001.jpg", PEOPLE[0])])
    row = next(i for i, e in enumerate(done.entries) if e.content_hash == fresh.entries[0].content_hash)
    np.testing.assert_allclose(done.vectors.ensemble[row], fresh.vectors.ensemble[0], atol=1e-5)


def test_cli_backfill(gallery_copy, capsys) -> None:
    assert main(["upgrade", str(gallery_copy / "gallery"), "--bundle", str(NEW), "--backfill", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2].endswith("8 entries lack a member")  # the re-projection, then the backfill
    assert out[-1].startswith("backfilled sface for 8 from 8 photos") and out[-1].endswith("0 entries still waiting")


def test_index_into_a_gallery_of_another_bundle_says_to_upgrade(gallery_copy, lfw_dir, capsys) -> None:
    photos = copy_people(lfw_dir, gallery_copy / "more", MORE[:1])
    assert main(["index", str(photos), "--out", str(gallery_copy / "gallery"), "--bundle", str(NEW), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "python -m cmce upgrade" in err and "query facenet-casia" in err
    assert main(["upgrade", str(gallery_copy / "gallery"), "--bundle", str(NEW), "--quiet"]) == 0
    assert main(["index", str(photos), "--out", str(gallery_copy / "gallery"), "--bundle", str(NEW), "--quiet"]) == 0
    assert len(read_gallery(gallery_copy / "gallery").records) == 8 + 2


def test_interrupted_upgrade_leaves_the_previous_gallery(gallery_copy, old_engine, lfw_dir, monkeypatch) -> None:
    from cmce.gallery.upgrade import upgrade_gallery
    from cmce.search.index import VectorIndex

    folder = gallery_copy / "gallery"
    manifest = (folder / "manifest.json").read_bytes()
    derived_before = sorted(p.name for p in (folder / "derived").iterdir())

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(VectorIndex, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        upgrade_gallery(folder, load_bundle(NEW))
    monkeypatch.undo()
    assert (folder / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in (folder / "derived").iterdir()) == derived_before  # no temporary left
    g = Gallery.load(folder, old_engine)
    assert g.search_image(lfw_dir / PEOPLE[1] / f"{PEOPLE[1]}_0003.jpg").views["ensemble"].matches[0].label == PEOPLE[1]


def test_version_1_gallery_is_read_and_upgraded(gallery_copy, new_engine, lfw_dir) -> None:
    """A gallery in the previous on-disk format (gallery.json + embeddings.npz)."""
    stored = read_gallery(gallery_copy / "gallery")
    r = stored.records
    v1 = gallery_copy / "v1"
    v1.mkdir()
    thumbs = [bytes(t) for t in r.thumbnail]
    np.savez(v1 / "embeddings.npz", removed=np.zeros(len(r), bool),
             thumbnails=np.frombuffer(b"".join(thumbs), np.uint8),
             thumbnail_offsets=np.cumsum([0] + [len(t) for t in thumbs]).astype(np.int64),
             **{f"emb::{rec.name}": r.embeddings[k] for k, rec in r.backbones.items()})
    entries = [{"label": r.label[i], "source": r.source[i], "content_hash": r.content_hash[i],
                "face": r.face(i).to_dict()} for i in range(len(r))]
    (v1 / "gallery.json").write_text(json.dumps({"format_version": 1, "bundle_fingerprint": "x", "entries": entries}))
    g = Gallery.load(v1, new_engine)
    assert g.load_report.converted_from == 1 and len(g) == len(r)
    assert g.search_image(lfw_dir / PEOPLE[2] / f"{PEOPLE[2]}_0003.jpg").views["ensemble"].matches[0].label == PEOPLE[2]
    assert main(["upgrade", str(v1), "--bundle", str(NEW), "--quiet"]) == 0
    assert (v1 / "manifest.json").is_file() and not (v1 / "gallery.json").exists()
    assert read_gallery(v1).records.entry_id.tolist() == [f"{h}:0" for h in r.content_hash]


def test_bundles_that_cannot_serve_are_refused_with_the_reason(gallery_copy, new_engine) -> None:
    from cmce.storage.records import BackboneRecord
    from cmce.storage.write import write_gallery

    stored = read_gallery(gallery_copy / "gallery")
    r = stored.records
    # embeddings made with other weights of the same model are not mixed in
    for k in list(r.backbones):
        rec = r.backbones.pop(k)
        other = BackboneRecord(rec.name, "0" * 64, rec.dim)
        r.backbones[other.key] = other
        r.embeddings[other.key], r.present[other.key] = r.embeddings.pop(k), r.present.pop(k)
    write_gallery(gallery_copy / "other-weights", r)
    with pytest.raises(GalleryError, match=r"holds embeddings of dlib-resnet34@000000000000.*none of which is stored"):
        Gallery.load(gallery_copy / "other-weights", new_engine)
    # an embedding size that does not fit the bundle's backbone
    key = next(k for k in r.backbones if k.startswith("dlib"))
    r2 = read_gallery(gallery_copy / "gallery").records
    key = next(k for k in r2.backbones if k.startswith("dlib"))
    r2.backbones[key] = BackboneRecord("dlib-resnet34", r2.backbones[key].sha256, 64)
    r2.embeddings[key] = r2.embeddings[key][:, :64].copy()
    write_gallery(gallery_copy / "bad-dim", r2)
    with pytest.raises(GalleryError, match="64-d dlib-resnet34 embeddings.*128-d"):
        Gallery.load(gallery_copy / "bad-dim", new_engine)
    with pytest.raises(CmceError, match="no such gallery folder"):
        Gallery.load(gallery_copy / "absent", new_engine)


def test_a_bundle_whose_gallery_model_cannot_run_here_still_serves(gallery_copy, lfw_dir) -> None:
    """facenet-vggface2 is online-only: the engine skips it, a gallery holding it is served."""
    from cmce.method.bundle_model import Bundle
    from cmce.models.transform import TransformerConfig, create_transformer
    from cmce.storage.records import BackboneRecord
    from cmce.storage.write import write_gallery

    new = load_bundle(NEW)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    bundle = Bundle("sface", ("dlib-resnet34", "facenet-vggface2"),
                    {"dlib-resnet34": new.transformers["dlib-resnet34"],
                     "facenet-vggface2": create_transformer(TransformerConfig(512, 128, hidden=64)).eval()},
                    query_member=True)
    engine = FaceEngine(bundle)
    assert "facenet-vggface2" in engine.unavailable and "facenet-vggface2" not in engine.backbones
    r = read_gallery(gallery_copy / "gallery").records
    rec = BackboneRecord("facenet-vggface2", None, 512)
    rng = np.random.default_rng(0)
    fake = rng.standard_normal((len(r), 512)).astype(np.float32)
    r.backbones[rec.key], r.embeddings[rec.key] = rec, fake / np.linalg.norm(fake, axis=1, keepdims=True)
    r.present[rec.key] = np.ones(len(r), bool)
    write_gallery(gallery_copy / "vgg", r)
    g = Gallery.load(gallery_copy / "vgg", engine)
    assert g.load_report.missing == {"query": len(r)}
    res = g.search_image(lfw_dir / PEOPLE[0] / f"{PEOPLE[0]}_0003.jpg")
    assert set(res.views["ensemble"].matches[0].members) == {"dlib-resnet34", "facenet-vggface2"}
    assert res.views["dlib-resnet34"].matches[0].label == PEOPLE[0]
    # new photos are indexed without it, and the report says so
    report = g.add_images([("x.jpg", lfw_dir / MORE[0] / f"{MORE[0]}_0001.jpg", MORE[0])])
    assert report.added == 1 and any("lack facenet-vggface2" in n for n in report.notes)


def test_corrections_carry_over_an_upgrade_in_place_and_to_another_folder(gallery_copy, new_engine, lfw_dir) -> None:
    """Names, must-links and cannot-links survive ``cmce upgrade`` (no photo read), and the new bundle's
    gallery answers with the given name."""
    from cmce.storage.corrections import add_corrections, read_corrections

    src = gallery_copy / "gallery"
    r = read_gallery(src).records
    ids = {p: [e for e, label in zip(r.entry_id.tolist(), r.label.tolist()) if label == p] for p in PEOPLE}
    given = add_corrections(src, names={e: "Aaron P." for e in ids[PEOPLE[0]]}, must_link=[tuple(ids[PEOPLE[1]])],
                            cannot_link=[(ids[PEOPLE[2]][0], ids[PEOPLE[3]][0])])
    assert len(given) == 4
    assert main(["upgrade", str(src), "--bundle", str(NEW), "--out", str(gallery_copy / "moved"), "--quiet"]) == 0
    assert main(["upgrade", str(src), "--bundle", str(NEW), "--quiet"]) == 0
    for folder in (src, gallery_copy / "moved"):
        assert read_corrections(folder) == given
        assert read_gallery(folder).manifest["derived"]["bundle"]["query"] == "sface"
        best = Gallery.load(folder, new_engine).search_image(lfw_dir / PEOPLE[0] / f"{PEOPLE[0]}_0003.jpg")
        assert best.views["ensemble"].matches[0].label == "Aaron P."
