"""Archive-scale derived data and search: galleries too big for the in-memory ``Gallery``.

``cmce.gallery.Gallery`` keeps every entry in RAM (about 7.2 KB per face): fine for the
demo and for a few million faces, not for a photo archive of tens of millions. For those,
the bundle's derived data is built by streaming over the gallery's Parquet shards, one
shard at a time (in-process, or one Ray task per shard), and searched without loading
the raw embeddings at all::

    GALLERY/derived/<fingerprint[:16]>/
      meta.json            kind "archive", bundle, members, entries, index kind, timings
      vectors.npy          (N, Dq) float16 fused ensemble vectors, row = position
      quality.npy          (N,) float32 the bundle's quality score (higher = less trustworthy)
      uncertainty.npy      (N,) float32 disagreement of the members (NaN: fewer than two)
      member_present.npy   (N, M) bool which members each entry was fused from
      active.npy           (N,) bool False where no member could be fused
      entries.arrow        entry_id, source, label, uri per position (Arrow IPC, memory-mapped)
      compact/             the ``CompactIndex`` (galleries from ``COMPACT_FROM`` entries)

Positions follow the manifest's entry shards in order, as ``read_gallery`` numbers them.
Like every derived folder it is rebuildable from the shards and is used only while its
bundle fingerprint and shard list match the manifest.

What stays in RAM while serving: the compact index (about 40 bytes per entry, see
``cmce.search.compact``), the quality scores (4 bytes) and the search mask (1 byte); the
vectors, the other scores and the entry metadata are memory-mapped from disk and only
the rows of a search's hits are read. Below ``COMPACT_FROM`` entries the exact
``VectorIndex`` is built from ``vectors.npy`` when the archive is opened.

Answers work as in ``Gallery.search_vector`` (through the same ``answers.decide_answer``):
every active entry is searched; entries whose quality score is above the bundle's
calibrated threshold are marked doubtful, not removed; a query whose best score does not
stand out enough from the next people's (``answers.CohortNorm``; in archives too small
for its cohort: whose best score is below the ensemble's similarity threshold) is
"unknown"; an entry the caller rejects never
appears among the matches, and when it is a query's best match the answer is "Unknown"
(doubtful), never the next person.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmce.errors import CmceError, GalleryError
from cmce.gallery.memory import bundle_description, bundle_fingerprint, bundle_inputs, check_servable
from cmce.method.answers import (
    Answer,
    DoubtMarks,
    decide_answer,
    doubt_marks,
    gallery_doubt,
    unknown_norm,
    unknown_note,
)
from cmce.method.bundle import Bundle
from cmce.search.base import VectorSearch
from cmce.search.compact import COMPACT_FROM, CompactIndex
from cmce.search.compact_config import CompactConfig
from cmce.search.index import VectorIndex
from cmce.search.vector_file import VectorFileWriter
from cmce.storage.manifest import MANIFEST, locked, require_manifest, shards_signature, swap_in, write_manifest
from cmce.storage.records import BackboneRecord
from cmce.storage.shards import join_embedding_pieces, read_shard, require_pyarrow

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVE_KIND",
    "INDEX_CHOICES",
    "ArchiveBuildReport",
    "ArchiveGallery",
    "ArchiveMatch",
    "ArchiveResult",
    "build_archive_index",
]

ARCHIVE_KIND = "archive"
"""``kind`` of an archive derived folder in ``manifest.json`` and its ``meta.json``."""

INDEX_CHOICES = ("auto", "exact", "compact")
"""``index`` values of :func:`build_archive_index`: ``auto`` is compact from ``COMPACT_FROM`` entries."""

_META = "meta.json"
_ENTRY_COLUMNS = ("entry_id", "source", "label", "uri")


@dataclass(frozen=True)
class ArchiveBuildReport:
    """What :func:`build_archive_index` did.

    Attributes:
        folder: the derived folder written.
        entries: positions (every entry of the gallery).
        unusable: entries with none of the bundle's members (kept out of every search).
        rejected: entries above the bundle's calibrated threshold (searches mark them
            doubtful; they are rejected only where a search is given a rejection mask).
        index: ``"exact"`` or ``"compact"``.
        projection_seconds: reading shards, transformers, fusion, scores (wall time).
        index_seconds: building the compact index (0 for exact: built on open).
        seconds: the whole build.
        workers: ``"in-process"`` or ``"ray"``.
    """

    folder: Path
    entries: int
    unusable: int
    rejected: int
    index: str
    projection_seconds: float
    index_seconds: float
    seconds: float
    workers: str

    def summary(self) -> str:
        return (f"{self.entries} entries projected in {self.projection_seconds:.1f} s ({self.workers}), "
                f"{self.index} index in {self.index_seconds:.1f} s; {self.rejected} over the calibrated threshold "
                f"(doubtful), "
                f"{self.unusable} without any member")


@dataclass(frozen=True)
class _ShardProjection:
    vectors: np.ndarray  # (n, Dq) float16, unit rows (placeholders where inactive)
    active: np.ndarray
    quality: np.ndarray
    uncertainty: np.ndarray
    member_present: np.ndarray
    members: tuple[str, ...]
    entries: object  # pyarrow.Table of _ENTRY_COLUMNS


def _backbones(folder: Path, manifest: dict) -> dict[str, BackboneRecord]:
    try:
        return {k: BackboneRecord(v["name"], v.get("sha256"), int(v["dim"])) for k, v in manifest["backbones"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise GalleryError(f"{folder}: corrupt gallery ({MANIFEST} backbones: {e!r})") from e


def _project_shard(folder: str, info: dict, patches: Sequence[dict], backbones: dict[str, BackboneRecord],
                   bundle: Bundle) -> _ShardProjection:
    """Project one entries shard with the bundle (runs in-process or as a Ray task)."""
    folder = Path(folder)
    table, emb = read_shard(folder, info, backbones, metadata=False)
    ids = table.column("entry_id").to_pylist()
    embeddings, present = {}, {}
    for key, pieces in emb.items():
        embeddings[key], present[key] = join_embedding_pieces(pieces, backbones[key].dim)
    if patches:  # backfilled embeddings of these entries, from embeddings shards
        position = {e: i for i, e in enumerate(ids)}
        for patch in patches:
            ptable, pemb = read_shard(folder, patch, backbones, metadata=False)
            rows = np.array([position.get(e, -1) for e in ptable.column("entry_id").to_pylist()], np.int64)
            for key, pieces in pemb.items():
                values, valid = join_embedding_pieces(pieces, backbones[key].dim)
                take = valid & (rows >= 0)
                if not take.any():
                    continue
                if key not in embeddings:
                    embeddings[key] = np.zeros((len(ids), backbones[key].dim), np.float32)
                    present[key] = np.zeros(len(ids), bool)
                embeddings[key][rows[take]] = values[take]
                present[key][rows[take]] = True
    inputs, inputs_present = bundle_inputs(bundle, embeddings, present)
    prob = table.column("probability").to_numpy().astype(np.float32)
    vec = bundle.gallery_vectors(inputs, prob, inputs_present)
    active = vec.available["ensemble"].copy()
    fused = vec.ensemble.astype(np.float32, copy=True)
    fused[~active] = 0.0
    fused[~active, 0] = 1.0  # a unit placeholder; inactive positions are never returned
    _, pq = require_pyarrow()
    entries = pq.read_table(folder / info["file"], columns=list(_ENTRY_COLUMNS), memory_map=True)
    return _ShardProjection(fused.astype(np.float16), active, vec.quality.astype(np.float32),
                            vec.uncertainty.astype(np.float32), np.asarray(vec.member_present, bool),
                            tuple(vec.members), entries)


def _projections(folder: Path, manifest: dict, bundle: Bundle, use_ray: bool,
                 in_flight: int) -> Iterator[_ShardProjection]:
    """Projections of the entry shards, in manifest order."""
    backbones = _backbones(folder, manifest)
    shards = [s for s in manifest["shards"] if s.get("kind") != "embeddings"]
    patches = [s for s in manifest["shards"] if s.get("kind") == "embeddings"]
    if not use_ray:
        for info in shards:
            yield _project_shard(str(folder), info, patches, backbones, bundle)
        return
    try:
        import ray
    except ImportError as e:  # pragma: no cover - guarded by the caller
        raise CmceError("use_ray needs Ray: pip install -r requirements-scale.txt") from e
    if not ray.is_initialized():
        raise CmceError("connect to a Ray cluster first (cmce.pipeline.connect_ray)")
    task = ray.remote(_project_shard).options(max_retries=3, retry_exceptions=False)
    bundle_ref = ray.put(bundle)
    futures = []
    for info in shards:  # a bounded window of shards in flight, results taken in order
        futures.append(task.remote(str(folder.resolve()), info, patches, backbones, bundle_ref))
        if len(futures) >= in_flight:
            yield ray.get(futures.pop(0))
    for f in futures:
        yield ray.get(f)


def build_archive_index(
    folder: str | os.PathLike,
    bundle: Bundle,
    *,
    index: str = "auto",
    config: CompactConfig = CompactConfig(),
    ray: str | None = None,
    in_flight: int = 4,
) -> ArchiveBuildReport:
    """Build a bundle's archive derived data by streaming over a gallery's shards.

    Only one shard's raw embeddings are in memory at a time (``in_flight`` with Ray);
    fused vectors go straight to a float16 file on disk, which the compact index is
    then trained on and filled from (no photo is read, no backbone runs). The derived
    folder is built under a temporary name and becomes the gallery's current derived
    data atomically; an interrupted build leaves the previous one in place.

    Args:
        folder: a version 2 gallery (see ``cmce.storage``).
        bundle: the serving bundle.
        index: ``"auto"`` (compact from ``COMPACT_FROM`` entries), ``"exact"`` or ``"compact"``.
        config: the compact index's settings.
        ray: project the shards as Ray tasks (one per shard) and build the compact index
            in a Ray task: ``"local"``, ``"auto"`` or a head's address (see
            ``cmce.pipeline.connect_ray``; a cluster this process already joined is
            reused). The gallery folder must be on a file system every node mounts at
            the same path. None: in this process.
        in_flight: shards projected at once with Ray.

    Raises:
        GalleryError: not a gallery, corrupt shards, a bundle that cannot serve it, or
            an empty gallery.
        CmceError: a bad ``index`` value; Ray missing or its cluster unreachable.
    """
    if index not in INDEX_CHOICES:
        raise CmceError(f"index must be one of {INDEX_CHOICES}, got {index!r}")
    if ray is None:
        return _build(folder, bundle, index, config, False, in_flight)
    from cmce.runtime import connect_ray

    started = connect_ray(ray)
    try:
        return _build(folder, bundle, index, config, True, in_flight)
    finally:
        if started:
            import ray as _ray

            _ray.shutdown()


def _build(folder: str | os.PathLike, bundle: Bundle, index: str, config: CompactConfig, use_ray: bool,
           in_flight: int) -> ArchiveBuildReport:
    start = time.perf_counter()
    folder = Path(folder)
    manifest = require_manifest(folder)
    n = sum(int(s["rows"]) for s in manifest["shards"] if s.get("kind") != "embeddings")
    if n == 0:
        raise GalleryError(f"{folder}: the gallery holds no entries; index photos into it first")
    check_servable(bundle, _backbones(folder, manifest), n, str(folder))
    kind = ("compact" if n >= COMPACT_FROM else "exact") if index == "auto" else index
    fingerprint = bundle_fingerprint(bundle)
    name = fingerprint[:16]
    root = folder / "derived"
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp"))
    pa, _ = require_pyarrow()
    try:
        dim = None
        writer = None
        quality = np.lib.format.open_memmap(tmp / "quality.npy", "w+", np.float32, (n,))
        uncertainty = np.lib.format.open_memmap(tmp / "uncertainty.npy", "w+", np.float32, (n,))
        active = np.lib.format.open_memmap(tmp / "active.npy", "w+", np.bool_, (n,))
        present = None
        members: tuple[str, ...] = ()
        done = 0
        with pa.OSFile(str(tmp / "entries.arrow"), "wb") as sink:
            entries_writer = None
            for proj in _projections(folder, manifest, bundle, use_ray, max(1, in_flight)):
                rows = slice(done, done + len(proj.active))
                if writer is None:
                    dim, members = proj.vectors.shape[1], proj.members
                    writer = VectorFileWriter(tmp / "vectors.npy", n, dim)
                    present = np.lib.format.open_memmap(tmp / "member_present.npy", "w+", np.bool_, (n, len(members)))
                    entries_writer = pa.ipc.new_file(sink, proj.entries.schema)
                writer.write(proj.vectors)
                quality[rows], uncertainty[rows], active[rows] = proj.quality, proj.uncertainty, proj.active
                present[rows] = proj.member_present
                entries_writer.write_table(proj.entries)
                done = rows.stop
                logger.info("archive index: %d / %d entries projected", done, n)
            if entries_writer is not None:
                entries_writer.close()
        if done != n:
            raise GalleryError(f"{folder}: the shards hold {done} entries, {MANIFEST} says {n}")
        writer.close()
        for arr in (quality, uncertainty, active, present):
            arr.flush()
        unusable = int(n - np.count_nonzero(active))
        rejected = int(bundle.rejected(np.asarray(quality)[np.asarray(active)]).sum())
        del quality, uncertainty, active, present
        projected = time.perf_counter()
        index_seconds = 0.0
        if kind == "compact":
            built = _build_compact(tmp, config, use_ray)
            index_seconds = time.perf_counter() - projected
            logger.info("compact index %s built in %.1f s", built, index_seconds)
        meta = {"kind": ARCHIVE_KIND, "index": kind, "fingerprint": fingerprint,
                "bundle": bundle_description(bundle), "members": list(members), "entries": n, "dim": int(dim),
                "shards": shards_signature(manifest), "projection_seconds": projected - start,
                "index_seconds": index_seconds, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / _META).write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)
        with locked(folder):
            current = require_manifest(folder)
            if shards_signature(current) != meta["shards"]:
                raise GalleryError(f"{folder}: shards were added while the archive index was built; build it again")
            swap_in(tmp, root / name)
            current["derived"] = {"path": f"derived/{name}", "kind": ARCHIVE_KIND, "fingerprint": fingerprint,
                                  "bundle": meta["bundle"], "shards": meta["shards"]}
            write_manifest(folder, current)
            for other in root.iterdir():
                if other.name != name and not other.name.startswith("."):
                    shutil.rmtree(other, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = ArchiveBuildReport(root / name, n, unusable, rejected, kind, projected - start, index_seconds,
                                time.perf_counter() - start, "ray" if use_ray else "in-process")
    logger.info("%s", report.summary())
    return report


def _build_compact(folder: Path, config: CompactConfig, use_ray: bool) -> str:
    if not use_ray:
        CompactIndex.build(folder / "vectors.npy", config).save(folder / "compact")
        return "in-process"
    import ray

    @ray.remote(max_retries=1)
    def build(path: str) -> str:
        CompactIndex.build(Path(path) / "vectors.npy", config).save(Path(path) / "compact")
        return ray.util.get_node_ip_address()

    return f"on node {ray.get(build.remote(str(folder.resolve())))}"


# --------------------------------------------------------------------------- search


@dataclass(frozen=True)
class ArchiveMatch:
    """One hit of an archive search.

    Attributes:
        position: row of the archive.
        entry_id: ``<content hash>:<face number>``.
        label: identity label (None: unlabelled).
        source: file name shown to users.
        uri: where the photo can be read again (None: not kept).
        score: cosine similarity to the query (exact).
        uncertainty: the members' disagreement (NaN: fewer than two members).
        quality: the bundle's quality score (higher = less trustworthy).
        doubtful: the quality score is above the bundle's calibrated threshold (searched, and marked).
    """

    position: int
    entry_id: str
    label: str | None
    source: str
    uri: str | None
    score: float
    uncertainty: float
    quality: float
    doubtful: bool = False


@dataclass(frozen=True)
class ArchiveResult:
    """The ensemble's answer to one query.

    Attributes:
        matches: best first; rejected entries never appear.
        threshold: the ensemble's calibrated similarity threshold.
        unknown: the search names nobody (``answer.kind`` is not ``match``).
        answer: what it answers and why (``answers.Answer``, as ``ViewResult.answer``).
    """

    matches: tuple[ArchiveMatch, ...]
    threshold: float
    unknown: bool
    answer: Answer | None = None


class ArchiveGallery:
    """Search a gallery through its archive derived data (see the module docstring).

    Open with :meth:`open`. Searches are thread-safe; the object is read-only.
    """

    def __init__(self, folder: Path, bundle: Bundle, meta: dict, index: VectorSearch) -> None:
        self.folder = folder
        self.bundle = bundle
        self.meta = meta
        self.index = index
        derived = folder / "derived" / Path(meta["path"]).name
        self.quality = np.load(derived / "quality.npy")
        self.uncertainty = np.load(derived / "uncertainty.npy", mmap_mode="r")
        self.active = np.load(derived / "active.npy")
        pa = require_pyarrow()[0]
        reader = pa.ipc.open_file(pa.memory_map(str(derived / "entries.arrow")))
        # one record batch per shard, zero-copy from the memory map; a hit is looked up in its
        # batch (Table.take over chunks would concatenate every chunk: 40 ms at 2M entries)
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self._offsets = np.cumsum([0] + [b.num_rows for b in self._batches])
        n = int(meta["entries"])
        if not (len(self.quality) == len(self.active) == len(self.uncertainty) == self._offsets[-1] == n):
            raise GalleryError(f"{derived}: derived files disagree on the entry count; rebuild the archive index")
        self._threshold = float(bundle.calibration.similarity_thresholds.get("ensemble", -1.0))
        self._doubt = self._doubt_marks()  # computed once: the quality scores never change
        self._gallery_doubt = gallery_doubt(self.quality[self.active])  # the "Unknown" threshold's coverage guard

    def __len__(self) -> int:
        return int(self.meta["entries"])

    @classmethod
    def open(cls, folder: str | os.PathLike, bundle: Bundle) -> ArchiveGallery:
        """Open a gallery's archive derived data for ``bundle``.

        Raises:
            GalleryError: not a gallery, no archive derived data for this bundle, or
                data older than the shards; the message says what to run.
        """
        folder = Path(folder)
        manifest = require_manifest(folder)
        info = manifest.get("derived") or {}
        fingerprint = bundle_fingerprint(bundle)
        hint = f"build it with: python -m cmce build-index {folder} --bundle <this bundle>"
        if info.get("kind") != ARCHIVE_KIND or info.get("fingerprint") != fingerprint:
            raise GalleryError(f"{folder}: no archive index for this bundle; {hint}")
        if info.get("shards") != shards_signature(manifest):
            raise GalleryError(f"{folder}: shards were added after the archive index was built; {hint}")
        derived = folder / info["path"]
        try:
            meta = json.loads((derived / _META).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GalleryError(f"{derived}: unreadable {_META} ({e}); {hint}") from e
        meta["path"] = info["path"]
        index: VectorSearch
        if meta.get("index") == "compact":
            index = CompactIndex.load(derived / "compact")
        else:
            vectors = np.load(derived / "vectors.npy", mmap_mode="r")
            index = VectorIndex(vectors.shape[1])
            for i in range(0, len(vectors), 1 << 18):
                index.add(np.asarray(vectors[i : i + (1 << 18)], np.float32))
        return cls(folder, bundle, meta, index)

    def _doubt_marks(self) -> DoubtMarks:
        live = np.flatnonzero(self.active)
        cal = self.bundle.calibration
        marks = doubt_marks(self.quality[live], cal.threshold_for(), cal.rejection_rate)
        full = np.zeros(len(self), bool)
        full[live] = marks.doubtful
        return DoubtMarks(full, marks.over_threshold, marks.expected, marks.unfamiliar, marks.note)

    def doubt(self) -> DoubtMarks:
        """Doubtful entries (quality score above the bundle's calibrated threshold), as ``Gallery.doubt``."""
        return self._doubt

    def unknown_note(self, unknown_by: str | None = None) -> str:
        """As ``Gallery.unknown_note``: where the archive's photos lower the "Unknown" threshold."""
        return unknown_note(unknown_norm(self.bundle.calibration.cohort_norm, unknown_by), "ensemble",
                            int(self.active.sum()), self._gallery_doubt)

    def rejected(self, *, rate: float | None = None, threshold: float | None = None) -> np.ndarray:
        """(N,) bool: rejected active entries, as ``Gallery.rejected``.

        ``rate`` rejects that share of the active entries (most doubtful first),
        ``threshold`` those scoring above it. Without either: the bundle's calibrated
        threshold, capped at the calibrated share when the archive looks unlike the
        calibration galleries (``answers.capped_rejection``), or the calibrated rate if
        the bundle has no threshold. Searches reject nothing unless given this mask.
        """
        out = np.zeros(len(self), bool)
        live = np.flatnonzero(self.active)
        if not len(live):
            return out
        out[live] = self.bundle.rejected_capped(self.quality[live], rate=rate, threshold=threshold)
        return out

    def search_vectors(self, queries: np.ndarray, *, k: int = 5, rejected: np.ndarray | None = None,
                       query_probability: np.ndarray | None = None,
                       answer_rule: str | None = None, unknown_by: str | None = None) -> list[ArchiveResult]:
        """Search with query-model vectors; answer as ``Gallery.search_vector`` does.

        Every active entry is searched. A rejected entry never appears among the
        matches, and when it is a query's best match the answer is "Unknown: the best
        match is a rejected photo of X", not the next person. The bundle's answer rule
        then says "Unknown" where the named person is too likely wrong.

        Args:
            queries: (Q, Dq) unit vectors from the query model.
            k: matches per query.
            rejected: (N,) bool, entries that never match (default none: doubtful
                entries are marked, not removed).
            query_probability: (Q,) the query faces' detector probabilities (an input of
                the answer rule; default 1).
            answer_rule: one of ``answers.ANSWER_RULES``, ``"none"`` (name whoever reaches
                the threshold), or None (the bundle's rule).
            unknown_by: ``answers.UNKNOWN_BY`` (see ``Gallery.search_vector``).
        """
        q = np.atleast_2d(np.asarray(queries, np.float32))
        if rejected is None:
            rejected = np.zeros(len(self), bool)
        else:
            rejected = np.asarray(rejected)
            if rejected.dtype != np.bool_ or rejected.shape != (len(self),):
                raise CmceError(
                    f"rejected must be a bool array of shape ({len(self)},), got {rejected.dtype} {rejected.shape}")
        prob = np.ones(len(q)) if query_probability is None else np.asarray(query_probability, np.float64)
        if prob.shape != (len(q),):
            raise CmceError(f"query_probability must be ({len(q)},), got {prob.shape}")
        # the best hits over every active entry decide the answer (a rejected best match blocks);
        # the matches shown leave rejected entries out: searched again where a hit is rejected
        cal = self.bundle.calibration
        norm = unknown_norm(cal.cohort_norm, unknown_by)
        size = int(self.active.sum())
        hits = self.index.search(q, k=max(k, 20, norm.hits_for(size) if norm is not None else 0), mask=self.active)
        shown_scores, shown_positions = hits.scores[:, :k], hits.positions[:, :k]
        again = np.flatnonzero([rejected[p[p >= 0]].any() for p in hits.positions])
        if len(again):
            kept = self.index.search(q[again], k=k, mask=self.active & ~rejected)
            shown_scores, shown_positions = shown_scores.copy(), shown_positions.copy()
            shown_scores[again], shown_positions[again] = kept.scores, kept.positions
        hit_rows = self._entry_rows(hits.positions[hits.positions >= 0], ("label",))
        shown_rows = self._entry_rows(shown_positions[shown_positions >= 0])
        policy = None if answer_rule == "none" else cal.answer_policy("ensemble", answer_rule)
        doubtful = self._doubt.doubtful
        out, i, j = [], 0, 0
        for row in range(len(q)):
            found = hits.positions[row] >= 0
            pos = hits.positions[row][found]
            labels = hit_rows["label"][i : i + len(pos)]
            i += len(pos)
            top = int(pos[0]) if len(pos) else None
            answer = decide_answer(
                [float(s) for s in hits.scores[row][found]], labels,
                [lab or f"\0{p}" for lab, p in zip(labels, pos.tolist())], threshold=self._threshold,
                policy=policy, query_probability=float(prob[row]),
                entry_quality=float(self.quality[top]) if top is not None else float("nan"),
                entry_disagreement=float(self.uncertainty[top]) if top is not None else float("nan"),
                blocked=bool(top is not None and rejected[top]), doubtful=bool(top is not None and doubtful[top]),
                norm=norm, gallery_size=size, gallery_doubt=self._gallery_doubt)
            matches = []
            for score, p in zip(shown_scores[row], shown_positions[row]):
                if p < 0:
                    continue
                matches.append(ArchiveMatch(int(p), shown_rows["entry_id"][j], shown_rows["label"][j],
                                            shown_rows["source"][j], shown_rows["uri"][j], float(score),
                                            float(self.uncertainty[p]), float(self.quality[p]), bool(doubtful[p])))
                j += 1
            out.append(ArchiveResult(tuple(matches), self._threshold, answer.unknown, answer))
        return out

    def _entry_rows(self, positions: np.ndarray, columns: Sequence[str] = _ENTRY_COLUMNS) -> dict[str, list]:
        """The ``columns`` (default entry_id, source, label and uri) of each position, in order."""
        out: dict[str, list] = {c: [] for c in columns}
        batch_of = np.searchsorted(self._offsets, positions, side="right") - 1
        for pos, b in zip(positions.tolist(), batch_of.tolist()):
            batch, row = self._batches[b], pos - int(self._offsets[b])
            for c in columns:
                out[c].append(batch.column(c)[row].as_py())
        return out

    def memory_bytes(self) -> int:
        """Bytes held in RAM for searching: the index's in-memory part, quality scores, masks."""
        return int(self.index.memory_bytes() + self.quality.nbytes + self.active.nbytes + self._doubt.doubtful.nbytes)

