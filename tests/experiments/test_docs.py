"""The docs pages' generated tables equal their render from the JSON they come from."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cmce.errors import CmceError
from cmce.experiments.docs_tables import render_page, stale_pages

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_page_equals_its_render() -> None:
    stale = [str(p.relative_to(ROOT)) for p in stale_pages(PAGES)]
    assert not stale, f"re-render with `python scripts/render_docs.py`: {stale}"


def test_the_pages_hold_generated_tables() -> None:
    marked = sum(p.read_text().count("<!-- table: ") for p in PAGES)
    assert marked >= 3


def test_a_figure_edited_by_hand_is_caught() -> None:
    page = ROOT / "docs" / "upgrades.md"
    text = page.read_text()
    start = text.index("<!-- table: upgrade")
    line = text.index("| no_backfill", start)
    row = text[line:text.index("\n", line)]
    seconds = row.split("|")[-3]  # the row's "s per 1k entries" cell, whatever it was measured at
    tampered = text[:line] + row.replace(seconds, " 0.065 ", 1) + text[line + len(row):]
    assert tampered != text
    assert render_page(tampered, page.parent) == text


def test_unknown_table_is_named(tmp_path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CmceError, match="unknown table 'nope'.*valid: rows, upgrade, upgrade-sides, rejection"):
        render_page("<!-- table: nope x.json -->\n<!-- /table -->\n", tmp_path)


def test_shipped_model_cards_equal_their_render() -> None:
    """A bundle's README is its model card, rendered from its config.json (``save_bundle`` writes both)."""
    import json

    from cmce.method.card import render_model_card

    for config in sorted((ROOT / "assets" / "bundles").glob("*/config.json")):
        card = render_model_card(json.loads(config.read_text()))
        assert (config.parent / "README.md").read_text() == card, f"re-save {config.parent.name}"


def test_a_json_table_renders_from_its_study_and_catches_a_hand_edit(tmp_path) -> None:
    import json

    (tmp_path / "s.json").write_text(json.dumps({"gains": [
        {"from": "combined", "to": "+entry image", "rate": 0.1, "gain": -0.0025, "ci95": [-0.0096, 0.0027]}]}))
    page = "<!-- table: answer-inputs s.json -->\n| +entry image | combined | 10% | +9.99 (x) |\n<!-- /table -->\n"
    out = render_page(page, tmp_path)
    assert "| +entry image | combined | 10% | -0.25 (-0.96 to +0.27) |" in out and "+9.99" not in out


# Every JSON table: its marker renders the committed text back, and a hand edit is caught.

def _marked(page: Path, kind: str) -> tuple[str, int, int]:
    """A page's text and the span of the body of its first ``kind`` table."""
    text = page.read_text()
    start = text.index("\n", text.index(f"<!-- table: {kind} ")) + 1
    return text, start, text.index("<!-- /table -->", start)


