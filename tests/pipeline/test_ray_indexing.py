"""Indexing on a local Ray cluster (2 CPUs): the same entries and search results as in-process,
and a worker killed mid-job redone with no face lost or written twice. Real models, 60 LFW photos."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-scale.txt")

from cmce.cli import main  # noqa: E402
from cmce.gallery.memory import Gallery
from cmce.method.bundle import load_bundle  # noqa: E402
from cmce.method.engine import FaceEngine  # noqa: E402
from cmce.pipeline import IngestJob, IngestMapper, run_in_process, run_ray  # noqa: E402
from cmce.storage.read import read_gallery  # noqa: E402
from cmce.storage.staging import staged_files  # noqa: E402

pytestmark = pytest.mark.slow


def fixed_subset(lfw_dir: Path) -> tuple[list[Path], list[Path]]:
    """60 photos: 3 of each of the first 16 people (sorted) with 4 or more, and 12 people with one;
    plus the 4th photo of 5 of those people as queries (not indexed)."""
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())
    several = [p for p in people if len(list(p.glob("*.jpg"))) >= 4][:16]
    single = [p for p in people if len(list(p.glob("*.jpg"))) == 1][:12]
    photos = [p / f"{p.name}_000{i}.jpg" for p in several for i in (1, 2, 3)] + [next(p.glob("*.jpg")) for p in single]
    queries = [p / f"{p.name}_0004.jpg" for p in several[::3]]
    return photos, queries


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the crash-once mapper below is defined in this test module: ship it by value to the workers
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def deadline():
    """A Ray job that stops making progress (e.g. actors waiting for CPUs) fails the test instead of hanging CI."""

    def expired(signum, frame):
        raise TimeoutError("Ray test still running after 300 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine(load_bundle())


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw_dir) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("lfw60")
    subset, queries = fixed_subset(lfw_dir)
    for src in subset:
        (root / src.parent.name).mkdir(exist_ok=True)
        shutil.copy(src, root / src.parent.name / src.name)
    return root, queries


@pytest.fixture(scope="module")
def in_process(photos, engine, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inproc") / "gallery"
    report = run_in_process(IngestJob(str(photos[0]), str(folder), batch_size=8), engine=engine)
    assert report.files == 60 and report.added >= 55
    return folder


def by_id(folder: Path):
    rec = read_gallery(folder).records
    return rec.take(np.argsort(rec.entry_id.astype(str)))


def assert_same_entries(a, b) -> None:
    assert a.entry_id.tolist() == b.entry_id.tolist()  # no face missing, none twice
    assert a.label.tolist() == b.label.tolist() and a.source.tolist() == b.source.tolist()
    np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    assert set(a.backbones) == set(b.backbones)
    for k in a.backbones:
        np.testing.assert_allclose(a.embeddings[k], b.embeddings[k], atol=1e-5)


def test_ray_local_gives_the_same_entries_and_search_results(cluster, photos, in_process, engine, tmp_path,
                                                             capsys) -> None:
    folder = tmp_path / "gallery"
    assert main(["index", str(photos[0]), "--out", str(folder), "--ray", "local", "--batch-size", "8", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"{len(read_gallery(in_process).records)} faces")
    assert_same_entries(by_id(folder), by_id(in_process))
    assert read_gallery(folder).manifest["derived"] is not None
    ours, theirs = Gallery.load(folder, engine), Gallery.load(in_process, engine)
    for query in photos[1]:
        a = ours.search_image(query, k=5).views["ensemble"].matches
        b = theirs.search_image(query, k=5).views["ensemble"].matches
        assert [ours.entries[m.position].entry_id for m in a] == [theirs.entries[m.position].entry_id for m in b]
        np.testing.assert_allclose([m.score for m in a], [m.score for m in b], atol=1e-4)
        assert a[0].label == query.parent.name


class CrashOnce(IngestMapper):
    """Stages its first batch, then dies (a real process exit) before returning it."""

    marker: str = ""

    def process(self, prepared):
        row = super().process(prepared)
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return row


def test_killed_worker_is_redone_without_duplicates(cluster, photos, in_process, tmp_path) -> None:
    mapper = type("CrashOnceHere", (CrashOnce,), {"marker": str(tmp_path / "crashed")})
    folder = tmp_path / "gallery"
    report = run_ray(IngestJob(str(photos[0]), str(folder), batch_size=8, commit_every=2), workers=2,
                     mapper_class=mapper)
    assert (tmp_path / "crashed").is_file()  # a worker did die
    assert report.files == 60 and report.added == len(read_gallery(in_process).records)
    assert staged_files(folder) == []
    assert_same_entries(by_id(folder), by_id(in_process))


def test_archive_index_built_with_ray_tasks_equals_in_process(cluster, in_process, engine, tmp_path) -> None:
    """Re-projection as one Ray task per shard and the compact index built in a Ray task give
    the same derived files and answers as the in-process build."""
    from cmce.gallery.archive import ArchiveGallery
    from cmce.gallery.archive_build import build_archive_index
    from cmce.search.compact_config import CompactConfig

    config = CompactConfig(factory="IVF{nlist},PQ32x4fs", nlist=4, nprobe=4, rerank=64, train_per_list=16)
    folders = {}
    for how in ("in-process", "ray"):
        folders[how] = tmp_path / how
        shutil.copytree(in_process, folders[how])
        report = build_archive_index(folders[how], engine.bundle, index="compact", config=config,
                                     ray="local" if how == "ray" else None)
        assert report.workers == how and report.index == "compact"
    a, b = (ArchiveGallery.open(folders[h], engine.bundle) for h in ("in-process", "ray"))
    for name in ("vectors.npy", "quality.npy", "active.npy"):
        np.testing.assert_array_equal(np.load(folders["ray"] / b.meta["path"] / name),
                                      np.load(folders["in-process"] / a.meta["path"] / name))
    queries = np.load(folders["ray"] / b.meta["path"] / "vectors.npy")[:10].astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for x, y in zip(a.search_vectors(queries, k=5), b.search_vectors(queries, k=5)):
        assert [m.entry_id for m in x.matches] == [m.entry_id for m in y.matches]
