"""Render the generated tables of README.md and docs/*.md from the JSON they come from.

    python scripts/render_docs.py          # rewrite the pages
    python scripts/render_docs.py --check  # exit 1, naming the pages that differ

The markers and renderers: ``cmce.experiments.docs_tables``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cmce.experiments.docs_tables import render_page, stale_pages  # noqa: E402


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report pages that differ from their render")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages(pages())
        for p in stale:
            print(f"{p.relative_to(ROOT)} differs from its render: python scripts/render_docs.py")
        return 1 if stale else 0
    for p in pages():
        text = p.read_text()
        new = render_page(text, p.parent)
        if new != text:
            p.write_text(new)
            print(f"rendered {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