#: (page, table, figure): text in the body of the page's first table of that kind, either a
#: measured figure (re-pick it when a re-measurement moves it) or the start of a row. The test
#: changes the first digit from there on: the figure's own, or the first in the row after a label
#: without digits.
HAND_EDITS = [
    # the results pages' tables (cmce/experiments/docs_tables_results.py)
    ("README.md", "bundle-summary", "**97.07**"),
    ("docs/mixed-quality.md", "bundle-summary", "86.60"),
    ("docs/mixed-quality.md", "gallery-kinds", "**98.99** (97.98 to 99.77)"),
    ("docs/mixed-quality.md", "degrade-sweep", "69.8%"),
    ("docs/mixed-quality.md", "cv-fusion", "99.56 / 96.45"),
    ("docs/mixed-quality.md", "cv-rejection", "97.35 / 98.03"),
    ("docs/mixed-quality.md", "rejection-by-score", "**37.4%** (3 to 67)"),
    ("docs/mixed-quality.md", "ablations", "**85.81** (77.2 to 92.4)"),
    ("docs/results.md", "answer-summary", "**828 / 3 / 58**"),
    ("docs/upgrades.md", "upgrade-speed", "52,200 entries/s"),
    ("README.md", "app-answers", "502 / 258 / 129"),
    # the training variants (cmce/experiments/docs_tables_variants.py)
    ("docs/mixed-quality.md", "augment-variants", "99.55 / 96.85"),
    ("docs/results.md", "identity-loss", "95.95"),
    ("docs/speed.md", "bench-summary", "cold start 4.6"),
    ("docs/public-space.md", "soak-summary", "requests, 0 errors"),
    ("docs/mixed-quality.md", "score-differences", "+34.9 (+9 to +61)"),
    ("docs/results.md", "demo-examples", "sface ✓ 0.57 / 0.56"),
    ("docs/method.md", "lfw-verification", "| `dlib-resnet34` | "),
    ("docs/upgrades.md", "upgrade-sides", "+5.41 (+3.04 to +7.77)"),
    # mixed-quality.md's targets: a figure and a verdict's shortfall (cmce/experiments/docs_tables_targets.py)
    ("docs/mixed-quality.md", "targets", "84.12 vs 74.21"),
    ("docs/mixed-quality.md", "targets", "`facenet-query` 2.1 short"),
    # the speed, scale and face-finding pages' tables (cmce/experiments/docs_tables_speed.py)
    ("docs/speed.md", "bench-threads", "| quiet | "),
    ("docs/speed.md", "bench-backbones", "| sface | "),
    ("docs/speed.md", "bench-backbones", "asymmetric: query embed "),
    ("docs/speed.md", "bench-search", "| 1,000,000 | "),
    ("docs/scale.md", "compact-index", "| recall@10 against exact | "),
    ("docs/scale.md", "compact-index", "| other settings | "),
    ("docs/scale.md", "bench-archive", "| 74.6 s"),
    ("docs/face-finding.md", "bench-crops", "| facenet-casia | face only | "),
    ("docs/face-finding.md", "detection-sets", "| 10% inside the box, 112-200 px (300) | "),
    ("docs/face-finding.md", "detection-lighting", "| side shading | 0.97 | "),
    ("docs/face-finding.md", "detection-cosines", "| MTCNN box | "),
    ("docs/speed.md", "int8-accuracy", "| `facenet-query` | 95.61 (93.67 to 97.25) | "),
    # the indexing-throughput, Ray scaling and 1e8-photo cost tables (cmce/experiments/docs_tables_indexing.py)
    ("docs/speed.md", "indexing-throughput", "| `CMCE_OPENCV_THREADS=1` | "),
    ("docs/speed.md", "indexing-throughput", "| both | 16.41 / 27.50 | 15.91"),
    ("docs/speed.md", "indexing-throughput", "1.4 / 3.1 |"),
    ("docs/scale.md", "ray-scaling", "| Ray, 1 worker | "),
    ("docs/scale.md", "ray-scaling", "x1.11"),
    ("docs/scale.md", "indexing-cost", "| 2-core CPU nodes, int8 | "),
    ("docs/scale.md", "indexing-cost", "19.7 h on 100 nodes"),
    ("docs/scale.md", "indexing-cost", "`32,000 / R`"),
    ("docs/speed.md", "indexing-ratios", "x1.58 / x1.22"),
    # public-space.md: the test harnesses' tables (cmce/experiments/docs_tables_space.py)
    ("docs/public-space.md", "soak", "| `/search` | "),
    ("docs/public-space.md", "soak", "| session close (`Client.close`) | "),
    ("docs/public-space.md", "crash-test", "| `cmce index` | "),
    ("docs/public-space.md", "crash-test", "| `cmce upgrade` | 20 | "),
    ("docs/public-space.md", "fuzz-readers", "| `ImageError` naming the file | "),
    ("docs/public-space.md", "fuzz-readers", "worker crash | **"),
]


