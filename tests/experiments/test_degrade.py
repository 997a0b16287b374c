"""Degradations for mixed-quality galleries, identity-bootstrap intervals, robust fusion."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmce.errors import CmceError
from cmce.experiments.degrade import (
    CROP_MARGINS,
    DEGRADATIONS,
    MIX_KINDS,
    RESIZING_KINDS,
    TRAIN_KINDS,
    DegradeSpec,
    crop_box,
    degrade_gallery,
    degrade_image,
    plan_degradation,
    write_degraded,
)
from cmce.faces.geometry import Face
from cmce.method.ensemble import FusionGate, fuse_members
from cmce.metrics.intervals import cluster_bootstrap, tar_at_far_cluster_ci
from cmce.metrics.retrieval import recall_at_k, top1_hits
from cmce.metrics.verification import tar_at_far, verification_scores

# real LFW photos whose subject face the plain detector finds (crop and tiny need its box)
PHOTOS = [("Abel_Pacheco", 1), ("Adam_Sandler", 2), ("Ai_Sugiyama", 1), ("Aaron_Peirsol", 1),
          ("Ahmed_Chalabi", 1), ("Alejandro_Toledo", 3)]


def _face_image(seed: int = 0) -> np.ndarray:
    """A textured 120x100 RGB image (gradients plus noise): every degradation must change it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:120, 0:100]
    base = np.stack([x * 2.5, y * 2.0, (x + y) * 1.1], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("text", "share", "kinds"),
    [
        ("mix:0.6", 0.6, MIX_KINDS),
        ("MIX:0.25:blur+noise", 0.25, ("blur", "noise")),
        ("blur", 1.0, ("blur",)),
        ("occlusion:0.5", 0.5, ("occlusion",)),
        ("crop", 1.0, ("crop",)),
        ("crop:0.5", 0.5, ("crop",)),
        ("tiny", 1.0, ("tiny",)),
        ("mix:0.6:crop+tiny", 0.6, ("crop", "tiny")),
    ],
)
def test_spec_parsing_and_canonical_text(text: str, share: float, kinds: tuple) -> None:
    spec = DegradeSpec.parse(text)
    assert spec.share == share and spec.kinds == kinds
    assert DegradeSpec.parse(spec.text) == spec


@pytest.mark.parametrize("text", ["mix", "fog", "mix:1.5", "blur:0", "blur:0.5:noise", "mix:0.5:blur+fog", "",
                                  "crop:0.5:tiny", "mix:0.6:crop+fog", "tiny:0", "crops"])
def test_bad_specs_say_what_is_valid(text: str) -> None:
    with pytest.raises(CmceError, match="valid kinds|mix needs|share|KIND|only mix"):
        DegradeSpec.parse(text)


@pytest.mark.parametrize("text", ["fog", "mix:0.6:crop+fog", "crops"])
def test_unknown_kind_errors_name_every_kind_including_crop_and_tiny(text: str) -> None:
    with pytest.raises(CmceError) as e:
        DegradeSpec.parse(text)
    assert all(k in str(e.value) for k in DEGRADATIONS) and "crop" in str(e.value) and "tiny" in str(e.value)


def test_training_kinds_are_the_six_it_always_drew() -> None:
    """Training draws from TRAIN_KINDS, not DEGRADATIONS: adding kinds leaves retrained bundles bit-identical."""
    assert TRAIN_KINDS == ("blur", "lowres", "jpeg", "dark", "noise", "occlusion")
    assert set(RESIZING_KINDS) == {"crop", "tiny"} and not set(RESIZING_KINDS) & set(TRAIN_KINDS)
    # a kind's position seeds its pixels (write_degraded): the old kinds keep theirs
    assert DEGRADATIONS[: len(TRAIN_KINDS)] == TRAIN_KINDS and MIX_KINDS == TRAIN_KINDS[:4]
    pos, kinds = plan_degradation(500, DegradeSpec(0.6, TRAIN_KINDS), seed=1)
    assert set(kinds.tolist()) == set(TRAIN_KINDS)
    import inspect

    from cmce.experiments import train

    src = inspect.getsource(train)  # train_bundle's mixed-quality gallery (made in train._degraded_sets)
    assert "DegradeSpec(mixed_share, TRAIN_KINDS)" in src and "DEGRADATIONS" not in src


