"""Two writers into one gallery at once: the gallery's lock serialises their commits, and
no entry of either is lost. Real models, real LFW faces, two `cmce index` processes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

PEOPLE = [["Aaron_Peirsol", "Abdoulaye_Wade"], ["Abel_Pacheco", "Adam_Sandler"]]


def _photos(root: Path, lfw_dir: Path, people: list[str]) -> Path:
    for p in people:
        (root / p).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(lfw_dir / p / f"{p}_000{i}.jpg", root / p)
    return root


def _index(source: Path, gallery: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "cmce", "index", str(source), "--out", str(gallery), "--quiet"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _entries(gallery: Path) -> dict[str, int]:
    """Committed entries per label, read through the library's own reader."""
    from cmce.storage.read import read_gallery

    labels = read_gallery(gallery).records.label.tolist()
    return {x: labels.count(x) for x in sorted(set(labels))}


def test_two_writers_at_once_lose_nothing(tmp_path, lfw_dir) -> None:
    gallery = tmp_path / "gallery"
    a = _photos(tmp_path / "a", lfw_dir, PEOPLE[0])
    b = _photos(tmp_path / "b", lfw_dir, PEOPLE[1])
    first, second = _index(a, gallery), _index(b, gallery)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert _entries(gallery) == {p: 2 for p in PEOPLE[0] + PEOPLE[1]}
    manifest = json.loads((gallery / "manifest.json").read_text())
    assert len({s["file"] for s in manifest["shards"]}) == len(manifest["shards"])  # no shard named twice
    assert not (gallery / "staging").exists()  # each job removed its own staging folder


def test_a_writer_waits_for_the_lock(tmp_path, lfw_dir) -> None:
    """While another process holds the gallery's lock, a writer commits nothing (it waits to start its
    job); it finishes once released."""
    gallery = tmp_path / "gallery"
    first = _index(_photos(tmp_path / "a", lfw_dir, PEOPLE[0]), gallery)
    assert first.wait(timeout=600) == 0, first.stdout.read()
    before = (gallery / "manifest.json").read_bytes()
    with open(gallery / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = _index(_photos(tmp_path / "b", lfw_dir, PEOPLE[1]), gallery)
        time.sleep(15)  # a writer alone indexes these 4 photos in about that time
        assert writer.poll() is None, writer.stdout.read()  # blocked on the lock, not finished
        assert (gallery / "manifest.json").read_bytes() == before
        fcntl.flock(held, fcntl.LOCK_UN)
    assert writer.wait(timeout=600) == 0, writer.stdout.read()
    assert _entries(gallery) == {p: 2 for p in PEOPLE[0] + PEOPLE[1]}
