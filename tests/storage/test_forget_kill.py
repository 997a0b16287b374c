"""kill -9 of ``python -m cmce forget``: the gallery is left exactly in its old or its new state.

Each trial runs ``forget`` in a subprocess that pauses at one named step
(``cmce.storage.faults.PAUSE_ENV``: before any write, with every new file written but the
manifest not yet replaced, and with the manifest replaced but the old files not yet
deleted), kills it there with SIGKILL, then reads the gallery. What the kill left unlisted
is removed by the next ``remove_orphans`` (which every ``forget`` and indexing job runs
first), after which the folder holds exactly the files the manifest lists. About 3 s a
trial (one Python start each) on the shared 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, found_on_disk
from test_forget import ERASED, build_gallery, erased_bytes, listed_files

from cmce.storage.faults import PAUSE_ENV
from cmce.storage.forget import forget_entries
from cmce.storage.read import read_gallery
from cmce.storage.staging import remove_orphans

pytestmark = pytest.mark.slow


def _state(folder: Path) -> tuple[list[str], object]:
    stored = read_gallery(folder)
    return stored.records.entry_id.tolist(), stored.corrections


def _gallery_files(folder: Path) -> set[str]:
    """Files under the gallery, less the staged batches (not part of it: the next job commits them)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and not str(p.relative_to(folder)).startswith("staging/")}


def killed_at(args: list[str], step: str, marker: Path, what: str) -> int:
    """Run ``args`` (a Python process writing a gallery) until it pauses at ``step``
    (``cmce.storage.faults``), kill -9 it there; returns its exit status."""
    env = dict(os.environ, **{PAUSE_ENV: f"{step}:{marker}"})
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 40
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{what} never reached {step}: {proc.communicate()[0].decode()[-2000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=10)


def _forget_killed_at(folder: Path, step: str, marker: Path) -> int:
    """Run ``cmce forget`` until it pauses at ``step``, kill -9 it there; returns its exit status."""
    args = [sys.executable, "-m", "cmce", "forget", str(folder)] + [a for e in ERASED for a in ("--entry", e)]
    return killed_at(args, step, marker, "forget")


@pytest.mark.parametrize("step, expected", [("start", "old"), ("written", "old"), ("swapped", "new")])
def test_kill_9_during_forget_leaves_the_old_or_the_new_gallery(tmp_path: Path, step: str, expected: str) -> None:
    old_folder, folder = tmp_path / "old", tmp_path / "g"
    records = build_gallery(old_folder)
    build_gallery(folder)
    new_folder = tmp_path / "new"
    build_gallery(new_folder)
    forget_entries(new_folder, ERASED)
    old, new = _state(old_folder), _state(new_folder)
    assert old != new

    status = _forget_killed_at(folder, step, tmp_path / f"{step}.paused")

    assert status == -signal.SIGKILL
    state = _state(folder)
    assert state == (old if expected == "old" else new), step
    leftovers = _gallery_files(folder) - listed_files(folder)
    assert bool(leftovers) == (step != "start"), leftovers  # new files not yet listed, or old ones not yet deleted
    remove_orphans(folder)  # the next open for writing: a forget or an indexing job runs it first
    assert _gallery_files(folder) - {".lock"} == listed_files(folder) - {".lock"}
    assert _state(folder) == state
    if expected == "new":
        assert found_on_disk(folder, erased_bytes(records)) == {}
    else:  # the old gallery is intact: the erasure can simply be run again
        forget_entries(folder, ERASED)
        assert _state(folder) == new
        assert found_on_disk(folder, erased_bytes(records)) == {}