# sha256 of the pixels write_degraded gave before crop and tiny existed (numpy-only kinds:
# no Pillow or libjpeg version can move them)
_OLD_PIXELS = {
    "dark": "08e73f190c827221b80d3356e05084dd950c2c78809d7150a59ed7c6d2183c92",
    "noise": "78081ace5fa1f3bfb3f9464e36b0074dccf75a556fcb112df6121c594dccda92",
    "occlusion": "91da770affa62ff2f4a75de3941391e60e53233316875fd6fda409a0f50b02e5",
}


@pytest.mark.parametrize("kind", sorted(_OLD_PIXELS))
def test_existing_kinds_draw_the_same_pixels_as_before(kind: str, tmp_path) -> None:
    path = write_degraded([_face_image()], ["cd" * 32], [kind], 7, tmp_path, boxes=[(20, 20, 80, 100)])[0]
    assert hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest() == _OLD_PIXELS[kind]


@pytest.mark.parametrize("kind", [k for k in DEGRADATIONS if k not in RESIZING_KINDS])
def test_each_kind_changes_the_image_deterministically(kind: str) -> None:
    img = _face_image()
    a = degrade_image(img, kind, np.random.default_rng(3), box=(20, 20, 80, 100))
    b = degrade_image(img, kind, np.random.default_rng(3), box=(20, 20, 80, 100))
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 1.0
    if kind == "dark":
        assert a.mean() < 0.7 * img.mean()
    if kind == "occlusion":  # a grey band inside the face box, nothing outside it
        changed = np.any(a != img, axis=-1)
        ys, xs = np.nonzero(changed)
        assert xs.min() >= 20 and xs.max() < 80 and ys.min() >= 20 and ys.max() < 100
        assert np.all(a[changed] == 128)


@pytest.fixture(scope="module")
def lfw_faces(lfw_dir: Path) -> list[tuple[np.ndarray, Face]]:
    """The PHOTOS with their subject face (plain detection, as evaluate's clean gallery has it)."""
    from cmce.faces.detector import create_detector
    from cmce.faces.geometry import pick_subject
    from cmce.io.images import load_image

    detector = create_detector("plain")
    out = []
    for person, i in PHOTOS:
        img = load_image(lfw_dir / person / f"{person}_{i:04d}.jpg")
        faces = detector.detect(img)
        out.append((img, faces[pick_subject(faces)]))
    return out


def test_crop_cuts_the_face_at_one_of_three_margins(lfw_faces) -> None:
    seen = set()
    for img, face in lfw_faces:
        bw, bh = face.width, face.height
        pts = face.landmarks_array()
        rects = {m: crop_box(img.shape[:2], m, face.box, pts) for m in CROP_MARGINS}
        assert len(set(rects.values())) == 3, "three different margins"
        for seed in range(20):
            out = degrade_image(img, "crop", np.random.default_rng(seed), face.box, pts)
            np.testing.assert_array_equal(out, degrade_image(img, "crop", np.random.default_rng(seed), face.box, pts))
            margin = [m for m, (x1, y1, x2, y2) in rects.items() if np.array_equal(out, img[y1:y2, x1:x2])]
            assert len(margin) == 1, "the output is the photo cut at one of the margins, pixels untouched"
            seen.add(margin[0])
            h, w = out.shape[:2]
            assert h < img.shape[0] and w < img.shape[1]
            if margin[0] == "box":
                assert abs(w - bw) <= 1.5 and abs(h - bh) <= 1.5
            elif margin[0] == "inside":
                assert abs(w - 0.8 * bw) <= 1.5 and abs(h - 0.8 * bh) <= 1.5
            else:  # brow to chin: every landmark inside, the crop about the box's size
                x1, y1, x2, y2 = rects["face"]
                assert ((pts > [x1, y1]) & (pts < [x2, y2])).all()
                assert 0.5 * bw <= w <= 1.1 * bw and 0.5 * bh <= h <= 1.0 * bh
    assert seen == set(CROP_MARGINS)


