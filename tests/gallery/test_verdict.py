"""The verdict of a query (cmce.gallery.verdict): right/wrong per column, or agreement."""

from __future__ import annotations

import numpy as np
import pytest

from cmce.errors import CmceError
from cmce.gallery.results import Match, QueryResult, ViewResult
from cmce.gallery.verdict import ensemble_margin, query_verdict, searchable_labels


def _view(name: str, matches: list[tuple[str | None, float]], unknown: bool = False) -> ViewResult:
    ms = tuple(Match(i, lab, f"{lab or 'photo'}_{i}.jpg", s, 0.1, 0.1) for i, (lab, s) in enumerate(matches))
    return ViewResult(name, ms, 0.3, unknown)


def _result(*views: ViewResult) -> QueryResult:
    return QueryResult((), 0, {v.view: v for v in views}, 1e-3)


GRACE = _result(
    _view("ensemble", [("Grace_Hopper", 0.71), ("Grace_Hopper", 0.64), ("Eileen_Collins", 0.50)]),
    _view("dlib-resnet34", [("Grace_Hopper", 0.2)], unknown=True),
    _view("facenet-casia", [("Grace_Hopper", 0.6), ("Eileen_Collins", 0.3)]),
    _view("query", [("Grace_Hopper", 0.8), ("Eileen_Collins", 0.2)]),
)


def test_a_known_identity_marks_every_column():
    v = query_verdict(GRACE, "sface", "Grace_Hopper", {"Grace_Hopper", "Eileen_Collins"})
    assert v.text == ("CMCE ensemble ✓ · dlib-resnet34 → sface ✗ (Unknown) · facenet-casia → sface ✓ · "
                      "sface alone ✓")
    assert v.ensemble_only == ("dlib-resnet34",)
    assert v.as_dict()["columns"]["dlib-resnet34"] == {"title": "dlib-resnet34 → sface", "answer": None,
                                                      "correct": False}


def test_a_wrong_name_is_named_and_unknown_is_right_for_a_stranger():
    v = query_verdict(GRACE, "sface", "Eileen_Collins", {"Grace_Hopper", "Eileen_Collins"})
    assert v.column("ensemble").mark == "✗ (Grace_Hopper)"
    assert v.ensemble_only == ()
    stranger = query_verdict(GRACE, "sface", "Ada_Lovelace", {"Grace_Hopper", "Eileen_Collins"})
    assert stranger.present is False
    assert [c.correct for c in stranger.columns] == [False, True, False, False]  # only Unknown is right


def test_without_an_identity_the_columns_agreement_and_the_margin():
    v = query_verdict(GRACE, "sface")
    assert v.identity is None and v.present is None
    assert (v.agreed, v.agreeing) == ("Grace_Hopper", 3)
    assert v.margin == pytest.approx(0.21)  # 0.71 - 0.50: the best other person
    assert v.text == "3 of 4 columns agree on Grace_Hopper; the ensemble's margin 0.21"
    assert [c.correct for c in v.columns] == [None] * 4


def test_margin_needs_another_person_and_all_unknown_says_so():
    assert ensemble_margin(_view("ensemble", [("Ann", 0.9), ("Ann", 0.8)])) is None
    assert ensemble_margin(_view("ensemble", [("Ann", 0.9), (None, 0.4)])) == pytest.approx(0.5)
    none = query_verdict(_result(_view("ensemble", [("Ann", 0.1)], True), _view("query", [], True)), "sface")
    assert none.agreed is None and none.text == "none of the 2 columns names anyone (all say Unknown)"
    with pytest.raises(CmceError, match="no view"):
        query_verdict(_result(), "sface")
    with pytest.raises(CmceError, match="the columns are \\['ensemble', 'query'\\]"):
        none.column("sface")


def test_searchable_labels_leave_out_rejected_and_removed_entries():
    class _G:  # what searchable_labels reads of a gallery: entries and the live positions
        entries = [type("E", (), {"label": lab})() for lab in ("Ann", "Bob", None, "Cy")]
        positions = np.array([0, 1, 2])

    assert searchable_labels(_G()) == {"Ann", "Bob"}
    assert searchable_labels(_G(), np.array([False, True, False, False])) == {"Ann"}
