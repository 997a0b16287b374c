"""Tests for cmce.serve.display: tiles, captions, boxes, result HTML/dict and figures (no models needed)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from cmce.faces.geometry import Face
from cmce.gallery.results import Match, QueryResult, ViewResult
from cmce.method.answer_rules import AnswerPolicy
from cmce.method.answers import Answer, doubt_marks
from cmce.method.bundle_model import Calibration
from cmce.method.ensemble import QualityModel
from cmce.method.report import leave_one_out_risk_coverage
from cmce.method.unknown import CohortNorm, gallery_doubt, unknown_note
from cmce.serve import display
from cmce.serve.display.bundle_text import unknown_rule_text


def _jpeg(colour=(0, 128, 0), size=64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "JPEG")
    return buf.getvalue()


def _face(box) -> Face:
    return Face(box=box, probability=0.99, landmarks=((0, 0),) * 5, image_size=(200, 100))


def test_entry_tile_frames_rejected_entries_purple_and_crossed_out():
    """Rejected gallery faces look like no match frame: not the red of a wrong match (issue 24)."""
    kept = np.asarray(display.entry_tile(_jpeg(), rejected=False))
    rejected = np.asarray(display.entry_tile(_jpeg(), rejected=True))
    assert kept.shape == rejected.shape == (128, 128, 3)
    assert tuple(rejected[1, 64]) == display.REJECTED_PURPLE
    assert abs(int(kept[1, 64][1]) - 128) < 10  # untouched green
    off_line = rejected[40, 40].astype(int)
    assert max(off_line) - min(off_line) < 3  # greyed
    assert np.abs(rejected[64, 63].astype(int) - display.REJECTED_PURPLE).max() < 40  # the diagonal cross-out
    assert display.REJECTED_PURPLE != (217, 48, 37)  # the red of a wrong match (.cmce-wrong)


def test_entry_tile_frames_doubtful_entries_amber_and_dashed():
    doubtful = np.asarray(display.entry_tile(_jpeg(), rejected=False, doubtful=True))
    assert tuple(doubtful[1, 1]) == display.DOUBTFUL_AMBER  # a dash starts at the corner
    edge = [tuple(doubtful[1, x]) == display.DOUBTFUL_AMBER for x in range(128)]
    assert 0.3 < np.mean(edge) < 0.7  # dashed: about half the edge
    assert abs(int(doubtful[64, 64][1]) - 128) < 10  # in colour, not greyed
    both = np.asarray(display.entry_tile(_jpeg(), rejected=True, doubtful=True))
    assert tuple(both[1, 64]) == display.REJECTED_PURPLE  # rejected wins: one mark per face


def test_captions_and_choices():
    assert display.entry_caption("Aaron_Peirsol", 0.412, False) == "Aaron_Peirsol · u=0.41"  # never cut
    assert display.entry_caption("Ann", 0.5, True) == "rejected · Ann · u=0.50"
    assert display.entry_caption("Aaron_Peirsol", 0.5, False, doubtful=True) == "◌ doubtful · Aaron_Peirsol · u=0.50"
    assert display.entry_caption("Ann", 0.5, True, doubtful=True) == "rejected · Ann · u=0.50"
    assert display.entry_caption(None, 0.5, False).startswith("(no label)")
    from cmce.faces.image_quality import FaceImageQuality

    measured = FaceImageQuality(38.4, 0.4219, 0.6051)
    assert (display.entry_caption("Ann", 0.5, False, image_quality=measured)
            == "Ann · u=0.50 · eyes 38 px apart · sharpness 0.42 · exposure 0.61")
    assert display.entry_caption("Ann", 0.5, False, image_quality=FaceImageQuality()) == "Ann · u=0.50"  # not measured
    assert display.face_choices(3) == [("face 1 (largest)", 0), ("face 2", 1), ("face 3", 2)]


def test_annotate_faces_draws_numbered_boxes():
    img = np.zeros((100, 200, 3), np.uint8)
    out = np.asarray(display.annotate_faces(img, [_face((10, 20, 60, 80)), _face((120, 30, 150, 60))], chosen=1))
    assert tuple(out[50, 10]) == (26, 115, 232)  # face 1: blue box edge
    assert tuple(out[45, 120]) == (249, 171, 0)  # chosen face 2: amber


POLICY = AnswerPolicy("combined", 0.5, (0.5,) * 5, (0.1,) * 5, (1.0,) * 5, 0.0, rate=0.12)


class _FakeGallery:
    """What display reads of a gallery: entries, live positions, scores, doubt marks, the bundle."""

    def __init__(self, labels, quality, calibration=None):
        self.entries = [SimpleNamespace(label=lab, thumbnail=_jpeg(), source=f"{lab or 'x'}_{i}.jpg", face=None)
                        for i, lab in enumerate(labels)]
        self.positions = np.arange(len(labels))
        self.calibration = calibration or Calibration(rejection_threshold=0.5, quality=QualityModel("disagreement"))
        self.bundle = SimpleNamespace(query_model="sface", calibration=self.calibration)
        self.quality = np.asarray(quality, float)
        self.vectors = SimpleNamespace(uncertainty=self.quality, member_present=np.ones((len(labels), 3), bool),
                                       available={}, members=("a", "b", "c"), entry_members=lambda pos: ("a", "b", "c"))

    def __len__(self):
        return len(self.entries)

    def quality_scores(self, kind=None):
        return self.quality

    def doubt(self, quality=None):
        return doubt_marks(self.quality, self.calibration.threshold_for(quality), self.calibration.rejection_rate)

    def unknown_note(self):
        return unknown_note(self.calibration.cohort_norm, "ensemble", len(self.entries), gallery_doubt(self.quality))


def _fake_result():
    gallery = _FakeGallery(["ann", "bob", None], [0.3, 0.3, 0.3])
    entries = gallery.entries

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
    # a result made without answers (older callers): the answer is decided from its matches
    assert "no gallery face reaches the threshold (best 0.300 &lt; 0.350)" in html
    data = display.result_dict(result, "sface", "ann")
    assert data["views"]["ensemble"]["answer"] == "ann" and data["views"]["ensemble"]["correct"] is True
    assert data["views"]["m1"]["unknown"] is True and data["views"]["m1"]["answer"] is None
    assert data["views"]["query"]["correct"] is False
    assert data["views"]["ensemble"]["matches"][0]["member_similarities"] == {"m1": 0.7, "query": 0.9}
    assert data["views"]["m1"]["answer_kind"] == "unknown" and data["views"]["ensemble"]["answer_kind"] == "match"
    assert data["views"]["ensemble"]["rule"] is None and data["views"]["ensemble"]["confidence"] is None


def _answered_result():
    """Four columns: a right match on a doubtful photo (with the rule's confidence), a wrong match,
    a column blocked by a rejected photo, and one whose rule is unsure."""
    gallery = _FakeGallery(["ann", "bob", "ann", "cy"], [0.9, 0.1, 0.2, 0.1], Calibration(
        rejection_threshold=0.5, quality=QualityModel("disagreement"), answer_rule="combined",
        answer_policies={"ensemble": {"combined": POLICY}}))
    e = gallery.entries

    def match(pos, score):
        return Match(pos, e[pos].label, e[pos].source, score, 0.3, float(gallery.quality[pos]), {},
                     doubtful=bool(gallery.quality[pos] > 0.5))

    views = {
        "ensemble": ViewResult("ensemble", (match(0, 0.8), match(1, 0.5)), 0.4, False,
                               Answer("match", "ann", 0.8, 0.93, "ann (a doubtful photo), similarity 0.800")),
        "m1": ViewResult("m1", (match(1, 0.7),), 0.4, False,
                         Answer("match", "bob", 0.7, None, "bob, similarity 0.700")),
        "m2": ViewResult("m2", (match(1, 0.5),), 0.4, True,
                         Answer("doubtful", "cy", 0.6, None, "Unknown: the best match is a rejected photo of <cy>")),
        "query": ViewResult("query", (match(1, 0.6),), 0.4, True,
                            Answer("unsure", "bob", 0.6, 0.31, "Unknown: the best match, bob, is more likely wrong "
                                                               "than right (chance 0.31 < 0.50)")),
    }
    return gallery, QueryResult((_face((1, 1, 50, 50)),), 0, views, 1e-3)


def test_result_html_marks_doubtful_apart_from_rejected_and_wrong():
    gallery, result = _answered_result()
    rejected = np.array([False, False, False, True])
    html = display.result_html(result, gallery, query_label="ann", rejected=rejected)
    ensemble = html.split("data-view='ensemble'")[1].split("</section>")[0]
    # the doubtful right match: green, with a dashed amber frame and its tag; the wrong one solid red
    assert "cmce-match cmce-correct cmce-doubtful" in ensemble and "◌ doubtful" in ensemble
    assert "cmce-match cmce-wrong'" in ensemble
    assert "chance of a right answer 0.93" in ensemble and "◌ a doubtful photo" in ensemble
    m1 = html.split("data-view='m1'")[1].split("</section>")[0]
    assert "cmce-verdict cmce-wrong" in m1 and "cmce-doubtful" not in m1
    # the reasons of "Unknown", escaped; the person is in the gallery (one good photo): not "not in the gallery"
    m2 = html.split("data-view='m2'")[1].split("</section>")[0]
    assert "data-answer='doubtful'" in html and "rejected photo of &lt;cy&gt;" in m2 and "<cy>" not in html
    # blocked by a rejected photo: a deliberate "Unknown" (amber), not a miss (red ✗)
    assert "(person is in the gallery)" in m2 and "✗" not in m2 and "cmce-verdict cmce-doubtful" in m2
    assert "not in the gallery" not in html
    assert "more likely wrong than right (chance 0.31 &lt; 0.50)" in html
    # every photo of ann doubtful or rejected: "Unknown" says so (amber), not "✓ not in the gallery"
    html = display.result_html(result, gallery, query_label="ann",
                               doubtful=np.array([True, False, True, False]))
    m2 = html.split("data-view='m2'")[1].split("</section>")[0]
    assert "every photo of them here is doubtful or rejected" in m2 and "cmce-verdict cmce-doubtful" in m2
    html = display.result_html(result, gallery, query_label="ann", rejected=np.array([True, False, True, False]))
    assert "every photo of them here is rejected" in html
    html = display.result_html(result, gallery, query_label="dee")
    assert "✓ (not in the gallery)" in html.split("data-view='m2'")[1].split("</section>")[0]


def test_result_dict_carries_the_answer_and_the_rule():
    gallery, result = _answered_result()
    data = display.result_dict(result, "sface", "ann", gallery.calibration)
    v = data["views"]
    assert (v["ensemble"]["answer_kind"], v["ensemble"]["confidence"], v["ensemble"]["rule"]) == ("match", 0.93,
                                                                                                 "combined")
    assert v["ensemble"]["reason"].startswith("ann (a doubtful photo)")
    assert [m["doubtful"] for m in v["ensemble"]["matches"]] == [True, False]
    assert v["m1"]["rule"] is None  # the bundle has no rule calibrated for this column
    assert v["m2"]["answer_kind"] == "doubtful" and v["m2"]["answer"] is None and v["m2"]["unknown"] is True
    assert "rejected photo of <cy>" in v["m2"]["reason"]
    assert v["query"]["answer_kind"] == "unsure" and v["query"]["confidence"] == 0.31
    for view in v.values():  # every key of before is kept
        assert {"title", "threshold", "unknown", "answer", "correct", "matches"} <= set(view)


def test_overview_summary_counts_rejected_doubtful_and_over_the_threshold():
    quality = [0.9] * 31 + [0.01] * 7  # far more over the threshold than the calibration predicts
    gallery = _FakeGallery([f"p{i // 2}" for i in range(38)], quality, Calibration(
        rejection_threshold=0.07, rejection_rate=0.10, quality=QualityModel("disagreement")))
    none = np.zeros(38, bool)
    text = display.overview_summary(gallery, none)
    assert "**0 rejected**" in text and "**31 doubtful**" in text
    assert "31 of 38 faces score above the bundle's calibrated threshold (about 4 expected)" in text
    assert "looks unlike the photos the bundle was calibrated on" in text and text.count("about 4 expected") == 1
    assert "Doubtful, most doubtful first: `p0_0.jpg`" in text and "Rejected, most" not in text
    assert "no answer rule" in text
    some = np.zeros(38, bool)
    some[:4] = True
    text = display.overview_summary(gallery, some)
    assert "**4 rejected**" in text and "**27 doubtful**" in text and "31 of 38 faces score above" in text
    assert "Rejected, most doubtful first: `p0_0.jpg`" in text
    tiles = display.overview_tiles(gallery, some)
    assert [c.split(" · ")[0] for _, c in tiles[3:6]] == ["rejected", "◌ doubtful", "◌ doubtful"]
    assert tiles[-1][1].startswith("p18")
    ruled = _FakeGallery(["a", "b"], [0.1, 0.2], Calibration(
        rejection_threshold=0.5, quality=QualityModel("disagreement"), answer_rule="combined",
        answer_policies={"ensemble": {"combined": POLICY}}))
    text = display.overview_summary(ruled, np.zeros(2, bool))
    assert "**combined** rule" in text and "too likely wrong" in text and "below 0.50" in text
    assert "answered 88% of the calibration queries" in text and "**0 doubtful**" in text
    assert "looks unlike" not in text and "0 over the bundle's calibrated threshold (about 0 expected)" in text
    assert "strangers are named more often" not in text
    # a gallery of poor photos lowers the normalised "Unknown" threshold: the overview says so
    guarded = Calibration(rejection_threshold=0.07, rejection_rate=0.10, quality=QualityModel("disagreement"),
                          cohort_norm=CohortNorm(20, {"ensemble": 5.0}, 0.05, guard_doubt=(0.1, 0.5),
                                                 guard={"ensemble": (5.0, 2.0)}))
    text = display.overview_summary(_FakeGallery([f"p{i // 2}" for i in range(38)], quality, guarded), none)
    assert "mean quality score 0.736): so that most searches still get a name, a match needs to stand out 2.0 spreads from the next 20 people instead of 5.0" in text
    assert "strangers are named more often" in text


def test_figures():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rc = leave_one_out_risk_coverage(x, x, [str(i // 3) for i in range(12)], rng.random(12), random_draws=2)
    fig = display.risk_coverage_figure(rc, current_rate=0.1)
    assert len(fig.axes[0].lines) == 3
    fig = display.uncertainty_figure(rng.random(12), rng.random(12) > 0.7, rc.is_query & ~rc.hits)
    assert fig.axes[0].get_xlabel().startswith("uncertainty")
    u = rng.random(12)
    fig = display.uncertainty_figure(u, np.zeros(12, bool), threshold=0.5)  # the doubtful ones: above the line
    assert any(f"({int((u > 0.5).sum())} above: doubtful)" in line.get_label() for line in fig.axes[0].lines)
    assert "paper's metric" in display.risk_coverage_figure(rc).axes[0].get_title()
    # the figures name the quality score the bundle rejects by
    q = QualityModel("detection")
    doubt = np.r_[0.0, 10.0 ** -rng.uniform(0, 5, 11)]  # detector doubt spans decades, and can be 0
    fig = display.uncertainty_figure(doubt, rng.random(12) > 0.7, None, q.description, log_scale=True)
    assert " ".join(fig.axes[0].get_xlabel().split()) == q.description and "detector" in q.description
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
    assert "marks 10% of the calibration gallery" in md and "still searched" in md and "no answer rule" in md
    md = display.bundle_markdown({**summary, "quality_description": QualityModel("detection").description,
                                  "answer_rule": "query"})
    assert "scored by detector doubt" in md and "answer rule: query" in md


def test_bundle_markdown_names_a_local_folder_without_the_servers_path():
    summary = {
        "query_model": {"name": "q", "license": "Apache-2.0", "training_data": "A"},
        "gallery_models": [{"name": "g", "license": "MIT", "training_data": "B"}],
        "query_member": False, "rejection_rate": 0.1, "open_set_far": 1e-3,
    }
    md = display.bundle_markdown({**summary, "source": "/srv/app/assets/bundles/sface-query"})
    assert "`sface-query`" in md and "/srv/app" not in md
    assert "`hf://org/name@main`" in display.bundle_markdown({**summary, "source": "hf://org/name@main"})


def test_a_name_reached_by_the_normalised_score_says_so_and_is_not_greyed():
    gallery, result = _answered_result()
    e = gallery.entries
    low = Match(0, e[0].label, e[0].source, 0.31, 0.3, float(gallery.quality[0]), {})
    views = dict(result.views)
    views["ensemble"] = ViewResult("ensemble", (low,), 0.4, False,
                                   Answer("match", "ann", 0.31, None, "ann, similarity 0.310, 6.2 spreads above "
                                          "the next 50 people", normalised=6.2, norm_threshold=5.4))
    views["m1"] = ViewResult("m1", (low,), 0.4, True,
                             Answer("unknown", "ann", 0.31, None, "Unknown: the best match, ann (0.310), does not "
                                    "stand out from the next 50 people of the gallery (3.0 spreads above them, 5.4 "
                                    "needed)", normalised=3.0, norm_threshold=5.4))
    res = QueryResult(result.faces, 0, views, 1e-3)
    page = display.result_html(res, gallery, "ann")
    ens = page[page.index("ann</b>"):]
    assert "similarity 0.31, 6.2 spreads above the next people ≥ 5.4" in ens
    assert "0.31 ≥ 0.40" not in page  # never claims the raw threshold was reached
    assert "does not stand out from the next 50 people of the gallery (3.0 spreads" in page
    v = display.result_dict(res, "sface", "ann")["views"]
    assert (v["ensemble"]["normalised"], v["ensemble"]["norm_threshold"]) == (6.2, 5.4)
    assert v["m1"]["answer_kind"] == "unknown" and v["query"]["normalised"] is None
    summary = {"open_set_far": 1e-3, "cohort_norm": {"cohort": 50, "thresholds": {}, "strangers_named": 0.05}}
    assert "does not stand out from the next 50 people" in unknown_rule_text(summary)
    assert unknown_rule_text({"open_set_far": 1e-3}) == "'unknown' thresholds set for a 0.1% false-accept rate"


def test_the_verdict_line_sits_above_the_columns():
    from cmce.gallery.verdict import query_verdict

    gallery, result = _fake_result()
    verdict = query_verdict(result, "sface", "ann", {"ann", "bob"})
    html = display.result_html(result, gallery, query_label="ann", verdict=verdict)
    line = html.split("<div class='cmce-verdict-line")[1].split("</div>")[0]
    assert line.startswith(" cmce-correct'")  # the ensemble was right
    assert "CMCE ensemble ✓ · m1 → sface ✗ (Unknown) · sface alone ✗ (bob)" in line
    assert "right where 2 of the 2 other columns failed" in line
    assert html.index("cmce-verdict-line") < html.index("<div class='cmce-results'>")
    assert "cmce-verdict-line" not in display.result_html(result, gallery, query_label="ann")


def test_scoreboard_markdown_names_every_column():
    from cmce.method.scoreboard import ScoreColumn, Scoreboard

    assert "needs labels" in display.scoreboard_markdown(None, None)
    assert "needs labels" in display.scoreboard_markdown(Scoreboard(0, 0, ()), "sface")
    board = Scoreboard(40, 8, (ScoreColumn("ensemble", 0.95, 0.025, 0, 0), ScoreColumn("m1", 0.8, 0.1, 1, 7),
                               ScoreColumn("query", 0.9, 0.05, 2, 4)))
    text = display.scoreboard_markdown(board, "sface")
    assert "each of the 40 labelled faces (8 people)" in text
    assert "| **CMCE ensemble** | 95.0% | 2.5% | – | – |" in text
    assert "| m1 → sface | 80.0% | 10.0% | 1 | 7 |" in text and "| sface alone | 90.0% | 5.0% | 2 | 4 |" in text