@pytest.mark.parametrize(("page", "kind", "figure"), HAND_EDITS)
def test_a_table_figure_edited_by_hand_is_caught(page: str, kind: str, figure: str) -> None:
    """The first digit from ``figure`` on, changed by hand, is undone by the render."""
    path = ROOT / page
    text, start, end = _marked(path, kind)
    assert figure in text[start:end], f"{figure!r} is no longer in {page}'s {kind} table: pick another figure"
    at = text.index(figure, start)
    digit = next(i for i in range(at, end) if text[i].isdigit())
    tampered = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:]
    assert tampered != text
    assert render_page(tampered, path.parent) == text


def test_results_renderers_on_tiny_documents(tmp_path) -> None:
    import json

    def row(name: str, kind: str, r1: float) -> dict:
        return {"name": name, "kind": kind, "query": "q", "gallery": ["g"], "recall_at_1": r1, "tar_at_far_1e-3": r1,
                "recall_at_1_ci95": [r1 - 0.05, r1 + 0.01]}

    step = {"rate": 0.1, "recall_at_1": 0.9, "error_cut": -0.003, "error_cut_ci95": [-0.004, 0.2]}
    ev = {"bundle": {"query": "q", "gallery": ["g"], "source": "assets/bundles/b"},
          "gallery_degrade": {"spec": "mix:0.6", "gallery_photos": 8, "degraded": 5},
          "rows": [row("query model symmetric", "symmetric", 0.9), row("g -> q (transformer)", "asymmetric", 0.8),
                   row("CMCE ensemble", "ensemble", 0.95), row("CMCE ensemble, plain mean (the paper)", "ensemble", 0.93),
                   row("CMCE ensemble without query member", "ensemble", 0.85)],
          "rejection": [{"rate": 0.1, "recall_at_1": 0.9, "random_error_cut": 0.01}],
          "rejection_by_quality": {k: [step] for k in ("learned", "combined", "disagreement", "detection")}}
    (tmp_path / "e.json").write_text(json.dumps(ev))
    page = "".join(f"<!-- table: {k} e.json -->\nstale\n<!-- /table -->\n"
                   for k in ("bundle-summary", "gallery-kinds", "rejection-by-score"))
    out = render_page(page, tmp_path)
    assert "stale" not in out
    assert "| `b` | mixed | 90.00 (85.0 to 91.0) | 93.00 (88.0 to 94.0) | **95.00** (90.0 to 96.0) | 95.00 | 85.00 |" in out
    assert "| `mix:0.6` | 5 of 8 | 90.00 (85.00 to 91.00) | 80.00 | **95.00** (90.00 to 96.00) | 93.00 |" in out
    assert "| `b` | 10% | **-0.3%** (0 to 20) | -0.3% (0 to 20) |" in out  # no "-0" bound
    (tmp_path / "s.json").write_text(json.dumps({"results": {"lowres:0.6": ev}}))
    out = render_page("<!-- table: degrade-sweep s.json -->\n<!-- /table -->\n", tmp_path)
    assert "| lowres | 90.00 | 80.00 | **95.00** | -0.3% · -0.3% |" in out
    with pytest.raises(CmceError, match="one JSON file, not 2"):
        render_page("<!-- table: degrade-sweep s.json,s.json -->\n<!-- /table -->\n", tmp_path)

# ---- mixed-quality.md's targets table (cmce/experiments/docs_tables_targets.py)

def test_targets_table_docstring_examples() -> None:
    import doctest

    import cmce.experiments.docs_tables_targets as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 3


def _target_verdicts(docs: list) -> list[str]:
    from cmce.experiments.docs_tables_targets import render_targets

    return [line.split(" | ")[-1].removesuffix(" |") for line in render_targets(docs).splitlines()[2:]]