def test_crop_without_landmarks_or_box_falls_back_inside() -> None:
    img = _face_image()
    box = (20, 20, 80, 100)
    assert crop_box(img.shape[:2], "face", box, None) == crop_box(img.shape[:2], "inside", box)
    assert crop_box(img.shape[:2], "box", None) == (20, 24, 80, 96)  # the central 60% of 100 x 120
    assert crop_box(img.shape[:2], "box", (-5, -5, 300, 300)) == (0, 0, 100, 120)  # clipped to the photo
    with pytest.raises(CmceError, match="box, inside, face"):
        crop_box(img.shape[:2], "loose", (20, 20, 80, 100))


def test_tiny_draws_a_face_16_to_40_px_wide_and_keeps_the_small_photo(lfw_faces) -> None:
    for img, face in lfw_faces:
        widths = []
        for seed in range(25):
            out = degrade_image(img, "tiny", np.random.default_rng(seed), face.box)
            np.testing.assert_array_equal(out, degrade_image(img, "tiny", np.random.default_rng(seed), face.box))
            scale = out.shape[1] / img.shape[1]
            assert abs(out.shape[0] / img.shape[0] - scale) < 0.03, "the aspect ratio is kept"
            widths.append(face.width * scale)
        assert 16.0 <= min(widths) and max(widths) <= 40.0
        assert max(widths) - min(widths) > 12, "widths drawn across the range"
    img = lfw_faces[0][0]
    np.testing.assert_array_equal(degrade_image(img, "tiny", np.random.default_rng(0), (100, 100, 112, 114)), img)


def test_the_index_detector_finds_tiny_faces_about_as_wide_as_drawn(lfw_faces) -> None:
    """The point of tiny: the indexing path sees (and finds) a face 16-40 px wide."""
    from cmce.faces.detector import create_detector
    from cmce.faces.geometry import pick_subject

    detector = create_detector("index")
    for seed, (img, face) in enumerate(lfw_faces):
        out = degrade_image(img, "tiny", np.random.default_rng(seed), face.box)
        drawn = face.width * out.shape[1] / img.shape[1]
        faces = detector.detect(out)
        assert faces, f"no face in a {out.shape[1]}x{out.shape[0]} copy with a {drawn:.0f} px face"
        found = faces[pick_subject(faces)]
        assert 0.75 * drawn <= found.width <= 1.25 * drawn


def test_crop_and_tiny_copies_are_smaller_and_deterministic_on_disk(lfw_faces, tmp_path) -> None:
    img, face = lfw_faces[1]
    args = ([img], ["ef" * 32])
    for kind in RESIZING_KINDS:
        a = write_degraded(*args, [kind], 3, tmp_path / "a", [face.box], [face.landmarks_array()])[0]
        b = write_degraded(*args, [kind], 3, tmp_path / "b", [face.box], [face.landmarks_array()])[0]
        assert a.read_bytes() == b.read_bytes()
        w, h = Image.open(a).size
        assert w < img.shape[1] and h < img.shape[0]
        outs = {write_degraded(*args, [kind], s, tmp_path / f"s{s}", [face.box], [face.landmarks_array()])[0]
                .read_bytes() for s in range(6)}
        assert len(outs) >= 2, "the seed draws the margin or the width"


def test_degrade_gallery_swaps_in_crops_and_tiny_copies_found_by_the_index_detector(lfw_dir, tmp_path) -> None:
    from cmce.faces.detector import create_detector
    from cmce.models.embed import EmbeddingCache, embed_files

    files = [lfw_dir / p / f"{p}_{i:04d}.jpg" for p, i in PHOTOS]
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    index = create_detector("index")
    clean = embed_files(files, ["sface"], detector=index, cache=cache)
    assert clean.found.all()
    everyone = np.arange(len(files))
    found = {}
    for kind in RESIZING_KINDS:
        for name, detector in (("index", index), ("plain", None)):
            out, report, swapped = degrade_gallery(clean, everyone, DegradeSpec.parse(kind), models=["sface"],
                                                   cache=cache, detector=detector)
            assert report["picked"] == len(files)
            assert report["degraded"] + sum(report["kept_clean_no_face"].values()) == len(files) == swapped.size
            assert report["degraded"] == swapped.sum()
            found[kind, name] = report["degraded"]
            cos = []
            for i in np.flatnonzero(swapped):  # the copy's face, in the copy's (smaller) pixels
                assert out.faces[i].image_size[0] < clean.faces[i].image_size[0]
                cos.append(float(out.embeddings["sface"][i] @ clean.embeddings["sface"][i]))
            # the same person, not the same embedding (MTCNN's landmarks on a brow-to-chin crop
            # of a turned face can be well off: one crop here scores 0.14)
            assert max(cos) < 0.9999 and np.median(cos) > 0.5 and (kind == "crop" or min(cos) > 0.5)
            for i in np.flatnonzero(~swapped):  # kept clean
                np.testing.assert_array_equal(out.embeddings["sface"][i], clean.embeddings["sface"][i])
            if kind == "tiny":
                assert all(out.faces[i].width >= 16 for i in np.flatnonzero(swapped))
    assert found["crop", "index"] >= 5 and found["crop", "index"] > found["crop", "plain"]
    assert found["tiny", "index"] >= 5


