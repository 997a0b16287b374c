"""kill -9 of an append with corrections (``Gallery.save_appended``'s write): the old or the new gallery.

``Gallery.save_appended`` writes through ``append_entries(folder, new_records, corrections=...)``:
a new shard, the corrections file, then one manifest write that lists both, then the old
corrections file deleted (the derived data after that is rebuilt from the shards by the next
save or ``cmce upgrade``, and never read as the entries). Each trial runs that call in a
subprocess that pauses at one step (``cmce.storage.faults.PAUSE_ENV``), kills it there with
SIGKILL, and reads the gallery: entries and corrections are exactly the old ones or exactly the
new ones, and after ``remove_orphans`` (which every later write runs first) the folder holds
exactly the files its manifest lists. About 2 s a trial (one Python start each).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_forget import listed_files
from test_forget_kill import _gallery_files, _state, killed_at
from test_store import make_records

from cmce.storage.corrections import Corrections
from cmce.storage.read import read_gallery
from cmce.storage.staging import remove_orphans
from cmce.storage.write import append_entries, write_gallery

pytestmark = pytest.mark.slow

OLD, NEW = 7, 10  # the folder holds the first 7 entries; the append adds 3

# the append a session's save_appended makes: the new entries, and the corrections naming old and new ones
APPEND = f"""
import sys
sys.path[:0] = [{str(ROOT / 'tests' / 'storage')!r}, {str(ROOT / 'tests')!r}]
from test_append_kill import new_corrections
from test_store import make_records
from cmce.storage.write import append_entries
append_entries(sys.argv[1], make_records({NEW}).take(list(range({OLD}, {NEW}))), corrections=new_corrections())
"""


def old_corrections() -> Corrections:
    return Corrections.empty().merged([("h0:0", "h1:0")], [], {"h0:0": "Ada", "h1:0": "Ada"})


def new_corrections() -> Corrections:
    """Names for new entries, a must-link and a cannot-link across old and new entries."""
    return Corrections.empty().merged([("h0:0", "h1:0"), ("h1:0", "h8:0")], [("h2:0", "h9:0")],
                                      {"h0:0": "Ada", "h1:0": "Ada", "h8:0": "Ada", "h9:0": "Bob"})


def build(folder: Path) -> None:
    write_gallery(folder, make_records(NEW).take(list(range(OLD))), corrections=old_corrections(), shard_rows=4)


def _append_killed_at(folder: Path, step: str, marker: Path) -> int:
    """Run the append until it pauses at ``step``, kill -9 it there; returns its exit status."""
    return killed_at([sys.executable, "-c", APPEND, str(folder)], step, marker, "the append")


@pytest.mark.parametrize("step, expected", [("append-start", "old"), ("append-written", "old"),
                                            ("corrections-written", "old"), ("corrections-listed", "new")])
def test_kill_9_during_an_append_with_corrections_leaves_the_old_or_the_new_gallery(
        tmp_path: Path, step: str, expected: str) -> None:
    old_folder, new_folder, folder = tmp_path / "old", tmp_path / "new", tmp_path / "g"
    for f in (old_folder, new_folder, folder):
        build(f)
    append_entries(new_folder, make_records(NEW).take(list(range(OLD, NEW))), corrections=new_corrections())
    old, new = _state(old_folder), _state(new_folder)
    assert len(old[0]) == OLD and len(new[0]) == NEW and old[1] != new[1]

    status = _append_killed_at(folder, step, tmp_path / f"{step}.paused")

    assert status == -signal.SIGKILL
    state = _state(folder)
    assert state == (old if expected == "old" else new), step
    leftovers = _gallery_files(folder) - listed_files(folder)
    assert bool(leftovers) == (step != "append-start"), leftovers  # new files not yet listed, or the old not deleted
    remove_orphans(folder)  # what the next write runs first
    assert _gallery_files(folder) - {".lock"} == listed_files(folder) - {".lock"}
    assert _state(folder) == state
    if expected == "old":  # the append is simply made again
        append_entries(folder, make_records(NEW).take(list(range(OLD, NEW))), corrections=new_corrections())
        assert _state(folder) == new
    assert len(read_gallery(folder).records) == NEW