def test_a_target_verdict_flips_when_its_figure_crosses_the_threshold() -> None:
    import json

    names = ("sface-query", "sface-query-mixed", "facenet-query", "facenet-query-mixed")
    sface, sface_mixed, facenet, facenet_mixed = docs = [json.loads((ROOT / "docs" / f"eval-{n}.json").read_text())
                                                         for n in names]
    assert _target_verdicts(docs) == ["met (`sface-query` ties)", "met", "met for `sface-query`; `facenet-query` 2.1 short",
                                      "met", "met for `sface-query`; `facenet-query` 0.2 short", "met"]

    def row(doc: dict, name: str) -> dict:
        return next(r for r in doc["rows"] if r["name"] == name)

    # the mixed gain: 0.9 points of Recall@1 is short of 1
    row(sface_mixed, "CMCE ensemble")["recall_at_1"] = row(sface_mixed, "query model symmetric")["recall_at_1"] + 0.009
    assert _target_verdicts(docs)[1] == "met for `facenet-query`; `sface-query` 0.10 short"
    # the clean query model alone above the served ensemble
    row(sface, "query model symmetric")["recall_at_1"] = 0.9999
    assert _target_verdicts(docs)[0] == "met for `facenet-query`; `sface-query` below the query model alone in R@1"
    # 30% cut at 10% rejected, and the paper's 17.4%: both reached
    next(s for s in facenet_mixed["rejection_by_quality"]["learned"] if s["rate"] == 0.1)["error_cut"] = 0.30
    next(s for s in facenet_mixed["rejection_gallery_ensemble"]["rates"] if s["rate"] == 0.1)["disagreement_error_cut"] = 0.174
    assert _target_verdicts(docs)[2] == _target_verdicts(docs)[4] == "met"
    # random above the shipped score at one clean rate; detection doubt above it at one mixed rate
    facenet["rejection"][0]["random_error_cut"] = 0.5
    next(s for s in sface_mixed["rejection_by_quality"]["detection"] if s["rate"] == 0.2)["error_cut"] = 0.9
    verdicts = _target_verdicts(docs)
    assert verdicts[5] == "met for `sface-query`; `facenet-query` below random at 5%"
    assert verdicts[3] == "met for `facenet-query`; `sface-query` not above detection doubt at 20%"
    with pytest.raises(CmceError, match="a clean and a mixed evaluation"):
        _target_verdicts([sface, sface_mixed, facenet])


# ---- the speed and scale pages' tables (cmce/experiments/docs_tables_speed.py)

def test_speed_table_docstring_examples() -> None:
    import doctest

    import cmce.experiments.docs_tables_speed as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 6


def test_the_thread_table_renders_from_its_study(tmp_path) -> None:
    import json

    def run(mtcnn: float, facenet: float, dlib: float) -> dict:
        return {"mtcnn_ms_per_photo": mtcnn, "ms_per_face": {"dlib-resnet34": dlib, "facenet-casia": facenet}}

    (tmp_path / "t.json").write_text(json.dumps({"rows": {
        "quiet": {"1": run(30.04, 35.0, 9.0), "2": run(20.0, 19.96, 4.0)},
        "one busy core": {"1": run(40.0, 34.0, 9.1), "2": run(100.0, 60.0, 16.0)}}}))
    out = render_page("<!-- table: bench-threads t.json -->\n| quiet | 1 |\n<!-- /table -->\n", tmp_path)
    assert "| quiet | 30.0 / 20.0 | 35.0 / 20.0 | 9.0 / 4.0 |\n" in out
    assert "| one other busy core | 40.0 / 100.0 | 34.0 / 60.0 | 9.1 / 16.0 |\n" in out and "| quiet | 1 |" not in out


def test_the_compact_index_table_says_what_went_wrong(tmp_path) -> None:
    import json

    from cmce.experiments.docs_tables_speed import render_compact_index

    report = json.loads((ROOT / "docs" / "bench-compact-index.json").read_text())
    config = report["configs"]["fastscan"]
    config["mask_reject_10pct"]["excluded_returned"] = 3
    config["threshold"]["hits_below_returned"] = 2
    out = render_compact_index(report)
    assert "3 rejected entries returned" in out and "2 below returned" in out
    report["configs"]["other"] = config
    with pytest.raises(CmceError, match="one configuration"):
        render_compact_index(report)


