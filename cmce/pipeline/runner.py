"""Run an indexing job: in this process, or on a Ray cluster with Ray Data. Same mapper, same writer.

``run_in_process`` reads and decodes the next batch in a thread while the current one is
detected and embedded (torch and Pillow release the GIL). ``run_ray`` lists the files,
makes them a Ray Dataset, and runs ``IngestMapper`` in an actor pool through
``Dataset.map_batches`` (models load once per actor; restarted actors redo a killed
worker's batch). The actors read and decode their own batches: a separate read stage of
Ray tasks deadlocks when the actors hold every CPU (as they should: one per CPU). Both stage each batch in the gallery and commit from the driver
(``cmce.pipeline.writer``); a job interrupted anywhere resumes by running it again.

Ray is optional: ``pip install -r requirements-scale.txt``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from cmce.compat import renamed
from cmce.errors import CmceError
from cmce.gallery.ingest import plural
from cmce.pipeline.mapper import IngestMapper, MapperConfig
from cmce.pipeline.reader import SourceFile, list_source
from cmce.pipeline.writer import GalleryWriter, open_gallery
from cmce.runtime import connect_ray, require_ray

logger = logging.getLogger(__name__)

__all__ = ["IngestJob", "JobReport", "connect_ray", "run_in_process", "run_ray"]

#: Called after each committed-or-staged batch with (files done, files in the job).
JobProgress = Callable[[int, int], None]



@dataclass(frozen=True)
class IngestJob:
    """One indexing job.

    Attributes:
        source: a folder or pyarrow filesystem URI (``cmce.pipeline.reader``).
        gallery: the gallery folder (created, or extended; resumed if interrupted).
        mapper: models and per-photo limits.
        batch_size: files per batch (one detection pass, one embedding pass per backbone).
        commit_every: batches per commit (one manifest write each).
        max_files: files read at most (the first in listing order).
        max_entries: entries the gallery may hold.
        filename_labels: label photos directly in the root by their ``Name_0001``-style name.
    """

    source: str
    gallery: str
    mapper: MapperConfig = field(default_factory=MapperConfig)
    batch_size: int = 16
    commit_every: int = 8
    max_files: int | None = None
    max_entries: int | None = None
    filename_labels: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.commit_every < 1:
            raise CmceError(f"batch size and commit group must be positive, got {self.batch_size}, {self.commit_every}")


@dataclass(frozen=True)
class JobReport:
    """What a job did.

    Attributes:
        files: files listed (after ``max_files``).
        added: entries committed.
        skipped: ``(source, reason)`` of files recorded as skipped by this job.
        known: files whose content the gallery already held (not decoded).
        duplicates: faces dropped at commit because their entry id was stored.
        resumed: entries committed from an interrupted run's staged batches.
        limits_reached: caps reached.
        seconds: wall time of listing, embedding and committing.
        runner: ``"in-process"`` or ``"ray"``.
    """

    files: int
    added: int
    skipped: tuple[tuple[str, str], ...] = ()
    known: int = 0
    duplicates: int = 0
    resumed: int = 0
    limits_reached: tuple[str, ...] = ()
    seconds: float = 0.0
    runner: str = "in-process"

    @property
    def faces_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        parts = [f"{plural(self.added, 'face')} indexed from {plural(self.files, 'file')}"]
        if self.skipped:
            parts.append(f"{plural(len(self.skipped), 'file')} skipped")
        if self.known:
            parts.append(f"{plural(self.known, 'file')} already indexed")
        if self.duplicates:
            parts.append(f"{plural(self.duplicates, 'duplicate face')} ignored")
        if self.resumed:
            parts.append(f"{plural(self.resumed, 'face')} of an interrupted run committed")
        return "; ".join(parts + list(self.limits_reached))


def _columns(files: Sequence[SourceFile]) -> dict[str, list]:
    return {"uri": [f.uri for f in files], "source": [f.source for f in files],
            "label": [f.label for f in files], "size": [f.size for f in files]}


def _start(job: IngestJob) -> tuple[list[SourceFile], GalleryWriter, list[str]]:
    listing = list_source(job.source, filename_labels=job.filename_labels)
    files, limits = list(listing.files), []
    if job.max_files is not None and len(files) > job.max_files:
        limits.append(f"only the first {job.max_files} of {len(files)} files were read (max files)")
        files = files[: job.max_files]
    folder = open_gallery(job.gallery)
    writer = GalleryWriter(folder, commit_every=job.commit_every, max_entries=job.max_entries)
    return files, writer, limits


def _report(job_files: int, writer: GalleryWriter, known: int, limits: list[str], start: float,
            runner: str, max_entries: int | None) -> JobReport:
    if writer.over_limit:
        limits.append(f"gallery is full ({max_entries} entries): {writer.over_limit} photos not indexed")
    return JobReport(job_files, writer.added - writer.resumed.entries, tuple(writer.skipped), known,
                     writer.duplicates, writer.resumed.entries, tuple(limits), time.perf_counter() - start, runner)


def run_in_process(job: IngestJob, *, engine=None, progress: JobProgress | None = None,
                   mapper_class: type[IngestMapper] = IngestMapper) -> JobReport:
    """Run a job here: a reader thread prefetches and decodes the next batch.

    Args:
        job: what to index where.
        engine: an already loaded ``FaceEngine`` of the job's bundle (default: load one).
        progress: called after each batch with (files done, files in the job).
        mapper_class: the mapper (a subclass of ``IngestMapper``).

    Raises:
        CmceError: a source without images, a gallery that cannot be read or written.
    """
    start = time.perf_counter()
    files, writer, limits = _start(job)
    batches = [_columns(files[i : i + job.batch_size]) for i in range(0, len(files), job.batch_size)]
    known = done = 0
    with writer, ThreadPoolExecutor(1, thread_name_prefix="cmce-reader") as pool:
        mapper = mapper_class(str(writer.folder), job.mapper, writer.known_hashes(), engine=engine, job=writer.stage)
        ahead = pool.submit(mapper.prepare, batches[0]) if batches else None
        for i in range(len(batches)):
            prepared = ahead.result()
            ahead = pool.submit(mapper.prepare, batches[i + 1]) if i + 1 < len(batches) else None
            row = mapper.process(prepared)
            known += prepared.known
            writer.add({k: v[0] for k, v in row.items()})
            done += prepared.files
            if progress:
                progress(done, len(files))
        writer.close()  # an interrupted run leaves its last batches staged: the next run commits them
    return _report(len(files), writer, known, limits, start, "in-process", job.max_entries)


def run_ray(job: IngestJob, *, address: str = "local", workers: int = 1, gpus_per_worker: float = 0.0,
            cpus_per_worker: float = 1.0, progress: JobProgress | None = None,
            mapper_class: type[IngestMapper] = IngestMapper, max_task_retries: int = 3) -> JobReport:
    """Run a job on Ray Data: the listed files as a Dataset, mapped by an actor pool of ``mapper_class``.

    Args:
        job: what to index where; the gallery folder must be reachable by every worker.
        address: see ``connect_ray``.
        workers: actors in the pool (each loads the models once).
        gpus_per_worker: GPUs per actor (> 0: the models run on CUDA).
        cpus_per_worker: CPUs reserved per actor.
        progress: called after each batch with (files done, files in the job).
        mapper_class: the mapper (a subclass of ``IngestMapper``).
        max_task_retries: times a batch is retried on a restarted actor.

    Raises:
        CmceError: Ray missing or unreachable, a source without images, a gallery
            that cannot be written, or a batch that failed every retry.
    """
    start = time.perf_counter()
    ray = require_ray()
    started = connect_ray(address)  # first: an unreachable cluster fails before the gallery is touched
    try:
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if address == "local" and workers * cpus_per_worker > cpus:
            raise CmceError(f"{workers} workers need {workers * cpus_per_worker:g} CPUs; this machine's Ray cluster "
                            f"has {cpus:g}: use --workers {max(1, int(cpus // cpus_per_worker))} or fewer")
        files, writer, limits = _start(job)
        with writer:  # an error leaves the staged batches for the next run
            from ray.data import ActorPoolStrategy, DataContext

            ctx = DataContext.get_current()
            ctx.enable_progress_bars = False
            config = job.mapper if gpus_per_worker <= 0 else replace(job.mapper, device="cuda")
            items = [dict(zip(("uri", "source", "label", "size"), (f.uri, f.source, f.label, f.size))) for f in files]
            n_batches = max(1, -(-len(files) // job.batch_size))
            ds = ray.data.from_items(items, override_num_blocks=n_batches)
            with warnings.catch_warnings():
                # Ray 2.60 has no named parameter for these yet and warns that the catch-all is deprecated;
                # its own default (retry forever) would hang on a photo that kills the worker every time
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=DeprecationWarning)
                ds = ds.map_batches(
                    mapper_class,
                    fn_constructor_kwargs={"gallery": str(writer.folder), "config": config,
                                           "known": writer.known_hashes(), "job": writer.stage},
                    batch_size=job.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=workers),
                    num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
                    max_restarts=-1, max_task_retries=max_task_retries,  # a killed actor restarts; its batch is redone
                )
            known = done = 0
            for row in ds.iter_rows():
                known += int(row["known"])
                writer.add(row)
                done += int(row["files"])
                if progress:
                    progress(done, len(files))
            writer.close()
    except Exception as e:
        if isinstance(e, CmceError):
            raise
        if type(e).__module__.startswith("ray"):
            raise CmceError(f"the Ray job failed: {e}") from e
        raise
    finally:
        if started:
            ray.shutdown()
    return _report(len(files), writer, known, limits, start, "ray", job.max_entries)

__getattr__ = renamed(__name__, {'IndexJob': 'IngestJob'}, globals(), "'index' names vector indexes; photos are ingested")
