"""evaluate --people on a synthetic library: every row is there, the figures are the metrics' own,
and the served grouping's unsure set holds out only faces over the calibrated cut."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.experiments.evaluate_people import _row, _singletons, evaluate_people
from cmce.faces.geometry import Face
from cmce.method.bundle import default_bundle_path, load_bundle
from cmce.metrics.clustering import bcubed
from cmce.models.backbones import get_spec
from cmce.models.embed import EmbeddedFiles


@pytest.fixture(scope="module")
def library():
    bundle = load_bundle(str(default_bundle_path()))
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(12), [1, 2, 3, 4] * 3)
    emb = {}
    for m in bundle.models:
        d = get_spec(m).embedding_size
        x = rng.normal(size=(12, d))[truth] + 0.2 * rng.normal(size=(len(truth), d))
        emb[m] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    face = Face((0, 0, 50, 50), 0.999, ((10, 10), (40, 10), (25, 25), (15, 40), (35, 40)), (100, 100))
    n = len(truth)
    embedded = EmbeddedFiles(tuple(f"p{i}.jpg" for i in range(n)), (face,) * n, (None,) * n, emb)
    return bundle, embedded, [f"person{t}" for t in truth]


def test_every_row_is_measured_on_the_same_faces(library):
    bundle, embedded, labels = library
    cal = {"method": "chinese_whispers", "ensemble": {"threshold": 0.5}, "query": {"threshold": 0.5},
           "unsure_cut": {"doubt_above": float(bundle.calibration.rejection_threshold)}}
    res = evaluate_people(embedded, labels, bundle, cal, ci_resamples=50)
    names = [r["name"] for r in res["rows"]]
    assert names[:2] == ["CMCE ensemble", "query model alone"] and len(names) == 6
    assert any(n.startswith("face_recognition recipe") for n in names)
    assert all(r["faces"] == 30 and r["people_true"] == 12 for r in res["rows"])
    for r in res["rows"]:
        lo, hi = r["bcubed_f_ci95"]
        assert lo <= r["bcubed_f"] + 1e-9 and r["bcubed_f"] <= hi + 1e-9
    assert [s["share"] for s in res["unsure_sweep"]["ensemble"]] == [0.0, 0.05, 0.10, 0.20]
    assert len(res["differences"]) == 3 and res["gallery"] == "clean"


def test_a_row_scores_unsure_faces_as_one_face_people():
    truth = np.array(["a", "a", "b", "b"])
    labels = np.array([0, 0, 1, -1])
    r = _row("x", labels, truth, resamples=20, seed=0)
    assert r["bcubed_f"] == pytest.approx(bcubed([0, 0, 1, 2], truth)[2])
    assert r["share_unsure"] == 0.25 and r["people_found"] == 2
    assert r["grouped_precision"] == 1.0 and r["grouped_recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert _singletons(np.array([-1, 0, -1])).tolist() == [1, 0, 2]


def test_the_served_rows_take_the_calibrated_query_weight_and_attach_pass(library):
    bundle, embedded, labels = library
    plain = {"method": "chinese_whispers", "ensemble": {"threshold": 0.5}, "query": {"threshold": 0.5},
             "unsure_cut": {"doubt_above": float(bundle.calibration.rejection_threshold)}}
    tuned = {**plain, "ensemble": {"threshold": 0.5, "query_weight": 0.5, "attach_above": 0.2, "attach_margin": 0.05},
             "query": {"threshold": 0.5, "attach_above": 0.2, "attach_margin": 0.05}}
    a = evaluate_people(embedded, labels, bundle, plain, ci_resamples=20)
    b = evaluate_people(embedded, labels, bundle, tuned, ci_resamples=20)
    assert [r["name"] for r in a["rows"]] == [r["name"] for r in b["rows"]]
    assert len(b["curve"]["ensemble"]) == 11 and all("bcubed_f" in p for p in b["curve"]["ensemble"])
    # the recipes do not read the calibration: their rows are the same
    assert a["rows"][2]["bcubed_f"] == b["rows"][2]["bcubed_f"]