def test_the_crop_table_keeps_a_changed_backbone_in_full(tmp_path) -> None:
    from cmce.experiments.docs_tables_speed import render_crops

    def f(median: float, mean: float) -> dict:
        return {"median": median, "mean": mean}

    same = {"before": f(0.99, 0.98), "landmarks": f(0.99, 0.98), "after": f(0.99, 0.98)}
    out = render_crops({"cosine": {"sface/box": {"before": f(0.5, 0.4), "landmarks": f(0.7, 0.6),
                                                 "after": f(0.8, 0.75)},
                                   "dlib-resnet34/box": same, "dlib-resnet34/face": same}})
    assert "| sface | MTCNN box | 0.500 (0.400) | 0.700 (0.600) | **0.800 (0.750)** |" in out
    assert "| dlib-resnet34 | MTCNN box / face only | 0.990 / 0.990 | same | same |" in out


def test_the_detection_tables_render_from_their_study(tmp_path) -> None:
    import json

    def r(rate: float, low: float, high: float) -> dict:
        return {"n": 150, "rate": rate, "ci95": [low, high]}

    (tmp_path / "d.json").write_text(json.dumps({
        "full_photos": {"first_pass": r(100.0, 100.0, 100.0), "engine": r(100.0, 100.0, 100.0),
                        "first_pass_faces_identical": "150/150"},
        "tight_crops": {"box 10% inside": {"first_pass": r(63.67, 58.33, 68.67), "engine": r(100.0, 100.0, 100.0),
                                           "found_by": {"mtcnn/first": 95, "yunet/padded": 55}}},
        "lighting": {"gamma 0.3": {"first_pass": r(81.33, 74.67, 87.33), "engine": r(99.33, 98.0, 100.0)},
                     "banding (levels) 16": {"first_pass": r(98.67, 96.67, 100.0), "engine": r(100.0, 100.0, 100.0)},
                     "banding (levels) 8": {"first_pass": r(98.67, 96.67, 100.0), "engine": r(100.0, 100.0, 100.0)}},
        "no_face": {"images": 80, "false_faces": {"texture 3": ["yunet/padded", "mtcnn/normalised"]}}}))
    page = ("<!-- table: detection-sets d.json -->\n<!-- /table -->\n"
            "<!-- table: detection-lighting d.json -->\n<!-- /table -->\n")
    out = render_page(page, tmp_path)
    assert "| 10% inside the box, 112-200 px (150) | 63.7% (58.3 to 68.7) | 100.0% (100.0 to 100.0) " \
           "| 95 first, 55 padded (yunet) |" in out
    assert "| no-face images (80) | 0 faces | 2 faces | |" in out
    assert "| gamma | 0.3 | 81.3% (74.7 to 87.3) | 99.3% (98.0 to 100.0) |" in out
    assert "| banding (levels per channel) | 16 |" in out and "| banding | 8 |" in out


def test_the_int8_table_reads_pairs_of_one_bundle() -> None:
    import json

    from cmce.experiments.docs_tables_speed import render_int8_accuracy

    sface, facenet = (json.loads((ROOT / "docs" / f"eval-{b}.json").read_text()) for b in ("sface-query", "facenet-query"))
    with pytest.raises(CmceError, match="pairs of evaluations"):
        render_int8_accuracy([sface])
    with pytest.raises(CmceError, match="one bundle"):
        render_int8_accuracy([sface, facenet])
    assert "| `facenet-query` | 95.61 (93.67 to 97.25) | 95.61 (93.67 to 97.25) | 92.79 / 92.79 | 92.45 / 92.45 |" \
        in render_int8_accuracy([facenet, facenet])


