"""kill -9 of ``cmce index`` and ``cmce upgrade`` (tests/harness/crash_test.py at a small size).

Each trial kills the command at a seeded random moment up to 0.1 s after it first writes
into the gallery folder; the gallery must then load, hold exactly the old or the new
state and answer a search. The full run (20 + 20 trials, also killing at uniform moments,
with re-runs to completion) is in docs/public-space.md; here 1 + 1 trials, since the set-up runs
cmce three times and every trial once more, each process loading its models (set-up
40-55 s and 5-15 s per trial on the shared 2 cores).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("crash_test", ROOT / "tests" / "harness" / "crash_test.py")
crash_test = importlib.util.module_from_spec(_spec)
sys.modules["crash_test"] = crash_test
_spec.loader.exec_module(crash_test)


def test_kill_9_leaves_old_or_new_state(lfw_dir):
    if not (crash_test.OLD_BUNDLE / "config.json").is_file() or not (crash_test.NEW_BUNDLE / "config.json").is_file():
        pytest.skip("needs the shipped facenet-dlib and sface-query bundles")
    # kill at the first write seen: a trial that finished before the kill would test nothing
    results = crash_test.run(lfw_dir, trials=1, seed=1, resume=0, modes=("write",), write_delay=0.0)
    print(crash_test.summary(results))
    trials = [t for ts in results.values() for t in ts]
    assert all(t.kill_after_s is not None for t in trials), [(t.operation, t.outcome) for t in trials]
    assert crash_test.failures(results) == []
    assert all(t.outcome in ("old", "new") for t in trials), [t.outcome for t in trials]


def test_operation_counts_are_what_the_docs_table_shows():
    """``--json``'s counts per operation (``render_crash_test`` reads them): killed trials by the state they
    left, finished ones, failures, stray files and re-runs."""
    def trial(outcome, killed=True, leftovers=0, resumed=False):
        return crash_test.Trial("index", 0, "write", 1.0 if killed else None, outcome, "", leftovers, resumed)

    counts = crash_test.operation_counts([trial("old", leftovers=3, resumed=True), trial("new"),
                                          trial("new (finished)", killed=False), trial("MIX", leftovers=1)])
    assert counts == {"trials": 4, "killed": 3, "killed_old": 1, "killed_new": 1, "finished": 1, "finished_new": 1,
                      "mixed_or_failed": 1, "trials_with_stray_files": 2, "resumed": 1, "resumed_new_clean": 1}