def test_plan_picks_the_share_and_every_kind(tmp_path) -> None:
    spec = DegradeSpec.parse("mix:0.6")
    pos, kinds = plan_degradation(1000, spec, seed=0)
    assert len(pos) == 600 and len(set(pos.tolist())) == 600 and pos.max() < 1000
    assert set(kinds.tolist()) == set(MIX_KINDS)
    pos2, kinds2 = plan_degradation(1000, spec, seed=0)
    np.testing.assert_array_equal(pos, pos2)
    assert not np.array_equal(plan_degradation(1000, spec, seed=1)[0], pos)
    # the written pixels depend only on (content digest, kind, seed): caching by content works
    img = _face_image()
    p1 = write_degraded([img], ["ab" * 32], ["jpeg"], 0, tmp_path / "a")[0]
    p2 = write_degraded([img], ["ab" * 32], ["jpeg"], 0, tmp_path / "b")[0]
    p3 = write_degraded([img], ["ab" * 32], ["jpeg"], 1, tmp_path / "c")[0]
    assert p1.read_bytes() == p2.read_bytes() != p3.read_bytes()


def test_top1_hits_matches_recall_at_1_with_a_mask() -> None:
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(60, 40))
    ql, gl = rng.integers(0, 30, 60), np.arange(40) % 32
    mask = rng.random(40) > 0.3
    hits = top1_hits(sim, ql, gl, mask)
    assert np.isnan(hits).any()  # queries whose mate is rejected are not counted
    assert np.nanmean(hits) == pytest.approx(recall_at_k(sim, ql, gl, ks=(1,), gallery_mask=mask)[1])


def test_cluster_bootstrap_against_a_naive_resampling() -> None:
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(40), rng.integers(1, 5, 40))
    a = (rng.random(len(clusters)) < 0.8).astype(float)
    b = np.where(rng.random(len(clusters)) < 0.1, np.nan, (rng.random(len(clusters)) < 0.9).astype(float))
    point, lo, hi = cluster_bootstrap([a, b], clusters, lambda x, y: y - x, resamples=400, seed=5)
    assert point == pytest.approx(np.nanmean(b) - np.nanmean(a))
    # naive: resample identities, gather their queries, recompute the difference
    ids = np.unique(clusters)
    r = np.random.default_rng(7)
    naive = []
    for _ in range(400):
        rows = np.concatenate([np.flatnonzero(clusters == c) for c in r.choice(ids, len(ids))])
        naive.append(np.nanmean(b[rows]) - np.nanmean(a[rows]))
    assert lo == pytest.approx(np.quantile(naive, 0.025), abs=0.03)
    assert hi == pytest.approx(np.quantile(naive, 0.975), abs=0.03)
    assert lo < point < hi


def test_tar_interval_brackets_the_point_value() -> None:
    rng = np.random.default_rng(2)
    g, q = 200, 300
    gl, ql = np.arange(g), rng.integers(0, g, q)
    sim = rng.normal(0, 0.1, (q, g))
    sim[np.arange(q), ql] += rng.normal(0.45, 0.15, q)
    scores, same = verification_scores(sim, ql, gl)
    tar, lo, hi = tar_at_far_cluster_ci(sim, ql, gl, ql, far=1e-2, resamples=200)
    assert tar == tar_at_far(scores, same, 1e-2)
    assert lo <= tar <= hi and hi - lo < 0.2


