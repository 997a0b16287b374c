"""The docs pages' generated tables equal their render from the JSON they come from."""

from __future__ import annotations

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
    with pytest.raises(CmceError, match="unknown table 'nope'.*valid: rows, upgrade, rejection"):
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
