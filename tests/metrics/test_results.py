"""cmce.metrics.results: evaluations read and written in one place, typed and immutable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cmce.metrics.results import (
    Evaluation,
    EvaluationRow,
    ResultError,
    UpgradeResult,
    evaluations_json,
    load_evaluations,
    save_evaluations,
)

ROOT = Path(__file__).resolve().parents[2]
EVALUATIONS = sorted([*(ROOT / "docs").glob("eval-*.json"), *(ROOT / "docs").glob("int8-eval-*.json"),
                      *(ROOT / "docs" / "answers").glob("eval-*.json")])
CONFIGS = sorted((ROOT / "assets" / "bundles").glob("*/config.json"))


@pytest.mark.parametrize("path", EVALUATIONS, ids=lambda p: p.name)
def test_committed_evaluations_round_trip_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    d = json.loads(text)
    ev = Evaluation.from_dict(d)
    assert ev.to_dict() == d
    assert evaluations_json([ev]) == text  # keys in their order, evaluate's indent: what evaluate wrote
    assert load_evaluations(path) == (ev,)
    assert ev.row("CMCE ensemble").recall_at_1 == next(r for r in d["rows"] if r["name"] == "CMCE ensemble")["recall_at_1"]
    assert ev.degrade_spec == (d.get("gallery_degrade") or {}).get("spec")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_recorded_evaluations_and_upgrades_round_trip(path: Path) -> None:
    info = json.loads(path.read_text())["info"]
    for key in ("evaluation", "evaluation_mixed"):
        if key in info:
            ev = Evaluation.from_dict(info[key])
            assert ev.bundle is None and ev.to_dict() == info[key] and list(ev.to_dict()) == list(info[key])
            assert ev.recorded() == info[key]  # what evaluate --record writes of it
    for up in info.get("upgrades", []):
        assert UpgradeResult.from_dict(up).to_dict() == up


def test_typed_sections_read_the_files_figures() -> None:
    d = json.loads((ROOT / "docs" / "eval-upgrade-facenet-dlib.json").read_text())
    ev = Evaluation.from_dict(d)
    row = ev.rows[0]
    assert (row.name, row.gallery, row.recall_at_1_ci95) == (d["rows"][0]["name"], tuple(d["rows"][0]["gallery"]),
                                                             tuple(d["rows"][0]["recall_at_1_ci95"]))
    assert ev.rejection[1].rate == d["rejection"][1]["rate"]
    assert ev.rejection_by_quality["disagreement"][0].error_cut == d["rejection_by_quality"]["disagreement"][0]["error_cut"]
    go = ev.rejection_gallery_ensemble
    assert go.rates[0].scores["detection"].recall_at_1 == d["rejection_gallery_ensemble"]["rates"][0]["detection_recall_at_1"]
    up = ev.upgrade
    assert ev.upgrade_results == (up,) and up.old.source == d["upgrade"]["from"]["source"]
    assert [r.stage for r in up.rows] == ["before", "no_backfill", "backfill"]
    assert up.comparisons[0].from_stage == "before" and up.comparisons[0].ci95 == tuple(d["upgrade"]["comparisons"][0]["ci95"])


def test_results_are_immutable_and_equal_by_value() -> None:
    ev = load_evaluations(ROOT / "docs" / "eval-sface-query.json")[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.rows[0].recall_at_1 = 1.0
    with pytest.raises(TypeError):
        ev.counts["queries"] = 0
    with pytest.raises(TypeError):
        ev.rejection_by_quality["learned"] = ()
    assert Evaluation.from_dict(ev.to_dict()) == ev


def test_several_evaluations_share_one_file(tmp_path) -> None:
    clean = load_evaluations(ROOT / "docs" / "eval-sface-query.json")[0]
    mixed = load_evaluations(ROOT / "docs" / "eval-sface-query-mixed.json")[0]
    save_evaluations(tmp_path / "both.json", [clean, mixed])
    assert list(json.loads((tmp_path / "both.json").read_text())) == ["evaluations"]
    assert load_evaluations(tmp_path / "both.json") == (clean, mixed)
    assert [e.degrade_spec for e in load_evaluations(tmp_path / "both.json")] == [None, "mix:0.6"]


def test_a_built_row_writes_what_it_has_and_nan_as_null() -> None:
    row = EvaluationRow("CMCE ensemble", "ensemble", "sface", ("dlib-resnet34",), float("nan"), tar_at_far_1e3=0.5)
    assert row.to_dict() == {"name": "CMCE ensemble", "kind": "ensemble", "query": "sface",
                             "gallery": ["dlib-resnet34"], "recall_at_1": row.recall_at_1, "tar_at_far_1e-3": 0.5}
    text = evaluations_json([Evaluation(rows=(row,))])
    assert json.loads(text) == {"rows": [{**row.to_dict(), "recall_at_1": None}]}


def test_what_is_not_an_evaluation_is_named(tmp_path) -> None:
    with pytest.raises(ResultError, match=r"rows\[0\]: missing 'tar_at_far_1e-3'"):
        Evaluation.from_dict({"rows": [{"name": "x", "kind": "k", "query": "q", "gallery": [], "recall_at_1": 1}]})
    with pytest.raises(ResultError, match=r"recall_at_1_ci95: expected an interval"):
        EvaluationRow.from_dict({"name": "x", "kind": "k", "query": "q", "gallery": [], "recall_at_1": 1,
                                 "tar_at_far_1e-3": 1, "recall_at_1_ci95": [1, 2, 3]})
    with pytest.raises(ResultError, match="no row 'nope'; the rows are"):
        load_evaluations(ROOT / "docs" / "eval-sface-query.json")[0].row("nope")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ResultError, match="not a readable evaluation JSON"):
        load_evaluations(tmp_path / "x.json")


def test_docstring_example() -> None:
    import doctest

    import cmce.metrics.results as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 3
