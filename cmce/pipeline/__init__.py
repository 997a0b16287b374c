"""One embedding pipeline, two runners: read files -> detect + embed a batch -> commit shards.

- ``reader``: list a folder or pyarrow filesystem URI (labels by first folder level), read bytes.
- ``mapper``: ``IngestMapper``, models loaded once, a batch of files -> staged gallery rows.
- ``writer``: commit staged batches into the gallery, idempotently; build derived data.
- ``runner``: ``run_in_process`` and ``run_ray`` (Ray Data actor pool), the same mapper and writer.

``python -m cmce index SOURCE --out GALLERY [--ray auto|local|ADDRESS]`` runs it. Ray is
optional (``pip install -r requirements-scale.txt``); nothing here imports it until
``run_ray`` or ``connect_ray`` is called.
"""

from cmce.compat import renamed
from cmce.pipeline.mapper import (
    IngestMapper,
    KnownHashes,
    MapperConfig,
    PreparedBatch,
    batch_key,
    prepare_batch,
)
from cmce.pipeline.reader import SourceFile, SourceListing, is_uri, list_source, read_file
from cmce.pipeline.runner import IngestJob, JobReport, connect_ray, run_in_process, run_ray
from cmce.pipeline.writer import DerivedSummary, GalleryWriter, build_derived, open_gallery

__all__ = [
    "DerivedSummary",
    "GalleryWriter",
    "IngestJob",
    "IngestMapper",
    "JobReport",
    "KnownHashes",
    "MapperConfig",
    "PreparedBatch",
    "SourceFile",
    "SourceListing",
    "batch_key",
    "build_derived",
    "connect_ray",
    "is_uri",
    "list_source",
    "open_gallery",
    "prepare_batch",
    "read_file",
    "run_in_process",
    "run_ray",
]

__getattr__ = renamed(__name__, {'IndexMapper': 'IngestMapper', 'IndexJob': 'IngestJob'}, globals(), "'index' names vector indexes; photos are ingested")
