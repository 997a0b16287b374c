"""A short run of tests/harness/fuzz_readers.py (the full run: 10,000+ cases, figures in docs/public-space.md).

Every mutated JPEG, PNG, GIF, TIFF, WebP, BMP, zip and tar seed must end in a decoded image,
an extraction, or an ImageError/LimitError/ArchiveError naming the file; never another
exception, a case over 2 s, or memory past the pixel budget.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "tests" / "harness" / "fuzz_readers.py")
fuzz_readers = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_readers"] = fuzz_readers
_spec.loader.exec_module(fuzz_readers)


def test_seeds_are_valid_and_read():
    """Unmutated seeds decode (images) or extract three decodable images (archives)."""
    import tempfile
    from pathlib import Path

    seeds = fuzz_readers.all_seeds()
    assert {"jpeg", "png", "gif-animated", "tiff", "webp", "zip-deflated", "tar-gz"} <= set(seeds)
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, (kind, suffix, data)) in enumerate(sorted(seeds.items())):
            outcome, detail = fuzz_readers.run_case(fuzz_readers.Case(number, name, kind, suffix, data), Path(tmp))
            assert (outcome, detail) in (("decoded", ""), ("extracted", '{"decoded": 3}')), (name, outcome, detail)


def test_cases_are_reproducible():
    seeds = fuzz_readers.all_seeds()
    assert fuzz_readers.make_case(123, 7, seeds) == fuzz_readers.make_case(123, 7, seeds)
    assert fuzz_readers.make_case(123, 7, seeds) != fuzz_readers.make_case(124, 7, seeds)


def test_short_fuzz_run_has_no_findings():
    report = fuzz_readers.fuzz(1500, seed=1, max_seconds=240)
    print(fuzz_readers.format_report(report))
    assert report.findings == []
    assert report.cases == 1500
    assert report.outcomes["decoded"] > 100 and report.outcomes["extracted"] > 50  # mutations left some valid
    assert report.outcomes["ImageError"] > 100 and report.outcomes["ArchiveError"] > 50
    doc = fuzz_readers.report_json(report, seed=1, start=0, started_utc="", load_before=0.0, load_after=0.0)
    assert sum(doc["outcomes"].values()) == doc["cases"] == 1500 and doc["findings"] == []  # what --json writes
