"""Training a bundle and evaluating it on real faces: calibration, the paper's table, answers, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmce.answer_metrics import cohort_normalised, stranger_best, unknown_mask
from cmce.experiments.evaluate import adapter_row_name, evaluate_embedded
from cmce.experiments.train import train_bundle
from cmce.method.answer_rules import ANSWER_RULES
from cmce.method.bundle import load_bundle
from cmce.method.ensemble import (
    QUALITY_SCORES,
)
from cmce.method.unknown import gallery_doubt
from cmce.metrics.intervals import relative_error_reduction
from cmce.metrics.retrieval import recall_at_k
from cmce.models.transform import (
    TrainConfig,
    first_image_protocol,
    transform_embeddings,
)



@pytest.fixture(scope="module")
def small_dataset(lfw_pairs_embedded, tmp_path_factory) -> Path:
    """A folder-per-identity dataset of symlinks to the already-embedded LFW images."""
    _, res = lfw_pairs_embedded
    root = tmp_path_factory.mktemp("lfw-small")
    for p in res.paths:
        p = Path(p)
        (root / p.parent.name).mkdir(exist_ok=True)
        (root / p.parent.name / p.name).symlink_to(p)
    return root


@pytest.fixture(scope="module")
def trained_bundle(small_dataset: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    bundle = train_bundle(small_dataset, out, train_config=TrainConfig(epochs=4, patience=4), hidden=256,
                          progress=False, answer_kinds=("crop",), guard_kinds=("lowres",), abstain_caps=CAPS)
    return out, bundle


#: The trained bundle's abstention caps: not the default ones, so that the option is seen to reach the calibration.
CAPS = {"clean": 0.10, "any": 0.20}


def test_train_bundle_calibrates_and_saves(trained_bundle) -> None:
    out, bundle = trained_bundle
    loaded = load_bundle(out)
    cal = loaded.calibration
    assert loaded.gallery_models == ("dlib-resnet34", "facenet-casia")
    assert cal.rejection_rate == 0.1 and np.isfinite(cal.rejection_threshold)
    assert set(cal.similarity_thresholds) == {"ensemble", "dlib-resnet34", "facenet-casia", "query"}
    assert cal.quality.kind in {"disagreement", "detection", "combined", "learned"}
    t = loaded.info["training"]
    assert t["images"] > 300 and t["heldout_identities"] > 20
    assert "query_member_val_recall_at_1" in t and "chosen_quality" in t
    # the auto choices were made by cross-validation over the non-held-out identities
    cv = t["cross_validation"]
    assert t["choices_by"] == "5-fold cross-validation" and cv["queries"] > 0
    assert loaded.query_member == (cv["query_member_recall_at_1"]["with"] > cv["query_member_recall_at_1"]["without"])
    # the quality score is chosen on the ensemble the bundle serves, with or without the query member,
    # on mixed-quality validation galleries (degraded copies of a share of the gallery photos)
    side = "with" if loaded.query_member else "without"
    assert set(cv["rejection_recall_at_1"]) == {"without", "with"} == set(cv["mixed_rejection_recall_at_1"])
    served = cv["mixed_rejection_recall_at_1"][side]
    assert set(served) == {"disagreement", "detection", "combined", "learned", "random"}
    assert all(len(v) == len(cv["rates"]) and all(0 <= x <= 1 for x in v) for v in served.values())
    best = max(("disagreement", "detection", "combined", "learned"), key=lambda k: np.mean(served[k]))
    assert cal.quality.kind == best == t["chosen_quality"]
    # the learned score's predictor travels with the bundle whatever was chosen, for the members served
    qp = cal.quality.predictor
    assert qp is not None and qp.members == loaded.member_names and cal.quality.kinds == QUALITY_SCORES
    assert loaded.calibration.quality == bundle.calibration.quality
    mq = t["mixed_quality_validation"]
    assert mq["degraded"] > 0.4 * mq["gallery_photos"] and t["degrade_augment"] is True
    assert t["augmented_with"] == ["mixed", "crop"]  # the crop gallery's copies are learned too
    # the transformers were trained on the degraded copies as well (copy -> clean query embedding)
    assert all(h["refit_images"] > t["images"] + t["validation_images"] for h in t["transformers"].values())
    # the fusion: chosen by the same cross-validation among mean / weighted / gated, on clean and mixed
    figs = cv["fusion_recall_at_1"][side]
    assert set(figs) == {"mean", "weighted", "gated"} and all(set(f) == {"clean", "mixed", "crop"} for f in figs.values())
    assert loaded.fusion.kind == cv["chosen_fusion"][side] == t["fusion"]
    assert loaded.fusion == bundle.fusion
    if loaded.fusion.kind != "mean":
        assert loaded.fusion.members == loaded.member_names
        assert np.mean(list(figs[loaded.fusion.kind].values())) > np.mean(list(figs["mean"].values()))
    # every score has its own calibrated threshold, in its own unit
    assert set(cal.quality_thresholds) == {"disagreement", "detection", "combined", "learned"}
    assert 0.0 < cal.quality_thresholds["learned"] < 1.0  # a predicted chance of a miss
    assert cal.threshold_for(cal.quality.kind) == cal.rejection_threshold
    assert t["refit_on_train_and_validation"]
    # the query adapters (distillation baseline) survive saving, in float16
    assert set(loaded.query_adapters) == {"dlib-resnet34", "facenet-casia"}
    x = np.random.default_rng(0).standard_normal((5, 128)).astype(np.float32)
    for m, a in bundle.query_adapters.items():
        np.testing.assert_allclose(transform_embeddings(loaded.query_adapters[m], x), transform_embeddings(a, x), atol=2e-2)
    # the answer rule: chosen by the same cross-validation, every rule fitted for every view
    assert cal.answer_rule in ANSWER_RULES
    assert set(cal.answer_policies) == {"ensemble", "dlib-resnet34", "facenet-casia", "query"}
    assert all(set(per) == set(ANSWER_RULES) for per in cal.answer_policies.values())
    assert all(p.threshold <= 0.75 for per in cal.answer_policies.values() for p in per.values())
    ans = t["answers"]
    assert ans["chosen"] == cal.answer_rule and set(ans["rules"]) == set(ANSWER_RULES)
    assert set(ans["rules"]["combined"]) == {"clean", "mixed", "crop"}  # crop: calibrates the answer rule only
    assert [d["to"] for d in ans["decisions"]] == ["query", "combined"]
    # with the similarity threshold, the rule says "Unknown" to at most the caps asked for (abstain_caps)
    assert ans["caps"] == CAPS and ans["coverage_guard"]["shares"] == {"clean": 0.08, "any": 0.18}
    shares = ans["unknown_share"]["ensemble"]
    assert shares["clean"] <= CAPS["clean"] + 1e-9 and all(v <= CAPS["any"] + 1e-9 for v in shares.values())
    # the "Unknown" threshold on normalised scores: every view, calibrated out of fold on clean galleries
    norm = cal.cohort_norm
    assert norm is not None and set(norm.thresholds) == set(cal.answer_policies) and norm.cohort == 50
    assert loaded.calibration.cohort_norm == norm and 0.05 <= norm.strangers_named < 1
    # calibrated per gallery size too (galleries drawn from the folds' own), the folds' size last
    assert len(norm.sizes) >= 2 and set(norm.by_size) == set(norm.thresholds)
    assert all(per[-1] == norm.thresholds[v] for v, per in norm.by_size.items())
    # the coverage guard: every calibration gallery (the lowres guard galleries too) keeps the
    # threshold's own unknowns within its share; a guard only ever lowers the threshold
    guard = ans["coverage_guard"]
    assert list(norm.guard_doubt) == guard["doubt"] and set(norm.guard) == set(norm.thresholds)
    assert norm.guard_size == norm.sizes[-1] == guard["size"] and set(norm.guard_slope) == set(norm.thresholds)
    assert {g["group"].split("/")[0] for g in guard["galleries"]} == {"clean", "mixed", "crop", "lowres"}
    assert all(max(per) <= norm.thresholds[v] + 1e-9 and list(per) == sorted(per, reverse=True)
               for v, per in norm.guard.items())
    assert "lowres" in ans["strangers_named"]["ensemble"] and "lowres" in ans["unknown_share"]["ensemble"]
    for g in guard["galleries"]:
        assert g["cap"] >= norm.guard_threshold("ensemble", g["doubt"]) - 1e-9, g
    unknown_by_thr = {c: v["unknown_by_threshold"] for c, v in ans["strangers_named"]["ensemble"].items()}
    assert unknown_by_thr["clean"] <= 0.08 + 0.05 and unknown_by_thr["lowres"] <= 0.18 + 0.05  # pooled over folds
    clean_strangers = ans["strangers_named"]["ensemble"]["clean"]["default"]
    assert clean_strangers >= norm.strangers_named - 0.02  # the guard may name more strangers, never fewer
    assert loaded.calibration.answer_policies == bundle.calibration.answer_policies
    card = (out / "README.md").read_text()
    assert "CC0" in card and "Apache-2.0" in card


def test_evaluate_rows_and_rejection(trained_bundle, small_dataset, lfw_pairs_labelled) -> None:
    out, bundle = trained_bundle
    res, labels = lfw_pairs_labelled
    result = evaluate_embedded(res, labels, bundle, random_repeats=5)
    kinds = {r["kind"] for r in result["rows"]}
    assert kinds == {"symmetric", "asymmetric", "ensemble", "baseline"}
    for r in result["rows"]:
        for k in ("recall_at_1", "recall_at_5", "map", "tar_at_far_1e-3"):
            assert 0.0 <= r[k] <= 1.0
        assert r["recall_at_5"] >= r["recall_at_1"]
    assert [r["rate"] for r in result["rejection"]] == [0.05, 0.1, 0.2, 0.3]
    c = result["counts"]
    assert c["faces_found"] + c["no_face_or_unreadable"] == c["files"] == len(res.paths)
    # the ensemble row equals a direct computation from the bundle
    found = res.found
    idx = np.flatnonzero(found)
    gi, qi = first_image_protocol(labels[idx])
    gi, qi = idx[gi], idx[qi]
    gv = bundle.gallery_vectors({k: v[gi] for k, v in res.embeddings.items()}, res.detection_probability[gi])
    sim = res.embeddings["sface"][qi] @ gv.ensemble.T
    r1 = recall_at_k(sim, labels[qi], labels[gi], ks=(1,))[1]
    row = next(r for r in result["rows"] if r["name"] == "CMCE ensemble")
    assert row["recall_at_1"] == pytest.approx(r1)
    # the app's answers: every query counted once, under every rule
    rules = result["answers"]["rules"]
    thr = bundle.calibration.similarity_thresholds["ensemble"]
    best = sim.argmax(1)
    right = int(((labels[gi][best] == labels[qi]) & (sim.max(1) >= thr)).sum())
    norm = bundle.calibration.cohort_norm
    assert rules.get("answer_all_raw_threshold", rules["answer_all"])["right"] == right
    if norm is not None:  # the default "Unknown": the normalised score, where the gallery holds the cohort
        z = cohort_normalised(sim, list(labels[gi]), norm.cohort)
        doubt = gallery_doubt(gv.quality)
        assert result["answers"]["gallery"]["mean_quality"] == pytest.approx(doubt)
        named = ~unknown_mask(sim.max(1), z, thr, norm.threshold("ensemble", len(gi), doubt))
        assert rules["answer_all"]["right"] == int(((labels[gi][best] == labels[qi]) & named).sum())
        strangers = result["answers"]["strangers"]
        assert strangers["raw_threshold"]["named"] == int((stranger_best(sim, labels[qi], labels[gi]) >= thr).sum())
    for name, r in rules.items():
        assert r["right"] + r["wrong"] + r["unknown"] == len(qi), name
    # a blocking rejection never adds a wrong answer; the policy only abstains
    assert rules["blocking"]["wrong"] <= rules["answer_all"]["wrong"]
    assert rules["policy"]["wrong"] <= rules["answer_all"]["wrong"]
    assert rules["policy"]["right"] <= rules["answer_all"]["right"]
    # the query-side rule answers as many queries as the policy does
    assert rules["similarity_at_policy_coverage"]["coverage"] == pytest.approx(rules["policy"]["coverage"], abs=1 / len(qi))
    curves = result["answers"]["curves"]
    assert {"similarity", "margin", *ANSWER_RULES} <= set(curves)
    assert all(0 <= c["area"] <= 1 for c in curves.values())
    assert result["answers"]["abstention"]["rates"] == [0.05, 0.1, 0.2]


def test_evaluate_reports_query_adapter_baseline(trained_bundle, lfw_pairs_labelled) -> None:
    """The distillation-style row: the query mapped into each gallery model's space."""
    _, bundle = trained_bundle
    res, labels = lfw_pairs_labelled
    result = evaluate_embedded(res, labels, bundle, random_repeats=2)
    idx = np.flatnonzero(res.found)
    gi, qi = first_image_protocol(labels[idx])
    gi, qi = idx[gi], idx[qi]
    for m in bundle.gallery_models:
        row = next(r for r in result["rows"] if r["name"] == adapter_row_name("sface", m))
        assert row["name"] == f"sface distilled into {m} space (query adapter)"
        assert row["kind"] == "baseline" and row["query"] == "sface" and row["gallery"] == [m]
        adapted = transform_embeddings(bundle.query_adapters[m], res.embeddings["sface"][qi])
        assert adapted.shape[1] == res.embeddings[m].shape[1]  # lands in the gallery model's space
        sim = adapted @ res.embeddings[m][gi].T
        assert row["recall_at_1"] == pytest.approx(recall_at_k(sim, labels[qi], labels[gi], ks=(1,))[1], abs=1e-6)
        assert row["recall_at_1"] > 0.5  # it carries identity across the spaces
    # a bundle without adapters (as the ones trained before them) has no such rows
    bare = type(bundle)(bundle.query_model, bundle.gallery_models, bundle.transformers, bundle.query_member,
                        bundle.calibration, bundle.linear_maps)
    names = {r["name"] for r in evaluate_embedded(res, labels, bare, random_repeats=1)["rows"]}
    assert not any("query adapter" in n for n in names)