def _unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_fusion_gate_weights_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    v = [_unit(rng, (6, 8)) for _ in range(3)]
    present = [np.ones(6, bool), np.array([1, 0, 1, 1, 0, 1], bool), np.ones(6, bool)]
    prob = np.full(6, 0.999, np.float32)
    # zero logits: exactly the paper's mean over the present members
    flat = FusionGate("weighted", ("a", "b", "query"), bias=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(flat.fuse(v, present, prob), fuse_members(v, present), atol=1e-6)
    gate = FusionGate("gated", ("a", "b", "query"), w1=tuple(map(tuple, rng.normal(size=(4, 7)))), b1=(0.0,) * 4,
                      w2=tuple(map(tuple, rng.normal(size=(3, 4)))), bias=(0.0, 0.5, -0.5))
    w = gate.weights(v, present, prob)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    assert np.all(w[~present[1], 1] == 0)  # a missing member weighs nothing
    fused = gate.fuse(v, present, prob)
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    assert FusionGate.from_dict(gate.to_dict()) == gate
    with pytest.raises(CmceError, match="fusion must be one of"):
        FusionGate("median")
    with pytest.raises(CmceError, match="w1"):
        FusionGate("gated", ("a", "b"), w1=((0.0,),), b1=(0.0,), w2=((0.0,), (0.0,)), bias=(0.0, 0.0))


@pytest.mark.skipif(not (Path(__file__).parents[2] / "assets/bundles/sface-query/config.json").is_file(),
                    reason="shipped bundle not built")
def test_evaluate_cli_with_crop_and_tiny_galleries_and_index_detection(lfw_dir, tmp_path, capsys) -> None:
    """--gallery-degrade crop / tiny / mix:..:crop+tiny with --detection index, end to end (shipped bundle)."""
    import json

    from cmce.cli import main

    data = tmp_path / "data"
    for person in ("Abel_Pacheco", "Adam_Sandler", "Ai_Sugiyama", "Ahmed_Chalabi"):  # 2+ photos each
        (data / person).mkdir(parents=True)
        for f in sorted((lfw_dir / person).glob("*.jpg"))[:3]:
            (data / person / f.name).symlink_to(f)
    bundle = str(Path(__file__).parents[2] / "assets/bundles/sface-query")
    for spec in ("crop", "tiny", "mix:0.6:crop+tiny"):
        out = tmp_path / f"{spec.replace(':', '_')}.json"
        assert main(["evaluate", str(data), "--bundle", bundle, "--gallery-degrade", spec, "--detection", "index",
                     "--ci-resamples", "20", "--quiet", "--json", str(out)]) == 0
        r = json.loads(out.read_text())
        d = r["gallery_degrade"]
        assert r["data"]["detection"] == "index" and d["spec"] == spec
        assert d["picked"] == (4 if spec == "crop" or spec == "tiny" else 2)
        assert d["degraded"] + sum(d["kept_clean_no_face"].values()) == d["picked"] and d["degraded"] >= 1
        rows = {row["name"]: row for row in r["rows"]}
        assert 0.0 <= rows["CMCE ensemble"]["recall_at_1"] <= 1.0
    assert "index detection" in capsys.readouterr().out


def test_augmented_pairs_add_every_set_of_copies_of_training_photos_only() -> None:
    from cmce.experiments.train_networks import augmented_pairs

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = -x
    labels = np.array(list("aabbcc"))
    train = np.array([1, 1, 1, 1, 0, 0], bool)
    val = ~train
    mixed = (x + 100, np.array([1, 0, 1, 0, 1, 0], bool))  # row 4 is a validation photo: not added
    crops = (x + 200, np.array([0, 1, 0, 0, 0, 1], bool))
    xs, ys, labs, tr, va = augmented_pairs(x, y, labels, train, val, [mixed, crops])
    assert len(xs) == 6 + 2 + 1
    np.testing.assert_array_equal(xs[6:], np.stack([x[0] + 100, x[2] + 100, x[1] + 200]))
    # a copy learns the clean photo's target and keeps its label; copies only ever train
    np.testing.assert_array_equal(ys[6:], np.stack([y[0], y[2], y[1]]))
    assert list(labs[6:]) == ["a", "b", "a"] and tr[6:].all() and not va[6:].any()
    assert augmented_pairs(x, y, labels, train, val)[0] is x
