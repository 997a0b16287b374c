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


# The results pages' renderers (cmce.experiments.docs_tables_results): each reads its JSON and a hand edit is caught.

def _marked(page: Path, kind: str) -> tuple[str, int, int]:
    """A page's text and the span of the body of its first ``kind`` table."""
    text = page.read_text()
    start = text.index("\n", text.index(f"<!-- table: {kind} ")) + 1
    return text, start, text.index("<!-- /table -->", start)


@pytest.mark.parametrize(("page", "kind", "figure"), [
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
])
def test_a_results_table_figure_edited_by_hand_is_caught(page, kind, figure) -> None:
    path = ROOT / page
    text, start, end = _marked(path, kind)
    assert figure in text[start:end], f"{figure!r} is no longer in {page}'s {kind} table: pick another figure"
    tampered = text[:start] + text[start:end].replace(figure, "7" + figure, 1) + text[end:]
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