def test_the_examples_table_follows_the_manifest_and_names_a_missing_answer() -> None:
    """Rows are the examples ``examples.json`` lists per bundle, in its order; one that
    ``check_examples.py --json`` has no answer for says to run it again."""
    import json

    from cmce.experiments.docs_tables_results import render_demo_examples

    check = json.loads((ROOT / "docs" / "examples-check.json").read_text())
    manifest = json.loads((ROOT / "assets" / "examples" / "examples.json").read_text())
    rows = render_demo_examples([check, manifest]).splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [f"| `{b}`" for b, items in manifest["bundles"].items() for _ in items]
    manifest["bundles"]["sface-query"][0]["query"] = "queries/nobody.jpg"
    with pytest.raises(CmceError, match="no answer for sface-query / .* / nobody.jpg.*check_examples.py --json"):
        render_demo_examples([check, manifest])


# ---- public-space.md's tables from the test harnesses' --json (cmce/experiments/docs_tables_space.py)

def test_space_table_docstring_examples() -> None:
    import doctest

    import cmce.experiments.docs_tables_space as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 3


def test_the_harness_tables_say_what_went_wrong(tmp_path) -> None:
    from cmce.experiments.docs_tables_space import render_crash_test, render_fuzz_readers, render_soak

    counts = {"trials": 3, "killed": 1, "killed_old": 1, "killed_new": 0, "finished": 2, "finished_new": 1,
              "mixed_or_failed": 1, "trials_with_stray_files": 0}
    assert "| `cmce upgrade` | 3 | 1 | 1 / 0 | 2 (1 new) | **1** | 0 trials |" in render_crash_test(
        {"operations": {"upgrade": counts}})
    fuzz = {"case_timeout_s": 2.0, "findings": ["case 7 (png): finding:hang"],
            "outcomes": {"decoded": 3, "LimitError": 2, "finding:hang": 1}}
    out = render_fuzz_readers(fuzz)
    assert "| `LimitError` naming the file | 2 |" in out and "| `ArchiveError` naming the archive | 0 |" in out
    assert out.endswith("worker crash | **1** |\n")
    with pytest.raises(CmceError, match="does not know the outcomes \\['weird'\\]"):
        render_fuzz_readers({**fuzz, "outcomes": {"weird": 1}})
    with pytest.raises(CmceError, match="no /search request"):
        render_soak({"photos_per_index": 4, "endpoints": {"/search": {"n": 0}}})
    with pytest.raises(CmceError, match="does not know the endpoints"):
        render_soak({"photos_per_index": 4, "endpoints": {"/other": {"n": 1}}})


# ---- the indexing-throughput, Ray scaling and cost tables (cmce/experiments/docs_tables_indexing.py)

def test_indexing_table_docstring_examples() -> None:
    import doctest

    import cmce.experiments.docs_tables_indexing as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 3


def test_an_indented_marker_renders_an_indented_table(tmp_path) -> None:
    """A table inside a list item keeps the item's indentation; blank lines stay blank."""
    import json

    (tmp_path / "s.json").write_text(json.dumps({"gains": [
        {"from": "a", "to": "b", "rate": 0.1, "gain": 0.01, "ci95": [0.0, 0.02]}]}))
    page = "- item:\n\n  <!-- table: answer-inputs s.json -->\n  stale\n  <!-- /table -->\n\n  more\n"
    out = render_page(page, tmp_path)
    assert "  <!-- table: answer-inputs s.json -->\n  | inputs |" in out and "stale" not in out
    assert "  | b | a | 10% | +1.00 (+0.00 to +2.00) |\n  <!-- /table -->\n\n  more\n" in out
    assert render_page(out, tmp_path) == out


