"""``cmce evaluate`` in steps: repeatable --gallery-degrade / --upgrade-from, --precision, --compare-scores.

The photos are synthetic embeddings of the shipped bundle's backbones (no photo is read):
``embed_evaluation_photos`` and ``degrade_photos`` are replaced, everything after them runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmce.cli import _json_safe, build_parser, main
from cmce.experiments import evaluate_run
from cmce.experiments.degrade import DegradeSpec
from cmce.experiments.evaluate import evaluate_embedded
from cmce.experiments.evaluate_run import CLEAN, EvaluationPhotos, parse_gallery_kinds
from cmce.faces.geometry import Face
from cmce.io.datasets import LabelledImages
from cmce.method.bundle import load_bundle
from cmce.models.embed import EmbeddedFiles

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "assets" / "bundles" / "sface-query"
needs_bundle = pytest.mark.skipif(not (BUNDLE / "config.json").is_file(), reason="shipped bundle not built")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _photos(bundle, people: int = 14, per: int = 3, seed: int = 0) -> EvaluationPhotos:
    """``people`` identities of ``per`` photos, each backbone's vectors a noisy copy of the person's centre."""
    from cmce.models.backbones import get_spec

    rng = np.random.default_rng(seed)
    labels = tuple(f"person_{i:02d}" for i in range(people) for _ in range(per))
    person = np.repeat(np.arange(people), per)
    emb = {}
    for m in bundle.models:
        d = get_spec(m).embedding_size
        centres = rng.normal(size=(people, d))
        emb[m] = _unit(centres[person] + 0.9 * rng.normal(size=(len(labels), d)))
    faces = tuple(Face((0.0, 0.0, 80.0, 80.0), float(p), ((20.0, 30.0),) * 5, (100, 100))
                  for p in rng.uniform(0.9, 1.0, len(labels)))
    paths = tuple(f"/synthetic/{lab}/{i}.jpg" for i, lab in enumerate(labels))
    clean = EmbeddedFiles(paths, faces, (None,) * len(labels), emb)
    ds = LabelledImages(tuple(Path(p) for p in paths), labels, Path("/synthetic"))
    return EvaluationPhotos(Path("/synthetic"), ds, False, "plain", bundle.models, None, clean, None, False)


def _degraded(photos: EvaluationPhotos, spec: DegradeSpec, *, seed: int = 0):
    """A stand-in for ``degrade_photos``: noise on a seeded share of the gallery vectors, and its report."""
    rng = np.random.default_rng(seed)
    emb = {m: v.copy() for m, v in photos.clean.embeddings.items()}
    picked = np.flatnonzero(rng.random(len(photos.dataset.labels)) < spec.share)
    for m in emb:
        emb[m][picked] = _unit(emb[m][picked] + 1.5 * rng.normal(size=emb[m][picked].shape))
    report = {"spec": spec.text, "seed": seed, "kinds": list(spec.kinds), "picked": int(len(picked)),
              "degraded": int(len(picked)), "gallery_photos": len(photos.dataset.labels),
              "by_kind": {spec.kinds[0]: int(len(picked))}, "kept_clean_no_face": {}}
    return EmbeddedFiles(photos.clean.paths, photos.clean.faces, photos.clean.errors, emb), report


@pytest.fixture
def synthetic(monkeypatch):
    bundle = load_bundle(BUNDLE)
    photos = _photos(bundle)
    monkeypatch.setattr(evaluate_run, "embed_evaluation_photos", lambda *a, **k: photos)
    monkeypatch.setattr(evaluate_run, "degrade_photos", _degraded)
    # timings re-read photos (there are none here) and differ run to run
    monkeypatch.setattr(evaluate_run, "upgrade_costs", lambda *a, **k: {"before": 0.0, "no_backfill": 1.0,
                                                                         "backfill": 2.0})
    return bundle, photos


def test_gallery_degrade_and_upgrade_from_are_repeatable() -> None:
    parse = build_parser().parse_args
    one = parse(["evaluate", "data", "--gallery-degrade", "blur"])
    assert one.gallery_degrade == ["blur"] and one.upgrade_from is None and one.precision == "float32"
    many = parse(["evaluate", "data", "--gallery-degrade", "clean", "--gallery-degrade", "mix:0.6",
                  "--upgrade-from", "a", "--upgrade-from", "backbone:sface", "--precision", "int8",
                  "--compare-scores"])
    assert many.gallery_degrade == ["clean", "mix:0.6"] and many.upgrade_from == ["a", "backbone:sface"]
    assert many.precision == "int8" and many.compare_scores
    none = parse(["evaluate", "data"])
    assert none.gallery_degrade is None and not none.compare_scores
    with pytest.raises(SystemExit):
        parse(["evaluate", "data", "--precision", "fp16"])
    assert parse(["upgrade", "g", "--bundle", "b", "--precision", "int8"]).precision == "int8"


def test_gallery_kinds_parse_to_one_gallery_each_clean_as_none() -> None:
    assert parse_gallery_kinds(None) == [None] and parse_gallery_kinds([]) == [None]
    kinds = parse_gallery_kinds([CLEAN, "mix:0.6", "blur"])
    assert kinds[0] is None and [k.text for k in kinds[1:]] == ["mix:0.6", "blur"]


def test_options_evaluate_cannot_honour_fail_before_anything_is_read(tmp_path, capsys) -> None:
    nowhere = str(tmp_path / "no-such-data")
    assert main(["evaluate", nowhere, "--gallery-degrade", "blur", "--gallery-degrade", "dark", "--record"]) == 2
    assert main(["evaluate", nowhere, "--heldout", "--gallery-degrade", "blur", "--gallery-degrade", "dark",
                 "--ablations"]) == 2
    assert main(["evaluate", nowhere, "--precision", "int8"]) == 2
    assert main(["evaluate", nowhere, "--gallery-degrade", "clean", "--gallery-degrade", "fog"]) == 2
    err = capsys.readouterr().err
    assert "--record takes one gallery; 2 --gallery-degrade specs" in err
    assert "--ablations takes one gallery" in err and "add --upgrade-from" in err and "'fog'" in err


@needs_bundle
def test_one_spec_writes_what_it_wrote_before(synthetic, tmp_path, capsys) -> None:
    """One --gallery-degrade: the JSON is evaluate_embedded's sections, the degradation and the data, as before."""
    bundle, photos = synthetic
    out = tmp_path / "blur.json"
    assert main(["evaluate", "data", "--bundle", str(BUNDLE), "--gallery-degrade", "blur:0.5", "--ci-resamples",
                 "20", "--quiet", "--json", str(out)]) == 0
    emb, report = _degraded(photos, DegradeSpec.parse("blur:0.5"))
    expected = evaluate_embedded(emb, photos.dataset.labels, bundle, ci_resamples=20)
    expected["gallery_degrade"] = report
    expected["data"] = {"dir": "synthetic", "heldout_only": False, "detection": "plain"}
    assert out.read_text() == json.dumps(_json_safe(expected), indent=2) + "\n"
    printed = capsys.readouterr().out
    assert printed.startswith("gallery degraded (blur:0.5, seed 0): ")
    assert "## " not in printed and "quality scores compared" not in printed


