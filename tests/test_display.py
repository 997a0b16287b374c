"""Tests for cmce.display: tiles, captions, boxes, result HTML/dict and figures (no models needed)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from cmce import display
from cmce.ensemble import QualityModel
from cmce.faces import Face
from cmce.gallery import Match, QueryResult, ViewResult
from cmce.report import leave_one_out_risk_coverage


def _jpeg(colour=(0, 128, 0), size=64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "JPEG")
    return buf.getvalue()


def _face(box) -> Face:
    return Face(box=box, probability=0.99, landmarks=((0, 0),) * 5, image_size=(200, 100))


def test_entry_tile_frames_rejected_entries_red():
    kept = np.asarray(display.entry_tile(_jpeg(), rejected=False))
    rejected = np.asarray(display.entry_tile(_jpeg(), rejected=True))
    assert kept.shape == rejected.shape == (128, 128, 3)
    assert tuple(rejected[1, 64]) == display.REJECTED_RED
    assert abs(int(kept[1, 64][1]) - 128) < 10  # untouched green
    centre = rejected[64, 64].astype(int)
    assert max(centre) - min(centre) < 3  # greyed


def test_captions_and_choices():
    assert display.entry_caption("Aaron_Peirsol", 0.412, False) == "Aaron_Peir… · u=0.41"
    assert display.entry_caption("Ann", 0.5, True) == "rejected · u=0.50"
    assert display.entry_caption(None, 0.5, False).startswith("(no label)")
    assert display.face_choices(3) == [("face 1 (largest)", 0), ("face 2", 1), ("face 3", 2)]


def test_annotate_faces_draws_numbered_boxes():
    img = np.zeros((100, 200, 3), np.uint8)
    out = np.asarray(display.annotate_faces(img, [_face((10, 20, 60, 80)), _face((120, 30, 150, 60))], chosen=1))
    assert tuple(out[50, 10]) == (26, 115, 232)  # face 1: blue box edge
    assert tuple(out[45, 120]) == (249, 171, 0)  # chosen face 2: amber


def _fake_result():
    entries = [SimpleNamespace(label=lab, thumbnail=_jpeg(), source=f"{lab}.jpg") for lab in ("ann", "bob", None)]
    gallery = SimpleNamespace(entries=entries, positions=np.arange(3), bundle=SimpleNamespace(query_model="sface"))

    def match(pos, score):
        return Match(pos, entries[pos].label, entries[pos].source, score, 0.3, 0.3,
                     {"m1": score - 0.1, "query": score + 0.1})

    views = {
        "ensemble": ViewResult("ensemble", (match(0, 0.8), match(1, 0.5)), 0.4, False),
        "m1": ViewResult("m1", (match(1, 0.3), match(0, 0.2)), 0.35, True),
        "query": ViewResult("query", (match(1, 0.6),), 0.4, False),
    }
    views["m1"] = ViewResult("m1", tuple(Match(m.position, m.label, m.source, m.score, m.uncertainty, m.quality, {})
                                         for m in views["m1"].matches), 0.35, True)
    result = QueryResult((_face((1, 1, 50, 50)),), 0, views, 1e-3)
    return gallery, result


def test_result_html_and_dict():
    gallery, result = _fake_result()
    html = display.result_html(result, gallery, query_label="ann")
    for view in ("ensemble", "m1", "query"):
        assert f"data-view='{view}'" in html
    assert html.count("data:image/jpeg;base64,") == 5
    assert "cmce-match cmce-correct" in html and "cmce-match cmce-wrong" in html
    assert "m1 0.70 · sface 0.90" in html  # ensemble members, the query member named after its model
    assert "Unknown" in html and "0.1% false-accept rate" in html
    data = display.result_dict(result, "sface", "ann")
    assert data["views"]["ensemble"]["answer"] == "ann" and data["views"]["ensemble"]["correct"] is True
    assert data["views"]["m1"]["unknown"] is True and data["views"]["m1"]["answer"] is None
    assert data["views"]["query"]["correct"] is False
    assert data["views"]["ensemble"]["matches"][0]["member_similarities"] == {"m1": 0.7, "query": 0.9}


def test_figures():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rc = leave_one_out_risk_coverage(x, x, [str(i // 3) for i in range(12)], rng.random(12), random_draws=2)
    fig = display.risk_coverage_figure(rc, current_rate=0.1)
    assert len(fig.axes[0].lines) == 3
    fig = display.uncertainty_figure(rng.random(12), rng.random(12) > 0.7, rc.is_query & ~rc.hits)
    assert fig.axes[0].get_xlabel().startswith("uncertainty")
    # the figures name the quality score the bundle rejects by
    q = QualityModel("detection")
    doubt = np.r_[0.0, 10.0 ** -rng.uniform(0, 5, 11)]  # detector doubt spans decades, and can be 0
    fig = display.uncertainty_figure(doubt, rng.random(12) > 0.7, None, q.description, log_scale=True)
    assert fig.axes[0].get_xlabel() == q.description and "detector" in q.description
    assert fig.axes[0].get_xscale() == "log" and q.log_axis and not QualityModel("disagreement").log_axis
    counts, _ = np.histogram(np.maximum(doubt, 1e-6), bins=[p.get_x() for p in fig.axes[0].patches[:1]]
                             + [p.get_x() + p.get_width() for p in fig.axes[0].patches[: len(fig.axes[0].patches) // 2]])
    assert counts.sum() == len(doubt)  # every entry, the smallest and largest included, is in a bin
    fig = display.risk_coverage_figure(rc, current_rate=0.1, quality="detection")
    assert "detection" in fig.axes[0].lines[0].get_label()
    assert "uncertain" in display.risk_coverage_figure(rc).axes[0].lines[0].get_label()


def test_bundle_markdown_lists_models_and_licences():
    summary = {
        "source": "x", "query_model": {"name": "q", "license": "Apache-2.0", "training_data": "A"},
        "gallery_models": [{"name": "g", "license": "MIT", "training_data": "B"}],
        "query_member": True, "rejection_rate": 0.1, "open_set_far": 1e-3,
    }
    md = display.bundle_markdown(summary)
    assert "| query model | q | Apache-2.0 | A |" in md and "| gallery model | g | MIT | B |" in md
    assert "Default rejection: 10% of a gallery ·" in md
    md = display.bundle_markdown({**summary, "quality_description": QualityModel("detection").description})
    assert "ranked by detector doubt" in md


def test_bundle_markdown_names_a_local_folder_without_the_servers_path():
    summary = {
        "query_model": {"name": "q", "license": "Apache-2.0", "training_data": "A"},
        "gallery_models": [{"name": "g", "license": "MIT", "training_data": "B"}],
        "query_member": False, "rejection_rate": 0.1, "open_set_far": 1e-3,
    }
    md = display.bundle_markdown({**summary, "source": "/srv/app/assets/bundles/sface-query"})
    assert "`sface-query`" in md and "/srv/app" not in md
    assert "`hf://org/name@main`" in display.bundle_markdown({**summary, "source": "hf://org/name@main"})