def test_evaluate_cli_writes_json_and_plot(trained_bundle, small_dataset, tmp_path: Path, capsys) -> None:
    from cmce.cli import main

    out, _ = trained_bundle
    code = main(["evaluate", str(small_dataset), "--bundle", str(out), "--heldout", "--quiet",
                 "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    assert code == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r) >= {"bundle", "counts", "rows", "rejection"}
    assert r["bundle"]["query"] == "sface" and r["data"]["heldout_only"]
    assert set(r["rejection"][0]) >= {"rate", "recall_at_1", "random_recall_at_1", "detection_recall_at_1"}
    assert (tmp_path / "r.png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "CMCE ensemble" in printed and "sface distilled into dlib-resnet34 space (query adapter)" in printed
    assert any(row["name"].endswith("(query adapter)") for row in r["rows"])


def test_evaluate_cli_on_a_degraded_gallery_with_ablations(trained_bundle, small_dataset, tmp_path: Path,
                                                           capsys) -> None:
    """--gallery-degrade degrades gallery photos only (seeded, recorded); every figure has an identity CI."""
    from cmce.cli import main

    out, bundle = trained_bundle
    args = ["evaluate", str(small_dataset), "--bundle", str(out), "--heldout", "--quiet", "--ci-resamples", "100"]
    assert main(args + ["--json", str(tmp_path / "clean.json")]) == 0
    assert main(args + ["--gallery-degrade", "blur", "--degrade-seed", "3", "--ablations",
                        "--json", str(tmp_path / "blur.json")]) == 0
    clean, blur = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("clean", "blur"))
    d = blur["gallery_degrade"]
    assert (d["spec"], d["seed"], d["kinds"]) == ("blur", 3, ["blur"])
    assert d["picked"] == clean["counts"]["gallery"] and d["degraded"] + sum(d["kept_clean_no_face"].values()) == d["picked"]
    assert blur["counts"]["queries"] == clean["counts"]["queries"]  # queries are untouched
    rows = {r["name"]: r for r in blur["rows"]}
    clean_rows = {r["name"]: r for r in clean["rows"]}
    # the query model's symmetric row: same queries, blurred gallery
    assert rows["query model symmetric"]["recall_at_1"] != clean_rows["query model symmetric"]["recall_at_1"] or \
        rows["query model symmetric"]["map"] != clean_rows["query model symmetric"]["map"]
    for r in blur["rows"]:
        lo, hi = r["recall_at_1_ci95"]
        assert lo <= r["recall_at_1"] <= hi
        lo, hi = r["tar_at_far_1e-3_ci95"]
        assert lo <= r["tar_at_far_1e-3"] <= hi
    for kind, curve in blur["rejection_by_quality"].items():
        for c in curve:
            assert c["recall_at_1_ci95"][0] <= c["recall_at_1"] <= c["recall_at_1_ci95"][1]
    ab = blur["ablations"]
    names = {r["name"] for r in ab["rows"]}
    assert {"independent + mean (the method)", "end-to-end mean", "concat + one transformer"} <= names
    assert set(ab["ensemble_size"]) == {"clean", "blur"} and len(ab["ensemble_size"]["clean"]) == len(ab["pool"])
    assert all(set(r) >= {"clean", "blur"} for r in ab["rows"])
    printed = capsys.readouterr().out
    assert "gallery degraded (blur, seed 3)" in printed and "ablations" in printed and "D-TG" in printed
    # a bad spec, or ablations without the held-out split, fail before anything is embedded
    assert main(["evaluate", str(small_dataset), "--gallery-degrade", "fog", "--bundle", str(out)]) == 2
    assert main(["evaluate", str(small_dataset), "--ablations", "--bundle", str(out)]) == 2
    err = capsys.readouterr().err
    assert "valid kinds: blur, lowres, jpeg, dark, noise, occlusion" in err and "add --heldout" in err


def test_evaluate_refuses_heldout_on_another_dataset(trained_bundle, tmp_path: Path, lfw_dir) -> None:
    from cmce.cli import main

    out, _ = trained_bundle
    d = tmp_path / "other" / "Someone"
    d.mkdir(parents=True)
    (d / "x.jpg").symlink_to(next(lfw_dir.glob("*/*.jpg")))
    assert main(["evaluate", str(tmp_path / "other"), "--bundle", str(out), "--heldout", "--quiet"]) == 2


def test_train_refuses_a_negative_fold_count_before_reading_anything(tmp_path) -> None:
    from cmce.errors import DatasetError
    from cmce.experiments.train import train_bundle

    with pytest.raises(DatasetError, match="cv_folds must be 0"):
        train_bundle(tmp_path / "does-not-matter", tmp_path / "out", cv_folds=-3)
    with pytest.raises(DatasetError, match="abstain_caps is"):
        train_bundle(tmp_path / "does-not-matter", tmp_path / "out", abstain_caps={"clean": 0.1})
    assert not (tmp_path / "out").exists()


def test_evaluate_prints_an_undefined_error_cut_as_a_dash_and_writes_null() -> None:
    from cmce.cli import _json_safe
    from cmce.method.card import render_rejection_tables
    from cmce.metrics.results import Evaluation

    cut = relative_error_reduction(1.0, 1.0)  # unrejected Recall@1 already 100%: no error to cut
    assert np.isnan(cut)
    nan = float("nan")
    table = render_rejection_tables(Evaluation.from_dict({
        "bundle": {"query": "sface", "gallery": ["dlib-resnet34"], "quality": "detection"},
        "rejection": [{"rate": 0.1, "random_recall_at_1": 1.0, "random_error_cut": cut}],
        "rejection_by_quality": {"detection": [{"recall_at_1": 1.0, "recall_at_1_ci95": [1.0, 1.0], "error_cut": cut,
                                                "error_cut_ci95": [nan, nan]}],
                                 "disagreement": [{"recall_at_1": 0.98, "recall_at_1_ci95": [0.97, 0.99],
                                                   "error_cut": 0.25, "error_cut_ci95": [0.1, 0.4]}]},
    }))
    assert "nan" not in table.lower() and "| 10% |" in table
    assert "100.00 (100.00 to 100.00) · \u2014" in table and "25.00% (10.00 to 40.00)" in table
    text = json.dumps(_json_safe({"rejection": [{"relative_error_cut": cut, "rate": 0.1}]}))
    assert json.loads(text) == {"rejection": [{"relative_error_cut": None, "rate": 0.1}]}


def test_choose_fusion_takes_the_simplest_unless_beaten_by_more_than_a_tenth_of_a_point() -> None:
    from cmce.experiments.cross_validation import _choose_fusion

    figs = {"mean": {"clean": 0.990, "mixed": 0.950}, "weighted": {"clean": 0.995, "mixed": 0.960},
            "gated": {"clean": 0.9955, "mixed": 0.9600}}
    assert _choose_fusion(figs) == "weighted"  # gated is 0.025 point better: noise
    figs["gated"] = {"clean": 0.997, "mixed": 0.962}
    assert _choose_fusion(figs) == "gated"
    assert _choose_fusion({"mean": {"clean": 0.99}, "weighted": {"clean": 0.9905}}) == "mean"