@needs_bundle
def test_several_specs_give_one_evaluation_each_as_one_spec_would(synthetic, tmp_path, capsys) -> None:
    args = ["evaluate", "data", "--bundle", str(BUNDLE), "--ci-resamples", "20", "--quiet"]
    singles = []
    for spec in ("clean", "dark:0.5"):
        assert main(args + ["--gallery-degrade", spec, "--json", str(tmp_path / f"{spec}.json")]) == 0
        singles.append((json.loads((tmp_path / f"{spec}.json").read_text()), capsys.readouterr().out))
    assert main(args + ["--gallery-degrade", "clean", "--gallery-degrade", "dark:0.5",
                        "--json", str(tmp_path / "both.json")]) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    printed = capsys.readouterr().out
    assert list(both) == ["evaluations"] and both["evaluations"] == [s[0] for s in singles]
    assert "gallery_degrade" not in both["evaluations"][0]
    assert printed == "".join(f"\n## {k} gallery\n\n{text}" for k, (_, text) in zip(("clean", "dark:0.5"), singles))


@needs_bundle
def test_several_upgrade_sources_in_int8_with_the_score_comparison(synthetic, tmp_path, capsys) -> None:
    out = tmp_path / "up.json"
    assert main(["evaluate", "data", "--bundle", str(BUNDLE), "--ci-resamples", "20", "--quiet",
                 "--upgrade-from", "backbone:facenet-casia", "--upgrade-from", "backbone:dlib-resnet34",
                 "--precision", "int8", "--compare-scores", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert "upgrade" not in r and [u["from"]["source"] for u in r["upgrades"]] == [
        "backbone:facenet-casia", "backbone:dlib-resnet34"]
    for up in r["upgrades"]:
        p = up["precision"]
        assert p["precision"] == "int8" and p["queries"] == up["counts"]["queries"]
        assert 0 <= p["top1_changed"] <= p["queries"] and 0 <= p["cosine_distance_median"] <= 0.05
    cmp = r["score_comparison"]
    assert cmp["score"] == load_bundle(BUNDLE).calibration.quality.kind and len(cmp["rates"]) == 4
    assert list(r).index("score_comparison") < list(r).index("upgrades") < list(r).index("data")
    printed = capsys.readouterr().out
    assert printed.count("upgrade from query facenet-casia") == 1 and printed.count("upgrade from query") == 2
    assert printed.count("int8 re-projection (no backfill)") == 2 and "quality scores compared" in printed


@needs_bundle
def test_one_upgrade_source_in_float32_keeps_its_shape(synthetic, tmp_path) -> None:
    out = tmp_path / "up.json"
    assert main(["evaluate", "data", "--bundle", str(BUNDLE), "--ci-resamples", "20", "--quiet",
                 "--upgrade-from", "backbone:facenet-casia", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert "upgrades" not in r and "score_comparison" not in r and list(r)[-2:] == ["upgrade", "data"]
    assert list(r["upgrade"]) == ["from", "to", "counts", "rows", "comparisons", "ensemble_size"]
    assert r["upgrade"]["from"] == {"query": "facenet-casia", "gallery": ["facenet-casia"],
                                    "source": "backbone:facenet-casia"}