def test_the_indexing_tables_say_what_went_wrong() -> None:
    from cmce.experiments.docs_tables_indexing import (
        render_indexing_cost,
        render_indexing_throughput,
        render_ray_scaling,
    )

    fig = {"engine_fps": 1.0, "gallery_fps": 1.0, "load": 1.0}
    with pytest.raises(CmceError, match="does not know the variant 'fp16'"):
        render_indexing_throughput({"summary": {"fp16 x1": fig}})
    with pytest.raises(CmceError, match="missing: \\['int8 x2'\\]"):
        render_indexing_throughput({"summary": {"before x1": fig, "int8 x1": fig, "before x2": fig}})
    out = render_indexing_throughput({"summary": {"before x1": {"engine_fps": 2.0, "load": 1.0}}})
    assert out.splitlines()[0] == "| variant | detect+embed faces/s, 1 process | median load, 1 |"
    assert "**" not in out  # one variant: nothing to be fastest against
    run = {"photos": 500, "faces": 576, "cpus": 2, "faces_per_s": {"in-process": [10.0], "ray x1": [8.0]}}
    with pytest.raises(CmceError, match="same photos"):
        render_ray_scaling([run, {**run, "faces": 575}])
    with pytest.raises(CmceError, match="in-process runner"):
        render_ray_scaling([{**run, "faces_per_s": {"ray x1": [8.0]}}])
    assert "| float32 |" not in render_ray_scaling([run]) and "faces/s, float32 | ratio |" in render_ray_scaling([run])
    cost = render_indexing_cost(run)
    assert "| 2-core CPU nodes, float32 | 8.0 faces/s (measured here, one Ray worker per node) | 39.9 h on 100 nodes " \
           "| 3,990 node-hours (7,990 core-hours) |" in cost
    with pytest.raises(CmceError, match="needs a Ray run"):
        render_indexing_cost({**run, "faces_per_s": {"in-process": [10.0]}})


# --------------------------------------------------------------------------- pages generated whole, and the README


def test_the_answers_page_is_its_render() -> None:
    """docs/answers.md is generated whole by scripts/answers_doc.py from docs/answers/*.json."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "answers").glob("*.json"))
    page = subprocess.run([sys.executable, "scripts/answers_doc.py", *files], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    assert page == (ROOT / "docs" / "answers.md").read_text(), \
        "docs/answers.md differs from its render: python scripts/answers_doc.py docs/answers/*.json > docs/answers.md"


#: A figure of the README's summary: a number with a decimal point or a thousands comma, or of
#: three digits and more (smaller whole numbers are settings and counts of the method, not measurements).
_FIGURE = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d{3,})(?!\w)")
_RENDERED = re.compile(r"<!-- table: \S+ \S+ -->\n(.*?)<!-- /table -->", re.S)


def _rendered_text(page: Path) -> str:
    """What of ``page`` is generated from JSON: its marked tables (docs/answers.md: all of it)."""
    text = page.read_text()
    return text if page.name == "answers.md" else "\n".join(m.group(1) for m in _RENDERED.finditer(text))


def _summary_rows() -> list[tuple[str, list[str], list[Path]]]:
    rows = []
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and "](docs/" in cells[2]:
            pages = [ROOT / p for p in dict.fromkeys(re.findall(r"\]\((docs/[\w.-]+\.md)", cells[2]))]
            rows.append((cells[0], _FIGURE.findall(cells[1]), pages))
    return rows


def test_the_readme_summary_quotes_only_rendered_figures() -> None:
    """Every measured figure of the README's results summary stands in a table its linked page
    renders from JSON, so that a re-measured page cannot leave the README behind."""
    rows = _summary_rows()
    assert len(rows) >= 8 and all(figures for _, figures, _ in rows), rows
    stale = {topic: missing for topic, figures, pages in rows
             if (missing := [f for f in figures if f not in "\n".join(_rendered_text(p) for p in pages)])}
    assert not stale, f"README figures that no rendered table of their page holds: {stale}"


def test_the_readme_check_catches_a_stale_figure() -> None:
    """The check above can fail: a figure that is on no rendered table is reported."""
    topic, figures, pages = _summary_rows()[0]
    rendered = "\n".join(_rendered_text(p) for p in pages)
    assert all(f in rendered for f in figures)
    assert "12,345.678" not in rendered and _FIGURE.findall("was 12,345.678 s") == ["12,345.678"]
