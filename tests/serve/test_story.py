"""cmce.serve.story: the shipped evaluations read into the app's columns, and the examples manifest."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cmce.serve.story import StoryError, load_examples, read_evaluation, read_evaluations, story_markdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SHIPPED_EVALS = sorted(p for p in DOCS.glob("eval-*.json")
                       if not {"upgrade", "upgrades"} & set(json.loads(p.read_text())))  # upgrade experiments: None


def _row(d: dict, name: str) -> dict:
    return next(r for r in d["rows"] if r["name"] == name)


@pytest.mark.parametrize("path", SHIPPED_EVALS, ids=lambda p: p.name)
def test_shipped_evaluations_give_the_apps_columns(path):
    d = json.loads(path.read_text())
    report = read_evaluation(path)
    b = d["bundle"]
    assert report.bundle == Path(b["source"]).name and report.query_model == b["query"]
    assert [c.view for c in report.columns] == ["ensemble", *b["gallery"], "query"]
    spec = (d.get("gallery_degrade") or {}).get("spec")  # evaluate --gallery-degrade records it
    assert report.gallery_degrade == spec
    assert report.gallery_kind == ("clean" if spec is None else f"mixed-quality ({spec})")
    assert report.queries == d["counts"]["queries"] and report.gallery == d["counts"]["gallery"]
    # the figures are the file's: the served ensemble, each transformer, the query model alone
    assert report.column("ensemble").recall_at_1 == _row(d, "CMCE ensemble")["recall_at_1"]
    assert report.column("query").recall_at_1 == _row(d, "query model symmetric")["recall_at_1"]
    for g in b["gallery"]:
        row = _row(d, f"{g} -> {b['query']} (transformer)")
        assert report.column(g).recall_at_1 == row["recall_at_1"]
        assert report.column(g).tar_at_far_1e3 == row["tar_at_far_1e-3"]
    assert [r[0] for r in report.rejection] == [r["rate"] for r in d["rejection"]]
    assert report.plot is not None and report.plot.is_file()


def test_upgrade_experiments_are_left_out():
    for path in DOCS.glob("eval-upgrade-*.json"):
        assert read_evaluation(path) is None
    names = {r.path.name for r in read_evaluations(DOCS)}
    assert names == {p.name for p in SHIPPED_EVALS}


@pytest.fixture()
def docs_copy(tmp_path):
    src = next(p for p in SHIPPED_EVALS if "facenet-query" in p.name and "gallery_degrade" not in json.loads(p.read_text()))
    shutil.copy(src, tmp_path / src.name)
    return tmp_path, src


def test_a_mixed_quality_evaluation_is_found_by_its_recorded_fields(docs_copy):
    """Any eval-*.json recording a gallery degradation is a mixed-quality row, whatever its name."""
    folder, src = docs_copy
    d = json.loads(src.read_text())
    d["data"]["gallery_degrade"] = {"spec": "mix:0.6", "seed": 0}
    row = _row(d, "CMCE ensemble")
    row["recall_at_1"], row["recall_at_1_ci95"] = 0.7581, [0.73, 0.78]
    (folder / "eval-something-else.json").write_text(json.dumps(d))
    reports = read_evaluations(folder, ["facenet-query"])
    assert [r.gallery_kind for r in reports] == ["clean", "mixed-quality (mix:0.6)"]
    assert reports[1].column("ensemble").recall_at_1_ci95 == (0.73, 0.78)
    text = story_markdown(reports)
    assert "**Clean gallery**" in text and "**Mixed-quality (mix:0.6) gallery**" in text
    assert "| **CMCE ensemble** | 75.8 (73.0 to 78.0) |" in text  # the number is the file's, with its interval
    assert read_evaluations(folder, ["sface-query"]) == []


def test_story_markdown_reads_each_column_from_the_file(docs_copy):
    folder, src = docs_copy
    report = read_evaluation(folder / src.name)
    text = story_markdown([report])
    for c in report.columns:  # Recall@1 (with its interval when the file has one), then TAR
        assert re.search(rf"{100 * c.recall_at_1:.1f}( \([^)]*\))? \| {100 * c.tar_at_far_1e3:.1f} \|", text), c
    ens, alone = report.column("ensemble").recall_at_1, report.column("query").recall_at_1
    assert f"{100 * (ens - alone):+.1f}".lstrip("+") in text
    assert "random" in text  # the rejection line compares with random rejection
    assert story_markdown([]).startswith("_No held-out evaluation")


def test_malformed_evaluations_are_refused_or_skipped(tmp_path, caplog):
    (tmp_path / "eval-broken.json").write_text("{not json")
    (tmp_path / "eval-other.json").write_text(json.dumps({"bundle": {"query": "sface", "gallery": []}, "rows": []}))
    with pytest.raises(StoryError, match="not a readable evaluation JSON"):
        read_evaluation(tmp_path / "eval-broken.json")
    with pytest.raises(StoryError, match="app's columns"):
        read_evaluation(tmp_path / "eval-other.json")
    assert read_evaluations(tmp_path) == []
    assert "left out of the story" in caplog.text


def test_shipped_examples_manifest():
    ex = load_examples(ROOT / "assets" / "examples")
    assert {g.folder.name for g in ex.galleries} == {"gallery", "archive"}
    for g in ex.galleries:
        assert sorted(g.folder.glob("*.jpg")), g
        assert ex.gallery(g.name) is g
    with pytest.raises(StoryError, match="choose one of"):
        ex.gallery("nope")
    assert all(q.path.is_file() for q in ex.queries)
    assert "facenet-query" in ex.by_bundle
    queries = {q.path for q in ex.queries}
    assert all(e.query in queries for items in ex.by_bundle.values() for e in items)


def test_examples_manifest_naming_a_missing_file_is_refused(tmp_path):
    shutil.copytree(ROOT / "assets" / "examples", tmp_path / "ex")
    (tmp_path / "ex" / "queries" / "Grace_Hopper_04.jpg").unlink()
    with pytest.raises(StoryError, match="Grace_Hopper_04.jpg"):
        load_examples(tmp_path / "ex")
    (tmp_path / "ex" / "examples.json").write_text("{}")
    with pytest.raises(StoryError, match="malformed"):
        load_examples(tmp_path / "ex")


def test_a_bundle_without_a_clean_lift_says_plainly_what_it_buys():
    """sface-query's ensemble ties its query model on clean photos: the tab title and story say so
    and give the mixed-quality gain and rejection, every figure read from the shipped JSONs."""
    from cmce.serve.story import ensemble_lift, tab_title, what_it_buys

    reports = [r for r in read_evaluations(DOCS) if r.bundle == "sface-query"]
    clean = next((r for r in reports if r.gallery_degrade is None), None)
    mixed = next((r for r in reports if r.gallery_degrade is not None), None)
    if clean is None or mixed is None or abs(100 * ensemble_lift(clean)) >= 0.5:
        pytest.skip("sface-query's shipped evaluations no longer tie on clean photos")
    title = tab_title("sface-query", reports)
    assert "+0.0" not in title and "no better than sface on clean photos" in title
    assert f"{100 * ensemble_lift(mixed):+.1f} points on a mixed-quality gallery" in title
    text = what_it_buys(reports)
    assert f"{100 * mixed.column('ensemble').recall_at_1:.1f}% against {100 * mixed.column('query').recall_at_1:.1f}%" \
        in text
    assert text in story_markdown(reports)
    facenet = [r for r in read_evaluations(DOCS) if r.bundle == "facenet-query"]
    if facenet:  # a real clean lift keeps the plain figure, and no extra sentence
        assert re.search(r"facenet-query: \+\d+\.\d points of Recall@1 over its query model", tab_title("facenet-query", facenet))
        assert what_it_buys(facenet) == ""
