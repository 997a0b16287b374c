"""The on-disk gallery format: raw per-backbone embeddings as the source of truth.

A gallery folder (format version 2)::

    GALLERY/
      manifest.json                      format, version, backbones by weights checksum,
                                         the shards in order, the derived data in use
      shards/entries-000000.parquet      one row per face: id, content hash, source, uri,
                                         label, detection record, thumbnail, and the raw
                                         embedding of every backbone this shard holds
                                         (column ``emb:<key>``: fixed_size_binary of D
                                         little-endian float32, null where missing)
      shards/embeddings-000001.parquet   rows added later for entries already stored
                                         (``entry_id`` + one backbone's embedding: backfill)
      derived/<bundle fingerprint>/      fused vectors, uncertainty, quality and the search
                                         index for one bundle: rebuildable from the shards
      skipped/skipped-000000.parquet     files an indexing job read but made no entry of
                                         (uri, source, content hash or null, reason)
      staging/<job>/<batch key>.*.parquet  a job's finished batches, not yet committed: never
                                         read as part of the gallery; <job>/.lock is held
                                         by the job's driver while it runs
      people/corrections-000000.parquet  the user's corrections: must-links, cannot-links and
                                         names (entry ids), listed under the optional
                                         manifest key ``"corrections"``

Raw embeddings are keyed by backbone *and* weights checksum (``sface@0d2a97b4c1f3``):
two versions of one model never mix. An entry may lack a backbone (a library indexed
long ago by one model); its column is null there. Fused vectors and indexes are
derived data: they are rebuilt whenever the serving bundle changes, and a derived
folder is used only if its bundle fingerprint and shard list match the manifest.

Writes are atomic: a shard or derived folder is written under a temporary name and
renamed, and only then listed in ``manifest.json`` (with its size), which is itself
replaced atomically; every Parquet data page carries a CRC32 checked on reading. A reader
therefore never sees a half-written shard, and an interrupted write leaves the previous
gallery intact.

Indexing jobs (``cmce.pipeline``) write each finished batch into their own folder under
``staging/`` (temporary name, then renamed: a retried batch rewrites the same name with the same rows) and
the driver commits staged batches in groups (``commit_staged``): rows whose entry id
is already stored are dropped, the rest become new shards, and one manifest write
lists them. Files read without a face, or unreadable, go to ``skipped/`` tables listed
under the manifest's optional ``"skipped"`` key, so a re-run skips their content too.
That key was added without a version bump: a cmce that predates it reads such a
gallery exactly as before (it reads only ``backbones``, ``shards`` and ``derived``),
and ``write_gallery`` (``Gallery.save``) writes a manifest without it, after which a
re-run reads those files again. The optional ``"corrections"`` key was added the same way
(``cmce.storage.corrections``). Version 1 galleries (``gallery.json`` +
``embeddings.npz``) are read and converted in memory; saving writes version 2.

The modules, one job each:

- ``records``: the in-memory types (``GalleryRecords``, ``BackboneRecord``,
  ``StoredGallery``, ``DerivedData``).
- ``manifest``: the format constants, ``manifest.json``, the writer's lock, atomic folder swaps.
- ``shards``: Parquet shards (columns, atomic writes, checked reads).
- ``read``: ``read_gallery``; ``convert_v1``: version 1 galleries converted in memory.
- ``write``: ``write_gallery``, ``append_entries``, ``append_embeddings``.
- ``staging``: indexing jobs' staged batches, ``commit_staged``, skipped files.
- ``derived``: one bundle's derived data (``write_derived``, ``read_derived``).
- ``corrections``: the user's corrections (``read_corrections``, ``add_corrections``); names
  are shown as labels by ``read_gallery`` (an overlay: shards are not rewritten). An old
  gallery whose save wrote names into its shard labels (its corrections listed without
  ``"shard_labels": "own"``) is read with those names taken out of the labels (``own_labels``).
- ``forget``: erasure (``forget_entries``): every file holding the faces rewritten, old files
  deleted after the manifest swap; see docs/privacy.md.

The names below are re-exported for convenience; code inside ``cmce`` imports each name
from the module that defines it.
"""

from cmce.storage.manifest import is_gallery, read_manifest
from cmce.storage.read import read_gallery
from cmce.storage.records import BackboneRecord, GalleryRecords, StoredGallery
from cmce.storage.write import write_gallery

__all__ = [
    "BackboneRecord",
    "GalleryRecords",
    "StoredGallery",
    "is_gallery",
    "read_gallery",
    "read_manifest",
    "write_gallery",
]
